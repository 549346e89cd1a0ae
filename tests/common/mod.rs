//! Test harness: a real SoftHSM2 token in a temporary directory, a configuration pointing at
//! it, the built `sceau` binary, and OpenSSL and pkilint as independent judges.
//!
//! Nothing here mocks the HSM, the store or the network.
#![allow(dead_code)]

pub mod crl;
pub mod daemon;
pub mod lint;
pub mod nats;
pub mod officers;
pub mod ra;
pub mod tokens;
pub mod x509;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

pub use tokens::{SOFTHSM_MODULE, Token, kryoptic_module, run_ok};
pub use x509::serial_of;

pub const ORG: &str = "/C=FR/O=MINISTERE DE LA JUSTICE TEST/OU=0002 123456789";

/// The CA key algorithms of a test PKI.
#[derive(Clone, Copy, Debug)]
pub struct Keys {
    pub root: &'static str,
    pub issuing: &'static str,
    pub ocsp: &'static str,
    pub rsa_pss: bool,
}

impl Keys {
    /// The defaults of config/sceau.toml.
    pub const EC: Keys = Keys {
        root: "p384",
        issuing: "p384",
        ocsp: "p256",
        rsa_pss: false,
    };
    pub const RSA: Keys = Keys {
        root: "rsa4096",
        issuing: "rsa3072",
        ocsp: "rsa3072",
        rsa_pss: false,
    };
    pub const RSA_PSS: Keys = Keys {
        root: "rsa4096",
        issuing: "rsa3072",
        ocsp: "rsa3072",
        rsa_pss: true,
    };
}

/// A test PKI: token, PIN, configuration and data directory, removed on drop.
pub struct Pki {
    pub dir: TempDir,
    pub config: PathBuf,
}

/// sceau's fault-injecting PKCS#11 module (hsm/fault-module), built beside the sceau binary
/// (`cargo build --release -p sceau-fault-module`; tests/run.sh builds it).
pub fn fault_module() -> PathBuf {
    let sceau = Path::new(env!("CARGO_BIN_EXE_sceau"));
    let path = sceau.with_file_name("libsceau_fault_module.so");
    assert!(
        path.is_file(),
        "{} is missing: cargo build --release -p sceau-fault-module",
        path.display()
    );
    path
}

/// Tells the fault module what to inject (`line`, e.g. `device_error 0.2`): the control file
/// is replaced by a rename, never seen half-written.
pub fn set_fault(control: &Path, line: &str) {
    let next = control.with_extension("next");
    std::fs::write(&next, format!("{line}\n")).unwrap();
    std::fs::rename(&next, control).unwrap();
}

impl Pki {
    /// Puts the fault module between sceau and the token: `[hsm] module` becomes the fault
    /// module, which loads the real one (`SCEAU_FAULT_REAL`) and reads what to inject from the
    /// returned control file (`none` to start with). The token's own parameters
    /// (`module_parameters`, `SOFTHSM2_CONF`) go through unchanged.
    pub fn wrap_in_fault_module(&self) -> PathBuf {
        let control = self.path("fault-control");
        set_fault(&control, "none");
        let config = std::fs::read_to_string(&self.config).unwrap();
        let mut real = None;
        let mut had_env = false;
        let mut lines = Vec::new();
        for line in config.lines() {
            if let Some(module) = line.strip_prefix("module = ") {
                real = Some(module.to_owned());
                lines.push(format!("module = \"{}\"", fault_module().display()));
            } else if let Some(rest) = line.strip_prefix("module_env = { ") {
                had_env = true;
                lines.push(format!(
                    "module_env = {{ SCEAU_FAULT_REAL = {}, SCEAU_FAULT_CONTROL = \"{}\", {rest}",
                    real.clone().expect("module before module_env"),
                    control.display()
                ));
            } else {
                lines.push(line.to_owned());
            }
        }
        if !had_env {
            let at = lines
                .iter()
                .position(|l| l.starts_with("module = "))
                .unwrap();
            lines.insert(
                at + 1,
                format!(
                    "module_env = {{ SCEAU_FAULT_REAL = {}, SCEAU_FAULT_CONTROL = \"{}\" }}",
                    real.expect("a module line"),
                    control.display()
                ),
            );
        }
        std::fs::write(&self.config, lines.join("\n") + "\n").unwrap();
        control
    }

