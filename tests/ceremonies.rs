//! Key ceremonies under dual control, end to end (issue 21): a CA made by its security officers
//! (`sceau ceremony propose init`, every officer approving with `openssl cms`), then rollovers,
//! a responder renewal, a backup and a change of officers, each run only with a quorum of
//! approvals. Every way of cheating is tried against the real binary, a SoftHSM2 token and the
//! store, and must leave the token's keys, the CA and the audit log as they were. The
//! transcripts are then checked offline with `sceau ceremony verify`.
mod common;

use std::path::{Path, PathBuf};

use common::daemon::Daemon;
use common::officers::{approve, card, card_with_key};
use common::tokens::Token;
use common::{Keys, Pki, all_output};

/// An officer: their card's key and certificate (PEM).
struct Officer {
    key: PathBuf,
    pem: PathBuf,
}

fn officer(pki: &Pki, name: &str, subject: &str) -> Officer {
    let (key, pem, _) = card(pki.path("").as_path(), name, subject, "365");
    Officer { key, pem }
}

/// `sceau ceremony propose OPERATION ARGS --out FILE`: the proposal file.
fn propose(pki: &Pki, name: &str, operation: &str, args: &[&str]) -> PathBuf {
    let out = pki.path(&format!("{name}.proposal.json"));
    let mut all = vec!["ceremony", "propose", operation];
    all.extend_from_slice(args);
    all.extend(["--out", out.to_str().unwrap()]);
    pki.sceau_ok(&all);
    out
}

/// `sceau ceremony propose OPERATION ARGS`, which must be refused with `expected` in its error.
fn proposal_refused(pki: &Pki, operation: &str, args: &[&str], expected: &str) {
    let out_file = pki.path("refused.proposal.json");
    let mut all = vec!["ceremony", "propose", operation];
    all.extend_from_slice(args);
    all.extend(["--out", out_file.to_str().unwrap()]);
    let out = pki.sceau(&all);
    let text = all_output(&out);
    assert!(
        !out.status.success() && text.contains(expected),
        "{operation} {args:?}: {text}"
    );
    assert!(!out_file.exists(), "a refused proposal was written");
}

/// Each officer's approval of `proposal`, written to a file of its own.
fn approvals(pki: &Pki, proposal: &Path, officers: &[&Officer]) -> Vec<PathBuf> {
    let bytes = std::fs::read(proposal).unwrap();
    officers
        .iter()
        .enumerate()
        .map(|(i, officer)| {
            let der = approve(pki.path("").as_path(), (&officer.key, &officer.pem), &bytes);
            let path = proposal.with_extension(format!("approval-{i}.der"));
            std::fs::write(&path, der).unwrap();
            path
        })
        .collect()
}

fn run_args<'a>(proposal: &'a Path, approvals: &'a [PathBuf]) -> Vec<&'a str> {
    let mut args = vec!["ceremony", "run", proposal.to_str().unwrap()];
    for approval in approvals {
        args.extend(["--approval", approval.to_str().unwrap()]);
    }
    args
}

/// What a refused ceremony must leave unchanged: the token's private keys, the CA as `ca show`
/// prints it, the officers, key position and ceremonies `ceremony status` prints, and the
/// audit log's length.
fn everything(pki: &Pki) -> (String, String, String, u64) {
    let keys = pki.private_keys_listed(Token::from_env());
    let ca = String::from_utf8_lossy(&pki.sceau(&["ca", "show"]).stdout).into_owned();
    let (control, audit) = if pki.path("data/store").exists() {
        (pki.sceau_ok(&["ceremony", "status"]), pki.audit_entries())
    } else {
        (String::new(), 0)
    };
    (keys, ca, control, audit)
}

/// Runs a ceremony that must be refused with `expected` in its error, changing nothing.
fn refused(pki: &Pki, proposal: &Path, approvals: &[PathBuf], expected: &str) {
    let before = everything(pki);
    let out = pki.sceau(&run_args(proposal, approvals));
    let text = all_output(&out);
    assert!(!out.status.success(), "the ceremony ran: {text}");
    assert!(text.contains(expected), "expected {expected:?} in: {text}");
    assert_eq!(
        everything(pki),
        before,
        "a refused ceremony changed something"
    );
}

fn carried_out(pki: &Pki, proposal: &Path, approvals: &[PathBuf]) -> serde_json::Value {
    let out = pki.sceau_ok(&run_args(proposal, approvals));
    let done: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done["succeeded"], true, "{out}");
    done
}

