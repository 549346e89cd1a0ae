//! RFC 9457 problem documents: every refusal says which rule refused it.
use hyper::{Response, StatusCode, header};
use serde::Serialize;

use super::Body;
use crate::ca::CaError;
use crate::service::ServiceError;

/// A problem: `type` names the rule (`urn:sceau:problem:<rule>`), `detail` says what was wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Seconds after which a retry may succeed (`Retry-After`), for a passing unavailability.
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl Problem {
    pub fn new(status: StatusCode, rule: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:sceau:problem:{rule}"),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// The same problem, telling the client when to retry.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn response(&self) -> Response<Body> {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut response = Response::new(Body::one(body));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

/// A CA error as a problem document, with the status that fits it.
impl From<&CaError> for Problem {
    fn from(error: &CaError) -> Self {
        let (status, rule) = match error {
            CaError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            CaError::AlreadyRevoked(_) => (StatusCode::CONFLICT, "already-revoked"),
            CaError::Refused(_) => (StatusCode::BAD_REQUEST, "refused"),
            CaError::Rejected(rejection) => {
                return Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &rejection.problem_rule(),
                    error.to_string(),
                );
            }
            CaError::UnknownPolicy { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unknown-policy"),
            e if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, "hsm-unavailable"),
            CaError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Problem::new(status, rule, error.to_string())
    }
}

/// An error of the service layer as a problem document.
impl From<&ServiceError> for Problem {
    fn from(error: &ServiceError) -> Self {
        let detail = error.to_string();
        match error {
            ServiceError::Ca(error) => Problem::from(error),
            ServiceError::Invalid { field, detail } => {
                Problem::new(StatusCode::BAD_REQUEST, field, format!("{field}: {detail}"))
            }
            ServiceError::NotInitialized => {
                Problem::new(StatusCode::CONFLICT, "not-initialized", detail)
            }
            ServiceError::HsmUnavailable => hsm_unavailable(),
            ServiceError::ShuttingDown => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting-down", detail)
            }
            ServiceError::Bootstrap { rule, .. } => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, rule, detail)
            }
            ServiceError::Backup(_) => Problem::new(StatusCode::BAD_REQUEST, "backup", detail),
            ServiceError::Checkpoint(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "checkpoint-failed", detail)
            }
            ServiceError::Crl(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "crl-failed", detail)
            }
            ServiceError::Resigning(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "resigning-failed", detail)
            }
            ServiceError::RolloverIncomplete(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rollover-incomplete",
                detail,
            ),
            ServiceError::NoEngine => Problem::new(StatusCode::CONFLICT, "no-engine", detail),
            ServiceError::Unseal(refusal) => {
                use crate::ca::ceremony::pin_split::UnsealError;
                let (status, rule) = match refusal {
                    UnsealError::NotAnOfficer | UnsealError::NotTheHolder { .. } => {
                        (StatusCode::FORBIDDEN, "not-the-holder")
                    }
                    UnsealError::StaleNonce
                    | UnsealError::SamePerson(_)
                    | UnsealError::Unsealed
                    | UnsealError::UnknownSplit(_) => (StatusCode::CONFLICT, "unseal-conflict"),
                    UnsealError::Officers(_) | UnsealError::WrongPin(_) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, "unseal-failed")
                    }
                    _ => (StatusCode::BAD_REQUEST, "unseal-refused"),
                };
                Problem::new(status, rule, detail)
            }
        }
    }
}

/// A request refused while the token is unavailable: nothing changed, retry in ten seconds.
pub fn hsm_unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "hsm-unavailable",
        "the HSM token is unavailable; nothing was changed, retry later",
    )
    .retry_after(10)
}
