//! `alknet/git`: git clone, fetch and push over QUIC.
//!
//! Each bidirectional stream of an `alknet/git` connection carries one git command. It
//! starts as a git-daemon connection does, with a request pkt-line
//! (`git-upload-pack /team/repo.git\0host=example\0`, optionally `\0version=2\0` and an
//! `alknet-token=` parameter), then the ordinary git conversation follows.
//!
//! * [`request`] (in `alknet-proto`, beside the other wire formats): the sans-IO
//!   request-line decoder (hostile peer, bounded memory; fuzzed).
//! * [`repo`]: repository paths confined under `[git] root` (no `..`, no absolute paths,
//!   no symlinks leading out), and creating bare repositories.
//! * [`access`]: default-deny scopes (`git:read`, `git:write`, `git:read:<path>`,
//!   `git:write:<path>` with a trailing `/*` for a subtree, `git:create`) and
//!   `[git] public_read`.
//! * [`native`]: the `gix` backend (the default): upload-pack (v2, v0) and receive-pack
//!   written on gitoxide's pack and ref crates, on a blocking thread per command.
//! * [`process`]: the `git` backend: the installed `git upload-pack` / `git receive-pack`
//!   run on the stream, as git-daemon runs them.
//! * [`GitHandler`]: the `ProtocolHandler` tying them together.
//!
//! A malformed or refused request gets an `ERR` pkt-line (which git prints as
//! `fatal: remote error: …`) and that stream is finished; the connection stays.

pub mod access;
mod config;
mod handler;
pub mod native;
pub mod process;
pub mod repo;
pub use alknet_proto::git_request as request;

pub use config::*;
pub use handler::{GitError, GitHandler, ALPN};
pub use request::{
    encode_pkt_line, encode_request, error_line, GitRequest, Progress, RequestDecoder,
    RequestError, Service,
};
