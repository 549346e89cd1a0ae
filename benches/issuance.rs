//! Issuance throughput, and live OCSP signatures, next to the token's raw signing rate,
//! measured in the same run, on each PKCS#11 token the suite runs on.
//!
//!     cargo bench --bench issuance            # RUN_SECS (3) per measurement, REPS (3)
//!     TOKENS=softhsm2,nss,kryoptic cargo bench --bench issuance
//!
//! For each token (TOKENS, default softhsm2; kryoptic needs hsm/kryoptic.sh first) and each
//! issuing-CA key (P-384, RSA-3072; CASES picks some) the bench makes the token in a temporary
//! directory (tests/common/tokens.rs, shared with the tests), runs the key ceremony in a
//! process of its own, then measures with two threads:
//! - raw: C_Sign through cryptoki, one session per thread, on the CA key itself, with the
//!   mechanism sceau uses (P-384: SHA-384 in software + CKM_ECDSA; RSA-3072:
//!   CKM_SHA256_RSA_PKCS) over 1,200 bytes, the size of a TBS certificate;
//! - issuance: `CertificateAuthority::issue` end to end (CSR proof of possession, policy and
//!   lints, durable intent, HSM signature and its verification, certificate stored with its
//!   indexes and audit event), for fresh P-256 holder CSRs (a key is never certified twice);
//! - live OCSP: the token-dependent part of an answer to a request with a nonce (the
//!   responder's P-256 key signs 250 bytes through its session copy, and the signature is
//!   verified), from 8 callers, next to raw C_Sign with that key.
//!
//! It prints the median of REPS runs and the ratio to raw, for CLIENTS concurrent issuance
//! callers (default "2,16"; the HSM pool always has two sessions), with the process CPU use.
//! The token and the CA share the same cores here: every CPU cycle the CA spends (verifying
//! each HSM signature, CSR proofs, fsync) is one a software token cannot use to sign.
#[path = "holders.rs"]
mod holders;
#[path = "../tests/common/tokens.rs"]
mod tokens;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use sceau::ca::{CertificateAuthority, ceremony};
use sceau::config::Config;
use sceau::hsm::{Hsm, HsmSettings};
use sceau::policy::{IssuanceRequest, PolicySet};
use sceau::store::Store;
use sceau::x509::Timestamp;
use sceau::x509::sigalg::{HashAlgorithm, SignatureScheme};
use sceau::x509::time::SystemClock;
use tokens::Token;

const THREADS: usize = 2;
const LIVE_CALLERS: usize = 8;

