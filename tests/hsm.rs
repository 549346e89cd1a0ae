//! The HSM layer against a real SoftHSM2 token: typed errors for a wrong module, token, PIN or
//! key; keys that could leave the HSM refused; and the pool reconnecting after the token was
//! logged out behind its back.
//!
//! SoftHSM2 reads SOFTHSM2_CONF once per process, so each test runs its body in a child
//! process (this test binary, re-run with `--exact NAME`) whose environment points at a token
//! made for it.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use sceau::hsm::{Hsm, HsmError, HsmSettings, KeySpec, PinSource};
use sceau::x509::sigalg::SignatureScheme;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234-pool-test";
const DIR_VAR: &str = "SCEAU_HSM_TEST_DIR";

/// In the parent: makes a token and re-runs `test` in a child. In the child: returns the
/// directory, and the caller runs the body.
fn isolated(test: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(DIR_VAR) {
        return Some(PathBuf::from(dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("softhsm2.conf");
    let made = common::tokens::softhsm_token(&conf, "pool-test", "so-1234", PIN);
    assert!(made.status.success(), "{}", common::all_output(&made));
    std::fs::write(dir.path().join("pin"), PIN).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(DIR_VAR, dir.path())
        .output()
        .unwrap();
    let output = common::all_output(&child);
    assert!(
        child.status.success() && output.contains("1 passed"),
        "child test {test} failed ({}):\n{output}",
        child.status
    );
    None
}

/// The module loaded again, as another part of the process would, and the test token's slot.
fn other_module() -> (Pkcs11, cryptoki::slot::Slot) {
    let other = Pkcs11::new(MODULE).unwrap();
    let _ = other.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = other
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| other.get_token_info(*s).unwrap().label() == "pool-test")
        .unwrap();
    (other, slot)
}

/// A read-write session of another program on the test token, logged in as the user.
fn user_session() -> cryptoki::session::Session {
    let (pkcs11, slot) = other_module();
    let session = pkcs11.open_rw_session(slot).unwrap();
    let _ = session.login(UserType::User, Some(&PIN.to_owned().into()));
    session
}

/// A P-256 key pair generated on the token by another program (the `session` given), with
/// `private` added to the private key's template (the public key gets its `CKA_ID`, if any);
/// returns the private key's handle.
fn p256_key_made_outside(
    session: &cryptoki::session::Session,
    label: &str,
    private: &[Attribute],
) -> cryptoki::object::ObjectHandle {
    let label = label.as_bytes().to_vec();
    let curve = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let mut public_template = vec![Attribute::Token(true), Attribute::Verify(true)];
    public_template.extend([Attribute::Label(label.clone()), Attribute::EcParams(curve)]);
    public_template.extend(
        private
            .iter()
            .filter(|a| matches!(a, Attribute::Id(_)))
            .cloned(),
    );
    let mut private_template = vec![Attribute::Token(true), Attribute::Private(true)];
    private_template.extend([Attribute::Sensitive(true), Attribute::Sign(true)]);
    private_template.push(Attribute::Label(label));
    private_template.extend(private.iter().cloned());
    session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &public_template,
            &private_template,
        )
        .unwrap()
        .1
}

fn settings(dir: &Path) -> HsmSettings {
    HsmSettings {
        module: MODULE.into(),
        token_label: "pool-test".into(),
        token_serial: None,
        module_parameters: None,
        pin: PinSource::File(dir.join("pin")),
        sessions: 2,
        queue_capacity: 64,
    }
}

#[test]
fn the_pool_reconnects_after_the_token_is_logged_out_behind_its_back() {
    let Some(dir) = isolated("the_pool_reconnects_after_the_token_is_logged_out_behind_its_back")
    else {
        return;
    };
    let hsm = Hsm::open(settings(&dir)).unwrap();
    hsm.generate_key("signer", KeySpec::P256).unwrap();
    let key = hsm
        .signing_key("signer", SignatureScheme::EcdsaP256Sha256)
        .unwrap();
    let signature = key.sign(b"before").unwrap();
    key.verify(b"before", &signature).unwrap();
    assert_eq!(hsm.status().reconnects, 0);

    // Another part of the process logs the token out: every session loses its login.
    let (other, slot) = other_module();
    let session = other.open_rw_session(slot).unwrap();
    session.logout().unwrap();

    // The next signatures fail once inside the pool (CKR_USER_NOT_LOGGED_IN), which reconnects
    // and logs in again, then succeed: callers see no error.
    for i in 0..8u8 {
        let message = [i; 32];
        let signature = key.sign(&message).unwrap();
        key.verify(&message, &signature).unwrap();
    }
    let status = hsm.status();
    assert!(status.available, "{status:?}");
    assert!(status.reconnects >= 1 && status.errors >= 1, "{status:?}");
}

#[test]
fn wrong_module_token_pin_and_key_are_typed_errors() {
    let Some(dir) = isolated("wrong_module_token_pin_and_key_are_typed_errors") else {
        return;
    };
    let mut wrong = settings(&dir);
    wrong.module = "/nonexistent/libpkcs11.so".into();
    assert!(matches!(Hsm::open(wrong), Err(HsmError::Module { .. })));

    let mut wrong = settings(&dir);
    wrong.token_label = "no-such-token".into();
    assert!(matches!(
        Hsm::open(wrong),
        Err(HsmError::TokenNotFound { .. })
    ));

    std::fs::write(dir.join("bad-pin"), "0000-wrong").unwrap();
    let mut wrong = settings(&dir);
    wrong.pin = PinSource::File(dir.join("bad-pin"));
    let error = Hsm::open(wrong).unwrap_err();
    assert!(matches!(error, HsmError::PinIncorrect { .. }), "{error}");
    assert!(error.is_unavailable());
    assert!(
        !error.to_string().contains("0000-wrong"),
        "the PIN leaked: {error}"
    );

    let hsm = Hsm::open(settings(&dir)).unwrap();
    assert!(matches!(
        hsm.signing_key("absent", SignatureScheme::EcdsaP256Sha256),
        Err(HsmError::KeyNotFound { .. })
    ));
    hsm.generate_key("p384", KeySpec::P384).unwrap();
    assert!(matches!(
        hsm.generate_key("p384", KeySpec::P384),
        Err(HsmError::KeyExists { .. })
    ));
    assert!(matches!(
        hsm.signing_key("p384", SignatureScheme::EcdsaP256Sha256),
        Err(HsmError::KeyMismatch { .. })
    ));
}

#[test]
fn a_key_that_could_leave_the_hsm_is_refused() {
    let Some(dir) = isolated("a_key_that_could_leave_the_hsm_is_refused") else {
        return;
    };
    let hsm = Hsm::open(settings(&dir)).unwrap();
    // Generated outside sceau as sensitive but extractable (it could be wrapped out).
    let session = user_session();
    p256_key_made_outside(&session, "exportable", &[Attribute::Extractable(true)]);
    let refused = hsm
        .signing_key("exportable", SignatureScheme::EcdsaP256Sha256)
        .unwrap_err();
    assert!(
        matches!(refused, HsmError::KeyExportable { .. }),
        "{refused}"
    );

    // Keys made by sceau are sensitive and never extractable.
    hsm.generate_key("made-by-sceau", KeySpec::P256).unwrap();
    hsm.signing_key("made-by-sceau", SignatureScheme::EcdsaP256Sha256)
        .unwrap();
}

#[test]
fn responder_keys_sign_through_session_copies_that_stay_sensitive_and_never_reach_the_token() {
    let Some(dir) = isolated(
        "responder_keys_sign_through_session_copies_that_stay_sensitive_and_never_reach_the_token",
    ) else {
        return;
    };
    let hsm = Hsm::open(settings(&dir)).unwrap();
    hsm.generate_key("responder", KeySpec::P256).unwrap();
    let key = hsm
        .signing_key("responder", SignatureScheme::EcdsaP256Sha256)
        .unwrap()
        .session_copy();
    for i in 0..8u8 {
        let message = [i; 40];
        let signature = key.sign(&message).unwrap();
        key.verify(&message, &signature).unwrap();
    }

    // Seen from another session of the process: one token object, and the pool's in-memory
    // copies, each as sensitive and non-extractable as the key itself.
    let (other, slot) = other_module();
    let session = other.open_ro_session(slot).unwrap();
    let find = |token: bool| {
        session
            .find_objects(&[
                Attribute::Label(b"responder".to_vec()),
                Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
                Attribute::Token(token),
            ])
            .unwrap()
    };
    assert_eq!(find(true).len(), 1, "the token keeps one key");
    let copies = find(false);
    assert!(
        (1..=2).contains(&copies.len()),
        "one copy per pool session that signed, found {}",
        copies.len()
    );
    for copy in copies {
        let attributes = session
            .get_attributes(
                copy,
                &[
                    cryptoki::object::AttributeType::Sensitive,
                    cryptoki::object::AttributeType::Extractable,
                ],
            )
            .unwrap();
        assert!(
            attributes.contains(&Attribute::Sensitive(true))
                && attributes.contains(&Attribute::Extractable(false)),
            "{attributes:?}"
        );
    }

    // The copies end with the pool's sessions.
    drop(key);
    drop(hsm);
    assert!(find(false).is_empty(), "copies outlived their sessions");
    assert_eq!(find(true).len(), 1);
}

/// A second key pair made under the same label by another program, on the same token.
fn lookalike_pair(label: &str, id: &[u8]) {
    let (pkcs11, slot) = other_module();
    let session = pkcs11.open_rw_session(slot).unwrap();
    let _ = session.login(UserType::User, Some(&PIN.to_owned().into()));
    let curve = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let label = label.as_bytes().to_vec();
    let mut public = vec![Attribute::Token(true), Attribute::Verify(true)];
    public.extend([Attribute::Label(label.clone()), Attribute::EcParams(curve)]);
    public.push(Attribute::Id(id.to_vec()));
    let mut private = vec![Attribute::Token(true), Attribute::Private(true)];
    private.extend([Attribute::Sensitive(true), Attribute::Extractable(false)]);
    private.extend([Attribute::Sign(true), Attribute::Label(label)]);
    private.push(Attribute::Id(id.to_vec()));
    session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .unwrap();
}

/// Destroys every private key labelled `label` whose CKA_ID is `id`.
fn destroy_private_key(label: &str, id: &[u8]) {
    let (pkcs11, slot) = other_module();
    let session = pkcs11.open_rw_session(slot).unwrap();
    let _ = session.login(UserType::User, Some(&PIN.to_owned().into()));
    let found = session
        .find_objects(&[
            Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ])
        .unwrap();
    assert!(!found.is_empty());
    for handle in found {
        session.destroy_object(handle).unwrap();
    }
}

/// The id sceau gives the key pair `label` (the first 16 bytes of SHA-256 of the label).
fn sceau_id(label: &str) -> Vec<u8> {
    sceau::x509::keys::sha256(label.as_bytes())[..16].to_vec()
}

/// Issue 20, item 2: keys are found by label and CKA_ID. Another key put under the CA key's
/// label is refused at load, naming both objects; a key that replaces it under another id is
/// never used; one that replaces it under the same id signs, and the check of every signature
/// against the loaded public key catches it.
#[test]
fn a_key_under_the_same_label_is_refused_and_a_replaced_key_never_signs_unnoticed() {
    let Some(dir) =
        isolated("a_key_under_the_same_label_is_refused_and_a_replaced_key_never_signs_unnoticed")
    else {
        return;
    };
    let hsm = Hsm::open(settings(&dir)).unwrap();
    hsm.generate_key("ca", KeySpec::P256).unwrap();
    let key = hsm
        .signing_key("ca", SignatureScheme::EcdsaP256Sha256)
        .unwrap();
    let message = b"tbsCertificate".to_vec();
    key.verify(&message, &key.sign(&message).unwrap()).unwrap();

    // A second pair under the label: refused at load (as at every start), naming both ids.
    lookalike_pair("ca", b"intruder");
    let refused = hsm
        .signing_key("ca", SignatureScheme::EcdsaP256Sha256)
        .unwrap_err();
    let text = refused.to_string();
    assert!(matches!(refused, HsmError::DuplicateKey { .. }), "{text}");
    assert!(
        text.contains("2 private keys")
            && text.contains(&hex::encode(b"intruder"))
            && text.contains(&hex::encode(sceau_id("ca"))),
        "{text}"
    );

    // The real key destroyed, the intruder alone under the label: the loaded key does not
    // sign with it.
    destroy_private_key("ca", &sceau_id("ca"));
    let refused = key.sign(&message).unwrap_err();
    assert!(refused.is_unavailable(), "{refused}");
    assert!(
        refused.to_string().contains("no longer on the token"),
        "{refused}"
    );

    // A replacement made under the real key's id too: the token signs with it, and the check
    // every signature goes through before it is used refuses the result.
    destroy_private_key("ca", b"intruder");
    lookalike_pair("ca", &sceau_id("ca"));
    let mut caught = None;
    for _ in 0..20 {
        // The first calls may still be refused while the pool reconnects after the loss.
        match key.sign(&message) {
            Ok(signature) => {
                caught = Some(key.verify(&message, &signature).unwrap_err());
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
    let caught = caught.expect("the replaced key was never reached");
    assert!(matches!(caught, HsmError::BadSignature(_)), "{caught}");
}

/// Issue 20, item 2: the token is found by label and, when configured, serial number; never by
/// slot id. Two tokens with one label are refused, naming both serials.
#[test]
fn two_tokens_with_one_label_are_refused_unless_the_serial_names_one() {
    let Some(dir) = isolated("two_tokens_with_one_label_are_refused_unless_the_serial_names_one")
    else {
        return;
    };
    let second = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "pool-test"])
        .args(["--so-pin", "so-5678", "--pin", PIN])
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", common::all_output(&second));
    let (pkcs11, _) = (Pkcs11::new(MODULE).unwrap(), ());
    let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let serials: Vec<String> = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .map(|s| pkcs11.get_token_info(s).unwrap())
        .filter(|info| info.label() == "pool-test")
        .map(|info| info.serial_number().trim_end().to_owned())
        .collect();
    assert_eq!(serials.len(), 2);

    let refused = Hsm::open(settings(&dir)).unwrap_err();
    let text = refused.to_string();
    assert!(matches!(refused, HsmError::TokenAmbiguous { .. }), "{text}");
    assert!(
        serials.iter().all(|s| text.contains(s)) && text.contains("token_serial"),
        "{text}"
    );

    let mut named = settings(&dir);
    named.token_serial = Some(serials[1].clone());
    Hsm::open(named).unwrap();

    let mut wrong = settings(&dir);
    wrong.token_serial = Some("0000000000000000".into());
    let refused = Hsm::open(wrong).unwrap_err();
    assert!(
        matches!(refused, HsmError::TokenSerialMismatch { .. }),
        "{refused}"
    );
}

/// A public key object replaced under a key's label and id (a program sharing the token can
/// write public objects): the key is refused at load, since a challenge signed by the private
/// key does not verify with it. Without that, the audit key's public key, adopted as read,
/// would be the attacker's.
#[test]
fn a_public_key_object_swapped_under_the_label_is_refused_at_load() {
    let Some(dir) = isolated("a_public_key_object_swapped_under_the_label_is_refused_at_load")
    else {
        return;
    };
    let hsm = Hsm::open(settings(&dir)).unwrap();
    hsm.generate_key("audit", KeySpec::P256).unwrap();
    hsm.signing_key("audit", SignatureScheme::EcdsaP256Sha256)
        .unwrap();
    // Another pair made elsewhere; its public object takes the place of sceau's.
    lookalike_pair("elsewhere", b"elsewhere");
    let (pkcs11, slot) = other_module();
    let session = pkcs11.open_rw_session(slot).unwrap();
    let _ = session.login(UserType::User, Some(&PIN.to_owned().into()));
    let public = |label: &str| {
        session
            .find_objects(&[
                Attribute::Class(cryptoki::object::ObjectClass::PUBLIC_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap()[0]
    };
    session.destroy_object(public("audit")).unwrap();
    let swapped = public("elsewhere");
    session
        .update_attributes(
            swapped,
            &[
                Attribute::Label(b"audit".to_vec()),
                Attribute::Id(sceau_id("audit")),
            ],
        )
        .unwrap();
    let refused = hsm
        .signing_key("audit", SignatureScheme::EcdsaP256Sha256)
        .unwrap_err();
    let text = refused.to_string();
    assert!(matches!(refused, HsmError::KeyAttributes { .. }), "{text}");
    assert!(text.contains("not a pair"), "{text}");
}

/// A key whose token asks a login before each signature (`CKA_ALWAYS_AUTHENTICATE`, as a
/// token's policy may set for signature keys): the token refuses a signature without it, and
/// sceau logs in for each one (`C_SignInit`, `C_Login` as `CKU_CONTEXT_SPECIFIC`, `C_Sign`).
#[test]
fn a_key_that_needs_a_login_per_signature_signs_with_one() {
    let Some(dir) = isolated("a_key_that_needs_a_login_per_signature_signs_with_one") else {
        return;
    };
    let session = user_session();
    let hsm = Hsm::open(settings(&dir)).unwrap();
    let per_signature = [
        Attribute::Extractable(false),
        Attribute::Id(vec![0x42]),
        Attribute::AlwaysAuthenticate(true),
    ];
    let key = p256_key_made_outside(&session, "per-signature", &per_signature);
    // The token enforces it: logged in as the user, a signature without the second login fails.
    let refused = session
        .sign(&Mechanism::Ecdsa, key, &[7u8; 32])
        .unwrap_err();
    assert!(
        matches!(
            refused,
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserNotLoggedIn, _)
        ),
        "{refused}"
    );

    let signer = hsm
        .signing_key("per-signature", SignatureScheme::EcdsaP256Sha256)
        .unwrap();
    for i in 0..4u8 {
        let message = [i; 40];
        let signature = signer.sign(&message).unwrap();
        signer.verify(&message, &signature).unwrap();
    }
    // The PIN the per-signature login reads is refused: a typed error, and no further login
    // until the back-off has passed (each refusal may count towards locking a token).
    std::fs::write(dir.join("pin"), "0000-not-the-pin").unwrap();
    for _ in 0..3 {
        let refused = signer.sign(&[9u8; 40]).unwrap_err();
        assert!(
            matches!(refused, HsmError::PinIncorrect { .. }),
            "{refused}"
        );
    }
    assert!(
        !hsm.status().available,
        "health says the token is not usable"
    );
}
