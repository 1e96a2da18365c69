//! alknet patch: the server's side of compatible version negotiation (RFC 9368) between
//! QUIC v1 and v2 (RFC 9369).
//!
//! rustls fixes a QUIC session's version when the session is created (it selects the key
//! derivation labels of every packet space), so the server has to choose before it hands the
//! ClientHello to TLS. It reads the client's Version Information from the ClientHello in the
//! first Initial's CRYPTO frames, here, and switches only when that is unambiguous: the
//! whole ClientHello is in that one packet (later packets of the original version are
//! dropped once the connection runs in the new one), the client offers no 0-RTT (its 0-RTT
//! packets would be in the original version), and its Chosen Version is the packet's. Any
//! other case stays in the client's version, which RFC 9368 always allows.

use bytes::{Buf, Bytes};

use crate::{
    QUIC_V2, Side,
    frame::{self, Frame},
    transport_parameters::TransportParameters,
};

/// The version a server answers a client's first Initial in.
///
/// `preference` is the server's supported versions in its order of preference
/// (`EndpointConfig::supported_versions`); `payload` is the decrypted payload of the first
/// Initial, of version `packet_version`.
pub(crate) fn choose(packet_version: u32, payload: &[u8], preference: &[u32]) -> u32 {
    // The first version the server prefers that it could switch to from this one; when that
    // is the client's own (the common case), nothing needs to be parsed.
    let Some(&wanted) = preference
        .iter()
        .find(|&&v| v == packet_version || compatible(packet_version, v))
    else {
        return packet_version;
    };
    if wanted == packet_version {
        return packet_version;
    }
    let Some(offered) = client_versions(packet_version, &Bytes::copy_from_slice(payload)) else {
        return packet_version;
    };
    preference
        .iter()
        .copied()
        .find(|&v| v == packet_version || (compatible(packet_version, v) && offered.contains(&v)))
        .unwrap_or(packet_version)
}

/// Versions between which a server may switch: v1 and v2 have the same handshake, only
/// their packet protection and long-header type bits differ (RFC 9369 §4).
fn compatible(from: u32, to: u32) -> bool {
    from != to && [1, QUIC_V2].contains(&from) && [1, QUIC_V2].contains(&to)
}

/// The client's Available Versions, if the first Initial holds a whole ClientHello whose
/// Version Information chose `packet_version` and which offers no 0-RTT.
fn client_versions(packet_version: u32, payload: &Bytes) -> Option<Vec<u32>> {
    let hello = client_hello(payload)?;
    let mut params = None;
    for (ty, data) in extensions(&hello)? {
        match ty {
            EXT_EARLY_DATA => return None,
            EXT_QUIC_TRANSPORT_PARAMETERS => params = Some(data),
            _ => {}
        }
    }
    let params = TransportParameters::read(Side::Server, &mut params?).ok()?;
    let info = params.version_information?;
    (info.chosen == packet_version).then(|| info.available().to_vec())
}

const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_EARLY_DATA: u16 = 0x2a;
const EXT_QUIC_TRANSPORT_PARAMETERS: u16 = 0x39;

/// The ClientHello (with its 4-byte handshake header) if the CRYPTO frames of `payload`
/// hold all of it from offset 0. Bounded by the payload: at most one packet's bytes are
/// copied, once.
fn client_hello(payload: &Bytes) -> Option<Vec<u8>> {
    let mut pieces = Vec::new();
    for frame in frame::Iter::new(payload.clone()).ok()? {
        match frame.ok()? {
            Frame::Crypto(c) => pieces.push(c),
            _ => continue,
        }
    }
    pieces.sort_by_key(|c| c.offset);
    let mut stream = Vec::new();
    for piece in pieces {
        let start = usize::try_from(piece.offset).ok()?;
        if start > stream.len() {
            break; // a gap: the rest is in another packet
        }
        let skip = stream.len() - start;
        if skip < piece.data.len() {
            stream.extend_from_slice(&piece.data[skip..]);
        }
    }
    let [ty, a, b, c, ..] = stream[..] else {
        return None;
    };
    let len = u32::from_be_bytes([0, a, b, c]) as usize;
    if ty != HANDSHAKE_CLIENT_HELLO || stream.len() < 4 + len {
        return None;
    }
    stream.truncate(4 + len);
    Some(stream)
}

/// The extensions of a ClientHello (RFC 8446 §4.1.2), or `None` if it is malformed.
fn extensions(hello: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut r = hello.get(4..)?;
    skip(&mut r, 2 + 32)?; // legacy_version, random
    let n = usize::from(*r.first()?);
    skip(&mut r, 1 + n)?; // legacy_session_id
    let n = usize::from(u16::from_be_bytes([*r.first()?, *r.get(1)?]));
    skip(&mut r, 2 + n)?; // cipher_suites
    let n = usize::from(*r.first()?);
    skip(&mut r, 1 + n)?; // legacy_compression_methods
    let n = usize::from(u16::from_be_bytes([*r.first()?, *r.get(1)?]));
    let mut exts = r.get(2..2 + n)?;
    let mut out = Vec::new();
    while exts.has_remaining() {
        let ty = u16::from_be_bytes([*exts.first()?, *exts.get(1)?]);
        let len = usize::from(u16::from_be_bytes([*exts.get(2)?, *exts.get(3)?]));
        out.push((ty, exts.get(4..4 + len)?));
        exts = &exts[4 + len..];
    }
    Some(out)
}

