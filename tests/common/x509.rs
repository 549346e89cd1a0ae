//! One `openssl x509` checker: what OpenSSL prints of a certificate, and the fields the tests
//! read from it (serial, dates, issuer, subject, extensions).
use std::path::Path;

use super::openssl;

/// `openssl x509 -in CERTIFICATE -noout ARGS...` (PEM): its output. The command must succeed.
pub fn x509(certificate: &Path, args: &[&str]) -> String {
    let mut all = vec!["x509", "-in", certificate.to_str().unwrap(), "-noout"];
    all.extend_from_slice(args);
    let (ok, text) = openssl(&all);
    assert!(
        ok,
        "openssl x509 {} {args:?}: {text}",
        certificate.display()
    );
    text
}

/// `openssl x509 -text`: the whole certificate, as OpenSSL reads it.
pub fn text(certificate: &Path) -> String {
    x509(certificate, &["-text"])
}

/// The serial, as `openssl x509 -serial` prints it.
pub fn serial_of(certificate: &Path) -> String {
    x509(certificate, &["-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

/// The value of one `name=value` field that `openssl x509 -FIELD` prints (`notBefore`,
/// `notAfter`, `issuer`, `subject`).
pub fn field(certificate: &Path, option: &str, name: &str) -> String {
    let text = x509(certificate, &[option]);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in: {text}"))
        .trim()
        .to_owned()
}

/// notBefore as OpenSSL prints it ("Nov 25 06:12:33 2026 GMT").
pub fn not_before(certificate: &Path) -> String {
    field(certificate, "-startdate", "notBefore")
}

/// notAfter as OpenSSL prints it.
pub fn not_after(certificate: &Path) -> String {
    field(certificate, "-enddate", "notAfter")
}

/// The issuer's name, as `openssl x509 -issuer` prints it.
pub fn issuer(certificate: &Path) -> String {
    field(certificate, "-issuer", "issuer")
}

/// The subject's name, as `openssl x509 -subject` prints it.
pub fn subject(certificate: &Path) -> String {
    field(certificate, "-subject", "subject")
}
