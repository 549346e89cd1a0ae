//! Tools for the validation benchmarks (benches/ocsp-load.sh, benches/crl-load.sh, and the other
//! load scripts through `$TOOLS` of benches/lib.sh).
//!
//!     va_tools fill CONFIG N REVOKED_PERCENT OUT_DIR
//!         issues N certificates through the real pipeline (P-256 holder keys), revokes a
//!         share, and writes OUT_DIR/index.txt (OpenSSL `ca` format, for `openssl ocsp`),
//!         OUT_DIR/good.der and OUT_DIR/revoked.der (OCSP requests, SHA-1 CertID, no nonce),
//!         OUT_DIR/good-nonce.der (the same with a nonce).
//!     va_tools export-responses CONFIG OUT_FILE
//!         writes sceau's pre-signed SHA-1 responses, one base64 DER per line (the file format
//!         `cfssl ocspserve -responses` loads); the daemon must be stopped.
//!     va_tools synthetic-revocations CONFIG M OUT_INDEX
//!         adds M revoked serials (no certificate behind them) to the revocation table of the
//!         issuing CA, for the CRL benchmark, and writes them as an OpenSSL index.
//!     va_tools bare-hyper ADDR
//!         the ceiling: a hyper server answering every request with 1,163 fixed bytes.
//!
//! SoftHSM2 reads SOFTHSM2_CONF when loaded: run with it set (the scripts do).
#[path = "holders.rs"]
mod holders;

use std::convert::Infallible;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use bytes::Bytes;
use sceau::ca::revoke::{RevocationRequest, RevocationTarget, revoke};
use sceau::ca::{CertificateAuthority, load_state};
use sceau::config::Config;
use sceau::hsm::Hsm;
use sceau::policy::{IssuanceRequest, PolicySet};
use sceau::store::schema::{OcspResponses, Revocations};
use sceau::store::{CertKey, RevocationRecord, Store};
use sceau::x509::revocation::RevocationReason;
use sceau::x509::time::SystemClock;
use sceau::x509::{Serial, Timestamp};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["fill", config, n, percent, out] => fill(
            Path::new(config),
            n.parse().unwrap(),
            percent.parse().unwrap(),
            Path::new(out),
        ),
        ["export-responses", config, out] => export_responses(Path::new(config), Path::new(out)),
        ["synthetic-revocations", config, m, out] => {
            synthetic(Path::new(config), m.parse().unwrap(), Path::new(out))
        }
        ["bare-hyper", address] => bare_hyper(address),
        // `cargo bench` runs every bench target without arguments: nothing to do here.
        [] => {}
        other => {
            eprintln!(
                "va_tools: unknown arguments {other:?} (see the header of benches/va_tools.rs)"
            );
            std::process::exit(2);
        }
    }
}

fn open(config: &Path) -> (Config, Hsm, Store) {
    let config = Config::load(config).unwrap();
    let hsm = Hsm::open(config.hsm.clone()).unwrap();
    let store = Store::open(&config.store_dir()).unwrap();
    (config, hsm, store)
}

