//! Errors on the HTTP boundary, as RFC 9457 `application/problem+json`.
//!
//! Every error a client can see is a [`Problem`]: a status, a short title, a
//! human-readable detail and, for invalid input, one entry per bad field.
//! Client mistakes are 4xx with enough detail to fix the request; a broker
//! that cannot durably take an order is a 503 with `Retry-After`; nothing a
//! client sends can produce a 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One invalid field of a request, named by its JSON path
/// (`items[0].quantity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// One entry per invalid field, for 400 and 422.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            kind,
            title,
            status: status.as_u16(),
            detail,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-order",
            "The order is not valid",
            format!("{} field(s) are invalid; see `errors`", errors.len()),
        );
        problem.errors = errors;
        problem
    }

    /// A problem for an error response that came without a body (a timeout,
    /// a framework rejection), described by its status alone.
    pub fn from_status(status: StatusCode) -> Self {
        let title = status.canonical_reason().unwrap_or("Error");
        let detail = match status {
            StatusCode::REQUEST_TIMEOUT => "the request took too long and was abandoned; it is safe to retry with the same Idempotency-Key".to_owned(),
            _ => format!("{} {title}", status.as_u16()),
        };
        Self::new(status, "about:blank", title, detail)
    }

    pub fn invalid_query(errors: Vec<FieldError>) -> Self {
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-query",
            "The query is not valid",
            format!("{} parameter(s) are invalid; see `errors`", errors.len()),
        );
        problem.errors = errors;
        problem
    }

    pub fn bad_request(detail: impl Into<String>, errors: Vec<FieldError>) -> Self {
        let mut problem = Self::new(
            StatusCode::BAD_REQUEST,
            "/problems/malformed-request",
            "The request body cannot be read",
            detail.into(),
        );
        problem.errors = errors;
        problem
    }

    pub fn unsupported_media_type(got: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "/problems/unsupported-media-type",
            "The body must be JSON",
            format!("Content-Type must be application/json, not `{got}`"),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "/problems/too-large",
            "The request body is too large",
            format!("the body may be at most {limit} bytes"),
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "/problems/not-found",
            "Not found",
            detail.into(),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "/problems/method-not-allowed",
            "Method not allowed",
            "this resource does not support that method".into(),
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/idempotency-key-reused",
            "The Idempotency-Key was used for a different order",
            detail.into(),
        )
    }

    /// The order has moved past the point where the request makes sense.
    pub fn too_late(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "/problems/too-late",
            "Too late for that",
            detail.into(),
        )
    }

    /// The read model has not caught up with the position the client asked
    /// for: a conflict with the resource's current state, worth a retry.
    pub fn behind(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(
            StatusCode::CONFLICT,
            "/problems/view-behind",
            "The read model has not caught up yet",
            detail.into(),
        );
        problem.retry_after = Some(1);
        problem
    }

    /// The broker cannot durably take the request right now.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "/problems/unavailable",
            "Temporarily unavailable",
            detail.into(),
        );
        problem.retry_after = Some(2);
        problem
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status.is_server_error() {
            tracing::warn!(status = self.status, detail = %self.detail, "answering with a server error");
        }
        response
    }
}
