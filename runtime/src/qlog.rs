//! Per-connection qlog traces (this crate's `qlog` feature, quinn-proto's `qlog`): with a
//! qlog directory set
//! (`QLOGDIR` for `alknet serve`), every accepted connection writes
//! `server-<original destination CID>.sqlog` (JSON-SEQ, qlog 0.3 streaming format: packets
//! sent, received and lost, and recovery metrics) there, named as the client's own trace
//! of the same connection is.
//!
//! For debugging and conformance runs, not production: quinn-proto writes each event
//! through a mutex into the file as it happens, so the writes are blocking file IO on the
//! worker's thread (buffered, 64 KiB at a time). Without a directory nothing changes: the
//! shared `ServerConfig` is used and quinn-proto's sink is a `None` check per event.

use std::path::PathBuf;
use std::sync::Arc;

use quinn_proto::{Incoming, ServerConfig};

use crate::limits::Limits;

/// Buffer of each trace file.
#[cfg(feature = "qlog")]
const QLOG_BUFFER: usize = 64 * 1024;

/// Whether this build can write qlog traces.
pub const QLOG_SUPPORTED: bool = cfg!(feature = "qlog");

/// Where traces go.
pub(crate) struct QlogDir {
    dir: PathBuf,
}

impl QlogDir {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// `base` (the server config new handshakes use now) with a transport made from `limits`
    /// (the live ones) that writes
    /// `incoming`'s trace, or `None` (the shared config, no trace) if the file cannot be
    /// created; that is logged and the connection is served anyway.
    #[cfg(feature = "qlog")]
    pub fn server_config(
        &self,
        incoming: &Incoming,
        worker: usize,
        base: &ServerConfig,
        limits: &Limits,
    ) -> Option<Arc<ServerConfig>> {
        use std::fs::File;
        use std::io::BufWriter;
        let cid = alknet_proto::hex::encode(&incoming.orig_dst_cid());
        let path = self.dir.join(format!("server-{cid}.sqlog"));
        let file = match File::create(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(worker, "qlog: creating {}: {e}", path.display());
                return None;
            }
        };
        let mut qlog = quinn_proto::QlogConfig::default();
        qlog.writer(Box::new(BufWriter::with_capacity(QLOG_BUFFER, file)))
            .title(Some(format!("alknet worker {worker}")));
        let mut transport = limits.transport_config_for(incoming.remote_address().ip());
        transport.qlog_stream(qlog.into_stream());
        let mut config = base.clone();
        config.transport_config(Arc::new(transport));
        Some(Arc::new(config))
    }

    /// Built without the `qlog` feature: no traces (the server warned at start).
    #[cfg(not(feature = "qlog"))]
    pub fn server_config(
        &self,
        _: &Incoming,
        _: usize,
        _: &ServerConfig,
        _: &Limits,
    ) -> Option<Arc<ServerConfig>> {
        let _ = &self.dir;
        None
    }
}
