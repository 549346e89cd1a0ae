//! The CA host publishes to NATS JetStream what responder nodes serve: real nats-server
//! processes, a real daemon on SoftHSM2, OpenSSL checking the published responses.
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::daemon::{Daemon, ocsp_post};
use common::nats::NatsServer;
use common::{Pki, openssl};
use sceau::va::publish::StatusValue;

/// Runs `work` to its end on a runtime of its own.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work)
}

/// The status bucket's value for `key`, read with async-nats.
fn read_status(url: &str, key: &str) -> Option<StatusValue> {
    // Bounded: an object read while the publisher replaces it would wait for purged chunks.
    let read = async {
        let client = async_nats::connect(url).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let bucket = js.get_key_value("sceau-status").await.ok()?;
        let bytes = bucket.get(key).await.ok()??;
        let mut value: StatusValue = serde_json::from_slice(&bytes).ok()?;
        // Each response is published without the responder's certificate, which the files
        // bucket holds once: put back, for OpenSSL.
        let files = js.get_object_store("sceau-files").await.ok()?;
        for presigned in [&mut value.sha1, &mut value.sha256].into_iter().flatten() {
            let id = presigned
                .tail
                .take()
                .expect("a response published with its tail's id");
            let mut tail = Vec::new();
            use tokio::io::AsyncReadExt;
            files
                .get(format!("tail/{id}"))
                .await
                .ok()?
                .read_to_end(&mut tail)
                .await
                .ok()?;
            let engine = base64::engine::general_purpose::STANDARD;
            let mut der = engine.decode(&presigned.der).unwrap();
            der.extend_from_slice(&tail);
            presigned.der = engine.encode(der);
        }
        Some(value)
    };
    block_on(async { tokio::time::timeout(Duration::from_secs(5), read).await })
        .ok()
        .flatten()
}

