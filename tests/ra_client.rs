//! The operator's tool, `sceau ra`, end to end: operators' cards are SoftHSM2 tokens whose keys
//! were made on the token, the client signs the TLS handshake and every request through
//! PKCS#11, against a real daemon on 127.0.0.1; OpenSSL checks the OCSP answers.
mod common;

use std::path::Path;

use common::ra::*;

/// What the walk-through's shell functions leave behind for a test to go on with: the same
/// functions, run again after it in the same shell.
const AFTER_THE_WALK_THROUGH: &str = r#"
# Each refusal: its exit status and what it printed.
outcome() { local name=$1; shift; set +e; "$@" > "$name.out" 2> "$name.err" < /dev/null; echo $? > "$name.status"; set -e; }
# A wrong PIN: refused by the card, said so.
outcome wrong-pin env SOFTHSM2_CONF="$CARDS_CONF" SCEAU_CARD_TOKEN=card-aed SCEAU_CARD_PIN=999999 "$SCEAU_BIN" ra queue
# No PIN anywhere and no terminal to ask it on.
outcome no-pin setsid env -u SCEAU_CARD_PIN SOFTHSM2_CONF="$CARDS_CONF" SCEAU_CARD_TOKEN=card-aed "$SCEAU_BIN" ra queue
# Another person's signature certificate with the AED's card: its key is not on the card.
outcome foreign-cert with_card card-aed --sign-cert ae/sign.pem queue
# An RA whose certificate does not chain to --ra-ca.
outcome wrong-ra-ca with_card card-aed --ra-ca "$CERTS/racine.pem" queue
# A request left pending, then an approval with no terminal to confirm on and no --yes.
new_card card-agent-3003 Paul MARTIN
with_card card-aed --json submit --holder agent-3003 --card card-agent-3003 \
  --auth-csr card-agent-3003-auth.csr --sign-csr card-agent-3003-sign.csr > pending.json
PENDING=$(grep -o '"request": "[0-9a-f]*"' pending.json | cut -d'"' -f4)
echo "$PENDING" > pending.id
outcome unconfirmed setsid env SOFTHSM2_CONF="$CARDS_CONF" SCEAU_CARD_PIN="$DEMO_PIN" \
  "$SCEAU_BIN" ra --token card-aed approve "$PENDING"
# An id that is no id.
outcome bad-id with_card card-aed show '../operators/me'
# The same holder's second card, under another name: the review says what changed.
new_card card-agent-1042-b Emma DUPONT
with_card card-aed --json submit --holder agent-1042 --card card-agent-1042-b \
  --auth-csr card-agent-1042-b-auth.csr --sign-csr card-agent-1042-b-sign.csr > second.json
with_card card-aed show "$(grep -o '"request": "[0-9a-f]*"' second.json | cut -d'"' -f4)" > second-review.txt
with_card card-aec --json queue > queue-aec.json
"#;

