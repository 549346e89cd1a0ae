//! Retired keys destroyed as a ceremony (issue 21, item 4): a delegated responder's key once
//! another is in force, a superseded issuing CA's key once every certificate it issued has
//! expired; keys in force, roots and a CA still owing CRLs refused. Their certificates stay,
//! their status unchanged, the destruction is recorded, and the daemon starts and serves
//! without them. SoftHSM2, the real binary, OpenSSL as the officers' tool.
mod common;

use common::daemon::Daemon;
use common::officers::{self, Officer};
use common::tokens::Token;
use common::{Keys, Pki, all_output};

/// A ceremony approved by `officers` (openssl), run with `env`: the run's output.
fn ceremony(
    pki: &Pki,
    officers: &[&Officer],
    name: &str,
    operation: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    officers::ceremony(pki, name, operation, args, officers, env)
}

fn succeeded(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", all_output(out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["succeeded"], true, "{done}");
    done
}

fn refused(out: &std::process::Output, expected: &str) {
    let text = all_output(out);
    assert!(
        !out.status.success() && text.contains(expected),
        "expected {expected:?}: {text}"
    );
}

/// The key labels `ca show` gives for `role` (`OCSP signer`, `issuing CA`), oldest first.
fn keys_of(pki: &Pki, role: &str) -> Vec<String> {
    let shown = pki.sceau_ok(&["ca", "show"]);
    let mut keys = Vec::new();
    let mut in_role = false;
    for line in shown.lines() {
        if !line.starts_with(' ') {
            in_role = line.starts_with(role);
        } else if in_role && let Some(key) = line.trim().strip_prefix("key") {
            keys.push(key.trim().to_owned());
        }
    }
    keys
}

/// Whether the token holds a private key labelled exactly `label`.
fn holds(pki: &Pki, label: &str) -> bool {
    pki.private_keys_listed(Token::SoftHsm2)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("label:"))
        .any(|l| l.trim() == label)
}

