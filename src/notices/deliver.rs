//! Delivery of the recorded notices: a JSON POST to each webhook (`http://`), an e-mail through
//! the SMTP relay (plain SMTP, as to a relay on the host or the internal network: no STARTTLS,
//! no authentication). Each attempt has a deadline; a failure is recorded and retried later,
//! each time twice as late (at most an hour); nothing here waits on an RA action nor makes one
//! wait.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{GIVEN_UP, NoticeRecord, collect, due, update};
use crate::config::NoticesConfig;
use crate::store::Store;
use crate::x509::time::Clock;

/// The deadline of one delivery attempt.
const ATTEMPT_DEADLINE: Duration = Duration::from_secs(5);
/// How often the task looks for notices (the scans of pending requests and expiring cards run
/// every `[notices] scan_every_seconds`).
const TICK: Duration = Duration::from_secs(1);

/// At most this many notices are attempted in one pass (each pass lasts at most one attempt's
/// deadline: they are tried at once).
const PER_PASS: usize = 64;

/// The daemon's notices task, until shutdown.
pub async fn run(
    store: Store,
    config: NoticesConfig,
    clock: std::sync::Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let mut ticks: u32 = 0;
    loop {
        let now = clock.now();
        let scan = ticks.is_multiple_of(config.scan_every_seconds.max(1));
        ticks = ticks.wrapping_add(1);
        let (reader, settings) = (store.clone(), config.clone());
        let collected =
            tokio::task::spawn_blocking(move || collect(&reader, &settings, now, scan)).await;
        match collected {
            Ok(Ok(new)) if new > 0 => tracing::info!(new, "notices recorded"),
            Ok(Err(error)) => tracing::error!(%error, "notices: reading the store failed"),
            _ => {}
        }
        let reader = store.clone();
        match tokio::task::spawn_blocking(move || due(&reader, now, PER_PASS)).await {
            Ok(Ok(pending)) => {
                // Every notice, and every receiver of each, at once: a receiver that never
                // answers costs one deadline a pass, not one per notice.
                let attempts = pending.into_iter().map(|(key, notice)| {
                    let (config, clock) = (&config, clock.clone());
                    async move { (key.clone(), attempt(config, &key, notice, clock).await) }
                });
                let attempted = futures_util::future::join_all(attempts).await;
                let writer = store.clone();
                let written = tokio::task::spawn_blocking(move || {
                    attempted
                        .into_iter()
                        .try_for_each(|(key, notice)| update(&writer, key, notice))
                })
                .await;
                if let Ok(Err(error)) = written {
                    tracing::error!(%error, "notices: recording deliveries failed");
                }
            }
            Ok(Err(error)) => tracing::error!(%error, "notices: reading the outbox failed"),
            Err(_) => return,
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Tries every delivery of `notice` that is due, at once; returns it with the outcomes
/// recorded. A receiver no longer configured, or failing for too long, is given up.
async fn attempt(
    config: &NoticesConfig,
    key: &str,
    mut notice: NoticeRecord,
    clock: std::sync::Arc<dyn Clock>,
) -> NoticeRecord {
    let now = clock.now();
    let mut payload = notice.payload.clone();
    // The notice's key: receivers drop what they got twice (delivery is at least once).
    payload["id"] = serde_json::Value::String(key.to_owned());
    let body = serde_json::to_vec_pretty(&payload).unwrap_or_default();
    let tries = notice.deliveries.iter().map(|delivery| {
        let due = delivery.delivered_at.is_none()
            && !delivery
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with(GIVEN_UP))
            && delivery.next_attempt <= now;
        let (body, subject, channel) = (&body, &notice.subject, delivery.channel.clone());
        async move {
            if !due {
                return None;
            }
            Some(match channel.split_once(' ') {
                Some(("webhook", url)) if config.webhooks.iter().any(|u| u == url) => {
                    tokio::time::timeout(ATTEMPT_DEADLINE, post(url, body))
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!(
                                "{url}: no answer within {} s",
                                ATTEMPT_DEADLINE.as_secs()
                            ))
                        })
                }
                _ if channel == "email" && config.smtp_relay.is_some() => {
                    email(config, key, subject, body).await
                }
                _ => Err(format!(
                    "{GIVEN_UP}: {channel} is no longer a receiver in [notices]"
                )),
            })
        }
    });
    let outcomes = futures_util::future::join_all(tries).await;
    let now = clock.now();
    for (delivery, outcome) in notice.deliveries.iter_mut().zip(outcomes) {
        let Some(outcome) = outcome else {
            continue;
        };
        delivery.attempts += 1;
        match outcome {
            Ok(()) => {
                delivery.delivered_at = Some(now);
                delivery.last_error = None;
            }
            Err(error) => {
                let backoff = 5u64
                    .saturating_mul(1 << delivery.attempts.min(10))
                    .min(3600);
                delivery.next_attempt = now.plus_seconds(backoff);
                let error = if super::give_up(delivery.attempts) && !error.starts_with(GIVEN_UP) {
                    format!("{GIVEN_UP} after {} attempts: {error}", delivery.attempts)
                } else {
                    error
                };
                if delivery.attempts == 1 || error.starts_with(GIVEN_UP) {
                    // The first failure and the last: not one line per retry.
                    tracing::warn!(channel = %delivery.channel, attempts = delivery.attempts, %error, "a notice was not delivered");
                }
                delivery.last_error = Some(error);
            }
        }
    }
    notice
}

