//! pkilint (DigiCert's linter) as an independent judge of what the CA emits.
//!
//! The test suite's set-up (tests/run.sh) installs pkilint 0.13.3 into a venv; its location is
//! `SCEAU_PKILINT` or `~/.cache/sceau/pkilint`. Findings at WARNING or above fail the test.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv pkilint is installed in (its Python has `cryptography` too).
pub fn venv() -> PathBuf {
    std::env::var_os("SCEAU_PKILINT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sceau/pkilint")
        })
}

fn bin(tool: &str) -> PathBuf {
    let venv = venv();
    let path = venv.join("bin").join(tool);
    assert!(
        path.exists(),
        "pkilint is not installed at {}: run tests/run.sh, or `python3 -m venv {0} && {0}/bin/pip install pkilint==0.13.3`",
        venv.display()
    );
    path
}

fn run(tool: &str, args: &[&str], files: &[&Path]) {
    let out = Command::new(bin(tool))
        .args(args)
        .args(files)
        .output()
        .unwrap();
    let text = super::all_output(&out);
    assert!(
        out.status.success(),
        "{tool} {args:?} {files:?} reported findings at WARNING or above:\n{text}"
    );
}

/// RFC 5280 lint of any certificate.
pub fn pkix_certificate(certificate: &Path) {
    run("lint_pkix_cert", &["lint", "-s", "WARNING"], &[certificate]);
}

/// ETSI EN 319 412 lint of a holder certificate (type detected: natural person, or QCP-n-qscd
/// when qcStatements are present).
pub fn etsi_certificate(certificate: &Path) {
    run(
        "lint_etsi_cert",
        &["lint", "-d", "-o", "-s", "WARNING"],
        &[certificate],
    );
}

/// Issuer/subject consistency (names, key identifiers, validity).
pub fn chain(issuer: &Path, subject: &Path) {
    run(
        "lint_pkix_signer_signee_cert_chain",
        &["lint", "-s", "WARNING"],
        &[issuer, subject],
    );
}

/// RFC 5280 lint of a CRL (PEM or DER).
pub fn crl(crl: &Path) {
    run(
        "lint_crl",
        &["lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING"],
        &[crl],
    );
}

/// RFC 5280 lint of an ARL.
pub fn arl(crl: &Path) {
    run(
        "lint_crl",
        &["lint", "-t", "ARL", "-p", "PKIX", "-s", "WARNING"],
        &[crl],
    );
}

/// RFC 6960 lint of a DER OCSP response.
pub fn ocsp_response(response: &Path) {
    run(
        "lint_ocsp_response",
        &["lint", "-s", "WARNING"],
        &[response],
    );
}
