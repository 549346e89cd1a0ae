//! Activation under dual control, end to end (issue 21, item 3): the token's PIN replaced by a
//! random one and split among the security officers (`split-pin`), the daemon started sealed
//! (OCSP from the responses signed before, nothing signed), and unsealed only by a quorum of
//! officers each presenting their own share signed by their own card (`sceau unseal`), one
//! through `openssl cms`, one through a PKCS#11 card on SoftHSM2. Every way of cheating is
//! tried against the real binary; the PIN, rebuilt here from two shares, is in no file.
mod common;

use std::path::{Path, PathBuf};

use common::daemon::Daemon;
use common::officers::{self, Officer, approve};
use common::tokens::{self, Token};
use common::{Keys, Pki, all_output};

fn officer(pki: &Pki, name: &str, subject: &str) -> Officer {
    Officer::new(pki.path("").as_path(), name, subject, "365")
}

/// [`officers::ceremony`] that must succeed: its answer (JSON).
fn ceremony(
    pki: &Pki,
    name: &str,
    operation: &str,
    args: &[&str],
    officers: &[&Officer],
) -> String {
    let out = officers::ceremony(pki, name, operation, args, officers, &[]);
    assert!(out.status.success(), "{name}: {}", all_output(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// `sceau COMMAND... --module ... --certificate CERT --pin-file ... MORE...`: a command signing
/// with Denise's card, the key `officer-sign` on the SoftHSM2 token `denise-card`.
fn with_denise_card(
    pki: &Pki,
    command: &[&str],
    certificate: &Path,
    more: &[&str],
) -> std::process::Output {
    let pin_file = pki.path("card-pin");
    let mut args = command.to_vec();
    args.extend([
        "--module",
        tokens::SOFTHSM_MODULE,
        "--token",
        "denise-card",
        "--key-label",
        "officer-sign",
        "--certificate",
        certificate.to_str().unwrap(),
        "--pin-file",
        pin_file.to_str().unwrap(),
    ]);
    args.extend_from_slice(more);
    pki.sceau_with_env(
        &args,
        &[("SOFTHSM2_CONF", pki.path("softhsm2.conf").to_str().unwrap())],
    )
}

/// Denise's approval of the proposal `name.json`, signed by her card through its PKCS#11
/// module (`sceau ceremony approve`).
fn card_approval(pki: &Pki, name: &str, certificate: &Path) -> PathBuf {
    let proposal = pki.path(&format!("{name}.json"));
    let approval = pki.path(&format!("{name}.card.der"));
    let out = with_denise_card(
        pki,
        &["ceremony", "approve", proposal.to_str().unwrap()],
        certificate,
        &["--out", approval.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", all_output(&out));
    approval
}

/// `sceau unseal --share SHARE --request-out`, signed by `signer` with openssl: the signed
/// presentation's path.
fn presentation(pki: &Pki, share: &Path, signer: &Officer, name: &str) -> PathBuf {
    let request = pki.path(&format!("{name}.unseal-request"));
    let _ = std::fs::remove_file(&request);
    pki.sceau_ok(&[
        "unseal",
        "--share",
        share.to_str().unwrap(),
        "--request-out",
        request.to_str().unwrap(),
    ]);
    let signed = pki.path(&format!("{name}.unseal.der"));
    std::fs::write(
        &signed,
        approve(
            pki.path("").as_path(),
            (&signer.key, &signer.pem),
            &std::fs::read(&request).unwrap(),
        ),
    )
    .unwrap();
    signed
}

fn present(pki: &Pki, signed: &Path) -> std::process::Output {
    pki.sceau(&["unseal", "--signed", signed.to_str().unwrap()])
}

fn refused(pki: &Pki, signed: &Path, expected: &str) {
    let out = present(pki, signed);
    let text = all_output(&out);
    assert!(
        !out.status.success() && text.contains(expected),
        "expected {expected:?}: {text}"
    );
}

/// The share file dealt to `person` (as the share file names its holder).
fn share_of(dir: &Path, person: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let share: serde_json::Value =
                serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            share["name"].as_str().unwrap() == person
        })
        .unwrap_or_else(|| panic!("no share of {person} in {}", dir.display()))
}

/// The PIN two shares make (Shamir over GF(256), as the daemon makes it).
fn pin_from(shares: &[&Path]) -> String {
    use base64::Engine;
    let shares: Vec<blahaj::Share> = shares
        .iter()
        .map(|path| {
            let file: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(file["share"].as_str().unwrap())
                .unwrap();
            blahaj::Share::try_from(bytes.as_slice()).unwrap()
        })
        .collect();
    String::from_utf8(blahaj::Sharks(2).recover(&shares).unwrap()).unwrap()
}

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

/// The configuration with the PIN split: no PIN source, `pin_split = true`.
fn configure_split(pki: &Pki) {
    let config = pki.path("sceau.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let split: String = text
        .lines()
        .map(|line| {
            if line.starts_with("pin_file") {
                "pin_split = true".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(split, text, "the test configuration names no pin_file");
    std::fs::write(&config, split + "\n").unwrap();
}

#[test]
fn a_daemon_whose_pin_is_split_signs_only_once_a_quorum_of_officers_unseals_it() {
    let pki = Pki::on(Token::SoftHsm2, Keys::EC);
    let alice = officer(&pki, "alice", "/GN=Alice/SN=Durand/CN=Alice Durand");
    let bruno = officer(&pki, "bruno", "/GN=Bruno/SN=Petit/CN=Bruno Petit");
    let chloe = officer(&pki, "chloe", "/GN=Chloe/SN=Moreau/CN=Chloe Moreau");
    let mallory = officer(&pki, "mallory", "/GN=Mallory/SN=Noir/CN=Mallory Noir");
    // Denise's card is a PKCS#11 token of its own, with its own PIN (never the CA's).
    let card_pin = "2468-card";
    let made = tokens::softhsm_token(
        &pki.path("softhsm2.conf"),
        "denise-card",
        "so-card-1",
        card_pin,
    );
    assert!(made.status.success(), "{}", all_output(&made));
    std::fs::write(pki.path("card-pin"), card_pin).unwrap();
    let denise_pem = card_on_softhsm(&pki, card_pin);
    let (a, b, c, d) = (
        alice.pem.to_str().unwrap(),
        bruno.pem.to_str().unwrap(),
        chloe.pem.to_str().unwrap(),
        denise_pem.to_str().unwrap(),
    );
    let init_args = [
        "--officer",
        a,
        "--officer",
        b,
        "--officer",
        c,
        "--officer",
        d,
        "--quorum",
        "2",
    ];
    // Denise approves with her card the very proposal the others approve with openssl.
    let out = officers::propose(&pki, "init", "init", &init_args, &[]);
    assert!(out.status.success(), "{}", all_output(&out));
    let denise_approval = card_approval(&pki, "init", &denise_pem);
    let out = officers::run(
        &pki,
        "init",
        &[&alice, &bruno, &chloe],
        &[denise_approval],
        &[],
    );
    assert!(out.status.success(), "{}", all_output(&out));
    // Responses signed by a daemon with the whole PIN, before the split.
    let kept = pki.issue_holder("kept", "/GN=Karim/SN=GILLES/CN=Karim GILLES");
    let spared = pki.issue_holder("spared", "/GN=Sarah/SN=LEROY/CN=Sarah LEROY");
    let lost = pki.issue_holder("lost", "/GN=Louis/SN=PERRIN/CN=Louis PERRIN");
    let daemon = Daemon::start(&pki);
    daemon.wait_until("ready", |d| {
        common::daemon::http(d.va, "GET", "/readyz", &[], b"").0 == 200
    });
    assert!(pki.ocsp_status(&daemon, &kept).contains(": good"));
    daemon.stop();

    // A split killed between its record and C_SetPIN: the token keeps its PIN (the next split
    // opens it with the configured source), and the shares it wrote are worth nothing.
    let aborted = pki.path("shares-aborted");
    let out = officers::ceremony(
        &pki,
        "split-aborted",
        "split-pin",
        &["--shares-out", aborted.to_str().unwrap()],
        &[&bruno, &chloe],
        &[("SCEAU_FAILPOINT", "split-pin-before-set-pin")],
    );
    assert!(
        !out.status.success() && all_output(&out).contains("split-pin-before-set-pin"),
        "{}",
        all_output(&out)
    );
    assert_eq!(std::fs::read_dir(&aborted).unwrap().count(), 4);

    // The split, offline, with the PIN's configured source: four share files, one each.
    let shares = pki.path("shares");
    let answer = ceremony(
        &pki,
        "split",
        "split-pin",
        &["--shares-out", shares.to_str().unwrap()],
        &[&bruno, &chloe],
    );
    assert!(answer.contains("\"succeeded\": true"), "{answer}");
    assert_eq!(std::fs::read_dir(&shares).unwrap().count(), 4);
    let (alice_share, bruno_share, chloe_share, denise_share) = (
        share_of(&shares, "Alice Durand"),
        share_of(&shares, "Bruno Petit"),
        share_of(&shares, "Chloe Moreau"),
        share_of(&shares, "Denise Roux"),
    );
    // The former PIN opens the token no more.
    let out = pki.sceau(&[
        "serve",
        "--listen-va",
        "127.0.0.1:0",
        "--listen-admin",
        "127.0.0.1:0",
    ]);
    assert!(
        !out.status.success() && all_output(&out).to_lowercase().contains("pin"),
        "{}",
        all_output(&out)
    );
    let pin = pin_from(&[&alice_share, &chloe_share]);
    assert_eq!(pin, pin_from(&[&bruno_share, &denise_share]));
    assert_eq!(pin.len(), 32);
    assert_ne!(pin, tokens::PIN);

    // Revoked offline while the daemon is stopped (no token needed): its pre-signed "good"
    // must not be served by the sealed daemon.
    pki.sceau_ok(&[
        "revoke",
        "--serial",
        &common::serial_of(&lost),
        "--reason",
        "keyCompromise",
    ]);
    configure_split(&pki);
    let daemon = Daemon::start(&pki);
    assert!(
        daemon.first_line.starts_with("sceau sealed:"),
        "{}",
        daemon.first_line
    );
    // Sealed: OCSP from the responses signed before, nothing else.
    assert!(pki.ocsp_status(&daemon, &kept).contains(": good"));
    let answer = pki.ocsp_status(&daemon, &lost);
    assert!(
        !answer.contains(": good") && answer.to_lowercase().contains("trylater"),
        "{answer}"
    );
    let (status, _, body) = common::daemon::http(daemon.admin, "GET", "/healthz", &[], b"");
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("sealed"));
    let out = pki.sceau(&[
        "revoke",
        "--serial",
        &common::serial_of(&spared),
        "--reason",
        "keyCompromise",
    ]);
    assert!(
        !out.status.success() && all_output(&out).contains("sealed"),
        "{}",
        all_output(&out)
    );
    let status_line = pki.sceau_ok(&["unseal"]);
    assert!(status_line.contains("\"quorum\": 2"), "{status_line}");

    // Garbage on the intake: a problem document each, nothing taken.
    let bearer = pki.admin_bearer();
    let post = |headers: &[(&str, &str)], body: &[u8]| {
        let (status, headers, body) =
            common::daemon::http(daemon.admin, "POST", "/admin/unseal", headers, body);
        let kind = common::daemon::header(&headers, "content-type")
            .unwrap_or("")
            .to_owned();
        (status, kind, String::from_utf8_lossy(&body).into_owned())
    };
    let json = ("Content-Type", "application/json");
    let (status, _, _) = post(&[json], br#"{"presentation":"AAAA"}"#);
    assert_eq!(status, 401, "no token");
    for (body, rule) in [
        (&br#"{"presentation":"!!!"}"#[..], "malformed-presentation"),
        (&br#"{"presentation":"MAMCAQA="}"#[..], "unseal-refused"),
        (
            &br#"{"presentation":"AAAA","more":1}"#[..],
            "malformed-json",
        ),
        (&b"\xff\xfe"[..], "malformed-json"),
    ] {
        let (status, kind, text) = post(&[("Authorization", &bearer), json], body);
        assert_eq!(status, 400, "{text}");
        assert_eq!(kind, "application/problem+json", "{text}");
        assert!(text.contains(rule), "{rule}: {text}");
    }
    let status_line = pki.sceau_ok(&["unseal"]);
    assert!(status_line.contains("\"given\": []"), "{status_line}");

    // Cheating: another officer's share, a non-officer's card, an altered share.
    refused(
        &pki,
        &presentation(&pki, &alice_share, &bruno, "alice-by-bruno"),
        "dealt to Alice Durand",
    );
    refused(
        &pki,
        &presentation(&pki, &alice_share, &mallory, "alice-by-mallory"),
        "not signed by an active security officer",
    );
    let mut altered: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&chloe_share).unwrap()).unwrap();
    let mut bytes = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(altered["share"].as_str().unwrap())
            .unwrap()
    };
    bytes[5] ^= 1;
    altered["share"] = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(&bytes)
            .into()
    };
    let altered_path = pki.path("altered-share.json");
    std::fs::write(&altered_path, serde_json::to_vec(&altered).unwrap()).unwrap();
    refused(
        &pki,
        &presentation(&pki, &altered_path, &chloe, "altered"),
        "not the one dealt",
    );

    // Alice's share: taken; twice: refused.
    let alice_signed = presentation(&pki, &alice_share, &alice, "alice");
    let out = present(&pki, &alice_signed);
    assert!(
        out.status.success() && all_output(&out).contains("1 of 2"),
        "{}",
        all_output(&out)
    );
    refused(&pki, &alice_signed, "already presented");
    assert!(pki.ocsp_status(&daemon, &kept).contains(": good"));
    daemon.stop();

    // After a restart the daemon is sealed again, and an earlier presentation is worthless.
    let daemon = Daemon::start(&pki);
    assert!(
        daemon.first_line.starts_with("sceau sealed:"),
        "{}",
        daemon.first_line
    );
    refused(&pki, &alice_signed, "another start");
    refused(
        &pki,
        &presentation(
            &pki,
            &share_of(&aborted, "Alice Durand"),
            &alice,
            "alice-aborted",
        ),
        "no split",
    );
    let out = present(&pki, &presentation(&pki, &alice_share, &alice, "alice-2"));
    assert!(out.status.success(), "{}", all_output(&out));
    // Denise presents hers through her card's PKCS#11 module.
    let out = with_denise_card(
        &pki,
        &["unseal", "--share", denise_share.to_str().unwrap()],
        &denise_pem,
        &[],
    );
    assert!(
        out.status.success() && all_output(&out).contains("unsealed"),
        "{}",
        all_output(&out)
    );
    daemon.wait_line("sceau ready:", 60);
    // Unsealed: it signs again.
    daemon.wait_until("ready", |d| {
        common::daemon::http(d.va, "GET", "/readyz", &[], b"").0 == 200
    });
    pki.sceau_ok(&[
        "revoke",
        "--serial",
        &common::serial_of(&spared),
        "--reason",
        "keyCompromise",
    ]);
    assert!(pki.ocsp_status(&daemon, &spared).contains(": revoked"));
    assert!(pki.ocsp_status(&daemon, &lost).contains(": revoked"));
    assert!(pki.ocsp_status(&daemon, &kept).contains(": good"));
    let out = pki.sceau(&["unseal"]);
    assert!(
        !out.status.success() && all_output(&out).contains("not sealed"),
        "{}",
        all_output(&out)
    );
    daemon.stop();

    // The PIN the shares make is the token's (it logs in), and it is in no file: data
    // directory, configuration, logs, anywhere in the test's directory (the shares hold
    // shares, not the PIN).
    let login = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", pki.path("softhsm2.conf"))
        .args([
            "--module",
            tokens::SOFTHSM_MODULE,
            "--token-label",
            Token::SoftHsm2.label(),
        ])
        .args([
            "--login",
            "--pin",
            &pin,
            "--list-objects",
            "--type",
            "privkey",
        ])
        .output()
        .unwrap();
    assert!(login.status.success(), "{}", all_output(&login));
    let found = files_holding(pki.path("").as_path(), pin.as_bytes());
    assert!(found.is_empty(), "the PIN is written in {found:?}");
    // And the audit log says who split, who unsealed, and what was refused.
    pki.sceau_ok(&["audit", "verify"]);
    let log = pki.sceau_ok(&["audit", "export"]);
    let events = |name: &str| -> Vec<String> {
        log.lines()
            .filter(|line| line.contains(&format!("\"event\":\"{name}\"")))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(events("pin_split").len(), 1, "{log}");
    let unsealed = events("unsealed");
    assert_eq!(unsealed.len(), 1, "{log}");
    assert!(
        unsealed[0].contains("Alice Durand") && unsealed[0].contains("Denise Roux"),
        "{}",
        unsealed[0]
    );
    assert!(events("unseal_refused").len() >= 5, "{log}");

    // Splitting again, through the unsealed daemon: the former shares are worthless after.
    let daemon = Daemon::start(&pki);
    assert!(
        daemon.first_line.starts_with("sceau sealed:"),
        "{}",
        daemon.first_line
    );
    for (name, share, officer) in [("b", &bruno_share, &bruno), ("c", &chloe_share, &chloe)] {
        let out = present(
            &pki,
            &presentation(&pki, share, officer, &format!("{name}-3")),
        );
        assert!(out.status.success(), "{}", all_output(&out));
    }
    daemon.wait_line("sceau ready:", 60);
    let outside = pki.path("shares-outside");
    let out = officers::ceremony(
        &pki,
        "resplit-outside",
        "split-pin",
        &["--shares-out", outside.to_str().unwrap()],
        &[&alice, &chloe],
        &[],
    );
    assert!(
        !out.status.success() && all_output(&out).contains("under its data directory"),
        "{}",
        all_output(&out)
    );
    assert!(!outside.exists());
    let resplit = pki.data_dir().join("shares-2");
    let answer = ceremony(
        &pki,
        "resplit",
        "split-pin",
        &["--shares-out", resplit.to_str().unwrap()],
        &[&alice, &chloe],
    );
    assert!(answer.contains("\"succeeded\": true"), "{answer}");
    // The daemon holds the new PIN: it still signs.
    pki.sceau_ok(&[
        "revoke",
        "--serial",
        &common::serial_of(&kept),
        "--reason",
        "superseded",
    ]);
    assert!(pki.ocsp_status(&daemon, &kept).contains(": revoked"));
    daemon.stop();
    let daemon = Daemon::start(&pki);
    assert!(
        daemon.first_line.starts_with("sceau sealed:"),
        "{}",
        daemon.first_line
    );
    refused(
        &pki,
        &presentation(&pki, &alice_share, &alice, "alice-old"),
        "no split",
    );
    for (name, officer) in [("Alice Durand", &alice), ("Bruno Petit", &bruno)] {
        let share = share_of(&resplit, name);
        let out = present(
            &pki,
            &presentation(&pki, &share, officer, &format!("{name}-new")),
        );
        assert!(out.status.success(), "{}", all_output(&out));
    }
    daemon.wait_line("sceau ready:", 60);
    daemon.stop();
    let new_pin = pin_from(&[
        &share_of(&resplit, "Chloe Moreau"),
        &share_of(&resplit, "Denise Roux"),
    ]);
    assert_ne!(new_pin, pin);
    let found = files_holding(pki.path("").as_path(), new_pin.as_bytes());
    assert!(found.is_empty(), "the new PIN is written in {found:?}");
}

/// Denise's card: a P-256 key made on the `denise-card` token by pkcs11-tool, and a signature
/// certificate for it made by OpenSSL (another card CA's key): its path.
fn card_on_softhsm(pki: &Pki, card_pin: &str) -> PathBuf {
    let conf = pki.path("softhsm2.conf");
    let tool = |args: &[&str]| {
        let out = std::process::Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--module",
                tokens::SOFTHSM_MODULE,
                "--token-label",
                "denise-card",
            ])
            .args(["--login", "--pin", card_pin])
            .args(args)
            .output()
            .expect("pkcs11-tool (apt-get install opensc)");
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}",
            all_output(&out)
        );
    };
    tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "officer-sign",
        "--id",
        "0d",
    ]);
    let public_der = pki.path("denise-public.der");
    tool(&[
        "--read-object",
        "--type",
        "pubkey",
        "--label",
        "officer-sign",
        "--output-file",
        public_der.to_str().unwrap(),
    ]);
    let public_pem = pki.path("denise-public.pem");
    let (ok, text) = common::openssl(&[
        "pkey",
        "-pubin",
        "-inform",
        "DER",
        "-in",
        public_der.to_str().unwrap(),
        "-out",
        public_pem.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    officers::certificate_for_key(
        pki.path("").as_path(),
        &public_pem,
        "/GN=Denise/SN=Roux/CN=Denise Roux",
        "denise-card",
    )
}
