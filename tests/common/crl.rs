//! CRLs as a relying party sees them: fetched from the daemon's validation listener (or read
//! where they are published), then read, verified and converted by `openssl crl`.
use std::collections::BTreeMap;
use std::path::Path;

use super::daemon::{Daemon, http};
use super::openssl;

/// GETs `path` (a CRL, a CA certificate) from the daemon's validation listener into `to`:
/// it must answer 200. Returns the body.
pub fn fetch(daemon: &Daemon, path: &str, to: &Path) -> Vec<u8> {
    let (status, _, body) = http(daemon.va, "GET", path, &[], b"");
    assert_eq!(status, 200, "GET {path}");
    std::fs::write(to, &body).unwrap();
    body
}

/// `openssl crl -inform DER -in CRL ARGS...`: (success, output).
pub fn openssl_crl(crl: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["crl", "-inform", "DER", "-in", crl.to_str().unwrap()];
    all.extend_from_slice(args);
    openssl(&all)
}

/// `openssl crl -noout -text` of a DER CRL, verified against `signer` when there is one (the
/// output then says `verify OK`). The command must succeed.
pub fn text(crl: &Path, signer: Option<&Path>) -> String {
    let mut args = vec!["-noout", "-text"];
    if let Some(signer) = signer {
        args.extend(["-CAfile", signer.to_str().unwrap()]);
    }
    let (ok, text) = openssl_crl(crl, &args);
    assert!(ok, "{text}");
    text
}

/// Checks the signature of a DER CRL against `signer`: `openssl crl` must say `verify OK`.
pub fn assert_signed_by(crl: &Path, signer: &Path, what: &str) {
    let (ok, text) = openssl_crl(crl, &["-noout", "-CAfile", signer.to_str().unwrap()]);
    assert!(ok && text.contains("verify OK"), "{what}: {text}");
}

/// The CRL number of a DER CRL.
pub fn number(crl: &Path) -> u64 {
    let (ok, text) = openssl_crl(crl, &["-noout", "-crlnumber"]);
    assert!(ok, "{text}");
    u64::from_str_radix(text.trim().trim_start_matches("crlNumber=0x"), 16).unwrap()
}

/// The DER CRL `crl` written as PEM into `pem` (for `openssl verify -CRLfile`).
pub fn to_pem(crl: &Path, pem: &Path) {
    let (ok, text) = openssl_crl(crl, &["-out", pem.to_str().unwrap()]);
    assert!(ok, "{text}");
}

/// The serials (upper-case hex) a CRL's text lists, and its number (0 without one).
pub fn serials_and_number(text: &str) -> (Vec<String>, u64) {
    let serials = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(|s| s.trim().to_ascii_uppercase())
        .collect();
    let number = text
        .lines()
        .skip_while(|l| !l.contains("X509v3 CRL Number"))
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    (serials, number)
}

/// Each entry of a CRL's text (its revocation date and extensions), by serial (upper-case hex).
pub fn entries(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(serial) = line.strip_prefix("Serial Number: ") {
            out.extend(current.take());
            current = Some((serial.to_ascii_uppercase(), String::new()));
        } else if line.starts_with("Signature Algorithm") {
            out.extend(current.take());
        } else if let Some((_, entry)) = current.as_mut() {
            entry.push_str(line);
            entry.push('\n');
        }
    }
    out.extend(current.take());
    out
}
