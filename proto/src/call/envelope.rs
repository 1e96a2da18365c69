//! The JSON object inside one frame: `{"type": "...", "id": "...", "payload": ...}`.
//!
//! Decoding is lenient where leniency is safe and strict where it is not:
//! * unknown top-level keys are ignored, so a newer peer can add fields;
//! * `payload` may be absent (it is then `null`) and `id` may be absent or `null` (events
//!   and subscriptions need none; whether a type *requires* one is the handler's rule);
//! * a duplicated `type`, `id` or `payload` is an error rather than first- or last-wins,
//!   since two parsers that picked differently would disagree about which call a frame is;
//! * every failure that happens after the body proved to be a JSON object carries the
//!   request id if it could be read, so the caller can answer that one call with
//!   `call.error` and keep the stream.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use thiserror::Error;

use super::frame::FRAME_HEADER_LEN;

/// Deepest nesting of objects and arrays a decoded body may have.
///
/// simd-json's own default (1024) is too deep for us: the payload becomes a
/// `serde_json::Value`, which is built and dropped recursively, and 1024 levels of that on a
/// worker thread's stack is a crash a peer could ask for. 128 is serde_json's own limit.
pub const MAX_JSON_DEPTH: usize = 128;

/// Longest `type` string kept in [`DecodeError::UnknownType`]; longer ones are cut (on a
/// character boundary) so an error never holds or logs a peer-sized string.
const MAX_TYPE_IN_ERROR: usize = 64;

/// Closed set of error codes carried in a `call.error` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No such method, topic or object.
    NotFound,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// The request is malformed or its arguments are wrong (also: an unparseable frame).
    InvalidArgument,
    /// The call did not finish in time.
    DeadlineExceeded,
    /// The caller's identity is unknown or missing.
    Unauthenticated,
    /// A bug or unexpected failure on the serving side.
    Internal,
    /// Temporarily unable to serve (overloaded, shutting down); retrying may succeed.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::NotFound,
        ErrorCode::Forbidden,
        ErrorCode::InvalidArgument,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Unauthenticated,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];

    /// The wire name (what serde writes too).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    /// The code with this exact wire name (case-sensitive), if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a frame is: the envelope's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `call.requested`: a client calls a method; `id` names the call.
    CallRequested,
    /// `call.responded`: the single successful answer to a call.
    CallResponded,
    /// `call.error`: the call failed; the payload carries an [`ErrorCode`].
    CallError,
    /// `call.cancel`: the caller no longer wants the answer.
    CallCancel,
    /// `call.stream.item`: one item of a streamed answer.
    StreamItem,
    /// `call.stream.end`: a streamed answer is complete.
    StreamEnd,
    /// `subscribe`: start receiving events of a topic.
    Subscribe,
    /// `unsubscribe`: stop receiving them.
    Unsubscribe,
    /// `event`: one published event.
    Event,
}

