//! Tools for the registration-authority benchmark (benches/ra-load.sh).
//!
//!     ra_tools direct CONFIG N
//!         issues N cards straight through `CertificateAuthority::issue_card` (the daemon must
//!         be stopped), two threads: the issuance core's raw card rate.
//!     ra_tools load CONFIG RA_ADDR RA_TLS_PEM N CLIENTS
//!         against a running daemon: makes operators AE > AEC > AED > OC (keys in software,
//!         certificates through the admin API, designations through the RA), then CLIENTS
//!         concurrent clients, each on its own keep-alive mutual-TLS connections, submit (as the
//!         OC) and approve (as the AED) N card requests in all, CMS-signed like
//!         `openssl cms -sign -nodetach`. Every approval must answer 200 with both certificates.
//!
//!     ra_tools bulk CONFIG RA_ADDR RA_TLS_PEM BULK SINGLE
//!         against a running daemon whose store holds the cards `direct` issued (holders
//!         direct-0, direct-1...): makes the operators as `load` does, then revokes the
//!         certificates of the holders direct-0..BULK in one bulk revocation (proposed by the
//!         OC, the list read and approved by the AED), then those of the next SINGLE holders
//!         one `POST /ra/v1/revocations` (one serial) each by the OC, as without bulk
//!         revocation. Counts the CRLs the bulk caused with `$SCEAU audit export`. Prints
//!         `bulk seconds: S`, `bulk certificates/s: X`, `bulk crls: N`, `single
//!         certificates/s: Y` and one revoked serial.
//!
//! `direct` and `load` print one line `cards/s: X` (and details on standard error).
//! SoftHSM2 reads SOFTHSM2_CONF when loaded: run with it set (the script does).
#[path = "holders.rs"]
mod holders;
#[path = "support.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::EcdsaKeyPair;
use bytes::Bytes;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use http_body_util::Full;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sceau::ca::CardRequest;
use sceau::config::Config;
use sceau::hsm::Hsm;
use sceau::policy::IssuanceRequest;
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

const ORG: &str = "MINISTERE DE LA JUSTICE TEST";
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");

fn main() {
    let args = support::arguments();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["direct", config, n] => direct(Path::new(config), n.parse().expect("N")),
        ["load", config, address, tls, n, clients] => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(load(
                Path::new(config),
                address,
                Path::new(tls),
                n.parse().expect("N"),
                clients.parse().expect("CLIENTS"),
            ));
        }
        ["bulk", config, address, tls, bulk_cards, single_cards] => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(revocations(
                Path::new(config),
                address,
                Path::new(tls),
                bulk_cards.parse().expect("BULK"),
                single_cards.parse().expect("SINGLE"),
            ));
        }
        // `cargo bench` runs every bench target without arguments: nothing to do here.
        [] => {}
        other => {
            eprintln!("ra_tools: unknown arguments {other:?} (see benches/ra_tools.rs)");
            std::process::exit(2);
        }
    }
}

/// A software key pair and its CSR (PEM), for a holder named `given SURNAME`.
struct Holder {
    key: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    csr_pem: String,
}

fn holder(given: &str, surname: &str) -> Holder {
    let made = holders::holder(given, surname);
    Holder {
        key: made.key,
        pkcs8: made.pkcs8,
        csr_pem: sceau::x509::pem::encode("CERTIFICATE REQUEST", &made.csr),
    }
}

fn surname(i: usize) -> String {
    // Letters only: a DN is never given to two holders, so every holder gets its own name.
    let mut n = i;
    let mut out = String::from("CARD");
    loop {
        out.push((b'A' + (n % 26) as u8) as char);
        n /= 26;
        if n == 0 {
            return out;
        }
    }
}

