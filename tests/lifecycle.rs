//! The card lifecycle of the conventions (issue 12): retries of signed requests, revocations at
//! a date, holder self-service, handover receipts. A real daemon on a real SoftHSM2 token,
//! requests signed by `openssl cms` and sent by `curl` over mutual TLS.
mod common;

use common::ra::*;

/// A card management system resends after a timeout: the same signed bytes get the same answer
/// and change nothing; the same id with other bytes is a replay. Two copies sent at once both
/// get the one answer.
#[test]
fn a_retried_request_gets_its_first_answer_and_changes_nothing() {
    let ra = Ra::start();
    let team = team(&ra);

    let (request, json) = submit_doc(&ra, "agent-retry", &[]);
    let submitted = ra.sign(&team.oc, &json);
    let first = ra.post_cms(&team.oc, "/ra/v1/requests", &submitted);
    assert_eq!(first.0, 201, "{first:?}");
    let events = audit_events_live(&ra);
    let again = ra.post_cms(&team.oc, "/ra/v1/requests", &submitted);
    assert_eq!(again, first, "a retry of a submission");
    assert_eq!(
        audit_events_live(&ra),
        events,
        "a retry wrote to the audit log"
    );

    // The same id, other bytes (a new signature over the same content differs too: here the
    // content differs): a replay.
    let tampered = json.replace("agent-retry", "agent-other");
    assert_refused(
        &ra.post(&team.oc, "/ra/v1/requests", &tampered),
        409,
        "replayed-request",
    );

    // An approval sent twice at once, then once more: one card, one answer.
    let (_, approve) = doc("approve", &format!(r#""request":"{request}""#));
    let approval = ra.sign(&team.aed, &approve);
    let path = format!("/ra/v1/requests/{request}/approve");
    let answers: Vec<_> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| ra.post_cms(&team.aed, &path, &approval)))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(answers[0].0, 200, "{answers:?}");
    assert_eq!(answers[0], answers[1], "two copies of one approval at once");
    let issued = &answers[0].1;
    assert_eq!(issued["state"], "issued");
    let events = audit_events_live(&ra);
    assert_eq!(ra.post_cms(&team.aed, &path, &approval), answers[0]);
    assert_eq!(audit_events_live(&ra), events);
    let (status, state) = ra.get(&team.aed, &format!("/ra/v1/requests/{request}"));
    assert_eq!(status, 200);
    assert_eq!(
        state["authentication"]["serial"], issued["authentication"]["serial"],
        "the request names the certificates of the first answer: {state}"
    );

    // A revocation retried: the same answer (the revocation time of the first), nothing new.
    let card = issued["card"].as_str().unwrap();
    let (_, revoke) = doc(
        "revoke",
        &format!(r#""card":"{card}","reason":"key-compromise""#),
    );
    let revocation = ra.sign(&team.oc, &revoke);
    let first = ra.post_cms(&team.oc, "/ra/v1/revocations", &revocation);
    assert_eq!(first.0, 200, "{first:?}");
    assert_eq!(first.1["revoked"].as_array().map(Vec::len), Some(2));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let events = audit_events_live(&ra);
    assert_eq!(
        ra.post_cms(&team.oc, "/ra/v1/revocations", &revocation),
        first
    );
    assert_eq!(audit_events_live(&ra), events);

    // A retry is answered to the same client only: another operator sending the bytes is
    // refused as for any request not signed by its own card.
    assert_refused(
        &ra.post_cms(&team.aed, "/ra/v1/revocations", &revocation),
        403,
        "signer-not-client",
    );
}
