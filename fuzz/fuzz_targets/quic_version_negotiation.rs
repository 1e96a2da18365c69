//! A client's first Initial, decrypted, as the server's compatible version negotiation
//! (RFC 9368, the vendored quinn-proto's `version_negotiation.rs`) reads it: its frames,
//! the ClientHello in its CRYPTO frames and the transport parameters in that.
//!
//! Input layout: byte 0 picks the packet's version (v1, v2, or another) and the server's
//! preference; the rest is the payload. The answer must be the packet's version or one the
//! server supports and could switch to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quinn_proto::QUIC_V2;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let version = match pick & 3 {
        0 => 1,
        1 => QUIC_V2,
        _ => 0xff00_001d,
    };
    let preference: &[u32] = match (pick >> 2) & 3 {
        0 => &[QUIC_V2, 1],
        1 => &[1, QUIC_V2],
        2 => &[1],
        _ => &[QUIC_V2],
    };
    let chosen = quinn_proto::fuzzing::choose_version(version, payload, preference);
    assert!(
        chosen == version || ([1, QUIC_V2].contains(&version) && preference.contains(&chosen)),
        "version {version:#x}, preference {preference:x?}: chose {chosen:#x}"
    );
});
