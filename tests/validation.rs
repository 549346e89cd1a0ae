//! The validation authority end to end: `sceau serve` on a real SoftHSM2 token and store, OpenSSL
//! (`openssl ocsp -url`, `openssl verify -crl_check`, `openssl crl`), curl-like raw HTTP, pkilint
//! and Python `cryptography` as independent clients and judges.
mod common;

use std::path::{Path, PathBuf};

use common::daemon::{Daemon, header, http, ocsp_post};
use common::{KeyKind, Keys, Pki, crl, lint, openssl, serial_of, x509};

/// A PKI with two holder certificates (auth P-256, sign P-384) and its exported CA files.
struct Fixture {
    pki: Pki,
    good: PathBuf,
    doomed: PathBuf,
    root: PathBuf,
    issuing: PathBuf,
    chain: PathBuf,
}

fn fixture() -> Fixture {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let exported = pki.export("export");
    let issue = |name: &str, policy: &str, kind, subject: &str| {
        let csr = pki.csr(name, kind, subject);
        pki.issue_into(&format!("{name}.pem"), policy, &csr, &["--holder", name])
    };
    let good = issue(
        "alice",
        "justice-auth",
        KeyKind::P256,
        "/GN=Alice/SN=BLANC/CN=Alice BLANC",
    );
    let doomed = issue(
        "bob",
        "justice-sign",
        KeyKind::P384,
        "/GN=Bob/SN=NOIR/CN=Bob NOIR",
    );
    let chain = pki.path("chain.pem");
    let root = exported.join("racine.pem");
    let issuing = exported.join("ac-agents.pem");
    std::fs::write(
        &chain,
        std::fs::read_to_string(&root).unwrap() + &std::fs::read_to_string(&issuing).unwrap(),
    )
    .unwrap();
    Fixture {
        pki,
        good,
        doomed,
        root,
        issuing,
        chain,
    }
}

/// `openssl ocsp EXTRA... -issuer ISSUING` and `which` (`-cert FILE`, `-serial N`).
fn ocsp_args<'a>(f: &'a Fixture, which: [&'a str; 2], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["ocsp"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-issuer", f.issuing.to_str().unwrap()]);
    args.extend_from_slice(&which);
    args
}

/// `openssl ocsp -url` (with a nonce unless told otherwise); returns its whole output.
fn ocsp_query(f: &Fixture, daemon: &Daemon, certificate: &Path, extra: &[&str]) -> String {
    let url = daemon.url("/ocsp");
    let mut args = ocsp_args(f, ["-cert", certificate.to_str().unwrap()], extra);
    args.extend_from_slice(&[
        "-url",
        &url,
        "-CAfile",
        f.chain.to_str().unwrap(),
        "-resp_text",
    ]);
    let (_, text) = openssl(&args);
    assert!(
        text.contains("Response verify OK"),
        "openssl could not verify the response:\n{text}"
    );
    text
}

/// A DER request made by OpenSSL.
fn request(f: &Fixture, certificate: &Path, extra: &[&str]) -> Vec<u8> {
    request_for(f, ["-cert", certificate.to_str().unwrap()], extra)
}

/// A DER request made by OpenSSL for `which` (`-cert FILE`, `-serial N`).
fn request_for(f: &Fixture, which: [&str; 2], extra: &[&str]) -> Vec<u8> {
    let out = f.pki.path("request.der");
    let mut args = ocsp_args(f, which, extra);
    args.extend_from_slice(&["-reqout", out.to_str().unwrap()]);
    let (ok, text) = openssl(&args);
    assert!(ok, "{text}");
    std::fs::read(out).unwrap()
}

fn post(daemon: &Daemon, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    ocsp_post(daemon.va, body)
}

