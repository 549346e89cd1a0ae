//! Revocation is final and reaches every relying party, whatever happens around it: a revocation
//! racing an issuance, clients that hang up after their request was committed, a `kill -9`
//! between a revocation and its CRL, a revocation made while the daemon was stopped.
//!
//! The races are made deterministic with pause points of the `test-hooks` feature
//! (`SCEAU_PAUSE=<point>:<ms>`), which widen the window between a commit and the OCSP update
//! that follows it; the same tests without the pauses are the campaigns' ordinary case.
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, http};
use common::{KeyKind, Keys, Pki, serial_of};

/// A card's two certificates, written as PEM files.
struct Card {
    id: String,
    authentication: PathBuf,
    signature: PathBuf,
}

/// The JSON body of `POST /admin/card` for card `id` of a new holder named after `n`.
fn card_body(pki: &Pki, id: &str, n: usize) -> Vec<u8> {
    // Digits are for surnames only (a given name is letters: issue 18).
    let subject = format!("/GN=Agent/SN=RACE{n}/CN=Agent RACE{n}");
    let auth = pki.csr(&format!("{id}-auth"), KeyKind::P256, &subject);
    let sign = pki.csr(&format!("{id}-sign"), KeyKind::P256, &subject);
    serde_json::to_vec(&serde_json::json!({
        "holder": format!("holder-{id}"),
        "card": id,
        "authentication_csr": std::fs::read_to_string(auth).unwrap(),
        "signature_csr": std::fs::read_to_string(sign).unwrap(),
        "authentication_policy": "justice-auth",
        "signature_policy": "justice-sign",
    }))
    .unwrap()
}