fn direct(config_path: &Path, n: usize) {
    let config = Config::load(config_path).expect("config");
    let hsm = Hsm::open(config.hsm.clone()).expect("hsm");
    let ca = support::open_ca(&config, &hsm);
    let requests: Vec<CardRequest> = (0..n)
        .map(|i| {
            let name = surname(i);
            CardRequest {
                holder: format!("direct-{i}"),
                card: None,
                authentication: IssuanceRequest {
                    policy: "justice-auth".into(),
                    csr: holder("Direct", &name).csr_pem.into_bytes(),
                    ..Default::default()
                },
                signature: IssuanceRequest {
                    policy: "justice-sign".into(),
                    csr: holder("Direct", &name).csr_pem.into_bytes(),
                    ..Default::default()
                },
            }
        })
        .collect();
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else {
                        return;
                    };
                    ca.issue_card(request, None).expect("card");
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    eprintln!("direct: {n} cards in {seconds:.2} s, two threads");
    println!("cards/s: {:.1}", n as f64 / seconds);
}

/// An operator of the load: its key (software), certificate and TLS client configuration.
struct Operator {
    /// The card the role is bound to (the operator's id).
    card: String,
    holder: String,
    /// The card's signature key and certificate: what signs the requests (the authentication
    /// key is the TLS client's only).
    key: EcdsaKeyPair,
    certificate: Certificate,
    tls: Arc<rustls::ClientConfig>,
}

impl Operator {
    /// `openssl cms -sign -nodetach -outform DER` of `content`: one signer identified by issuer
    /// and serial, signed attributes content-type and message-digest, ECDSA with SHA-256.
    fn sign(&self, content: &[u8]) -> Vec<u8> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, content);
        let attribute = |oid, value: Any| x509_cert::attr::Attribute {
            oid,
            values: SetOfVec::try_from(vec![value]).expect("set"),
        };
        let attributes = SetOfVec::try_from(vec![
            attribute(CONTENT_TYPE, Any::encode_from(&ID_DATA).expect("oid")),
            attribute(
                MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(digest.as_ref()).expect("octets")).expect("any"),
            ),
        ])
        .expect("attributes");
        let signature = self
            .key
            .sign(&SystemRandom::new(), &attributes.to_der().expect("der"))
            .expect("sign");
        let tbs = self.certificate.tbs_certificate();
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            digest_alg: AlgorithmIdentifierOwned {
                oid: SHA256,
                parameters: None,
            },
            signed_attrs: Some(attributes),
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: ECDSA_SHA256,
                parameters: None,
            },
            signature: OctetString::new(signature.as_ref()).expect("octets"),
            unsigned_attrs: None,
        };
        let signed = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![AlgorithmIdentifierOwned {
                oid: SHA256,
                parameters: None,
            }])
            .expect("set"),
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_DATA,
                econtent: Some(
                    Any::encode_from(&OctetString::new(content).expect("octets")).expect("any"),
                ),
            },
            certificates: Some(
                CertificateSet::try_from(vec![CertificateChoices::Certificate(
                    self.certificate.clone(),
                )])
                .expect("set"),
            ),
            crls: None,
            signer_infos: SignerInfos::try_from(vec![signer]).expect("set"),
        };
        ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(&signed).expect("any"),
        }
        .to_der()
        .expect("cms")
    }
}

/// A keep-alive HTTP/1.1 connection over mutual TLS.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    address: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Connection {
    async fn open(address: &str, tls: Arc<rustls::ClientConfig>) -> Self {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let name = ServerName::try_from("127.0.0.1").expect("name").to_owned();
        let stream = connector
            .connect(name, stream)
            .await
            .expect("TLS handshake");
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("HTTP handshake");
        tokio::spawn(connection);
        Self {
            sender,
            address: address.to_owned(),
            tls,
        }
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, serde_json::Value) {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        if body.is_some() {
            request = request.header("content-type", "application/cms");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request");
        // The RA closes a keep-alive connection now and then: a request it never read is
        // sent again on a new one.
        if self.sender.ready().await.is_err() {
            *self = Self::open(&self.address.clone(), self.tls.clone()).await;
        }
        let response = self.sender.send_request(request).await.expect("send");
        let (status, bytes) = support::read_response(response).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).expect("random");
    hex::encode(bytes)
}