/// Lints a DER response with pkilint, verifies it with openssl, parses it with Python
/// `cryptography`; returns the status `cryptography` read.
fn judge_response(f: &Fixture, name: &str, der: &[u8]) -> String {
    let path = f.pki.path(&format!("{name}.ocsp"));
    std::fs::write(&path, der).unwrap();
    lint::ocsp_response(&path);
    let (_, text) = openssl(&[
        "ocsp",
        "-respin",
        path.to_str().unwrap(),
        "-CAfile",
        f.chain.to_str().unwrap(),
        "-resp_text",
    ]);
    assert!(text.contains("Response verify OK"), "{name}: {text}");
    python(&format!(
        "from cryptography.x509 import ocsp\nr = ocsp.load_der_ocsp_response(open({:?}, 'rb').read())\nprint(r.certificate_status.name, r.revocation_reason, r.next_update_utc is not None, r.responder_key_hash.hex(), len(r.certificates))",
        path.display().to_string()
    ))
}

fn python(code: &str) -> String {
    let mut python = std::process::Command::new(lint::venv().join("bin/python"));
    common::run_ok(python.args(["-c", code]), "python")
        .trim()
        .to_owned()
}

/// Waits until the daemon has signed two responses per certificate ahead: alice, bob and the
/// OCSP responder's own certificate.
fn signed_ahead(daemon: &Daemon) {
    daemon.wait_until("responses signed ahead", |d| {
        d.metric("sceau_ocsp_signatures_total", "ahead") >= 6
    });
}

