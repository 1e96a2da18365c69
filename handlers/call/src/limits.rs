//! Every limit of the call protocol: a named default, a `[call]` config key, a check.

use std::time::Duration;

use serde::Deserialize;

/// Largest frame body accepted (bytes). Bigger frames are discarded unread and answered
/// with `INVALID_ARGUMENT` when their id can be read, else the stream is closed.
pub const DEFAULT_MAX_FRAME_SIZE: usize = alknet_proto::call::DEFAULT_MAX_FRAME_SIZE;
/// Deadline of a request that states none; a request may only ask for a shorter one.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Requests of one connection running at once. At the limit the server stops reading
/// that connection's streams, so QUIC flow control pushes back on the client instead of
/// requests queueing in memory.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION: usize = 1024;
/// How often the pending-request sweeper looks for requests past their deadline whose
/// task could not finish (for example blocked writing to a peer that stopped reading).
pub const DEFAULT_SWEEP_INTERVAL_MS: u64 = 10_000;
/// Events queued for one subscriber before it counts as too slow and is dropped with an
/// error event (so a slow subscriber costs bounded memory).
pub const DEFAULT_SUBSCRIBER_QUEUE: usize = 256;
/// Subscriptions one connection may hold.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 64;
/// Encoded response bytes queued for one stream before responders wait for the peer to
/// read (the per-stream write queue; the QUIC send window comes on top).
pub const DEFAULT_WRITE_QUEUE_BYTES: usize = 4 << 20;

/// The `[call]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallLimits {
    pub max_frame_size: usize,
    pub default_timeout_ms: u64,
    pub max_in_flight_per_connection: usize,
    pub sweep_interval_ms: u64,
    pub subscriber_queue: usize,
    pub max_subscriptions_per_connection: usize,
    pub write_queue_bytes: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            default_timeout_ms: DEFAULT_TIMEOUT_MS,
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            sweep_interval_ms: DEFAULT_SWEEP_INTERVAL_MS,
            subscriber_queue: DEFAULT_SUBSCRIBER_QUEUE,
            max_subscriptions_per_connection: DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
            write_queue_bytes: DEFAULT_WRITE_QUEUE_BYTES,
        }
    }
}

/// A limit that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("call.{key}: {reason}")]
pub struct CallLimitsError {
    pub key: &'static str,
    pub reason: &'static str,
}

impl CallLimits {
    pub fn validate(&self) -> Result<(), CallLimitsError> {
        let positive = [
            ("max_frame_size", self.max_frame_size as u64),
            ("default_timeout_ms", self.default_timeout_ms),
            (
                "max_in_flight_per_connection",
                self.max_in_flight_per_connection as u64,
            ),
            ("sweep_interval_ms", self.sweep_interval_ms),
            ("subscriber_queue", self.subscriber_queue as u64),
            ("write_queue_bytes", self.write_queue_bytes as u64),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(CallLimitsError {
                    key,
                    reason: "must be greater than 0",
                });
            }
        }
        if self.max_frame_size > u32::MAX as usize {
            return Err(CallLimitsError {
                key: "max_frame_size",
                reason: "must fit the u32 length prefix",
            });
        }
        Ok(())
    }

    pub fn default_timeout(&self) -> Duration {
        Duration::from_millis(self.default_timeout_ms)
    }

    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }
}
