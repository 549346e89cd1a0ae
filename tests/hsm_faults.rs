//! The HSM goes away and comes back while the daemon runs: issuance and revocation answer 503 and
//! change nothing, OCSP keeps answering from its pre-signed responses, health says degraded, and
//! everything resumes by itself. The token is a real SoftHSM2 token whose key objects are moved
//! out of its directory (the module then finds no CA key: the pool reports the token
//! unavailable) and moved back.
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, http, ocsp_post};
use common::{KeyKind, Keys, Pki, Token, serial_of};

/// The directory of the one token in `tokens`.
fn token_dir(tokens: &Path) -> PathBuf {
    std::fs::read_dir(tokens)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap()
}

/// Moves the token's key objects (everything but token.object) into `away`, or back.
fn move_keys(tokens: &Path, away: &Path, out: bool) {
    let token_dir = token_dir(tokens);
    std::fs::create_dir_all(away).unwrap();
    let (from, to) = if out {
        (token_dir.clone(), away.to_path_buf())
    } else {
        (away.to_path_buf(), token_dir.clone())
    };
    for entry in std::fs::read_dir(&from).unwrap().flatten() {
        let name = entry.file_name();
        if name == "token.object" || name == "token.lock" {
            continue;
        }
        std::fs::rename(entry.path(), to.join(&name)).unwrap();
    }
}

fn issue(pki: &Pki, csr: &Path) -> std::process::Output {
    pki.issue("justice-auth", csr, &[])
}

/// A daemon on a new CA, and a certificate it issued before any outage (NAME.pem).
/// On SoftHSM2, whatever SCEAU_TEST_TOKEN says: the outage is made by moving its files.
fn daemon_with_certificate(name: &str, subject: &str) -> (Pki, Daemon, PathBuf) {
    let pki = Pki::on(Token::SoftHsm2, Keys::EC);
    pki.init();
    let daemon = Daemon::start(&pki);
    let csr = pki.csr(name, KeyKind::P256, subject);
    let out = issue(&pki, &csr);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certificate = pki.path(&format!("{name}.pem"));
    std::fs::write(&certificate, &out.stdout).unwrap();
    (pki, daemon, certificate)
}

#[test]
fn an_hsm_outage_gives_503s_keeps_ocsp_serving_and_heals_by_itself() {
    let (pki, daemon, certificate) =
        daemon_with_certificate("before", "/GN=Anne/SN=ROUX/CN=Anne ROUX");
    let serial = serial_of(&certificate);
    assert!(pki.ocsp_status(&daemon, &certificate).contains(": good"));
    let request = pki.ocsp_request(&certificate);

    // The outage.
    let away = pki.path("keys-away");
    move_keys(&pki.path("tokens"), &away, true);
    let during = pki.csr("during", KeyKind::P256, "/GN=Marc/SN=BLANC/CN=Marc BLANC");
    let refused = issue(&pki, &during);
    let text = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(text.contains("503"), "issuance during the outage: {text}");
    // Unavailable, worth retrying: 69 (EX_UNAVAILABLE), not a refusal.
    assert_eq!(refused.status.code(), Some(69), "{text}");
    // Now the pool knows: the next issuance is refused before anything is recorded.
    let refused = issue(&pki, &during);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("503"));
    let revoke = pki.sceau(&["revoke", "--serial", &serial, "--reason", "superseded"]);
    let text = String::from_utf8_lossy(&revoke.stderr).into_owned();
    assert_eq!(revoke.status.code(), Some(69), "{text}");
    assert!(
        text.contains("503") && text.contains("nothing was changed"),
        "{text}"
    );
    let (status, _, body) = http(daemon.admin, "GET", "/healthz", &[], b"");
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("degraded"));
    let (status, _, body) = http(daemon.va, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "the VA keeps serving");
    assert!(String::from_utf8_lossy(&body).contains("degraded"));
    // OCSP during the outage: every answer a valid, pre-signed "good" (nothing was revoked).
    let mut good = 0;
    let total = 200;
    for _ in 0..total {
        let (status, _, body) = ocsp_post(daemon.va, &request);
        if status == 200 && body.len() > 100 {
            good += 1;
        }
    }
    assert_eq!(good, total, "OCSP answers during the outage");
    assert!(pki.ocsp_status(&daemon, &certificate).contains(": good"));

    // The token comes back: the daemon heals without a request needing it.
    move_keys(&pki.path("tokens"), &away, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, _) = http(daemon.admin, "GET", "/healthz", &[], b"");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "health did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The same keys as during the outage: the failed attempt did not burn them.
    let out = issue(&pki, &during);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pki.sceau_ok(&["revoke", "--serial", &serial, "--reason", "superseded"]);
    assert!(pki.ocsp_status(&daemon, &certificate).contains(": revoked"));
    assert!(daemon.metric("sceau_hsm_errors_total", "") >= 1);
    // Every OCSP request of the outage is in the latency histogram; the daemon is ready.
    assert!(daemon.metric("sceau_ocsp_request_duration_seconds_count", "") >= total);
    assert!(daemon.metric("sceau_ocsp_request_duration_seconds_bucket", "le=\"+Inf\"") >= total);
    assert!(daemon.metric("sceau_certificates_issued_total", "") >= 2);
    let (status, _, _) = http(daemon.admin, "GET", "/readyz", &[], b"");
    assert_eq!(status, 200);
    assert!(daemon.stop().success());
    // The audit chain: the serial drawn during the outage was revoked as an abandoned intent.
    let export = pki.sceau_ok(&["audit", "export"]);
    assert!(export.contains("intent_revoked"), "{export}");
    assert!(pki.sceau_ok(&["audit", "verify"]).contains("verified"));
}