#[test]
fn ocsp_and_crls_answer_openssl_pkilint_and_cryptography() {
    let f = fixture();
    let daemon = Daemon::start(&f.pki);
    signed_ahead(&daemon);

    // Good, with a nonce echoed (OpenSSL sends one by default).
    let text = ocsp_query(&f, &daemon, &f.good, &[]);
    assert!(
        text.contains(": good") && text.contains("OCSP Nonce"),
        "{text}"
    );
    assert!(!text.contains("WARNING: no nonce"), "{text}");
    // Good, pre-signed, SHA-1 and SHA-256 CertIDs; byKey responder, archiveCutoff, nextUpdate.
    for extra in [&["-no_nonce"][..], &["-no_nonce", "-sha256"][..]] {
        let text = ocsp_query(&f, &daemon, &f.good, extra);
        assert!(
            text.contains(": good")
                && text.contains("Responder Id: ")
                && text.contains("Archive Cutoff"),
            "{text}"
        );
        assert!(text.contains("Next Update"), "{text}");
    }
    let (status, headers, body) = post(&daemon, &request(&f, &f.good, &["-no_nonce"]));
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, Some("application/ocsp-response"))
    );
    assert!(judge_response(&f, "good", &body).starts_with("GOOD None True"));

    // GET (RFC 6960 appendix A) with RFC 9919 caching headers, then 304 for the same ETag.
    let der = request(&f, &f.good, &["-no_nonce", "-sha256"]);
    let path = format!("/ocsp/{}", base64_url(&der));
    let (status, headers, body) = http(daemon.va, "GET", &path, &[], b"");
    assert_eq!(status, 200);
    let cache = header(&headers, "cache-control").unwrap();
    assert!(
        cache.starts_with("max-age=") && cache.contains("public"),
        "{cache}"
    );
    for name in ["etag", "last-modified", "expires"] {
        assert!(header(&headers, name).is_some(), "no {name}: {headers:?}");
    }
    assert!(judge_response(&f, "good-get", &body).starts_with("GOOD"));
    let etag = header(&headers, "etag").unwrap().to_owned();
    let (status, _, body) = http(daemon.va, "GET", &path, &[("If-None-Match", &etag)], b"");
    assert_eq!((status, body.len()), (304, 0));

    // Never issued: unknown. Another CA's certificate: unauthorized.
    let url = daemon.url("/ocsp");
    let mut args = ocsp_args(&f, ["-serial", "0x0BADBEEF"], &["-no_nonce", "-url", &url]);
    args.extend(["-CAfile", f.chain.to_str().unwrap()]);
    let (ok, text) = openssl(&args);
    assert!(ok && text.contains("0x0BADBEEF: unknown"), "{text}");
    let unknown = request_for(&f, ["-serial", "0x0BADBEEF"], &["-no_nonce"]);
    let (_, _, body) = post(&daemon, &unknown);
    assert!(judge_response(&f, "unknown", &body).starts_with("UNKNOWN"));
    let root = f.root.to_str().unwrap();
    let (ok, text) = openssl(&[
        "ocsp",
        "-issuer",
        root,
        "-serial",
        "0x1",
        "-no_nonce",
        "-url",
        &url,
    ]);
    assert!(!ok || text.contains("unauthorized"), "{text}");
    assert!(text.contains("unauthorized"), "{text}");

    // Revocation: OCSP answers "revoked" as soon as the command returns.
    let crl_before = {
        let path = f.pki.path("before.crl");
        crl::fetch(&daemon, "/crl/ac-agents.crl", &path);
        crl::number(&path)
    };
    let serial = serial_of(&f.doomed);
    // The key was compromised when the certificate was issued (no earlier: refused).
    let invalidity = not_before(&f.doomed);
    let compromised = |since: &str| {
        let reason = ["--reason", "key-compromise", "--invalidity-date", since];
        f.pki
            .sceau(&[&["revoke", "--serial", serial.as_str()][..], &reason].concat())
    };
    let early = compromised("2020-01-01T00:00:00Z");
    assert!(String::from_utf8_lossy(&early.stderr).contains("before the certificate"));
    let out = compromised(&invalidity);
    assert!(out.status.success(), "{}", common::all_output(&out));
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(out.contains("\"ocsp\":\"revoked\""), "{out}");
    let text = ocsp_query(&f, &daemon, &f.doomed, &["-no_nonce"]);
    assert!(
        text.contains(": revoked") && text.contains("keyCompromise"),
        "{text}"
    );
    let (_, _, body) = post(&daemon, &request(&f, &f.doomed, &["-no_nonce"]));
    assert!(judge_response(&f, "revoked", &body).starts_with("REVOKED ReasonFlags.key_compromise"));
    let again = f
        .pki
        .sceau(&["revoke", "--serial", &serial, "--reason", "superseded"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already revoked"));
    // A refusal (77, EX_NOPERM): not a usage error, not worth retrying.
    assert_eq!(again.status.code(), Some(77));

    // A new CRL follows within seconds: number +1, the entry, lint, signature, -crl_check.
    let crl = f.pki.path("ac-agents.crl");
    daemon.wait_until("a new CRL", |d| {
        crl::fetch(d, "/crl/ac-agents.crl", &crl);
        crl::number(&crl) > crl_before
    });
    assert_eq!(crl::number(&crl), crl_before + 1);
    lint::crl(&crl);
    let text = crl::text(&crl, Some(&f.issuing));
    assert!(
        text.contains("verify OK")
            && text.contains(&serial)
            && text.contains("Key Compromise")
            && text.contains("Invalidity Date"),
        "{text}"
    );
    let crl_pem = f.pki.path("ac-agents-crl.pem");
    crl::to_pem(&crl, &crl_pem);
    let verify = |certificate: &Path| {
        openssl(&[
            "verify",
            "-crl_check",
            "-CRLfile",
            crl_pem.to_str().unwrap(),
            "-CAfile",
            f.chain.to_str().unwrap(),
            certificate.to_str().unwrap(),
        ])
    };
    let (ok, text) = verify(&f.doomed);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let (ok, text) = verify(&f.good);
    assert!(ok, "{text}");
    // The published file is the served CRL.
    assert_eq!(
        std::fs::read(f.pki.path("publish/ac-agents.crl")).unwrap(),
        std::fs::read(&crl).unwrap()
    );

    // The root's ARL, and the CA certificates for AIA caIssuers.
    let arl = f.pki.path("racine.crl");
    crl::fetch(&daemon, "/crl/racine.crl", &arl);
    lint::arl(&arl);
    crl::assert_signed_by(&arl, &f.root, "racine.crl");
    let ca = crl::fetch(&daemon, "/ca/ac-agents.crt", &f.pki.path("ac.der"));
    let der = f.pki.path("ac-exported.der");
    let (issuing, der_path) = (f.issuing.to_str().unwrap(), der.to_str().unwrap());
    let (ok, text) = openssl(&["x509", "-in", issuing, "-outform", "DER", "-out", der_path]);
    assert!(ok, "{text}");
    assert_eq!(ca, std::fs::read(&der).unwrap());

    // `sceau crl` publishes now: +1 again.
    let before = crl::number(&crl);
    f.pki.sceau_ok(&["crl"]);
    crl::fetch(&daemon, "/crl/ac-agents.crl", &crl);
    assert_eq!(crl::number(&crl), before + 1);

    // Health and metrics.
    let (status, _, body) = http(daemon.va, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(daemon.metric("sceau_ocsp_responses_total", "presigned") >= 3);
    // SIGTERM: a clean exit.
    assert!(daemon.stop().success());
    f.pki.audit_entries();
}

/// notBefore as RFC 3339, from `openssl x509 -startdate` ("Nov 25 06:12:33 2026 GMT").
fn not_before(certificate: &Path) -> String {
    let text = x509::not_before(certificate);
    let fields: Vec<&str> = text.split_whitespace().collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == fields[0])
    .unwrap()
        + 1;
    format!(
        "{}-{month:02}-{:02}T{}Z",
        fields[3],
        fields[1].parse::<u32>().unwrap(),
        fields[2]
    )
}

fn base64_url(der: &[u8]) -> String {
    use std::process::{Command, Stdio};
    let mut child = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), der).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

