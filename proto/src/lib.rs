//! Alknet wire formats.
//!
//! Everything here is pure: bytes in, values out, no sockets, no clocks, no allocation
//! proportional to what a peer claims. Every parser a peer can reach has a fuzz target in
//! `fuzz/`.

pub mod call;
pub mod cid;
pub mod fingerprint;
pub mod git_request;
pub mod hex;
pub mod socks5;
pub mod steering;
pub mod webtransport;

pub use cid::{CidLayout, CidLayoutError, WorkerId, CID_LEN};
pub use fingerprint::{Fingerprint, FingerprintParseError};
