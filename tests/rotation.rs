//! Key lifecycle while the daemon runs: the delegated OCSP responder renewed on demand and by
//! itself past two thirds of its certificate's life, with OCSP answering throughout.
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::daemon::{Daemon, http, ocsp_ask, ocsp_post};
use common::{Keys, Pki, crl, lint, openssl, x509};

/// The responder key hash (ResponderID byKey) and status of an OCSP answer, checked by OpenSSL
/// against the exported responder certificate.
fn answer(pki: &Pki, response: &Path, certificate: &Path) -> String {
    let certs = pki.export("export");
    let (ok, text) = common::read_ocsp_response(response, certificate, &certs, &["-resp_text"]);
    assert!(ok && text.contains("Response verify OK"), "{text}");
    text
}

fn responder_id(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Responder Id: "))
        .unwrap_or_else(|| panic!("no responder id in {text}"))
        .to_owned()
}

fn fetch(daemon: &Daemon, request: &[u8], to: &Path) {
    let (status, _, body) = ocsp_post(daemon.va, request);
    assert_eq!(status, 200);
    std::fs::write(to, body).unwrap();
}

/// OCSP requests sent over and over from another thread, in turn, each answer checked by `good`
/// (the request, the response): how many were sent, how many failed.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    fn start(va: SocketAddr, first: Vec<u8>, good: fn(&[u8], &[u8]) -> bool) -> Load {
        let requests = Arc::new(Mutex::new(vec![first]));
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let thread = {
            let (stop, sent, failed, requests) =
                (stop.clone(), sent.clone(), failed.clone(), requests.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let request = {
                        let all = requests.lock().unwrap();
                        all[i % all.len()].clone()
                    };
                    i += 1;
                    let (status, _, body) = ocsp_post(va, &request);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if status != 200 || !good(&request, &body) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Load {
            stop,
            sent,
            failed,
            requests,
            thread,
        }
    }

    /// One more request to send in turn.
    fn add(&self, request: Vec<u8>) {
        self.requests.lock().unwrap().push(request);
    }

    /// Goes on for 300 ms more, then stops: (sent, failed).
    fn finish(self) -> (u64, u64) {
        std::thread::sleep(std::time::Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// A successful OCSPResponse starts 30 82 .. 0a 01 00 (responseStatus 0).
fn successful(response: &[u8]) -> bool {
    response.get(4..7) == Some(&[0x0a, 0x01, 0x00])
}

#[test]
fn the_ocsp_responder_is_renewed_without_a_gap_on_demand_and_when_due() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let certificate = pki.issue_holder("holder", "/GN=Lea/SN=PETIT/CN=Lea PETIT");
    let request = pki.ocsp_request(&certificate);
    let daemon = Daemon::start(&pki);
    let before = pki.path("before.der");
    fetch(&daemon, &request, &before);
    let first = responder_id(&answer(&pki, &before, &certificate));

    // Requests all along the renewal: every one a valid answer.
    let load = Load::start(daemon.va, request.clone(), |_, body| {
        body.len() >= 100 && successful(body)
    });
    let renewed: serde_json::Value =
        serde_json::from_str(&pki.sceau_ok(&["ocsp", "renew-signer"])).unwrap();
    let (sent, failed) = load.finish();
    assert!(
        renewed["responses_resigned"].as_u64().unwrap_or(0) >= 1,
        "{renewed}"
    );
    assert!(sent > 10);
    assert_eq!(failed, 0, "failed answers during the renewal");
    let after = pki.path("after.der");
    fetch(&daemon, &request, &after);
    let text = answer(&pki, &after, &certificate);
    let second = responder_id(&text);
    assert_ne!(
        first, second,
        "the responses are signed by the new responder"
    );
    assert!(text.contains(": good"));
    lint::ocsp_response(&after);
    lint::pkix_certificate(&pki.export("export").join("ocsp-ac-agents.pem"));

    // A restart serves the new responder's responses at once (nothing left to sign).
    assert!(daemon.stop().success());
    let daemon = Daemon::start(&pki);
    fetch(&daemon, &request, &after);
    assert_eq!(responder_id(&answer(&pki, &after, &certificate)), second);
    assert!(daemon.stop().success());
    let log = std::fs::read_to_string(pki.path("daemon.log")).unwrap();
    assert!(log.contains("to_sign=0"), "{log}");

    // 25 days later (past two thirds of 30): the daemon renews the responder by itself.
    let later = common::date("+25 days");
    let daemon = Daemon::start_with_env(&pki, &[("SCEAU_NOW", &later)]);
    daemon.wait_until("the automatic renewal", |_| {
        std::fs::read_to_string(pki.path("daemon.log"))
            .unwrap_or_default()
            .contains("OCSP responder renewed")
    });
    fetch(&daemon, &request, &after);
    let third = responder_id(&answer(&pki, &after, &certificate));
    assert!(third != second && third != first);
    assert!(daemon.stop().success());
    let export = pki.sceau_ok(&["audit", "export"]);
    assert!(
        export.matches("\"role\":\"ocsp-responder\"").count() >= 3,
        "{export}"
    );
}

/// `openssl verify -x509_strict` with separate trusted and untrusted certificates.
fn verify(
    dir: &Path,
    trusted: &[&Path],
    untrusted: &[&Path],
    extra: &[&str],
    leaf: &Path,
) -> (bool, String) {
    let bundle = |name: &str, files: &[&Path]| {
        let path = dir.join(name);
        let pem: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        std::fs::write(&path, pem).unwrap();
        path
    };
    let trusted = bundle("verify-trusted.pem", trusted);
    let untrusted = bundle("verify-untrusted.pem", untrusted);
    let mut args = vec![
        "verify",
        "-x509_strict",
        "-CAfile",
        trusted.to_str().unwrap(),
    ];
    if std::fs::metadata(&untrusted).unwrap().len() > 0 {
        args.extend(["-untrusted", untrusted.to_str().unwrap()]);
    }
    args.extend(extra);
    args.push(leaf.to_str().unwrap());
    let (ok, text) = openssl(&args);
    (ok && text.contains(": OK"), text)
}

/// GET a CRL from the daemon into `to` (DER), and check its signature against `signer`.
fn fetch_signed_crl(daemon: &Daemon, name: &str, signer: &Path, to: &Path) {
    crl::fetch(daemon, &format!("/crl/{name}.crl"), to);
    crl::assert_signed_by(to, signer, name);
}

#[test]
fn the_issuing_ca_and_the_root_roll_over_while_ocsp_answers_for_both_keys() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let daemon = Daemon::start(&pki);
    let certs = pki.data_dir().join("certs");
    let old_holder = pki.issue_holder("old-holder", "/GN=Lea/SN=PETIT/CN=Lea PETIT");
    let old_request = pki.ocsp_request_under(&certs.join("ac-agents.pem"), &old_holder);

    // A load generator asks for certificates of every key, all along the rollovers: each
    // answer must be a successful OCSP response about the certificate asked for.
    let load = Load::start(daemon.va, old_request, |request, body| {
        // responseStatus successful, and the CertID asked for (the request ends with its
        // serial) in the answer.
        let serial = &request[request.len() - 8..];
        successful(body) && body.windows(serial.len()).any(|w| w == serial)
    });

    // Issuing CA rollover, then a forced renewal of every OCSP signer, under load.
    let rotated: serde_json::Value =
        serde_json::from_str(&pki.sceau_ok(&["ca", "rotate"])).unwrap();
    assert_eq!(rotated["issuing"], "ac-agents-2", "{rotated}");
    let new_holder = pki.issue_holder("new-holder", "/GN=Paul/SN=MARTIN/CN=Paul MARTIN");
    let new_request = pki.ocsp_request_under(&certs.join("ac-agents-2.pem"), &new_holder);
    load.add(new_request);
    let renewed: serde_json::Value =
        serde_json::from_str(&pki.sceau_ok(&["ocsp", "renew-signer"])).unwrap();
    assert_eq!(
        renewed["renewed"].as_array().map(Vec::len),
        Some(2),
        "{renewed}"
    );
    let (sent, failed) = load.finish();
    assert!(sent > 50, "too few requests sent");
    assert_eq!(
        failed, 0,
        "failed or wrong OCSP answers during the rollover"
    );

    // A name already taken is refused before any key is made.
    let refused = pki.sceau(&["ca", "rotate", "--common-name", "AC AGENTS TEST 2"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("already a CA's"),
        "{stderr}"
    );
    for bad in ["", "   ", &"X".repeat(65), "AC\u{7}BELL"] {
        let refused = pki.sceau(&["ca", "rotate", "--common-name", bad]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains("--common-name"),
            "{bad:?}: {stderr}"
        );
    }
    // Garbage to the admin API: a problem document, and nothing rotated (the next rollover
    // below is still generation 3).
    let bearer = pki.admin_bearer();
    for body in [
        &b"\x00\xffnot json"[..],
        br#"{"common_name":"X","root":true}"#,
        b"[]",
    ] {
        let (status, headers, answer) = http(
            daemon.admin,
            "POST",
            "/admin/ca/rotate",
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            body,
        );
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
        assert_eq!(
            common::daemon::header(&headers, "content-type"),
            Some("application/problem+json")
        );
        assert!(String::from_utf8_lossy(&answer).contains("malformed-json"));
    }
    let (status, _, _) = http(daemon.admin, "POST", "/admin/ca/rotate", &[], b"{}");
    assert_eq!(status, 401, "a rollover without the admin token");

    // Both keys' certificates verify, each only under its own CA (a name of its own).
    let export = pki.export("rollover-1");
    let (root, old_ca, new_ca) = (
        export.join("racine.pem"),
        export.join("ac-agents.pem"),
        export.join("ac-agents-2.pem"),
    );
    let dir = pki.path("");
    let subject = x509::subject(&new_ca);
    assert!(subject.ends_with("CN = AC AGENTS TEST 2"), "{subject}");
    assert!(verify(&dir, &[&root], &[&old_ca], &[], &old_holder).0);
    let (ok, text) = verify(&dir, &[&root], &[&new_ca], &[], &new_holder);
    assert!(ok, "{text}");
    assert!(
        !verify(&dir, &[&root], &[&old_ca], &[], &new_holder).0,
        "a certificate of the new key verified under the old CA certificate"
    );

    // OCSP for both issuers, each answered by a responder of its own CA.
    let old_answer = ocsp_ask(&daemon, &root, &old_ca, &old_holder, "good");
    let new_answer = ocsp_ask(&daemon, &root, &new_ca, &new_holder, "good");
    assert_ne!(responder_id(&old_answer), responder_id(&new_answer));

    // Revocation reaches both, and each CA signs its own CRL.
    for holder in [&old_holder, &new_holder] {
        pki.revoke(holder, "keyCompromise");
    }
    ocsp_ask(&daemon, &root, &old_ca, &old_holder, "revoked");
    ocsp_ask(&daemon, &root, &new_ca, &new_holder, "revoked");
    let new_response = pki.path("new-response.der");
    fetch(
        &daemon,
        &pki.ocsp_request_under(&new_ca, &new_holder),
        &new_response,
    );
    pki.sceau_ok(&["crl"]);
    for (name, ca, holder) in [
        ("ac-agents", &old_ca, &old_holder),
        ("ac-agents-2", &new_ca, &new_holder),
    ] {
        let crl = pki.path(&format!("{name}.crl"));
        fetch_signed_crl(&daemon, name, ca, &crl);
        let crl_pem = pki.path(&format!("{name}-crl.pem"));
        crl::to_pem(&crl, &crl_pem);
        let (ok, text) = verify(
            &dir,
            &[&root],
            &[ca],
            &["-crl_check", "-CRLfile", crl_pem.to_str().unwrap()],
            holder,
        );
        assert!(
            !ok && text.contains("certificate revoked"),
            "{name}: {text}"
        );
        lint::crl(&crl);
    }
    lint::pkix_certificate(&new_ca);
    lint::chain(&root, &new_ca);
    lint::pkix_certificate(&export.join("ocsp-ac-agents-2.pem"));
    lint::chain(&new_ca, &export.join("ocsp-ac-agents-2.pem"));
    lint::etsi_certificate(&new_holder);
    lint::chain(&new_ca, &new_holder);
    lint::ocsp_response(&new_response);

    // Root rollover, then an issuing CA under the new root.
    pki.sceau_ok(&["ca", "rotate", "--root"]);
    let rotated: serde_json::Value =
        serde_json::from_str(&pki.sceau_ok(&["ca", "rotate"])).unwrap();
    assert_eq!(rotated["issuing"], "ac-agents-3", "{rotated}");
    let third_holder = pki.issue_holder("third-holder", "/GN=Anne/SN=ROUX/CN=Anne ROUX");
    let export = pki.export("rollover-2");
    let (new_root, third_ca) = (export.join("racine-2.pem"), export.join("ac-agents-3.pem"));
    let (new_with_old, old_with_new) = (
        export.join("racine-2-signed-by-racine.pem"),
        export.join("racine-signed-by-racine-2.pem"),
    );
    // Under the new root directly; under the old root through new-with-old; and a certificate
    // of the first CA under the new root through old-with-new.
    for (what, root, untrusted, holder) in [
        ("", &new_root, vec![third_ca.as_path()], &third_holder),
        (
            "new-with-old: ",
            &root,
            vec![&new_with_old, &third_ca],
            &third_holder,
        ),
        (
            "old-with-new: ",
            &new_root,
            vec![&old_with_new, &old_ca],
            &old_holder,
        ),
    ] {
        let (ok, text) = verify(&dir, &[root], &untrusted, &[], holder);
        assert!(ok, "{what}{text}");
    }
    assert!(!verify(&dir, &[&root], &[&third_ca], &[], &third_holder).0);
    // A relying party that trusts both roots and has both links among its intermediates.
    for (holder, ca) in [(&third_holder, &third_ca), (&old_holder, &old_ca)] {
        let untrusted: [&Path; 3] = [&new_with_old, &old_with_new, ca];
        let (ok, text) = verify(&dir, &[&root, &new_root], &untrusted, &[], holder);
        assert!(ok, "both roots trusted: {text}");
    }
    for link in [&new_with_old, &old_with_new] {
        lint::pkix_certificate(link);
    }
    lint::chain(&root, &new_with_old);
    lint::chain(&new_root, &old_with_new);
    lint::chain(&new_root, &third_ca);
    ocsp_ask(&daemon, &new_root, &third_ca, &third_holder, "good");
    // Both roots sign their ARL.
    for (name, signer) in [("racine", &root), ("racine-2", &new_root)] {
        let arl = pki.path(&format!("{name}.arl"));
        fetch_signed_crl(&daemon, name, signer, &arl);
        lint::arl(&arl);
    }
    let (status, _, body) = http(daemon.va, "GET", "/ca/ac-agents-3.crt", &[], &[]);
    assert_eq!(status, 200);
    assert!(body.len() > 300);

    // A restart keeps all of it: the current CA issues, every issuer is answered for.
    assert!(daemon.stop().success());
    let daemon = Daemon::start(&pki);
    ocsp_ask(&daemon, &root, &old_ca, &old_holder, "revoked");
    ocsp_ask(&daemon, &root, &new_ca, &new_holder, "revoked");
    ocsp_ask(&daemon, &new_root, &third_ca, &third_holder, "good");
    let fourth = pki.issue_holder("fourth-holder", "/GN=Marc/SN=BLANC/CN=Marc BLANC");
    assert!(verify(&dir, &[&new_root], &[&third_ca], &[], &fourth).0);
    assert!(daemon.stop().success());
    let audit = pki.sceau_ok(&["audit", "export"]);
    assert_eq!(audit.matches("\"ca_rolled_over\"").count(), 3, "{audit}");
    pki.audit_entries();
}
