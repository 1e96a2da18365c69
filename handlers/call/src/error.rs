//! The error a call ends with: a closed code plus a human message, as carried by
//! `call.error` frames.

use alknet_proto::call::ErrorCode;
use serde_json::{json, Value};

/// An operation's failure, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CallError {
    pub code: ErrorCode,
    pub message: String,
}

impl CallError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, m)
    }
    pub fn invalid_argument(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, m)
    }
    pub fn deadline_exceeded(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::DeadlineExceeded, m)
    }
    pub fn unauthenticated(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, m)
    }

    /// The `payload` of a `call.error` frame.
    pub fn to_payload(&self) -> Value {
        json!({ "code": self.code.as_str(), "message": self.message })
    }

    /// Reads a `call.error` payload; anything unreadable is itself an `INTERNAL` error, so
    /// a confused server never turns into a success on the client.
    pub fn from_payload(payload: &Value) -> Self {
        let code = payload
            .get("code")
            .and_then(Value::as_str)
            .and_then(ErrorCode::parse);
        let message = payload
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match code {
            Some(code) => Self::new(code, message),
            None => Self::internal(format!("malformed call.error payload: {payload}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_for_every_code() {
        for code in ErrorCode::ALL {
            let e = CallError::new(code, "why");
            assert_eq!(CallError::from_payload(&e.to_payload()), e);
        }
        let odd = CallError::from_payload(&json!({"code": "TEAPOT"}));
        assert_eq!(odd.code, ErrorCode::Internal);
    }
}