#[test]
fn the_walk_through_runs_as_written_with_cards_and_refuses_what_it_must() {
    let ra = Ra::start();
    let (script, out) = ra.run_docs_then(&["docs/ra-client.md"], AFTER_THE_WALK_THROUGH);
    assert!(
        script.contains("with_card card-aed approve"),
        "no shell blocks found in docs/ra-client.md"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "docs/ra-client.md failed:\n{stdout}\n{stderr}"
    );
    let demo = ra.pki.path("ra-client-demo");
    let read = |name: &str| std::fs::read_to_string(demo.join(name)).unwrap_or_default();

    // What the walk-through shows: the card issued (good), then revoked, as OpenSSL reads OCSP;
    // the AE known by its card; the batch of two issued.
    assert!(read("ocsp-good.txt").contains(": good"));
    assert!(read("ocsp-revoked.txt").contains(": revoked"));
    assert!(stdout.contains("role      AE"), "{stdout}");
    assert_eq!(read("batch.txt").matches(" issued ").count(), 2);
    // The review an approver sees, and the refusals the walk-through expects.
    let review = read("review.txt");
    for shown in [
        "holder        agent-1042 (new card card-emma)",
        "policies      authentication justice-auth, signature justice-sign",
        "keys          authentication EC P-256, signature EC P-256",
        "submitted by  OC card-oc",
        "previous card none: a first card",
        "submission    sha256 ",
    ] {
        assert!(review.contains(shown), "{shown:?} not in:\n{review}");
    }
    assert!(
        read("refused.txt").contains("the RA refused (403"),
        "{}",
        read("refused.txt")
    );
    assert!(!read("withdrawn.txt").is_empty());

    // The closing unit: the dry run and the approved bulk revocation, the proposer's own
    // approval refused, OCSP revoked when the approval returned.
    assert!(read("ocsp-bulk.txt").contains(": revoked"));
    assert!(
        read("own-bulk.txt").contains("own-submission"),
        "{}",
        read("own-bulk.txt")
    );

    // No private key was ever written to a file: the keys were made on the cards.
    let keys = files_containing(&demo, b"PRIVATE KEY");
    assert!(keys.is_empty(), "key files on disk: {keys:?}");

    // The audit log names the cards that acted: the AED approved (one single approval, one
    // batch), the OC handed Emma's card over against her card's receipt, the OC was withdrawn.
    let events = audit_events(&ra.pki);
    let approved_by_aed = events
        .iter()
        .filter(|e| e["event"] == "card_request_approved" && e["operator"] == "card-aed")
        .count();
    assert_eq!(approved_by_aed, 3, "approvals by card-aed");
    assert!(events.iter().any(|e| e["event"] == "card_delivered"
        && e["card"] == "card-emma"
        && e["operator"] == "card-oc"));
    assert_eq!(count(&events, "revocation_scheduled"), 1);
    let bulk_revoked = events
        .iter()
        .filter(|e| {
            e["event"] == "certificate_revoked"
                && e["requested_by"]
                    .as_str()
                    .is_some_and(|by| by.starts_with("operator:card-aec bulk:"))
        })
        .count();
    assert_eq!(bulk_revoked, 4);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "bulk_revocation_approved"
                && e["operator"] == "card-aec"
                && e["proposed_by"] == "card-aed"
                && e["revoked"] == 4)
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "operator_withdrawn" && e["operator"] == "card-oc")
    );

    // The refusals after it: each a clear message and an exit status of its kind, no panic.
    let outcome = |name: &str| {
        let status: i32 = read(&format!("{name}.status")).trim().parse().unwrap_or(-1);
        (status, read(&format!("{name}.err")))
    };
    for (name, status, says) in [
        ("wrong-pin", 77, "refused the PIN"),
        ("no-pin", 64, "no terminal"),
        (
            "foreign-cert",
            65,
            "the key of the card's signature certificate",
        ),
        ("wrong-ra-ca", 69, "TLS with the RA"),
        ("unconfirmed", 64, "--yes"),
        ("bad-id", 64, "an id is made of"),
    ] {
        let (got, err) = outcome(name);
        assert_eq!(got, status, "{name}: exit {got}, said: {err}");
        assert!(err.contains(says), "{name}: {says:?} not in: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    // The unconfirmed approval changed nothing: the request still waits.
    let pending = read("pending.id");
    let queue: serde_json::Value = serde_json::from_str(&read("queue-aec.json")).unwrap();
    let waiting: Vec<&str> = queue["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["request"].as_str())
        .collect();
    assert!(waiting.contains(&pending.trim()), "{queue}");
    // A second card of the same holder under another name: the change is shown.
    let second = read("second-review.txt");
    assert!(
        second.contains("previous card card-emma")
            && second.contains("changes       subject: ")
            && second.contains("LEROY")
            && second.contains("DUPONT"),
        "{second}"
    );
}

#[test]
fn the_queue_holds_only_the_scope_and_the_review_names_the_submitter() {
    let ra = Ra::start();
    let team = team(&ra);
    let [aed_dap, oc_dap] = dap_branch(&ra, &team.aec);
    let (in_dap, answer) = submit(&ra, &oc_dap, "h-dap", &["DAP"]);
    assert_eq!(answer.0, 201, "{answer:?}");
    let (elsewhere, answer) = submit(&ra, &team.oc, "h-dsj", &["DSJ"]);
    assert_eq!(answer.0, 201, "{answer:?}");
    let listed = |op: &Op| -> Vec<String> {
        let (status, queue) = ra.get(op, "/ra/v1/requests");
        assert_eq!(status, 200, "{queue}");
        assert_eq!(
            queue["pending"].as_u64(),
            Some(queue["requests"].as_array().unwrap().len() as u64)
        );
        queue["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["request"].as_str().unwrap().to_owned())
            .collect()
    };
    // The unit's AED sees the unit's request only; the full-scope AED both (oldest first, but
    // both were submitted within the same second).
    assert_eq!(listed(&aed_dap), vec![in_dap.clone()]);
    let mut both = listed(&team.aed);
    both.sort();
    let mut expected = vec![in_dap.clone(), elsewhere.clone()];
    expected.sort();
    assert_eq!(both, expected);
    // The other request is as unknown to the unit's AED as one that does not exist.
    let (status, _) = ra.get(&aed_dap, &format!("/ra/v1/requests/{elsewhere}"));
    assert_eq!(status, 404);
    // The review: who submitted it, with what keys, for which policies.
    let (_, view) = ra.get(&team.aed, &format!("/ra/v1/requests/{in_dap}"));
    assert_eq!(view["submitter"]["operator"], oc_dap.id);
    assert_eq!(view["submitter"]["role"], "OC");
    assert_eq!(view["key_types"]["authentication"], "EC P-256");
    assert_eq!(view["policies"]["signature"], "justice-sign");
    assert!(view["previous_card"].is_null(), "{view}");
    // Once decided, a request leaves the queue.
    let (status, _) = decide(&ra, &team.aed, &in_dap, "approve");
    assert_eq!(status, 200);
    assert_eq!(listed(&team.aed), vec![elsewhere]);
    assert!(listed(&aed_dap).is_empty());
    // A holder id is the submitter's word: a request naming the holder id of a card outside
    // the reader's scope says so, without showing that card.
    let issued = approved(&ra, (&team.oc, &team.aed), "h-dsj-card", &["DSJ"]);
    let foreign_card = issued["card"].as_str().unwrap().to_owned();
    let (_, json) = submit_doc_for(&ra, "h-dsj-card", &person(&["DAP"], "Agent", "HDAPOTHER"));
    let (status, answer) = ra.post(&oc_dap, "/ra/v1/requests", &json);
    assert_eq!(status, 201, "{answer}");
    let request = answer["request"].as_str().unwrap();
    let (_, view) = ra.get(&aed_dap, &format!("/ra/v1/requests/{request}"));
    assert_eq!(
        view["previous_card"],
        serde_json::json!({"outside_scope": true})
    );
    assert!(!view.to_string().contains(&foreign_card), "{view}");
    // The full-scope AED sees that card, and the change of name.
    let (_, view) = ra.get(&team.aed, &format!("/ra/v1/requests/{request}"));
    assert_eq!(view["previous_card"]["card"], foreign_card.as_str());
    assert!(
        view["changes"][0]
            .as_str()
            .unwrap()
            .starts_with("subject: "),
        "{view}"
    );
    // A read of the queue is a GET; anything else on it is not.
    let (status, _) = ra.curl(&team.aed, "PUT", "/ra/v1/requests", None);
    assert_eq!(status, 405);
}

/// The files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path);
        }
    }
    found
}