#[test]
fn a_restart_serves_from_the_store_and_offline_revocations_are_picked_up() {
    let f = fixture();
    let daemon = Daemon::start(&f.pki);
    signed_ahead(&daemon);
    assert!(daemon.stop().success());

    // Revoked while the daemon is down: the CLI writes the store directly.
    let serial = serial_of(&f.doomed);
    let out = f.pki.sceau_ok(&[
        "revoke",
        "--serial",
        &serial,
        "--reason",
        "affiliation-changed",
    ]);
    assert!(out.contains("not running"), "{out}");

    let daemon = Daemon::start(&f.pki);
    // The good certificate is answered at once from the persisted response: nothing re-signed
    // for it (only the revoked one's two responses).
    let text = ocsp_query(&f, &daemon, &f.good, &["-no_nonce"]);
    assert!(text.contains(": good"), "{text}");
    assert_eq!(daemon.metric("sceau_ocsp_responses_total", "presigned"), 1);
    // The offline revocation is never answered "good", and is signed shortly.
    let text = ocsp_query(&f, &daemon, &f.doomed, &["-no_nonce"]);
    assert!(
        text.contains(": revoked") && text.contains("affiliationChanged"),
        "{text}"
    );
    daemon.wait_until("the revoked responses re-signed", |d| {
        d.metric("sceau_ocsp_signatures_total", "ahead") >= 2
    });
    assert!(
        daemon.metric("sceau_ocsp_signatures_total", "ahead") <= 2,
        "only the revoked certificate is re-signed"
    );
    assert!(daemon.stop().success());
}

