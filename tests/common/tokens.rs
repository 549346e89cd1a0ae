//! The PKCS#11 tokens sceau's tests (and benches/issuance.rs, which includes this file) run
//! on: SoftHSM2, NSS's software token and kryoptic, each made in a folder of its own.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// NSS's software token (Debian: libnss3).
pub const NSS_MODULE: &str = "/usr/lib/x86_64-linux-gnu/libsoftokn3.so";
/// The user PIN of every token made here (in `root/pin`).
pub const PIN: &str = "4242-test-pin";

/// The PKCS#11 tokens the suite runs on. `Pki::new` makes the one `SCEAU_TEST_TOKEN` names
/// (`softhsm2`, the default, `nss` or `kryoptic`): tests/run.sh runs the HSM-facing test files
/// once per token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    SoftHsm2,
    /// NSS's software token (softokn, Debian's libnss3).
    Nss,
    /// kryoptic, a PKCS#11 software token in Rust, built by tests/run.sh.
    Kryoptic,
}

impl Token {
    pub const ALL: [Token; 3] = [Token::SoftHsm2, Token::Nss, Token::Kryoptic];

    /// The token `SCEAU_TEST_TOKEN` names (SoftHSM2 when unset).
    pub fn from_env() -> Token {
        match std::env::var("SCEAU_TEST_TOKEN").as_deref() {
            Err(_) | Ok("") | Ok("softhsm2") => Token::SoftHsm2,
            Ok("nss") => Token::Nss,
            Ok("kryoptic") => Token::Kryoptic,
            Ok(other) => panic!("SCEAU_TEST_TOKEN={other}: expected softhsm2, nss or kryoptic"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Token::SoftHsm2 => "softhsm2",
            Token::Nss => "nss",
            Token::Kryoptic => "kryoptic",
        }
    }

    /// The label the test token carries.
    pub fn label(self) -> &'static str {
        match self {
            Token::SoftHsm2 => "sceau-test",
            Token::Nss => "sceau-nss",
            Token::Kryoptic => "sceau-kryoptic",
        }
    }

    /// Makes a token with the user PIN of `root/pin` in the folder `root`, and returns the
    /// lines of the `[hsm]` table that reach it.
    pub fn make(self, root: &Path) -> String {
        std::fs::write(root.join("pin"), format!("{PIN}\n")).unwrap();
        match self {
            Token::SoftHsm2 => {
                let softhsm_conf = root.join("softhsm2.conf");
                let made = softhsm_token(&softhsm_conf, self.label(), "so-secret-1", PIN);
                assert!(
                    made.status.success(),
                    "softhsm2-util: {}",
                    String::from_utf8_lossy(&made.stderr)
                );
                format!(
                    "module = \"{SOFTHSM_MODULE}\"\ntoken_label = \"{}\"\nmodule_env = {{ SOFTHSM2_CONF = \"{}\" }}\n",
                    self.label(),
                    softhsm_conf.display()
                )
            }
            // A key database made by `certutil -N` with the PIN, named to the module through
            // `hsm.module_parameters`.
            Token::Nss => {
                let database = root.join("nssdb");
                std::fs::create_dir_all(&database).unwrap();
                let mut certutil = Command::new("certutil");
                certutil
                    .arg("-N")
                    .arg("-d")
                    .arg(format!("sql:{}", database.display()))
                    .arg("-f")
                    .arg(root.join("pin"));
                run_ok(&mut certutil, "certutil -N (apt-get install libnss3-tools)");
                format!(
                    "module = \"{NSS_MODULE}\"\ntoken_label = \"{}\"\nmodule_parameters = \"configdir='sql:{}' certPrefix='' keyPrefix='' secmod='secmod.db' flags= dbTokenDescription='{}'\"\n",
                    self.label(),
                    database.display(),
                    self.label()
                )
            }
            // A SQLite token declared in a kryoptic configuration file, initialised by OpenSC's
            // pkcs11-tool (an independent PKCS#11 client); sceau names the file to the module
            // in `C_Initialize` (`kryoptic_conf=PATH`).
            Token::Kryoptic => {
                let conf = root.join("kryoptic.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "[[slots]]\nslot = 1\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n",
                        root.join("kryoptic.sqlite").display()
                    ),
                )
                .unwrap();
                let module = kryoptic_module();
                let tool = |args: &[&str]| {
                    let mut command = Command::new("pkcs11-tool");
                    command
                        .env("KRYOPTIC_CONF", &conf)
                        .arg("--module")
                        .arg(&module)
                        .args(args);
                    run_ok(&mut command, "pkcs11-tool (apt-get install opensc)");
                };
                tool(&[
                    "--init-token",
                    "--label",
                    self.label(),
                    "--so-pin",
                    "so-secret-1",
                ]);
                tool(&[
                    "--token-label",
                    self.label(),
                    "--login",
                    "--login-type",
                    "so",
                    "--so-pin",
                    "so-secret-1",
                    "--init-pin",
                    "--pin",
                    PIN,
                ]);
                format!(
                    "module = \"{}\"\ntoken_label = \"{}\"\nmodule_parameters = \"kryoptic_conf={}\"\n",
                    module.display(),
                    self.label(),
                    conf.display()
                )
            }
        }
    }
}

/// kryoptic's PKCS#11 library, as tests/run.sh builds it (SCEAU_KRYOPTIC_MODULE).
pub fn kryoptic_module() -> PathBuf {
    let path = std::env::var_os("SCEAU_KRYOPTIC_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/sceau/kryoptic/libkryoptic_pkcs11.so")
        });
    assert!(
        path.is_file(),
        "kryoptic's module {} is missing: tests/run.sh builds it (or set SCEAU_KRYOPTIC_MODULE)",
        path.display()
    );
    path
}

/// A new SoftHSM2 token `label` (SO PIN `so_pin`, user PIN `pin`) in the folder `tokens` beside
/// the configuration file `conf`, which this writes: what softhsm2-util did.
pub fn softhsm_token(conf: &Path, label: &str, so_pin: &str, pin: &str) -> Output {
    let tokens = conf.with_file_name("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    std::fs::write(
        conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap();
    Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            so_pin,
        ])
        .args(["--pin", pin])
        .output()
        .expect("softhsm2-util (apt-get install softhsm2)")
}

/// Runs `command`, which must succeed (`what` names it in the panic): its standard output.
pub fn run_ok(command: &mut Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
