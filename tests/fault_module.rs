//! Faults at the PKCS#11 module boundary (issue 20, item 3), on each of the three tokens: the
//! project's fault module (hsm/fault-module) sits between the daemon and the real module and
//! makes it answer `CKR_DEVICE_ERROR`, `CKR_SESSION_HANDLE_INVALID`, `CKR_DEVICE_REMOVED`,
//! `CKR_TOKEN_NOT_PRESENT`, `CKR_CRYPTOKI_NOT_INITIALIZED`, `CKR_GENERAL_ERROR`, vanish and come
//! back under new slot ids, or sign with another key. Each fault: issuance refused with 503
//! (exit 69), nothing recorded, OCSP answering from its pre-signed responses (requests without a
//! nonce); once the fault ends, issuance and live OCSP (a nonce echoed) work again without a
//! restart. A signature made with another key never leaves: the CA checks every signature.
//! Delays and hangs run in the campaign (tests/fault_campaign.rs).
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, ocsp_ask, ocsp_post};
use common::{KeyKind, Keys, Pki, Token, set_fault};

const FAULTS: [&str; 7] = [
    "device_error",
    "session_handle_invalid",
    "device_removed",
    "token_not_present",
    "not_initialized",
    "general_error",
    "vanish",
];

fn issued_total(daemon: &Daemon) -> u64 {
    daemon.metric("sceau_certificates_issued_total", "")
}

/// Issues a certificate for `csr`, retrying for up to `within`: how long signing took to come
/// back.
fn issue_again(pki: &Pki, csr: &Path, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let out = pki.issue("justice-auth", csr, &[]);
        if out.status.success() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "issuance did not come back within {within:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn faults_are_refused_cleanly_and_healed_without_a_restart(token: Token) {
    let pki = Pki::on(token, Keys::EC);
    let control = pki.wrap_in_fault_module();
    pki.init();
    let daemon = Daemon::start(&pki);
    let before = pki.issue_holder("avant", "/GN=Anne/SN=AVANT/CN=Anne AVANT");
    let certs = pki.data_dir().join("certs");
    let (root, issuing) = (certs.join("racine.pem"), certs.join("ac-agents.pem"));
    let request = pki.ocsp_request(&before);

    for (round, fault) in FAULTS.iter().enumerate() {
        set_fault(&control, fault);
        let csr = pki.csr(
            &format!("pendant-{round}"),
            KeyKind::P256,
            &format!("/GN=Marc/SN=PENDANT{round}/CN=Marc PENDANT{round}"),
        );
        let issued = issued_total(&daemon);
        let refused = pki.issue("justice-auth", &csr, &[]);
        let text = String::from_utf8_lossy(&refused.stderr).into_owned();
        assert_eq!(
            refused.status.code(),
            Some(69),
            "{token:?} {fault}: issuance answered {:?}: {text}",
            refused.status
        );
        assert!(text.contains("503"), "{token:?} {fault}: {text}");
        assert!(
            refused.stdout.is_empty(),
            "{token:?} {fault}: a certificate came out"
        );
        assert_eq!(issued_total(&daemon), issued, "{token:?} {fault}: recorded");
        // OCSP keeps answering from what was signed before the fault.
        for _ in 0..20 {
            let (status, _, body) = ocsp_post(daemon.va, &request);
            assert!(
                status == 200 && body.len() > 100,
                "{token:?} {fault}: OCSP {status}"
            );
        }

        set_fault(&control, "none");
        let back = issue_again(&pki, &csr, Duration::from_secs(15));
        eprintln!("{token:?}: signing back {back:?} after {fault} ended");
        assert_eq!(issued_total(&daemon), issued + 1);
        // Live OCSP is back too: openssl's request carries a nonce, the answer echoes it and
        // verifies against the responder certificate the root vouches for.
        let live = ocsp_ask(&daemon, &root, &issuing, &before, "good");
        assert!(live.contains("OCSP Nonce"), "{token:?} {fault}: {live}");
    }
    assert!(
        std::fs::read_to_string(pki.path("fault-control.injected"))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
            >= FAULTS.len() as u64,
        "the faults were injected"
    );
    assert!(pki.ocsp_status(&daemon, &before).contains(": good"));
    assert!(daemon.metric("sceau_hsm_errors_total", "") >= FAULTS.len() as u64);
    assert!(daemon.stop().success());
    assert!(pki.sceau_ok(&["audit", "verify"]).contains("verified"));
}

/// One test per token for a check that takes the token, each named for it.
macro_rules! on_tokens {
    ($check:ident: $($test:ident => $token:ident),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                $check(Token::$token);
            }
        )+
    };
}

on_tokens!(faults_are_refused_cleanly_and_healed_without_a_restart:
    faults_on_softhsm2_are_refused_cleanly_and_healed_without_a_restart => SoftHsm2,
    faults_on_nss_are_refused_cleanly_and_healed_without_a_restart => Nss,
    faults_on_kryoptic_are_refused_cleanly_and_healed_without_a_restart => Kryoptic,
);

/// The token signs with another key (the decoy a program sharing the token made): the
/// signature does not verify against the CA's certificate, the issuance is refused and nothing
/// is recorded as issued; with the fault gone, the same request is issued.
fn a_signature_by_another_key_never_leaves(token: Token) {
    let pki = Pki::on(token, Keys::EC);
    let control = pki.wrap_in_fault_module();
    pki.init();
    pki.foreign_key(token, "sceau-fault-decoy");
    let daemon = Daemon::start(&pki);
    let csr = pki.csr(
        "victime",
        KeyKind::P256,
        "/GN=Ines/SN=VICTIME/CN=Ines VICTIME",
    );
    set_fault(&control, "wrong_key");
    let refused = pki.issue("justice-auth", &csr, &[]);
    let text = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success(), "{token:?}: {text}");
    assert!(
        refused.stdout.is_empty(),
        "{token:?}: a certificate came out"
    );
    // Refused either by the check of this signature, or as unavailable: a signature that did
    // not verify (this one, or one the daemon made meanwhile) drops the connection.
    assert!(
        text.contains("does not verify") || text.contains("503"),
        "{token:?}: {text}"
    );
    assert_eq!(issued_total(&daemon), 0);
    set_fault(&control, "none");
    issue_again(&pki, &csr, Duration::from_secs(15));
    assert_eq!(issued_total(&daemon), 1);
    assert!(daemon.stop().success());
}

on_tokens!(a_signature_by_another_key_never_leaves:
    a_signature_by_another_key_never_leaves_softhsm2 => SoftHsm2,
    a_signature_by_another_key_never_leaves_kryoptic => Kryoptic,
);
