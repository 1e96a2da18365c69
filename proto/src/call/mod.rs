//! The `alknet/call` wire codec: JSON envelopes in length-prefixed frames.
//!
//! A stream carries frames, each a `u32` big-endian body length followed by that many bytes
//! of one JSON object, the [`EventEnvelope`] `{"type": "...", "id": "...", "payload": ...}`.
//!
//! Layered like quinn-proto or hickory-proto, sans-IO:
//! * [`FrameDecoder`] splits received bytes into frame bodies and deals with hostile
//!   lengths (never reserving what a peer claims; oversized frames are skipped, not read);
//! * [`EventEnvelope::decode`] parses one body in place with simd-json and, when the body
//!   is not a valid envelope but its id is readable, says which call it was
//!   ([`DecodeError::id`]), so one bad call costs one `call.error`, not the stream;
//! * [`sniff_id`] finds the id of an oversized frame from its first bytes;
//! * [`EventEnvelope::encode_into`] writes a frame.
//!
//! Nothing here does IO, keeps time or panics on peer input; the runtime owns the streams.

mod envelope;
mod frame;
mod sniff;

pub use envelope::{DecodeError, EncodeError, ErrorCode, EventEnvelope, EventType, MAX_JSON_DEPTH};
pub use frame::{
    Frame, FrameDecoder, TruncatedFrame, DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_LEN, ID_SNIFF_PREFIX,
};
pub use sniff::sniff_id;
