//! The policy files in force changed only by a ceremony (issue 21, item 2: `change-policies`):
//! on a CA under dual control, policy files that are not those the officers approved are
//! refused at the daemon's start, at a reload (SIGHUP) and offline; `change-policies` approved
//! by M officers puts a new set in force, and makes proposals made before it void.
mod common;

use std::path::Path;

use common::daemon::Daemon;
use common::officers::{self, Officer};
use common::tokens::Token;
use common::{Keys, Pki, all_output};

/// A proposal written to `name.json`, which must be accepted: `name`.
fn propose<'a>(pki: &Pki, name: &'a str, operation: &str, args: &[&str]) -> &'a str {
    let out = officers::propose(pki, name, operation, args, &[]);
    assert!(out.status.success(), "{}", all_output(&out));
    name
}

/// `name.json` run with the approvals of `officers`.
fn run(pki: &Pki, name: &str, officers: &[&Officer]) -> std::process::Output {
    officers::run(pki, name, officers, &[], &[])
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn append(path: &Path, text: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes.extend_from_slice(text.as_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn the_policies_in_force_change_only_by_a_ceremony() {
    let pki = Pki::on(Token::SoftHsm2, Keys::EC);
    let policies = pki.private_policies();
    let officer =
        |name: &str, subject: &str| Officer::new(pki.path("").as_path(), name, subject, "365");
    let alice = officer("alice", "/GN=Alice/SN=Durand/CN=Alice Durand");
    let bruno = officer("bruno", "/GN=Bruno/SN=Petit/CN=Bruno Petit");
    let both = [&alice, &bruno];
    let init = propose(
        &pki,
        "init",
        "init",
        &[
            "--officer",
            alice.pem.to_str().unwrap(),
            "--officer",
            bruno.pem.to_str().unwrap(),
            "--quorum",
            "2",
        ],
    );
    let out = run(&pki, init, &both);
    assert!(out.status.success(), "{}", all_output(&out));
    pki.issue_holder("first", "/GN=Agent/SN=PREMIER/CN=Agent PREMIER");

    // A policy file edited by hand: refused offline and at the daemon's start.
    let auth = policies.join("justice-auth.toml");
    let approved_bytes = std::fs::read(&auth).unwrap();
    append(&auth, "\n# edited by hand\n");
    let csr = pki.csr(
        "second",
        common::KeyKind::P256,
        "/GN=Agent/SN=SECOND/CN=Agent SECOND",
    );
    let out = pki.issue("justice-auth", &csr, &[]);
    assert!(
        !out.status.success()
            && all_output(&out).contains("not those the security officers approved"),
        "{}",
        all_output(&out)
    );
    let out = pki.sceau(&[
        "serve",
        "--listen-va",
        "127.0.0.1:0",
        "--listen-admin",
        "127.0.0.1:0",
    ]);
    assert!(
        !out.status.success() && all_output(&out).contains("change-policies"),
        "{}",
        all_output(&out)
    );
    std::fs::write(&auth, &approved_bytes).unwrap();
    pki.issue_ok("justice-auth", &csr, &[]);

    // A proposal made now, under the policies about to change.
    let stale = propose(
        &pki,
        "rotate",
        "rotate-issuing",
        &["--common-name", "AC Agents 2"],
    );

    // Garbage for a new set: no such directory, a file that is not a policy. Refused at the
    // proposal, naming what is wrong; nothing written.
    let broken = pki.path("policies-broken");
    copy_dir(&policies, &broken);
    std::fs::write(broken.join("justice-auth.toml"), "not = [a policy").unwrap();
    for (dir, expected) in [
        (pki.path("no-such-policies"), "no-such-policies"),
        (broken.clone(), "justice-auth.toml"),
    ] {
        let out = officers::propose(
            &pki,
            "garbage",
            "change-policies",
            &["--policies-from", dir.to_str().unwrap()],
            &[],
        );
        assert!(
            !out.status.success() && all_output(&out).contains(expected),
            "{}",
            all_output(&out)
        );
        assert!(!pki.path("garbage.json").exists());
    }

    // The change, as a ceremony: a new set in a directory of its own.
    let next = pki.path("policies-next");
    copy_dir(&policies, &next);
    append(&next.join("justice-auth.toml"), "\n# version 2, approved\n");
    let change = propose(
        &pki,
        "change",
        "change-policies",
        &["--policies-from", next.to_str().unwrap()],
    );
    // The directory edited after the officers read the proposal: refused.
    std::fs::copy(
        pki.path(&format!("{change}.json")),
        pki.path("change-moved.json"),
    )
    .unwrap();
    append(&next.join("justice-sign.toml"), "\n# slipped in\n");
    let out = run(&pki, "change-moved", &both);
    assert!(
        !out.status.success() && all_output(&out).contains("not those the proposal names"),
        "{}",
        all_output(&out)
    );
    std::fs::write(
        next.join("justice-sign.toml"),
        std::fs::read(policies.join("justice-sign.toml")).unwrap(),
    )
    .unwrap();
    let out = run(&pki, change, &both);
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(
        std::fs::read(&auth).unwrap(),
        std::fs::read(next.join("justice-auth.toml")).unwrap(),
        "the approved set is in force"
    );
    let third = pki.csr(
        "third",
        common::KeyKind::P256,
        "/GN=Agent/SN=TROIS/CN=Agent TROIS",
    );
    pki.issue_ok("justice-auth", &third, &[]);
    // The proposal made before is void: the policies it named are no longer in force.
    let out = run(&pki, stale, &both);
    assert!(
        !out.status.success() && all_output(&out).contains("configuration changed"),
        "{}",
        all_output(&out)
    );

    // The daemon starts with the approved set, and refuses an edited one at a reload.
    let daemon = Daemon::start(&pki);
    append(&auth, "\n# edited while it runs\n");
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status();
    daemon.wait_until("the reload refused", |_| {
        std::fs::read_to_string(pki.path("daemon.log"))
            .unwrap_or_default()
            .contains("policies not reloaded")
    });
    daemon.stop();
    let log = pki.sceau_ok(&["audit", "export"]);
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("\"event\":\"policies_changed\""))
            .count(),
        1,
        "{log}"
    );
}