/// The token's directory, whole (token.object included), moved to `away` or back.
fn move_token(tokens: &Path, away: &Path, out: bool) {
    if out {
        let token_dir = token_dir(tokens);
        std::fs::write(
            away.with_extension("name"),
            token_dir.file_name().unwrap().as_encoded_bytes(),
        )
        .unwrap();
        std::fs::rename(&token_dir, away).unwrap();
    } else {
        let name = std::fs::read(away.with_extension("name")).unwrap();
        let name = String::from_utf8(name).unwrap();
        std::fs::rename(away, tokens.join(name)).unwrap();
    }
}

/// Issue 9, problems 3 and 8: the whole token goes away (as when a network HSM or its client
/// restarts) right after a revocation, before its CRL is made, and comes back. Without a
/// restart: OCSP answers throughout, issuance works again within 10 s of the token's return
/// (the PKCS#11 module is finalised and initialised again), and the CRL that failed during the
/// outage is published once the HSM is back.
#[test]
fn a_token_that_disappears_whole_is_recovered_and_the_crl_follows() {
    let (pki, daemon, certificate) =
        daemon_with_certificate("victim", "/GN=Ella/SN=TOKEN/CN=Ella TOKEN");
    let serial = serial_of(&certificate);
    let request = pki.ocsp_request(&certificate);
    let bystander = pki.issue_holder("bystander", "/GN=Noe/SN=TEMOIN/CN=Noe TEMOIN");
    daemon.wait_until("the first CRL", |d| {
        http(d.va, "GET", "/crl/ac-agents.crl", &[], b"").0 == 200
    });
    let (_, number_before) = pki.served_crl(&daemon, "ac-agents");

    // Revoked; the token goes before the CRL's coalescing delay (2 s) is over.
    pki.sceau_ok(&["revoke", "--serial", &serial, "--reason", "keyCompromise"]);
    let away = pki.path("token-away");
    move_token(&pki.path("tokens"), &away, true);
    assert!(pki.ocsp_status(&daemon, &certificate).contains(": revoked"));
    // During the outage: a revocation is refused (503) before anything is committed, even as
    // the first call after the token went (the daemon asks the token, not its last known
    // state); issuance refused; OCSP answered from memory; the CRL not yet made.
    let bystander_serial = serial_of(&bystander);
    let refused = pki.sceau(&[
        "revoke",
        "--serial",
        &bystander_serial,
        "--reason",
        "superseded",
    ]);
    let text = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        !refused.status.success() && text.contains("503"),
        "revocation during the outage: {text}"
    );
    let during = pki.csr("during", KeyKind::P256, "/GN=Yves/SN=PANNE/CN=Yves PANNE");
    let refused = issue(&pki, &during);
    assert!(!refused.status.success(), "issued without a token");
    for _ in 0..50 {
        let (status, _, body) = ocsp_post(daemon.va, &request);
        assert!(status == 200 && body.len() > 100, "OCSP during the outage");
    }
    std::thread::sleep(Duration::from_secs(4));
    let (listed, _) = pki.served_crl(&daemon, "ac-agents");
    assert!(!listed.contains(&serial), "a CRL signed without a token?");

    // The token is back: issuance within 10 s, without a restart.
    move_token(&pki.path("tokens"), &away, false);
    let back = Instant::now();
    loop {
        let out = issue(&pki, &during);
        if out.status.success() {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "issuance still refused 10 s after the token came back: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The CRL that failed during the outage follows (retried every few seconds).
    loop {
        let (listed, number) = pki.served_crl(&daemon, "ac-agents");
        if listed.contains(&serial) {
            assert!(number > number_before);
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "the CRL still lacks the revocation 20 s after the token came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The refused revocation changed nothing.
    assert!(pki.ocsp_status(&daemon, &bystander).contains(": good"));
    let (listed, _) = pki.served_crl(&daemon, "ac-agents");
    assert!(!listed.contains(&serial_of(&bystander)));
    assert!(daemon.stop().success());
}
