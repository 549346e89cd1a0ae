//! A running `sceau serve`: started on free ports, found through its ready line, stopped with
//! SIGTERM (killed on drop if a test panicked), talked to over real HTTP.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::Pki;

pub struct Daemon {
    child: Option<Child>,
    /// The daemon's standard output, line by line, after its first line.
    lines: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
    /// Its first line: `sceau ready: ...`, or `sceau sealed: ...` when its PIN is split.
    pub first_line: String,
    pub va: SocketAddr,
    /// The RA listener, when the configuration has an `[ra]` table.
    pub ra: Option<SocketAddr>,
    pub admin: SocketAddr,
}

impl Daemon {
    pub fn start(pki: &Pki) -> Self {
        Self::start_with_env(pki, &[])
    }

    pub fn start_with_env(pki: &Pki, env: &[(&str, &str)]) -> Self {
        let log = std::fs::File::create(pki.path("daemon.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sceau"));
        command
            .arg("-c")
            .arg(&pki.config)
            .args([
                "--log",
                "info",
                "serve",
                "--listen-va",
                "127.0.0.1:0",
                "--listen-ra",
                "127.0.0.1:0",
                "--listen-admin",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Every line, for as long as the daemon writes: a sealed daemon writes its ready line
        // once unsealed.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| {
                    let log = std::fs::read_to_string(pki.path("daemon.log")).unwrap_or_default();
                    panic!("the daemon did not get ready: {line:?}\n{log}")
                })
        };
        let ra = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ra="))
            .and_then(|a| a.parse().ok());
        Daemon {
            va: field("va="),
            ra,
            admin: field("admin="),
            child: Some(child),
            lines: std::sync::Mutex::new(rx),
            first_line: line.clone(),
        }
    }

    /// Waits (at most `seconds`) for a line of standard output starting with `prefix`.
    pub fn wait_line(&self, prefix: &str, seconds: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let received = self.lines.lock().unwrap().recv_timeout(left);
            match received {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line starting with {prefix:?} within {seconds} s")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.va)
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as when the machine is lost: nothing of the daemon runs its course.
    pub fn kill_9(mut self) {
        let child = self.child.as_ref().unwrap();
        let killed = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// A counter from /metrics (the sum of the samples of `name` whose labels contain `labels`).
    pub fn metric(&self, name: &str, labels: &str) -> u64 {
        let (_, _, body) = http(self.admin, "GET", "/metrics", &[], b"");
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(labels) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Waits until `check` holds (at most 60 s).
    pub fn wait_until(&self, what: &str, mut check: impl FnMut(&Daemon) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !check(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal HTTP/1.1 exchange over a fresh connection: (status, headers, body).
pub fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    // A body larger than the server accepts may be refused before it is all sent.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

/// POSTs the DER OCSP request `request` to `/ocsp` at `address`: (status, headers, body).
pub fn ocsp_post(address: SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    post(address, "/ocsp", "application/ocsp-request", request)
}

/// POSTs `body` of the media type `content_type` to `path` at `address`.
pub fn post(
    address: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http(
        address,
        "POST",
        path,
        &[("Content-Type", content_type)],
        body,
    )
}

/// The value of a header.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `openssl ocsp` against the daemon, with a nonce, as a relying application asks: the
/// response must verify (responder certified by `issuer`, chain to `root`) and say `status`.
pub fn ocsp_ask(
    daemon: &Daemon,
    root: &Path,
    issuer: &Path,
    certificate: &Path,
    status: &str,
) -> String {
    let (ok, text) = super::openssl(&[
        "ocsp",
        "-issuer",
        issuer.to_str().unwrap(),
        "-cert",
        certificate.to_str().unwrap(),
        "-CAfile",
        root.to_str().unwrap(),
        "-url",
        &daemon.url("/ocsp"),
        "-resp_text",
    ]);
    assert!(
        ok && text.contains("Response verify OK") && text.contains(&format!(": {status}")),
        "{}: {text}",
        certificate.display()
    );
    text
}
