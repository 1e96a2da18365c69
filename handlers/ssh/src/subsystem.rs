//! Subsystems (`ssh -s NAME`, `sftp`): a generic hook, so this crate serves what another
//! crate implements without depending on it (a handler crate never depends on another;
//! the `alknet` binary plugs the SFTP server in as the `sftp` subsystem).
//!
//! A subsystem gets the channel as a plain tokio byte stream ([`SubsystemStream`]), where
//! its session runs (`ssh.session_placement`: the worker by default, in the bridge
//! runtime's context). The session pumps the channel to and from it with the same flow control
//! as commands: the client's EOF is the stream's EOF; the subsystem shutting down its
//! write side (or dropping the stream) sends EOF and closes the channel.

use std::collections::HashMap;
use std::sync::Arc;

use alknet_runtime::Identity;
use futures_util::future::BoxFuture;

/// The subsystem's end of its channel.
pub type SubsystemStream = tokio::io::DuplexStream;

/// Bytes buffered between the channel pumps and a subsystem, each way.
pub const SUBSYSTEM_PIPE: usize = 512 * 1024;

/// Something served as a subsystem.
pub trait Subsystem: Send + Sync + 'static {
    /// Starts serving `identity` on `stream`: the future runs beside its session (see
    /// [`crate::bridge::SessionPlacement`]; `tokio::time` and `spawn_blocking` work there)
    /// until the session is over, and gives the exit status the channel reports then (0: a
    /// clean end), as sshd reports its subsystem process's. `scp` (SFTP mode) and other
    /// clients take a channel closed without one for a failure. `Err` refuses the request
    /// (the reason is logged).
    fn start(
        &self,
        identity: &Identity,
        stream: SubsystemStream,
    ) -> Result<BoxFuture<'static, u32>, String>;
}

/// A registered subsystem and the scope that gates it.
#[derive(Clone)]
pub(crate) struct Registered {
    pub scope: String,
    pub subsystem: Arc<dyn Subsystem>,
}

/// The subsystems an adapter serves, by name.
#[derive(Clone, Default)]
pub(crate) struct Subsystems(pub HashMap<String, Registered>);

impl std::fmt::Debug for Subsystems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}
