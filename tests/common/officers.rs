//! Security officers' cards as OpenSSL makes them, and their approvals of a ceremony's
//! proposal (`openssl cms -sign -binary -nodetach`), as docs/ceremonies.md tells an officer.
use std::path::{Path, PathBuf};

use super::openssl;

/// A card's signature key and certificate for `subject` (`/GN=../SN=../CN=..`), valid from now
/// for `days`: (key, certificate PEM, certificate DER).
pub fn card(dir: &Path, name: &str, subject: &str, days: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    card_with_key(dir, name, subject, days, None)
}

/// [`card`], with the key of another card when `key_of` names one.
pub fn card_with_key(
    dir: &Path,
    name: &str,
    subject: &str,
    days: &str,
    key_of: Option<&Path>,
) -> (PathBuf, PathBuf, Vec<u8>) {
    let (key, pem, der) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.der")),
    );
    let (key_path, pem_path) = (key.to_str().unwrap(), pem.to_str().unwrap());
    let mut args = match key_of {
        None => words("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout"),
        Some(_) => words("req -x509 -key"),
    };
    let key_path = key_of.map_or(key_path, |k| k.to_str().unwrap());
    args.extend([
        key_path,
        "-addext",
        "keyUsage=critical,nonRepudiation",
        "-days",
        days,
    ]);
    args.extend(["-out", pem_path, "-subj", subject]);
    let (ok, text) = openssl(&args);
    assert!(ok, "{text}");
    let mut args = words("x509 -outform DER -in");
    args.extend([pem_path, "-out", der.to_str().unwrap()]);
    let (ok, text) = openssl(&args);
    assert!(ok, "{text}");
    let key = key_of.map_or(key, Path::to_path_buf);
    (key, pem, std::fs::read(der).unwrap())
}

/// An approval: `bytes` signed with a card's key, as an attached CMS SignedData (DER).
pub fn approve(dir: &Path, (key, pem): (&Path, &Path), bytes: &[u8]) -> Vec<u8> {
    let input = dir.join("to-sign");
    let output = dir.join("approval.der");
    std::fs::write(&input, bytes).unwrap();
    let mut args = words("cms -sign -binary -nodetach -outform DER -md sha256");
    args.extend([
        "-signer",
        pem.to_str().unwrap(),
        "-inkey",
        key.to_str().unwrap(),
    ]);
    args.extend([
        "-in",
        input.to_str().unwrap(),
        "-out",
        output.to_str().unwrap(),
    ]);
    let (ok, text) = openssl(&args);
    assert!(ok, "{text}");
    std::fs::read(output).unwrap()
}

/// The words of a command line without spaces inside its arguments.
pub fn words(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}
