//! A request's outcome as a value, and its conversion to and from the frames that carry
//! it (`call.responded` for `Ok`, `call.error` for `Err`).

use alknet_proto::call::{EventEnvelope, EventType};
use serde_json::{json, Value};

use crate::error::CallError;

/// The answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseEnvelope {
    pub id: String,
    pub result: Result<Value, CallError>,
}

impl From<ResponseEnvelope> for EventEnvelope {
    fn from(r: ResponseEnvelope) -> Self {
        match r.result {
            Ok(output) => EventEnvelope::new(
                EventType::CallResponded,
                Some(r.id),
                json!({ "output": output }),
            ),
            Err(e) => EventEnvelope::new(EventType::CallError, Some(r.id), e.to_payload()),
        }
    }
}

/// The envelope is not an answer (wrong type, or no id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} frame is not a response")]
pub struct NotAResponse(pub EventType);

impl TryFrom<EventEnvelope> for ResponseEnvelope {
    type Error = NotAResponse;

    fn try_from(mut env: EventEnvelope) -> Result<Self, NotAResponse> {
        let Some(id) = env.id.take() else {
            return Err(NotAResponse(env.kind));
        };
        let result = match env.kind {
            EventType::CallResponded => Ok(match &mut env.payload {
                Value::Object(m) => m.remove("output").unwrap_or(Value::Null),
                _ => Value::Null,
            }),
            EventType::CallError => Err(CallError::from_payload(&env.payload)),
            other => return Err(NotAResponse(other)),
        };
        Ok(ResponseEnvelope { id, result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alknet_proto::call::ErrorCode;

    #[test]
    fn ok_becomes_call_responded_and_back() {
        let r = ResponseEnvelope {
            id: "r1".into(),
            result: Ok(json!({"a": 1})),
        };
        let env = EventEnvelope::from(r.clone());
        assert_eq!(env.kind, EventType::CallResponded);
        assert_eq!(env.id.as_deref(), Some("r1"));
        assert_eq!(env.payload, json!({"output": {"a": 1}}));
        assert_eq!(ResponseEnvelope::try_from(env), Ok(r));
    }

    #[test]
    fn err_becomes_call_error_and_back() {
        let r = ResponseEnvelope {
            id: "r2".into(),
            result: Err(CallError::forbidden("no")),
        };
        let env = EventEnvelope::from(r.clone());
        assert_eq!(env.kind, EventType::CallError);
        assert_eq!(env.payload, json!({"code": "FORBIDDEN", "message": "no"}));
        assert_eq!(ResponseEnvelope::try_from(env), Ok(r));
        let frame = EventEnvelope::from(ResponseEnvelope {
            id: "x".into(),
            result: Err(CallError::new(ErrorCode::DeadlineExceeded, "late")),
        })
        .encode()
        .expect("encode");
        let mut body = frame[4..].to_vec();
        let back = ResponseEnvelope::try_from(EventEnvelope::decode(&mut body).expect("decode"))
            .expect("a response");
        assert_eq!(
            back.result.expect_err("error").code,
            ErrorCode::DeadlineExceeded
        );
    }

    #[test]
    fn other_frames_are_not_responses() {
        let env = EventEnvelope::new(EventType::Event, Some("s".into()), Value::Null);
        assert_eq!(
            ResponseEnvelope::try_from(env),
            Err(NotAResponse(EventType::Event))
        );
        let env = EventEnvelope::new(EventType::CallResponded, None, Value::Null);
        assert!(ResponseEnvelope::try_from(env).is_err());
    }
}
