//! The `gix` backend: upload-pack and receive-pack written here on gitoxide's parts
//! (`gix-pack` to build and index packs, `gix-ref` transactions, the object database),
//! without running `git`.
//!
//! * [`bridge`]: the command runs on a blocking thread; bytes cross from and to the QUIC
//!   worker over bounded channels.
//! * [`pkt`]: pkt-lines and side-band, blocking, bounded.
//! * [`upload`]: clone and fetch, protocol v2 and v0.
//! * [`receive`]: push, protocol v0, quarantine and compare-and-swap ref updates.
//! * [`objects`]: which objects a fetch sends, and the pack writer.
//! * [`full_clone`], [`bitmap`]: a full clone from git's reachability bitmaps, the
//!   stored pack sent as it is.
//! * [`delta`]: git's delta encoding, for new deltas in thin packs.
//! * [`filter`]: partial clone's object filters (`blob:none`, `blob:limit`, `tree:`).
//! * [`negotiate`]: protocol v0's acknowledgments (`multi_ack_detailed`, `no-done`).
//! * [`shallow`]: the boundary of shallow clones and fetches.

pub mod bitmap;
pub mod bridge;
pub mod delta;
pub mod filter;
pub mod full_clone;
pub mod negotiate;
pub mod objects;
pub mod pkt;
pub mod receive;
pub mod shallow;
pub mod sparse;
pub mod upload;

use std::fmt;

use gix::hash::ObjectId;

/// Shows an error with its causes: `outer: cause: root cause`. gitoxide's errors (and
/// `thiserror`'s convention) leave the cause out of `Display`, so "An IO operation failed
/// while streaming an entry" alone would hide "No space left on device", the one part an
/// operator or a pushing user can act on. A cause whose text the line already ends with
/// (an error that prints its own source) is not repeated.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !text.is_empty() && !line.ends_with(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = c.source();
        }
        f.write_str(&line)
    }
}

/// Want, have, argument or ref-update lines accepted in one request (each costs a few
/// dozen bytes of memory); more fail the command.
pub const MAX_NEGOTIATION_LINES: usize = 100_000;

/// Largest object a pushed pack may inflate to (`gix-pack`'s allocation limit), bytes.
pub const MAX_OBJECT_BYTES: usize = 1 << 30;

/// Objects walked when checking a push's connectivity or fast-forward.
pub const MAX_CHECK_OBJECTS: usize = 10_000_000;

/// Memory for decoded delta bases while one command reads objects (a fetch walks trees
/// stored as delta chains), bytes; git's `core.deltaBaseCacheLimit` is 96 MiB. 0 turns the
/// cache off.
pub const DELTA_BASE_CACHE_BYTES: usize = 32 << 20;

/// Objects larger than this (bytes) are not deltified anew for a thin pack (the encoder's
/// index and time grow with the base); their stored deltas are still reused. git's
/// `core.bigFileThreshold` (512 MiB) plays the same role there.
pub const MAX_DELTA_BYTES: usize = 16 << 20;

/// Full clones are answered from git's reachability bitmaps when a pack has one
/// ([`full_clone`]): no walk of the history, the stored pack sent as it is. Off, every
/// clone walks (for comparison, or against a bitmap suspected wrong).
pub const USE_BITMAPS: bool = true;

/// Partial clone (`git clone --filter=…`): `filter` is advertised and honoured
/// ([`filter`]). Off, a request with a filter is refused.
pub const ALLOW_FILTER: bool = true;

/// Protocol v2 `want-ref` (git's `uploadpack.allowRefInWant`): `ref-in-want` advertised,
/// references asked for by name answered in a `wanted-refs` section. Off, `want-ref` is
/// refused.
pub const ALLOW_WANT_REF: bool = true;

/// The limits of the gix backend, from `[git]`.
#[derive(Debug, Clone)]
pub struct NativeLimits {
    pub max_negotiation_lines: usize,
    pub max_object_bytes: usize,
    pub max_check_objects: usize,
    pub delta_base_cache_bytes: usize,
    pub max_delta_bytes: usize,
    pub use_bitmaps: bool,
    pub allow_filter: bool,
    pub allow_want_ref: bool,
    pub max_sparse_file_bytes: usize,
    pub max_sparse_patterns: usize,
}

impl Default for NativeLimits {
    fn default() -> Self {
        Self {
            max_negotiation_lines: MAX_NEGOTIATION_LINES,
            max_object_bytes: MAX_OBJECT_BYTES,
            max_check_objects: MAX_CHECK_OBJECTS,
            delta_base_cache_bytes: DELTA_BASE_CACHE_BYTES,
            max_delta_bytes: MAX_DELTA_BYTES,
            use_bitmaps: USE_BITMAPS,
            allow_filter: ALLOW_FILTER,
            allow_want_ref: ALLOW_WANT_REF,
            max_sparse_file_bytes: sparse::MAX_SPARSE_FILE_BYTES,
            max_sparse_patterns: sparse::MAX_SPARSE_PATTERNS,
        }
    }
}

/// The `agent=` value.
pub fn agent() -> String {
    format!("alknet/{}", env!("CARGO_PKG_VERSION"))
}

/// A 40-hex-digit object id.
pub fn parse_oid(hex: &[u8]) -> Option<ObjectId> {
    if hex.len() != 40 {
        return None;
    }
    ObjectId::from_hex(hex).ok()
}

/// The command a request runs on its thread.
#[derive(Debug, Clone)]
pub struct NativeCommand {
    pub service: crate::request::Service,
    pub dir: std::path::PathBuf,
    /// Protocol version asked for (0, 1 or 2).
    pub version: u8,
    pub allow_force_push: bool,
    pub limits: NativeLimits,
}

impl NativeCommand {
    /// Runs the conversation (blocking).
    pub fn run(
        &self,
        input: &mut dyn std::io::Read,
        output: &mut dyn std::io::Write,
        interrupt: &std::sync::atomic::AtomicBool,
    ) -> Result<(), String> {
        use crate::request::Service;
        match self.service {
            Service::UploadPack if self.version == 2 => {
                upload::serve_v2(&self.dir, input, output, interrupt, &self.limits)
            }
            Service::UploadPack => upload::serve_v0(
                &self.dir,
                self.version == 1,
                input,
                output,
                interrupt,
                &self.limits,
            ),
            Service::ReceivePack => receive::serve(
                &self.dir,
                input,
                output,
                interrupt,
                &self.limits,
                &receive::ReceiveOptions {
                    allow_force_push: self.allow_force_push,
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorChain;

    #[derive(Debug, thiserror::Error)]
    #[error("An IO operation failed while streaming an entry")]
    struct Streaming(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("writing: {0}")]
    struct SaysItsSource(#[source] std::io::Error);

    #[test]
    fn shows_every_cause_once() {
        let full = std::io::Error::from_raw_os_error(28);
        let e = Streaming(full);
        let shown = ErrorChain(&e).to_string();
        assert!(
            shown.starts_with(
                "An IO operation failed while streaming an entry: No space left on device"
            ),
            "{shown}"
        );
        let e = SaysItsSource(std::io::Error::from_raw_os_error(28));
        let shown = ErrorChain(&e).to_string();
        assert_eq!(
            shown.matches("No space left on device").count(),
            1,
            "{shown}"
        );
    }
}