fn fill(config_path: &Path, n: usize, percent: usize, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    let (config, hsm, store) = open(config_path);
    let policies = Arc::new(PolicySet::load_dir(&config.policies_dir).unwrap());
    let ca = CertificateAuthority::open(
        store.clone(),
        &hsm,
        policies,
        config.urls.clone(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let issued = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let next = AtomicU64::new(0);
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n {
                        return;
                    }
                    let request = IssuanceRequest {
                        policy: "justice-auth".into(),
                        csr: holder_csr(i),
                        ..Default::default()
                    };
                    let certificate = ca.issue(&request, None).unwrap();
                    issued
                        .lock()
                        .unwrap()
                        .push((certificate.serial, certificate.not_after, i));
                    if i.is_multiple_of(20_000) && i > 0 {
                        eprintln!(
                            "  {i} issued ({:.0}/s)",
                            i as f64 / start.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    let issued = std::mem::take(&mut *issued.lock().unwrap());
    eprintln!(
        "issued {} certificates in {:.1} s",
        issued.len(),
        start.elapsed().as_secs_f64()
    );
    let mut index = std::io::BufWriter::new(std::fs::File::create(out.join("index.txt")).unwrap());
    let now = Timestamp::now();
    let mut revoked_serial = None;
    let mut good_serial = None;
    for (k, (serial, not_after, i)) in issued.iter().enumerate() {
        let expiry = openssl_time(*not_after);
        let dn = format!(
            "/C=FR/O=MINISTERE DE LA JUSTICE TEST/OU=0002 123456789/GN=Jean/SN=AGENT{i}/CN=Jean AGENT{i}"
        );
        if percent > 0 && k % (100 / percent.max(1)) == 0 {
            revoke(
                &store,
                RevocationRequest {
                    target: RevocationTarget::Serial(serial.clone()),
                    reason: RevocationReason::KeyCompromise,
                    invalidity_date: None,
                    requested_by: "bench".into(),
                },
                now,
            )
            .unwrap();
            writeln!(
                index,
                "R\t{expiry}\t{},keyCompromise\t{}\tunknown\t{dn}",
                openssl_time(now),
                serial.to_hex()
            )
            .unwrap();
            revoked_serial.get_or_insert(serial.clone());
        } else {
            writeln!(index, "V\t{expiry}\t\t{}\tunknown\t{dn}", serial.to_hex()).unwrap();
            good_serial.get_or_insert(serial.clone());
        }
    }
    index.flush().unwrap();
    std::fs::write(out.join("index.txt.attr"), "unique_subject = no\n").unwrap();
    let state = load_state(&store).unwrap().unwrap();
    let issuing = state.issuing.last().unwrap();
    let issuer_pem = sceau::x509::pem::encode("CERTIFICATE", &issuing.certificate);
    std::fs::write(out.join("issuer.pem"), issuer_pem).unwrap();
    for (name, serial, nonce) in [
        ("good.der", good_serial.as_ref(), false),
        ("good-nonce.der", good_serial.as_ref(), true),
        ("revoked.der", revoked_serial.as_ref(), false),
    ] {
        if let Some(serial) = serial {
            let mut args = vec![
                "ocsp".to_owned(),
                "-issuer".into(),
                out.join("issuer.pem").display().to_string(),
            ];
            args.extend(["-serial".into(), format!("0x{}", serial.to_hex())]);
            args.push(if nonce { "-nonce" } else { "-no_nonce" }.into());
            args.extend(["-reqout".into(), out.join(name).display().to_string()]);
            let status = std::process::Command::new("openssl")
                .args(&args)
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    eprintln!("wrote {}/index.txt and requests", out.display());
}

/// OpenSSL index times: YYMMDDHHMMSSZ.
fn openssl_time(time: Timestamp) -> String {
    let t = time.to_date_time().unwrap();
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        t.year() % 100,
        t.month(),
        t.day(),
        t.hour(),
        t.minutes(),
        t.seconds()
    )
}

fn holder_csr(i: usize) -> Vec<u8> {
    holders::holder("Jean", &format!("AGENT{i}")).csr
}

fn export_responses(config_path: &Path, out: &Path) {
    let config = Config::load(config_path).unwrap();
    let store = Store::open(&config.store_dir()).unwrap();
    let state = load_state(&store).unwrap().unwrap();
    let responder = &state.ocsp_responders.last().unwrap().certificate;
    // The `certs` tail every pre-signed head is completed with.
    let sequence = sceau::x509::tlv::header(0x30, responder.len());
    let mut tail = sceau::x509::tlv::header(0xa0, sequence.len() + responder.len());
    tail.extend_from_slice(&sequence);
    tail.extend_from_slice(responder);
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    let mut count = 0;
    for row in store.scan::<OcspResponses>(&[], &[]).unwrap() {
        let (key, value) = row.unwrap();
        if key.hash != 1 || value.len() < 47 {
            continue;
        }
        let mut der = value[47..].to_vec();
        der.extend_from_slice(&tail);
        writeln!(
            file,
            "{}",
            base64::engine::general_purpose::STANDARD.encode(&der)
        )
        .unwrap();
        count += 1;
    }
    file.flush().unwrap();
    eprintln!("exported {count} pre-signed responses to {}", out.display());
}

fn synthetic(config_path: &Path, m: usize, out: &Path) {
    let config = Config::load(config_path).unwrap();
    let store = Store::open(&config.store_dir()).unwrap();
    let state = load_state(&store).unwrap().unwrap();
    let issuing = state.issuing.last().unwrap();
    let certificate: x509_cert::Certificate = der::Decode::from_der(&issuing.certificate).unwrap();
    let issuer = sceau::store::IssuerId(sceau::x509::keys::key_identifier(
        certificate.tbs_certificate().subject_public_key_info(),
    ));
    let now = Timestamp::now();
    let reasons = [
        RevocationReason::KeyCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
    ];
    let mut index = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    let rng = SystemRandom::new();
    let mut rows = Vec::with_capacity(10_000);
    for i in 0..m {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes).unwrap();
        bytes[0] &= 0x7f;
        bytes[0] |= 0x01;
        let serial = Serial::from_magnitude(&bytes).unwrap();
        let reason = reasons[i % reasons.len()];
        let revoked_at = now.minus_seconds((i % 86_400) as u64);
        let not_after = now.plus_seconds(3 * 365 * 86_400);
        writeln!(
            index,
            "R\t{}\t{},{}\t{}\tunknown\t/CN=synthetic {i}",
            openssl_time(not_after),
            openssl_time(revoked_at),
            [
                "keyCompromise",
                "affiliationChanged",
                "superseded",
                "cessationOfOperation"
            ][i % 4],
            serial.to_hex()
        )
        .unwrap();
        rows.push((
            CertKey { issuer, serial },
            Some(RevocationRecord {
                revoked_at,
                reason,
                invalidity_date: None,
                not_after,
            }),
        ));
        if rows.len() == 10_000 {
            // Bench data only: written outside the audited path (there is no certificate
            // behind these serials).
            store.write_derived::<Revocations>(&rows).unwrap();
            rows.clear();
        }
    }
    store.write_derived::<Revocations>(&rows).unwrap();
    index.flush().unwrap();
    eprintln!(
        "added {m} synthetic revocations; OpenSSL index in {}",
        out.display()
    );
}

fn bare_hyper(address: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        println!("bare-hyper ready: {}", listener.local_addr().unwrap());
        let body = Bytes::from(vec![0x5a_u8; 1163]);
        let service = hyper::service::service_fn(move |_request| {
            let body = body.clone();
            async move {
                let mut response = hyper::Response::new(http_body_util::Full::new(body));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/ocsp-response"),
                );
                Ok::<_, Infallible>(response)
            }
        });
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
}