#[test]
fn retired_keys_are_destroyed_by_a_ceremony_and_keys_in_force_never() {
    let pki = Pki::on(Token::SoftHsm2, Keys::EC);
    let officer =
        |name: &str, subject: &str| Officer::new(pki.path("").as_path(), name, subject, "3650");
    let alice = officer("alice", "/GN=Alice/SN=Durand/CN=Alice Durand");
    let bruno = officer("bruno", "/GN=Bruno/SN=Petit/CN=Bruno Petit");
    let both = [&alice, &bruno];
    let (a, b) = (alice.pem.to_str().unwrap(), bruno.pem.to_str().unwrap());
    succeeded(&ceremony(
        &pki,
        &both,
        "init",
        "init",
        &["--officer", a, "--officer", b, "--quorum", "2"],
        &[],
    ));
    let agent = pki.issue_holder("agent", "/GN=Agent/SN=ANCIEN/CN=Agent ANCIEN");

    // A responder renewed: the former responder's key is retired, the new one in force.
    succeeded(&ceremony(
        &pki,
        &both,
        "renew",
        "renew-responders",
        &[],
        &[],
    ));
    let responders = keys_of(&pki, "OCSP signer");
    assert_eq!(responders.len(), 2, "{responders:?}");
    let (former, current) = (responders[0].clone(), responders[1].clone());
    refused(
        &ceremony(
            &pki,
            &both,
            "destroy-current",
            "destroy-key",
            &["--key-label", &current],
            &[],
        ),
        "in force",
    );
    refused(
        &ceremony(
            &pki,
            &both,
            "destroy-root",
            "destroy-key",
            &["--key-label", "test-root"],
            &[],
        ),
        "never destroyed",
    );
    assert!(holds(&pki, &former));
    // Through the running daemon: it answers as before, signed by the responder in force.
    let daemon = Daemon::start(&pki);
    daemon.wait_until("ready", |d| {
        common::daemon::http(d.va, "GET", "/readyz", &[], b"").0 == 200
    });
    let done = succeeded(&ceremony(
        &pki,
        &both,
        "destroy-former",
        "destroy-key",
        &["--key-label", &former],
        &[],
    ));
    assert_eq!(done["details"]["objects"], "2", "{done}");
    assert_eq!(done["details"]["was"], "retired OCSP responder", "{done}");
    assert!(!holds(&pki, &former));
    assert!(holds(&pki, &current));
    pki.revoke(&agent, "superseded");
    assert!(pki.ocsp_status(&daemon, &agent).contains(": revoked"));
    let (status, _, body) = common::daemon::http(daemon.admin, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    daemon.stop();
    assert!(
        keys_of(&pki, "OCSP signer")[0].contains("destroyed"),
        "the certificate stays, its key marked destroyed"
    );

    // The issuing CA superseded: its key is retired only once what it issued has expired.
    succeeded(&ceremony(
        &pki,
        &both,
        "rotate",
        "rotate-issuing",
        &["--common-name", "AC Agents 2"],
        &[],
    ));
    let issuing = keys_of(&pki, "issuing CA");
    assert_eq!(issuing.len(), 2, "{issuing:?}");
    let old_ca = issuing[0].clone();
    refused(
        &ceremony(
            &pki,
            &both,
            "destroy-old-ca",
            "destroy-key",
            &["--key-label", &old_ca],
            &[],
        ),
        "valid until",
    );
    refused(
        &ceremony(
            &pki,
            &both,
            "destroy-new-ca",
            "destroy-key",
            &["--key-label", &issuing[1]],
            &[],
        ),
        "in force",
    );
    // Past the agent certificate's end (3 years): the old CA owes no more CRLs.
    let later = [("SCEAU_NOW", "2030-06-01T00:00:00Z")];
    let done = succeeded(&ceremony(
        &pki,
        &both,
        "destroy-old-ca-later",
        "destroy-key",
        &["--key-label", &old_ca],
        &later,
    ));
    assert_eq!(done["details"]["was"], "retired issuing CA", "{done}");
    assert!(!holds(&pki, &old_ca));
    assert!(holds(&pki, &issuing[1]));
    // Its responder in force is retired with it. A destruction killed between its mark and the
    // HSM call leaves the key unused (the state says destroyed), and the next one finishes it.
    let killed = [later[0], ("SCEAU_FAILPOINT", "destroy-retired-before-hsm")];
    let out = ceremony(
        &pki,
        &both,
        "destroy-old-responder-killed",
        "destroy-key",
        &["--key-label", &current],
        &killed,
    );
    assert!(
        !out.status.success() && all_output(&out).contains("destroy-retired-before-hsm"),
        "{}",
        all_output(&out)
    );
    assert!(holds(&pki, &current));
    assert!(
        keys_of(&pki, "OCSP signer")[1].contains("destroyed"),
        "{:?}",
        keys_of(&pki, "OCSP signer")
    );
    let done = succeeded(&ceremony(
        &pki,
        &both,
        "destroy-old-responder",
        "destroy-key",
        &["--key-label", &current],
        &later,
    ));
    assert_eq!(done["details"]["was"], "retired OCSP responder", "{done}");

    // Status unchanged, every destruction recorded, and the daemon serves without those keys.
    // The old CA's certificate kept its status (revoked above, before the destruction).
    let shown = pki.serial_state(&common::serial_of(&agent));
    assert_eq!(shown["state"], "revoked", "{shown}");
    let log = pki.sceau_ok(&["audit", "export"]);
    let destroyed = log
        .lines()
        .filter(|l| l.contains("\"event\":\"key_destroyed\""))
        .count();
    assert_eq!(destroyed, 3, "{log}");
    let daemon = Daemon::start(&pki);
    daemon.wait_until("ready", |d| {
        common::daemon::http(d.va, "GET", "/readyz", &[], b"").0 == 200
    });
    let (status, _, body) = common::daemon::http(daemon.admin, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let fresh = pki.issue_holder("fresh", "/GN=Agent/SN=NOUVEAU/CN=Agent NOUVEAU");
    let certs = pki.data_dir().join("certs");
    let issuer = std::fs::read_dir(&certs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ac-agents") && n != "ac-agents.pem")
        })
        .expect("the new issuing CA's certificate");
    let url = daemon.url("/ocsp");
    let (_, answer) = common::openssl(&[
        "ocsp",
        "-issuer",
        issuer.to_str().unwrap(),
        "-cert",
        fresh.to_str().unwrap(),
        "-url",
        &url,
        "-no_nonce",
        "-CAfile",
        certs.join("racine.pem").to_str().unwrap(),
    ]);
    assert!(
        answer.contains("Response verify OK") && answer.contains(": good"),
        "{answer}"
    );
    daemon.stop();
}