    /// Generates a P-256 key pair labelled `label` on this PKI's token with OpenSC's
    /// pkcs11-tool, as another program sharing the token would (SoftHSM2 and kryoptic, whose
    /// configuration pkcs11-tool can be given).
    pub fn foreign_key(&self, token: Token, label: &str) {
        self.foreign_key_with(token, label, &[]);
    }

    /// [`Pki::foreign_key`], with more of pkcs11-tool's arguments (`--always-auth`, `--id`).
    pub fn foreign_key_with(&self, token: Token, label: &str, more: &[&str]) {
        let mut tool = self.pkcs11_tool(token);
        tool.args([
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            label,
        ])
        .args(more);
        run_ok(&mut tool, "pkcs11-tool --keypairgen");
    }

    /// The public key labelled `label` on the token, as PEM in `name`.pem (read by pkcs11-tool,
    /// converted by OpenSSL).
    pub fn public_key_pem(&self, token: Token, label: &str, name: &str) -> PathBuf {
        let der = self.path(&format!("{name}.der"));
        let mut tool = self.pkcs11_tool(token);
        tool.args(["--read-object", "--type", "pubkey", "--label", label, "-o"])
            .arg(&der);
        run_ok(&mut tool, "pkcs11-tool --read-object");
        let pem = self.path(&format!("{name}.pem"));
        let (ok, text) = openssl(&[
            "pkey",
            "-pubin",
            "-inform",
            "DER",
            "-in",
            der.to_str().unwrap(),
            "-out",
            pem.to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        pem
    }

    /// The private keys on the token, as pkcs11-tool lists them (with their "Access" flags).
    pub fn private_keys_listed(&self, token: Token) -> String {
        let mut tool = self.pkcs11_tool(token);
        tool.args(["--list-objects", "--type", "privkey"]);
        run_ok(&mut tool, "pkcs11-tool --list-objects")
    }

    /// OpenSC's pkcs11-tool on this PKI's token, logged in.
    fn pkcs11_tool(&self, token: Token) -> Command {
        let mut tool = Command::new("pkcs11-tool");
        match token {
            Token::SoftHsm2 => {
                tool.env("SOFTHSM2_CONF", self.path("softhsm2.conf"))
                    .arg("--module")
                    .arg(SOFTHSM_MODULE);
            }
            Token::Kryoptic => {
                tool.env("KRYOPTIC_CONF", self.path("kryoptic.conf"))
                    .arg("--module")
                    .arg(kryoptic_module());
            }
            Token::Nss => panic!("pkcs11-tool cannot give NSS softokn its parameters"),
        }
        tool.args([
            "--token-label",
            token.label(),
            "--login",
            "--pin",
            tokens::PIN,
        ]);
        tool
    }

    /// A PKI on the token `SCEAU_TEST_TOKEN` names.
    pub fn new(keys: Keys) -> Self {
        Self::on(Token::from_env(), keys)
    }

    /// A PKI on a new token of the kind `token`, in a temporary directory.
    pub fn on(token: Token, keys: Keys) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("sceau-{}-", token.name()))
            .tempdir()
            .unwrap();
        let root = dir.path();
        let hsm = token.make(root);
        let config = root.join("sceau.toml");
        std::fs::write(&config, config_text(root, keys, &hsm)).unwrap();
        Pki { dir, config }
    }

    /// Adds the `[ra]` table: a self-signed TLS certificate for the RA listener (ra-tls.pem,
    /// trusted by clients with `--cacert`) and generous rate limits.
    pub fn enable_ra(&self, requests_per_minute: u32) {
        let (ok, text) = openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=sceau RA test",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            self.path("ra-tls.key").to_str().unwrap(),
            "-out",
            self.path("ra-tls.pem").to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        let mut config = std::fs::read_to_string(&self.config).unwrap();
        config.push_str(&format!(
            "\n[ra]\ntls_certificate = \"{}\"\ntls_private_key = \"{}\"\nrequests_per_minute = {requests_per_minute}\nburst = {requests_per_minute}\n",
            self.path("ra-tls.pem").display(),
            self.path("ra-tls.key").display(),
        ));
        std::fs::write(&self.config, config).unwrap();
    }

