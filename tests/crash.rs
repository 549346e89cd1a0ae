//! DESIGN.md invariant 1: nothing is signed that is not recorded first, and a crash between the
//! recorded intent and the stored certificate leaves nothing valid that the CA does not know.
//!
//! Fail points (the `test-hooks` feature) abort the process at the two dangerous moments; then
//! `kill -9` lands at random moments of a batch. After each restart, every recorded serial is
//! either a stored certificate or revoked, and every certificate that left the process is
//! stored.
mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{KeyKind, Keys, Pki, make_csr};

/// Serials named by each kind of audit event.
#[derive(Default, Debug)]
struct AuditSerials {
    intents: BTreeSet<String>,
    issued: BTreeSet<String>,
    intent_revoked: BTreeSet<String>,
}

fn audit_serials(pki: &Pki) -> AuditSerials {
    let mut out = AuditSerials::default();
    for line in pki.sceau_ok(&["audit", "export"]).lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        let serial = entry["serial"].as_str().unwrap_or_default().to_owned();
        match entry["event"].as_str() {
            Some("issuance_intent") => out.intents.insert(serial),
            Some("certificate_issued") => out.issued.insert(serial),
            Some("intent_revoked") => out.intent_revoked.insert(serial),
            _ => false,
        };
    }
    out
}

/// After recovery: intents = issued ∪ revoked, disjoint, and nothing is left as an intent.
fn assert_every_intent_resolved(pki: &Pki) -> AuditSerials {
    let serials = audit_serials(pki);
    let resolved: BTreeSet<_> = serials
        .issued
        .union(&serials.intent_revoked)
        .cloned()
        .collect();
    assert_eq!(
        serials.intents, resolved,
        "every recorded serial is stored or revoked"
    );
    assert!(serials.issued.is_disjoint(&serials.intent_revoked));
    for serial in &serials.intents {
        let state = pki.serial_state(serial);
        assert_ne!(
            state["state"], "intent",
            "{serial} is still an unresolved intent"
        );
        let expected = if serials.issued.contains(serial) {
            "issued"
        } else {
            "revoked"
        };
        assert_eq!(state["state"], expected, "{serial}: {state}");
    }
    pki.audit_entries(); // the chain verifies
    serials
}

fn crash_at(point: &str) {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let csr = pki.csr("crash", KeyKind::P256, "/GN=Jean/SN=DUPONT/CN=Jean DUPONT");
    let out = pki.sceau_with_env(
        &[
            "issue",
            "--policy",
            "justice-auth",
            "--csr",
            csr.to_str().unwrap(),
        ],
        &[("SCEAU_FAILPOINT", point)],
    );
    assert_eq!(
        out.status.signal(),
        Some(6),
        "the process should abort at {point}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing may be delivered before the certificate is stored"
    );

    // The intent survived the crash, unresolved (reading the store does not recover it).
    let before = audit_serials(&pki);
    assert_eq!(
        before.intents.len(),
        3 + 1,
        "three CA certificates, then the holder's intent"
    );
    let serial = before
        .intents
        .difference(&before.issued)
        .next()
        .unwrap()
        .clone();
    assert_eq!(pki.serial_state(&serial)["state"], "intent");

    // Any command that opens the CA recovers: the serial is revoked, and logged.
    pki.sceau_ok(&["check"]);
    let after = assert_every_intent_resolved(&pki);
    assert!(after.intent_revoked.contains(&serial));
    // The CSR's key is never certified now: whatever the HSM may have signed is revoked.
    let again = pki.sceau(&[
        "issue",
        "--policy",
        "justice-auth",
        "--csr",
        csr.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("key-already-certified"));
}

#[test]
fn crash_after_the_intent_is_recorded() {
    crash_at("after-intent");
}

#[test]
fn crash_after_the_hsm_signed() {
    crash_at("after-sign");
}

#[test]
fn kill_9_during_a_batch_loses_nothing_and_leaves_nothing_unknown() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let mut delivered = BTreeSet::new();
    for round in 0..3usize {
        let csrs: Vec<_> = (0..60)
            .map(|i| {
                make_csr(
                    pki.dir.path(),
                    &format!("r{round}-{i}"),
                    KeyKind::P256,
                    &format!("/GN=Agent/SN=N{round}X{i}/CN=Agent N{round}X{i}"),
                )
            })
            .collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sceau"));
        command.arg("-c").arg(&pki.config).args([
            "--log",
            "error",
            "issue",
            "--policy",
            "justice-auth",
        ]);
        for csr in &csrs {
            command.arg("--csr").arg(csr);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut pem = String::new();
            let mut certificates = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                pem.push_str(&line);
                pem.push('\n');
                if line.starts_with("-----END CERTIFICATE") {
                    certificates.push(std::mem::take(&mut pem));
                    let _ = tx.send(certificates.len());
                }
            }
            certificates
        });
        // Kill at a different point of each batch (after 5, 17, 29 delivered certificates).
        let kill_after = 5 + 12 * round;
        while let Ok(count) = rx.recv_timeout(Duration::from_secs(30)) {
            if count >= kill_after {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9));
        for pem in reader.join().unwrap() {
            let file = pki.path("delivered.pem");
            std::fs::write(&file, &pem).unwrap();
            delivered.insert(common::serial_of(&file));
        }
    }
    // Restart: recovery runs, then every delivered certificate is stored and valid.
    pki.sceau_ok(&["check"]);
    let serials = assert_every_intent_resolved(&pki);
    assert!(
        delivered.len() >= 5 + 17 + 29,
        "{} delivered",
        delivered.len()
    );
    assert!(
        delivered.is_subset(&serials.issued),
        "a delivered certificate is not stored"
    );
    eprintln!(
        "kill -9: {} intents, {} issued, {} revoked at restart, {} delivered",
        serials.intents.len(),
        serials.issued.len(),
        serials.intent_revoked.len(),
        delivered.len()
    );
}