/// Waits until the bucket's value for `key` satisfies `done`; returns it and how long it took.
fn wait_for(
    url: &str,
    key: &str,
    within: Duration,
    done: impl Fn(&StatusValue) -> bool,
) -> (StatusValue, Duration) {
    let started = Instant::now();
    loop {
        if let Some(value) = read_status(url, key)
            && done(&value)
        {
            return (value, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "{key}: not published as expected within {within:?}: {:?}",
            read_status(url, key)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status key of a certificate: the issuing CA's key identifier and the serial, hex.
fn status_key(pki: &Pki, certificate: &Path) -> String {
    let serial = common::serial_of(certificate);
    let text = common::x509::x509(
        &pki.path("ac-agents.pem"),
        &["-ext", "subjectKeyIdentifier"],
    );
    let ski: String = text
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .replace(':', "")
        .to_uppercase();
    format!("{ski}.{serial}")
}

/// What `openssl ocsp` makes of a published response: its status line.
fn openssl_status(pki: &Pki, value: &StatusValue, certificate: &Path, name: &str) -> String {
    let der = base64::engine::general_purpose::STANDARD
        .decode(&value.sha1.as_ref().expect("a SHA-1 response").der)
        .unwrap();
    let (ok, text) = read_response(pki, &der, certificate, name);
    assert!(ok, "{text}");
    text
}

/// A DER OCSP response kept as NAME.ocsp, read by `openssl ocsp -respin` against the CA files
/// beside the PKI: (success, output).
fn read_response(pki: &Pki, der: &[u8], certificate: &Path, name: &str) -> (bool, String) {
    let path = pki.path(&format!("{name}.ocsp"));
    std::fs::write(&path, der).unwrap();
    common::read_ocsp_response(&path, certificate, &pki.path(""), &[])
}

/// Two certificates, the second's responses published (and so the first's, before it).
fn issue_two(pki: &Pki, nats: &NatsServer, names: [&str; 2]) -> (PathBuf, PathBuf) {
    let [first, second] = names.map(|name| issue(pki, name));
    wait_for(
        &nats.url(),
        &status_key(pki, &second),
        Duration::from_secs(10),
        |v| v.sha1.is_some(),
    );
    (first, second)
}

fn issue(pki: &Pki, name: &str) -> PathBuf {
    pki.issue_holder(
        name,
        &format!(
            "/GN=Agent/SN={}/CN=Agent {}",
            name.to_uppercase(),
            name.to_uppercase()
        ),
    )
}

/// Issue 11, items 1 and 2: an issuance and a revocation reach the status bucket, with
/// responses OpenSSL accepts; the CRL and the CA certificates reach the files bucket.
#[test]
fn issuance_and_revocation_are_published_with_their_responses() {
    let (_dir, nats, pki, daemon) = ca_with_engine();
    let holder = issue(&pki, "publie");
    let key = status_key(&pki, &holder);
    let (good, _) = wait_for(&nats.url(), &key, Duration::from_secs(10), |v| {
        v.status == "good" && v.sha1.is_some() && v.sha256.is_some()
    });
    assert!(openssl_status(&pki, &good, &holder, "good").contains(": good"));

    let revoked_at = Instant::now();
    pki.revoke(&holder, "key-compromise");
    let returned = revoked_at.elapsed();
    let (revoked, after_return) = wait_for(&nats.url(), &key, Duration::from_secs(10), |v| {
        v.status == "revoked" && v.sha1.is_some()
    });
    assert_eq!(revoked.reason, Some(1));
    let text = openssl_status(&pki, &revoked, &holder, "revoked");
    assert!(text.contains(": revoked"), "{text}");
    eprintln!("revoke returned in {returned:?}; published {after_return:?} after");

    // The files bucket: the CRL (with the revocation, once republished) and CA certificates.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let names = runtime.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let files = js.get_object_store("sceau-files").await.unwrap();
        let mut names = Vec::new();
        for name in ["ca/racine.crt", "ca/ac-agents.crt", "crl/ac-agents.crl"] {
            if files.get(name).await.is_ok() {
                names.push(name);
            }
        }
        names
    });
    assert!(names.contains(&"ca/ac-agents.crt"), "{names:?}");
    let metrics = daemon.metric("sceau_published_total", "");
    assert!(metrics >= 2, "{metrics}");
    assert_eq!(daemon.metric("sceau_engine_connected", ""), 1);

    // The publisher checks every 5 s that the bucket is still whole: what it just put must
    // not make it believe the bucket went back (and publish everything again, the nodes
    // meanwhile without a manifest), as its bucket information read at connection did.
    let full = daemon.metric("sceau_publisher_full_publications_total", "");
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(
        daemon.metric("sceau_publisher_full_publications_total", ""),
        full,
        "a whole bucket was published again"
    );
}

/// Issue 11, item 2: with the engine down, a revocation waits in the outbox; the CA killed
/// (-9) meanwhile and the engine back, the restarted CA publishes it.
#[test]
fn a_revocation_made_while_the_engine_is_down_reaches_it_after_a_crash() {
    let (_dir, mut nats, pki, daemon) = ca_with_engine();
    let holder = issue(&pki, "enpanne");
    let key = status_key(&pki, &holder);
    wait_for(&nats.url(), &key, Duration::from_secs(10), |v| {
        v.status == "good" && v.sha1.is_some()
    });

    nats.kill();
    pki.revoke(&holder, "affiliation-changed");
    // The revocation waits in the outbox, and the gauge says so, whether the publisher lost
    // the engine before or after reading it.
    daemon.wait_until("the outbox holds the revocation", |d| {
        d.metric("sceau_outbox_depth", "") >= 1
    });
    drop(daemon); // SIGKILL: nothing flushed, nothing said goodbye
    {
        let store = sceau::store::Store::open(&pki.data_dir().join("store")).unwrap();
        let waiting: Vec<String> = store
            .scan::<sceau::store::schema::Outbox>(&[], &[])
            .unwrap()
            .map(|row| row.unwrap().1)
            .collect();
        assert!(
            waiting.iter().any(|name| name.ends_with(&key)),
            "the revocation waits in the outbox: {waiting:?}"
        );
    }
    nats.restart();
    assert_eq!(
        read_status(&nats.url(), &key).map(|v| v.status),
        Some("good".to_owned()),
        "the engine has not heard of the revocation yet"
    );
    let daemon = Daemon::start(&pki);
    let (revoked, _) = wait_for(&nats.url(), &key, Duration::from_secs(15), |v| {
        v.status == "revoked" && v.sha1.is_some()
    });
    assert_eq!(revoked.reason, Some(3));
    assert!(openssl_status(&pki, &revoked, &holder, "after-crash").contains(": revoked"));
    daemon.wait_until("the outbox drained", |d| {
        d.metric("sceau_outbox_depth", "") == 0
    });
}

/// An engine put back from an older copy of its files (a disaster drill gone wrong, a volume
/// snapshot restored) still holds the manifest and every key, with a revocation made since
/// undone: the publisher sees the bucket went back below what it put, and publishes again.
#[test]
fn an_engine_put_back_from_an_older_copy_gets_the_revocations_made_since() {
    put_back_an_older_copy(false);
}

/// The same, the CA down while the engine is put back: what it put is remembered in its store.
#[test]
fn an_engine_put_back_while_the_ca_was_down_gets_the_revocations_made_since() {
    put_back_an_older_copy(true);
}

fn put_back_an_older_copy(restart_the_ca: bool) {
    let (dir, mut nats, pki, daemon) = ca_with_engine();
    let holder = issue(&pki, "restaure");
    let key = status_key(&pki, &holder);
    wait_for(&nats.url(), &key, Duration::from_secs(10), |v| {
        v.status == "good" && v.sha1.is_some()
    });
    daemon.wait_until("the outbox drained", |d| {
        d.metric("sceau_outbox_depth", "") == 0
    });
    // The older copy, taken with the server stopped.
    nats.kill();
    let copy = dir.path().join("copy");
    copy_tree(nats.store(), &copy);
    nats.restart();
    daemon.wait_until("the publisher reconnected", |d| {
        d.metric("sceau_engine_connected", "") == 1
    });
    let serial = common::serial_of(&holder);
    pki.sceau_ok(&["revoke", "--serial", &serial, "--reason", "superseded"]);
    wait_for(&nats.url(), &key, Duration::from_secs(10), |v| {
        v.status == "revoked"
    });

    daemon.wait_until("the outbox drained", |d| {
        d.metric("sceau_outbox_depth", "") == 0
    });
    let mut daemon = Some(daemon);
    if restart_the_ca {
        daemon = None; // SIGKILL
    }
    nats.kill();
    std::fs::remove_dir_all(nats.store()).unwrap();
    copy_tree(&copy, nats.store());
    nats.restart();
    assert_eq!(
        read_status(&nats.url(), &key).map(|v| v.status),
        Some("good".to_owned()),
        "the copy predates the revocation"
    );
    // Puts made at once take the bucket's last revision back above what the publisher had got
    // before the copy was put back: the acknowledgements still tell it went back.
    for n in 0..4 {
        issue(&pki, &format!("rafale{n}"));
    }
    let _daemon = daemon.unwrap_or_else(|| Daemon::start(&pki));
    let (revoked, _) = wait_for(&nats.url(), &key, Duration::from_secs(15), |v| {
        v.status == "revoked" && v.sha1.is_some()
    });
    assert_eq!(revoked.reason, Some(4));
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// One nats-server and a CA daemon publishing to it, the CA certificates copied beside the
/// PKI (the temporary directory holds the server's files).
fn ca_with_engine() -> (tempfile::TempDir, NatsServer, Pki, Daemon) {
    let (dir, nats, pki, daemon) = common::nats::ca_with_engine();
    copy_certs(&pki);
    (dir, nats, pki, daemon)
}

/// The CA certificates as files beside the PKI (racine.pem, ac-agents.pem, ocsp-ac-agents.pem).
fn copy_certs(pki: &Pki) {
    let certs = pki.data_dir().join("certs");
    for name in ["racine", "ac-agents", "ocsp-ac-agents"] {
        let from = certs.join(format!("{name}.pem"));
        std::fs::copy(&from, pki.path(&format!("{name}.pem")))
            .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

/// A running responder node (`sceau node`); killed when dropped.
struct NodeProcess {
    child: std::process::Child,
    address: std::net::SocketAddr,
}

impl NodeProcess {
    fn start(pki: &Pki, name: &str, servers: &[String]) -> Self {
        let node = Self::spawn(pki, name, servers);
        let started = Instant::now();
        while node.get("/readyz").0 != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the node never got ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }

    /// Starts a node without waiting for it to be ready.
    fn spawn(pki: &Pki, name: &str, servers: &[String]) -> Self {
        use std::io::BufRead;
        let config = pki.path(&format!("{name}.toml"));
        let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\n[nats]\nservers = [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap();
        let log = std::fs::File::create(pki.path(&format!("{name}.log"))).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sceau"))
            .arg("-c")
            .arg(&config)
            .args(["--log", "info", "node"])
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let address = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the node did not start: {line:?}"));
        NodeProcess { child, address }
    }

    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let (status, _, body) = common::daemon::http(self.address, "GET", path, &[], b"");
        (status, body)
    }

    /// The response to a POSTed OCSP request for `certificate` (HTTP 200).
    fn post(&self, pki: &Pki, certificate: &Path) -> Vec<u8> {
        let (status, _, body) = ocsp_post(self.address, &pki.ocsp_request(certificate));
        assert_eq!(status, 200);
        body
    }

    /// The certificate status a POSTed OCSP request gets, as OpenSSL reads the response.
    fn ocsp(&self, pki: &Pki, certificate: &Path, name: &str) -> String {
        let body = self.post(pki, certificate);
        let value = StatusValue {
            status: String::new(),
            revoked_at: None,
            reason: None,
            invalidity_date: None,
            sha1: Some(sceau::va::publish::PresignedValue {
                der: base64::engine::general_purpose::STANDARD.encode(&body),
                this_update: 0,
                next_update: 0,
                tail: None,
            }),
            sha256: None,
        };
        openssl_status(pki, &value, certificate, name)
    }

    /// What the node answers for `certificate`, as OpenSSL reads it: `good`, `revoked`, or
    /// the response status of an unsigned answer (`trylater`).
    fn answer(&self, pki: &Pki, certificate: &Path, name: &str) -> String {
        let body = self.post(pki, certificate);
        let (_, text) = read_response(pki, &body, certificate, name);
        for word in ["good", "revoked"] {
            if text.contains(&format!(": {word}")) {
                return word.into();
            }
        }
        if text.to_lowercase().contains("trylater") {
            return "trylater".into();
        }
        // A node that has not read its issuers yet.
        if text.contains("unauthorized") {
            return "unauthorized".into();
        }
        panic!("{name}: not an answer OpenSSL reads: {text}");
    }

    /// `/healthz` as JSON.
    fn health(&self) -> serde_json::Value {
        serde_json::from_slice(&self.get("/healthz").1).unwrap()
    }
}

/// Deletes both buckets, as an engine rebuilt from nothing (or an operator's mistake) would.
fn delete_buckets(url: &str) {
    block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        js.delete_key_value("sceau-status").await.unwrap();
        js.delete_object_store("sceau-files").await.unwrap();
    });
}

/// Waits until `check` holds, polling every 50 ms; panics naming `what` after `within`.
fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// Asks `node` for `certificate` until it says "revoked", failing on any "good" meanwhile.
fn never_good_until_revoked(node: &NodeProcess, pki: &Pki, certificate: &Path, name: &str) {
    let started = Instant::now();
    loop {
        match node.answer(pki, certificate, name).as_str() {
            "revoked" => return,
            "good" => panic!("{name}: a node said good for a revoked certificate"),
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: never said revoked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 11, item 3: two responder nodes answer from the engine, exactly as the CA host:
/// good, then revoked once `sceau revoke` returned; they keep answering with the CA host
/// killed, and with their engine down; the revocation made meanwhile reaches them when it is
/// back. The time from the revoke returning to node B answering "revoked" is measured.
#[test]
fn responder_nodes_answer_from_the_engine_and_survive_the_ca_and_the_engine() {
    let (_dir, mut nats, pki, daemon) = ca_with_engine();
    let (first, second) = issue_two(&pki, &nats, ["premier", "second"]);
    let a = NodeProcess::start(&pki, "node-a", &[nats.url()]);
    let b = NodeProcess::start(&pki, "node-b", &[nats.url()]);
    assert!(a.ocsp(&pki, &first, "a-good").contains(": good"));
    assert!(b.ocsp(&pki, &first, "b-good").contains(": good"));
    // What node B serves passes the OCSP linter, and GET answers with the same cache headers
    // as the CA host's listener.
    let request = pki.ocsp_request(&first);
    let body = b.post(&pki, &first);
    let served = pki.path("node-b-response.der");
    std::fs::write(&served, &body).unwrap();
    common::lint::ocsp_response(&served);
    let get_path = format!(
        "/ocsp/{}",
        base64::engine::general_purpose::STANDARD.encode(&request)
    );
    let (status, headers, get_body) = common::daemon::http(b.address, "GET", &get_path, &[], b"");
    assert_eq!(status, 200);
    assert_eq!(
        get_body, body,
        "GET and POST give the same pre-signed response"
    );
    for name in ["cache-control", "etag", "last-modified", "expires"] {
        assert!(
            common::daemon::header(&headers, name).is_some(),
            "{name} missing: {headers:?}"
        );
    }
    // A request with a nonce gets the pre-signed response (the node does not sign).
    let (ok, text) = openssl(&[
        "ocsp",
        "-issuer",
        pki.path("ac-agents.pem").to_str().unwrap(),
        "-cert",
        first.to_str().unwrap(),
        "-url",
        &format!("http://{}/ocsp", b.address),
        "-CAfile",
        pki.path("racine.pem").to_str().unwrap(),
        "-VAfile",
        pki.path("ocsp-ac-agents.pem").to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains(": good"), "{text}");
    assert!(text.contains("WARNING: no nonce in response"), "{text}");
    // A serial the node does not know: tryLater, never "good".
    let (_, text) = openssl(&[
        "ocsp",
        "-issuer",
        pki.path("ac-agents.pem").to_str().unwrap(),
        "-serial",
        "0x0123456789ABCDEF",
        "-no_nonce",
        "-url",
        &format!("http://{}/ocsp", b.address),
    ]);
    assert!(text.contains("trylater"), "{text}");
    // The CA certificates and CRLs too.
    let (status, der) = b.get("/ca/ac-agents.crt");
    assert_eq!(status, 200);
    assert!(!der.is_empty());
    assert_eq!(b.get("/crl/ac-agents.crl").0, 200);

    // A revocation: node B says so within milliseconds of the revoke returning.
    pki.revoke(&first, "key-compromise");
    let returned = Instant::now();
    while !b.ocsp(&pki, &first, "b-probe").contains(": revoked") {
        assert!(
            returned.elapsed() < Duration::from_secs(5),
            "node B never said revoked"
        );
    }
    eprintln!(
        "node B said revoked {:?} after the revoke returned",
        returned.elapsed()
    );
    assert!(a.ocsp(&pki, &first, "a-revoked").contains(": revoked"));

    // The CA host killed: the nodes answer.
    drop(daemon);
    assert!(a.ocsp(&pki, &second, "a-ca-down").contains(": good"));
    assert!(b.ocsp(&pki, &first, "b-ca-down").contains(": revoked"));

    // The engine killed: the nodes answer from what they have; a revocation made meanwhile
    // (CA back, engine down) reaches them once the engine is back.
    nats.kill();
    assert!(a.ocsp(&pki, &second, "a-engine-down").contains(": good"));
    let daemon = Daemon::start(&pki);
    pki.revoke(&second, "superseded");
    assert!(
        b.ocsp(&pki, &second, "b-before").contains(": good"),
        "the engine is down: B cannot know yet"
    );
    nats.restart();
    let back = Instant::now();
    while !b.ocsp(&pki, &second, "b-after").contains(": revoked") {
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "node B never caught up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "node B caught up {:?} after the engine came back",
        back.elapsed()
    );
    drop(daemon);
}

/// Three nats-servers in a cluster on loopback, each with its own JetStream directory.
fn cluster(dir: &Path) -> Vec<NatsServer> {
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| (common::nats::free_port(), common::nats::free_port()))
        .collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, route)| format!("nats://127.0.0.1:{route}"))
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, (client, route))| {
            let extra = vec![
                "--server_name".to_owned(),
                format!("n{i}"),
                "--cluster_name".to_owned(),
                "sceau-test".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{route}"),
                "--routes".to_owned(),
                routes.join(","),
            ];
            NatsServer::start_on(&dir.join(format!("n{i}")), *client, &extra)
        })
        .collect()
}

/// Issue 11: buckets replicated on three servers; one server killed, then another: no status
/// is lost, and a node that lists every server keeps following.
#[test]
fn with_three_replicas_losing_a_server_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = cluster(dir.path());
    let urls: Vec<String> = servers.iter().map(NatsServer::url).collect();
    let pki = Pki::new(common::Keys::EC);
    pki.enable_nats(&urls, 3);
    pki.init();
    let daemon = Daemon::start(&pki);
    copy_certs(&pki);
    let holders: Vec<_> = (0..4)
        .map(|i| issue(&pki, &format!("replique{}", (b'a' + i) as char)))
        .collect();
    for holder in &holders {
        // The cluster elects its leaders first: the publisher waits for it.
        wait_for(
            &urls[2],
            &status_key(&pki, holder),
            Duration::from_secs(60),
            |v| v.sha1.is_some(),
        );
    }
    let node = NodeProcess::start(&pki, "node-cluster", &urls);
    let revoke = |holder: &Path| {
        pki.revoke(holder, "key-compromise");
    };
    revoke(&holders[0]);
    servers[0].kill();
    revoke(&holders[1]);
    // An engine that lost a server is late, not lost: the node keeps what it had (good, or
    // tryLater while it re-reads) until the revocation reaches it.
    for (i, holder) in holders[..2].iter().enumerate() {
        eventually(&format!("revocation {i}"), Duration::from_secs(60), || {
            node.answer(&pki, holder, &format!("cluster-{i}")) == "revoked"
        });
    }
    // The first server back, the second killed: still nothing lost, on the third.
    servers[0].restart();
    // Back in the cluster (it answers for the buckets again) before another one goes.
    wait_for(
        &urls[0],
        &status_key(&pki, &holders[1]),
        Duration::from_secs(60),
        |v| v.status == "revoked",
    );
    std::thread::sleep(Duration::from_secs(2));
    servers[1].kill();
    revoke(&holders[2]);
    for (i, holder) in holders.iter().enumerate() {
        let expected = if i < 3 { "revoked" } else { "good" };
        wait_for(
            &urls[2],
            &status_key(&pki, holder),
            Duration::from_secs(60),
            |v| v.status == expected && v.sha1.is_some(),
        );
    }
    eventually("revocation 2", Duration::from_secs(60), || {
        node.answer(&pki, &holders[2], "cluster-2") == "revoked"
    });
    eventually("the unrevoked one good", Duration::from_secs(60), || {
        node.answer(&pki, &holders[3], "cluster-3") == "good"
    });
    drop(daemon);
}

/// Issue 17, problems 1 to 3: the engine loses both buckets (a cluster rebuilt, an operator's
/// mistake). A node that lived through it stops vouching for "good" and says why; a new node
/// on the empty engine is not ready; the CA host rebuilds both buckets from its store, every
/// status included; a revocation made afterwards reaches every node, and no node ever said
/// "good" for it. The same with the buckets deleted under a running CA.
#[test]
fn a_lost_engine_is_rebuilt_from_the_store_and_nodes_never_vouch_for_what_they_missed() {
    let (_dir, nats, pki, daemon) = ca_with_engine();
    let (first, second) = issue_two(&pki, &nats, ["perdu", "garde"]);
    let a = NodeProcess::start(&pki, "node-a", &[nats.url()]);
    assert_eq!(a.answer(&pki, &second, "a-before"), "good");
    assert_eq!(a.health()["view"]["complete"], true, "{}", a.health());

    drop(daemon);
    delete_buckets(&nats.url());
    eventually("node A no longer ready", Duration::from_secs(10), || {
        a.get("/readyz").0 == 503
    });
    let health = a.health();
    assert_eq!(health["view"]["complete"], false, "{health}");
    assert!(
        health["view"]["why"]
            .as_str()
            .unwrap()
            .contains("status bucket sceau-status"),
        "{health}"
    );
    assert_eq!(a.answer(&pki, &second, "a-lost"), "trylater");
    // A node started on the empty engine is never ready and vouches for nothing.
    let c = NodeProcess::spawn(&pki, "node-c", &[nats.url()]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.get("/readyz").0, 503, "{}", c.health());
    assert_eq!(c.health()["ready"], false);

    // The CA back: the engine rebuilt from its store; then a revocation.
    let daemon = Daemon::start(&pki);
    let rebuilt = eventually("the status bucket rebuilt", Duration::from_secs(20), || {
        read_status(&nats.url(), &status_key(&pki, &second)).is_some_and(|v| v.sha1.is_some())
    });
    eprintln!("status bucket rebuilt {rebuilt:?} after the CA started");
    pki.revoke(&first, "superseded");
    never_good_until_revoked(&a, &pki, &first, "a-first");
    never_good_until_revoked(&c, &pki, &first, "c-first");
    for node in [&a, &c] {
        eventually("node ready again", Duration::from_secs(20), || {
            node.get("/readyz").0 == 200
        });
        assert_eq!(node.answer(&pki, &second, "second-good"), "good");
        assert_eq!(node.health()["view"]["complete"], true);
    }

    // The buckets deleted under the running CA: found by its publisher, rebuilt; a
    // revocation made meanwhile reaches the nodes, never "good" before.
    delete_buckets(&nats.url());
    pki.revoke(&second, "key-compromise");
    never_good_until_revoked(&a, &pki, &second, "a-second");
    never_good_until_revoked(&c, &pki, &second, "c-second");
    eventually("nodes complete again", Duration::from_secs(20), || {
        a.get("/readyz").0 == 200 && c.get("/readyz").0 == 200
    });

    // `sceau publish --all`: one more full publication, on demand.
    let before = daemon.metric("sceau_publisher_full_publications_total", "");
    let answer = pki.sceau_ok(&["publish", "--all"]);
    assert!(answer.contains("requested"), "{answer}");
    eventually(
        "a full publication on demand",
        Duration::from_secs(20),
        || daemon.metric("sceau_publisher_full_publications_total", "") > before,
    );
    drop(daemon);
}

/// Replaces the snapshot bucket's object `name` with `content`.
fn put_snapshot_object(url: &str, name: &str, content: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let snapshots = js.get_object_store("sceau-snapshots").await.unwrap();
        snapshots.put(name, &mut &content[..]).await.unwrap();
    });
}

