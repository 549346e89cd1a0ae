//! Issuance end to end: `sceau init` on a real SoftHSM2 token, holder certificates from
//! OpenSSL CSRs under both policies, judged by `openssl verify -x509_strict` and pkilint.
mod common;

use std::path::{Path, PathBuf};

use common::{KeyKind, Keys, Pki, lint, openssl, serial_of, split_pem, verify_chain, x509};

/// Issues auth and sign certificates for RSA-3072, P-256 and P-384 holder keys; returns
/// (policy, certificate file) pairs.
fn issue_for_every_key_kind(pki: &Pki) -> Vec<(&'static str, PathBuf)> {
    let mut issued = Vec::new();
    for (i, (kind, gn, sn)) in [
        (KeyKind::Rsa3072, "Élodie", "LEFÈVRE"),
        (KeyKind::P256, "Jean", "DUPONT"),
        (KeyKind::P384, "Anne-Sophie", "MARTIN"),
    ]
    .into_iter()
    .enumerate()
    {
        let holder = format!("agent-{i}");
        let subject = format!("/GN={gn}/SN={sn}/CN={gn} {sn}/serialNumber=OPAQUE{i}");
        for policy in ["justice-auth", "justice-sign"] {
            let csr = pki.csr(&format!("{holder}-{policy}"), kind, &subject);
            let file = format!("{holder}-{policy}.crt");
            issued.push((
                policy,
                pki.issue_into(&file, policy, &csr, &["--holder", &holder]),
            ));
        }
    }
    issued
}

/// How far pkilint can judge signatures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signatures {
    /// ECDSA and RSA PKCS#1 v1.5: pkilint's chain lint also verifies signatures.
    Pkilint,
    /// RSASSA-PSS: pkilint 0.13.3's chain lint (pkix/certificate/certificate_key.py,
    /// SubjectSignatureVerificationValidator) calls verify_signature without the algorithm and
    /// its parameters, so it always tries PKCS#1 v1.5 and reports every PSS signature as
    /// failed. OpenSSL verifies those signatures; pkilint lints everything else.
    OpensslOnly,
}

fn judge(pki: &Pki, exported: &Path, issued: &[(&str, PathBuf)], signatures: Signatures) {
    let chain = |issuer: &Path, subject: &Path| {
        if signatures == Signatures::Pkilint {
            lint::chain(issuer, subject);
        }
    };
    let root = exported.join("racine.pem");
    let issuing = exported.join("ac-agents.pem");
    let responder = exported.join("ocsp-ac-agents.pem");
    for ca in [&root, &issuing, &responder] {
        lint::pkix_certificate(ca);
    }
    chain(&root, &root);
    chain(&root, &issuing);
    chain(&issuing, &responder);
    verify_chain(pki.dir.path(), &[&root], &issuing);
    verify_chain(pki.dir.path(), &[&root, &issuing], &responder);
    for (policy, certificate) in issued {
        lint::pkix_certificate(certificate);
        lint::etsi_certificate(certificate);
        chain(&issuing, certificate);
        verify_chain(pki.dir.path(), &[&root, &issuing], certificate);
        let text = x509::text(certificate);
        let oid = if *policy == "justice-auth" {
            "1.2.250.1.120.2.2.1.3"
        } else {
            "1.2.250.1.120.2.3.1.3"
        };
        assert!(
            text.contains(oid),
            "{} lacks policy {oid}",
            certificate.display()
        );
    }
}

/// A CA made with `keys` (`sceau init`, then `sceau ca export`): each exported certificate of
/// `shown` must show all its texts in `openssl x509 -text`; then certificates for every key kind,
/// judged. Returns the PKI and the export's directory.
fn ceremony(keys: Keys, shown: &[(&str, &[&str])], signatures: Signatures) -> (Pki, PathBuf) {
    let pki = Pki::new(keys);
    pki.init();
    let exported = pki.export("export");
    for (file, texts) in shown {
        let text = x509::text(&exported.join(file));
        assert!(texts.iter().all(|t| text.contains(t)), "{text}");
    }
    let issued = issue_for_every_key_kind(&pki);
    judge(&pki, &exported, &issued, signatures);
    (pki, exported)
}

