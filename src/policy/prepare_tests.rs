//! `prepare` and the lints on the CSR fixtures of tests/fixtures/csr (see make.sh there for how
//! each was made and what is odd about it). No HSM and no store: policies are pure functions.
use std::path::Path;

use super::*;
use crate::x509::name::DistinguishedName;
use crate::x509::sigalg::SignatureScheme;
use crate::x509::{Serial, Timestamp};

fn policies() -> PolicySet {
    PolicySet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap()
}

fn csr(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/csr")
            .join(format!("{name}.csr")),
    )
    .unwrap()
}

fn issuer() -> IssuerProfile {
    let mut dn = DistinguishedName::new();
    dn.push(Attribute::Country, "FR")
        .push(Attribute::Organization, "MINISTERE DE LA JUSTICE TEST")
        .push(Attribute::OrganizationalUnit, "0002 123456789")
        .push(Attribute::CommonName, "AC AGENTS JUSTICE TEST");
    IssuerProfile {
        subject_der: dn.to_der().unwrap(),
        key_identifier: [7; 20],
        not_after: Timestamp::parse_rfc3339("2036-11-25T00:00:00Z").unwrap(),
        signature_algorithm: SignatureScheme::EcdsaP384Sha384
            .algorithm_identifier()
            .unwrap(),
        crl_url: "http://pki.justice.example.fr/crl/ac-agents.crl".into(),
        ocsp_url: "http://ocsp.pki.justice.example.fr".into(),
        ca_issuers_url: "http://pki.justice.example.fr/ca/ac-agents.crt".into(),
        cps_url: "https://pki.justice.example.fr/pc/".into(),
    }
}

fn at(time: &str) -> Timestamp {
    Timestamp::parse_rfc3339(time).unwrap()
}

const NOW: &str = "2026-11-25T10:00:00Z";

fn run(
    policy: &str,
    fixture: &str,
    now: &str,
    not_after: Option<&str>,
) -> Result<LintedTbs, Rejection> {
    let set = policies();
    let request = IssuanceRequest {
        policy: policy.into(),
        csr: csr(fixture),
        subject: None,
        not_after: not_after.map(at),
    };
    prepare(
        set.get(policy).unwrap(),
        &issuer(),
        &request,
        Serial::random().unwrap(),
        at(now),
    )
}

fn refused(policy: &str, fixture: &str, now: &str, not_after: Option<&str>, rule: &str) {
    match run(policy, fixture, now, not_after) {
        Ok(_) => panic!("{fixture} under {policy} was accepted; expected [{rule}]"),
        Err(rejection) => assert!(
            rejection.breaks(rule),
            "{fixture}: expected [{rule}], got {rejection}"
        ),
    }
}

#[test]
fn good_requests_give_linted_tbs_under_both_policies() {
    for fixture in ["p256", "p384", "rsa3072"] {
        for policy in ["justice-auth", "justice-sign"] {
            let tbs = run(policy, fixture, NOW, None)
                .unwrap_or_else(|e| panic!("{fixture}/{policy}: {e}"));
            assert_eq!(tbs.not_before(), at(NOW));
            // 3 years minus one second: the period is at most 3 years, bounds included.
            assert_eq!(tbs.not_after(), at("2029-11-25T09:59:59Z"));
            assert!(lint_tbs(policies().get(policy).unwrap(), &issuer(), tbs.der()).is_empty());
        }
    }
}

#[test]
fn rsa_2048_only_for_certificates_that_end_by_2030() {
    run("justice-auth", "rsa2048", NOW, None).expect("ends 2029-11-25: allowed");
    refused(
        "justice-auth",
        "rsa2048",
        "2028-06-01T00:00:00Z",
        None,
        "key-not-allowed",
    );
}

#[test]
fn each_policy_violation_names_its_rule() {
    refused("justice-auth", "rsa1024", NOW, None, "key-not-allowed");
    refused(
        "justice-auth",
        "no-gn",
        NOW,
        None,
        "subject-attribute-missing",
    );
    refused(
        "justice-sign",
        "no-sn",
        NOW,
        None,
        "subject-attribute-missing",
    );
    refused(
        "justice-auth",
        "email",
        NOW,
        None,
        "subject-attribute-forbidden",
    );
    refused(
        "justice-auth",
        "san",
        NOW,
        None,
        "subject-alt-name-forbidden",
    );
    refused("justice-auth", "cn-order", NOW, None, "subject-common-name");
    refused("justice-auth", "country-de", NOW, None, "subject-country");
    refused("justice-auth", "bad-signature", NOW, None, "csr-signature");
    refused("justice-auth", "non-utf8", NOW, None, "subject-encoding");
    refused("justice-auth", "bmp-cn", NOW, None, "subject-encoding");
    refused("justice-auth", "zero-width", NOW, None, "subject-character");
    refused("justice-sign", "cyrillic", NOW, None, "subject-character");
    refused(
        "justice-auth",
        "p256",
        NOW,
        Some("2029-11-25T10:00:00Z"),
        "validity-too-long",
    );
    refused(
        "justice-auth",
        "p256",
        NOW,
        Some("2026-11-25T09:00:00Z"),
        "validity-empty",
    );
    // Three years from 2034 end after the issuing CA (2036-11-25).
    refused(
        "justice-auth",
        "p256",
        "2034-01-01T00:00:00Z",
        None,
        "validity-beyond-issuer",
    );
}