fn admin_post(pki: &Pki, daemon: &Daemon, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let bearer = pki.admin_bearer();
    let (status, _, body) = http(
        daemon.admin,
        "POST",
        path,
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Writes the two certificates of an issued card (the admin API's answer) to files.
fn save_card(pki: &Pki, answer: &serde_json::Value) -> Card {
    let id = answer["card"].as_str().unwrap().to_owned();
    let save = |part: &str| {
        let path = pki.path(&format!("{id}-{part}.pem"));
        std::fs::write(&path, answer[part]["certificate"].as_str().unwrap()).unwrap();
        path
    };
    Card {
        authentication: save("authentication"),
        signature: save("signature"),
        id,
    }
}

/// Revokes card `id` as soon as it exists: retried until the admin API answers 200.
fn revoke_as_soon_as_it_exists(pki: &Pki, daemon: &Daemon, id: &str) {
    let body =
        serde_json::to_vec(&serde_json::json!({ "card": id, "reason": "keyCompromise" })).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = admin_post(pki, daemon, "/admin/revoke", &body);
        if status == 200 {
            return;
        }
        assert!(
            status == 404,
            "revoking {id} before it exists: {status} {answer}"
        );
        assert!(Instant::now() < deadline, "card {id} never appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends a request and closes the connection without reading the answer (a client that gives
/// up, or a load balancer that times out).
fn send_and_hang_up(pki: &Pki, daemon: &Daemon, path: &str, body: &[u8]) {
    let mut stream = TcpStream::connect(daemon.admin).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        daemon.admin,
        pki.admin_bearer(),
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    // Give the daemon the time to read the request, then hang up.
    std::thread::sleep(Duration::from_millis(150));
    drop(stream);
}

fn assert_ocsp(pki: &Pki, daemon: &Daemon, certificate: &std::path::Path, expected: &str) {
    let text = pki.ocsp_status(daemon, certificate);
    assert!(
        text.contains(&format!(": {expected}")),
        "{} should be {expected}:\n{text}",
        certificate.display()
    );
}

/// Problem 1: the issuance's OCSP update ("good") arrives after the revocation of the card it
/// issued. Revocation is final: the card stays revoked, before and after a restart.
#[test]
fn a_revocation_racing_the_issuance_it_revokes_stays_final() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    // The issuance's OCSP update waits 1.5 s after its commit: the revocation lands inside.
    let daemon = Daemon::start_with_env(&pki, &[("SCEAU_PAUSE", "before-ocsp-issued:1500")]);
    let body = card_body(&pki, "race-1", 1);
    let (status, answer) = std::thread::scope(|scope| {
        let issuing = scope.spawn(|| admin_post(&pki, &daemon, "/admin/card", &body));
        revoke_as_soon_as_it_exists(&pki, &daemon, "race-1");
        issuing.join().unwrap()
    });
    assert_eq!(status, 200, "{answer}");
    let card = save_card(&pki, &answer);
    assert_ocsp(&pki, &daemon, &card.authentication, "revoked");
    assert_ocsp(&pki, &daemon, &card.signature, "revoked");
    // The re-signing of responses is driven by the same map: still revoked after it, and after
    // a restart that reads back what was persisted.
    assert!(daemon.stop().success());
    let daemon = Daemon::start(&pki);
    assert_ocsp(&pki, &daemon, &card.authentication, "revoked");
    assert_ocsp(&pki, &daemon, &card.signature, "revoked");
    assert_eq!(card.id, "race-1");
}

/// The race campaign without pauses: cards issued while another client revokes each one as
/// soon as it exists. No card answers "good" once both calls returned.
#[test]
fn cards_revoked_while_being_issued_never_answer_good() {
    const CARDS: usize = 12;
    let pki = Pki::new(Keys::EC);
    pki.init();
    let daemon = Daemon::start(&pki);
    let bodies: Vec<_> = (0..CARDS)
        .map(|n| card_body(&pki, &format!("campaign-{n}"), n + 10))
        .collect();
    let answers = std::thread::scope(|scope| {
        let issuer = scope.spawn(|| {
            bodies
                .iter()
                .map(|body| admin_post(&pki, &daemon, "/admin/card", body))
                .collect::<Vec<_>>()
        });
        for n in 0..CARDS {
            revoke_as_soon_as_it_exists(&pki, &daemon, &format!("campaign-{n}"));
        }
        issuer.join().unwrap()
    });
    let mut good = Vec::new();
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        let card = save_card(&pki, answer);
        for certificate in [&card.authentication, &card.signature] {
            if !pki.ocsp_status(&daemon, certificate).contains(": revoked") {
                good.push(serial_of(certificate));
            }
        }
    }
    assert!(good.is_empty(), "answered other than revoked: {good:?}");
}

/// Problem 2: the client hangs up after its request was committed. The OCSP update still
/// happens: a revocation is answered "revoked", an issuance "good" (never "unknown").
#[test]
fn a_client_that_hangs_up_does_not_lose_the_ocsp_update() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let daemon = Daemon::start_with_env(
        &pki,
        &[(
            "SCEAU_PAUSE",
            "before-ocsp-issued:800,before-ocsp-revoked:800",
        )],
    );
    // An issuance whose client is gone before its OCSP update.
    send_and_hang_up(&pki, &daemon, "/admin/card", &card_body(&pki, "gone-1", 1));
    std::thread::sleep(Duration::from_millis(2500));
    let body = card_body(&pki, "kept-1", 2);
    let (status, answer) = admin_post(&pki, &daemon, "/admin/card", &body);
    assert_eq!(status, 200, "{answer}");
    let kept = save_card(&pki, &answer);
    assert_ocsp(&pki, &daemon, &kept.authentication, "good");

    // The hung-up issuance is answered "good" (not "unknown"): its serials are in the daemon's
    // log of issuances.
    let log = std::fs::read_to_string(pki.path("daemon.log")).unwrap();
    let serials: Vec<String> = log
        .lines()
        .filter(|l| l.contains("certificate issued") && l.contains("gone-1"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("serial="))
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(serials.len(), 2, "{log}");
    for serial in &serials {
        let text = pki.ocsp_serial_status(&daemon, serial);
        assert!(text.contains(": good"), "{serial}: {text}");
    }

    // A revocation whose client is gone before its OCSP update.
    let revoke =
        serde_json::to_vec(&serde_json::json!({ "card": "kept-1", "reason": "keyCompromise" }))
            .unwrap();
    send_and_hang_up(&pki, &daemon, "/admin/revoke", &revoke);
    std::thread::sleep(Duration::from_millis(2000));
    assert_ocsp(&pki, &daemon, &kept.authentication, "revoked");
    assert_ocsp(&pki, &daemon, &kept.signature, "revoked");
}

/// Problem 3: a revocation whose CRL trigger was lost (`kill -9` right after it returned), and
/// one made with the daemon stopped, are on the served CRL within coalesce + 5 s of the next
/// start's readiness.
#[test]
fn the_crl_converges_after_a_kill_and_after_an_offline_revocation() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    // A long coalescing delay: the trigger cannot fire before the kill.
    let config = std::fs::read_to_string(&pki.config).unwrap();
    std::fs::write(
        &pki.config,
        format!("{config}\n[crl]\ncoalesce_seconds = 30\n"),
    )
    .unwrap();
    let daemon = Daemon::start(&pki);
    daemon.wait_until("the first CRL", |d| {
        http(d.va, "GET", "/crl/ac-agents.crl", &[], b"").0 == 200
    });
    let (_, first_number) = pki.served_crl(&daemon, "ac-agents");
    let victim = pki.issue_holder("victim", "/GN=Rose/SN=KILL/CN=Rose KILL");
    let offline = pki.issue_holder("offline", "/GN=Paul/SN=HORS/CN=Paul HORS");
    let serial = serial_of(&victim);
    pki.sceau_ok(&["revoke", "--serial", &serial, "--reason", "keyCompromise"]);
    assert_ocsp(&pki, &daemon, &victim, "revoked");
    let (listed, _) = pki.served_crl(&daemon, "ac-agents");
    assert!(!listed.contains(&serial), "not yet: the trigger waits 30 s");
    drop(daemon); // kill -9

    // Revoked while the daemon is stopped.
    let offline_serial = serial_of(&offline);
    pki.sceau_ok(&[
        "revoke",
        "--serial",
        &offline_serial,
        "--reason",
        "affiliationChanged",
    ]);
    // A wrong argument is a usage error (64, EX_USAGE), naming the option; nothing changes.
    let wrong = pki.sceau(&["revoke", "--serial", "zz", "--reason", "superseded"]);
    let text = String::from_utf8_lossy(&wrong.stderr).into_owned();
    assert_eq!(wrong.status.code(), Some(64), "{text}");
    assert!(text.contains("--serial"), "{text}");

    let daemon = Daemon::start(&pki);
    daemon.wait_until("readiness", |d| {
        http(d.admin, "GET", "/readyz", &[], b"").0 == 200
    });
    let ready = Instant::now();
    let deadline = ready + Duration::from_secs(5);
    loop {
        let (listed, number) = pki.served_crl(&daemon, "ac-agents");
        if listed.contains(&serial) && listed.contains(&offline_serial) {
            assert!(number > first_number);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the served CRL still lacks a revocation 5 s after readiness: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ocsp(&pki, &daemon, &victim, "revoked");
    assert_ocsp(&pki, &daemon, &offline, "revoked");
}

/// Issue 10 problem 9: a client of the admin listener that sends its headers and then trickles
/// its body is answered 408 after the body deadline, and nothing is done.
#[test]
fn a_trickled_request_body_is_cut_with_408() {
    use std::io::Read;
    let pki = Pki::new(Keys::EC);
    pki.init();
    let daemon = Daemon::start(&pki);
    let mut stream = TcpStream::connect(daemon.admin).unwrap();
    let head = format!(
        "POST /admin/revoke HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"serial\":",
        daemon.admin,
        pki.admin_bearer()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body-timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(20));
}
