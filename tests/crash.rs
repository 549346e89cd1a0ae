//! Invariant 1 (docs/invariants.md): nothing is signed that is not recorded first, and a crash
//! between the recorded intent and the stored certificate leaves nothing valid that the CA does
//! not know.
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
    let csr_path = csr.to_str().unwrap();
    let out = pki.sceau_with_env(
        &["issue", "--policy", "justice-auth", "--csr", csr_path],
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
    let again = pki.issue("justice-auth", &csr, &[]);
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

/// Every recorded serial is stored (issued, or revoked by the resolution) or revoked as an
/// intent: none is left unresolved, and the audit chain verifies.
fn assert_no_intent_left(pki: &Pki) {
    for serial in &audit_serials(pki).intents {
        let state = pki.serial_state(serial);
        assert!(
            state["state"] == "issued" || state["state"] == "revoked",
            "{serial}: {state}"
        );
    }
    pki.audit_entries();
}

/// Events of one kind in the audit log, as JSON.
fn audit_events(pki: &Pki, kind: &str) -> Vec<serde_json::Value> {
    pki.sceau_ok(&["audit", "export"])
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|entry| entry["event"] == kind)
        .collect()
}

/// A new CA, whose ceremony `args` is killed (SIGABRT) before it commits the CA state.
fn ceremony_killed(args: &[&str]) -> Pki {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let out = pki.sceau_with_env(args, &[("SCEAU_FAILPOINT", "ceremony-before-commit")]);
    assert_eq!(
        out.status.signal(),
        Some(6),
        "{args:?} should abort: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pki
}

/// Issue 9, problem 4: a key ceremony killed after it signed its certificates and before it
/// committed the CA state leaves no valid certificate the CA does not know, and every key it
/// made is accounted for; the next ceremony succeeds.
fn ceremony_crash(args: &[&str], kind: &str, new_keys: usize) {
    let pki = ceremony_killed(args);
    let started = audit_events(&pki, "ceremony_started");
    let started = started
        .last()
        .expect("the ceremony announced its keys first");
    assert_eq!(started["kind"], kind);
    let labels: Vec<String> = started["key_labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(labels.len(), new_keys, "{started}");

    // The next command that opens the CA resolves the ceremony.
    let check = pki.sceau_ok(&["check"]);
    let abandoned = audit_events(&pki, "ceremony_abandoned");
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    let revoked: Vec<String> = abandoned[0]["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        revoked.len(),
        new_keys,
        "one certificate per new key: {abandoned:?}"
    );
    for serial in &revoked {
        assert_eq!(
            pki.serial_state(serial)["state"],
            "revoked",
            "the orphan certificate {serial} is revoked"
        );
    }
    // Every key the ceremony made is reported, in the audit log and by `sceau check`.
    for label in &labels {
        assert!(
            abandoned[0]["orphan_keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l == label.as_str()),
            "{label} is not reported: {abandoned:?}"
        );
        assert!(check.contains(label.as_str()), "{check}");
    }
    assert_no_intent_left(&pki);
    // The next ceremony of the same kind succeeds.
    pki.sceau_ok(args);
    assert!(pki.sceau_ok(&["audit", "verify"]).contains("verified"));
}

#[test]
fn a_crashed_issuing_ca_rollover_leaves_no_unknown_valid_certificate() {
    ceremony_crash(&["ca", "rotate"], "rotate-issuing", 2);
}

#[test]
fn a_crashed_root_rollover_leaves_no_unknown_valid_certificate() {
    // A new root, then its two link certificates: three certificates for one new key; the
    // new root's own (self-signed) certificate and both links are revoked.
    let pki = ceremony_killed(&["ca", "rotate", "--root"]);
    pki.sceau_ok(&["check"]);
    let abandoned = audit_events(&pki, "ceremony_abandoned");
    assert_eq!(abandoned.len(), 1);
    let revoked = abandoned[0]["revoked"].as_array().unwrap();
    assert_eq!(revoked.len(), 3, "{abandoned:?}");
    for serial in revoked {
        assert_eq!(
            pki.serial_state(serial.as_str().unwrap())["state"],
            "revoked"
        );
    }
    assert_eq!(abandoned[0]["orphan_keys"].as_array().unwrap().len(), 1);
    pki.sceau_ok(&["ca", "rotate", "--root"]);
    assert_no_intent_left(&pki);
}

#[test]
fn a_crashed_responder_renewal_leaves_no_unknown_valid_certificate() {
    ceremony_crash(&["ocsp", "renew-signer"], "renew-responder", 1);
}

#[test]
fn a_crashed_init_can_be_run_again() {
    let pki = Pki::new(Keys::EC);
    let out = pki.sceau_with_env(
        &["init", "--without-dual-control"],
        &[("SCEAU_FAILPOINT", "ceremony-before-commit")],
    );
    assert_eq!(out.status.signal(), Some(6));
    // Before this fix, the configured labels were taken and `init` could never succeed.
    let again = pki.sceau_ok(&["init", "--without-dual-control"]);
    assert!(again.contains("CA initialised"), "{again}");
    let abandoned = audit_events(&pki, "ceremony_abandoned");
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert_eq!(abandoned[0]["kind"], "init");
    assert_eq!(abandoned[0]["orphan_keys"].as_array().unwrap().len(), 3);
    assert_eq!(abandoned[0]["revoked"].as_array().unwrap().len(), 3);
    // The CA works: it issues, and the first attempt's labels are reported by `check`.
    let csr = pki.csr("after", KeyKind::P256, "/GN=Lea/SN=APRES/CN=Lea APRES");
    pki.issue_ok("justice-auth", &csr, &[]);
    assert!(pki.sceau_ok(&["check"]).contains("test-root"));
    assert_no_intent_left(&pki);
}