fn skip(r: &mut &[u8], n: usize) -> Option<()> {
    *r = r.get(n..)?;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport_parameters::VersionInformation;
    use bytes::BufMut;

    /// A minimal ClientHello whose transport parameters carry `info`, with `early_data`
    /// if asked, split into CRYPTO frames at `splits` (then encoded out of order).
    fn initial_payload(
        info: Option<VersionInformation>,
        early_data: bool,
        splits: &[usize],
    ) -> Bytes {
        let mut params = Vec::new();
        TransportParameters {
            version_information: info,
            ..TransportParameters::default()
        }
        .write(&mut params);
        let mut exts = Vec::new();
        exts.put_u16(0x000a); // supported_groups, ignored
        exts.put_u16(2);
        exts.put_u16(0x001d);
        if early_data {
            exts.put_u16(EXT_EARLY_DATA);
            exts.put_u16(0);
        }
        exts.put_u16(EXT_QUIC_TRANSPORT_PARAMETERS);
        exts.put_u16(params.len() as u16);
        exts.extend_from_slice(&params);
        let mut body = Vec::new();
        body.put_u16(0x0303);
        body.extend_from_slice(&[7; 32]);
        body.put_u8(0);
        body.put_u16(2);
        body.put_u16(0x1301);
        body.put_u8(1);
        body.put_u8(0);
        body.put_u16(exts.len() as u16);
        body.extend_from_slice(&exts);
        let mut hello = vec![HANDSHAKE_CLIENT_HELLO];
        hello.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hello.extend_from_slice(&body);

        let mut bounds = vec![0];
        bounds.extend_from_slice(splits);
        bounds.push(hello.len());
        let mut payload = Vec::new();
        for w in bounds.windows(2).rev() {
            frame::Crypto {
                offset: w[0] as u64,
                data: Bytes::copy_from_slice(&hello[w[0]..w[1]]),
            }
            .encode(&mut payload);
        }
        payload.extend_from_slice(&[0; 40]); // PADDING
        Bytes::from(payload)
    }

    const V1: u32 = 1;
    const BOTH_V2_FIRST: &[u32] = &[QUIC_V2, V1];

    #[test]
    fn switches_to_a_preferred_version_the_client_offers() {
        let p = initial_payload(
            Some(VersionInformation::new(V1, &[V1, QUIC_V2])),
            false,
            &[30],
        );
        assert_eq!(choose(V1, &p, BOTH_V2_FIRST), QUIC_V2);
        // the server prefers v1: it stays
        assert_eq!(choose(V1, &p, &[V1, QUIC_V2]), V1);
        // the server does not do v2
        assert_eq!(choose(V1, &p, &[V1]), V1);
    }

    #[test]
    fn stays_when_anything_is_unclear() {
        let stays = |p: Bytes| assert_eq!(choose(V1, &p, BOTH_V2_FIRST), V1);
        // no Version Information
        stays(initial_payload(None, false, &[]));
        // v2 not offered
        stays(initial_payload(
            Some(VersionInformation::new(V1, &[V1])),
            false,
            &[],
        ));
        // the chosen version is not the packet's
        stays(initial_payload(
            Some(VersionInformation::new(QUIC_V2, &[QUIC_V2, V1])),
            false,
            &[],
        ));
        // 0-RTT offered
        stays(initial_payload(
            Some(VersionInformation::new(V1, &[V1, QUIC_V2])),
            true,
            &[],
        ));
        // the ClientHello goes on in another packet
        let whole = initial_payload(
            Some(VersionInformation::new(V1, &[V1, QUIC_V2])),
            false,
            &[],
        );
        let mut cut = Vec::new();
        frame::Crypto {
            offset: 0,
            data: {
                let mut f = frame::Iter::new(whole).unwrap();
                match f.next() {
                    Some(Ok(Frame::Crypto(c))) => c.data.slice(..c.data.len() - 10),
                    _ => unreachable!(),
                }
            },
        }
        .encode(&mut cut);
        stays(Bytes::from(cut));
        // garbage, an empty payload, a truncated handshake header
        stays(Bytes::from_static(&[0x06, 0x00, 0x05, 1, 0, 0]));
        stays(Bytes::new());
    }

    #[test]
    fn a_v2_client_is_answered_by_the_servers_preference() {
        let p = initial_payload(
            Some(VersionInformation::new(QUIC_V2, &[QUIC_V2, V1])),
            false,
            &[],
        );
        assert_eq!(choose(QUIC_V2, &p, BOTH_V2_FIRST), QUIC_V2);
        // the order is the server's preference, both ways
        assert_eq!(choose(QUIC_V2, &p, &[V1, QUIC_V2]), V1);
    }
}
