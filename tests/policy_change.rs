//! The policy files in force changed only by a ceremony (issue 21, item 2: `change-policies`):
//! on a CA under dual control, policy files that are not those the officers approved are
//! refused at the daemon's start, at a reload (SIGHUP) and offline; `change-policies` approved
//! by M officers puts a new set in force, and makes proposals made before it void.
mod common;

use std::path::{Path, PathBuf};

use common::daemon::Daemon;
use common::officers::{approve, card};
use common::tokens::Token;
use common::{Keys, Pki, all_output};

struct Officer {
    key: PathBuf,
    pem: PathBuf,
}

fn propose(pki: &Pki, name: &str, operation: &str, args: &[&str]) -> PathBuf {
    let proposal = pki.path(&format!("{name}.json"));
    let mut all = vec!["ceremony", "propose", operation];
    all.extend_from_slice(args);
    all.extend(["--out", proposal.to_str().unwrap()]);
    pki.sceau_ok(&all);
    proposal
}

fn run(pki: &Pki, proposal: &Path, officers: &[&Officer]) -> std::process::Output {
    let bytes = std::fs::read(proposal).unwrap();
    let mut args = vec![
        "ceremony".to_owned(),
        "run".to_owned(),
        proposal.display().to_string(),
    ];
    for (i, officer) in officers.iter().enumerate() {
        let path = proposal.with_extension(format!("{i}.der"));
        let der = approve(pki.path("").as_path(), (&officer.key, &officer.pem), &bytes);
        std::fs::write(&path, der).unwrap();
        args.extend(["--approval".to_owned(), path.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pki.sceau(&args)
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
    let officer = |name: &str, subject: &str| {
        let (key, pem, _) = card(pki.path("").as_path(), name, subject, "365");
        Officer { key, pem }
    };
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
    let out = run(&pki, &init, &both);
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
    let moved = pki.path("change-moved.json");
    std::fs::copy(&change, &moved).unwrap();
    append(&next.join("justice-sign.toml"), "\n# slipped in\n");
    let out = run(&pki, &moved, &both);
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
    let out = run(&pki, &change, &both);
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
    let out = run(&pki, &stale, &both);
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
