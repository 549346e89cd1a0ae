//! sceau on PKCS#11 tokens other than SoftHSM2 (issue 20), each taking its configuration in
//! `C_Initialize`'s `pReserved` (`hsm.module_parameters`): NSS's software token (softokn, from
//! Debian's libnss3) and kryoptic (a PKCS#11 token in Rust, built by tests/run.sh, which returns
//! EC points raw where the others wrap them in DER). The CA's life, end to end, judged by
//! OpenSSL and pkilint: the key ceremony, `sceau check`, an issuance through the daemon, an
//! OCSP answer signed live for a nonce by the responder key in the token, a revocation, the
//! revoked answer, and a CRL. tests/run.sh also runs the rollover, backup, issuance and
//! revocation test files on each token (SCEAU_TEST_TOKEN).
mod common;

use common::daemon::{Daemon, ocsp_ask};
use common::{Keys, Pki, Token, lint, serial_of, verify_chain};

#[test]
fn the_ca_lives_on_nss_softokn() {
    the_ca_lives_on(Token::Nss, Keys::EC);
}

#[test]
fn the_ca_lives_on_kryoptic() {
    the_ca_lives_on(Token::Kryoptic, Keys::EC);
}

#[test]
fn an_rsa_ca_lives_on_kryoptic() {
    the_ca_lives_on(Token::Kryoptic, Keys::RSA);
}

fn the_ca_lives_on(token: Token, keys: Keys) {
    let pki = Pki::on(token, keys);
    pki.init();
    let check = pki.sceau_ok(&["check"]);
    // The token found is the one module_parameters named, under its label.
    assert!(
        check.contains(&format!("HSM token \"{}\": logged in", token.label())),
        "{check}"
    );
    assert!(check.contains("matches its certificate"), "{check}");
    let certs = pki.data_dir().join("certs");
    let root = certs.join("racine.pem");
    let issuing = certs.join("ac-agents.pem");
    lint::pkix_certificate(&root);
    lint::pkix_certificate(&issuing);
    lint::chain(&root, &issuing);

    let daemon = Daemon::start(&pki);
    let holder = pki.issue_holder("jeanne", "/GN=Jeanne/SN=DUPONT/CN=Jeanne DUPONT");
    verify_chain(pki.dir.path(), &[&root, &issuing], &holder);
    lint::pkix_certificate(&holder);
    lint::etsi_certificate(&holder);
    lint::chain(&issuing, &holder);

    // A nonce: the answer is signed now, by the responder key in the NSS token.
    let answer = ocsp_ask(&daemon, &root, &issuing, &holder, "good");
    assert!(
        answer.contains("OCSP Nonce"),
        "the nonce is echoed: {answer}"
    );
    pki.revoke(&holder, "key-compromise");
    ocsp_ask(&daemon, &root, &issuing, &holder, "revoked");

    // The CRL, signed by the issuing CA's key in the token, lists it and lints.
    let serial = serial_of(&holder);
    daemon.wait_until("a CRL listing the revocation", |d| {
        pki.served_crl(d, "ac-agents").0.contains(&serial)
    });
    lint::crl(&pki.path("served-ac-agents.crl"));
}

/// Parameters naming a database that is not there: the module refuses to start, `sceau init`
/// says which token of which file, and nothing is created.
#[test]
fn nss_parameters_naming_no_database_are_refused_and_change_nothing() {
    let pki = Pki::on(Token::Nss, Keys::EC);
    let config = std::fs::read_to_string(&pki.config).unwrap();
    let database = pki.path("nssdb");
    let elsewhere = pki.path("no-such-nssdb");
    let moved = config.replace(
        &format!("sql:{}", database.display()),
        &format!("sql:{}", elsewhere.display()),
    );
    assert_ne!(moved, config);
    std::fs::write(&pki.config, moved).unwrap();
    let refused = pki.sceau(&["init", "--without-dual-control"]);
    let text = String::from_utf8_lossy(&refused.stderr).into_owned();
    // A configuration error (78, EX_CONFIG), which a restart does not cure: not an outage.
    assert_eq!(refused.status.code(), Some(78), "{text}");
    assert!(
        text.contains("[hsm] token \"sceau-nss\"") && text.contains("Initialize"),
        "{text}"
    );
    assert!(!pki.data_dir().join("store").exists(), "{text}");
    assert!(!elsewhere.exists());
}

/// A key the token asks a login for before each signature (`CKA_ALWAYS_AUTHENTICATE`, which
/// a token's policy may set on signature keys): made by the token's own tool under the audit
/// key's label, adopted by `sceau init`, it signs every checkpoint after a context-specific
/// login, and the chain verifies against the anchor `init` wrote.
fn a_key_that_asks_a_login_per_signature_signs_checkpoints(token: Token) {
    let pki = Pki::on(token, Keys::EC);
    pki.foreign_key_with(token, "sceau-audit", &["--always-auth", "--id", "a0d1"]);
    let listed = pki.private_keys_listed(token);
    assert!(listed.contains("always authenticate"), "{listed}");
    pki.init();
    // An issuance moves the chain's head: the next checkpoint has something to sign.
    pki.issue_holder("jeanne", "/GN=Jeanne/SN=DUPONT/CN=Jeanne DUPONT");
    let signed: serde_json::Value =
        serde_json::from_str(&pki.sceau_ok(&["audit", "checkpoint"])).unwrap();
    assert!(
        signed["checkpoint"].is_u64(),
        "a checkpoint was signed: {signed}"
    );
    let anchor = pki.data_dir().join("certs").join("audit-key.pem");
    let verified = pki.sceau_ok(&["audit", "verify", "--anchor", anchor.to_str().unwrap()]);
    // The first checkpoint (signed by `init`) and this one, both by the per-signature key.
    assert!(verified.contains(", 2 signed checkpoints,"), "{verified}");
}

#[test]
fn a_key_that_asks_a_login_per_signature_signs_on_softhsm2() {
    a_key_that_asks_a_login_per_signature_signs_checkpoints(Token::SoftHsm2);
}

#[test]
fn a_key_that_asks_a_login_per_signature_signs_on_kryoptic() {
    a_key_that_asks_a_login_per_signature_signs_checkpoints(Token::Kryoptic);
}
