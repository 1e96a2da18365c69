//! Every limit the HTTP/3 server enforces: a named default, a config key (the field name,
//! under `[http3]` in the TOML config) and a line saying what it bounds and what a client
//! that breaks it gets.

use std::time::Duration;

use serde::Deserialize;

/// `max_header_bytes`: largest request header section (QPACK-decoded field sizes as
/// RFC 9114 counts them, advertised as SETTINGS_MAX_FIELD_SECTION_SIZE). Past it the
/// request gets `431 Request Header Fields Too Large` and never reaches the router.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 16 * 1024;
/// `max_body_bytes`: largest request body. A declared `content-length` past it gets `413`
/// at once; a body that grows past it while streaming fails the router's body read (axum
/// answers `413`) and the rest of the stream is refused with STOP_SENDING.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// `max_concurrent_requests`: requests of one connection served at once. Past it the next
/// request stream is not accepted until one ends, so QUIC flow control (the peer's stream
/// limit) holds the client back; nothing is queued here.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 100;
/// `header_timeout_ms`: time from a request stream's acceptance to its complete header
/// section; a client that is slower (slowloris) has the stream reset with
/// H3_REQUEST_CANCELLED and its reading stopped.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `request_timeout_ms`: time the router may take to produce a response's head (including
/// reading the request body it asks for). Past it the client gets `504 Gateway Timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// `body_idle_timeout_ms`: longest wait for progress while streaming a body: the next
/// request body chunk from the client, or room to send the next response chunk. Past it the
/// stream is reset with H3_REQUEST_CANCELLED.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// `body_channel_chunks`: request body chunks buffered between the QUIC stream (on the
/// worker) and the router's `Send` body. Each chunk is at most one QUIC frame's payload,
/// so this bounds the bridge to about this many packets per request; beyond it the stream
/// is not read and QUIC flow control stops the client.
pub const DEFAULT_BODY_CHANNEL_CHUNKS: usize = 16;

/// Limits of the HTTP/3 server; see the constants above for each field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct H3Limits {
    pub max_header_bytes: u64,
    pub max_body_bytes: u64,
    pub max_concurrent_requests: usize,
    #[serde(rename = "header_timeout_ms", with = "alknet_runtime::millis")]
    pub header_timeout: Duration,
    #[serde(rename = "request_timeout_ms", with = "alknet_runtime::millis")]
    pub request_timeout: Duration,
    #[serde(rename = "body_idle_timeout_ms", with = "alknet_runtime::millis")]
    pub body_idle_timeout: Duration,
    pub body_channel_chunks: usize,
}

impl Default for H3Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            body_channel_chunks: DEFAULT_BODY_CHANNEL_CHUNKS,
        }
    }
}

/// Errors in an [`H3Limits`] value that TOML alone cannot rule out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum H3LimitsError {
    #[error("http3.{0} must be greater than zero")]
    Zero(&'static str),
}

impl H3Limits {
    /// Rejects values that would make the server refuse everything or hang.
    pub fn validate(&self) -> Result<(), H3LimitsError> {
        let zero = [
            ("max_header_bytes", self.max_header_bytes == 0),
            ("max_concurrent_requests", self.max_concurrent_requests == 0),
            ("header_timeout_ms", self.header_timeout.is_zero()),
            ("request_timeout_ms", self.request_timeout.is_zero()),
            ("body_idle_timeout_ms", self.body_idle_timeout.is_zero()),
            ("body_channel_chunks", self.body_channel_chunks == 0),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((name, _)) => Err(H3LimitsError::Zero(name)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_zero_is_refused() {
        assert_eq!(H3Limits::default().validate(), Ok(()));
        let zero = H3Limits {
            max_concurrent_requests: 0,
            ..H3Limits::default()
        };
        assert_eq!(
            zero.validate(),
            Err(H3LimitsError::Zero("max_concurrent_requests"))
        );
    }
}
