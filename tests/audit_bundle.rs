//! The auditor's bundle end to end: exported from a running daemon's log over a period (a
//! checkpoint signed by the HSM's audit key closing it), checked offline by `sceau audit
//! verify --bundle` against the audit key kept outside the store, with an HTML report of the
//! RA's activity; a byte changed, an entry removed, a checkpoint re-signed by another key or
//! the key swapped: refused, naming what is wrong.
mod common;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use common::ra::*;
use serde_json::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `sceau audit verify --bundle FILE --anchor KEY`, without any configuration: (success, output).
fn verify(ra: &Ra, bundle: &Value, name: &str) -> (bool, String) {
    let path = ra.pki.path(name);
    std::fs::write(&path, serde_json::to_vec(bundle).unwrap()).unwrap();
    let anchor = ra.pki.data_dir().join("certs/audit-key.pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sceau"))
        .args(["audit", "verify", "--bundle"])
        .arg(&path)
        .arg("--anchor")
        .arg(&anchor)
        .arg("--report")
        .arg(ra.pki.path(&format!("{name}.html")))
        .env_remove("SCEAU_CONFIG")
        .args(["--config", "/nonexistent/sceau.toml"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// An entry of the bundle: its hash and its JSON.
fn entry(bundle: &Value, index: usize) -> (Vec<u8>, Value) {
    let stored = B64
        .decode(bundle["entries"][index].as_str().unwrap())
        .unwrap();
    let json = serde_json::from_slice(&stored[32..]).unwrap();
    (stored[..32].to_vec(), json)
}

/// Writes `json` as the entry `index`, with its hash recomputed over `prev` (what a forger who
/// knows the format does).
fn forge(bundle: &mut Value, index: usize, json: &Value) {
    let body = serde_json::to_vec(json).unwrap();
    let prev = hex::decode(json["prev"].as_str().unwrap()).unwrap();
    let mut input = prev.clone();
    input.extend_from_slice(&body);
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    let mut stored = hash.as_ref().to_vec();
    stored.extend_from_slice(&body);
    bundle["entries"][index] = Value::String(B64.encode(stored));
}

#[test]
fn an_auditor_checks_a_period_offline_and_every_forgery_is_named() {
    let ra = Ra::start();
    let from = now_rfc3339();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let team = team(&ra);
    let issued = approved(&ra, (&team.oc, &team.aed), "audited-1", &[]);
    assert_eq!(issued["state"], "issued");
    // A checkpoint in the middle of the period (the daemon signs one every five minutes).
    ra.pki.sceau_ok(&["audit", "checkpoint"]);
    // A refusal: the OC approves nothing.
    let (request, _) = submit(&ra, &team.oc, "audited-2", &[]);
    assert_eq!(decide(&ra, &team.oc, &request, "approve").0, 403);
    let to = now_rfc3339();

    // Exported from the running daemon: a checkpoint is signed to close the period.
    let file = ra.pki.path("bundle.json");
    let out = ra.pki.sceau_ok(&[
        "audit",
        "export",
        "--bundle",
        file.to_str().unwrap(),
        "--from",
        &from,
        "--to",
        &to,
    ]);
    assert!(out.contains("entries"), "{out}");
    let bundle: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let (ok, said) = verify(&ra, &bundle, "as-exported.json");
    assert!(ok, "{said}");
    assert!(said.contains("audit bundle verified"), "{said}");
    // The report names the units' activity and who did it.
    let report = std::fs::read_to_string(ra.pki.path("as-exported.json.html")).unwrap();
    for shown in [
        "designation",
        "approval",
        "refusal",
        team.aed.id.as_str(),
        "role-not-allowed",
    ] {
        assert!(report.contains(shown), "{shown:?} not in the report");
    }

    let entries = bundle["entries"].as_array().unwrap().len();
    let first = bundle["first"].as_u64().unwrap();
    // The entry of the approval: one of the period's.
    let approval = (0..entries)
        .find(|&i| entry(&bundle, i).1["event"] == "card_request_approved")
        .unwrap();
    let seq = first + approval as u64;

    // One byte changed (the approver's id), the hash left as it was.
    let mut changed = bundle.clone();
    let mut stored = B64
        .decode(changed["entries"][approval].as_str().unwrap())
        .unwrap();
    let at = stored
        .windows(team.aed.id.len())
        .position(|w| w == team.aed.id.as_bytes())
        .unwrap();
    stored[at] ^= 0x01;
    changed["entries"][approval] = Value::String(B64.encode(&stored));
    let (ok, said) = verify(&ra, &changed, "changed.json");
    assert!(!ok);
    assert!(
        said.contains(&format!("audit entry {seq}")) && said.contains("does not match its hash"),
        "{said}"
    );

    // The same change with its hash recomputed: the next entry no longer follows from it.
    let mut rehashed = bundle.clone();
    let (_, mut json) = entry(&rehashed, approval);
    json["operator"] = Value::String(team.oc.id.clone());
    forge(&mut rehashed, approval, &json);
    let (ok, said) = verify(&ra, &rehashed, "rehashed.json");
    assert!(!ok);
    assert!(said.contains(&format!("audit entry {}", seq + 1)), "{said}");

    // An entry removed.
    let mut removed = bundle.clone();
    removed["entries"].as_array_mut().unwrap().remove(approval);
    let (ok, said) = verify(&ra, &removed, "removed.json");
    assert!(!ok);
    assert!(said.contains(&format!("audit entry {seq}")), "{said}");

    // The closing checkpoint re-signed by another key (its hash recomputed): the signature
    // does not verify with the anchor.
    let last = entries - 1;
    let (_, mut checkpoint) = entry(&bundle, last);
    assert_eq!(checkpoint["event"], "checkpoint");
    let forger = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("a forger's key");
    let vouched = checkpoint["entry"].as_u64().unwrap();
    let vouched_hash: [u8; 32] = hex::decode(checkpoint["entry_hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let message = sceau::audit::checkpoint_message(vouched, &vouched_hash);
    let signature = forger.sign(&SystemRandom::new(), &message).unwrap();
    checkpoint["signature"] = Value::String(hex::encode(signature.as_ref()));
    let mut resigned = bundle.clone();
    forge(&mut resigned, last, &checkpoint);
    let (ok, said) = verify(&ra, &resigned, "resigned.json");
    assert!(!ok);
    assert!(
        said.contains(&format!("audit entry {}", first + last as u64))
            && said.contains("signature"),
        "{said}"
    );
    // ... and with the forger's key put in the bundle too: not the anchor.
    let spki = {
        // The forger's public key as an SPKI: the P-256 prefix, then the point.
        let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        der.extend_from_slice(forger.public_key().as_ref());
        der
    };
    resigned["audit_key"] = Value::String(sceau::x509::pem::encode("PUBLIC KEY", &spki));
    let (ok, said) = verify(&ra, &resigned, "other-key.json");
    assert!(!ok);
    assert!(said.contains("not the anchor"), "{said}");

    // The end cut off (the closing checkpoint dropped): the period is no longer closed.
    let mut cut = bundle.clone();
    cut["entries"].as_array_mut().unwrap().pop();
    let (ok, said) = verify(&ra, &cut, "cut.json");
    assert!(!ok);
    assert!(said.contains("not a signed checkpoint"), "{said}");
    // Cut at the checkpoint in the middle, which vouches for all before it: the export's own
    // record is gone with the rest.
    let middle = (0..entries - 1)
        .rev()
        .find(|&i| entry(&bundle, i).1["event"] == "checkpoint")
        .expect("the checkpoint in the middle");
    let mut cut = bundle.clone();
    cut["entries"].as_array_mut().unwrap().truncate(middle + 1);
    let (ok, said) = verify(&ra, &cut, "cut-middle.json");
    assert!(!ok);
    assert!(said.contains("no record of this export"), "{said}");
    // The period edited (a later end, an earlier start).
    for field in ["to", "from"] {
        let mut edited = bundle.clone();
        edited[field] = Value::String(if field == "to" {
            "2099-01-01T00:00:00Z".into()
        } else {
            "2000-01-01T00:00:00Z".into()
        });
        let (ok, said) = verify(&ra, &edited, &format!("edited-{field}.json"));
        assert!(!ok, "{field}: {said}");
    }

    // Not a bundle at all.
    let (ok, said) = verify(&ra, &serde_json::json!({"format": "x"}), "garbage.json");
    assert!(!ok && said.contains("not an audit bundle"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
}
