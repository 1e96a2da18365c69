//! The routes, one module each, and the JSON error body they share.

pub mod call;
pub mod compress;
pub mod dashboard;
pub mod diag;
pub mod doh;
pub mod encoding;
pub mod files;
pub mod health;
pub mod mcp;
pub mod media_types;
pub mod metrics;
pub mod openapi;
pub mod pkarr;
pub mod ranges;
pub mod sse;
pub mod webtransport;

use alknet_proto::call::ErrorCode;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The HTTP status a call error code maps to.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"error": {"code": "NOT_FOUND", "message": "..."}}` with the code's status.
pub fn error_response(code: ErrorCode, message: impl Into<String>) -> Response {
    let message: String = message.into();
    (
        status_of(code),
        Json(json!({ "error": { "code": code.as_str(), "message": message } })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_status() {
        let want = [
            (ErrorCode::NotFound, 404),
            (ErrorCode::Forbidden, 403),
            (ErrorCode::InvalidArgument, 400),
            (ErrorCode::DeadlineExceeded, 504),
            (ErrorCode::Unauthenticated, 401),
            (ErrorCode::Internal, 500),
            (ErrorCode::Unavailable, 503),
        ];
        for (code, status) in want {
            assert_eq!(status_of(code).as_u16(), status, "{code:?}");
        }
        assert_eq!(want.len(), ErrorCode::ALL.len());
    }
}
