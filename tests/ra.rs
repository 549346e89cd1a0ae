//! The registration authority end to end: a real daemon on a real SoftHSM2 token, operators
//! whose keys OpenSSL made, requests signed by `openssl cms` and sent by `curl` over mutual TLS.
mod common;

use std::path::Path;

use common::daemon::Daemon;
use common::openssl;
use common::ra::*;

#[test]
fn the_worked_example_runs_as_written() {
    let ra = Ra::start();
    let (script, out) = ra.run_docs(&["docs/ra-example.md"]);
    assert!(
        script.contains("ra_post"),
        "no shell blocks found in docs/ra-example.md"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "docs/ra-example.md failed:\n{stdout}\n{stderr}"
    );
    // What the example shows: a card issued (good) then revoked, as OCSP says.
    let demo = ra.pki.path("ra-demo");
    let good = std::fs::read_to_string(demo.join("ocsp-good.txt")).unwrap();
    let revoked = std::fs::read_to_string(demo.join("ocsp-revoked.txt")).unwrap();
    assert!(good.contains(": good"), "{good}");
    assert!(revoked.contains(": revoked"), "{revoked}");
    assert!(stdout.contains("\"role\":\"AE\""), "{stdout}");
}

#[test]
fn the_authorization_matrix_holds_and_refusals_change_nothing() {
    let ra = Ra::start();
    let pki = &ra.pki;
    // Operators: a hierarchy with full scope, and a branch limited to the unit "DAP".
    let ae = ra.operator("ae", "Alice", "AUBERT", &[]);
    let aec = ra.operator("aec", "Bruno", "CARON", &[]);
    let aed = ra.operator("aed", "Chloe", "DURAND", &[]);
    let aed2 = ra.operator("aed2", "Denis", "FAURE", &[]);
    let oc = ra.operator("oc", "Eric", "GARNIER", &[]);
    let aed_dap = ra.operator("aeddap", "Fanny", "HUET", &["DAP"]);
    let oc_dap = ra.operator("ocdap", "Gilles", "JOLY", &["DAP"]);
    let oc_auth = ra.operator("ocauth", "Hugo", "KLEIN", &[]);
    let stranger = ra.operator("stranger", "Ines", "LAMBERT", &[]);
    pki.sceau_ok(&["ra", "bootstrap", "--card", &ae.id]);
    // A second bootstrap is refused.
    let again = pki.sceau(&["ra", "bootstrap", "--card", &aec.id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already registered"));

    let all = scope(&[], BOTH);
    let dap = scope(&["DAP"], BOTH);
    // Designation follows the hierarchy, and scopes only narrow; the same operator twice is
    // refused. Each: (designator, designee, role, scope, refusal if any).
    let auth_only = scope(&[], r#""policies":["justice-auth"]"#);
    let forbidden = Some((403, "role-not-allowed"));
    for (by, whom, role, scope, refusal) in [
        (&ae, &oc, "OC", &all, forbidden),
        (&ae, &aec, "AEC", &all, None),
        (&aec, &aec, "AEC", &all, forbidden),
        (&aec, &aed, "AED", &all, None),
        (&aec, &aed2, "AED", &all, None),
        (&aec, &aed_dap, "AED", &dap, None),
        (&aed, &oc, "OC", &all, None),
        (&aed_dap, &oc_dap, "OC", &all, Some((403, "scope-widening"))),
        (&aed_dap, &oc_dap, "OC", &dap, None),
        (&aed, &oc_auth, "OC", &auth_only, None),
        (&oc, &stranger, "OC", &all, forbidden),
        (
            &aed,
            &oc,
            "OC",
            &all,
            Some((409, "person-already-operator")),
        ),
    ] {
        let answer = designate(&ra, by, whom, role, scope);
        match refusal {
            None => assert_eq!(answer.0, 201, "{role} {}: {answer:?}", whom.name),
            Some((status, rule)) => assert_refused(&answer, status, rule),
        }
    }
    // An unregistered client certificate.
    assert_refused(&ra.me(&stranger), 403, "unknown-operator");
    let me = ra.me(&aed);
    assert_eq!(me.0, 200);
    assert_eq!(me.1["role"], "AED");

    // Submission: OC and AED may, AE and AEC may not; scope and policies are enforced.
    assert_refused(&submit(&ra, &ae, "h-ae", &[]).1, 403, "role-not-allowed");
    assert_refused(&submit(&ra, &aec, "h-aec", &[]).1, 403, "role-not-allowed");
    assert_refused(
        &submit(&ra, &oc_dap, "h-ocdap", &["DSJ"]).1,
        403,
        "holder-out-of-scope",
    );
    assert_refused(
        &submit(&ra, &oc_auth, "h-ocauth", &[]).1,
        403,
        "policy-out-of-scope",
    );
    let (by_oc, answer) = submit(&ra, &oc, "h-one", &["DSJ"]);
    assert_eq!(answer.0, 201, "{answer:?}");
    assert_eq!(answer.1["state"], "pending");
    let (by_aed, answer) = submit(&ra, &aed, "h-two", &[]);
    assert_eq!(answer.0, 201, "{answer:?}");
    let (in_dap, answer) = submit(&ra, &oc_dap, "h-three", &["DAP"]);
    assert_eq!(answer.0, 201, "{answer:?}");
    // A policy violation is refused at submission, naming the rule.
    let bad = {
        // No givenName: RGS A4 VII.2 and EN 319 412-2 NAT-4.2.4-1 want GN and SN.
        let (_, json) = submit_doc_for(&ra, "h-bad", "/SN=MARTIN/CN=Paul MARTIN");
        ra.post(&oc, "/ra/v1/requests", &json)
    };
    assert_refused(&bad, 422, "policy-violation");

    // Decisions: never by an OC, never by the submitter, never out of scope.
    assert_refused(
        &decide(&ra, &oc, &by_oc, "approve"),
        403,
        "role-not-allowed",
    );
    assert_refused(
        &decide(&ra, &aed, &by_aed, "approve"),
        403,
        "own-submission",
    );
    assert_refused(&decide(&ra, &aed, &by_aed, "reject"), 403, "own-submission");
    // Out of scope looks like nothing there at all (issue 10: refusals reveal nothing).
    assert_refused(&decide(&ra, &aed_dap, &by_oc, "approve"), 404, "not-found");
    // The signed action must be the one the URL names.
    let (_, json) = doc("reject", &format!(r#""request":"{by_oc}","reason":"x""#));
    assert_refused(
        &ra.post(&aed, &format!("/ra/v1/requests/{by_oc}/approve"), &json),
        400,
        "action-mismatch",
    );
    // CMS signer different from the TLS client.
    let aed2_signs = (aed2.sign_cert.as_path(), aed2.sign_key.as_path());
    let answer = decide_signed(&ra, &aed, aed2_signs, &by_oc, "approve");
    assert_refused(&answer, 403, "signer-not-client");
    // Approval by a different AED issues both certificates.
    let (_, json) = doc("approve", &format!(r#""request":"{by_oc}""#));
    let path = format!("/ra/v1/requests/{by_oc}/approve");
    let approved = ra.post(&aed, &path, &json);
    assert_eq!(approved.0, 200, "{approved:?}");
    assert_eq!(approved.1["state"], "issued");
    // The same signed approval again: a replay.
    assert_refused(&ra.post(&aed, &path, &json), 409, "replayed-request");
    // Approving an issued request again.
    assert_refused(
        &decide(&ra, &aed2, &by_oc, "approve"),
        409,
        "request-not-pending",
    );
    let card_one = approved.1["card"].as_str().unwrap().to_owned();
    // AEC and AE may approve too; an AED may reject.
    assert_eq!(decide(&ra, &aec, &by_aed, "approve").0, 200);
    assert_eq!(decide(&ra, &aed_dap, &in_dap, "reject").0, 200);
    assert_refused(
        &decide(&ra, &ae, &in_dap, "approve"),
        409,
        "request-not-pending",
    );
    let status = ra.get(&oc, &format!("/ra/v1/requests/{by_oc}"));
    assert_eq!(status.1["state"], "issued");
    assert!(
        status.1["authentication"]["certificate"]
            .as_str()
            .unwrap_or_default()
            .contains("BEGIN CERTIFICATE")
    );
    assert_refused(
        &ra.get(&oc_dap, &format!("/ra/v1/requests/{by_oc}")),
        404,
        "not-found",
    );

    // Expiring soon: the two new cards' certificates are within 3 years + a day, not 30 days.
    let soon = ra.get(&aed, "/ra/v1/certificates/expiring?days=30");
    assert_eq!(list_len(&soon, "certificates"), Some(0), "{soon:?}");
    let later = ra.get(&aed, "/ra/v1/certificates/expiring?days=1100");
    assert!(
        later.1["certificates"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
            >= 4,
        "{later:?}"
    );
    // The DAP branch sees only holders of the unit DAP (here, the two cards of its two operators).
    let dap_view = ra.get(&oc_dap, "/ra/v1/certificates/expiring?days=1100");
    let seen = dap_view.1["certificates"].as_array().unwrap();
    assert_eq!(seen.len(), 4, "{dap_view:?}");
    assert!(
        seen.iter()
            .all(|c| c["subject"].as_str().unwrap_or_default().contains("OU=DAP")),
        "{dap_view:?}"
    );

    // Revocation: out of scope refused, in scope accepted, any role.
    let hidden = revoke_card(&ra, &oc_dap, &card_one);
    assert_refused(&hidden, 404, "not-found");
    let missing = revoke_card(&ra, &oc_dap, "card-that-does-not-exist");
    assert_refused(&missing, 404, "not-found");
    assert_eq!(
        hidden.1["detail"]
            .as_str()
            .map(|d| d.replace(&card_one, "X")),
        missing.1["detail"]
            .as_str()
            .map(|d| d.replace("card-that-does-not-exist", "X")),
        "an out-of-scope card and a missing one answer alike"
    );
    let revoked = revoke_card(&ra, &oc, &card_one);
    assert_eq!(revoked.0, 200, "{revoked:?}");
    assert_refused(&revoke_card(&ra, &ae, &card_one), 409, "already-revoked");

    // Withdrawal: only from above, and it cascades.
    assert_refused(&withdraw(&ra, &oc, &aed.id, None), 404, "not-found");
    let withdrawn = withdraw(&ra, &aec, &aed.id, Some("left"));
    assert_eq!(withdrawn.0, 200, "{withdrawn:?}");
    let ids = withdrawn.1["withdrawn"].as_array().unwrap();
    assert!(
        ids.iter().any(|i| i == &aed.id) && ids.iter().any(|i| i == &oc.id),
        "{withdrawn:?}"
    );
    assert_refused(&ra.me(&oc), 403, "operator-withdrawn");
    assert_refused(
        &submit(&ra, &aed, "h-late", &[]).1,
        403,
        "operator-withdrawn",
    );

    // A revoked operator certificate: refused at once.
    let serial = common::serial_of(&aed2.cert);
    pki.sceau_ok(&["revoke", "--serial", &serial, "--reason", "key-compromise"]);
    assert_refused(&ra.me(&aed2), 403, "operator-certificate-revoked");

    // Garbage, the wrong media type, a stale time.
    let garbage = pki.path("garbage.bin");
    std::fs::write(&garbage, b"\x30\x03\x02\x01\x01 not CMS").unwrap();
    assert_refused(
        &ra.curl(&aec, "POST", "/ra/v1/requests", Some(&garbage)),
        400,
        "malformed-request",
    );
    let stale = r#"{"id":"0123456789abcdef0123456789abcdef","time":"2020-01-01T00:00:00Z","action":"approve","request":"x"}"#;
    assert_refused(
        &ra.post(&aec, "/ra/v1/requests/x/approve", stale),
        400,
        "request-time-outside-window",
    );
    let plain = ra
        .curl_command(Some(&aec), Path::new("/dev/null"))
        .args(["-H", "Content-Type: application/json", "--data", "{}"])
        .arg(ra.url("/ra/v1/requests"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "415");
    // Without a client certificate there is no TLS session at all.
    let anonymous = ra
        .curl_command(None, Path::new("/dev/null"))
        .arg(ra.url("/ra/v1/operators/me"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "000");

    // The RA counters: every request, and the refusals.
    assert!(ra.daemon.metric("sceau_ra_requests_total", "") >= 40);
    assert!(ra.daemon.metric("sceau_ra_refused_total", "") as usize >= REFUSALS.with(|n| n.get()));

    // An expired operator certificate: the same daemon, its clock moved past the AEC's card.
    let Ra { pki, daemon } = ra;
    assert!(daemon_stop(daemon).success());
    let not_after = common::x509::not_after(&aec.cert);
    let after_expiry = common::date(&format!("{not_after} + 1 day"));
    let daemon = Daemon::start_with_env(&pki, &[("SCEAU_NOW", &after_expiry)]);
    let later = Ra { pki, daemon };
    assert_refused(&later.me(&aec), 403, "operator-certificate-expired");
    let Ra { pki, daemon } = later;
    assert!(daemon_stop(daemon).success());

    // Every refusal left one audit event and nothing else: each refused request id appears
    // only in request_refused events, and the chain verifies.
    let events = audit_events(&pki);
    // Each refusal is written, or counted with the refusals of its kind by its client.
    let refused = count(&events, "request_refused")
        + events
            .iter()
            .filter(|e| e["event"] == "requests_refused_repeatedly")
            .map(|e| e["count"].as_u64().unwrap() as usize)
            .sum::<usize>();
    assert_eq!(
        refused,
        REFUSALS.with(|n| n.get()),
        "every refusal in the audit log"
    );
    for event in &events {
        if event["event"] == "card_request_submitted" {
            assert_ne!(event["holder"], "h-ae");
            assert_ne!(event["holder"], "h-bad");
            assert_ne!(event["holder"], "h-late");
        }
    }
    let designated = count(&events, "operator_designated");
    assert_eq!(designated, 8, "bootstrap + 7 designations");
    assert!(
        pki.sceau_ok(&["audit", "verify"])
            .contains("audit log verified")
    );
    let _ = (oc_auth.name, stranger.name);
}

fn daemon_stop(daemon: Daemon) -> std::process::ExitStatus {
    daemon.stop()
}

/// Checkpoints asked for at once (operators, a timer) sign one after the other: two signing
/// the same head would leave a second checkpoint vouching for an entry not after the first,
/// and the chain would fail verification for good.
#[test]
fn checkpoints_asked_for_at_once_keep_the_chain_whole() {
    let ra = Ra::start();
    for round in 0..6 {
        // Something to vouch for (a card issued), then three checkpoints at once.
        let surname = ["AUBERT", "BLANC", "CARON", "DUPONT", "ESNAULT", "FABRE"][round];
        ra.operator(&format!("op{round}"), "Alice", surname, &[]);
        std::thread::scope(|scope| {
            let askers: Vec<_> = (0..3)
                .map(|_| scope.spawn(|| ra.pki.sceau(&["audit", "checkpoint"])))
                .collect();
            for asker in askers {
                let out = asker.join().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        });
    }
    let (status, _, body) = common::daemon::http(ra.daemon.admin, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let Ra { pki, daemon } = ra;
    assert!(daemon.stop().success());
    let verified = pki.sceau_ok(&["audit", "verify"]);
    assert!(verified.contains("signed checkpoints"), "{verified}");
}

#[test]
fn audit_verify_checks_checkpoints_and_names_a_changed_entry() {
    let ra = Ra::start();
    let [_ae] = chain(&ra);
    // A checkpoint through the daemon, signed by the audit key in the HSM.
    let answer = ra.pki.sceau_ok(&["audit", "checkpoint"]);
    assert!(answer.contains("\"checkpoint\""), "{answer}");
    let Ra { pki, daemon } = ra;
    assert!(daemon.stop().success());
    let verified = pki.sceau_ok(&["audit", "verify"]);
    // The one sceau init signs (and exports the key of), this one, and the daemon's own at
    // start-up if it found entries to vouch for.
    let checkpoints = verified
        .split(" signed checkpoints")
        .next()
        .and_then(|before| before.rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(checkpoints.is_some_and(|n| n >= 2), "{verified}");
    let entries = pki.audit_entries();
    assert!(entries > 5);

    // Change one byte of entry 3 (in its JSON body): verification names entry 3.
    {
        let store = open_store(&pki);
        let mut stored = store
            .get::<sceau::store::schema::Audit>(&3)
            .unwrap()
            .unwrap();
        let at = stored.len() - 5;
        stored[at] ^= 0x01;
        store
            .write_derived::<sceau::store::schema::Audit>(&[(3, Some(stored))])
            .unwrap();
    }
    let text = pki.sceau_fails(&["audit", "verify"]);
    assert!(text.contains("audit entry 3 is bad"), "{text}");

    // The daemon started on the changed log checks it at once and refuses, loudly, to vouch
    // for it: health degraded naming the break, a metric, no checkpoint signed.
    let entries_before = entries;
    let daemon = Daemon::start(&pki);
    daemon.wait_until("the audit chain reported broken", |d| {
        d.metric("sceau_audit_chain_broken", "") == 1
    });
    let (status, _, body) = common::daemon::http(daemon.admin, "GET", "/healthz", &[], b"");
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["audit"]["chain"], "broken", "{health}");
    assert!(
        health["audit"]["why"]
            .as_str()
            .unwrap_or_default()
            .contains("entry 3"),
        "{health}"
    );
    let refused = pki.sceau(&["audit", "checkpoint"]);
    assert!(!refused.status.success());
    assert!(daemon.stop().success());
    let store_entries = open_store(&pki).audit_head().seq;
    assert_eq!(
        store_entries, entries_before,
        "nothing was signed over the broken chain"
    );

    // Rewriting the chain from there on (hashes recomputed) still fails: the checkpoint's
    // signature vouches for the original hash.
    {
        let store = open_store(&pki);
        let rows = audit_rows(&store);
        let mut previous = [0u8; 32];
        let mut rewritten = Vec::new();
        for (seq, stored) in rows {
            let mut record: serde_json::Value = serde_json::from_slice(&stored[32..]).unwrap();
            record["prev"] = serde_json::Value::String(hex_lower(&previous));
            let body = serde_json::to_vec(&record).unwrap();
            let mut input = previous.to_vec();
            input.extend_from_slice(&body);
            let hash = sceau::x509::keys::sha256(&input);
            let mut entry = hash.to_vec();
            entry.extend_from_slice(&body);
            rewritten.push((seq, Some(entry)));
            previous = hash;
        }
        let head_seq = rewritten.len() as u64;
        store
            .write_derived::<sceau::store::schema::Audit>(&rewritten)
            .unwrap();
        set_audit_head(&store, head_seq, &previous);
    }
    let text = pki.sceau_fails(&["audit", "verify"]);
    assert!(text.contains("vouches for a hash"), "{text}");
}

/// The store of a stopped daemon, opened as the CLI does.
fn open_store(pki: &common::Pki) -> sceau::store::Store {
    let config = sceau::config::Config::load(&pki.config).unwrap();
    sceau::store::Store::open(&config.store_dir()).unwrap()
}

/// Every audit entry as stored: (sequence number, hash and body).
fn audit_rows(store: &sceau::store::Store) -> Vec<(u64, Vec<u8>)> {
    store.audit_entries().unwrap().map(|r| r.unwrap()).collect()
}

/// Writes the audit chain's head: its last sequence number and hash.
fn set_audit_head(store: &sceau::store::Store, seq: u64, hash: &[u8]) {
    let mut head = seq.to_be_bytes().to_vec();
    head.extend_from_slice(hash);
    store
        .write_derived::<sceau::store::schema::Meta>(&[("audit-head".to_owned(), Some(head))])
        .unwrap();
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// After `sceau ca rotate`, agent cards come from the new issuing CA: operators carrying one
/// are designated and served over mutual TLS without a restart, and those with cards of the
/// previous CA still are.
#[test]
fn operators_with_cards_of_a_new_issuing_ca_are_trusted_after_a_rollover() {
    let ra = Ra::start();
    let pki = &ra.pki;
    let [ae] = chain(&ra);
    let rotated: serde_json::Value =
        serde_json::from_str(&pki.sceau_ok(&["ca", "rotate"])).unwrap();
    assert_eq!(rotated["issuing"], "ac-agents-2", "{rotated}");
    let aec = ra.operator("aec", "Bruno", "CARON", &[]);
    let issuer = common::x509::issuer(&aec.cert);
    assert!(issuer.ends_with("AC AGENTS TEST 2"), "{issuer}");

    assert_eq!(designate(&ra, &ae, &aec, "AEC", &scope(&[], BOTH)).0, 201);
    let me = ra.me(&aec);
    assert_eq!(me.0, 200, "{me:?}");
    assert_eq!(me.1["role"], "AEC");
    assert_eq!(ra.me(&ae).0, 200);
    assert!(daemon_stop(ra.daemon).success());
}

/// Issue 9, problem 5: an approval killed right after the card's certificates were stored.
/// The request says "issued" in the same write as the card (before, it stayed "approved", and
/// the next approval marked it failed although the card existed).
#[cfg(feature = "test-hooks")]
#[test]
fn an_approval_killed_after_the_card_is_stored_leaves_the_request_issued() {
    let ra = Ra::start();
    let Team { aed, oc, .. } = team(&ra);
    let (request, answer) = submit(&ra, &oc, "h-crash", &[]);
    assert_eq!(answer.0, 201, "{answer:?}");

    // The daemon dies right after the certificates are stored, before answering.
    let Ra { pki, daemon } = ra;
    assert!(daemon.stop().success());
    let daemon = Daemon::start_with_env(&pki, &[("SCEAU_FAILPOINT", "after-store")]);
    let ra = Ra { pki, daemon };
    let (status, _) = decide(&ra, &aed, &request, "approve");
    assert_ne!(status, 200, "the daemon should have died before answering");
    let Ra { pki, daemon } = ra;
    drop(daemon);
    let daemon = Daemon::start(&pki);
    let ra = Ra { pki, daemon };

    let (status, state) = ra.get(&aed, &format!("/ra/v1/requests/{request}"));
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["state"], "issued", "{state}");
    // The card is there and answered "good"; approving again is refused as not pending and
    // changes nothing (it used to mark the request failed).
    let path = ra.save_certificate(&state, "authentication", "crash-auth.pem");
    assert!(ra.pki.ocsp_status(&ra.daemon, &path).contains(": good"));
    assert_refused(
        &decide(&ra, &aed, &request, "approve"),
        409,
        "request-not-pending",
    );
    assert_eq!(
        ra.get(&aed, &format!("/ra/v1/requests/{request}")).1["state"],
        "issued"
    );
}

/// Issue 10 problem 4: a renewal of a card in scope, at today's date (the real clock), is
/// issued: the new certificates answer "good", the superseded ones "revoked".
#[test]
fn a_card_is_renewed_today() {
    let ra = Ra::start();
    let Team { aed, oc, .. } = team(&ra);
    let issued = approved(&ra, (&oc, &aed), "h-renew", &[]);
    let card = issued["card"].as_str().unwrap().to_owned();
    let old = ra.save_certificate(&issued, "authentication", "renew-old-auth.pem");

    // New keys for the same holder (same subject), submitted by the OC, approved by the AED.
    let subject = "/GN=Agent/SN=HRENEW/CN=Agent HRENEW";
    let (renewal, submitted) = renew(&ra, &oc, &card, "renew", subject);
    assert_eq!(submitted.0, 201, "{submitted:?}");
    let (status, renewed) = decide(&ra, &aed, &renewal, "approve");
    assert_eq!(
        status, 200,
        "the renewal of a card in scope today: {renewed}"
    );
    let new = ra.save_certificate(&renewed, "authentication", "renew-new-auth.pem");
    assert!(ra.pki.ocsp_status(&ra.daemon, &new).contains(": good"));
    assert!(ra.pki.ocsp_status(&ra.daemon, &old).contains(": revoked"));
}

/// Issue 10 problem 2: an operator withdrawn by an AEC does not come back through a peer AED;
/// the withdrawer's rank (or above) may designate them again.
#[test]
fn a_withdrawn_operator_does_not_come_back_through_a_peer() {
    let ra = Ra::start();
    let [_, aec, aed] = chain(&ra);
    let all = scope(&[], BOTH);
    let peer = designated(&ra, &aec, "AED", &all, ("peer", "Denis", "FAURE", &[]));
    let withdrawn = withdraw(&ra, &aec, &aed.id, None);
    assert_eq!(withdrawn.0, 200, "{withdrawn:?}");

    assert_refused(
        &designate(&ra, &peer, &aed, "AED", &all),
        403,
        "withdrawal-stands",
    );
    assert_refused(&ra.me(&aed), 403, "operator-withdrawn");
    // The withdrawer's rank may undo it.
    assert_eq!(designate(&ra, &aec, &aed, "AED", &all).0, 201);
    assert_eq!(ra.me(&aed).0, 200);
}

/// A loose certificate of `policy` (no card) for the holder `holder` named `given SURNAME`.
fn loose_certificate(
    ra: &Ra,
    name: &str,
    holder: &str,
    policy: &str,
    given: &str,
    surname: &str,
) -> Op {
    let cert = ra.pki.issue_to(
        name,
        policy,
        holder,
        &format!("/GN={given}/SN={surname}/CN={given} {surname}"),
    );
    let key = ra.pki.path(&format!("{name}.key"));
    Op {
        name: name.to_owned(),
        key: key.clone(),
        cert: cert.clone(),
        sign_key: key,
        sign_cert: cert,
        holder: holder.to_owned(),
        id: format!("no-card-{name}"),
    }
}

/// Issue 10 problem 1: the AED Chloe DURAND cannot become a second operator, neither with a
/// loose certificate of her own (signature or authentication), nor with her own card, nor with a
/// second card: operators are persons holding a card, one role per person; so she cannot approve
/// what she submitted.
#[test]
fn one_person_cannot_hold_two_operator_credentials() {
    let ra = Ra::start();
    let [_, aec, aed] = chain(&ra);
    let all = scope(&[], BOTH);

    // A loose certificate is designated by nobody: the request shape names a card.
    let signature = loose_certificate(
        &ra,
        "aed-sign",
        "operator-aed",
        "justice-sign",
        "Chloe",
        "DURAND",
    );
    let pem = std::fs::read_to_string(&signature.cert).unwrap();
    let (_, json) = doc(
        "designate",
        &format!(r#""role":"AED",{all},"certificate":{}"#, json_string(&pem)),
    );
    assert_refused(
        &ra.post(&aed, "/ra/v1/operators", &json),
        400,
        "malformed-request",
    );
    // Her own card, by herself.
    assert_refused(
        &designate(&ra, &aed, &aed, "AED", &all),
        403,
        "own-certificate",
    );
    // A second card of hers: the same person, already an operator, whoever designates it.
    let second = ra.card_of(
        "aed-card2",
        "operator-aed",
        "card-aed-2",
        "Chloe",
        "DURAND",
        &[],
    );
    assert_one_person(&ra, (&aed, "AED"), (&aec, "AED"), &second);
    // A loose authentication certificate of hers, and her second card, are no credentials.
    let loose = loose_certificate(
        &ra,
        "aed-loose",
        "operator-aed",
        "justice-auth",
        "Chloe",
        "DURAND",
    );
    assert_refused(&ra.me(&loose), 403, "unknown-operator");
    assert_refused(&ra.me(&second), 403, "unknown-operator");
    // Her second card's signature key does not sign for her first card.
    let (request, answer) = submit(&ra, &aed, "h-self", &[]);
    assert_eq!(answer.0, 201, "{answer:?}");
    let second_signs = (second.sign_cert.as_path(), second.sign_key.as_path());
    let answer = decide_signed(&ra, &aed, second_signs, &request, "approve");
    assert_refused(&answer, 403, "signer-not-client");
    assert_refused(
        &decide(&ra, &aed, &request, "approve"),
        403,
        "own-submission",
    );
    assert_eq!(ra.me(&aed).0, 200);
}

/// The convention's operators sign with their card's signature certificate, and only with it
/// (the authentication key is refused: issue 18). The role follows the card through its renewal: the
/// renewed card's new certificates are the credential, the old ones are not.
#[test]
fn an_operator_signs_with_their_card_and_keeps_the_role_across_its_renewal() {
    let ra = Ra::start();
    let Team { ae, aed, oc, .. } = team(&ra);
    // Signed with the authentication certificate (the TLS client's): refused, it proves
    // presence only (issue 18); the signature certificate signs.
    let (_, json) = submit_doc_for(&ra, "h-compat", "/GN=Agent/SN=COMPAT/CN=Agent COMPAT");
    let answer = ra.post_signed(&oc, (&oc.cert, &oc.key), "/ra/v1/requests", &json);
    assert_refused(&answer, 403, "signature-key-required");
    let answer = ra.post(&oc, "/ra/v1/requests", &json);
    assert_eq!(answer.0, 201, "{answer:?}");

    // Nobody but the OC asks for the renewal of the OC's card (anyone else could give the
    // OC's role to keys of their own); the OC does, signed with the card, and the AED (above
    // it) approves; the OC stays an OC with the new card.
    let subject = "/GN=Eric/SN=GARNIER/CN=Eric GARNIER";
    let (_, answer) = renew(&ra, &aed, &oc.id, "oc-takeover", subject);
    assert_refused(&answer, 403, "role-not-allowed");
    let (request, answer) = renew(&ra, &oc, &oc.id, "oc-renewed", subject);
    assert_eq!(answer.0, 201, "{answer:?}");
    assert_refused(
        &decide(&ra, &oc, &request, "approve"),
        403,
        "role-not-allowed",
    );
    let (status, issued) = decide(&ra, &aed, &request, "approve");
    assert_eq!(status, 200, "{issued}");
    let (status, issued) = ra.get(&ae, &format!("/ra/v1/requests/{request}"));
    assert_eq!(status, 200, "{issued}");
    let renewed = ra.card_from(&issued, "oc-renewed", &oc.holder, &oc.id);
    let me = ra.me(&renewed);
    assert_eq!(me.0, 200, "{me:?}");
    assert_eq!(me.1["role"], "OC");
    assert_eq!(me.1["operator"], oc.id.as_str());
    let (_, answer) = submit(&ra, &renewed, "h-after-renewal", &[]);
    assert_eq!(answer.0, 201, "{answer:?}");
    // The superseded certificates are no credential any more.
    assert_refused(&ra.me(&oc), 403, "operator-certificate-revoked");
}

/// Issue 10 problem 3: operators of unit DAP cannot renew (and so supersede) a card of unit DSJ,
/// nor learn that it exists; nobody re-binds a card to another subject by renewing it.
#[test]
fn a_renewal_is_scoped_by_the_card_it_replaces() {
    let ra = Ra::start();
    let Team { aec, aed, oc, .. } = team(&ra);
    let [_aed_dap, oc_dap] = dap_branch(&ra, &aec);
    // A card of unit DSJ.
    let issued = approved(&ra, (&oc, &aed), "h-dsj", &["DSJ"]);
    let card = issued["card"].as_str().unwrap().to_owned();

    // The DAP operators renew it for a DAP subject of their choosing: "no such card", like a
    // card that does not exist.
    let (_, answer) = renew(
        &ra,
        &oc_dap,
        &card,
        "hijack",
        "/OU=DAP/GN=Agent/SN=HDSJ/CN=Agent HDSJ",
    );
    assert_refused(&answer, 404, "not-found");
    let (_, unknown) = renew(
        &ra,
        &oc_dap,
        "card-nonexistent",
        "ghost",
        "/OU=DAP/GN=Agent/SN=HDSJ/CN=Agent HDSJ",
    );
    assert_refused(&unknown, 404, "not-found");
    assert_eq!(
        answer.1["detail"].as_str().map(|d| d.replace(&card, "X")),
        unknown.1["detail"]
            .as_str()
            .map(|d| d.replace("card-nonexistent", "X"))
    );
    // An operator in scope cannot re-bind the card to another subject.
    let (_, answer) = renew(
        &ra,
        &oc,
        &card,
        "rebind",
        "/OU=DSJ/GN=Autre/SN=PERSONNE/CN=Autre PERSONNE",
    );
    assert_refused(&answer, 409, "renewal-not-allowed");
    // The card is untouched: its certificates are still good.
    let old = ra.save_certificate(&issued, "authentication", "dsj-auth.pem");
    assert!(ra.pki.ocsp_status(&ra.daemon, &old).contains(": good"));
    // The legitimate renewal works.
    let (renewal, answer) = renew(
        &ra,
        &oc,
        &card,
        "legit",
        "/OU=DSJ/GN=Agent/SN=HDSJ/CN=Agent HDSJ",
    );
    assert_eq!(answer.0, 201, "{answer:?}");
    assert_eq!(decide(&ra, &aed, &renewal, "approve").0, 200);
    assert!(ra.pki.ocsp_status(&ra.daemon, &old).contains(": revoked"));
}

/// Issue 10 problem 5: an OC whose scope covers the AE's name cannot revoke the AE's card; the
/// AE designates an alter ego; the last active AE cannot be withdrawn; security staff
/// bootstrap a replacement AE on the CA host once no AE can act.
#[test]
fn the_ae_cannot_be_locked_out_from_below_and_can_be_replaced() {
    let ra = Ra::start();
    let Team { ae, oc, .. } = team(&ra);
    let alter = ra.operator("alter", "Albert", "ALTER", &[]);
    let spare = ra.operator("spare", "Sam", "SECOURS", &[]);
    let all = scope(&[], BOTH);

    // The OC's scope covers the AE's name, but not its rank.
    let serial = common::serial_of(&ae.cert);
    let fields = format!(r#""serial":"{serial}","reason":"affiliation-changed""#);
    assert_refused(&revoke_with(&ra, &oc, &fields).1, 403, "role-not-allowed");
    assert!(ra.pki.ocsp_status(&ra.daemon, &ae.cert).contains(": good"));
    assert_eq!(ra.me(&ae).0, 200);

    // Nobody withdraws themselves (the bootstrapped AE has no designator); an alter ego can
    // be designated.
    assert_refused(&withdraw(&ra, &ae, &ae.id, None), 404, "not-found");
    assert_eq!(designate(&ra, &ae, &alter, "AE", &all).0, 201);
    assert_eq!(ra.me(&alter).1["role"], "AE");

    // While an AE can act, security staff cannot bootstrap another; once none can (their cards
    // revoked on the CA host), they can, and it is audited.
    let refused = ra.pki.sceau(&["ra", "bootstrap", "--card", &spare.id]);
    assert!(!refused.status.success());
    for card in [&ae.cert, &alter.cert] {
        ra.pki.revoke(card, "affiliation-changed");
    }
    ra.pki.sceau_ok(&["ra", "bootstrap", "--card", &spare.id]);
    assert_eq!(ra.me(&spare).1["role"], "AE");
    designated(&ra, &spare, "AEC", &all, ("aec2", "Zoe", "NOUVELLE", &[]));
}

/// Issue 10 problem 7: a holder's card (no operator) calling the RA 300 times: the rate limit
/// answers before the operator lookup and the audit write, so the audit log grows by at most the
/// burst.
#[test]
fn a_flood_from_a_non_operator_is_rate_limited_before_it_costs_anything() {
    let ra = Ra::start_with_limit(10);
    let holder = ra.operator("holder", "Henri", "PORTEUR", &[]);
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..300 {
        *statuses.entry(ra.me(&holder).0).or_insert(0) += 1;
    }
    assert!(
        statuses.get(&429).copied().unwrap_or(0) >= 280,
        "{statuses:?}"
    );
    // The burst of 10, plus one more every 6 s that the loop lasts (about 15 s here).
    assert!(
        statuses.get(&403).copied().unwrap_or(0) <= 20,
        "{statuses:?}"
    );
    let Ra { pki, daemon } = ra;
    assert!(daemon.stop().success());
    // The 403s that passed the limiter are one kind of refusal from one client: the first is
    // written, the others counted in one event when the daemon stopped.
    let events = audit_events(&pki);
    let refused = count(&events, "request_refused");
    let repeated: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "requests_refused_repeatedly")
        .collect();
    let forbidden = statuses.get(&403).copied().unwrap_or(0) as u64;
    assert_eq!(refused, 1, "{statuses:?}");
    assert_eq!(repeated.len(), 1, "{repeated:?}");
    assert_eq!(repeated[0]["count"].as_u64(), Some(forbidden - 1));
    assert_eq!(repeated[0]["rule"], "unknown-operator");
}

/// Issue 10 problem 9: an operator cannot revoke with reason ca-compromise (not in the OpenAPI
/// document; only security staff declare a CA compromised), and nothing changes.
#[test]
fn an_operator_cannot_revoke_for_ca_compromise() {
    let ra = Ra::start();
    let Team { aed, oc, .. } = team(&ra);
    let issued = approved(&ra, (&oc, &aed), "h-cac", &[]);
    let card = issued["card"].as_str().unwrap();
    let fields = format!(r#""card":"{card}","reason":"ca-compromise""#);
    assert_refused(&revoke_with(&ra, &oc, &fields).1, 400, "malformed-request");
    let path = ra.save_certificate(&issued, "authentication", "cac-auth.pem");
    assert!(ra.pki.ocsp_status(&ra.daemon, &path).contains(": good"));
}

/// Review of issue 10: a second card whose subject differs only in case, units or
/// serialNumber is the same person; two operators below the AE cannot take over the AE's card
/// by renewing it.
#[test]
fn variants_of_a_subject_are_one_person_and_operator_cards_are_renewed_from_above_only() {
    let ra = Ra::start();
    let Team { ae, aed, oc, .. } = team(&ra);
    // Chloe's second card with an extra unit and her names in capitals: still Chloe.
    let variant = ra.card_of(
        "aed-variant",
        "operator-aed",
        "card-aed-variant",
        "CHLOE",
        "DURAND",
        &["DAP"],
    );
    assert_one_person(&ra, (&aed, "AED"), (&ae, "AEC"), &variant);
    // The OC asks for a card in the AE's name with keys of its own, or for the renewal of the
    // AE's card: both refused, the AE is above the OC (and the AED who would approve).
    let alice = "/GN=Alice/SN=AUBERT/CN=Alice AUBERT";
    let (_, json) = submit_doc_for(&ra, "operator-ae", alice);
    assert_refused(
        &ra.post(&oc, "/ra/v1/requests", &json),
        403,
        "role-not-allowed",
    );
    let (_, answer) = renew(&ra, &oc, &ae.id, "takeover", alice);
    assert_refused(&answer, 403, "role-not-allowed");
    let (_, answer) = renew(&ra, &aed, &ae.id, "takeover2", alice);
    assert_refused(&answer, 403, "role-not-allowed");
    assert!(ra.pki.ocsp_status(&ra.daemon, &ae.cert).contains(": good"));
    assert_eq!(ra.me(&ae).0, 200);
}

/// Issue 10 problem 6: someone who can write the store swaps the audit key, or cuts the tail of
/// the log: `audit verify` alone cannot tell, `audit verify --anchor` (the key exported by
/// `sceau init`) and `--expect SEQ:HASH` (what the journal logged at a checkpoint) can.
#[test]
fn the_audit_log_is_anchored_outside_the_store() {
    let ra = Ra::start();
    let [op] = chain(&ra);
    let answer: serde_json::Value =
        serde_json::from_str(&ra.pki.sceau_ok(&["audit", "checkpoint"])).unwrap();
    let expect = format!(
        "{}:{}",
        answer["checkpoint"].as_u64().unwrap(),
        answer["hash"].as_str().unwrap()
    );
    // The read commands work beside the running daemon, on what the disk holds: the chain
    // with the checkpoint just signed, the AE's card.
    let anchor = ra.pki.data_dir().join("certs").join("audit-key.pem");
    let anchor = anchor.to_str().unwrap();
    let verified = ra
        .pki
        .sceau_ok(&["audit", "verify", "--anchor", anchor, "--expect", &expect]);
    assert!(verified.contains("audit log verified"), "{verified}");
    let serial = common::serial_of(&op.cert);
    assert_eq!(ra.pki.serial_state(&serial)["state"], "issued");
    assert!(
        ra.pki
            .sceau_ok(&["audit", "export"])
            .contains("operator_designated")
    );
    let Ra { pki, daemon } = ra;
    assert!(daemon.stop().success());
    pki.sceau_ok(&["audit", "verify", "--anchor", anchor, "--expect", &expect]);

    // The tail cut back to before the last checkpoint, the head rewritten: the chain left
    // verifies, but not the entry the journal recorded.
    {
        let store = open_store(&pki);
        let rows = audit_rows(&store);
        let keep = rows.len() - 2;
        let cut: Vec<(u64, Option<Vec<u8>>)> =
            rows[keep..].iter().map(|(seq, _)| (*seq, None)).collect();
        store
            .write_derived::<sceau::store::schema::Audit>(&cut)
            .unwrap();
        let (seq, last) = &rows[keep - 1];
        set_audit_head(&store, *seq, &last[..32]);
    }
    assert!(pki.sceau_ok(&["audit", "verify"]).contains("verified"));
    let text = pki.sceau_fails(&["audit", "verify", "--anchor", anchor, "--expect", &expect]);
    assert!(text.contains("were cut"), "{text}");

    // The key the store records, swapped for another: refused against the anchor.
    // A forger's P-256 key (made by OpenSSL beside a CSR), its public key written by `openssl
    // pkey -pubout` into `file` (in the form `form`).
    pki.csr("forger", common::KeyKind::P256, "/CN=forger");
    let forger = pki.path("forger.key");
    let public_key = |file: &str, form: &[&str]| {
        let out = pki.path(file);
        let mut args = vec!["pkey", "-in", forger.to_str().unwrap(), "-pubout"];
        args.extend_from_slice(form);
        args.extend(["-out", out.to_str().unwrap()]);
        let (ok, text) = openssl(&args);
        assert!(ok, "{text}");
        out
    };
    {
        let store = open_store(&pki);
        let spki = std::fs::read(public_key("forger.spki", &["-outform", "DER"])).unwrap();
        store
            .write_derived::<sceau::store::schema::Meta>(&[("audit-key".to_owned(), Some(spki))])
            .unwrap();
    }
    let text = pki.sceau_fails(&["audit", "verify", "--anchor", anchor]);
    assert!(text.contains("the store's key was replaced"), "{text}");
    // The anchor file swapped as well, for the forger's key: the HSM's key still tells.
    let forged_anchor = public_key("forger-anchor.pem", &[]);
    let text = pki.sceau_fails(&[
        "audit",
        "verify",
        "--anchor",
        forged_anchor.to_str().unwrap(),
    ]);
    assert!(text.contains("in the HSM is not the anchor"), "{text}");
}

/// What an attacker review of the person/card model found, each refused: a look-alike name,
/// a second name under one's own holder id, a renewal submitted before its card became an
/// operator's, the renewal of a revoked card, a card in a superior's name from below, an
/// approval of what a withdrawn operator submitted, and an operator whose designator is gone.
#[test]
fn insiders_cannot_become_two_persons_nor_take_over_cards_from_below() {
    let ra = Ra::start();
    let Team { ae, aec, aed, oc } = team(&ra);
    let all = scope(&[], BOTH);

    // Look-alike names are not issued (an invisible character in the surname).
    let (_, json) = {
        let subject = "/GN=Zoe/SN=DUR\u{200b}AND/CN=Zoe DUR\u{200b}AND";
        submit_doc_for(&ra, "h-zw", subject)
    };
    let answer = ra.post(&oc, "/ra/v1/requests", &json);
    assert_refused(&answer, 422, "policy-violation");
    assert!(
        answer.1["type"]
            .as_str()
            .unwrap_or_default()
            .contains("subject-character"),
        "{answer:?}"
    );

    // A card under the AED's holder id but another name: the holder id is the person too, so
    // it is asked for neither by the AED (its own card) nor from below it.
    let alias = |submitter: &Op| {
        let subject = "/GN=Claire/SN=DUVAL/CN=Claire DUVAL";
        let (_, json) = submit_doc_for(&ra, "operator-aed", subject);
        ra.post(submitter, "/ra/v1/requests", &json)
    };
    assert_refused(&alias(&aed), 403, "own-certificate");
    assert_refused(&alias(&oc), 403, "role-not-allowed");

    // A renewal submitted while the card was an ordinary holder's, approved once the holder is
    // an AEC's equal: the approver is checked against the card as it is now.
    let henri = card_through_ra(&ra, (&oc, &aed), "henri", ("Henri", "MARCHAND"));
    let (stale, answer) = renew(
        &ra,
        &oc,
        &henri.id,
        "henri-takeover",
        "/GN=Henri/SN=MARCHAND/CN=Henri MARCHAND",
    );
    assert_eq!(answer.0, 201, "{answer:?}");
    assert_eq!(designate(&ra, &ae, &henri, "AEC", &all).0, 201);
    assert_refused(
        &decide(&ra, &aed, &stale, "approve"),
        403,
        "role-not-allowed",
    );

    // A revoked card is replaced, never renewed back to life.
    let lost = card_through_ra(&ra, (&oc, &aed), "lost", ("Louis", "PERDU"));
    assert_eq!(revoke_card(&ra, &aed, &lost.id).0, 200);
    assert_refused(
        &renew(
            &ra,
            &oc,
            &lost.id,
            "lost-again",
            "/GN=Louis/SN=PERDU/CN=Louis PERDU",
        )
        .1,
        409,
        "renewal-not-allowed",
    );

    // A new card in the AE's name, asked for from below: refused like its renewal.
    let (_, json) = submit_doc_for(&ra, "h-fake-ae", "/GN=Alice/SN=AUBERT/CN=Alice AUBERT");
    assert_refused(
        &ra.post(&oc, "/ra/v1/requests", &json),
        403,
        "role-not-allowed",
    );

    // What a withdrawn operator submitted is not approved.
    let (pending, answer) = submit(&ra, &oc, "h-pending", &[]);
    assert_eq!(answer.0, 201, "{answer:?}");
    // Withdrawing asked by someone who did not designate: like an operator that does not exist.
    let hidden = withdraw(&ra, &henri, &oc.id, None);
    let missing = withdraw(&ra, &henri, "card-nobody", None);
    assert_refused(&hidden, 404, "not-found");
    assert_refused(&missing, 404, "not-found");
    assert_eq!(
        hidden.1["detail"].as_str().map(|d| d.replace(&oc.id, "X")),
        missing.1["detail"]
            .as_str()
            .map(|d| d.replace("card-nobody", "X"))
    );
    assert_eq!(withdraw(&ra, &aed, &oc.id, None).0, 200);
    assert_refused(
        &decide(&ra, &ae, &pending, "approve"),
        403,
        "operator-withdrawn",
    );

    // An operator whose designator was withdrawn (here written straight into the store, as a
    // designation that raced the cascade would leave it) has no rights.
    let Ra { pki, daemon } = ra;
    assert!(daemon.stop().success());
    {
        let store = open_store(&pki);
        let mut record = store
            .get::<sceau::ra::operators::Operators>(&aec.id)
            .unwrap()
            .unwrap();
        record.withdrawn = Some(sceau::ra::operators::Withdrawal {
            at: sceau::x509::Timestamp::from_unix_seconds(1),
            by: ae.id.clone(),
            by_role: None,
            cascade_from: None,
        });
        store
            .write_derived::<sceau::ra::operators::Operators>(&[(aec.id.clone(), Some(record))])
            .unwrap();
    }
    let daemon = Daemon::start(&pki);
    let ra = Ra { pki, daemon };
    assert_eq!(ra.me(&ae).0, 200);
    assert_refused(&ra.me(&aed), 403, "operator-withdrawn");
}

/// Issue 10 problem 9: a client of the RA listener that sends its headers and then trickles
/// its body (here: holds it back) is answered 408 after the body deadline (10 s), and nothing
/// is written.
#[test]
fn a_held_back_request_body_on_the_ra_listener_is_cut_with_408() {
    use std::io::Write;
    let ra = Ra::start();
    let Team { aed, .. } = team(&ra);
    let entries_before = audit_events_live(&ra);
    // curl uploads its standard input as it comes (chunked): a few bytes, then nothing.
    let out = ra.pki.path("held-back.json");
    let mut child = ra
        .curl_command(Some(&aed), &out)
        .args(["-H", "Content-Type: application/cms"])
        .args(["-X", "POST", "-T", "-"])
        .arg(ra.url("/ra/v1/requests"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\x30\x82\x01").unwrap();
    stdin.flush().unwrap();
    let started = std::time::Instant::now();
    // Held open past the deadline; closed once curl has had its answer.
    std::thread::sleep(std::time::Duration::from_secs(13));
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let status = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let body = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(status, "408", "{body}");
    assert!(body.contains("body-timeout"), "{body}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(10));
    assert_eq!(
        audit_events_live(&ra),
        entries_before,
        "nothing was written"
    );
}

/// A card request for `holder` named `given SURNAME` (extra OUs `units`), signed by `op`:
/// (request id, answer).
fn submit_named(
    ra: &Ra,
    op: &Op,
    holder: &str,
    (given, surname): (&str, &str),
    units: &[&str],
) -> (String, (u16, serde_json::Value)) {
    let extra: String = units.iter().map(|u| format!("/OU={u}")).collect();
    let subject = format!("{extra}/GN={given}/SN={surname}/CN={given} {surname}");
    let auth = ra
        .pki
        .csr(&format!("{holder}-auth"), common::KeyKind::P256, &subject);
    let sign = ra
        .pki
        .csr(&format!("{holder}-sign"), common::KeyKind::P256, &subject);
    let (id, json) = doc(
        "submit",
        &format!(
            r#""holder":"{holder}","authentication_csr":{},"signature_csr":{}"#,
            json_string(&std::fs::read_to_string(auth).unwrap()),
            json_string(&std::fs::read_to_string(sign).unwrap())
        ),
    );
    let answer = ra.post(op, "/ra/v1/requests", &json);
    (id, answer)
}

/// Issue 18 problem 1, as the insider campaign tried it: a look-alike letter makes no second
/// person. Letters outside the repertoire (U+01C0 for I or l, U+01CD for A) are refused by the
/// CA and at submission, naming the attribute and the character; look-alikes inside it ("l"
/// for "I", "AIice" for "Alice", accents) are the same person, so the two-person rule and the
/// rank rules hold.
#[test]
fn look_alike_letters_make_no_second_person() {
    let ra = Ra::start();
    let Team { ae, aec, aed, oc } = team(&ra);
    let all = scope(&[], BOTH);
    let isabelle = ra.operator("isabelle", "Isabelle", "MILLE", &[]);
    assert_eq!(designate(&ra, &aec, &isabelle, "AED", &all).0, 201);

    // The CA refuses a card in a name with U+01C0 or U+01CD, naming the attribute.
    for (name, given, surname, attribute) in [
        ("click", "\u{1c0}sabelle", "MILLE", "GN"),
        ("caron", "Isabelle", "MI\u{1cd}LE", "SN"),
    ] {
        let subject = format!("/GN={given}/SN={surname}/CN={given} {surname}");
        let auth = ra.pki.csr(name, common::KeyKind::P256, &subject);
        let sign = ra
            .pki
            .csr(&format!("{name}-sig"), common::KeyKind::P256, &subject);
        let out = ra.pki.sceau(&[
            "card",
            "issue",
            "--holder",
            &format!("operator-{name}"),
            "--card",
            &format!("card-{name}"),
            "--auth-csr",
            auth.to_str().unwrap(),
            "--sign-csr",
            sign.to_str().unwrap(),
            "--out-dir",
            ra.pki.path(name).to_str().unwrap(),
        ]);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: issued");
        assert!(
            text.contains("subject-character")
                && text.contains(&format!("{attribute} has the character U+01C")),
            "{text}"
        );
    }

    // A look-alike inside the repertoire ("l" for "I") is the same person: no second role.
    let lookalike = ra.operator("lsabelle", "lsabelle", "MILLE", &[]);
    assert_refused(
        &designate(&ra, &aec, &lookalike, "AED", &all),
        409,
        "person-already-operator",
    );
    // Nor does the first approve what the look-alike's card would submit: she is not an
    // operator; and what she submits is not approved by herself under another spelling.
    let (request, answer) = submit(&ra, &isabelle, "h-isabelle", &[]);
    assert_eq!(answer.0, 201, "{answer:?}");
    assert_refused(
        &decide(&ra, &isabelle, &request, "approve"),
        403,
        "own-submission",
    );

    // An OC asks for cards in the names of operators above it: refused whether the name is
    // exact, a look-alike inside the repertoire, or one outside it.
    for (holder, given, surname, status, rule) in [
        ("h-ae-exact", "Alice", "AUBERT", 403, "role-not-allowed"),
        ("h-ae-upper-i", "AIice", "AUBERT", 403, "role-not-allowed"),
        ("h-ae-accent", "Alicé", "ĂUBERT", 403, "role-not-allowed"),
        ("h-aec-caron", "Bruno", "ČARON", 403, "role-not-allowed"),
        (
            "h-ae-click",
            "A\u{1c0}ice",
            "AUBERT",
            422,
            "policy-violation",
        ),
        (
            "h-aec-acaron",
            "Bruno",
            "C\u{1cd}RON",
            422,
            "policy-violation",
        ),
        (
            "h-ae-cyrillic",
            "\u{410}lice",
            "AUBERT",
            422,
            "policy-violation",
        ),
    ] {
        let (_, answer) = submit_named(&ra, &oc, holder, (given, surname), &[]);
        assert_refused(&answer, status, rule);
        if status == 422 {
            let detail = answer.1["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("has the character U+"), "{answer:?}");
        }
    }
    // Legitimate names of a staff list are accepted.
    for (i, (given, surname)) in [
        ("Jean-Baptiste", "D'ARTAGNAN"),
        ("Noémie", "DE LA FONTAINE"),
        ("Łukasz", "DVOŘÁK"),
        ("Ødegaard", "ŒUVRAY"),
        ("Ștefan", "SAINT-EXUPÉRY"),
        ("Siobhán", "O'NEILL"),
    ]
    .into_iter()
    .enumerate()
    {
        let (_, answer) = submit_named(&ra, &oc, &format!("h-staff-{i}"), (given, surname), &[]);
        assert_eq!(answer.0, 201, "{given} {surname}: {answer:?}");
    }
    let _ = (ae, aed);
}

/// Issue 18 problem 2: an operator's request signed with the card's authentication key (which
/// proves presence only) is refused with a named problem, and changes nothing; the signature
/// key (nonRepudiation) signs.
#[test]
fn requests_signed_with_the_authentication_key_are_refused() {
    let ra = Ra::start();
    let Team { aed, oc, .. } = team(&ra);
    let (id, json) = submit_doc(&ra, "h-authkey", &[]);
    let answer = ra.post_signed(&oc, (&oc.cert, &oc.key), "/ra/v1/requests", &json);
    assert_refused(&answer, 403, "signature-key-required");
    assert!(detail(&answer).contains("authentication key"), "{answer:?}");
    assert_refused(
        &ra.get(&aed, &format!("/ra/v1/requests/{id}")),
        404,
        "not-found",
    );
    // The same document signed with the signature key is carried out.
    let answer = ra.post(&oc, "/ra/v1/requests", &json);
    assert_eq!(answer.0, 201, "{answer:?}");
    // An approval signed with the authentication key is refused too.
    let (_, approval) = doc("approve", &format!(r#""request":"{id}""#));
    assert_refused(
        &ra.post_signed(
            &aed,
            (&aed.cert, &aed.key),
            &format!("/ra/v1/requests/{id}/approve"),
            &approval,
        ),
        403,
        "signature-key-required",
    );
}

/// The document of a batch approval of `items` (request id, digest).
fn batch_doc(items: &[(String, String)]) -> (String, String) {
    let listed: Vec<String> = items
        .iter()
        .map(|(id, digest)| format!(r#"{{"request":"{id}","submission_sha256":"{digest}"}}"#))
        .collect();
    doc(
        "approve-batch",
        &format!(r#""requests":[{}]"#, listed.join(",")),
    )
}

/// Issue 18: an AED approves 40 reviewed requests with one signature; each request keeps the
/// batch as its approval's evidence; a retry gets the first answer. A batch with one request
/// out of scope, one whose digest differs, or signed with the authentication key is refused
/// whole, naming the request, and approves nothing.
#[test]
fn a_batch_of_forty_is_approved_with_one_signature_or_refused_whole() {
    let ra = Ra::start();
    let Team { aec, aed, oc, .. } = team(&ra);
    let mut items = Vec::new();
    for i in 0..40 {
        let (id, answer) = submit(&ra, &oc, &format!("h-batch-{i}"), &["DAP"]);
        assert_eq!(answer.0, 201, "{answer:?}");
        let digest = answer.1["submission_sha256"].as_str().unwrap().to_owned();
        assert_eq!(digest.len(), 64);
        items.push((id, digest));
    }
    // What the approver reviews shows the same digest.
    let (status, seen) = ra.get(&aed, &format!("/ra/v1/requests/{}", items[0].0));
    assert_eq!(status, 200);
    assert_eq!(seen["submission_sha256"], items[0].1.as_str());

    // An AED limited to unit DAP; one request of the batch is of unit DSJ.
    let dap = ra.operator("aed-dap", "Denise", "LAMBERT", &["DAP"]);
    assert_eq!(
        designate(&ra, &aec, &dap, "AED", &scope(&["DAP"], BOTH)).0,
        201
    );
    let (dsj, answer) = submit(&ra, &oc, "h-batch-dsj", &["DSJ"]);
    assert_eq!(answer.0, 201, "{answer:?}");
    let dsj_digest = answer.1["submission_sha256"].as_str().unwrap().to_owned();
    let mut with_dsj = items[..5].to_vec();
    with_dsj.push((dsj.clone(), dsj_digest));
    let (_, json) = batch_doc(&with_dsj);
    let answer = ra.post(&dap, "/ra/v1/approvals", &json);
    assert_refused(&answer, 404, "not-found");
    assert!(detail(&answer).contains(&dsj), "{answer:?}");
    // A digest that is not the submission's.
    let mut altered = items[..3].to_vec();
    altered[1].1 = "00".repeat(32);
    let (_, json) = batch_doc(&altered);
    let answer = ra.post(&aed, "/ra/v1/approvals", &json);
    assert_refused(&answer, 409, "submission-digest-mismatch");
    assert!(detail(&answer).contains(&altered[1].0), "{answer:?}");
    // Signed with the authentication key.
    let (_, json) = batch_doc(&items);
    assert_refused(
        &ra.post_signed(&aed, (&aed.cert, &aed.key), "/ra/v1/approvals", &json),
        403,
        "signature-key-required",
    );
    // The submitter's own request in a batch (the OC is no approver; an AED submitting).
    let (own, answer) = submit(&ra, &aed, "h-batch-own", &[]);
    assert_eq!(answer.0, 201, "{answer:?}");
    let own_digest = answer.1["submission_sha256"].as_str().unwrap().to_owned();
    let mut with_own = items[..2].to_vec();
    with_own.push((own, own_digest));
    let (_, own_json) = batch_doc(&with_own);
    assert_refused(
        &ra.post(&aed, "/ra/v1/approvals", &own_json),
        403,
        "own-submission",
    );
    // Too many, or the same request twice.
    let twice = vec![items[0].clone(), items[0].clone()];
    assert_refused(
        &ra.post(&aed, "/ra/v1/approvals", &batch_doc(&twice).1),
        400,
        "malformed-request",
    );
    // Nothing was approved by the refused batches.
    for (id, _) in items
        .iter()
        .chain(std::iter::once(&(dsj.clone(), String::new())))
    {
        let (status, seen) = ra.get(&aed, &format!("/ra/v1/requests/{id}"));
        assert_eq!(status, 200);
        assert_eq!(seen["state"], "pending", "{seen}");
    }

    // The forty, with one signature.
    let (batch, json) = batch_doc(&items);
    let cms = ra.sign(&aed, &json);
    let (status, answer) = ra.post_cms(&aed, "/ra/v1/approvals", &cms);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["approved"], 40, "{answer}");
    let listed = answer["requests"].as_array().unwrap();
    assert_eq!(listed.len(), 40);
    for (entry, (id, _)) in listed.iter().zip(&items) {
        assert_eq!(entry["request"], id.as_str());
        assert_eq!(entry["state"], "issued", "{entry}");
        let serial = entry["authentication"].as_str().unwrap();
        let (status, _) = ra.get(&aed, &format!("/ra/v1/certificates/{serial}"));
        assert_eq!(status, 200);
        let (_, seen) = ra.get(&aed, &format!("/ra/v1/requests/{id}"));
        assert_eq!(seen["state"], "issued");
        assert_eq!(seen["approval"], batch.as_str(), "{seen}");
    }
    // The same bytes again: the first answer, nothing issued twice.
    let (status, again) = ra.post_cms(&aed, "/ra/v1/approvals", &cms);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, answer);
    let events: Vec<serde_json::Value> = ra
        .pki
        .sceau_ok(&["audit", "export"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let approved: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "card_request_approved" && e["approval"] == batch.as_str())
        .collect();
    assert_eq!(approved.len(), 40);
    let issued = events
        .iter()
        .filter(|e| e["event"] == "card_request_issued")
        .count();
    assert_eq!(issued, 40);
}