impl EventType {
    /// Every type, in declaration order.
    pub const ALL: [EventType; 9] = [
        EventType::CallRequested,
        EventType::CallResponded,
        EventType::CallError,
        EventType::CallCancel,
        EventType::StreamItem,
        EventType::StreamEnd,
        EventType::Subscribe,
        EventType::Unsubscribe,
        EventType::Event,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CallRequested => "call.requested",
            EventType::CallResponded => "call.responded",
            EventType::CallError => "call.error",
            EventType::CallCancel => "call.cancel",
            EventType::StreamItem => "call.stream.item",
            EventType::StreamEnd => "call.stream.end",
            EventType::Subscribe => "subscribe",
            EventType::Unsubscribe => "unsubscribe",
            EventType::Event => "event",
        }
    }

    /// The type with this exact wire name (case-sensitive), if any.
    pub fn parse(s: &str) -> Option<Self> {
        // A match on the string compiles to length-then-bytes comparisons: cheaper than a
        // search through ALL on every frame.
        Some(match s {
            "call.requested" => EventType::CallRequested,
            "call.responded" => EventType::CallResponded,
            "call.error" => EventType::CallError,
            "call.cancel" => EventType::CallCancel,
            "call.stream.item" => EventType::StreamItem,
            "call.stream.end" => EventType::StreamEnd,
            "subscribe" => EventType::Subscribe,
            "unsubscribe" => EventType::Unsubscribe,
            "event" => EventType::Event,
            _ => return None,
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One frame's JSON: `{"type": "...", "id": "...", "payload": ...}`.
///
/// `id` is a JSON string, optional on the wire (absent or `null` both read as `None`);
/// `payload` is `null` when absent. Unknown extra top-level keys are ignored on decode
/// (forward compatibility) and never written on encode.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope {
    pub kind: EventType,
    pub id: Option<String>,
    pub payload: serde_json::Value,
}

/// Why an envelope could not be encoded.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// The JSON body does not fit the 4-byte length header.
    #[error("frame body of {len} bytes exceeds the 4-byte length header's maximum")]
    TooLarge { len: usize },
    /// The serialiser failed (a `serde_json::Value` cannot make it fail today; kept so a
    /// future payload type that can is not a panic).
    #[error("JSON serialisation failed: {0}")]
    Json(String),
}

/// Why a frame body is not an envelope.
///
/// [`DecodeError::id`] returns the request id when it could still be read (the body is a
/// JSON object with a string `"id"`, but e.g. `type` is missing or unknown or a field has
/// the wrong type), so the caller can answer that call with `call.error` instead of
/// closing the stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Not valid JSON (syntax, invalid UTF-8, nesting deeper than [`MAX_JSON_DEPTH`]).
    #[error("frame body is not valid JSON: {reason}")]
    NotJson { reason: String },
    /// Valid JSON, but not an object.
    #[error("frame body is not a JSON object")]
    NotAnObject,
    /// The object has no `type` (or `"type": null`).
    #[error("envelope has no \"type\"")]
    MissingType { id: Option<String> },
    /// `type` is a string naming no [`EventType`]; `ty` is cut to 64 bytes.
    #[error("unknown envelope type {ty:?}")]
    UnknownType { ty: String, id: Option<String> },
    /// A known field is malformed: `type` or `id` not a string, or a field given twice.
    #[error("envelope field \"{field}\" {reason}")]
    BadField {
        field: &'static str,
        reason: &'static str,
        id: Option<String>,
    },
}

impl DecodeError {
    /// The request id, if the body got far enough for it to be read.
    pub fn id(&self) -> Option<&str> {
        match self {
            DecodeError::NotJson { .. } | DecodeError::NotAnObject => None,
            DecodeError::MissingType { id }
            | DecodeError::UnknownType { id, .. }
            | DecodeError::BadField { id, .. } => id.as_deref(),
        }
    }
}

impl EventEnvelope {
    pub fn new(kind: EventType, id: Option<String>, payload: serde_json::Value) -> Self {
        EventEnvelope { kind, id, payload }
    }

    /// Appends one frame (4-byte big-endian length, then the JSON body) to `out`.
    ///
    /// The body is serialised straight into `out` after a placeholder header, and the
    /// length is written over the placeholder afterwards: no intermediate copy of the
    /// body. On error `out` is left as it was.
    ///
    /// Serialiser: `serde_json::to_writer` into `out`, chosen over simd-json's serialiser
    /// (`simd_json::to_writer`, same bytes out) by measurement (criterion, this machine,
    /// medians): a 164-byte `call.requested` 190 ns vs 260 ns; a 3.5 KB structured
    /// response (45 small objects) 6.7 µs vs 11.4 µs; 57 KB of the same 96 µs vs 161 µs.
    /// simd-json wins only on long strings, where its SIMD escaping pays (one 4 KB string
    /// 0.43 µs vs 2.2 µs; 64 KB 3.4 µs vs 29 µs): worth revisiting if blob-sized string
    /// payloads become common. Calls are mostly small structured JSON.
    pub fn encode_into(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        out.put_u32(0);
        let res = serde_json::to_writer((&mut *out).writer(), self);
        let len = out.len() - start - FRAME_HEADER_LEN;
        let header = match (res, u32::try_from(len)) {
            (Ok(()), Ok(header)) => header,
            (Err(e), _) => {
                out.truncate(start);
                return Err(EncodeError::Json(e.to_string()));
            }
            (Ok(()), Err(_)) => {
                out.truncate(start);
                return Err(EncodeError::TooLarge { len });
            }
        };
        out[start..start + FRAME_HEADER_LEN].copy_from_slice(&header.to_be_bytes());
        Ok(())
    }