fn main() {
    match std::env::var_os("SCEAU_BENCH_DIR") {
        Some(dir) => run_case(&PathBuf::from(dir)),
        None => run_all(),
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Each (token, CA key) in a process of its own: SoftHSM2 reads SOFTHSM2_CONF once per process,
/// and NSS softokn refuses a second database in a process.
fn run_all() {
    let tokens = std::env::var("TOKENS").unwrap_or_else(|_| "softhsm2".into());
    let only = std::env::var("CASES").unwrap_or_default();
    println!(
        "issuance bench: HSM pool of {THREADS} sessions, raw C_Sign with {THREADS} threads; {} s per run, median of {}",
        env_or("RUN_SECS", 3u64),
        env_or("REPS", 3usize)
    );
    println!(
        "{:<9} {:<9} {:>13} {:>8} {:>15} {:>7} {:>16}",
        "token", "CA key", "raw C_Sign/s", "callers", "certificates/s", "ratio", "CPU (of 200%)"
    );
    let root = std::env::temp_dir().join(format!("sceau-bench-{}", std::process::id()));
    let mut failed = false;
    for token in tokens.split(',') {
        for issuing in ["p384", "rsa3072"] {
            if !only.is_empty() && !only.split(',').any(|c| c == issuing) {
                continue;
            }
            let dir = root.join(format!("{token}-{issuing}"));
            std::fs::create_dir_all(&dir).unwrap();
            let status = Command::new(std::env::current_exe().unwrap())
                .args(std::env::args_os().skip(1))
                .env("SCEAU_BENCH_DIR", &dir)
                .env("SCEAU_TEST_TOKEN", token)
                .env("SCEAU_BENCH_CASE", issuing)
                .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
                .status()
                .unwrap();
            failed |= !status.success();
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    if failed {
        std::process::exit(1);
    }
}

fn run_case(dir: &Path) {
    let token = Token::from_env();
    let issuing = std::env::var("SCEAU_BENCH_CASE").unwrap_or_else(|_| "p384".into());
    let label = if issuing == "p384" {
        "P-384"
    } else {
        "RSA-3072"
    };
    let secs = Duration::from_secs(env_or("RUN_SECS", 3u64));
    let reps = env_or("REPS", 3usize);
    let clients: Vec<usize> = std::env::var("CLIENTS")
        .unwrap_or_else(|_| "2,16".into())
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();
    let (ca, hsm, config) = set_up(dir, token, &issuing);
    let issuing_key = ca.issuer().key.clone();
    let ocsp_scheme = config.keys.ocsp.algorithm.scheme(config.keys.rsa_pss);
    let responder = hsm
        .signing_key(&config.keys.ocsp.label, ocsp_scheme)
        .unwrap()
        .session_copy();
    let mut raw = Vec::new();
    let mut issued: Vec<Vec<(f64, f64)>> = vec![Vec::new(); clients.len()];
    let (mut raw_ocsp, mut live) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        quiet_gate();
        raw.push(raw_sign_rate(
            &config.hsm,
            issuing_key.label(),
            issuing_key.scheme(),
            secs,
        ));
        for (i, n) in clients.iter().enumerate() {
            quiet_gate();
            issued[i].push(issuance_rate(&ca, *n, secs));
        }
        quiet_gate();
        raw_ocsp.push(raw_sign_rate(
            &config.hsm,
            responder.label(),
            ocsp_scheme,
            secs,
        ));
        quiet_gate();
        live.push(live_signature_rate(&responder, secs));
    }
    let raw = median(&mut raw);
    let name = token.name();
    for (n, runs) in clients.iter().zip(issued.iter_mut()) {
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (rate, cpu) = runs[runs.len() / 2];
        println!(
            "{name:<9} {label:<9} {raw:>13.0} {n:>8} {rate:>15.0} {:>6.0}% {:>15.0}%",
            100.0 * rate / raw,
            cpu
        );
    }
    let (raw_ocsp, live) = (median(&mut raw_ocsp), median(&mut live));
    println!(
        "{name:<9} {:<9} {raw_ocsp:>13.0} {LIVE_CALLERS:>8} {live:>15.0} {:>6.0}%   (live OCSP signatures/s, signed and verified)",
        "OCSP P-256",
        100.0 * live / raw_ocsp
    );
    // The same over HTTP: `sceau serve` answering requests with a nonce (each answer signed
    // live by the responder key in the token, and verified), loaded by wrk.
    let holder = ca
        .issue(
            &IssuanceRequest {
                policy: "justice-auth".into(),
                csr: holder_csr(),
                ..Default::default()
            },
            None,
        )
        .unwrap();
    let holder_path = dir.join("holder.pem");
    std::fs::write(&holder_path, holder.pem()).unwrap();
    // The daemon opens the store and the token itself.
    drop((ca, responder, hsm));
    match nonce_answer_rates(dir, &config, &holder_path, secs, reps) {
        Ok(rate) => println!(
            "{name:<9} {:<9} {raw_ocsp:>13.0} {LIVE_CALLERS:>8} {rate:>15.0} {:>6.0}%   (OCSP answers/s over HTTP to requests with a nonce, sceau serve, wrk)",
            "OCSP P-256",
            100.0 * rate / raw_ocsp
        ),
        Err(skipped) => println!("{name:<9} OCSP over HTTP: not measured ({skipped})"),
    }
}

/// `sceau serve` on this case's configuration, loaded by wrk (2 threads, LIVE_CALLERS
/// connections) with one OCSP request carrying a nonce: the median of `reps` runs, in answers
/// per second. The answer is checked first by `openssl ocsp` (signature, status, nonce), and a
/// run with any non-2xx answer or socket error fails.
fn nonce_answer_rates(
    dir: &Path,
    config: &Config,
    holder: &Path,
    secs: Duration,
    reps: usize,
) -> Result<f64, String> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err("wrk is not installed".into());
    }
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    };
    let (va, admin) = (free_port(), free_port());
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_sceau"))
        .arg("-c")
        .arg(dir.join("sceau.toml"))
        .args(["--log", "warn", "serve", "--listen-va"])
        .arg(format!("127.0.0.1:{va}"))
        .arg("--listen-admin")
        .arg(format!("127.0.0.1:{admin}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let measured = (|| {
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(daemon.stdout.take().unwrap()),
            &mut ready,
        )
        .map_err(|e| e.to_string())?;
        if !ready.starts_with("sceau ready") {
            return Err(format!(
                "the daemon did not start: see {}",
                dir.join("serve.log").display()
            ));
        }
        let certs = config.certs_dir();
        let (issuer, root) = (certs.join("ac-agents.pem"), certs.join("racine.pem"));
        let url = format!("http://127.0.0.1:{va}/ocsp");
        let request = dir.join("nonce-request.der");
        let openssl = |args: &[&str]| {
            let mut all = vec!["ocsp", "-issuer", issuer.to_str().unwrap()];
            all.extend(["-cert", holder.to_str().unwrap(), "-nonce"]);
            all.extend(args);
            let out = Command::new("openssl").args(&all).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr)
        };
        openssl(&["-reqout", request.to_str().unwrap()]);
        let checked = openssl(&[
            "-CAfile",
            root.to_str().unwrap(),
            "-url",
            &url,
            "-resp_text",
        ]);
        if !(checked.contains("Response verify OK")
            && checked.contains(": good")
            && checked.contains("OCSP Nonce"))
        {
            return Err(format!("the answer does not check: {checked}"));
        }
        let script = dir.join("nonce.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/ocsp-request\"\nlocal f = io.open(\"{}\", \"rb\")\nwrk.body = f:read(\"*all\")\nf:close()\n",
                request.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut rates = Vec::new();
        for _ in 0..reps {
            quiet_gate();
            let out = Command::new("wrk")
                .args([
                    "-t2",
                    &format!("-c{LIVE_CALLERS}"),
                    &format!("-d{}s", secs.as_secs()),
                ])
                .arg("-s")
                .arg(&script)
                .arg(&url)
                .output()
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("Non-2xx") || text.contains("Socket errors") {
                return Err(format!("wrk saw errors: {text}"));
            }
            let rate = text
                .lines()
                .find_map(|l| l.strip_prefix("Requests/sec:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or_else(|| format!("no rate in wrk's output: {text}"))?;
            rates.push(rate);
        }
        Ok(median(&mut rates))
    })();
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
    measured
}

/// A token of the kind `token`, a configuration and a key ceremony; returns the opened CA.
fn set_up(dir: &Path, token: Token, issuing: &str) -> (CertificateAuthority, Hsm, Config) {
    let hsm_lines = token.make(dir);
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sceau.toml"))
            .unwrap();
    let mut text = String::new();
    let (mut in_hsm, mut in_ra) = (false, false);
    for line in example.lines() {
        if line.starts_with('[') {
            in_hsm = line == "[hsm]";
            // No registration authority: its TLS files are the development CA's.
            in_ra = line == "[ra]" || line.starts_with("[ra.");
        }
        if in_ra {
            continue;
        }
        let module_line = [
            "module ",
            "module_env ",
            "module_parameters ",
            "token_label ",
        ]
        .iter()
        .any(|key| line.starts_with(key));
        if in_hsm && module_line {
            if line.starts_with("module ") {
                text.push_str(&hsm_lines);
            }
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    let text = text
        .replace(
            "data_dir = \"../var/data\"",
            &format!("data_dir = \"{}/data\"", dir.display()),
        )
        .replace(
            "publish_dir = \"../var/publish\"",
            &format!("publish_dir = \"{}/publish\"", dir.display()),
        )
        .replace(
            "policies_dir = \"../policies\"",
            &format!("policies_dir = \"{}/policies\"", env!("CARGO_MANIFEST_DIR")),
        )
        .replace(
            "pin_file = \"../var/pin\"",
            &format!("pin_file = \"{}/pin\"", dir.display()),
        )
        .replace(
            "algorithm = \"p384\" }\nocsp",
            &format!("algorithm = \"{issuing}\" }}\nocsp"),
        );
    let config_path = dir.join("sceau.toml");
    std::fs::write(&config_path, text).unwrap();
    let config = Config::load(&config_path).unwrap();
    assert_eq!(
        format!("{:?}", config.keys.issuing.algorithm).to_lowercase(),
        issuing.replace('-', "")
    );
    let hsm = Hsm::open(config.hsm.clone()).unwrap();
    let store = Store::open(&config.store_dir()).unwrap();
    ceremony::control::declare_single_person(&store, Timestamp::now()).unwrap();
    ceremony::init(&config, &store, &hsm, Timestamp::now(), false).unwrap();
    let policies = Arc::new(PolicySet::load_dir(&config.policies_dir).unwrap());
    let ca = CertificateAuthority::open(
        store,
        &hsm,
        policies,
        config.urls.clone(),
        Arc::new(SystemClock),
    )
    .unwrap();
    (ca, hsm, config)
}

/// C_Sign on the key `key_label`, THREADS sessions, for `duration`: signatures per second.
fn raw_sign_rate(
    settings: &HsmSettings,
    key_label: &str,
    scheme: SignatureScheme,
    duration: Duration,
) -> f64 {
    let pkcs11 = Pkcs11::new(&settings.module).unwrap();
    sceau::hsm::initialize_module(&pkcs11, settings.module_parameters.as_deref()).unwrap();
    let tbs = vec![0x5au8; 1200];
    // Mechanism holds raw pointers (not Sync): each thread makes its own.
    let mechanism = || match scheme {
        SignatureScheme::EcdsaP256Sha256 | SignatureScheme::EcdsaP384Sha384 => Mechanism::Ecdsa,
        SignatureScheme::RsaPkcs1Sha256 => Mechanism::Sha256RsaPkcs,
        other => panic!("no raw reference for {other}"),
    };
    let data = match scheme {
        SignatureScheme::EcdsaP256Sha256 => HashAlgorithm::Sha256.digest(&tbs),
        SignatureScheme::EcdsaP384Sha384 => HashAlgorithm::Sha384.digest(&tbs),
        _ => tbs,
    };
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label() == settings.token_label)
        .unwrap();
    let count = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let elapsed = std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                let session = pkcs11.open_rw_session(slot).unwrap();
                // Already logged in through the CA's own login session (login is per token).
                let _ = session.login(UserType::User, Some(&tokens::PIN.to_owned().into()));
                let key = session
                    .find_objects(&[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::Token(true),
                        Attribute::Label(key_label.as_bytes().to_vec()),
                    ])
                    .unwrap()[0];
                let mechanism = mechanism();
                while !stop.load(Ordering::Relaxed) {
                    // SoftHSM2 now and then answers CKR_GENERAL_ERROR to concurrent RSA
                    // signatures (seen here); count those, do not stop.
                    match session.sign(&mechanism, key, &data) {
                        Ok(_) => count.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        run_for(duration, &stop).0
    });
    let errors = errors.load(Ordering::Relaxed);
    if errors > 0 {
        eprintln!("  raw: {errors} C_Sign calls failed, not counted");
    }
    count.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

/// The responder key signing and checking 250 bytes (a ResponseData with a nonce) from
/// LIVE_CALLERS threads through sceau's pool, for `duration`: signatures per second.
fn live_signature_rate(key: &sceau::hsm::SigningKey, duration: Duration) -> f64 {
    let data = vec![0x3cu8; 250];
    let count = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let elapsed = std::thread::scope(|scope| {
        for _ in 0..LIVE_CALLERS {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let signature = key.sign(&data).unwrap();
                    key.verify(&data, &signature).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        run_for(duration, &stop).0
    });
    count.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

/// Lets the workers run for `duration`, then stops them: the time they ran and this process's
/// CPU seconds meanwhile (what other processes took is reported).
fn run_for(duration: Duration, stop: &AtomicBool) -> (Duration, f64) {
    let start = Instant::now();
    let cpu = cpu_seconds();
    let (busy, _) = machine_jiffies();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let ours = cpu_seconds() - cpu;
    report_others(machine_jiffies().0 - busy, ours, elapsed);
    (elapsed, ours)
}

/// `issue` from `clients` threads for `duration`: (certificates per second, process CPU %).
fn issuance_rate(ca: &CertificateAuthority, clients: usize, duration: Duration) -> (f64, f64) {
    // Enough fresh CSRs for the run (made before timing starts).
    let per_thread = 8000 * duration.as_secs() as usize / clients;
    let batches: Vec<Vec<Vec<u8>>> = (0..clients)
        .map(|_| (0..per_thread).map(|_| holder_csr()).collect())
        .collect();
    let count = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut cpu_percent = 0.0;
    let elapsed = std::thread::scope(|scope| {
        for batch in &batches {
            let (count, stop) = (&count, &stop);
            scope.spawn(move || {
                for csr in batch {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let request = IssuanceRequest {
                        policy: "justice-auth".into(),
                        csr: csr.clone(),
                        ..Default::default()
                    };
                    ca.issue(&request, None).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
                panic!("ran out of CSRs: raise per_thread");
            });
        }
        let (elapsed, ours) = run_for(duration, &stop);
        cpu_percent = 100.0 * ours / elapsed.as_secs_f64();
        elapsed
    });
    (
        count.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        cpu_percent,
    )
}

/// A CSR for a fresh P-256 key with a unique holder name.
fn holder_csr() -> Vec<u8> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    holders::holder("Jean", &format!("AGENT{n}")).csr
}

/// Warns when other processes (or the hypervisor) used more than 15% of a core meanwhile.
fn report_others(busy_jiffies: f64, ours_seconds: f64, elapsed: Duration) {
    let others = (busy_jiffies / 100.0 - ours_seconds).max(0.0) / elapsed.as_secs_f64() * 100.0;
    if others > 15.0 {
        eprintln!("  (other processes used {others:.0}% of a core during this run)");
    }
}

/// Busy and total jiffies of the whole machine (/proc/stat; steal counts as busy).
fn machine_jiffies() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// Waits (at most a minute) until the machine is at least 85% idle over a second: these
/// machines are shared, and a run that starts busy measures the neighbours.
fn quiet_gate() {
    for _ in 0..60 {
        let (busy0, total0) = machine_jiffies();
        std::thread::sleep(Duration::from_secs(1));
        let (busy1, total1) = machine_jiffies();
        if total1 > total0 && (busy1 - busy0) / (total1 - total0) <= 0.15 {
            return;
        }
    }
    eprintln!("  (machine still busy after 60 s: measuring anyway)");
}

/// CPU seconds used by this process so far (utime + stime from /proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of the file (utime, stime) are 11 and 12 after the name; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
