//! Bulk revocation by query, end to end: proposed by one operator, approved by another person
//! in scope, every certificate revoked in one write, OCSP revoked for all of them when the
//! approval returns (OpenSSL asks), one new CRL. Operators sign with `openssl cms`, requests go
//! over mutual TLS with curl, to a real daemon on a real SoftHSM2 token.
mod common;

use std::time::{Duration, Instant};

use common::ra::*;

/// The `crl_published` events for the agents' CA so far.
fn agent_crls(ra: &Ra) -> usize {
    ra.pki
        .sceau_ok(&["audit", "export"])
        .lines()
        .filter(|l| l.contains("crl_published") && l.contains("\"name\":\"ac-agents\""))
        .count()
}

fn propose(ra: &Ra, op: &Op, query: &str, dry_run: bool) -> (u16, serde_json::Value) {
    let (_, json) = doc(
        "propose-bulk-revocation",
        &format!(r#""query":{query},"reason":"affiliation-changed","dry_run":{dry_run}"#),
    );
    ra.post(op, "/ra/v1/bulk-revocations", &json)
}

fn approve(ra: &Ra, op: &Op, bulk: &str, digest: &str) -> (u16, serde_json::Value) {
    let (_, json) = doc(
        "approve-bulk-revocation",
        &format!(r#""bulk":"{bulk}","certificates_sha256":"{digest}""#),
    );
    ra.post(
        op,
        &format!("/ra/v1/bulk-revocations/{bulk}/approve"),
        &json,
    )
}

#[test]
fn a_closing_unit_is_revoked_in_one_reviewed_step_by_two_persons() {
    let ra = Ra::start();
    let team = team(&ra);
    let [aed_dap, oc_dap] = dap_branch(&ra, &team.aec);
    // Twelve cards in the unit DAP (24 certificates), two elsewhere.
    let mut in_dap = Vec::new();
    for i in 0..12 {
        let issued = approved(&ra, (&oc_dap, &team.aed), &format!("dap-{i}"), &["DAP"]);
        in_dap.push(ra.save_certificate(&issued, "authentication", &format!("dap-{i}.pem")));
    }
    let mut elsewhere = Vec::new();
    for i in 0..2 {
        let issued = approved(&ra, (&team.oc, &team.aed), &format!("dsj-{i}"), &["DSJ"]);
        elsewhere.push(ra.save_certificate(&issued, "authentication", &format!("dsj-{i}.pem")));
    }
    let unit = r#"{"units":["DAP"]}"#;

    // Garbage and empty queries change nothing.
    let (status, answer) = propose(&ra, &oc_dap, "{}", true);
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = propose(&ra, &oc_dap, r#"{"units":["DAP"],"colour":"red"}"#, true);
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = propose(&ra, &oc_dap, r#"{"issued_after":"yesterday"}"#, true);
    assert_eq!(status, 400, "{answer}");

    // The dry run lists the unit's 24 certificates: not the DAP operators' own cards, not the
    // other unit's; nothing is recorded.
    let (status, dry) = propose(&ra, &oc_dap, unit, true);
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["count"], 24, "{dry}");
    let listed: Vec<&str> = dry["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["holder"].as_str().unwrap())
        .collect();
    assert!(listed.iter().all(|h| h.starts_with("dap-")), "{listed:?}");
    assert_eq!(count(&audit_events(&ra.pki), "bulk_revocation_proposed"), 0);

    // The proposal freezes the same list.
    let (status, proposal) = propose(&ra, &oc_dap, unit, false);
    assert_eq!(status, 201, "{proposal}");
    let bulk = proposal["bulk"].as_str().unwrap().to_owned();
    let digest = proposal["certificates_sha256"].as_str().unwrap().to_owned();
    assert_eq!(digest, dry["certificates_sha256"].as_str().unwrap());
    let (status, seen) = ra.get(&team.aed, &format!("/ra/v1/bulk-revocations/{bulk}"));
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["certificates"].as_array().unwrap().len(), 24);

    // Refused, each changing nothing: an OC approves nothing; a wrong digest; the proposer's
    // own approval (an AED proposing, the same AED approving); an approver whose scope lacks a
    // certificate of the list (a full-scope proposal, approved by the unit's AED).
    assert_refused(
        &approve(&ra, &oc_dap, &bulk, &digest),
        403,
        "role-not-allowed",
    );
    let wrong = "0".repeat(64);
    assert_refused(
        &approve(&ra, &team.aed, &bulk, &wrong),
        409,
        "submission-digest-mismatch",
    );
    let (_, own) = propose(&ra, &aed_dap, unit, false);
    let own_bulk = own["bulk"].as_str().unwrap();
    let own_digest = own["certificates_sha256"].as_str().unwrap();
    assert_refused(
        &approve(&ra, &aed_dap, own_bulk, own_digest),
        403,
        "own-submission",
    );
    let (_, wide) = propose(&ra, &team.oc, r#"{"units":["DAP","DSJ"]}"#, false);
    assert_eq!(wide["count"], 28, "{wide}");
    let answer = approve(
        &ra,
        &aed_dap,
        wide["bulk"].as_str().unwrap(),
        wide["certificates_sha256"].as_str().unwrap(),
    );
    assert_refused(&answer, 404, "not-found");
    // The list outside its scope is as unknown to the unit's AED as no list at all.
    let (status, _) = ra.get(
        &aed_dap,
        &format!("/ra/v1/bulk-revocations/{}", wide["bulk"].as_str().unwrap()),
    );
    assert_eq!(status, 404);
    assert_eq!(count(&audit_events(&ra.pki), "certificate_revoked"), 0);
    for certificate in &in_dap {
        assert!(
            ra.pki
                .ocsp_status(&ra.daemon, certificate)
                .contains(": good")
        );
    }

    // Approved by another person in scope: all 24 revoked when the answer comes.
    let crls_before = agent_crls(&ra);
    let (status, done) = approve(&ra, &team.aed, &bulk, &digest);
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "revoked");
    assert_eq!(done["revoked"], 24);
    for certificate in &in_dap {
        let said = ra.pki.ocsp_status(&ra.daemon, certificate);
        assert!(said.contains(": revoked"), "{said}");
    }
    for certificate in &elsewhere {
        assert!(
            ra.pki
                .ocsp_status(&ra.daemon, certificate)
                .contains(": good")
        );
    }
    // One audit event per certificate, naming the approver and the bulk; one approval event.
    let events = audit_events(&ra.pki);
    let by_bulk = events
        .iter()
        .filter(|e| {
            e["event"] == "certificate_revoked"
                && e["requested_by"] == format!("operator:{} bulk:{bulk}", team.aed.id)
        })
        .count();
    assert_eq!(by_bulk, 24);
    assert_eq!(count(&events, "bulk_revocation_approved"), 1);
    // One new CRL for the agents' CA (the publisher is woken once for the whole list).
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent_crls(&ra) == crls_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent_crls(&ra), crls_before + 1);
    // A holder on a frozen list who becomes an operator above the approver before the
    // approval: their card is revoked from above only, so the whole list is refused.
    let issued = approved(&ra, (&team.oc, &team.aed), "xfer-0", &["XFER"]);
    let card = issued["card"].as_str().unwrap().to_owned();
    let promoted = ra.card_from(&issued, "xfer-0", "xfer-0", &card);
    let (_, later) = propose(&ra, &team.oc, r#"{"units":["XFER"]}"#, false);
    assert_eq!(later["count"], 2, "{later}");
    let answer = designate(&ra, &team.ae, &promoted, "AEC", &scope(&[], BOTH));
    assert_eq!(answer.0, 201, "{answer:?}");
    let (status, refused) = approve(
        &ra,
        &team.aed,
        later["bulk"].as_str().unwrap(),
        later["certificates_sha256"].as_str().unwrap(),
    );
    assert_eq!(status, 403, "{refused}");
    assert!(
        ra.pki
            .ocsp_status(&ra.daemon, &promoted.cert)
            .contains(": good")
    );

    // Done once: a second approval is refused.
    assert_refused(
        &approve(&ra, &team.aed, &bulk, &digest),
        409,
        "request-not-pending",
    );
}
