//! The M-of-N check of a key ceremony (issue 21), against approvals made as an officer makes
//! them: `openssl cms -sign -binary -nodetach` over the proposal's canonical bytes, with the
//! signature key of their card (here P-256 keys and certificates made by OpenSSL). Each way of
//! cheating the issue lists is tried and refused; M valid approvals of M persons pass.
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::officers::{approve, card, card_with_key};
use sceau::ca::ceremony::control::Outcome;
use sceau::ca::ceremony::quorum::{
    self, Context, Officer, OfficerSet, Operation, PROPOSAL_KIND, Proposal, QuorumError,
};
use sceau::ca::ceremony::transcript::{self, TranscriptBody, TranscriptError};
use sceau::x509::Timestamp;

const HEAD: &str = "41:9f2c";
const CA: &str = "ca-7d1e";

/// A proposal made at `at`, valid for an hour.
fn proposal(id: &str, at: u64) -> Proposal {
    let mut parameters = BTreeMap::new();
    parameters.insert("algorithm".to_owned(), "p384".to_owned());
    parameters.insert("label".to_owned(), "ac-agents-2".to_owned());
    Proposal {
        kind: PROPOSAL_KIND.to_owned(),
        ca: CA.to_owned(),
        id: id.to_owned(),
        operation: Operation::RotateIssuing,
        parameters,
        audit_head: HEAD.to_owned(),
        proposed_at: Timestamp::from_unix_seconds(at),
        expires_at: Timestamp::from_unix_seconds(at + 3600),
    }
}

