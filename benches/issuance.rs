//! Issuance throughput next to SoftHSM2's raw signing rate, measured in the same run.
//!
//!     cargo bench --bench issuance            # RUN_SECS (3) per measurement, REPS (3)
//!
//! For each issuing-CA key (P-384, RSA-3072) the bench makes a SoftHSM2 token in a temporary
//! directory, runs the key ceremony, then measures with two threads:
//! - raw: C_Sign through cryptoki, one session per thread, on the CA key itself, with the
//!   mechanism sceau uses (P-384: SHA-384 in software + CKM_ECDSA; RSA-3072:
//!   CKM_SHA256_RSA_PKCS) over 1,200 bytes, the size of a TBS certificate;
//! - issuance: `CertificateAuthority::issue` end to end (CSR proof of possession, policy and
//!   lints, durable intent, HSM signature and its verification, certificate stored with its
//!   indexes and audit event), for fresh P-256 holder CSRs (a key is never certified twice).
//!
//! It prints the median of REPS runs and the ratio issuance / raw, for CLIENTS concurrent
//! callers (default "2,16"; the HSM pool always has two sessions), with the process CPU use.
//! SoftHSM2 and the CA share the same cores here: every CPU cycle the CA spends (verifying
//! each HSM signature, CSR proofs, fsync) is one SoftHSM2 cannot use to sign.
//!
//! SoftHSM2 reads SOFTHSM2_CONF once per process: the bench re-executes itself with it set.
#[path = "holders.rs"]
mod holders;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use sceau::ca::{CertificateAuthority, ceremony};
use sceau::config::Config;
use sceau::hsm::Hsm;
use sceau::policy::{IssuanceRequest, PolicySet};
use sceau::store::Store;
use sceau::x509::Timestamp;
use sceau::x509::sigalg::{HashAlgorithm, SignatureScheme};
use sceau::x509::time::SystemClock;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "bench-pin-1234";
const THREADS: usize = 2;

fn main() {
    let dir = match std::env::var_os("SCEAU_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => return reexec_with_token_dir(),
    };
    let secs: u64 = std::env::var("RUN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let clients: Vec<usize> = std::env::var("CLIENTS")
        .unwrap_or_else(|_| "2,16".into())
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();
    let only = std::env::var("CASES").unwrap_or_default();
    println!(
        "issuance bench: HSM pool of {THREADS} sessions, raw C_Sign with {THREADS} threads; {secs} s per run, median of {reps}"
    );
    println!(
        "{:<9} {:>13} {:>8} {:>15} {:>7} {:>16}",
        "CA key", "raw C_Sign/s", "callers", "certificates/s", "ratio", "CPU (of 200%)"
    );
    for (issuing, label) in [("p384", "P-384"), ("rsa3072", "RSA-3072")] {
        if !only.is_empty() && !only.split(',').any(|c| c == issuing) {
            continue;
        }
        let case = dir.join(issuing);
        let (ca, hsm) = set_up(&case, issuing);
        let key_label = ca.issuer().key.label().to_owned();
        let scheme = ca.issuer().key.scheme();
        let mut raw = Vec::new();
        let mut issued: Vec<Vec<(f64, f64)>> = vec![Vec::new(); clients.len()];
        for _ in 0..reps {
            quiet_gate();
            raw.push(raw_sign_rate(&key_label, scheme, Duration::from_secs(secs)));
            for (i, n) in clients.iter().enumerate() {
                quiet_gate();
                issued[i].push(issuance_rate(&ca, *n, Duration::from_secs(secs)));
            }
        }
        let raw = median(&mut raw);
        for (n, runs) in clients.iter().zip(issued.iter_mut()) {
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (rate, cpu) = runs[runs.len() / 2];
            println!(
                "{label:<9} {raw:>13.0} {n:>8} {rate:>15.0} {:>6.0}% {:>15.0}%",
                100.0 * rate / raw,
                cpu
            );
        }
        drop(ca);
        drop(hsm);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// SoftHSM2 reads SOFTHSM2_CONF when the module is loaded: run again with it set.
fn reexec_with_token_dir() {
    let dir = std::env::temp_dir().join(format!("sceau-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.display()
        ),
    )
    .unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(std::env::args_os().skip(1))
        .env("SOFTHSM2_CONF", &conf)
        .env("SCEAU_BENCH_DIR", &dir)
        .status()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    std::process::exit(status.code().unwrap_or(1));
}

/// A token, a configuration and a key ceremony; returns the opened CA.
fn set_up(dir: &Path, issuing: &str) -> (CertificateAuthority, Hsm) {
    std::fs::create_dir_all(dir).unwrap();
    let label = format!("bench-{issuing}");
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            &label,
            "--so-pin",
            "so-1234",
            "--pin",
            PIN,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("pin"), PIN).unwrap();
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sceau.toml"))
            .unwrap();
    let text = example
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
            "token_label = \"sceau-dev\"",
            &format!("token_label = \"{label}\""),
        )
        .replace(
            "pin_file = \"../var/pin\"",
            &format!("pin_file = \"{}/pin\"", dir.display()),
        )
        .replace(
            "module_env = { SOFTHSM2_CONF = \"../var/softhsm2.conf\" }",
            "",
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
    (ca, hsm)
}

/// C_Sign on the CA key, THREADS sessions, for `duration`: signatures per second.
fn raw_sign_rate(key_label: &str, scheme: SignatureScheme, duration: Duration) -> f64 {
    let pkcs11 = Pkcs11::new(MODULE).unwrap();
    let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let tbs = vec![0x5au8; 1200];
    // Mechanism holds raw pointers (not Sync): each thread makes its own.
    let mechanism = || match scheme {
        SignatureScheme::EcdsaP384Sha384 => Mechanism::Ecdsa,
        SignatureScheme::RsaPkcs1Sha256 => Mechanism::Sha256RsaPkcs,
        other => panic!("no raw reference for {other}"),
    };
    let data = match scheme {
        SignatureScheme::EcdsaP384Sha384 => HashAlgorithm::Sha384.digest(&tbs),
        _ => tbs,
    };
    let count = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let elapsed = std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                let slot = pkcs11
                    .get_slots_with_token()
                    .unwrap()
                    .into_iter()
                    .find(|s| {
                        pkcs11
                            .get_token_info(*s)
                            .unwrap()
                            .label()
                            .starts_with("bench-")
                            && find_key(&pkcs11, *s, key_label)
                    });
                let session = pkcs11.open_rw_session(slot.unwrap()).unwrap();
                // Already logged in through the CA's own login session (login is per token).
                let _ = session.login(UserType::User, Some(&PIN.to_owned().into()));
                let key = session
                    .find_objects(&[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
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
        eprintln!(
            "  raw: {errors} C_Sign calls failed (CKR_GENERAL_ERROR from SoftHSM2), not counted"
        );
    }
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

fn find_key(pkcs11: &Pkcs11, slot: cryptoki::slot::Slot, label: &str) -> bool {
    let session = pkcs11.open_ro_session(slot).unwrap();
    !session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
        .is_empty()
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