#[test]
fn p384_ceremony_and_issuance_pass_openssl_and_pkilint() {
    let (_pki, exported) = ceremony(
        Keys::EC,
        &[
            // The OCSP responder certificate: delegated by the issuing CA, OCSPSigning, nocheck.
            ("ocsp-ac-agents.pem", &["OCSP Signing", "OCSP No Check"]),
            // The issuing CA: pathlen 0, CRL distribution point of the root's ARL.
            ("ac-agents.pem", &["CA:TRUE, pathlen:0", "racine.crl"]),
        ],
        Signatures::Pkilint,
    );
    let text = x509::text(&exported.join("ocsp-ac-agents.pem"));
    assert!(
        !text.contains("OCSP - URI"),
        "a responder certificate carries no AIA OCSP: {text}"
    );
}

#[test]
fn rsa_ceremony_passes_openssl_and_pkilint() {
    let shown: &[&str] = &["sha256WithRSAEncryption", "(4096 bit)"];
    ceremony(Keys::RSA, &[("racine.pem", shown)], Signatures::Pkilint);
}

#[test]
fn rsa_pss_ceremony_passes_openssl_and_pkilint() {
    let shown: [(&str, &[&str]); 2] = [
        ("ac-agents.pem", &["rsassaPss", "(3072 bit)"]),
        ("racine.pem", &["rsassaPss", "(4096 bit)"]),
    ];
    ceremony(Keys::RSA_PSS, &shown, Signatures::OpensslOnly);
}

#[test]
fn init_refuses_to_run_twice_and_export_writes_every_ca_certificate() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let second = pki.sceau(&["init", "--without-dual-control"]);
    assert!(!second.status.success());
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(message.contains("already holds a CA"), "{message}");
    let exported = pki.export("out");
    let mut names: Vec<_> = std::fs::read_dir(&exported)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ac-agents.pem", "ocsp-ac-agents.pem", "racine.pem"]);
    // The issuing CA certificate matches the HSM key, and the chain is whole.
    let check = pki.sceau_ok(&["check"]);
    assert!(check.contains("matches its certificate"), "{check}");
}

/// Every refusal names its rule and the file, leaves the store and the audit log as they were,
/// and never reaches the HSM (no intent is recorded, so nothing can be signed).
#[test]
fn policy_violations_are_refused_and_change_nothing() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/csr");
    let before = pki.audit_entries();
    let cases: &[(&str, &str, &[&str], &str)] = &[
        ("rsa1024", "justice-auth", &[], "key-not-allowed"),
        ("no-gn", "justice-auth", &[], "subject-attribute-missing"),
        ("no-sn", "justice-sign", &[], "subject-attribute-missing"),
        ("email", "justice-auth", &[], "emailAddress is not allowed"),
        ("san", "justice-sign", &[], "subject-alt-name-forbidden"),
        ("bad-signature", "justice-auth", &[], "csr-signature"),
        ("non-utf8", "justice-auth", &[], "not valid UTF-8"),
        (
            "p256",
            "justice-auth",
            &["--not-after", "2031-01-01T00:00:00Z"],
            "validity-too-long",
        ),
        (
            "p256",
            "justice-unknown",
            &[],
            "unknown policy \"justice-unknown\"",
        ),
    ];
    for (fixture, policy, extra, expected) in cases {
        let out = pki.issue(policy, &fixtures.join(format!("{fixture}.csr")), extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{fixture} under {policy} was accepted"
        );
        assert!(
            out.stdout.is_empty(),
            "{fixture}: a refused request printed something"
        );
        assert!(
            stderr.contains(expected),
            "{fixture}: expected {expected:?} in: {stderr}"
        );
        if *policy != "justice-unknown" {
            assert!(
                stderr.contains(&format!("{fixture}.csr")),
                "{fixture}: the message should name the file: {stderr}"
            );
        }
    }
    // A CSR file that does not exist names the option and the file.
    let out = pki.issue("justice-auth", Path::new("/nonexistent/x.csr"), &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--csr /nonexistent/x.csr"));
    assert_eq!(
        pki.audit_entries(),
        before,
        "a refused request changed the audit log"
    );
}

