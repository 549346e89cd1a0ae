//! How the CLI reaches a running daemon: HTTP to its admin listener, with the bearer token the
//! daemon wrote in the data directory (a new one at each start), sent only once the daemon has
//! proved it knows that token (an HMAC of a fresh challenge).
use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use tokio::net::TcpStream;

use super::serve::{ADMIN_ADDRESS_FILE, ADMIN_TOKEN_FILE};
use super::{CliError, Failure};
use crate::config::Config;

/// Why a call to the daemon did not happen.
#[derive(Debug)]
enum AdminCallError {
    /// Nothing listens: the daemon is not running.
    NotRunning,
    Failed(CliError),
}

/// POSTs JSON to the daemon; returns the status and the body.
fn post(
    config: &Config,
    path: &str,
    body: serde_json::Value,
) -> Result<(StatusCode, Bytes), AdminCallError> {
    let address = std::fs::read_to_string(config.data_dir.join(ADMIN_ADDRESS_FILE))
        .ok()
        .and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok())
        .unwrap_or(config.listen.admin);
    let token = read_token(&config.data_dir).map_err(AdminCallError::Failed)?;
    let data_dir = config.data_dir.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminCallError::Failed(CliError::internal(e.to_string())))?;
    runtime.block_on(async move {
        let stream = match TcpStream::connect(address).await {
            Ok(stream) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(AdminCallError::NotRunning);
            }
            Err(e) => {
                return Err(AdminCallError::Failed(CliError::unavailable(format!(
                    "connecting to the daemon at {address}: {e}"
                ))));
            }
        };
        let failed = |e: hyper::Error| {
            AdminCallError::Failed(CliError::unavailable(format!("talking to the daemon at {address}: {e}")))
        };
        let body_of = async |response: hyper::Response<hyper::body::Incoming>| {
            let collected = response.into_body().collect().await.map_err(failed)?;
            Ok(collected.to_bytes())
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(failed)?;
        tokio::spawn(connection);
        // The daemon proves it knows this data directory's token before the token is sent:
        // a process that took the admin address while sceau was stopped gets nothing.
        let mut challenge = [0u8; 32];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut challenge)
            .map_err(|_| AdminCallError::Failed(CliError::internal("the random generator failed")))?;
        let ask = Request::post("/admin/identity")
            .header(hyper::header::HOST, address.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(
                serde_json::json!({ "challenge": hex::encode(challenge) }).to_string(),
            )))
            .map_err(|e| AdminCallError::Failed(CliError::internal(e.to_string())))?;
        let answer = sender.send_request(ask).await.map_err(failed)?;
        let proof = body_of(answer).await?;
        let proof = serde_json::from_slice::<serde_json::Value>(&proof)
            .ok()
            .and_then(|v| v.get("proof").and_then(|p| p.as_str()).map(str::to_owned));
        let expected = crate::http::admin::identity_proof(&token, &challenge);
        let proven =
            proof.is_some_and(|p| crate::http::admin::constant_time_eq(&p, &expected));
        if !proven {
            return Err(AdminCallError::Failed(CliError::refused(format!(
                "the process listening on {address} is not the sceau daemon of {} (it cannot prove it knows this store's admin token); nothing was sent to it",
                data_dir.display()
            ))));
        }
        let request = Request::post(path)
            .header(hyper::header::HOST, address.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| AdminCallError::Failed(CliError::internal(e.to_string())))?;
        let response = sender.send_request(request).await.map_err(failed)?;
        let status = response.status();
        Ok((status, body_of(response).await?))
    })
}

fn read_token(data_dir: &Path) -> Result<String, CliError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) => Ok(token.trim().to_owned()),
        // No token: the daemon never ran here; the call will find nobody listening.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(CliError::new(
            Failure::Io,
            format!(
                "reading {}: {e} (run as the user the daemon runs as)",
                path.display()
            ),
        )),
    }
}

/// Runs a command through the running daemon: `Some(answer)` when it succeeded, `None` when no
/// daemon runs (the caller does it offline), and an error naming the refusal otherwise.
pub fn call(
    config: &Config,
    path: &str,
    body: serde_json::Value,
) -> Result<Option<Bytes>, CliError> {
    match post(config, path, body) {
        Ok((status, body)) if status.is_success() => Ok(Some(body)),
        Ok((status, body)) => Err(CliError::new(
            failure_of(status),
            format!("the daemon refused ({status}): {}", problem_detail(&body)),
        )),
        Err(AdminCallError::Failed(error)) => Err(error),
        Err(AdminCallError::NotRunning) => Ok(None),
    }
}

/// The kind of failure a refusal of the daemon stands for: a request it could not accept as
/// written (400, 404, 422), a refusal (403, 409), a daemon that cannot act now (503), a fault.
fn failure_of(status: StatusCode) -> Failure {
    match status.as_u16() {
        400 | 404 | 413 | 415 | 422 => Failure::Usage,
        401 | 403 | 409 => Failure::Refused,
        429 | 503 => Failure::Unavailable,
        _ => Failure::Internal,
    }
}

/// The `detail` of a problem document, or the body.
pub fn problem_detail(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}
