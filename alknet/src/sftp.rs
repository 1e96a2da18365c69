//! SFTP's two fronts, wired here because they join two handler crates (which never
//! depend on each other): the `alknet/sftp` ALPN, whose QUIC streams are served on the
//! worker that owns the connection, and the `sftp` subsystem plugged into `alknet/ssh`
//! through its subsystem hook (where its SSH session runs: on the worker by default, in
//! the SSH bridge runtime's context; see `alknet_ssh::bridge::SessionPlacement`).

use std::path::PathBuf;
use std::sync::Arc;

use alknet_runtime::Identity;
use alknet_sftp::{SftpAlpn, SftpConfig};
use alknet_ssh::bridge::TokioBridge;
use alknet_ssh::{Subsystem, SubsystemStream};

pub use alknet_sftp::alpn::ALPN;

/// What both fronts share: the identities' parent directory and the limits.
#[derive(Debug, Clone)]
pub struct SftpService {
    root: PathBuf,
    config: SftpConfig,
    bridge_threads: usize,
}

impl SftpService {
    pub fn new(root: PathBuf, config: SftpConfig, bridge_threads: usize) -> Self {
        Self {
            root,
            config,
            bridge_threads,
        }
    }

    /// The `alknet/sftp` handler on this root and config; requests that may wait long
    /// leave the worker for the SSH bridge runtime's blocking threads.
    pub fn alpn(&self) -> SftpAlpn {
        let threads = self.bridge_threads;
        SftpAlpn::new(
            self.root.clone(),
            self.config.clone(),
            Arc::new(move || TokioBridge::start(threads)),
        )
    }

    /// One session for `identity` on `stream`, to its end. A clean end (the client ended
    /// its side, every request answered) finishes the stream; anything else drops it,
    /// which resets it. Returns the exit status of the session, as OpenSSH's
    /// `sftp-server` exits: 0 for a clean end, 1 otherwise.
    async fn run<S>(&self, identity: Identity, stream: S) -> u32
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let server = match alknet_sftp::session_for(&identity, &self.root, &self.config) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("sftp: {e}");
                return 1;
            }
        };
        tracing::info!(identity = %identity.name, read = server.grants().read, write = server.grants().write, "sftp: session started");
        match alknet_sftp::serve(stream, server, self.config.clone()).await {
            Ok(()) => {
                tracing::debug!(identity = %identity.name, "sftp: session ended");
                0
            }
            Err(e) => {
                tracing::info!(identity = %identity.name, "sftp: session ended: {e}");
                1
            }
        }
    }
}

impl Subsystem for SftpService {
    fn start(
        &self,
        identity: &Identity,
        stream: SubsystemStream,
    ) -> Result<futures_util::future::BoxFuture<'static, u32>, String> {
        if !alknet_sftp::Grants::of(identity).any() {
            return Err(format!(
                "identity {:?} has neither {} nor {}",
                identity.name,
                alknet_sftp::SCOPE_READ,
                alknet_sftp::SCOPE_WRITE
            ));
        }
        let this = self.clone();
        let identity = identity.clone();
        Ok(Box::pin(async move { this.run(identity, stream).await }))
    }
}
