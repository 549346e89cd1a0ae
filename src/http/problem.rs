//! RFC 9457 problem documents: every refusal says which rule refused it.
use hyper::{Response, StatusCode, header};
use serde::Serialize;

use super::Body;

/// A problem: `type` names the rule (`urn:sceau:problem:<rule>`), `detail` says what was wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, rule: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:sceau:problem:{rule}"),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
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
        response
    }
}