/// Bad input gets a protocol answer (HTTP 200 + malformedRequest, or 4xx with a problem
/// document for non-OCSP resources), never a crash, and changes nothing.
#[test]
fn malformed_oversized_and_random_requests_get_protocol_answers() {
    let f = fixture();
    let daemon = Daemon::start(&f.pki);
    let audit_before = {
        let (_, _, body) = http(daemon.admin, "GET", "/metrics", &[], b"");
        String::from_utf8_lossy(&body).contains("sceau_revocations_total 0")
    };
    assert!(audit_before);
    const MALFORMED: [u8; 5] = [0x30, 0x03, 0x0a, 0x01, 0x01];
    let valid = request(&f, &f.good, &["-no_nonce"]);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        ("truncated", valid[..valid.len() - 3].to_vec()),
        ("trailing bytes", [valid.clone(), vec![0]].concat()),
        ("oversized", vec![0x30; 70 * 1024]),
        ("huge length", vec![0x30, 0x84, 0x7f, 0xff, 0xff, 0xff]),
    ];
    // Random bytes, and the valid request with random bytes changed (deterministic seed).
    let mut seed = 0x5eed_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..300 {
        let len = (next() % 300) as usize;
        let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut mutated = valid.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % mutated.len();
            mutated[at] = next() as u8;
        }
        cases.push((
            if i % 2 == 0 { "random" } else { "mutated" },
            if i % 2 == 0 { random } else { mutated },
        ));
    }
    let mut answered = [0usize; 3];
    for (name, body) in &cases {
        let (status, headers, response) = post(&daemon, body);
        assert_eq!(status, 200, "{name}: HTTP {status}");
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/ocsp-response"),
            "{name}"
        );
        match response.as_slice() {
            b if b == MALFORMED => answered[0] += 1,
            [0x30, 0x03, 0x0a, 0x01, 6] => answered[1] += 1, // a mutated CertID: unauthorized
            [0x30, ..] if response.len() > 100 => answered[2] += 1, // still a valid request
            other => panic!("{name}: unexpected answer {other:02x?}"),
        }
    }
    assert!(answered[0] > 150, "{answered:?}");

    // Wrong content type; GET with a path that is not base64; non-OCSP garbage paths.
    let (status, _, body) = common::daemon::post(daemon.va, "/ocsp", "text/plain", &valid);
    assert_eq!((status, body.as_slice()), (200, &MALFORMED[..]));
    let (status, _, body) = http(daemon.va, "GET", "/ocsp/%%%not-base64", &[], b"");
    assert_eq!((status, body.as_slice()), (200, &MALFORMED[..]));
    let (status, headers, body) = http(daemon.va, "GET", "/nowhere", &[], b"");
    assert_eq!(
        (status, header(&headers, "content-type")),
        (404, Some("application/problem+json"))
    );
    assert!(String::from_utf8_lossy(&body).contains("urn:sceau:problem:not-found"));
    let (status, _, _) = http(daemon.va, "DELETE", "/ocsp", &[], b"");
    assert_eq!(status, 405);
    // The admin commands need the token.
    let (status, _, body) = http(daemon.admin, "POST", "/admin/revoke", &[], b"{}");
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));

    // A client that trickles a POST (headers, then its body a byte at a time) is cut off once
    // the request has taken more than 10 s, while other clients are answered meanwhile.
    let mut slow = std::net::TcpStream::connect(daemon.va).unwrap();
    let head = format!(
        "POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\n\r\n",
        valid.len()
    );
    std::io::Write::write_all(&mut slow, head.as_bytes()).unwrap();
    let started = std::time::Instant::now();
    let mut cut_off = None;
    for byte in &valid {
        if std::io::Write::write_all(&mut slow, &[*byte]).is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        let (status, _, _) = post(&daemon, &valid);
        assert_eq!(status, 200, "another client during the slow one");
        std::thread::sleep(std::time::Duration::from_millis(500));
        if started.elapsed() > std::time::Duration::from_secs(20) {
            break;
        }
    }
    let cut_off = cut_off.unwrap_or_else(|| {
        // The write may succeed into the socket buffer: the closed connection shows on read.
        slow.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let mut buffer = [0u8; 64];
        match std::io::Read::read(&mut slow, &mut buffer) {
            Ok(0) | Err(_) if started.elapsed() < std::time::Duration::from_secs(25) => {
                started.elapsed()
            }
            other => panic!(
                "the slow client was not cut off: {other:?} after {:?}",
                started.elapsed()
            ),
        }
    });
    assert!(
        cut_off >= std::time::Duration::from_secs(9)
            && cut_off <= std::time::Duration::from_secs(16),
        "cut off after {cut_off:?}"
    );

    // Still serving, nothing changed.
    let text = ocsp_query(&f, &daemon, &f.good, &["-no_nonce"]);
    assert!(text.contains(": good"), "{text}");
    assert_eq!(daemon.metric("sceau_revocations_total", ""), 0);
    assert!(daemon.stop().success());
    f.pki.audit_entries();
}