#[cfg(feature = "test-hooks")]
#[test]
fn rsa_2048_is_refused_for_a_certificate_ending_after_2030() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let before = pki.audit_entries();
    let csr = pki.csr(
        "rsa2048",
        KeyKind::Rsa2048,
        "/GN=Paul/SN=BERNARD/CN=Paul BERNARD",
    );
    let args = [
        "issue",
        "--policy",
        "justice-auth",
        "--csr",
        csr.to_str().unwrap(),
    ];
    // In mid-2028 a 3-year certificate ends in 2031: refused, and nothing changes.
    let out = pki.sceau_with_env(&args, &[("SCEAU_NOW", "2028-06-01T00:00:00Z")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("key-not-allowed") && stderr.contains("RSA-2048"),
        "{stderr}"
    );
    assert_eq!(pki.audit_entries(), before);
    // Today it ends in 2029: accepted.
    let pem = pki.sceau_ok(&args);
    assert!(pem.contains("BEGIN CERTIFICATE"));
}

#[test]
fn a_key_is_never_certified_twice_and_a_name_never_given_to_another_holder() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let csr = pki.csr("jean", KeyKind::P256, "/GN=Jean/SN=DUPONT/CN=Jean DUPONT");
    pki.issue_ok("justice-auth", &csr, &["--holder", "agent-1"]);
    let before = pki.audit_entries();
    let again = pki.issue("justice-sign", &csr, &["--holder", "agent-1"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("key-already-certified"));
    let other = pki.csr("jean-2", KeyKind::P256, "/GN=Jean/SN=DUPONT/CN=Jean DUPONT");
    let homonym = pki.issue("justice-auth", &other, &["--holder", "agent-2"]);
    assert!(String::from_utf8_lossy(&homonym.stderr).contains("subject-already-given"));
    assert_eq!(pki.audit_entries(), before);
    // The same holder gets a new certificate for a new key.
    pki.issue_ok("justice-sign", &other, &["--holder", "agent-1"]);
}

#[test]
fn a_card_gets_both_certificates_or_neither() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let exported = pki.export("export");
    let subject = "/GN=Marie/SN=CURIE/CN=Marie CURIE";
    let auth = pki.csr("card-auth", KeyKind::P256, subject);
    let sign = pki.csr("card-sign", KeyKind::P256, subject);
    let out_dir = pki.path("card");
    let extra = [
        "--card",
        "CARD-0001",
        "--out-dir",
        out_dir.to_str().unwrap(),
    ];
    let printed = pki.card_issue_ok("agent-7", (&auth, &sign), &extra);
    assert!(printed.contains("card CARD-0001 for agent-7"), "{printed}");
    let (root, issuing) = (exported.join("racine.pem"), exported.join("ac-agents.pem"));
    let trust: [&Path; 2] = [&root, &issuing];
    for file in ["auth.pem", "sign.pem"] {
        let path = out_dir.join(file);
        verify_chain(pki.dir.path(), &trust, &path);
        let info = pki.serial_state(&serial_of(&path));
        assert_eq!(info["state"], "issued");
        assert_eq!(info["card"], "CARD-0001");
        assert_eq!(info["holder"], "agent-7");
    }

    // One bad CSR (a signature with an e-mail address): neither certificate is issued.
    let before = pki.audit_entries();
    let good = pki.csr(
        "card2-auth",
        KeyKind::P256,
        "/GN=Pierre/SN=CURIE/CN=Pierre CURIE",
    );
    let bad = pki.csr(
        "card2-sign",
        KeyKind::P256,
        "/GN=Pierre/SN=CURIE/CN=Pierre CURIE/emailAddress=p@example.fr",
    );
    let out = pki.card_issue("agent-8", (&good, &bad), &[]);
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("emailAddress"));
    // The same key twice: refused (two key pairs per card at RGS ***).
    let out = pki.card_issue("agent-8", (&good, &good), &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("card-keys-identical"));
    assert_eq!(
        pki.audit_entries(),
        before,
        "a refused card changed the store"
    );
    // The good CSR was not consumed by the refusals: it can still be certified.
    let sign2 = pki.csr(
        "card2-sign-ok",
        KeyKind::P256,
        "/GN=Pierre/SN=CURIE/CN=Pierre CURIE",
    );
    let pems = pki.card_issue_ok("agent-8", (&good, &sign2), &[]);
    assert_eq!(split_pem(pki.dir.path(), "card2", &pems).len(), 2);
}

