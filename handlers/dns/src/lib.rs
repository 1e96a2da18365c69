//! DNS for Alknet: authoritative zones from RFC 1035 zone files, answered over
//! `doq` (DNS over QUIC, RFC 9250) and `alknet/dns` (many queries pipelined on one QUIC
//! stream, DNS-over-TCP style) on the engine's workers, `dot` (DNS over TLS, RFC 7858) on
//! the TLS-over-TCP listener, DoH (RFC 8484) through the HTTP router ([`doh`]), and
//! classic UDP/TCP on sockets of its own served on the workers ([`classic`]).
//!
//! ```text
//! zone files ─▶ Zone ─▶ Catalog (ArcSwap, reloaded whole) ─┐
//! QUIC stream ─▶ framing (2-byte length) ─▶ responder::parse/answer ─▶ framed answer
//! ```
//!
//! Query handling ([`responder`]) is sans-IO and deterministic; the handlers ([`doq`],
//! [`pipeline`], [`dot`], [`classic`]) only move framed messages between streams and it.

pub mod answer_cache;
mod catalog;
pub mod classic;
pub mod doh;
pub mod doq;
pub mod dot;
pub mod forward;
pub mod framing;
mod in_flight;
mod limits;
pub mod pipeline;
#[cfg(feature = "pkarr")]
pub mod pkarr;
#[cfg(feature = "pkarr-packets")]
pub mod pkarr_packet;
mod reload;
pub mod responder;
pub mod rrl;
mod stream;
mod udp_batch;
mod zone;

pub use catalog::{shared, Catalog, SharedCatalog};
pub use classic::{start_classic, ClassicAddrs, ClassicListeners};
pub use doh::DohResolver;
pub use doq::{DoqHandler, DOQ_ALPN};
pub use dot::{DotHandler, DOT_ALPN};
pub use forward::Forwarder;
pub use limits::*;
pub use pipeline::{PipelineHandler, PIPELINE_ALPN};
#[cfg(feature = "pkarr")]
pub use pkarr::{PkarrStore, PublishError};
pub use reload::{load_catalog, ZoneReloader};
pub use zone::{Outcome, Zone, ZoneAnswer, ZoneError};

use std::sync::Arc;

/// What every DNS transport answers from: the zones (and pkarr names), the settings, and
/// the forwarding cache when `upstreams` are configured. Cheap to clone; one per server.
#[derive(Clone, Debug)]
pub struct DnsState {
    pub catalog: SharedCatalog,
    pub config: Arc<DnsConfig>,
    pub forwarder: Option<Arc<Forwarder>>,
}

impl DnsState {
    pub fn new(catalog: SharedCatalog, config: DnsConfig) -> Self {
        let forwarder = Forwarder::from_config(&config).map(Arc::new);
        Self {
            catalog,
            config: Arc::new(config),
            forwarder,
        }
    }
}