fn envelope(action: &str, fields: serde_json::Value) -> Vec<u8> {
    let mut value = serde_json::json!({
        "id": random_id(),
        "time": sceau::x509::Timestamp::now().to_string(),
        "action": action,
    });
    if let (Some(object), serde_json::Value::Object(extra)) = (value.as_object_mut(), fields) {
        object.extend(extra);
    }
    serde_json::to_vec(&value).expect("json")
}

/// POSTs JSON to the daemon's admin API (the bearer token from the data directory).
async fn admin(config: &Config, path: &str, body: serde_json::Value) -> serde_json::Value {
    let address = std::fs::read_to_string(config.data_dir.join("admin.addr")).expect("admin.addr");
    let token = std::fs::read_to_string(config.data_dir.join("admin.token")).expect("admin.token");
    let stream = tokio::net::TcpStream::connect(address.trim())
        .await
        .expect("admin connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("admin handshake");
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header("host", address.trim())
        .header("authorization", format!("Bearer {}", token.trim()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&body).expect("json"),
        )))
        .expect("request");
    let response = sender.send_request(request).await.expect("admin send");
    let (status, bytes) = support::read_response(response).await;
    assert!(
        (200..300).contains(&status),
        "{path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).expect("admin answer")
}

async fn operator(
    config: &Config,
    ra_ca: &[CertificateDer<'static>],
    name: &str,
    surname: &str,
) -> Operator {
    let holder_id = format!("ra-load-{name}-{surname}");
    let card = format!("card-{name}-{surname}");
    let holder = holder(name, surname);
    let signature_key = self::holder(name, surname);
    let answer = admin(
        config,
        "/admin/card",
        serde_json::json!({
            "holder": holder_id,
            "card": card,
            "authentication_csr": holder.csr_pem,
            "signature_csr": signature_key.csr_pem,
            "authentication_policy": "justice-auth",
            "signature_policy": "justice-sign",
        }),
    )
    .await;
    let pem = answer["authentication"]["certificate"]
        .as_str()
        .expect("certificate");
    let der = sceau::x509::pem::decode_pem_or_der(pem.as_bytes(), &["CERTIFICATE"]).expect("pem");
    let mut roots = rustls::RootCertStore::empty();
    for ca in ra_ca {
        roots.add(ca.clone()).expect("RA TLS certificate");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(holder.pkcs8.clone())),
        )
        .expect("client certificate");
    let signature_pem = answer["signature"]["certificate"]
        .as_str()
        .expect("signature certificate");
    let signature_der =
        sceau::x509::pem::decode_pem_or_der(signature_pem.as_bytes(), &["CERTIFICATE"])
            .expect("pem");
    Operator {
        card,
        holder: holder_id,
        key: signature_key.key,
        certificate: Certificate::from_der(&signature_der).expect("certificate"),

        tls: Arc::new(tls),
    }
}

async fn designate(address: &str, by: &Operator, who: &Operator, role: &str) {
    let body = envelope(
        "designate",
        serde_json::json!({
            "role": role,
            "holder": who.holder,
            "card": who.card,
            "scope": { "organizations": [ORG], "policies": ["justice-auth", "justice-sign"] },
        }),
    );
    let mut connection = Connection::open(address, by.tls.clone()).await;
    let (status, answer) = connection
        .call("POST", "/ra/v1/operators", Some(by.sign(&body)))
        .await;
    assert_eq!(status, 201, "designate {role}: {answer}");
}

