//! The CA host publishes to NATS JetStream what responder nodes serve: real nats-server
//! processes, a real daemon on SoftHSM2, OpenSSL checking the published responses.
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::daemon::Daemon;
use common::nats::NatsServer;
use common::{Pki, openssl};
use sceau::va::publish::StatusValue;

/// The status bucket's value for `key`, read with async-nats.
fn read_status(url: &str, key: &str) -> Option<StatusValue> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(url).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let bucket = js.get_key_value("sceau-status").await.ok()?;
        let bytes = bucket.get(key).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    })
}

/// Waits until the bucket's value for `key` satisfies `done`; returns it and how long it took.
fn wait_for(
    url: &str,
    key: &str,
    within: Duration,
    done: impl Fn(&StatusValue) -> bool,
) -> (StatusValue, Duration) {
    let started = Instant::now();
    loop {
        if let Some(value) = read_status(url, key)
            && done(&value)
        {
            return (value, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "{key}: not published as expected within {within:?}: {:?}",
            read_status(url, key)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status key of a certificate: the issuing CA's key identifier and the serial, hex.
fn status_key(pki: &Pki, certificate: &Path) -> String {
    let serial = common::serial_of(certificate);
    let issuer = pki.path("ac-agents.pem");
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        issuer.to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectKeyIdentifier",
    ]);
    assert!(ok, "{text}");
    let ski: String = text
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .replace(':', "")
        .to_uppercase();
    format!("{ski}.{serial}")
}

/// What `openssl ocsp` makes of a published response: its status line.
fn openssl_status(pki: &Pki, value: &StatusValue, certificate: &Path, name: &str) -> String {
    let der = base64::engine::general_purpose::STANDARD
        .decode(&value.sha1.as_ref().expect("a SHA-1 response").der)
        .unwrap();
    let path = pki.path(&format!("{name}.ocsp"));
    std::fs::write(&path, der).unwrap();
    let (ok, text) = openssl(&[
        "ocsp",
        "-respin",
        path.to_str().unwrap(),
        "-issuer",
        pki.path("ac-agents.pem").to_str().unwrap(),
        "-cert",
        certificate.to_str().unwrap(),
        "-CAfile",
        pki.path("racine.pem").to_str().unwrap(),
        "-VAfile",
        pki.path("ocsp-ac-agents.pem").to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    text
}

fn issue(pki: &Pki, name: &str) -> std::path::PathBuf {
    pki.issue_holder(
        name,
        &format!(
            "/GN=Agent/SN={}/CN=Agent {}",
            name.to_uppercase(),
            name.to_uppercase()
        ),
    )
}

/// Issue 11, items 1 and 2: an issuance and a revocation reach the status bucket, with
/// responses OpenSSL accepts; the CRL and the CA certificates reach the files bucket.
#[test]
fn issuance_and_revocation_are_published_with_their_responses() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&dir.path().join("nats"));
    let pki = Pki::new(common::Keys::EC);
    pki.enable_nats(&[nats.url()], 1);
    pki.init();
    let daemon = Daemon::start(&pki);
    copy_certs(&pki);
    let holder = issue(&pki, "publie");
    let key = status_key(&pki, &holder);
    let (good, _) = wait_for(&nats.url(), &key, Duration::from_secs(10), |v| {
        v.status == "good" && v.sha1.is_some() && v.sha256.is_some()
    });
    assert!(openssl_status(&pki, &good, &holder, "good").contains(": good"));

    let serial = common::serial_of(&holder);
    let revoked_at = Instant::now();
    pki.sceau_ok(&["revoke", "--serial", &serial, "--reason", "key-compromise"]);
    let returned = revoked_at.elapsed();
    let (revoked, after_return) = wait_for(&nats.url(), &key, Duration::from_secs(10), |v| {
        v.status == "revoked" && v.sha1.is_some()
    });
    assert_eq!(revoked.reason, Some(1));
    let text = openssl_status(&pki, &revoked, &holder, "revoked");
    assert!(text.contains(": revoked"), "{text}");
    eprintln!("revoke returned in {returned:?}; published {after_return:?} after");

    // The files bucket: the CRL (with the revocation, once republished) and CA certificates.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let names = runtime.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let files = js.get_object_store("sceau-files").await.unwrap();
        let mut names = Vec::new();
        for name in ["ca/racine.crt", "ca/ac-agents.crt", "crl/ac-agents.crl"] {
            if files.get(name).await.is_ok() {
                names.push(name);
            }
        }
        names
    });
    assert!(names.contains(&"ca/ac-agents.crt"), "{names:?}");
    let metrics = daemon.metric("sceau_published_total", "");
    assert!(metrics >= 2, "{metrics}");
    assert_eq!(daemon.metric("sceau_engine_connected", ""), 1);
}

/// Issue 11, item 2: with the engine down, a revocation waits in the outbox; the CA killed
/// (-9) meanwhile and the engine back, the restarted CA publishes it.
#[test]
fn a_revocation_made_while_the_engine_is_down_reaches_it_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(&dir.path().join("nats"));
    let pki = Pki::new(common::Keys::EC);
    pki.enable_nats(&[nats.url()], 1);
    pki.init();
    let daemon = Daemon::start(&pki);
    copy_certs(&pki);
    let holder = issue(&pki, "enpanne");
    let key = status_key(&pki, &holder);
    wait_for(&nats.url(), &key, Duration::from_secs(10), |v| {
        v.status == "good" && v.sha1.is_some()
    });

    nats.kill();
    let serial = common::serial_of(&holder);
    pki.sceau_ok(&[
        "revoke",
        "--serial",
        &serial,
        "--reason",
        "affiliation-changed",
    ]);
    // The revocation waits in the outbox.
    daemon.wait_until("the outbox holds the revocation", |d| {
        d.metric("sceau_outbox_depth", "") >= 1
    });
    drop(daemon); // SIGKILL: nothing flushed, nothing said goodbye
    nats.restart();
    assert_eq!(
        read_status(&nats.url(), &key).map(|v| v.status),
        Some("good".to_owned()),
        "the engine has not heard of the revocation yet"
    );
    let daemon = Daemon::start(&pki);
    let (revoked, _) = wait_for(&nats.url(), &key, Duration::from_secs(15), |v| {
        v.status == "revoked" && v.sha1.is_some()
    });
    assert_eq!(revoked.reason, Some(3));
    assert!(openssl_status(&pki, &revoked, &holder, "after-crash").contains(": revoked"));
    daemon.wait_until("the outbox drained", |d| {
        d.metric("sceau_outbox_depth", "") == 0
    });
}

/// The CA certificates as files beside the PKI (racine.pem, ac-agents.pem, ocsp-ac-agents.pem).
fn copy_certs(pki: &Pki) {
    let certs = pki.data_dir().join("certs");
    for name in ["racine", "ac-agents", "ocsp-ac-agents"] {
        let from = certs.join(format!("{name}.pem"));
        std::fs::copy(&from, pki.path(&format!("{name}.pem")))
            .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}
