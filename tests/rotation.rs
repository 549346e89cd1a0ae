//! Key lifecycle while the daemon runs: the delegated OCSP responder renewed on demand and by
//! itself past two thirds of its certificate's life, with OCSP answering throughout.
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::daemon::{Daemon, http};
use common::{KeyKind, Keys, Pki, lint, openssl};

/// The responder key hash (ResponderID byKey) and status of an OCSP answer, checked by OpenSSL
/// against the exported responder certificate.
fn answer(pki: &Pki, response: &Path, certificate: &Path) -> String {
    let certs = pki.export("export");
    let (ok, text) = openssl(&[
        "ocsp",
        "-respin",
        response.to_str().unwrap(),
        "-resp_text",
        "-issuer",
        certs.join("ac-agents.pem").to_str().unwrap(),
        "-cert",
        certificate.to_str().unwrap(),
        "-CAfile",
        certs.join("racine.pem").to_str().unwrap(),
        "-VAfile",
        certs.join("ocsp-ac-agents.pem").to_str().unwrap(),
    ]);
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
    let (status, _, body) = http(
        daemon.va,
        "POST",
        "/ocsp",
        &[("Content-Type", "application/ocsp-request")],
        request,
    );
    assert_eq!(status, 200);
    std::fs::write(to, body).unwrap();
}

#[test]
fn the_ocsp_responder_is_renewed_without_a_gap_on_demand_and_when_due() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let csr = pki.csr("holder", KeyKind::P256, "/GN=Lea/SN=PETIT/CN=Lea PETIT");
    let pem = pki.sceau_ok(&[
        "issue",
        "--policy",
        "justice-auth",
        "--csr",
        csr.to_str().unwrap(),
    ]);
    let certificate = pki.path("holder.pem");
    std::fs::write(&certificate, pem).unwrap();
    let request = pki.ocsp_request(&certificate);
    let daemon = Daemon::start(&pki);
    let before = pki.path("before.der");
    fetch(&daemon, &request, &before);
    let first = responder_id(&answer(&pki, &before, &certificate));

    // Requests all along the renewal: every one a valid answer.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, sent, failed, request, va) = (
            stop.clone(),
            sent.clone(),
            failed.clone(),
            request.clone(),
            daemon.va,
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (status, _, body) = http(
                    va,
                    "POST",
                    "/ocsp",
                    &[("Content-Type", "application/ocsp-request")],
                    &request,
                );
                sent.fetch_add(1, Ordering::Relaxed);
                // A successful OCSPResponse starts 30 82 .. 0a 01 00 (responseStatus 0).
                if status != 200 || body.len() < 100 || body.get(4..7) != Some(&[0x0a, 0x01, 0x00])
                {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let renewed: serde_json::Value =
        serde_json::from_str(&pki.sceau_ok(&["ocsp", "renew-signer"])).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(
        renewed["responses_resigned"].as_u64().unwrap_or(0) >= 1,
        "{renewed}"
    );
    assert!(sent.load(Ordering::Relaxed) > 10);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed answers during the renewal"
    );
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
    let later = {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", "+25 days", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
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
