//! HTTP for Alknet. [`h3`]: HTTP/3 on the QUIC port (ALPN `h3`), served on the worker
//! that owns the connection.

pub mod h3;