    /// Adds the `[nats]` table: the CA publishes to the servers `urls`.
    pub fn enable_nats(&self, urls: &[String], replicas: usize) {
        let mut config = std::fs::read_to_string(&self.config).unwrap();
        let servers: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        config.push_str(&format!(
            "\n[nats]\nservers = [{}]\nreplicas = {replicas}\n",
            servers.join(", ")
        ));
        std::fs::write(&self.config, config).unwrap();
    }

    /// Copies the policies into this PKI's directory and points the configuration at the copy
    /// (for tests that change them); returns the copy.
    pub fn private_policies(&self) -> PathBuf {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let copy = self.path("policies");
        std::fs::create_dir_all(&copy).unwrap();
        for entry in std::fs::read_dir(&source).unwrap().flatten() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
        let config = std::fs::read_to_string(&self.config).unwrap().replace(
            &format!("policies_dir = \"{}\"", source.display()),
            &format!("policies_dir = \"{}\"", copy.display()),
        );
        std::fs::write(&self.config, config).unwrap();
        copy
    }

    /// An OCSP request (DER, SHA-1 CertID, no nonce) for a certificate of the issuing CA, made
    /// by `openssl ocsp -reqout`.
    pub fn ocsp_request(&self, certificate: &Path) -> Vec<u8> {
        let issuer = self.data_dir().join("certs").join("ac-agents.pem");
        self.ocsp_request_under(&issuer, certificate)
    }

    /// The same for a certificate of the issuing CA whose certificate is `issuer` (PEM).
    pub fn ocsp_request_under(&self, issuer: &Path, certificate: &Path) -> Vec<u8> {
        let path = self.path("request.der");
        let mut args = vec!["ocsp", "-issuer", issuer.to_str().unwrap()];
        args.extend(["-cert", certificate.to_str().unwrap(), "-no_nonce"]);
        args.extend(["-reqout", path.to_str().unwrap()]);
        let (ok, text) = openssl(&args);
        assert!(ok, "{text}");
        std::fs::read(path).unwrap()
    }

    /// A new P-256 key and a justice-auth certificate for `subject`, issued by `sceau issue`
    /// (through the daemon when one runs); returns the certificate's path (`name.pem`).
    pub fn issue_holder(&self, name: &str, subject: &str) -> PathBuf {
        let csr = self.csr(name, KeyKind::P256, subject);
        self.issue_into(&format!("{name}.pem"), "justice-auth", &csr, &[])
    }

