//! One HTTP/1.1 connection to the RA over mutual TLS, kept for the session: the card signs
//! the TLS handshake once, however many requests follow.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, Uri};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::super::{CliError, ContextAs, Failure};

pub(super) struct RaConnection {
    runtime: tokio::runtime::Runtime,
    connector: tokio_rustls::TlsConnector,
    base: Uri,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// An answer: its status and body.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: Bytes,
}

impl RaConnection {
    pub(super) fn new(url: &str, config: rustls::ClientConfig) -> Result<Self, CliError> {
        let base: Uri = url
            .parse()
            .context_as(Failure::Usage, || format!("--ra {url:?}"))?;
        if base.scheme_str() != Some("https") || base.host().is_none() {
            return Err(CliError::usage(format!(
                "--ra {url:?}: an https:// URL of the RA listener"
            )));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context_as(Failure::Internal, || "the client's runtime".into())?;
        Ok(Self {
            runtime,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            base,
            sender: None,
        })
    }

    /// Sends one request; opens (or reopens) the connection when needed.
    pub(super) fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, CliError> {
        let host = self.base.host().unwrap_or_default().to_owned();
        let port = self.base.port_u16().unwrap_or(443);
        let authority = format!("{host}:{port}");
        let connector = self.connector.clone();
        let sender = self.sender.take();
        let (answer, sender) = self.runtime.block_on(async move {
            let mut sender = match sender {
                Some(sender) if !sender.is_closed() => sender,
                _ => connect(&connector, &host, port).await?,
            };
            sender
                .ready()
                .await
                .context_as(Failure::Unavailable, || format!("the RA at {authority}"))?;
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, &authority);
            if body.is_some() {
                request = request.header(hyper::header::CONTENT_TYPE, "application/cms");
            }
            let request = request
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .context_as(Failure::Usage, || format!("the path {path:?}"))?;
            let response = sender
                .send_request(request)
                .await
                .context_as(Failure::Unavailable, || format!("the RA at {authority}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .context_as(Failure::Unavailable, || format!("the RA at {authority}"))?
                .to_bytes();
            Ok::<_, CliError>((Answer { status, body }, sender))
        })?;
        self.sender = Some(sender);
        Ok(answer)
    }
}

async fn connect(
    connector: &tokio_rustls::TlsConnector,
    host: &str,
    port: u16,
) -> Result<SendRequest<Full<Bytes>>, CliError> {
    let address = format!("{host}:{port}");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .context_as(Failure::Usage, || format!("--ra host {host:?}"))?;
    let tcp = TcpStream::connect(&address)
        .await
        .context_as(Failure::Unavailable, || {
            format!("connecting to the RA at {address}")
        })?;
    let tls = connector
        .connect(name, tcp)
        .await
        .context_as(Failure::Unavailable, || {
            format!("TLS with the RA at {address}")
        })?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .context_as(Failure::Unavailable, || {
                format!("HTTP with the RA at {address}")
            })?;
    tokio::spawn(async move {
        // Ends when the session drops the sender or the RA closes.
        let _ = connection.await;
    });
    Ok(sender)
}
