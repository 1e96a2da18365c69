//! The start of every stream and datagram a WebTransport client sends to an `h3`
//! connection: the stream header (signal, session ID), read byte-exactly in any split,
//! and the datagram's quarter stream ID.
#![no_main]

use alknet_proto::webtransport::{
    split_datagram, StreamHeader, StreamStart, SIGNAL_BI, SIGNAL_UNI,
};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let _ = split_datagram(Bytes::copy_from_slice(rest));
    for signal in [SIGNAL_BI, SIGNAL_UNI] {
        let mut header = StreamHeader::new(signal);
        let mut at = 0;
        let mut decided = None;
        while at < rest.len() {
            // the adapter's reads: at most `wanted`, sometimes fewer (split by `split`)
            let wanted = header.wanted();
            assert!(wanted >= 1 && wanted <= 16);
            let n = wanted.min(rest.len() - at).min(usize::from(split % 16) + 1);
            if let Some(start) = header.push(&rest[at..at + n]) {
                at += n;
                decided = Some(start);
                break;
            }
            at += n;
        }
        match decided {
            // a session header is never longer than what was read, and leaves the rest
            Some(StreamStart::Session { .. }) => assert!(at <= 16),
            // what HTTP/3 gets back is exactly what was read
            Some(StreamStart::Http3 { prefix }) => assert_eq!(&prefix[..], &rest[..at]),
            None => {
                let StreamStart::Http3 { prefix } = header.ended() else {
                    unreachable!("an ended header is HTTP/3's")
                };
                assert_eq!(&prefix[..], &rest[..at]);
            }
        }
    }
});
