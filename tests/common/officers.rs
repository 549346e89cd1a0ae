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

/// An officer whose card OpenSSL simulates: the signature key and its certificate (PEM).
pub struct Officer {
    pub key: PathBuf,
    pub pem: PathBuf,
}

impl Officer {
    /// A new card for `subject`, valid `days` from now, in `dir` (`name.key`, `name.pem`).
    pub fn new(dir: &Path, name: &str, subject: &str, days: &str) -> Self {
        let (key, pem, _) = card(dir, name, subject, days);
        Officer { key, pem }
    }
}

/// `sceau ceremony propose OPERATION ARGS` with `env`, written to `name.json` in the PKI's
/// directory: the command's output.
pub fn propose(
    pki: &super::Pki,
    name: &str,
    operation: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let proposal = pki.path(&format!("{name}.json"));
    let mut all = vec!["ceremony", "propose", operation];
    all.extend_from_slice(args);
    all.extend(["--out", proposal.to_str().unwrap()]);
    pki.sceau_with_env(&all, env)
}

/// `sceau ceremony run name.json` with `env`: each of `officers` approving its bytes with
/// openssl, and `approvals` given besides (a card's): the command's output.
pub fn run(
    pki: &super::Pki,
    name: &str,
    officers: &[&Officer],
    approvals: &[PathBuf],
    env: &[(&str, &str)],
) -> std::process::Output {
    let proposal = pki.path(&format!("{name}.json"));
    let bytes = std::fs::read(&proposal).unwrap();
    let mut run = vec![
        "ceremony".to_owned(),
        "run".to_owned(),
        proposal.display().to_string(),
    ];
    for (i, officer) in officers.iter().enumerate() {
        let path = pki.path(&format!("{name}.{i}.der"));
        std::fs::write(
            &path,
            approve(pki.path("").as_path(), (&officer.key, &officer.pem), &bytes),
        )
        .unwrap();
        run.push("--approval".to_owned());
        run.push(path.display().to_string());
    }
    for path in approvals {
        run.push("--approval".to_owned());
        run.push(path.display().to_string());
    }
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    pki.sceau_with_env(&run, env)
}

/// A ceremony end to end: [`propose`], then [`run`] with the approvals of `officers`: the
/// run's output, or the proposal's when it was refused.
pub fn ceremony(
    pki: &super::Pki,
    name: &str,
    operation: &str,
    args: &[&str],
    officers: &[&Officer],
    env: &[(&str, &str)],
) -> std::process::Output {
    let out = propose(pki, name, operation, args, env);
    if !out.status.success() {
        return out;
    }
    run(pki, name, officers, &[], env)
}

/// A signature certificate (keyUsage nonRepudiation) for `subject` over the public key
/// `public_pem` (a card's key, made elsewhere), issued by a card CA key of its own: its path
/// (`name.pem` in `dir`).
pub fn certificate_for_key(dir: &Path, public_pem: &Path, subject: &str, name: &str) -> PathBuf {
    let extensions = dir.join(format!("{name}.ext"));
    std::fs::write(&extensions, "keyUsage=critical,nonRepudiation\n").unwrap();
    let (issuer_key, certificate) = (
        dir.join(format!("{name}-issuer.key")),
        dir.join(format!("{name}.pem")),
    );
    let mut args = words("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out");
    args.push(issuer_key.to_str().unwrap());
    let (ok, text) = openssl(&args);
    assert!(ok, "{text}");
    let mut args = words("x509 -new -days 365 -subj");
    args.extend([
        subject,
        "-key",
        issuer_key.to_str().unwrap(),
        "-force_pubkey",
        public_pem.to_str().unwrap(),
        "-extfile",
        extensions.to_str().unwrap(),
        "-out",
        certificate.to_str().unwrap(),
    ]);
    let (ok, text) = openssl(&args);
    assert!(ok, "{text}");
    certificate
}
