//! sceau on a PKCS#11 token other than SoftHSM2 (issue 20): NSS's software token (softokn,
//! from Debian's libnss3), which takes its database in `C_Initialize`'s `pReserved`
//! (`hsm.module_parameters`). The CA's life, end to end, judged by OpenSSL: the key ceremony,
//! `sceau check`, an issuance through the daemon, an OCSP answer signed live for a nonce by the
//! responder key in the token, a revocation, the revoked answer, and a CRL.
mod common;

use common::daemon::Daemon;
use common::{Keys, Pki, openssl, serial_of, verify_chain};

#[test]
fn the_ca_lives_on_nss_softokn() {
    let pki = Pki::on_nss(Keys::EC);
    pki.init();
    let check = pki.sceau_ok(&["check"]);
    // The token found is NSS's key database, under the label module_parameters gave it.
    assert!(
        check.contains("HSM token \"sceau-nss\": logged in"),
        "{check}"
    );
    assert!(check.contains("matches its certificate"), "{check}");
    let certs = pki.data_dir().join("certs");
    let root = certs.join("racine.pem");
    let issuing = certs.join("ac-agents.pem");

    let daemon = Daemon::start(&pki);
    let holder = pki.issue_holder("jeanne", "/GN=Jeanne/SN=DUPONT/CN=Jeanne DUPONT");
    verify_chain(pki.dir.path(), &[&root, &issuing], &holder);

    // A nonce: the answer is signed now, by the responder key in the NSS token.
    let chain = pki.path("chain.pem");
    let text = [&root, &issuing]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    std::fs::write(&chain, text).unwrap();
    let url = daemon.url("/ocsp");
    let ask = |expected: &str| {
        let (ok, out) = openssl(&[
            "ocsp",
            "-issuer",
            issuing.to_str().unwrap(),
            "-cert",
            holder.to_str().unwrap(),
            "-url",
            &url,
            "-CAfile",
            chain.to_str().unwrap(),
            "-resp_text",
        ]);
        assert!(ok, "{out}");
        assert!(out.contains("Response verify OK"), "{out}");
        assert!(out.contains("OCSP Nonce"), "the nonce is echoed: {out}");
        assert!(
            out.contains(&format!("{}: {expected}", holder.display())),
            "{expected}: {out}"
        );
    };
    ask("good");
    pki.revoke(&holder, "key-compromise");
    ask("revoked");

    // The CRL, signed by the issuing CA's key in the token, lists it.
    let serial = serial_of(&holder);
    daemon.wait_until("a CRL listing the revocation", |d| {
        pki.served_crl(d, "ac-agents").0.contains(&serial)
    });
}
