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

/// RFC 3339 for `seconds` from now (negative: ago).
fn in_seconds(seconds: i64) -> String {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("{seconds} seconds"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The revocation time `openssl ocsp` prints.
fn revocation_time(status: &str) -> &str {
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix("Revocation Time: "))
        .unwrap_or_else(|| panic!("no revocation time in {status}"))
}

/// Seconds since the epoch of a time `date` reads.
fn unix_time(text: &str) -> i64 {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", text, "+%s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The audit events of the running daemon's store whose `event` is `kind`.
fn events_of(ra: &Ra, kind: &str) -> Vec<serde_json::Value> {
    ra.pki
        .sceau_ok(&["audit", "export"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e.to_string().contains(&format!("\"{kind}\"")))
        .collect()
}

/// Issue 12 problem 1: a departure date. Good until then, revoked at the time (OCSP at once,
/// the CRL within seconds), also across a crash that spanned it (before the daemon says ready);
/// cancellable, listed, audited, and refused out of scope or after expiry.
#[test]
fn a_revocation_at_a_date_runs_on_time_and_survives_a_crash() {
    let ra = Ra::start();
    let team = team(&ra);
    let leaver = card_through_ra(&ra, (&team.oc, &team.aed), "leaver", ("Luc", "LEGRAND"));
    let stayer = card_through_ra(&ra, (&team.oc, &team.aed), "stayer", ("Sara", "SIMON"));
    // An OC of another unit: no card of this team's scope is its business.
    let outsider = ra.operator("outsider", "Omar", "OUTIS", &["DAP"]);
    let dap = scope(&["DAP"], BOTH);
    assert_eq!(designate(&ra, &team.aed, &outsider, "OC", &dap).0, 201);

    let schedule = |op: &Op, card: &str, at: &str| {
        let (id, json) = doc("revoke", &format!(r#""card":"{card}","at":"{at}""#));
        (id, ra.post(op, "/ra/v1/revocations", &json))
    };
    // After the certificates' expiry (3 years): refused, nothing recorded.
    let (_, late) = schedule(&team.oc, "card-leaver", "2040-01-01T00:00:00Z");
    assert_refused(&late, 400, "refused");
    let (_, foreign) = schedule(&outsider, "card-leaver", &in_seconds(60));
    assert_refused(&foreign, 404, "not-found");

    let at = in_seconds(5);
    let (leave_id, scheduled) = schedule(&team.oc, "card-leaver", &at);
    assert_eq!(scheduled.0, 202, "{scheduled:?}");
    assert_eq!(scheduled.1["scheduled"]["reason"], "affiliation-changed");
    let (stay_id, kept) = schedule(&team.oc, "card-stayer", &in_seconds(6));
    assert_eq!(kept.0, 202, "{kept:?}");
    // A card on its way out is not renewed (its new certificates would outlive the departure).
    let (_, renewal) = renew(
        &ra,
        &team.oc,
        "card-leaver",
        "leaver-renewal",
        "/GN=Luc/SN=LEGRAND/CN=Luc LEGRAND",
    );
    assert_refused(&renewal, 409, "renewal-not-allowed");

    // Listed in scope only.
    let listed = ra.get(&team.aed, "/ra/v1/revocations/scheduled");
    assert_eq!(listed.0, 200);
    assert_eq!(list_len(&listed, "scheduled"), Some(2), "{listed:?}");
    let hidden = ra.get(&outsider, "/ra/v1/revocations/scheduled");
    assert_eq!(list_len(&hidden, "scheduled"), Some(0), "{hidden:?}");

    // Cancelled by an operator in scope only.
    let cancel = |op: &Op, id: &str| {
        let (_, json) = doc("cancel-revocation", &format!(r#""scheduled":"{id}""#));
        ra.post(
            op,
            &format!("/ra/v1/revocations/scheduled/{id}/cancel"),
            &json,
        )
    };
    let (aed_id, by_aed) = schedule(&team.aed, "card-stayer", &in_seconds(3600));
    assert_eq!(by_aed.0, 202, "{by_aed:?}");
    assert_refused(&cancel(&team.oc, &aed_id), 403, "role-not-allowed");
    assert_eq!(cancel(&team.aed, &aed_id).0, 200);
    assert_refused(&cancel(&outsider, &stay_id), 404, "not-found");
    let cancelled = cancel(&team.aed, &stay_id);
    assert_eq!(cancelled.0, 200, "{cancelled:?}");
    assert_refused(&cancel(&team.aed, &stay_id), 404, "not-found");

    assert!(
        ra.pki
            .ocsp_status(&ra.daemon, &leaver.cert)
            .contains(": good")
    );
    let (before, _) = ra.pki.served_crl(&ra.daemon, "ac-agents");
    let serial = common::serial_of(&leaver.cert);
    assert!(!before.contains(&serial));

    // At the time: revoked within a second, then the CRL.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ra
        .pki
        .ocsp_status(&ra.daemon, &leaver.cert)
        .contains(": revoked")
    {
        assert!(std::time::Instant::now() < deadline, "not revoked at {at}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = ra.pki.ocsp_status(&ra.daemon, &leaver.sign_cert);
    let late = unix_time(revocation_time(&status)) - unix_time(&at);
    assert!(
        (0..=1).contains(&late),
        "revoked {late} s after {at}: {status}"
    );
    assert!(
        status.contains(": revoked") && status.contains("affiliationChanged"),
        "{status}"
    );
    ra.daemon
        .wait_until("the CRL lists the scheduled revocation", |d| {
            ra.pki.served_crl(d, "ac-agents").0.contains(&serial)
        });
    // The cancelled one stays good past its time.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        ra.pki
            .ocsp_status(&ra.daemon, &stayer.cert)
            .contains(": good")
    );
    let listed = ra.get(&team.aed, "/ra/v1/revocations/scheduled");
    assert_eq!(list_len(&listed, "scheduled"), Some(0), "{listed:?}");

    // A time already past revokes now.
    let (_, now) = schedule(&team.oc, "card-stayer", &in_seconds(-60));
    assert_eq!(now.0, 200, "{now:?}");
    assert_eq!(now.1["revoked"].as_array().map(Vec::len), Some(2));

    // Security staff, on the CA host: scheduled through the running daemon, which is then
    // killed; the time passes while it is down; it revokes before it says ready.
    let third = card_through_ra(&ra, (&team.oc, &team.aed), "third", ("Theo", "TESSIER"));
    let answer = ra
        .pki
        .sceau_ok(&["revoke", "--card", "card-third", "--at", &in_seconds(3)]);
    assert!(answer.contains("\"scheduled\""), "{answer}");
    let listed = ra.pki.sceau_ok(&["scheduled", "list"]);
    assert!(listed.contains("card-third"), "{listed}");
    // Security staff's schedule is undone on the CA host only.
    let staff_id = serde_json::from_str::<serde_json::Value>(&answer).unwrap()["scheduled"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_refused(&cancel(&team.aed, &staff_id), 403, "role-not-allowed");
    let Ra { pki, daemon } = ra;
    daemon.kill_9();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let daemon = common::daemon::Daemon::start(&pki);
    // The first answer after the ready line already says revoked.
    let status = pki.ocsp_status(&daemon, &third.cert);
    assert!(status.contains(": revoked"), "{status}");
    let ra = Ra { pki, daemon };
    ra.daemon
        .wait_until("the CRL lists the card revoked at start", |d| {
            ra.pki
                .served_crl(d, "ac-agents")
                .0
                .contains(&common::serial_of(&third.cert))
        });

    // Audited: scheduling (3 accepted), cancellation, execution.
    assert_eq!(events_of(&ra, "revocation_scheduled").len(), 4);
    let cancelled = events_of(&ra, "scheduled_revocation_cancelled");
    assert_eq!(cancelled.len(), 2);
    assert!(cancelled[1].to_string().contains(&stay_id));
    let executed = events_of(&ra, "scheduled_revocation_executed");
    assert_eq!(executed.len(), 2, "{executed:?}");
    assert!(executed[0].to_string().contains(&leave_id));
}

/// Issue 12 problems 2 and 3: the holder walk-through of docs/holder-example.md runs as written
/// (handover receipt, the holder's card, her renewal approved by an AED, the old certificates
/// superseded, her revocation of the new card); then what a holder must not do, and receipts
/// that must not pass.
#[test]
fn a_holder_manages_her_own_card_and_nothing_else() {
    let ra = Ra::start();
    let (script, out) = ra.run_docs(&["docs/ra-example.md", "docs/holder-example.md"]);
    assert!(script.contains("holder_post"), "no holder blocks");
    assert!(
        out.status.success(),
        "docs/holder-example.md failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let demo = ra.pki.path("ra-demo");
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(demo.join("fanny-card.json")).unwrap()).unwrap();
    assert_eq!(card["state"], "delivered", "{card}");
    assert_eq!(card["certificates"].as_array().map(Vec::len), Some(2));
    assert!(
        card["handover"]["receipt"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    // The attestation is kept: the renewal's evidence, signed by the holder's card.
    let events = ra.pki.sceau_ok(&["audit", "export"]);
    assert!(events.contains("\"card_delivered\""), "no handover event");

    let team = Team {
        ae: op_from_demo(&ra, "ae"),
        aec: op_from_demo(&ra, "aec"),
        aed: op_from_demo(&ra, "aed"),
        oc: op_from_demo(&ra, "oc"),
    };
    let gina = card_through_ra(&ra, (&team.oc, &team.aed), "gina", ("Gina", "GAUTHIER"));
    let hugo = card_through_ra(&ra, (&team.oc, &team.aed), "hugo", ("Hugo", "HAMON"));
    // Garbage on the new entry points: protocol answers, nothing changed.
    let garbage = ra.pki.path("garbage.bin");
    std::fs::write(&garbage, b"\x30\x82\xff\xff not a CMS").unwrap();
    for path in ["/ra/v1/holder/card/renew", "/ra/v1/holder/card/revoke"] {
        assert_refused(
            &ra.post_cms(&gina, path, &garbage),
            400,
            "malformed-request",
        );
    }
    assert_refused(
        &ra.post_cms(&team.oc, "/ra/v1/cards/card-gina/deliver", &garbage),
        400,
        "malformed-request",
    );
    let (_, not_base64) = doc("deliver", r#""card":"card-gina","receipt":"%%%""#);
    assert_refused(
        &ra.post(&team.oc, "/ra/v1/cards/card-gina/deliver", &not_base64),
        400,
        "malformed-request",
    );
    let (_, bad_time) = doc("revoke", r#""card":"card-gina","at":"tomorrow""#);
    assert_refused(
        &ra.post(&team.oc, "/ra/v1/revocations", &bad_time),
        400,
        "malformed-request",
    );
    assert_eq!(ra.get(&gina, "/ra/v1/holder/card").1["state"], "issued");
    assert!(
        ra.pki
            .ocsp_status(&ra.daemon, &gina.cert)
            .contains(": good")
    );

    // A holder is not an operator.
    assert_refused(
        &ra.get(&gina, "/ra/v1/operators/me"),
        403,
        "unknown-operator",
    );
    let (_, revoke_hugo) = doc("revoke", r#""card":"card-hugo","reason":"key-compromise""#);
    assert_refused(
        &ra.post(&gina, "/ra/v1/revocations", &revoke_hugo),
        403,
        "unknown-operator",
    );
    // Nor does she act on another holder's card, nor sign with anything but her card's
    // signature certificate.
    assert_refused(
        &ra.post(&gina, "/ra/v1/holder/card/revoke", &revoke_hugo),
        400,
        "action-mismatch",
    );
    let (_, revoke_own) = doc("revoke", r#""card":"card-gina","reason":"key-compromise""#);
    assert_refused(
        &ra.post_signed(
            &gina,
            (&gina.cert, &gina.key),
            "/ra/v1/holder/card/revoke",
            &revoke_own,
        ),
        403,
        "signature-key-required",
    );
    assert_refused(
        &ra.post_as(&gina, &hugo, "/ra/v1/holder/card/revoke", &revoke_own),
        403,
        "signer-not-client",
    );
    // A scheduled revocation is an operator's.
    let (_, later) = doc(
        "revoke",
        r#""card":"card-gina","at":"2027-06-01T00:00:00Z""#,
    );
    assert_refused(
        &ra.post(&gina, "/ra/v1/holder/card/revoke", &later),
        400,
        "action-mismatch",
    );
    assert!(
        ra.pki
            .ocsp_status(&ra.daemon, &hugo.cert)
            .contains(": good")
    );
    assert!(
        ra.pki
            .ocsp_status(&ra.daemon, &gina.cert)
            .contains(": good")
    );
    // Operators see holders' routes only as holders of their own card.
    let own = ra.get(&team.oc, "/ra/v1/holder/card");
    assert_eq!(own.0, 200, "{own:?}");
    assert_eq!(own.1["card"], "card-oc");

    // Handover receipts: by another key, for another card, then the right one, once.
    let receipt = |signer: (&std::path::Path, &std::path::Path), card: &str| {
        let content = format!(
            r#"{{"receipt":"handover","card":"{card}","time":"{}"}}"#,
            now_rfc3339()
        );
        let cms = ra.sign_with(signer, &content);
        let bytes = std::fs::read(cms).unwrap();
        use std::io::Write;
        let mut b64 = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        b64.stdin.take().unwrap().write_all(&bytes).unwrap();
        String::from_utf8(b64.wait_with_output().unwrap().stdout).unwrap()
    };
    let deliver = |card: &str, receipt: &str| {
        let (_, json) = doc(
            "deliver",
            &format!(r#""card":"{card}","receipt":"{receipt}""#),
        );
        ra.post(&team.oc, &format!("/ra/v1/cards/{card}/deliver"), &json)
    };
    assert_refused(
        &deliver("card-hugo", &receipt((&hugo.cert, &hugo.key), "card-hugo")),
        422,
        "bad-receipt",
    );
    assert_refused(
        &deliver(
            "card-hugo",
            &receipt((&gina.sign_cert, &gina.sign_key), "card-hugo"),
        ),
        422,
        "bad-receipt",
    );
    assert_refused(
        &deliver(
            "card-hugo",
            &receipt((&hugo.sign_cert, &hugo.sign_key), "card-gina"),
        ),
        422,
        "bad-receipt",
    );
    // An operator's card is handed over from above: not by the OC below its AED.
    assert_refused(
        &deliver(
            "card-aed",
            &receipt((&team.aed.sign_cert, &team.aed.sign_key), "card-aed"),
        ),
        403,
        "role-not-allowed",
    );
    let good = receipt((&hugo.sign_cert, &hugo.sign_key), "card-hugo");
    let delivered = deliver("card-hugo", &good);
    assert_eq!(delivered.0, 200, "{delivered:?}");
    assert_refused(&deliver("card-hugo", &good), 409, "card-already-delivered");
    let seen = ra.get(&team.aed, "/ra/v1/cards/card-hugo");
    assert_eq!(seen.1["state"], "delivered", "{seen:?}");
    assert_eq!(seen.1["handover"]["receipt"].as_str(), Some(good.as_str()));
    assert_eq!(ra.get(&hugo, "/ra/v1/holder/card").1["state"], "delivered");
    assert_eq!(ra.get(&gina, "/ra/v1/holder/card").1["state"], "issued");

    // A holder does not backdate the end of her own signatures.
    let (_, backdated) = doc(
        "revoke",
        r#""card":"card-gina","reason":"key-compromise","invalidity_date":"2020-01-01T00:00:00Z""#,
    );
    assert_refused(
        &ra.post(&gina, "/ra/v1/holder/card/revoke", &backdated),
        400,
        "malformed-request",
    );
    // A holder's revocation, retried: one answer, one revocation.
    let signed = ra.sign(&gina, &revoke_own);
    let first = ra.post_cms(&gina, "/ra/v1/holder/card/revoke", &signed);
    assert_eq!(first.0, 200, "{first:?}");
    assert!(
        ra.pki
            .ocsp_status(&ra.daemon, &gina.cert)
            .contains(": revoked")
    );

    // Certificates ending soon, as the metric counts them: seen 45 days before the end of
    // three years, every card issued here ends within 60 and 90 days, none within 30.
    let Ra { pki, daemon } = ra;
    daemon.stop();
    let later = in_seconds(3 * 365 * 86_400 - 45 * 86_400);
    let daemon = common::daemon::Daemon::start_with_env(&pki, &[("SCEAU_NOW", &later)]);
    daemon.wait_until("the expiry counts", |d| {
        d.metric("sceau_certificates_expiring", "{within_days=\"90\"}") > 0
    });
    let within = |days: &str| {
        daemon.metric(
            "sceau_certificates_expiring",
            &format!("{{within_days=\"{days}\"}}"),
        )
    };
    assert_eq!(within("30"), 0);
    assert!(within("60") >= 8, "{}", within("60"));
    assert_eq!(within("60"), within("90"));
}

/// An operator of docs/ra-example.md, from the files it left in `ra-demo`.
fn op_from_demo(ra: &Ra, name: &str) -> Op {
    let demo = ra.pki.path("ra-demo");
    Op {
        name: name.to_owned(),
        key: demo.join(format!("{name}-auth.key")),
        cert: demo.join(format!("{name}-auth.pem")),
        sign_key: demo.join(format!("{name}-sign.key")),
        sign_cert: demo.join(format!("{name}-sign.pem")),
        holder: format!("agent-{name}"),
        id: format!("card-{name}"),
    }
}