    /// One frame as its own buffer; see [`encode_into`](Self::encode_into).
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode_into(&mut out)?;
        Ok(out.freeze())
    }

    /// Parses one frame body (without the 4-byte header) in place with simd-json.
    ///
    /// simd-json rewrites `body` while parsing (it unescapes strings into it), so the
    /// bytes are garbage afterwards, success or not; that is why this takes `&mut` and why
    /// [`Frame::Body`](super::Frame::Body) is a `BytesMut`.
    ///
    /// The payload is deserialised straight from simd-json's tape into a
    /// `serde_json::Value`, with simd-json's scratch buffers kept per thread. Measured
    /// (criterion, medians) against the alternatives: a 164-byte `call.requested` 0.78 µs,
    /// vs 0.98 µs for plain `simd_json::serde::from_slice` (fresh buffers per call) and
    /// 1.7 µs for simd-json's `OwnedValue` converted to `serde_json::Value` (every string
    /// and map built twice); 3.5 KB structured 31 µs vs 30 µs vs 47 µs. Most of the time is
    /// building the `serde_json::Value` (allocations), not parsing: `serde_json::from_slice`
    /// into the same shape was within ±15% either way (slower on structured bodies, faster
    /// on one long string).
    pub fn decode(body: &mut [u8]) -> Result<EventEnvelope, DecodeError> {
        // simd-json's scratch buffers (an aligned copy of the input, the structural index,
        // the unescaped-string buffer) are kept per thread: allocating them on every frame
        // cost ~20% of decoding a small envelope. Thread-per-core: no contention.
        thread_local! {
            static BUFFERS: Cell<Option<simd_json::Buffers>> = const { Cell::new(None) };
        }
        let mut buffers = BUFFERS
            .take()
            .unwrap_or_else(|| simd_json::Buffers::with_max_depth(0, MAX_JSON_DEPTH));
        let len = body.len();
        // The envelope is finished (every borrow of `body` turned into owned data) before
        // the buffers go back.
        let result = simd_json::serde::from_slice_with_buffers::<TopLevel>(body, &mut buffers)
            .map_err(|e| DecodeError::NotJson {
                reason: e.to_string(),
            })
            .and_then(TopLevel::into_envelope);
        // A very large frame leaves large scratch buffers behind (~3x the body); free them
        // rather than hold that much per thread for good.
        if len <= RETAIN_BUFFERS_UP_TO {
            BUFFERS.set(Some(buffers));
        }
        result
    }
}

/// Bodies up to this size keep simd-json's per-thread scratch buffers for the next decode;
/// after a larger one they are freed.
const RETAIN_BUFFERS_UP_TO: usize = 64 * 1024;

impl Serialize for EventEnvelope {
    /// Always in the order `type`, `id`, `payload`: a receiver that only keeps the first
    /// bytes of an oversized frame ([`sniff_id`](super::sniff_id)) finds the id there.
    /// `id` is left out when `None`; `payload` is always written.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2 + usize::from(self.id.is_some())))?;
        m.serialize_entry("type", self.kind.as_str())?;
        if let Some(id) = &self.id {
            m.serialize_entry("id", id)?;
        }
        m.serialize_entry("payload", &self.payload)?;
        m.end()
    }
}

/// What the top-level JSON value turned out to be. Deserialised with `deserialize_any`,
/// so "not an object" and "wrong field types" are values, not serde errors: a serde error
/// would lose the id read so far.
enum TopLevel<'de> {
    NotAnObject,
    Object(RawEnvelope<'de>),
}

#[derive(Default)]
struct RawEnvelope<'de> {
    ty: Option<Field<'de>>,
    id: Option<Field<'de>>,
    payload: Option<serde_json::Value>,
    duplicate: Option<&'static str>,
}

/// A field that should be a string, read without failing when it is not.
enum Field<'de> {
    Str(Cow<'de, str>),
    Null,
    Other,
}