#[test]
fn a_refusal_lists_every_broken_rule() {
    let rejection = run(
        "justice-auth",
        "rsa1024",
        "2028-06-01T00:00:00Z",
        Some("2032-01-01T00:00:00Z"),
    )
    .unwrap_err();
    assert!(rejection.breaks("key-not-allowed"));
    assert!(rejection.breaks("validity-too-long"));
    let message = rejection.to_string();
    assert!(
        message.starts_with("policy justice-auth refused the request: "),
        "{message}"
    );
}

#[test]
fn a_garbage_csr_is_refused_as_malformed() {
    let set = policies();
    for garbage in [
        &b""[..],
        b"not a csr",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        &[0x30, 0x82, 0xff, 0xff],
    ] {
        let request = IssuanceRequest {
            policy: "justice-auth".into(),
            csr: garbage.to_vec(),
            ..Default::default()
        };
        let rejection = prepare(
            set.get("justice-auth").unwrap(),
            &issuer(),
            &request,
            Serial::random().unwrap(),
            at(NOW),
        )
        .unwrap_err();
        assert!(rejection.breaks("csr-malformed"), "{rejection}");
    }
}

#[test]
fn lints_catch_a_tbs_made_for_another_policy() {
    let set = policies();
    let tbs = run("justice-auth", "p256", NOW, None).unwrap();
    // An authentication TBS presented as a signature certificate: wrong key usage, an EKU the
    // signature policy does not have, the wrong policy OID, no qcStatements.
    let findings = lint_tbs(set.get("justice-sign").unwrap(), &issuer(), tbs.der());
    let rules: Vec<_> = findings.iter().map(|f| f.rule).collect();
    for expected in [
        "lint:key-usage",
        "lint:extended-key-usage",
        "lint:certificate-policies",
        "lint:extensions-set",
    ] {
        assert!(rules.contains(&expected), "missing {expected} in {rules:?}");
    }
    // And against another issuer: the issuer bytes and the AKI are not that CA's.
    let mut other = issuer();
    other.subject_der = DistinguishedName::new()
        .push(Attribute::CommonName, "Other CA")
        .to_der()
        .unwrap();
    other.key_identifier = [9; 20];
    let rules: Vec<_> = lint_tbs(set.get("justice-auth").unwrap(), &other, tbs.der())
        .iter()
        .map(|f| f.rule)
        .collect();
    assert!(
        rules.contains(&"lint:issuer-bytes") && rules.contains(&"lint:key-identifiers"),
        "{rules:?}"
    );
}

#[test]
fn lints_refuse_bytes_that_are_not_a_tbs() {
    let set = policies();
    let findings = lint_tbs(
        set.get("justice-auth").unwrap(),
        &issuer(),
        b"\x30\x03\x02\x01\x01",
    );
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].rule, "lint:decodes");
}

/// Issue 10 problem 4: one validity rule for issuance, renewal and the lint, at dates whose
/// three years span a 29 February (1,096 days) or not, start on one, or end near one. The
/// latest notAfter the policy allows is accepted as an explicit notAfter (what a renewal asks
/// for), and one second more is refused.
#[test]
fn the_longest_validity_is_one_rule_at_every_date() {
    let set = policies();
    for now in [
        "2026-11-28T21:39:52Z",
        "2027-03-01T00:00:00Z",
        "2028-02-29T12:00:00Z",
        "2029-02-28T23:59:59Z",
        "2030-06-15T08:00:00Z",
    ] {
        for policy in ["justice-auth", "justice-sign"] {
            let latest = set.get(policy).unwrap().latest_not_after(at(now)).unwrap();
            let text = latest.to_string();
            let tbs = run(policy, "p256", now, Some(&text))
                .unwrap_or_else(|e| panic!("{policy} at {now}, notAfter {text}: {e}"));
            assert_eq!(tbs.not_after(), latest);
            assert_eq!(run(policy, "p256", now, None).unwrap().not_after(), latest);
            let over = latest.plus_seconds(1).to_string();
            refused(policy, "p256", now, Some(&over), "validity-too-long");
        }
    }
    // Three calendar years that include 29 February 2028 are 1,096 days (less one second).
    let latest = set
        .get("justice-auth")
        .unwrap()
        .latest_not_after(at("2026-11-28T21:39:52Z"))
        .unwrap();
    assert_eq!(latest, at("2029-11-28T21:39:51Z"));
    assert_eq!(
        latest.unix_seconds() - at("2026-11-28T21:39:52Z").unix_seconds(),
        1_096 * 86_400 - 1
    );
}