#[test]
fn every_key_operation_runs_only_with_a_quorum_of_security_officers() {
    let pki = Pki::new(Keys::EC);
    pki.enable_ra(100_000);
    let alice = officer(&pki, "alice", "/GN=Alice/SN=Durand/CN=Alice Durand");
    let bruno = officer(&pki, "bruno", "/GN=Bruno/SN=Petit/CN=Bruno Petit");
    let chloe = officer(&pki, "chloe", "/GN=Chloe/SN=Moreau/CN=Chloe Moreau");
    // Alice's second card, her name in capitals: one person still.
    let (key, pem, _) = card(
        pki.path("").as_path(),
        "alice-2",
        "/GN=ALICE/SN=DURAND/CN=A DURAND",
        "365",
    );
    let alice_again = Officer { key, pem };

    // One person alone makes no CA.
    let alone = pki.sceau_fails(&["init"]);
    assert!(alone.contains("ceremony propose init"), "{alone}");

    // init: the three officers, two of whom approve each later ceremony; every officer
    // approves init itself.
    let officer_args = [
        "--officer",
        alice.pem.to_str().unwrap(),
        "--officer",
        bruno.pem.to_str().unwrap(),
        "--officer",
        chloe.pem.to_str().unwrap(),
        "--quorum",
        "2",
    ];
    let init = propose(&pki, "init", "init", &officer_args);
    let two_of_three = approvals(&pki, &init, &[&alice, &bruno]);
    refused(&pki, &init, &two_of_three, "3 needed");
    let all_three = approvals(&pki, &init, &[&alice, &bruno, &chloe]);
    let done = carried_out(&pki, &init, &all_three);
    assert_eq!(done["operation"], "init");
    let init_transcript = PathBuf::from(done["transcript"].as_str().unwrap());
    assert!(pki.sceau_ok(&["ca", "show"]).contains("ac-agents"));
    // A holder of the first issuing CA, asked about over OCSP during the root rollover below.
    let holder = pki.issue_holder("holder", "/GN=Hugo/SN=LEROY/CN=Hugo LEROY");
    // Replayed: refused (the officers are in force now; their quorum is met).
    refused(&pki, &init, &all_three, "already holds a CA");
    let status = pki.sceau_ok(&["ceremony", "status"]);
    assert!(
        status.contains("\"quorum\": 2") && status.contains("CN=Chloe Moreau"),
        "{status}"
    );

    // One person never holds both roles: an officer is not made an RA operator, and an RA
    // operator is not made an officer.
    let (_, _) = pki.issue_card(
        "bruno-card",
        "officer-bruno",
        "card-bruno",
        "/GN=Bruno/SN=PETIT/CN=Bruno PETIT",
    );
    let text = pki.sceau_fails(&["ra", "bootstrap", "--card", "card-bruno"]);
    assert!(text.contains("security officer"), "{text}");
    let (_, diane_sign) = pki.issue_card(
        "diane",
        "operator-diane",
        "card-diane",
        "/GN=Diane/SN=ROUX/CN=Diane ROUX",
    );
    pki.sceau_ok(&["ra", "bootstrap", "--card", "card-diane"]);
    proposal_refused(
        &pki,
        "change-officers",
        &[
            "--officer",
            alice.pem.to_str().unwrap(),
            "--officer",
            diane_sign.to_str().unwrap(),
            "--quorum",
            "2",
        ],
        "is an RA operator",
    );
    let diane = Officer {
        key: pki.path("diane-sig.key"),
        pem: diane_sign,
    };

    // Alone, nothing runs on this CA any more.
    for command in [
        vec!["ca", "rotate"],
        vec!["ca", "rotate", "--root"],
        vec!["ocsp", "renew-signer"],
        vec!["backup", "--out", pki.path("lone-backup").to_str().unwrap()],
    ] {
        let before = everything(&pki);
        let text = pki.sceau_fails(&command);
        assert!(
            text.contains("security officers approve"),
            "{command:?}: {text}"
        );
        assert_eq!(everything(&pki), before);
    }

    // An issuing rollover: each way of cheating is refused, then two officers run it.
    let rotate = propose(
        &pki,
        "rotate",
        "rotate-issuing",
        &["--common-name", "AC Agents 2"],
    );
    let one = approvals(&pki, &rotate, &[&alice]);
    refused(
        &pki,
        &rotate,
        &one,
        "1 approvals of distinct officers, 2 needed",
    );
    let same_person = approvals(&pki, &rotate, &[&alice, &alice]);
    refused(&pki, &rotate, &same_person, "counts once");
    // Her second card is no officer's card (only the declared one is).
    let second_card = approvals(&pki, &rotate, &[&alice, &alice_again]);
    refused(
        &pki,
        &rotate,
        &second_card,
        "not signed by an active security officer",
    );
    // A stranger's card, with a borrowed officer's key: not the declared certificate.
    let (key, pem, _) = card_with_key(
        pki.path("").as_path(),
        "mallory",
        "/GN=Mallory/SN=Noir/CN=Mallory Noir",
        "365",
        Some(&bruno.key),
    );
    let mallory = Officer { key, pem };
    let stranger = approvals(&pki, &rotate, &[&alice, &mallory]);
    refused(
        &pki,
        &rotate,
        &stranger,
        "not signed by an active security officer",
    );
    // The RA operator's signature card.
    let operator = approvals(&pki, &rotate, &[&alice, &diane]);
    refused(
        &pki,
        &rotate,
        &operator,
        "not signed by an active security officer",
    );
    // An approval of other bytes (the init proposal's) next to a good one.
    let mut mixed = approvals(&pki, &rotate, &[&alice]);
    mixed.push(all_three[1].clone());
    refused(&pki, &rotate, &mixed, "approves other bytes");
    // A proposal edited after approval (another common name): the approvals sign other bytes.
    let edited = pki.path("edited.proposal.json");
    let text = std::fs::read_to_string(&rotate).unwrap();
    std::fs::write(&edited, text.replace("AC Agents 2", "AC Agents X")).unwrap();
    let approved_original = approvals(&pki, &rotate, &[&alice, &bruno]);
    refused(&pki, &edited, &approved_original, "approves other bytes");
    // The configuration changed after the officers approved: what the rollover would read
    // (names, URLs, token) is not what they saw.
    let config = pki.path("sceau.toml");
    let approved_config = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{approved_config}\n# edited after the approvals\n"),
    )
    .unwrap();
    refused(
        &pki,
        &rotate,
        &approved_original,
        "the configuration changed",
    );
    std::fs::write(&config, approved_config).unwrap();
    let done = carried_out(&pki, &rotate, &approved_original);
    assert_eq!(done["operation"], "rotate-issuing");
    let rotate_transcript = PathBuf::from(done["transcript"].as_str().unwrap());
    assert!(pki.sceau_ok(&["ca", "show"]).contains("AC Agents 2"));
    refused(&pki, &rotate, &approved_original, "already carried out");

    // Two proposals made over the same key state: the first run moves the key head, the
    // second must be proposed again.
    let renew = propose(&pki, "renew", "renew-responders", &[]);
    let backup_dir = pki.path("backup-1");
    let backup = propose(
        &pki,
        "backup",
        "backup",
        &["--backup-to", backup_dir.to_str().unwrap()],
    );
    let renew_approvals = approvals(&pki, &renew, &[&bruno, &chloe]);
    let done = carried_out(&pki, &renew, &renew_approvals);
    let renew_transcript = PathBuf::from(done["transcript"].as_str().unwrap());
    let backup_approvals = approvals(&pki, &backup, &[&alice, &chloe]);
    refused(&pki, &backup, &backup_approvals, "propose again");
    let backup = propose(
        &pki,
        "backup-again",
        "backup",
        &["--backup-to", backup_dir.to_str().unwrap()],
    );
    let backup_approvals = approvals(&pki, &backup, &[&alice, &chloe]);
    let done = carried_out(&pki, &backup, &backup_approvals);
    assert!(backup_dir.join("manifest.json").exists(), "{done}");

    // kill -9 in the middle of a ceremony (its keys made, its certificates signed, not yet
    // committed): the claim stays without an outcome. The next proposal settles the interrupted
    // key ceremony (its keys become orphans); the next run concludes the claim as failed, with
    // its transcript; an orphan key is destroyed by a ceremony, and nothing else is.
    let crash = propose(
        &pki,
        "crash",
        "rotate-issuing",
        &["--common-name", "AC Agents 3"],
    );
    let crash_approvals = approvals(&pki, &crash, &[&alice, &bruno]);
    let out = pki.sceau_with_env(
        &run_args(&crash, &crash_approvals),
        &[("SCEAU_FAILPOINT", "ceremony-before-commit")],
    );
    assert!(!out.status.success(), "{}", all_output(&out));
    propose(&pki, "settle", "renew-responders", &[]);
    let status: serde_json::Value =
        serde_json::from_str(&pki.sceau_ok(&["ceremony", "status"])).unwrap();
    let orphans: Vec<String> = status["orphan_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(orphans.len(), 2, "{status}");
    let in_service = pki.sceau_ok(&["ca", "show"]);
    proposal_refused(
        &pki,
        "destroy-key",
        &["--key-label", "test-root"],
        "never destroyed",
    );
    proposal_refused(
        &pki,
        "destroy-key",
        &["--key-label", "somebody-elses-key"],
        "nor an orphan",
    );
    let destroy = propose(
        &pki,
        "destroy",
        "destroy-key",
        &["--key-label", &orphans[0]],
    );
    let destroy_approvals = approvals(&pki, &destroy, &[&bruno, &chloe]);
    assert!(
        pki.private_keys_listed(Token::from_env())
            .contains(&orphans[0])
    );
    let done = carried_out(&pki, &destroy, &destroy_approvals);
    assert_eq!(done["details"]["objects"], "2", "{done}");
    assert!(
        !pki.private_keys_listed(Token::from_env())
            .contains(&orphans[0])
    );
    assert!(
        pki.private_keys_listed(Token::from_env())
            .contains(&orphans[1])
    );
    assert_eq!(pki.sceau_ok(&["ca", "show"]), in_service);
    let status = pki.sceau_ok(&["ceremony", "status"]);
    assert_eq!(
        status.matches("\"succeeded\": false").count(),
        1,
        "the interrupted claim is not concluded: {status}"
    );
    let crashed = std::fs::read_to_string(&crash).unwrap();
    let crash_id = crashed
        .split("\"id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let crash_transcript = pki.data_dir().join(format!("ceremonies/{crash_id}.json"));
    assert!(
        crash_transcript.exists(),
        "no transcript for the interrupted ceremony"
    );

    let soon = propose(&pki, "soon", "renew-responders", &["--valid-for", "60s"]);
    let soon_approvals = approvals(&pki, &soon, &[&alice, &bruno]);
    let later = common::date("+2 minutes");
    let before = everything(&pki);
    let out = pki.sceau_with_env(&run_args(&soon, &soon_approvals), &[("SCEAU_NOW", &later)]);
    assert!(
        !out.status.success() && all_output(&out).contains("expired"),
        "{}",
        all_output(&out)
    );
    assert_eq!(everything(&pki), before);

    // Chloé withdrawn: Alice and Bruno remain, both needed. Her approval counts no more.
    let change = propose(
        &pki,
        "change",
        "change-officers",
        &[
            "--officer",
            alice.pem.to_str().unwrap(),
            "--officer",
            bruno.pem.to_str().unwrap(),
            "--quorum",
            "2",
        ],
    );
    let change_approvals = approvals(&pki, &change, &[&alice, &chloe]);
    let done = carried_out(&pki, &change, &change_approvals);
    let change_transcript = PathBuf::from(done["transcript"].as_str().unwrap());

    // Through the running daemon: a root rollover, OCSP answering before and after.
    let daemon = Daemon::start(&pki);
    let status = pki.ocsp_status(&daemon, &holder);
    assert!(
        status.contains(": good") && status.contains("Response verify OK"),
        "{status}"
    );
    let root = propose(&pki, "root", "rotate-root", &["--common-name", "Racine 2"]);
    let withdrawn = approvals(&pki, &root, &[&alice, &chloe]);
    refused(
        &pki,
        &root,
        &withdrawn,
        "not signed by an active security officer",
    );
    let root_approvals = approvals(&pki, &root, &[&alice, &bruno]);
    let done = carried_out(&pki, &root, &root_approvals);
    let root_transcript = PathBuf::from(done["transcript"].as_str().unwrap());
    let status = pki.ocsp_status(&daemon, &holder);
    assert!(
        status.contains(": good") && status.contains("Response verify OK"),
        "{status}"
    );
    daemon.stop();

    // Every transcript verifies offline against the audit key written at init.
    let anchor = pki.data_dir().join("certs/audit-key.pem");
    let transcripts = [
        &crash_transcript,
        &init_transcript,
        &rotate_transcript,
        &renew_transcript,
        &change_transcript,
        &root_transcript,
    ];
    let mut verify = vec!["ceremony", "verify", "--anchor", anchor.to_str().unwrap()];
    verify.extend(transcripts.iter().map(|t| t.to_str().unwrap()));
    let out = pki.sceau_ok(&verify);
    assert_eq!(out.lines().count(), transcripts.len(), "{out}");
    assert!(out.contains("approved by 3 of 3 officers"), "{out}");
    let crash_line = out
        .lines()
        .find(|l| l.starts_with(crash_transcript.to_str().unwrap()))
        .unwrap();
    assert!(
        crash_line.contains("(rotate-issuing) approved by 2 of 3 officers")
            && crash_line.ends_with("FAILED"),
        "{out}"
    );

    // ... and one changed is refused: a byte of the body, an approval removed, the quorum
    // lowered (both re-encoded as the file holds them).
    let tampered = |name: &str, change: &dyn Fn(&mut serde_json::Value)| {
        let mut file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&rotate_transcript).unwrap()).unwrap();
        use base64::Engine;
        let engine = base64::engine::general_purpose::STANDARD;
        let mut body: serde_json::Value =
            serde_json::from_slice(&engine.decode(file["body"].as_str().unwrap()).unwrap())
                .unwrap();
        change(&mut body);
        file["body"] = engine.encode(serde_json::to_vec(&body).unwrap()).into();
        let path = pki.path(name);
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        path
    };
    let cases = [
        tampered("one-byte.json", &|body| {
            body["claimed_at"] = (body["claimed_at"].as_u64().unwrap() + 1).into();
        }),
        tampered("fewer.json", &|body| {
            body["approvals"].as_array_mut().unwrap().pop();
        }),
        tampered("lowered.json", &|body| {
            body["officers"]["quorum"] = 1.into()
        }),
    ];
    for case in cases {
        let out = pki.sceau(&[
            "ceremony",
            "verify",
            "--anchor",
            anchor.to_str().unwrap(),
            case.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{} verified", case.display());
        assert!(
            all_output(&out).contains("signature does not verify"),
            "{}",
            all_output(&out)
        );
    }
    let out = pki.sceau_ok(&[
        "ceremony",
        "verify",
        "--anchor",
        anchor.to_str().unwrap(),
        rotate_transcript.to_str().unwrap(),
        "--report",
        pki.path("report.html").to_str().unwrap(),
    ]);
    assert!(out.contains("done"), "{out}");
    let report = std::fs::read_to_string(pki.path("report.html")).unwrap();
    assert!(
        report.contains("Alice Durand") && report.contains("Bruno Petit"),
        "{report}"
    );

    // A restore onto an empty data directory: the backup's officers approve it, as a ceremony
    // claimed in the store restored. Alone, it is refused and nothing is restored.
    std::fs::rename(pki.data_dir().join("store"), pki.path("store-lost")).unwrap();
    let alone = pki.sceau_fails(&["restore", "--from", backup_dir.to_str().unwrap()]);
    assert!(alone.contains("security officers approve"), "{alone}");
    assert!(!pki.data_dir().join("store").exists());
    let restore = propose(
        &pki,
        "restore",
        "restore",
        &["--backup", backup_dir.to_str().unwrap()],
    );
    let restore_args = |approvals: &[PathBuf]| {
        let mut args = vec![
            "restore".to_owned(),
            "--from".to_owned(),
            backup_dir.to_str().unwrap().to_owned(),
            "--proposal".to_owned(),
            restore.to_str().unwrap().to_owned(),
        ];
        for approval in approvals {
            args.extend([
                "--approval".to_owned(),
                approval.to_str().unwrap().to_owned(),
            ]);
        }
        args
    };
    let one = approvals(&pki, &restore, &[&chloe]);
    let out = pki.sceau(
        &restore_args(&one)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(!out.status.success(), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("2 needed"),
        "{}",
        all_output(&out)
    );
    assert!(!pki.data_dir().join("store").exists());
    let two = approvals(&pki, &restore, &[&chloe, &bruno]);
    let out = pki.sceau_ok(
        &restore_args(&two)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(out.contains("\"operation\": \"restore\""), "{out}");
    assert!(pki.sceau_ok(&["ca", "show"]).contains("AC Agents 2"));
    let restore_transcript = std::fs::read_dir(pki.data_dir().join("ceremonies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "json")
                && pki
                    .sceau_ok(&[
                        "ceremony",
                        "verify",
                        "--anchor",
                        anchor.to_str().unwrap(),
                        p.to_str().unwrap(),
                    ])
                    .contains("(restore)")
        });
    assert!(
        restore_transcript.is_some(),
        "no verified restore transcript"
    );
}

/// docs/ceremony-example.md, run as written on a new token and an empty data directory.
#[test]
fn the_ceremony_walk_through_runs_as_written() {
    let pki = Pki::new(Keys::EC);
    let script = common::shell_blocks("docs/ceremony-example.md");
    assert!(
        script.contains("ceremony propose init"),
        "no shell blocks found"
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(pki.path(""))
        .env("SCEAU_BIN", env!("CARGO_BIN_EXE_sceau"))
        .env("SCEAU_CONFIG", pki.path("sceau.toml"))
        .env("CERTS", pki.data_dir().join("certs"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docs/ceremony-example.md failed:\n{}",
        all_output(&out)
    );
    let verified = String::from_utf8_lossy(&out.stdout);
    assert!(
        verified.contains("(init) approved by 3 of 3")
            && verified.contains("(rotate-issuing) approved by 2 of 3"),
        "{verified}"
    );
}

/// An officer approves with a card through its PKCS#11 module (`sceau ceremony approve`), here
/// a key that pkcs11-tool made on a SoftHSM2 token, beside an officer approving with openssl:
/// both approvals count, and the card tool refuses another certificate's key and bytes that are
/// not a proposal.
#[test]
fn an_officer_approves_with_a_card_through_pkcs11() {
    let pki = Pki::on(Token::SoftHsm2, Keys::EC);
    pki.foreign_key_with(Token::SoftHsm2, "officer-sign", &["--id", "0a"]);
    let public = pki.public_key_pem(Token::SoftHsm2, "officer-sign", "officer-public");
    let card_pem = common::officers::certificate_for_key(
        pki.path("").as_path(),
        &public,
        "/GN=Bruno/SN=PETIT/CN=Bruno PETIT",
        "bruno-card",
    );
    let alice = officer(&pki, "alice", "/GN=Alice/SN=DURAND/CN=Alice DURAND");
    let init = propose(
        &pki,
        "init",
        "init",
        &[
            "--officer",
            alice.pem.to_str().unwrap(),
            "--officer",
            card_pem.to_str().unwrap(),
            "--quorum",
            "2",
        ],
    );
    let card = |certificate: &Path, bytes: &Path, out: &str| {
        pki.sceau_with_env(
            &[
                "ceremony",
                "approve",
                bytes.to_str().unwrap(),
                "--module",
                common::tokens::SOFTHSM_MODULE,
                "--token",
                Token::SoftHsm2.label(),
                "--key-label",
                "officer-sign",
                "--certificate",
                certificate.to_str().unwrap(),
                "--pin-file",
                pki.path("pin").to_str().unwrap(),
                "--out",
                pki.path(out).to_str().unwrap(),
            ],
            &[("SOFTHSM2_CONF", pki.path("softhsm2.conf").to_str().unwrap())],
        )
    };
    // Another certificate than the card key's, and bytes that are not a proposal: refused.
    let out = card(&alice.pem, &init, "wrong.der");
    assert!(
        !out.status.success() && all_output(&out).contains("is not the key of"),
        "{}",
        all_output(&out)
    );
    let out = card(&card_pem, &pki.path("bruno-card.ext"), "not-a-proposal.der");
    assert!(
        !out.status.success() && !pki.path("not-a-proposal.der").exists(),
        "{}",
        all_output(&out)
    );
    let out = card(&card_pem, &init, "bruno.der");
    assert!(out.status.success(), "{}", all_output(&out));
    // What it approves, shown before the card is opened: the operation and the officers.
    let shown = all_output(&out);
    assert!(
        shown.contains(": init of CA")
            && shown.contains("Bruno PETIT")
            && shown.contains("Alice DURAND"),
        "{shown}"
    );
    let mut both = approvals(&pki, &init, &[&alice]);
    both.push(pki.path("bruno.der"));
    let done = carried_out(&pki, &init, &both);
    assert_eq!(done["operation"], "init");
}
