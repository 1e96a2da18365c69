//! The session headers and datagram prefixes, sans-IO: `alknet_proto::webtransport`
//! (in `proto/` so the fuzz targets reach them without the HTTP stack).

pub use alknet_proto::webtransport::*;
