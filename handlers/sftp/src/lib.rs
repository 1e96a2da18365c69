//! SFTP v3 (draft-ietf-secsh-filexfer-02, as OpenSSH speaks it) for alknet: one server
//! core behind two fronts, the `alknet/sftp` ALPN (one raw SFTP session per QUIC stream)
//! and the `sftp` subsystem of `alknet/ssh`.
//!
//! * Packets, attributes, encode/decode: `russh-sftp`'s protocol types.
//! * [`frame`]: sans-IO framing with a packet-size bound.
//! * [`init`]: the token an `alknet/sftp` session may carry in `SSH_FXP_INIT`.
//! * [`server`]: a request in, filesystem calls, the encoded reply out; scopes
//!   `sftp:read` / `sftp:write` checked per request.
//! * [`jail`]: every path resolved by the kernel beneath the identity's directory
//!   (`openat2` `RESOLVE_IN_ROOT`).
//! * [`sequencer`] + [`driver`]: many requests in flight, answered in completion order,
//!   per-handle order kept where the protocol needs it.

pub mod alpn;
pub mod config;
pub mod driver;
pub mod frame;
pub mod init;
pub mod jail;
pub mod pipeline;
pub mod sequencer;
pub mod server;
pub mod worker;

pub use alpn::{OffloadStarter, SftpAlpn, ALPN};
pub use config::*;
pub use driver::{
    decode_data_parts, decode_data_request, decode_request, serve, DataRequest, Decoded,
    SessionError,
};
pub use jail::Jail;
pub use russh_sftp;
pub use server::{Grants, Server, SCOPE_READ, SCOPE_WRITE};
pub use worker::{serve_on_worker, WorkerSessionError};

use std::path::Path;
use std::sync::Arc;

use alknet_runtime::Identity;

/// Why a session was not started.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("identity {0:?} has neither sftp:read nor sftp:write")]
    NoScope(String),
    #[error("cannot open the root of {0:?}: {1}")]
    Root(String, std::io::Error),
}

/// The server of a new session for `identity`: its grants, its directory `root/<name>/`
/// (created on first use). Default deny: without either scope, no session.
pub fn session_for(
    identity: &Identity,
    root: &Path,
    config: &SftpConfig,
) -> Result<Arc<Server>, Refused> {
    let grants = Grants::of(identity);
    if !grants.any() {
        return Err(Refused::NoScope(identity.name.clone()));
    }
    let jail = Jail::for_identity(root, &identity.name)
        .map_err(|e| Refused::Root(identity.name.clone(), e))?;
    Ok(Arc::new(Server::new(jail, grants, config.clone())))
}