/// The snapshot the manifest names, and the revision of the status bucket's entry `key`.
fn snapshot_and_revision(
    url: &str,
    key: &str,
) -> (Option<sceau::va::publish::SnapshotRef>, Option<u64>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Ok(client) = async_nats::connect(url).await else {
            return (None, None);
        };
        let js = async_nats::jetstream::new(client);
        let Ok(bucket) = js.get_key_value("sceau-status").await else {
            return (None, None);
        };
        let snapshot = bucket
            .get("manifest")
            .await
            .ok()
            .flatten()
            .and_then(|bytes| {
                serde_json::from_slice::<sceau::va::publish::EngineManifest>(&bytes).ok()
            })
            .and_then(|manifest| manifest.snapshot);
        let revision = bucket.entry(key).await.ok().flatten().map(|e| e.revision);
        (snapshot, revision)
    })
}

/// Issue 17, item 4: a new node warms up from the publisher's snapshot (one object, not one
/// message per certificate), then takes what changed after it from the bucket: a revocation
/// made after the snapshot is never answered "good". Another object under the snapshot's name
/// is not trusted: the node reads the bucket from its start instead and answers the same.
#[test]
fn a_new_node_warms_up_from_the_snapshot_and_takes_what_changed_after_it() {
    let (_dir, nats, pki, daemon) = ca_with_engine();
    let kept = issue(&pki, "garde");
    let before = issue(&pki, "avant");
    let after = issue(&pki, "apres");
    pki.sceau_ok(&[
        "revoke",
        "--serial",
        &common::serial_of(&before),
        "--reason",
        "superseded",
    ]);
    wait_for(
        &nats.url(),
        &status_key(&pki, &before),
        Duration::from_secs(10),
        |v| v.status == "revoked",
    );
    // A snapshot that holds the first revocation: the first one may have been taken before
    // it, so every status is published again, and the snapshot after that holds it.
    pki.sceau_ok(&["publish", "--all"]);
    let before_key = status_key(&pki, &before);
    let mut snapshot = None;
    eventually(
        "a snapshot holding the revocation",
        Duration::from_secs(60),
        || {
            let (taken, revision) = snapshot_and_revision(&nats.url(), &before_key);
            snapshot = taken.filter(|taken| revision.is_some_and(|r| r <= taken.revision));
            snapshot.is_some()
        },
    );
    let snapshot = snapshot.expect("checked above").object;
    // After the snapshot: only the bucket has it.
    pki.sceau_ok(&[
        "revoke",
        "--serial",
        &common::serial_of(&after),
        "--reason",
        "key-compromise",
    ]);
    assert_eq!(
        snapshot_and_revision(&nats.url(), &before_key)
            .0
            .map(|taken| taken.object),
        Some(snapshot.clone()),
        "one revocation does not make a new snapshot"
    );

    let warm = NodeProcess::spawn(&pki, "node-warm", &[nats.url()]);
    never_good_until_revoked(&warm, &pki, &after, "warm-after");
    eventually("the node ready", Duration::from_secs(20), || {
        warm.get("/readyz").0 == 200
    });
    let health = warm.health();
    assert!(
        health["view"]["from_snapshot"].as_u64().unwrap() >= 3,
        "warmed up from the snapshot: {health}"
    );
    assert_eq!(warm.answer(&pki, &kept, "warm-kept"), "good");
    assert_eq!(warm.answer(&pki, &before, "warm-before"), "revoked");
    assert_eq!(warm.answer(&pki, &after, "warm-after-again"), "revoked");

    // Another object under its name (a bucket re-created, a copy put back, an attacker): not
    // the digest the manifest names, not read at all. (Its records past the magic make no
    // sense either.)
    let mut damaged = sceau::va::snapshot::MAGIC.to_vec();
    damaged.extend_from_slice(&[0xff; 16]);
    put_snapshot_object(&nats.url(), &snapshot, &damaged);
    let cold = NodeProcess::spawn(&pki, "node-cold", &[nats.url()]);
    never_good_until_revoked(&cold, &pki, &after, "cold-after");
    eventually("the node ready", Duration::from_secs(20), || {
        cold.get("/readyz").0 == 200
    });
    let health = cold.health();
    assert_eq!(health["view"]["from_snapshot"], 0, "{health}");
    assert_eq!(cold.answer(&pki, &kept, "cold-kept"), "good");
    assert_eq!(cold.answer(&pki, &before, "cold-before"), "revoked");
    drop(daemon);
}