/// The hierarchy AE > AEC > AED > OC, in full scope, made through the admin API and the RA:
/// (the AED, the OC), and the letters that make this run's names unique.
async fn team(
    config: &Config,
    address: &str,
    ra_tls: &Path,
) -> (Arc<Operator>, Arc<Operator>, String) {
    let ra_ca: Vec<CertificateDer<'static>> = {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::pem_file_iter(ra_tls)
            .expect("RA TLS certificate")
            .collect::<Result<_, _>>()
            .expect("RA TLS certificate")
    };
    let tag = &random_id()[..6].to_uppercase();
    let letters: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                (b'G' + c as u8 - b'0') as char
            } else {
                c
            }
        })
        .collect();
    let ae = operator(config, &ra_ca, "Anne", &format!("AE{letters}")).await;
    let aec = operator(config, &ra_ca, "Basile", &format!("AEC{letters}")).await;
    let aed = Arc::new(operator(config, &ra_ca, "Claire", &format!("AED{letters}")).await);
    let oc = Arc::new(operator(config, &ra_ca, "Damien", &format!("OC{letters}")).await);
    admin(
        config,
        "/admin/ra/bootstrap",
        serde_json::json!({
            "card": ae.card,
            "scope": { "organizations": [ORG], "policies": ["justice-auth", "justice-sign"] },
        }),
    )
    .await;
    designate(address, &ae, &aec, "AEC").await;
    designate(address, &aec, &aed, "AED").await;
    designate(address, &aed, &oc, "OC").await;
    (aed, oc, letters)
}

async fn load(config_path: &Path, address: &str, ra_tls: &Path, n: usize, clients: usize) {
    let config = Config::load(config_path).expect("config");
    let (aed, oc, letters) = team(&config, address, ra_tls).await;
    eprintln!("making {n} holders' key pairs and requests");
    let cards: Arc<Vec<(String, String, String)>> = Arc::new(
        (0..n)
            .map(|i| {
                let name = format!("{}{letters}", surname(i));
                (
                    format!("load-{letters}-{i}"),
                    holder("Load", &name).csr_pem,
                    holder("Load", &name).csr_pem,
                )
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (cards, next, oc, aed, address) = (
            cards.clone(),
            next.clone(),
            oc.clone(),
            aed.clone(),
            address.to_owned(),
        );
        tasks.spawn(async move {
            let mut as_oc = Connection::open(&address, oc.tls.clone()).await;
            let mut as_aed = Connection::open(&address, aed.tls.clone()).await;
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((holder, auth, sign)) = cards.get(i) else {
                    return latencies;
                };
                let began = Instant::now();
                let body = envelope(
                    "submit",
                    serde_json::json!({ "holder": holder, "authentication_csr": auth, "signature_csr": sign }),
                );
                let request = serde_json::from_slice::<serde_json::Value>(&body).expect("json")["id"]
                    .as_str()
                    .expect("id")
                    .to_owned();
                let (status, answer) = as_oc.call("POST", "/ra/v1/requests", Some(oc.sign(&body))).await;
                assert_eq!(status, 201, "submit: {answer}");
                let body = envelope("approve", serde_json::json!({ "request": request }));
                let (status, answer) = as_aed
                    .call("POST", &format!("/ra/v1/requests/{request}/approve"), Some(aed.sign(&body)))
                    .await;
                assert_eq!(status, 200, "approve: {answer}");
                assert_eq!(answer["state"], "issued", "{answer}");
                latencies.push(began.elapsed());
            }
        });
    }
    let mut latencies: Vec<Duration> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.expect("client"));
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "ra: {n} cards submitted and approved in {seconds:.2} s by {clients} clients; per card p50 {:.1} ms, p99 {:.1} ms",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0
    );
    println!("cards/s: {:.1}", n as f64 / seconds);
}

/// The CRLs published so far (`$SCEAU -c CONFIG audit export`, beside the daemon).
fn crls_published(config_path: &Path) -> usize {
    let sceau = std::env::var("SCEAU").expect("SCEAU: the sceau binary");
    let out = std::process::Command::new(sceau)
        .arg("-c")
        .arg(config_path)
        .args(["audit", "export"])
        .output()
        .expect("sceau audit export");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"event\":\"crl_published\""))
        .count()
}

