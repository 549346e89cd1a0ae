//! Notices end to end: a real daemon with `[notices]`, a real SMTP server (Python's aiosmtpd,
//! writing a maildir) and a webhook receiver on 127.0.0.1, plus a webhook nobody listens on.
//! Requests waiting (and still waiting), an expiring card, an operator withdrawn and a
//! scheduled revocation that ran each reach the receivers within seconds; the dead receiver is
//! retried and recorded, and holds nothing up.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::ra::*;
use common::{Keys, Pki};

/// A port nobody listens on (bound, then let go).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A webhook receiver: every JSON body POSTed to it, answered 204.
fn webhook_receiver() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(value) = serde_json::from_slice(&body)
            {
                store.lock().unwrap().push(value);
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (port, received)
}

/// Python's aiosmtpd on `port`, delivering into the maildir `dir`.
struct SmtpServer(std::process::Child);

impl SmtpServer {
    fn start(port: u16, dir: &std::path::Path) -> Self {
        let child = std::process::Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir)
            .spawn()
            .expect("python3 -m aiosmtpd (apt-get install python3-aiosmtpd)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        SmtpServer(child)
    }

    /// Every message delivered so far.
    fn messages(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir.join("new"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 15 s for a webhook notice of `kind` whose `field` is `value`.
fn wait_for(
    received: &Arc<Mutex<Vec<serde_json::Value>>>,
    kind: &str,
    field: &str,
    value: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(found) = received
            .lock()
            .unwrap()
            .iter()
            .find(|n| n["kind"] == kind && n[field] == value)
        {
            return found.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} notice for {field}={value}: {:?}",
            received.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn notices_reach_a_webhook_and_an_smtp_server_and_a_dead_receiver_holds_nothing_up() {
    let pki = Pki::new(Keys::EC);
    pki.enable_ra(100_000);
    let maildir = pki.path("mail");
    let smtp_port = free_port();
    let _smtp = SmtpServer::start(smtp_port, &maildir);
    let (hook_port, received) = webhook_receiver();
    let dead = format!("http://127.0.0.1:{}/dead", free_port());
    let live = format!("http://127.0.0.1:{hook_port}/sceau");
    let mut config = std::fs::read_to_string(&pki.config).unwrap();
    config.push_str(&format!(
        "\n[notices]\nwebhooks = [\"{dead}\", \"{live}\"]\nsmtp_relay = \"127.0.0.1:{smtp_port}\"\nsmtp_to = [\"aed-dap@justice.test\"]\nstill_waiting_hours = 0\nexpiry_days = [1100]\nscan_every_seconds = 1\n"
    ));
    std::fs::write(&pki.config, config).unwrap();
    pki.init();
    let daemon = Daemon::start(&pki);
    let ra = Ra { pki, daemon };
    let team = team(&ra);

    // A request waits: the webhook and the mail say so, then it still waits (0 hours here).
    let (request, answer) = submit(&ra, &team.oc, "noticed-1", &[]);
    assert_eq!(answer.0, 201, "{answer:?}");
    let waiting = wait_for(&received, "request-waiting", "request", &request);
    assert_eq!(waiting["submitted_by"], team.oc.id);
    // Ids, not names: the holder's name is in no notice.
    assert_eq!(waiting["id"], format!("request-waiting:{request}"));
    assert!(!waiting.to_string().contains("NOTICED"), "{waiting}");
    wait_for(&received, "request-still-waiting", "request", &request);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !SmtpServer::messages(&maildir)
        .iter()
        .any(|m| m.contains(&request) && m.contains("aed-dap@justice.test"))
    {
        assert!(Instant::now() < deadline, "no mail for {request}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Approved while a receiver is dead: the approval answers as ever.
    let (status, issued) = decide(&ra, &team.aed, &request, "approve");
    assert_eq!(status, 200, "{issued}");
    let card = issued["card"].as_str().unwrap().to_owned();
    // The card expires within the window (1100 days here).
    wait_for(&received, "card-expiring", "card", &card);

    // A revocation scheduled two seconds ahead runs, and is notified.
    let at = sceau::x509::Timestamp::now().plus_seconds(2).to_string();
    let (_, json) = doc(
        "revoke",
        &format!(r#""card":"{card}","reason":"affiliation-changed","at":"{at}""#),
    );
    let (status, scheduled) = ra.post(&team.aed, "/ra/v1/revocations", &json);
    assert_eq!(status, 202, "{scheduled}");
    let id = scheduled["scheduled"]["id"].as_str().unwrap().to_owned();
    wait_for(&received, "scheduled-revocation", "scheduled", &id);

    // An operator withdrawn.
    let (status, answer) = withdraw(&ra, &team.aed, &team.oc.id, Some("left"));
    assert_eq!(status, 200, "{answer}");
    wait_for(&received, "operator-withdrawn", "operator", &team.oc.id);

    // Recorded, each once: the live receivers' deliveries done, the dead one's retried with
    // its error.
    let Ra { pki, daemon } = ra;
    daemon.stop();
    let config = sceau::config::Config::load(&pki.config).unwrap();
    let store = sceau::store::Store::open(&config.store_dir()).unwrap();
    let notices: Vec<(String, sceau::notices::NoticeRecord)> = store
        .scan::<sceau::notices::Notices>(&[], &[])
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for kind in [
        "request-waiting",
        "request-still-waiting",
        "card-expiring",
        "scheduled-revocation",
        "operator-withdrawn",
    ] {
        assert!(
            notices.iter().any(|(_, n)| n.kind == kind),
            "no {kind} recorded"
        );
    }
    let waiting_key = format!("request-waiting:{request}");
    let (_, waiting) = notices.iter().find(|(k, _)| *k == waiting_key).unwrap();
    // Three receivers: the dead webhook, the live one, the mail.
    assert_eq!(waiting.deliveries.len(), 3, "{waiting:?}");
    assert!(
        waiting
            .deliveries
            .iter()
            .any(|d| d.channel.contains("/dead"))
    );
    for delivery in &waiting.deliveries {
        if delivery.channel.contains("/dead") {
            assert!(delivery.delivered_at.is_none());
            assert!(delivery.attempts >= 1, "{delivery:?}");
            assert!(delivery.last_error.is_some(), "{delivery:?}");
        } else {
            assert!(delivery.delivered_at.is_some(), "{delivery:?}");
        }
    }
    // Each notice once, however many times the log and the tables were read.
    let mut webhook_kinds: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .filter(|n| n["request"] == request.as_str())
        .map(|n| n["kind"].as_str().unwrap().to_owned())
        .collect();
    webhook_kinds.sort();
    assert_eq!(webhook_kinds, ["request-still-waiting", "request-waiting"]);
}