    /// `sceau issue --policy POLICY --csr CSR EXTRA...` (e.g. `--holder H`): what it did.
    pub fn issue(&self, policy: &str, csr: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["issue", "--policy", policy, "--csr", csr.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.sceau(&args)
    }

    /// The same, which must succeed: the certificate (PEM).
    pub fn issue_ok(&self, policy: &str, csr: &Path, extra: &[&str]) -> String {
        let out = self.issue(policy, csr, extra);
        assert!(
            out.status.success(),
            "sceau issue --policy {policy} --csr {} {extra:?} failed:\n{}",
            csr.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The same, the certificate written to the file `name` of the PKI's directory: its path.
    pub fn issue_into(&self, name: &str, policy: &str, csr: &Path, extra: &[&str]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, self.issue_ok(policy, csr, extra)).unwrap();
        path
    }

    /// A new P-256 key (`name.key`) and a certificate of `policy` for `subject`, issued to the
    /// holder `holder` by `sceau issue`; returns the certificate's path (`name.pem`).
    pub fn issue_to(&self, name: &str, policy: &str, holder: &str, subject: &str) -> PathBuf {
        let csr = self.csr(name, KeyKind::P256, subject);
        self.issue_into(&format!("{name}.pem"), policy, &csr, &["--holder", holder])
    }

    /// A card for `holder` with the id `card`: two new P-256 keys (`name.key` for
    /// authentication, `name-sig.key` for signature) and both certificates issued by `sceau card
    /// issue` for `subject`; returns the paths of the authentication and signature certificates.
    pub fn issue_card(
        &self,
        name: &str,
        holder: &str,
        card: &str,
        subject: &str,
    ) -> (PathBuf, PathBuf) {
        let auth = self.csr(name, KeyKind::P256, subject);
        let sign = self.csr(&format!("{name}-sig"), KeyKind::P256, subject);
        let out = self.path(&format!("{name}-card"));
        std::fs::create_dir_all(&out).unwrap();
        let extra = ["--card", card, "--out-dir", out.to_str().unwrap()];
        self.card_issue_ok(holder, (&auth, &sign), &extra);
        (out.join("auth.pem"), out.join("sign.pem"))
    }

    /// `sceau card issue --holder HOLDER --auth-csr AUTH --sign-csr SIGN EXTRA...`.
    pub fn card_issue(&self, holder: &str, (auth, sign): (&Path, &Path), extra: &[&str]) -> Output {
        let mut args = vec!["card", "issue", "--holder", holder, "--auth-csr"];
        args.extend([auth.to_str().unwrap(), "--sign-csr", sign.to_str().unwrap()]);
        args.extend_from_slice(extra);
        self.sceau(&args)
    }

    /// The same, which must succeed: what it printed (the certificates unless `--out-dir`).
    pub fn card_issue_ok(&self, holder: &str, csrs: (&Path, &Path), extra: &[&str]) -> String {
        let out = self.card_issue(holder, csrs, extra);
        assert!(
            out.status.success(),
            "sceau card issue --holder {holder} {extra:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What `openssl ocsp` (no nonce, response verified against the root and the first
    /// responder) says of a certificate of the first issuing CA: its output, which contains
    /// `: good`, `: revoked` or `: unknown`.
    pub fn ocsp_status(&self, daemon: &daemon::Daemon, certificate: &Path) -> String {
        self.ocsp_query(daemon, &["-cert", certificate.to_str().unwrap()])
    }

    /// The same for a serial number (hexadecimal) of the first issuing CA.
    pub fn ocsp_serial_status(&self, daemon: &daemon::Daemon, serial: &str) -> String {
        self.ocsp_query(daemon, &["-serial", &format!("0x{serial}")])
    }

    fn ocsp_query(&self, daemon: &daemon::Daemon, which: &[&str]) -> String {
        let certs = self.data_dir().join("certs");
        let issuer = certs.join("ac-agents.pem");
        let mut args = vec!["ocsp", "-issuer", issuer.to_str().unwrap()];
        args.extend_from_slice(which);
        let url = daemon.url("/ocsp");
        let root = certs.join("racine.pem");
        let responder = certs.join("ocsp-ac-agents.pem");
        args.extend_from_slice(&[
            "-url",
            &url,
            "-no_nonce",
            "-CAfile",
            root.to_str().unwrap(),
            "-VAfile",
            responder.to_str().unwrap(),
        ]);
        openssl(&args).1
    }

    /// The `Authorization` header value of the running daemon's admin API.
    pub fn admin_bearer(&self) -> String {
        let token = std::fs::read_to_string(self.data_dir().join("admin.token")).unwrap();
        format!("Bearer {}", token.trim())
    }

    /// The serials (upper-case hex, as `openssl crl -text` prints them) listed by the CRL
    /// `name` served by the daemon, and the CRL's number.
    pub fn served_crl(&self, daemon: &daemon::Daemon, name: &str) -> (Vec<String>, u64) {
        crl::serials_and_number(&self.served_crl_text(daemon, name))
    }

    /// `openssl crl -text` of the CRL `name` served by the daemon (kept as served-NAME.crl).
    pub fn served_crl_text(&self, daemon: &daemon::Daemon, name: &str) -> String {
        let path = self.path(&format!("served-{name}.crl"));
        crl::fetch(daemon, &format!("/crl/{name}.crl"), &path);
        crl::text(&path, None)
    }

    /// `sceau revoke` of `certificate` for `reason`, which must succeed: its output.
    pub fn revoke(&self, certificate: &Path, reason: &str) -> String {
        self.revoke_with(certificate, reason, &[])
    }

    /// The same with more options (`--invalidity-date DATE`).
    pub fn revoke_with(&self, certificate: &Path, reason: &str, extra: &[&str]) -> String {
        let serial = serial_of(certificate);
        let mut args = vec!["revoke", "--serial", &serial, "--reason", reason];
        args.extend_from_slice(extra);
        self.sceau_ok(&args)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    /// Runs `sceau -c CONFIG ARGS...`.
    pub fn sceau(&self, args: &[&str]) -> Output {
        self.sceau_with_env(args, &[])
    }

    pub fn sceau_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sceau"));
        command
            .arg("-c")
            .arg(&self.config)
            .arg("--log")
            .arg("warn")
            .args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    }

    /// Runs sceau and returns its standard output; panics with its standard error on failure.
    pub fn sceau_ok(&self, args: &[&str]) -> String {
        let out = self.sceau(args);
        assert!(
            out.status.success(),
            "sceau {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs sceau, which must fail: its standard error.
    pub fn sceau_fails(&self, args: &[&str]) -> String {
        let out = self.sceau(args);
        assert!(!out.status.success(), "sceau {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn init(&self) {
        self.sceau_ok(&["init", "--without-dual-control"]);
    }

    /// `sceau ca export` into DIR/name; returns the directory.
    pub fn export(&self, name: &str) -> PathBuf {
        let out = self.path(name);
        self.sceau_ok(&["ca", "export", "--out", out.to_str().unwrap()]);
        out
    }

    /// A new key and CSR made by OpenSSL; returns the CSR path.
    pub fn csr(&self, name: &str, key: KeyKind, subject: &str) -> PathBuf {
        make_csr(self.dir.path(), name, key, subject)
    }

    /// The number of audit entries, from `sceau audit verify` (which also checks the chain).
    pub fn audit_entries(&self) -> u64 {
        let out = self.sceau_ok(&["audit", "verify"]);
        out.split_whitespace()
            .nth(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected audit verify output: {out}"))
    }

    /// `sceau cert show SERIAL` as JSON.
    pub fn serial_state(&self, serial: &str) -> serde_json::Value {
        serde_json::from_str(&self.sceau_ok(&["cert", "show", serial])).unwrap()
    }
}

/// The configuration of a test PKI in `root`, with `hsm` (module, token and how to reach them)
/// in its `[hsm]` table.
fn config_text(root: &Path, keys: Keys, hsm: &str) -> String {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    format!(
        r#"data_dir = "{data}"
publish_dir = "{publish}"
policies_dir = "{policies}"

[hsm]
{hsm}pin_file = "{pin}"
sessions = 2

[keys]
root = {{ label = "test-root", algorithm = "{root_alg}" }}
issuing = {{ label = "test-issuing", algorithm = "{issuing_alg}" }}
ocsp = {{ label = "test-ocsp", algorithm = "{ocsp_alg}" }}
rsa_pss = {pss}

[root]
name = "racine"
validity_years = 20
subject = {{ C = "FR", O = "MINISTERE DE LA JUSTICE TEST", OU = "0002 123456789", CN = "AC RACINE TEST" }}

[issuing]
name = "ac-agents"
validity_years = 10
subject = {{ C = "FR", O = "MINISTERE DE LA JUSTICE TEST", OU = "0002 123456789", CN = "AC AGENTS TEST" }}

[ocsp_responder]
validity_days = 30
subject = {{ C = "FR", O = "MINISTERE DE LA JUSTICE TEST", OU = "0002 123456789", CN = "OCSP AC AGENTS TEST" }}

[urls]
crl = "http://pki.justice.example.fr/crl/ac-agents.crl"
arl = "http://pki.justice.example.fr/crl/racine.crl"
ocsp = "http://ocsp.pki.justice.example.fr/ocsp"
ca_issuers = "http://pki.justice.example.fr/ca/ac-agents.crt"
root_ca_issuers = "http://pki.justice.example.fr/ca/racine.crt"
cps = "https://pki.justice.example.fr/pc/"

[listen]
va = "127.0.0.1:0"
ra = "127.0.0.1:0"
admin = "127.0.0.1:0"
"#,
        data = root.join("data").display(),
        publish = root.join("publish").display(),
        policies = policies.display(),
        pin = root.join("pin").display(),
        root_alg = keys.root,
        issuing_alg = keys.issuing,
        ocsp_alg = keys.ocsp,
        pss = keys.rsa_pss,
    )
}

/// Holder key types.
#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    P256,
    P384,
    Rsa3072,
    Rsa2048,
}

impl KeyKind {
    fn openssl_args(self) -> &'static [&'static str] {
        match self {
            KeyKind::P256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyKind::P384 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            KeyKind::Rsa3072 => &["-newkey", "rsa:3072"],
            KeyKind::Rsa2048 => &["-newkey", "rsa:2048"],
        }
    }
}

/// `openssl req -new` with a new key; `subject` is appended to the organisation's DN.
pub fn make_csr(dir: &Path, name: &str, key: KeyKind, subject: &str) -> PathBuf {
    let csr = dir.join(format!("{name}.csr"));
    let key_path = dir.join(format!("{name}.key"));
    let mut req = Command::new("openssl");
    req.args(["req", "-new"]).args(key.openssl_args());
    req.args(["-nodes", "-utf8", "-subj", &format!("{ORG}{subject}")]);
    run_ok(
        req.arg("-keyout").arg(&key_path).arg("-out").arg(&csr),
        "openssl req",
    );
    csr
}

/// Runs openssl; returns (success, stdout + stderr).
/// The shell blocks (```sh) of a page of the repository (`docs/...`), in order: what its
/// reader runs.
pub fn shell_blocks(doc: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    let (mut script, mut inside) = (String::new(), false);
    for line in text.lines() {
        match (inside, line.trim_start()) {
            (false, "```sh") => inside = true,
            (true, "```") => inside = false,
            (true, _) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    script
}

pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    (out.status.success(), all_output(&out))
}

/// What a process printed: its standard output, then its standard error.
pub fn all_output(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

/// `date -u -d WHEN` as RFC 3339 (`WHEN` as date(1) reads it: "now", "+25 days", a date...).
pub fn date(when: &str) -> String {
    let mut date = Command::new("date");
    date.args(["-u", "-d", when, "+%Y-%m-%dT%H:%M:%SZ"]);
    run_ok(&mut date, &format!("date -d {when:?}"))
        .trim()
        .to_owned()
}

/// `openssl ocsp -respin RESPONSE` about `certificate` of the issuing CA, verified against the
/// CA files in `certs` (ac-agents.pem, racine.pem, ocsp-ac-agents.pem) and `extra`: (success,
/// output).
pub fn read_ocsp_response(
    response: &Path,
    certificate: &Path,
    certs: &Path,
    extra: &[&str],
) -> (bool, String) {
    let file = |name: &str| certs.join(name).to_str().unwrap().to_owned();
    let (issuer, root, responder) = (
        file("ac-agents.pem"),
        file("racine.pem"),
        file("ocsp-ac-agents.pem"),
    );
    let mut args = vec!["ocsp", "-respin", response.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend(["-issuer", &issuer, "-cert", certificate.to_str().unwrap()]);
    args.extend(["-CAfile", &root, "-VAfile", &responder]);
    openssl(&args)
}

/// `openssl verify -x509_strict` of `certificate` against the PEM files in `trust`.
pub fn verify_chain(dir: &Path, trust: &[&Path], certificate: &Path) {
    let bundle = dir.join("trust-bundle.pem");
    let mut pem = String::new();
    for file in trust {
        pem.push_str(&std::fs::read_to_string(file).unwrap());
    }
    std::fs::write(&bundle, pem).unwrap();
    let (ok, text) = openssl(&[
        "verify",
        "-x509_strict",
        "-CAfile",
        bundle.to_str().unwrap(),
        certificate.to_str().unwrap(),
    ]);
    assert!(
        ok && text.contains(": OK"),
        "openssl verify {}: {text}",
        certificate.display()
    );
}

/// Splits PEM output into files DIR/name-0.pem, DIR/name-1.pem...
pub fn split_pem(dir: &Path, name: &str, pem: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (i, block) in pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|b| b.contains("BEGIN"))
        .enumerate()
    {
        let path = dir.join(format!("{name}-{i}.pem"));
        std::fs::write(&path, block.trim_start()).unwrap();
        files.push(path);
    }
    files
}
