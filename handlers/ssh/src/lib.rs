//! `alknet/ssh`: SSH-2 over QUIC. Each bidirectional stream of an `alknet/ssh` connection
//! carries one SSH session served by `russh::server`, so the stock OpenSSH client works
//! through `alknet connect` as its `ProxyCommand`.
//!
//! * [`bridge`]: the monoio ⇄ tokio byte pipe (russh needs tokio; the QUIC packet path
//!   never touches it). Source-agnostic, and usable by clients too.
//! * Authentication is by public key only: the key's SHA-256 fingerprint is resolved
//!   through the engine's `IdentityProvider` (`[[identities]]`, the peer database), then
//!   an optional `authorized_keys` file ([`AuthorizedKeysProvider`]). Password and
//!   keyboard-interactive authentication are not offered.
//! * Default deny: each channel type and request needs its scope ([`policy`]).
//! * Inbound flow control that russh lacks: a channel whose consumer is slow throttles the
//!   client's window instead of stalling the session ([`flow`]).
//! * `exec`, `shell` (with or without a pty), `env` (allow-list), `signal`,
//!   `window-change`, `direct-tcpip` (ssh -L), `tcpip-forward` (ssh -R), agent forwarding
//!   (ssh -A, `ssh:forward-agent`), and subsystems registered through [`subsystem`]
//!   (`sftp`, gated by `ssh:sftp`).

mod adapter;
mod agent;
mod auth;
pub mod bridge;
mod certificate;
mod config;
pub mod flow;
mod forward;
mod hostkey;
mod metrics;
pub mod policy;
mod process;
mod pumps;
mod restrictions;
mod revoked;
mod session;
mod signals;
pub mod subsystem;
mod termmodes;
mod watched;
mod x11;

pub use adapter::{SshAdapter, SshError, ALPN};
pub use auth::{
    key_fingerprint, openssh_fingerprint, parse_authorized_keys, AuthorizedKeysError,
    AuthorizedKeysProvider,
};
pub use bridge::{
    open_bridged_stream, pump_quic_stream, ByteStream, SessionPlacement, StreamCloser, TokioBridge,
};
pub use config::*;
pub use hostkey::{
    generate_ecdsa_p256, generate_ed25519, load_host_key, load_or_generate_host_key,
    load_or_generate_host_keys, HostKeyError, ECDSA_HOST_KEY_FILE, HOST_KEY_FILE,
};
pub use process::HANGUP_GRACE;
pub use pumps::OUTPUT_CHUNK;
pub use revoked::{RevokedKeys, RevokedKeysError};
pub use russh;
pub use subsystem::{Subsystem, SubsystemStream, SUBSYSTEM_PIPE};
