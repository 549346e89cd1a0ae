//! The administration listener of a sealed daemon (docs/ceremonies.md#the-pin): it takes the
//! officers' shares (`sceau unseal`) and says it is sealed; every other command is refused
//! with 503 until the PIN is whole. Like [`super::admin`], it parses, authorises and calls the
//! service layer ([`crate::service::unseal::Sealed`]).

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;

use super::Body;
use super::admin::{Route, SMALL_BODY_LIMIT, authorize, identity, json, json_body};
use super::problem::Problem;
use crate::service::unseal::Sealed;

/// What the administration listener serves while the daemon is sealed.
pub struct SealedAdmin {
    pub sealed: Arc<Sealed>,
    pub token: String,
}

impl core::fmt::Debug for SealedAdmin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SealedAdmin").finish()
    }
}

/// `POST /admin/unseal`: one officer's presentation of their share.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresentBody {
    /// CMS SignedData (DER), base64.
    pub presentation: String,
}

impl core::fmt::Debug for PresentBody {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PresentBody").finish_non_exhaustive()
    }
}

impl SealedAdmin {
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        Ok(match self.serve(request).await {
            Ok(response) => response,
            Err(problem) => problem.response(),
        })
    }

    async fn serve(&self, request: Request<Incoming>) -> Result<Response<Body>, Problem> {
        let Some((route, method, needs_token)) = Route::find(request.uri().path()) else {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such resource",
            ));
        };
        if request.method() != method {
            return Err(Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "wrong method",
            ));
        }
        if needs_token {
            authorize(&self.token, &request)?;
        }
        let challenge = self.sealed.challenge();
        Ok(match route {
            Route::Identity => identity(&self.token, request).await?,
            // Without a token: how far the unsealing is, never who presented.
            Route::Health | Route::Ready => {
                let body = serde_json::json!({
                    "status": "sealed",
                    "unseal": {"quorum": challenge.quorum, "given": challenge.given.len()},
                });
                json(StatusCode::SERVICE_UNAVAILABLE, &body)
            }
            Route::UnsealChallenge => json(StatusCode::OK, &challenge),
            Route::Unseal => {
                use base64::Engine;
                let body: PresentBody = json_body(request, SMALL_BODY_LIMIT).await?;
                let presentation = base64::engine::general_purpose::STANDARD
                    .decode(body.presentation.trim())
                    .map_err(|e| {
                        Problem::new(
                            StatusCode::BAD_REQUEST,
                            "malformed-presentation",
                            format!("presentation: {e}"),
                        )
                    })?;
                let progress = self
                    .sealed
                    .present(presentation)
                    .await
                    .map_err(|e| Problem::from(&e))?;
                json(StatusCode::OK, &progress)
            }
            _ => {
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "sealed",
                    format!(
                        "the daemon is sealed: it signs nothing until {} security officers present their shares of the PIN (sceau unseal); {} given",
                        challenge.quorum,
                        challenge.given.len()
                    ),
                ));
            }
        })
    }
}