#[test]
fn a_ceremony_runs_only_with_a_quorum_of_distinct_active_officers_approving_those_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let alice = card(d, "alice", "/GN=Alice/SN=AUBERT/CN=Alice AUBERT", "365");
    let bruno = card(d, "bruno", "/GN=Bruno/SN=BLANC/CN=Bruno BLANC", "365");
    let chloe = card(d, "chloe", "/GN=Chloé/SN=DURAND/CN=Chloé DURAND", "365");
    // Alice's second card, under a look-alike spelling of her name: the same person.
    let alice2 = card(d, "alice2", "/GN=ALICE/SN=Aubert/CN=ALICE Aubert", "365");
    // Someone who is not an officer (an RA operator's card, say).
    let outsider = card(
        d,
        "outsider",
        "/GN=Olivier/SN=OPERATEUR/CN=Olivier OPERATEUR",
        "365",
    );
    let officer = |c: &(PathBuf, PathBuf, Vec<u8>)| Officer::from_certificate(&c.2).unwrap();
    let mut withdrawn = officer(&chloe);
    withdrawn.active = false;

    // The set itself: two persons at least, each once, a quorum the active officers reach.
    assert!(matches!(
        OfficerSet::new(2, vec![officer(&alice), officer(&alice2), officer(&bruno)]),
        Err(QuorumError::SamePerson(_))
    ));
    assert!(matches!(
        OfficerSet::new(1, vec![officer(&alice), officer(&bruno)]),
        Err(QuorumError::Quorum { .. })
    ));
    assert!(matches!(
        OfficerSet::new(3, vec![officer(&alice), officer(&bruno), withdrawn.clone()]),
        Err(QuorumError::Quorum { .. })
    ));
    let set = OfficerSet::new(2, vec![officer(&alice), officer(&bruno), officer(&chloe)]).unwrap();

    let at = Timestamp::now().unix_seconds();
    let p = proposal("p-1", at);
    let bytes = p.canonical_bytes();
    assert_eq!(Proposal::from_canonical_bytes(&bytes).unwrap(), p);
    let mut spaced = b" ".to_vec();
    spaced.extend_from_slice(&bytes);
    assert!(
        Proposal::from_canonical_bytes(&spaced).is_err(),
        "only canonical bytes are read"
    );

    let by = |c: &(PathBuf, PathBuf, Vec<u8>), what: &[u8]| approve(d, (&c.0, &c.1), what);
    let (a, b, c) = (by(&alice, &bytes), by(&bruno, &bytes), by(&chloe, &bytes));
    let now = Timestamp::from_unix_seconds(at + 100);
    let none = |_: &str| false;
    let not_revoked = |_: &[u8]| false;
    let context = Context {
        now,
        ca: CA,
        audit_head: HEAD,
        carried_out: &none,
        revoked: &not_revoked,
    };
    let run =
        |approvals: &[Vec<u8>], context: &Context<'_>| quorum::check(&p, approvals, &set, context);

    // M valid approvals of M persons: passes, naming who approved.
    let approved = run(&[a.clone(), b.clone()], &context).unwrap();
    assert_eq!(approved.len(), 2);
    assert_ne!(approved[0].person, approved[1].person);
    assert!(run(&[c.clone(), a.clone(), b.clone()], &context).is_ok());

    // M-1 approvals.
    assert_eq!(
        run(std::slice::from_ref(&a), &context).unwrap_err(),
        QuorumError::TooFew { have: 1, need: 2 }
    );
    // One person twice: the same approval again, or their second card.
    assert!(matches!(
        run(&[a.clone(), a.clone()], &context),
        Err(QuorumError::SamePerson(_))
    ));
    let set_with_second_card = OfficerSet {
        quorum: 2,
        officers: vec![officer(&alice), officer(&bruno), officer(&alice2)],
    };
    assert!(matches!(
        quorum::check(
            &p,
            &[a.clone(), by(&alice2, &bytes)],
            &set_with_second_card,
            &context
        ),
        Err(QuorumError::SamePerson(_))
    ));
    // Someone who is not an officer.
    assert_eq!(
        run(&[a.clone(), by(&outsider, &bytes)], &context).unwrap_err(),
        QuorumError::NotAnOfficer { index: 1 }
    );
    // A withdrawn officer counts no more.
    let with_withdrawn = OfficerSet {
        quorum: 2,
        officers: vec![officer(&alice), officer(&bruno), withdrawn],
    };
    assert_eq!(
        quorum::check(&p, &[a.clone(), c.clone()], &with_withdrawn, &context).unwrap_err(),
        QuorumError::NotAnOfficer { index: 1 }
    );
    // A revoked officer's card.
    let bruno_der = bruno.2.clone();
    let bruno_revoked = move |der: &[u8]| der == bruno_der.as_slice();
    let revoked_context = Context {
        revoked: &bruno_revoked,
        ..context
    };
    assert_eq!(
        run(&[a.clone(), b.clone()], &revoked_context).unwrap_err(),
        QuorumError::NotAnOfficer { index: 1 }
    );
    // An approval of another proposal, or replayed from an earlier ceremony.
    let other = proposal("p-0", at).canonical_bytes();
    assert_eq!(
        run(&[a.clone(), by(&bruno, &other)], &context).unwrap_err(),
        QuorumError::OtherProposal { index: 1 }
    );
    // A byte changed in an approval.
    let mut tampered = b.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    match run(&[a.clone(), tampered], &context) {
        Err(QuorumError::Approval { index: 1, reason }) => {
            assert!(reason.starts_with("signature"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // After expiry; after the audit head moved; once carried out.
    let refused_in = |changed: Context<'_>| run(&[a.clone(), b.clone()], &changed).unwrap_err();
    let now = Timestamp::from_unix_seconds(at + 3600);
    let late = refused_in(Context { now, ..context });
    assert!(matches!(late, QuorumError::Expired(_)), "{late}");
    let audit_head = "42:77aa";
    let moved = refused_in(Context {
        audit_head,
        ..context
    });
    assert!(matches!(moved, QuorumError::HeadMoved { .. }), "{moved}");
    let carried_out = |id: &str| id == "p-1";
    let carried_out = &carried_out;
    let replayed = refused_in(Context {
        carried_out,
        ..context
    });
    assert!(
        matches!(replayed, QuorumError::AlreadyCarriedOut(_)),
        "{replayed}"
    );
    // A proposal for another CA (approvals gathered on a rehearsal instance).
    let elsewhere = refused_in(Context {
        ca: "ca-rehearsal",
        ..context
    });
    assert!(
        matches!(elsewhere, QuorumError::OtherCa { .. }),
        "{elsewhere}"
    );
    // An officer whose card has expired: the card lives a day, the ceremony is two days on.
    let expired_card = card(d, "expired", "/GN=Eve/SN=EXPIREE/CN=Eve EXPIREE", "1");
    let with_expired = OfficerSet::new(2, vec![officer(&alice), officer(&expired_card)]).unwrap();
    let later = at + 2 * 86_400;
    let in_two_days = Context {
        now: Timestamp::from_unix_seconds(later + 100),
        ..context
    };
    let fresh = proposal("p-2", later);
    let fresh_bytes = fresh.canonical_bytes();
    assert_eq!(
        quorum::check(
            &fresh,
            &[by(&alice, &fresh_bytes), by(&expired_card, &fresh_bytes)],
            &with_expired,
            &in_two_days,
        )
        .unwrap_err(),
        QuorumError::NotAnOfficer { index: 1 }
    );

    // Approvals kept for later: a proposal meant to wait more than a day, or made ahead of
    // this host's clock.
    for (proposed_at, expires_at) in [(at, at + 3 * 86_400), (at + 3600, at + 7200)] {
        let odd = Proposal {
            proposed_at: Timestamp::from_unix_seconds(proposed_at),
            expires_at: Timestamp::from_unix_seconds(expires_at),
            ..proposal("p-3", at)
        };
        let odd_bytes = odd.canonical_bytes();
        let approvals = [by(&alice, &odd_bytes), by(&bruno, &odd_bytes)];
        assert!(matches!(
            quorum::check(&odd, &approvals, &set, &context),
            Err(QuorumError::Times(_))
        ));
    }
    // A set loaded from somewhere with a quorum of one (or none) is not trusted.
    let loose = OfficerSet {
        quorum: 1,
        officers: vec![officer(&alice), officer(&bruno)],
    };
    assert!(matches!(
        quorum::check(&p, std::slice::from_ref(&a), &loose, &context),
        Err(QuorumError::Quorum { .. })
    ));
    // Garbage: bytes that are no JSON, an approval that is no CMS, a certificate that is none.
    assert!(Proposal::from_canonical_bytes(b"\xff\x00 not json").is_err());
    assert!(matches!(
        run(&[a.clone(), vec![0x30, 0x03, 1, 2, 3]], &context),
        Err(QuorumError::Approval { index: 1, .. })
    ));
    assert!(matches!(
        Officer::from_certificate(b"-----BEGIN CERTIFICATE-----"),
        Err(QuorumError::Malformed(_))
    ));
    // Bytes that are not a ceremony proposal, or carry a field more.
    let mut not_a_proposal: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    not_a_proposal["kind"] = "sceau-ra-request".into();
    let text = serde_json::to_vec(&not_a_proposal).unwrap();
    assert!(Proposal::from_canonical_bytes(&text).is_err());
    let mut extra: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    extra["note"] = "also destroy the root".into();
    assert!(Proposal::from_canonical_bytes(&serde_json::to_vec(&extra).unwrap()).is_err());

    // A transcript of this ceremony, sealed by a P-256 key as the audit key seals it: it
    // verifies; re-sealed (as only the audit key could) with an approval removed, or with the
    // quorum lowered to what is left, it is refused on the approvals themselves.
    let transcript = |approvals: &[&Vec<u8>], officers: &OfficerSet| TranscriptBody {
        ca: CA.to_owned(),
        id: p.id.clone(),
        operation: p.operation.as_str().to_owned(),
        proposal: bytes.clone(),
        approvals: approvals.iter().map(|a| base64_encode(a)).collect(),
        officers: officers.clone(),
        approved_by: approved.clone(),
        claimed_at: Timestamp::from_unix_seconds(at + 100),
        audit_approved: 10,
        audit_finished: 12,
        outcome: Outcome {
            succeeded: true,
            details: BTreeMap::new(),
            finished_at: Timestamp::from_unix_seconds(at + 100),
        },
    };
    let (seal, anchor) = software_audit_key();
    let whole = transcript::seal(&transcript(&[&a, &b], &set), &seal).unwrap();
    assert_eq!(
        transcript::verify(&whole, &anchor)
            .unwrap()
            .approved_by
            .len(),
        2
    );
    let fewer = transcript::seal(&transcript(&[&a], &set), &seal).unwrap();
    assert!(matches!(
        transcript::verify(&fewer, &anchor),
        Err(TranscriptError::Quorum(QuorumError::TooFew {
            have: 1,
            need: 2
        }))
    ));
    let lowered = OfficerSet {
        quorum: 1,
        officers: set.officers.clone(),
    };
    let lowered = transcript::seal(&transcript(&[&a], &lowered), &seal).unwrap();
    assert!(matches!(
        transcript::verify(&lowered, &anchor),
        Err(TranscriptError::Quorum(QuorumError::Quorum { .. }))
    ));
    // Another key's seal, and a byte changed under the right one.
    let (other, _) = software_audit_key();
    let foreign = transcript::seal(&transcript(&[&a, &b], &set), &other).unwrap();
    assert!(matches!(
        transcript::verify(&foreign, &anchor),
        Err(TranscriptError::Signature)
    ));
    let mut file: serde_json::Value = serde_json::from_slice(&whole).unwrap();
    let body = file["body"].as_str().unwrap().replace('A', "B");
    file["body"] = body.into();
    assert!(transcript::verify(&serde_json::to_vec(&file).unwrap(), &anchor).is_err());
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A P-256 key in software standing for the HSM's audit key: how it signs, and its public key.
fn software_audit_key() -> (
    impl Fn(&[u8]) -> Result<Vec<u8>, String>,
    spki::SubjectPublicKeyInfoOwned,
) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    let spki =
        sceau::x509::keys::ec_spki(sceau::x509::keys::Curve::P256, key.public_key().as_ref())
            .unwrap();
    let sign = move |message: &[u8]| {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        key.sign(&rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| e.to_string())
    };
    (sign, spki)
}

/// Who counts as one person among officers: the same names with and without a country, the
/// same key under two certificates, and a card naming nobody in particular.
#[test]
fn an_officer_set_counts_each_person_and_each_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let officer = |c: &(PathBuf, PathBuf, Vec<u8>)| Officer::from_certificate(&c.2).unwrap();
    let bruno = card(d, "bruno", "/GN=Bruno/SN=BLANC/CN=Bruno BLANC", "365");
    let bruno_fr = card(
        d,
        "bruno-fr",
        "/C=FR/GN=Bruno/SN=BLANC/CN=Bruno BLANC",
        "365",
    );
    let alice = card(d, "alice", "/GN=Alice/SN=AUBERT/CN=Alice AUBERT", "365");
    assert!(matches!(
        OfficerSet::new(
            2,
            vec![officer(&bruno), officer(&bruno_fr), officer(&alice)]
        ),
        Err(QuorumError::SamePerson(_))
    ));
    // Another name on Alice's key.
    let borrowed = card_with_key(
        d,
        "borrowed",
        "/GN=Denis/SN=DUPUIS/CN=Denis DUPUIS",
        "365",
        Some(&alice.0),
    );
    assert!(matches!(
        OfficerSet::new(
            2,
            vec![officer(&alice), officer(&borrowed), officer(&bruno)]
        ),
        Err(QuorumError::SharedKey(_))
    ));
    // A common name only: it could be anyone's second card.
    let anonymous = card(d, "anonymous", "/CN=Officer 3", "365");
    assert!(matches!(
        Officer::from_certificate(&anonymous.2),
        Err(QuorumError::Malformed(_))
    ));
}