/// Revokes the certificates of the cards of holders direct-0..`bulk_cards` in one bulk
/// revocation (proposal, review, approval), then those of the next `single_cards` one request
/// each.
async fn revocations(
    config_path: &Path,
    address: &str,
    ra_tls: &Path,
    bulk_cards: usize,
    single_cards: usize,
) {
    let config = Config::load(config_path).expect("config");
    let (aed, oc, _) = team(&config, address, ra_tls).await;
    let mut as_oc = Connection::open(address, oc.tls.clone()).await;
    let mut as_aed = Connection::open(address, aed.tls.clone()).await;
    let holders = |cards: std::ops::Range<usize>| -> Vec<String> {
        cards.map(|i| format!("direct-{i}")).collect()
    };
    let expected = 2 * bulk_cards;
    let crls_before = crls_published(config_path);
    // Proposed by the OC, read and approved by the AED.
    let start = Instant::now();
    let body = envelope(
        "propose-bulk-revocation",
        serde_json::json!({
            "query": { "holders": holders(0..bulk_cards) },
            "reason": "affiliation-changed",
        }),
    );
    let (status, proposal) = as_oc
        .call("POST", "/ra/v1/bulk-revocations", Some(oc.sign(&body)))
        .await;
    assert_eq!(status, 201, "proposal: {proposal}");
    let proposed = start.elapsed();
    let id = proposal["bulk"].as_str().expect("bulk").to_owned();
    let (status, list) = as_aed
        .call("GET", &format!("/ra/v1/bulk-revocations/{id}"), None)
        .await;
    assert_eq!(status, 200, "list: {list}");
    assert_eq!(
        list["certificates"].as_array().expect("list").len(),
        expected
    );
    let reviewed = start.elapsed();
    let body = envelope(
        "approve-bulk-revocation",
        serde_json::json!({ "bulk": id, "certificates_sha256": list["certificates_sha256"] }),
    );
    let began = Instant::now();
    let (status, done) = as_aed
        .call(
            "POST",
            &format!("/ra/v1/bulk-revocations/{id}/approve"),
            Some(aed.sign(&body)),
        )
        .await;
    let approval = began.elapsed();
    let total = start.elapsed();
    assert_eq!(status, 200, "approval: {done}");
    assert_eq!(done["revoked"].as_u64(), Some(expected as u64), "{done}");
    eprintln!(
        "bulk: {expected} certificates; proposal {:.2} s, list read {:.2} s, approval {:.2} s (OCSP signed before the answer), in all {:.2} s",
        proposed.as_secs_f64(),
        (reviewed - proposed).as_secs_f64(),
        approval.as_secs_f64(),
        total.as_secs_f64()
    );
    // The CRL publisher runs after the answer: give it time, then count.
    tokio::time::sleep(Duration::from_secs(4)).await;
    println!("bulk seconds: {:.2}", total.as_secs_f64());
    println!(
        "bulk certificates/s: {:.1}",
        expected as f64 / total.as_secs_f64()
    );
    println!("bulk crls: {}", crls_published(config_path) - crls_before);
    println!(
        "revoked serial: {}",
        list["certificates"][0]["serial"].as_str().expect("serial")
    );

    // One by one: the serials (a dry run lists them), then one request each (on a new
    // connection: the RA closed the idle one meanwhile).
    let mut as_oc = Connection::open(address, oc.tls.clone()).await;
    let body = envelope(
        "propose-bulk-revocation",
        serde_json::json!({
            "query": { "holders": holders(bulk_cards..bulk_cards + single_cards) },
            "reason": "affiliation-changed",
            "dry_run": true,
        }),
    );
    let (status, dry) = as_oc
        .call("POST", "/ra/v1/bulk-revocations", Some(oc.sign(&body)))
        .await;
    assert_eq!(status, 200, "dry run: {dry}");
    let serials: Vec<String> = dry["certificates"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["serial"].as_str().expect("serial").to_owned())
        .collect();
    assert_eq!(serials.len(), 2 * single_cards);
    let start = Instant::now();
    for serial in &serials {
        let body = envelope(
            "revoke",
            serde_json::json!({ "serial": serial, "reason": "affiliation-changed" }),
        );
        let (status, answer) = as_oc
            .call("POST", "/ra/v1/revocations", Some(oc.sign(&body)))
            .await;
        assert_eq!(status, 200, "revoke {serial}: {answer}");
    }
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "single: {} certificates revoked one request each in {seconds:.2} s",
        serials.len()
    );
    println!(
        "single certificates/s: {:.1}",
        serials.len() as f64 / seconds
    );
}