impl<'de> TopLevel<'de> {
    fn into_envelope(self) -> Result<EventEnvelope, DecodeError> {
        let raw = match self {
            TopLevel::NotAnObject => return Err(DecodeError::NotAnObject),
            TopLevel::Object(raw) => raw,
        };
        let id = match (raw.duplicate, raw.id) {
            (Some("id"), _) => {
                return Err(DecodeError::BadField {
                    field: "id",
                    reason: "appears more than once",
                    id: None,
                })
            }
            (_, None | Some(Field::Null)) => None,
            (_, Some(Field::Str(s))) => Some(s.into_owned()),
            (_, Some(Field::Other)) => {
                return Err(DecodeError::BadField {
                    field: "id",
                    reason: "is not a string",
                    id: None,
                })
            }
        };
        if let Some(field) = raw.duplicate {
            return Err(DecodeError::BadField {
                field,
                reason: "appears more than once",
                id,
            });
        }
        let kind = match raw.ty {
            None | Some(Field::Null) => return Err(DecodeError::MissingType { id }),
            Some(Field::Other) => {
                return Err(DecodeError::BadField {
                    field: "type",
                    reason: "is not a string",
                    id,
                })
            }
            Some(Field::Str(s)) => match EventType::parse(&s) {
                Some(kind) => kind,
                None => {
                    return Err(DecodeError::UnknownType {
                        ty: truncate(&s, MAX_TYPE_IN_ERROR).to_owned(),
                        id,
                    })
                }
            },
        };
        Ok(EventEnvelope {
            kind,
            id,
            payload: raw.payload.unwrap_or(serde_json::Value::Null),
        })
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl<'de> de::Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TopVisitor)
    }
}

struct TopVisitor;

/// Every non-object top level is `NotAnObject`; arrays are drained so the deserialiser
/// stays consistent.
macro_rules! not_an_object {
    ($($name:ident: $ty:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> {
            Ok(TopLevel::NotAnObject)
        })*
    };
}

impl<'de> Visitor<'de> for TopVisitor {
    type Value = TopLevel<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    not_an_object!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64,
        visit_str: &str, visit_bytes: &[u8]);

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(TopLevel::NotAnObject)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(TopLevel::NotAnObject)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel::NotAnObject)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawEnvelope::default();
        while let Some(key) = map.next_key::<Key>()? {
            // A duplicate's value is still consumed (as IgnoredAny) to keep the map in step.
            match key {
                Key::Type if raw.ty.is_none() => raw.ty = Some(map.next_value_seed(FieldSeed)?),
                Key::Id if raw.id.is_none() => raw.id = Some(map.next_value_seed(FieldSeed)?),
                Key::Payload if raw.payload.is_none() => raw.payload = Some(map.next_value()?),
                Key::Type | Key::Id | Key::Payload => {
                    raw.duplicate.get_or_insert(key.name());
                    map.next_value::<IgnoredAny>()?;
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(TopLevel::Object(raw))
    }
}

/// A top-level key, recognised without allocating (serde's own `String`/`Cow` keys would
/// allocate one per key).
#[derive(Clone, Copy)]
enum Key {
    Type,
    Id,
    Payload,
    Other,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Type => "type",
            Key::Id => "id",
            Key::Payload => "payload",
            Key::Other => "",
        }
    }
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(match v {
            "type" => Key::Type,
            "id" => Key::Id,
            "payload" => Key::Payload,
            _ => Key::Other,
        })
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Key, E> {
        Ok(match v {
            b"type" => Key::Type,
            b"id" => Key::Id,
            b"payload" => Key::Payload,
            _ => Key::Other,
        })
    }
}

/// Reads a [`Field`]: a string (borrowed from the body when simd-json allows), `null`, or
/// anything else (consumed and forgotten).
struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Field<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

