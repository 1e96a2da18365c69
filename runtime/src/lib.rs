//! The Alknet engine: thread-per-core monoio workers, each driving its own sans-IO
//! `quinn_proto::Endpoint` on its own SO_REUSEPORT socket, with connection IDs that name
//! their worker, and ALPN routing of each connection to a protocol handler task.
//!
//! ```text
//! datagram ─▶ worker socket (SO_REUSEPORT, recvmmsg+GRO)
//!            └▶ CID names another worker? ─yes─▶ that worker's inbox
//!            └▶ quinn_proto::Endpoint ─▶ Connection ─▶ handshake: ALPN ─▶ handler task
//! ```
//!
//! This is the only crate that touches sockets (and, in [`files`], the one place files are
//! opened for serving).

mod acl;
mod admission;
#[cfg(feature = "mimalloc")]
pub mod alloc;
mod cid;
mod client;
mod connection;
mod dns;
pub mod files;
mod handshake;
pub mod host_key;
mod identity;
mod inbox;
mod limits;
mod log_throttle;
mod metrics;
mod operations;
mod pinning;
pub mod proc_stat;
mod qlog;
mod recv_slots;
pub use qlog::QLOG_SUPPORTED;
pub mod pipe;
mod reload;
mod router;
pub mod rt;
pub mod secret_files;
mod send_batch;
mod server;
mod socket;
mod stats;
mod streams;
mod tcp;
mod tcp_connection;
pub mod tickets;
pub mod tls;
mod worker;
mod worker_hook;
mod wtcert;

pub use acl::{AccessControl, AccessDenied, Requirement};
pub use admission::StreamTotals;
pub use admission::{
    AdmissionError, AdmissionLimits, Refusal, SourceTable, SourceTicket, DEFAULT_IPV4_PREFIX_LEN,
    DEFAULT_IPV6_PREFIX_LEN, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_MAX_CONNECTIONS_PER_PREFIX, DEFAULT_MAX_HANDSHAKES_PER_WORKER,
    DEFAULT_NEW_CONNECTIONS_PER_SECOND, DEFAULT_NEW_CONNECTION_BURST, SOURCE_TABLE_CELLS,
};
pub use cid::WorkerCidGenerator;
pub use client::{
    connect_tls_tcp, ClientEndpoint, ConnectError, TcpConnectError, TCP_CONNECT_TIMEOUT,
};
pub use connection::{Connection, DatagramError, VirtualConnection};
pub use dns::{
    DnsAnswer, DnsResolver, PkarrRelay, RelayError, RelayPacket, PKARR_MAX_RELAY_PAYLOAD,
};
pub use handshake::{
    CipherSuiteName, HandshakePolicy, HandshakePolicyError, QuicVersion, RetryMode, SessionTickets,
    DEFAULT_RETRY_AUTO_THRESHOLD, DEFAULT_SESSION_CACHE, DEFAULT_SESSION_TICKET_LIFETIME,
};
pub use identity::{
    AuthContext, ChainedIdentityProvider, ConfigIdentityProvider, Identity, IdentityConfigError,
    IdentityEntry, IdentityProvider, NoIdentities,
};
pub use limits::*;
pub use log_throttle::{LogThrottle, LOG_INTERVAL};
pub use metrics::{HandlerMetric, MetricKind};
pub use operations::{
    ItemOutlet, OperationFailure, OperationInfo, OperationInvoker, OperationStats, OutletClosed,
    TopicDelivery, TopicSubscription,
};
pub use pinning::{others_runnable, PinDecision, PinWorkers};
pub use reload::{
    ConfigReloadHandle, HandlersError, TcpReloadError, TransportReloadError, RESTART_LIMITS,
};
pub use router::{
    close_code, AlpnRegistry, HandlerError, LocalBoxFuture, ProtocolHandler, RegistryError,
};
pub use send_batch::{send_mmsg, MAX_SEND_BATCH};
pub use server::{
    resolve_workers, start, start_with_hooks, start_with_tcp, AlpnConnections, EngineConfig,
    NodeStatus, ServerHandle, ShutdownTrigger, StartError, DEFAULT_LISTEN,
};
pub use socket::{bind_reuseport_group, bind_tcp_reuseport_group, BindError};
pub use stats::WorkerStatsSnapshot;
pub use streams::{
    BiStream, ReadError, ReadToEndError, RecvStream, SendStream, WriteError, STREAM_PANIC_CODE,
    STREAM_STALLED_CODE,
};
pub use tcp::{
    accept_error_pause, accept_or_pause, TcpHandler, TcpRegistry, TcpSetup, TlsTcpStream,
    ACCEPT_ERROR_PAUSE, TCP_DEFAULT_ALPN,
};
pub use tcp_connection::{one_stream_error, TCP_CLOSE_LINGER};
pub use worker::{
    running_handlers, CLOSE_LINGER, MAX_GSO_BYTES, MAX_GSO_SEGMENTS, RECV_BATCHES_PER_POLL,
    TRANSMITS_PER_CONNECTION,
};
pub use worker_hook::{WorkerHook, WorkerHooks, WorkerStart};

pub use alknet_proto::{hex, Fingerprint};
pub use bytes::Bytes;
pub use quinn_proto::{ConnectionError, ConnectionStats, StreamId, VarInt};