/// POSTs `body` (JSON) to the webhook `url`; any 2xx answer is a delivery.
async fn post(url: &str, body: &[u8]) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("{url}: no host"))?;
    let address = format!("{host}:{}", uri.port_u16().unwrap_or(80));
    let stream = TcpStream::connect(&address)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, address.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| format!("{url}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{url}: answered {status}"))
    }
}

/// Sends the notice by e-mail through the relay.
async fn email(
    config: &NoticesConfig,
    key: &str,
    subject: &str,
    body: &[u8],
) -> Result<(), String> {
    let Some(relay) = &config.smtp_relay else {
        return Err(format!("{GIVEN_UP}: no smtp_relay in [notices]"));
    };
    tokio::time::timeout(ATTEMPT_DEADLINE, smtp(relay, config, key, subject, body))
        .await
        .map_err(|_| {
            format!(
                "SMTP {relay}: no answer within {} s",
                ATTEMPT_DEADLINE.as_secs()
            )
        })?
}

/// One SMTP transaction (RFC 5321): EHLO, MAIL FROM, RCPT TO each, DATA, QUIT.
async fn smtp(
    relay: &str,
    config: &NoticesConfig,
    key: &str,
    subject: &str,
    body: &[u8],
) -> Result<(), String> {
    let stream = TcpStream::connect(relay)
        .await
        .map_err(|e| format!("SMTP {relay}: {e}"))?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    // A reply: its lines up to the one without a continuation dash; its code must be `want`.
    async fn reply(
        read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
        want: char,
        relay: &str,
    ) -> Result<(), String> {
        loop {
            let mut line = String::new();
            let n = read
                .read_line(&mut line)
                .await
                .map_err(|e| format!("SMTP {relay}: {e}"))?;
            if n == 0 {
                return Err(format!("SMTP {relay}: closed"));
            }
            if line.len() < 4 || !line.starts_with(want) {
                return Err(format!("SMTP {relay}: {}", line.trim_end()));
            }
            if line.as_bytes()[3] != b'-' {
                return Ok(());
            }
        }
    }
    let mut send = async |line: &str| {
        write
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("SMTP {relay}: {e}"))
    };
    reply(&mut read, '2', relay).await?;
    send("EHLO sceau\r\n").await?;
    reply(&mut read, '2', relay).await?;
    send(&format!("MAIL FROM:<{}>\r\n", config.smtp_from)).await?;
    reply(&mut read, '2', relay).await?;
    for to in &config.smtp_to {
        send(&format!("RCPT TO:<{to}>\r\n")).await?;
        reply(&mut read, '2', relay).await?;
    }
    send("DATA\r\n").await?;
    reply(&mut read, '3', relay).await?;
    // Headers in ASCII (the subject's other characters replaced), the JSON as the body, each
    // line starting with a dot doubled (RFC 5321 §4.5.2).
    let ascii_subject: String = subject
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect();
    let text = String::from_utf8_lossy(body);
    // The key as Message-ID (its characters kept to those a Message-ID allows).
    let message_id: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '.'
            }
        })
        .collect();
    let mut message = format!(
        "Date: {}\r\nMessage-ID: <{message_id}@sceau>\r\nFrom: <{}>\r\nTo: {}\r\nSubject: [sceau] {ascii_subject}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        rfc5322_date(),
        config.smtp_from,
        config
            .smtp_to
            .iter()
            .map(|t| format!("<{t}>"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for line in text.lines() {
        if line.starts_with('.') {
            message.push('.');
        }
        message.push_str(line);
        message.push_str("\r\n");
    }
    message.push_str(".\r\n");
    send(&message).await?;
    reply(&mut read, '2', relay).await?;
    let _ = send("QUIT\r\n").await;
    Ok(())
}

/// Now as RFC 5322 writes dates, in UTC: `Sat, 05 Dec 2026 10:00:00 +0000`.
fn rfc5322_date() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let Ok(time) = der::DateTime::from_unix_duration(Duration::from_secs(now.as_secs())) else {
        return "Thu, 01 Jan 1970 00:00:00 +0000".into();
    };
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[((now.as_secs() / 86_400) % 7) as usize],
        time.day(),
        MONTHS[usize::from(time.month().saturating_sub(1)) % 12],
        time.year(),
        time.hour(),
        time.minutes(),
        time.seconds()
    )
}
