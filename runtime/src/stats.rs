//! Per-worker counters. Each worker writes only its own (cache-line aligned) block with
//! relaxed atomics, so counting costs no cross-core traffic; readers sum snapshots.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! worker_stats {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters of one worker.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct WorkerStats {
            $($(#[$doc])* pub(crate) $name: AtomicU64,)*
        }

        /// A copy of one worker's counters.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct WorkerStatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
            /// Datagrams other workers could not queue here (inbox full).
            pub inbox_dropped: u64,
        }

        impl WorkerStats {
            pub fn snapshot(&self, inbox_dropped: u64) -> WorkerStatsSnapshot {
                WorkerStatsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    inbox_dropped,
                }
            }
        }

        impl WorkerStatsSnapshot {
            /// Every counter by its field name (`inbox_dropped` last), for exporters.
            pub fn named(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)* ("inbox_dropped", self.inbox_dropped)]
            }
        }

        impl std::ops::Add for WorkerStatsSnapshot {
            type Output = Self;
            fn add(self, o: Self) -> Self {
                Self { $($name: self.$name + o.$name,)* inbox_dropped: self.inbox_dropped + o.inbox_dropped }
            }
        }
    };
}

worker_stats! {
    /// UDP datagrams received from this worker's socket (GRO segments counted singly).
    datagrams_received,
    /// UDP datagrams sent (GSO segments counted singly).
    datagrams_sent,
    /// Transmits (GSO batches, or single datagrams) the kernel took.
    send_calls,
    /// Send system calls made (refused ones too): `sendmmsg` carries a pass's transmits
    /// for one socket together, `sendmsg` a lone one.
    send_syscalls,
    /// Sends the kernel refused (other than EAGAIN): EMSGSIZE from MTU probes is expected,
    /// anything else is worth a look. Their packets count as lost.
    send_errors,
    /// Datagrams received here for a connection another worker owns, and forwarded.
    forwarded_out,
    /// Datagrams other workers forwarded here.
    forwarded_in,
    /// Connections accepted.
    connections_accepted,
    /// Connections refused at the `Incoming` stage: `max_connections` reached or shutting
    /// down.
    connections_refused,
    /// New connections dropped unanswered: their source prefix exceeded
    /// `[admission] new_connections_per_second`.
    refused_rate,
    /// New connections refused: `[admission] max_connections_per_address` or
    /// `max_connections_per_prefix` reached.
    refused_source,
    /// New connections refused: `[admission] max_handshakes_per_worker` in flight.
    refused_handshakes,
    /// Connections closed right after their handshake: their ALPN's
    /// `[admission] max_connections_per_alpn` was reached.
    refused_alpn,
    /// Handshakes closed for taking longer than `[admission] handshake_timeout_ms`.
    handshakes_timed_out,
    /// QUIC handshakes completed that resumed a TLS session (the client's ticket was
    /// accepted: `[quic] session_tickets`); the rest of `connections_accepted` were full.
    handshakes_resumed,
    /// QUIC handshakes completed in QUIC v2 (`[quic] versions`), whether the client started
    /// in v2 or was switched to it from v1 (compatible version negotiation).
    handshakes_v2,
    /// Handlers that returned an error.
    handler_errors,
    /// Handlers that panicked.
    handler_panics,
    /// Streams reset because their peer took no data for `send_stall_timeout_ms` (a write
    /// failed with `WriteError::Stalled`; on TLS/TCP the connection was cut).
    streams_stalled,
    /// Retry packets sent (`[quic] retry`).
    retries_sent,
    /// Datagrams received with the ECN codepoint ECT(0), ECT(1) or CE (from the IP
    /// header, via IP_RECVTOS / IPV6_RECVTCLASS).
    ecn_ect0_received,
    ecn_ect1_received,
    ecn_ce_received,
    /// Datagrams sent with an ECN codepoint (quinn-proto marks ECT(0) while the path's ECN
    /// validation holds, and stops when the peer's ACKs show it being bleached).
    ecn_marked_sent,
    /// Datagrams received on this worker's socket of a preferred address
    /// (`[quic] preferred_address_v4/v6`); also counted in `datagrams_received`.
    preferred_received,
    /// Datagrams sent from a preferred address (also in `datagrams_sent`).
    preferred_sent,
    /// TCP connections accepted by this worker's TLS-over-TCP listener.
    tcp_accepted,
    /// TCP connections closed at accept: per-worker or per-address limit, or draining.
    tcp_refused,
    /// TLS-over-TCP handshakes that resumed a TLS session (also in `tcp_accepted` once
    /// served).
    tls_resumed,
    /// TLS-over-TCP handshakes that failed or timed out (including ALPNs we do not serve,
    /// answered with the no_application_protocol alert).
    tls_handshake_failures,
    /// TLS-over-TCP connections open now (a gauge: accepted and handed to a handler, not
    /// yet closed).
    tcp_open,
}

impl WorkerStats {
    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