/// Invariant 4 (docs/invariants.md): CRL numbers go up by exactly one and are persisted before
/// publication, across crashes on either side of the commit.
#[cfg(feature = "test-hooks")]
#[test]
fn crl_numbers_survive_crashes_around_the_commit() {
    let f = fixture();
    let published = f.pki.path("publish/ac-agents.crl");
    f.pki.sceau_ok(&["crl"]);
    assert_eq!(crl::number(&published), 1);

    let crash_at = |failpoint: &str| {
        let out = f
            .pki
            .sceau_with_env(&["crl"], &[("SCEAU_FAILPOINT", failpoint)]);
        assert!(!out.status.success());
    };
    let files = || -> Vec<String> {
        std::fs::read_dir(f.pki.path("publish"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };

    // Crash after the pending file is written, before the number is committed: number 2 was
    // never used, and the next CRL is number 2.
    crash_at("crl-before-commit");
    assert_eq!(crl::number(&published), 1);
    f.pki.sceau_ok(&["crl"]);
    assert_eq!(crl::number(&published), 2);

    // Crash after the commit, before the rename: number 3 is persisted; the next start
    // publishes it, and the next CRL is 4.
    crash_at("crl-after-commit");
    assert_eq!(crl::number(&published), 2, "not renamed yet");
    assert!(files().iter().any(|n| n.contains("pending-3")));
    let out = f.pki.sceau_ok(&["crl"]);
    assert!(out.contains("\"number\":4"), "{out}");
    assert_eq!(crl::number(&published), 4);
    let leftovers: Vec<_> = files()
        .into_iter()
        .filter(|n| n.contains("pending"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The audit log has CRLs 1, 2 (second try), 3 and 4, in order.
    let numbers: Vec<u64> = f
        .pki
        .sceau_ok(&["audit", "export"])
        .lines()
        .filter(|l| l.contains("crl_published") && l.contains("\"name\":\"ac-agents\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["number"].as_u64())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
}

/// The DER of `request` with its nonce extension's OID ending in `last` and, if `critical`,
/// marked critical (`openssl ocsp -reqout` puts the nonce last: `06 09 2b06010505073001 02`).
fn with_extension(request: &[u8], last: u8, critical: bool) -> Vec<u8> {
    let oid = [
        0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02,
    ];
    let at = request.windows(oid.len()).position(|w| w == oid).unwrap();
    let mut der = request.to_vec();
    der[at + 10] = last;
    if critical {
        der.splice(at + 11..at + 11, [0x01, 0x01, 0xff]);
        // OCSPRequest, TBSRequest, [2], Extensions, Extension: short lengths, each + 3.
        for position in [1, 3, at - 5, at - 3, at - 1] {
            assert!(der[position] < 0x7d, "short form lengths expected");
            der[position] += 3;
        }
    }
    der
}

/// Issue 9, problem 6: the protocol details of the validation listener.
#[test]
fn http_and_ocsp_details_follow_the_rfcs() {
    let f = fixture();
    let stall = f.pki.path("hsm-stalled");
    let daemon = Daemon::start_with_env(
        &f.pki,
        &[("SCEAU_STALL", &format!("hsm-sign:{}", stall.display()))],
    );
    daemon.wait_until("readiness", |d| {
        http(d.admin, "GET", "/readyz", &[], b"").0 == 200
    });
    const MALFORMED: [u8; 5] = [0x30, 0x03, 0x0a, 0x01, 0x01];

    // A critical request extension that is not understood: malformedRequest (RFC 5280 §4.2);
    // the same extension, not critical, is ignored; the nonce, critical, is understood.
    let with_nonce = request(&f, &f.good, &[]);
    let (_, _, body) = post(&daemon, &with_extension(&with_nonce, 99, true));
    assert_eq!(body, MALFORMED, "unknown critical extension");
    let (_, _, body) = post(&daemon, &with_extension(&with_nonce, 99, false));
    assert!(
        body.len() > 100,
        "unknown extension, not critical: answered"
    );
    let (_, _, body) = post(&daemon, &with_extension(&with_nonce, 0x02, true));
    assert!(body.len() > 100, "critical nonce: answered");
    // CertID hash parameters other than NULL: malformedRequest (and nothing kept).
    let plain = request(&f, &f.good, &["-no_nonce"]);
    let null = [0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00];
    let at = plain.windows(null.len()).position(|w| w == null).unwrap();
    let mut parameters = plain.clone();
    parameters[at + 7] = 0x04; // an empty OCTET STRING instead of NULL
    let (_, _, body) = post(&daemon, &parameters);
    assert_eq!(body, MALFORMED, "CertID with hash parameters");

    // The media type is case-insensitive.
    let (status, _, body) = common::daemon::post(
        daemon.va,
        "/ocsp",
        "Application/OCSP-Request; charset=binary",
        &plain,
    );
    assert_eq!(status, 200);
    assert!(body.len() > 100, "mixed-case media type: {body:?}");

    // GET with a weak If-None-Match, and HEAD.
    let path = format!("/ocsp/{}", base64_url(&plain));
    let (status, headers, body) = http(daemon.va, "GET", &path, &[], b"");
    assert_eq!(status, 200);
    let etag = header(&headers, "etag").unwrap().to_owned();
    let weak = format!("W/{etag}");
    let (status, _, _) = http(daemon.va, "GET", &path, &[("If-None-Match", &weak)], b"");
    assert_eq!(status, 304, "a weak validator matches (RFC 9110 §13.1.2)");
    let (status, head_headers, head_body) = http(daemon.va, "HEAD", &path, &[], b"");
    assert_eq!(status, 200, "HEAD is GET without the body");
    assert!(head_body.is_empty());
    assert_eq!(header(&head_headers, "etag"), Some(etag.as_str()));
    assert_eq!(
        header(&head_headers, "content-length"),
        Some(body.len().to_string().as_str())
    );

    // CRLs revalidate: If-Modified-Since and If-None-Match.
    let (status, headers, crl) = http(daemon.va, "GET", "/crl/ac-agents.crl", &[], b"");
    assert_eq!(status, 200);
    let last_modified = header(&headers, "last-modified").unwrap().to_owned();
    let crl_etag = header(&headers, "etag").unwrap().to_owned();
    let crl_if = |condition: &str, value: &str| {
        http(
            daemon.va,
            "GET",
            "/crl/ac-agents.crl",
            &[(condition, value)],
            b"",
        )
    };
    let (status, _, body) = crl_if("If-Modified-Since", &last_modified);
    assert_eq!(status, 304, "unchanged since Last-Modified");
    assert!(body.is_empty());
    let (status, _, _) = crl_if("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT");
    assert_eq!(status, 200, "modified since 2000");
    let (status, _, _) = crl_if("If-None-Match", &crl_etag);
    assert_eq!(status, 304);
    let (status, headers, body) = http(daemon.va, "HEAD", "/crl/ac-agents.crl", &[], b"");
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(
        header(&headers, "content-length"),
        Some(crl.len().to_string().as_str())
    );

    // A hung HSM: nonce requests need a live signature; they get the pre-signed answer within
    // the live-signing deadline instead of waiting for the HSM, and the permits come back.
    let nonce_request = request(&f, &f.good, &[]);
    std::fs::write(&stall, b"").unwrap();
    let started = std::time::Instant::now();
    let answers: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| post(&daemon, &nonce_request)))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let waited = started.elapsed();
    std::fs::remove_file(&stall).unwrap();
    for (status, _, body) in &answers {
        assert_eq!(*status, 200);
        assert!(body.len() > 100, "a signed (pre-signed) answer: {body:?}");
    }
    assert!(
        waited < std::time::Duration::from_secs(8),
        "nonce requests waited {waited:?} for a hung HSM"
    );
    let text = ocsp_query(&f, &daemon, &f.good, &[]);
    assert!(text.contains(": good"), "{text}");
}
