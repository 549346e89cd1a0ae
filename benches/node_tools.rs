//! Tools for the responder-node benchmark (benches/node-revocation.sh).
//!
//!     node_tools revocation-latency CONFIG NODE_ADDR INDEX N
//!         revokes N certificates (the valid ones of INDEX, an OpenSSL index that
//!         `va_tools fill` wrote) one after the other through the CA daemon's admin API, and
//!         after each revocation returns, asks the node at NODE_ADDR (POST /ocsp, keep-alive)
//!         until it answers "revoked": the time from the revocation returning to the node
//!         answering it. Prints p50, p90, p99 and the maximum.
#[path = "support.rs"]
#[allow(dead_code)] // open_ca is for the tools that issue
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use der::Decode;
use http_body_util::Full;
use sceau::config::Config;
use sceau::store::IssuerId;
use sceau::va::responses::{CertIdHash, IssuerIdentity};
use sceau::x509::{Serial, Timestamp};

fn main() {
    let args = support::arguments();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["revocation-latency", config, node, index, n] => {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(revocation_latency(
                Path::new(config),
                node,
                Path::new(index),
                n.parse().expect("N"),
            ));
        }
        _ => {
            eprintln!("usage: node_tools revocation-latency CONFIG NODE_ADDR INDEX N");
            std::process::exit(2);
        }
    }
}

/// An HTTP/1.1 keep-alive connection.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    async fn open(address: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        Connection {
            sender,
            host: address.to_owned(),
        }
    }

    async fn post(&mut self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Bytes) {
        let mut request = hyper::Request::post(path).header("host", &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).expect("request");
        self.sender.ready().await.expect("connection ready");
        let response = self.sender.send_request(request).await.expect("send");
        support::read_response(response).await
    }
}

/// An OCSPRequest (RFC 6960 §4.1.1) for one CertID, no extensions.
fn ocsp_request(cert_id: &[u8]) -> Vec<u8> {
    fn wrap(body: &[u8]) -> Vec<u8> {
        let mut out = vec![0x30];
        match body.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend_from_slice(&[0x81, n as u8]),
            n => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(body);
        out
    }
    // OCSPRequest { tbsRequest { requestList { Request { reqCert } } } }
    wrap(&wrap(&wrap(&wrap(cert_id))))
}

/// Whether a response says "revoked" for `cert_id`: the certStatus right after the CertID in
/// the SingleResponse is `[1]` (revoked), not `[0]` (good) or `[2]` (unknown).
fn says_revoked(response: &[u8], cert_id: &[u8]) -> bool {
    response
        .windows(cert_id.len())
        .position(|w| w == cert_id)
        .and_then(|at| response.get(at + cert_id.len()))
        .is_some_and(|tag| *tag == 0xA1)
}

async fn revocation_latency(config_path: &Path, node: &str, index: &Path, n: usize) {
    let config = Config::load(config_path).expect("config");
    let admin = std::fs::read_to_string(config.data_dir.join("admin.addr")).expect("admin.addr");
    let token = std::fs::read_to_string(config.data_dir.join("admin.token")).expect("admin.token");
    let bearer = format!("Bearer {}", token.trim());
    let issuer_pem =
        std::fs::read(config.data_dir.join("certs/ac-agents.pem")).expect("ac-agents.pem");
    let issuer_der =
        sceau::x509::pem::decode_pem_or_der(&issuer_pem, &["CERTIFICATE"]).expect("issuer PEM");
    let issuer = x509_cert::Certificate::from_der(&issuer_der).expect("issuer");
    let tbs = issuer.tbs_certificate();
    let identity = IssuerIdentity::new(
        IssuerId(sceau::x509::keys::key_identifier(
            tbs.subject_public_key_info(),
        )),
        "ac-agents",
        &der::Encode::to_der(tbs.subject()).expect("subject"),
        tbs.subject_public_key_info().subject_public_key.raw_bytes(),
        Timestamp::from_x509_time(&tbs.validity().not_before),
    );
    let serials: Vec<Serial> = std::fs::read_to_string(index)
        .expect("index")
        .lines()
        .filter(|l| l.starts_with('V'))
        .filter_map(|l| l.split('\t').nth(3))
        .filter_map(|s| Serial::from_hex(s).ok())
        .take(n)
        .collect();
    assert_eq!(serials.len(), n, "the index holds fewer valid certificates");
    let mut node = Connection::open(node).await;
    let mut latencies = Vec::with_capacity(n);
    for serial in &serials {
        let cert_id = identity.cert_id(CertIdHash::Sha1, serial).expect("CertID");
        let request = ocsp_request(&cert_id);
        let body = serde_json::to_vec(&serde_json::json!({
            "serial": serial.to_hex(),
            "reason": "key-compromise",
        }))
        .expect("json");
        // The admin listener answers one command per connection.
        let (status, answer) = Connection::open(admin.trim())
            .await
            .post(
                "/admin/revoke",
                &[
                    ("authorization", &bearer),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
        assert_eq!(status, 200, "revoke: {}", String::from_utf8_lossy(&answer));
        let returned = Instant::now();
        loop {
            let (status, response) = node
                .post(
                    "/ocsp",
                    &[("content-type", "application/ocsp-request")],
                    request.clone(),
                )
                .await;
            if status == 200 && says_revoked(&response, &cert_id) {
                break;
            }
            assert!(
                returned.elapsed() < Duration::from_secs(10),
                "the node never said revoked for {serial}"
            );
        }
        latencies.push(returned.elapsed());
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "revocation returned → node answers revoked, {n} revocations: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(latencies[latencies.len() - 1])
    );
}