macro_rules! other_field {
    ($($name:ident: $ty:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> {
            Ok(Field::Other)
        })*
    };
}

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    other_field!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64,
        visit_bytes: &[u8]);

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode_str(s: &str) -> Result<EventEnvelope, DecodeError> {
        EventEnvelope::decode(&mut s.as_bytes().to_vec())
    }

    #[test]
    fn names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(t.to_string(), t.as_str());
        }
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
            assert_eq!(c.to_string(), c.as_str());
            // serde uses the same wire names.
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
            assert_eq!(
                serde_json::from_value::<ErrorCode>(json!(c.as_str())).unwrap(),
                c
            );
        }
        assert_eq!(EventType::parse("CALL.REQUESTED"), None);
        assert_eq!(ErrorCode::parse("not_found"), None);
        assert_eq!(ErrorCode::InvalidArgument.as_str(), "INVALID_ARGUMENT");
    }

    #[test]
    fn every_type_round_trips() {
        let payload =
            json!({"method": "echo", "args": [1, -2, 3.5, "s\"\\\u{1}é😀", null, true], "o": {}});
        for kind in EventType::ALL {
            for id in [
                None,
                Some("req-1".to_owned()),
                Some("\"q\\uote\"\n".to_owned()),
            ] {
                let env = EventEnvelope::new(kind, id, payload.clone());
                let frame = env.encode().unwrap();
                let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
                assert_eq!(len, frame.len() - FRAME_HEADER_LEN);
                let mut body = frame[FRAME_HEADER_LEN..].to_vec();
                assert_eq!(EventEnvelope::decode(&mut body).unwrap(), env);
            }
        }
    }

    #[test]
    fn encode_writes_type_id_payload_in_order_and_appends() {
        let env = EventEnvelope::new(EventType::CallRequested, Some("7".into()), json!({"a": 1}));
        let mut out = BytesMut::from(&b"prefix"[..]);
        env.encode_into(&mut out).unwrap();
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(&out[6..10], &(out.len() as u32 - 10).to_be_bytes());
        assert_eq!(
            &out[10..],
            br#"{"type":"call.requested","id":"7","payload":{"a":1}}"#
        );
        let no_id = EventEnvelope::new(EventType::Event, None, serde_json::Value::Null);
        assert_eq!(
            &no_id.encode().unwrap()[4..],
            br#"{"type":"event","payload":null}"#
        );
    }

    #[test]
    fn lenient_parts() {
        // Absent payload is null, absent/null id is None, unknown keys and whitespace ignored.
        let env =
            decode_str(r#" {"x":[1,{"y":2}],"type":"subscribe" , "id":null,"z":"w"} "#).unwrap();
        assert_eq!(
            env,
            EventEnvelope::new(EventType::Subscribe, None, serde_json::Value::Null)
        );
        let env = decode_str(r#"{"payload":[1],"id":"a\u0062","type":"call.cancel"}"#).unwrap();
        assert_eq!(env.id.as_deref(), Some("ab"));
        assert_eq!(env.payload, json!([1]));
        // Escaped type name.
        let env = decode_str(r#"{"type":"ev\u0065nt"}"#).unwrap();
        assert_eq!(env.kind, EventType::Event);
    }

    #[test]
    fn malformed_json_and_non_objects_have_no_id() {
        for s in [
            "",
            "{",
            r#"{"type":"event","id":"x""#,
            r#"{"type":"event","id":"x"} trailing"#,
            r#"{"type":"event",}"#,
            "{\"type\":\"event\",\"id\":\"\u{1}\"}",
        ] {
            let e = decode_str(s).unwrap_err();
            assert!(matches!(e, DecodeError::NotJson { .. }), "{s:?}: {e:?}");
            assert_eq!(e.id(), None);
        }
        let e = EventEnvelope::decode(&mut b"{\"id\":\"\xff\"}".to_vec()).unwrap_err();
        assert!(matches!(e, DecodeError::NotJson { .. }), "{e:?}");
        for s in [
            "[]",
            r#"["id","x"]"#,
            "1",
            "\"s\"",
            "null",
            "true",
            "[[{}]]",
        ] {
            assert_eq!(decode_str(s), Err(DecodeError::NotAnObject), "{s}");
        }
    }

    #[test]
    fn errors_after_the_id_carry_it() {
        let e = decode_str(r#"{"id":"r1","payload":{}}"#).unwrap_err();
        assert_eq!(
            e,
            DecodeError::MissingType {
                id: Some("r1".into())
            }
        );
        assert_eq!(e.id(), Some("r1"));

        let e = decode_str(r#"{"type":null,"id":"r1"}"#).unwrap_err();
        assert_eq!(e.id(), Some("r1"));
        assert!(matches!(e, DecodeError::MissingType { .. }));

        let e = decode_str(r#"{"type":"call.teleport","id":"r2"}"#).unwrap_err();
        assert_eq!(
            e,
            DecodeError::UnknownType {
                ty: "call.teleport".into(),
                id: Some("r2".into())
            }
        );
        assert_eq!(e.id(), Some("r2"));

        for ty in ["5", "{\"a\":[1]}", "[\"call.requested\"]", "true"] {
            let e = decode_str(&format!(r#"{{"type":{ty},"id":"r3"}}"#)).unwrap_err();
            assert!(
                matches!(e, DecodeError::BadField { field: "type", .. }),
                "{e:?}"
            );
            assert_eq!(e.id(), Some("r3"));
        }

        let e = decode_str(r#"{"type":"event","type":"event","id":"r4"}"#).unwrap_err();
        assert!(matches!(e, DecodeError::BadField { field: "type", .. }));
        assert_eq!(e.id(), Some("r4"));
        let e = decode_str(r#"{"type":"event","payload":1,"payload":2,"id":"r5"}"#).unwrap_err();
        assert_eq!(e.id(), Some("r5"));

        // An id that is not a string, or is given twice, is not an id.
        let e = decode_str(r#"{"type":"event","id":5}"#).unwrap_err();
        assert!(matches!(e, DecodeError::BadField { field: "id", .. }));
        assert_eq!(e.id(), None);
        let e = decode_str(r#"{"type":"event","id":"a","id":"b"}"#).unwrap_err();
        assert!(matches!(e, DecodeError::BadField { field: "id", .. }));
        assert_eq!(e.id(), None);

        // An unknown type name is cut in the error.
        let long = "é".repeat(100);
        let e = decode_str(&format!(r#"{{"type":"{long}"}}"#)).unwrap_err();
        match e {
            DecodeError::UnknownType { ty, .. } => assert!(ty.len() <= 64 && long.starts_with(&ty)),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn depth_is_limited() {
        let ok = format!(
            r#"{{"type":"event","payload":{}{}}}"#,
            "[".repeat(MAX_JSON_DEPTH - 2),
            "]".repeat(MAX_JSON_DEPTH - 2)
        );
        assert!(decode_str(&ok).is_ok());
        let deep = format!(
            r#"{{"type":"event","payload":{}{}}}"#,
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(matches!(
            decode_str(&deep),
            Err(DecodeError::NotJson { .. })
        ));
        let very_deep = format!(r#"{{"type":"event","payload":{}}}"#, "[".repeat(500_000));
        assert!(matches!(
            decode_str(&very_deep),
            Err(DecodeError::NotJson { .. })
        ));
    }

    #[test]
    fn numbers() {
        let env = decode_str(
            r#"{"type":"event","payload":[0,-1,18446744073709551615,-9223372036854775808,1.5e300,0.1]}"#,
        )
        .unwrap();
        assert_eq!(
            env.payload,
            json!([0, -1, u64::MAX, i64::MIN, 1.5e300, 0.1])
        );
        // Integers past u64 read as floats, as serde_json and JavaScript do (JSON.stringify
        // writes 1e20 as 100000000000000000000).
        let env = decode_str(
            r#"{"type":"event","payload":[100000000000000000000,-99999999999999999999]}"#,
        )
        .unwrap();
        assert_eq!(env.payload, json!([1e20, -99999999999999999999.0]));
    }

    #[test]
    fn large_bodies_and_buffer_reuse() {
        // Alternate large and small decodes on one thread: the retained scratch buffers
        // must never leak state between bodies.
        let big = "x".repeat(RETAIN_BUFFERS_UP_TO * 2);
        for i in 0..4 {
            let s = if i % 2 == 0 {
                format!(r#"{{"type":"event","id":"{i}","payload":"{big}"}}"#)
            } else {
                format!(r#"{{"type":"event","id":"{i}"}}"#)
            };
            let env = decode_str(&s).unwrap();
            assert_eq!(env.id, Some(i.to_string()));
        }
    }
}