#[test]
fn external_root_ceremony_completes_with_import() {
    let pki = Pki::new(Keys::EC);
    let printed = pki.sceau_ok(&["init", "--without-dual-control", "--external-root"]);
    let csr = pki.data_dir().join("certs/ac-agents.csr");
    assert!(
        printed.contains("ac-agents.csr") && csr.exists(),
        "{printed}"
    );
    // Issuance waits for the certificate.
    let holder_csr = pki.csr("early", KeyKind::P256, "/GN=Jean/SN=DUPONT/CN=Jean DUPONT");
    let out = pki.issue("justice-auth", &holder_csr, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("import-cert"));

    // An offline root made by OpenSSL signs the issuing CA's CSR.
    let dir = pki.dir.path();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (ok, text) = openssl(&[
        "req",
        "-x509",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-nodes",
        "-keyout",
        &p("ext-root.key"),
        "-out",
        &p("ext-root.pem"),
        "-days",
        "7300",
        "-utf8",
        "-subj",
        "/C=FR/O=MINISTERE DE LA JUSTICE TEST/OU=0002 123456789/CN=AC RACINE EXTERNE TEST",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    assert!(ok, "{text}");
    std::fs::write(
        dir.join("ext.cnf"),
        "[sub]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\ncertificatePolicies=2.5.29.32.0\ncrlDistributionPoints=URI:http://pki.justice.example.fr/crl/racine.crl\n",
    )
    .unwrap();
    let (ok, text) = openssl(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        &p("ext-root.pem"),
        "-CAkey",
        &p("ext-root.key"),
        "-set_serial",
        "0x1234567890ABCDEF",
        "-days",
        "3650",
        "-sha384",
        "-extfile",
        &p("ext.cnf"),
        "-extensions",
        "sub",
        "-out",
        &p("issuing.pem"),
    ]);
    assert!(ok, "{text}");

    // A certificate for another key is refused.
    let out = pki.sceau(&["ca", "import-cert", &p("ext-root.pem")]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no certificate in the file is for the key")
    );
    pki.sceau_ok(&[
        "ca",
        "import-cert",
        &p("issuing.pem"),
        "--root",
        &p("ext-root.pem"),
    ]);

    let exported = pki.export("export");
    let holder = pki.issue_into("holder.pem", "justice-auth", &holder_csr, &[]);
    let (root, issuing) = (exported.join("racine.pem"), exported.join("ac-agents.pem"));
    let trust: [&Path; 2] = [&root, &issuing];
    verify_chain(dir, &trust, &holder);
    verify_chain(dir, &trust, &exported.join("ocsp-ac-agents.pem"));
    lint::chain(&exported.join("ac-agents.pem"), &holder);
}
