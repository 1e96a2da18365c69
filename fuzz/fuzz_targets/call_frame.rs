//! An `alknet/call` stream as the handler receives it: arbitrary bytes in arbitrary chunks.
//!
//! Input layout: byte 0 picks the frame size limit, bytes 1 and 2 are the two chunk sizes
//! the rest is pushed in (alternating), and the rest is the stream. Every frame the decoder
//! yields is checked against a straightforward reference split of the whole stream, every
//! body goes through `EventEnvelope::decode`, and `sniff_id` is checked against the full
//! parser on every body and run on the raw input. The memory bound is asserted after every
//! push.
#![no_main]

use alknet_proto::call::{
    sniff_id, EventEnvelope, Frame, FrameDecoder, TruncatedFrame, FRAME_HEADER_LEN, ID_SNIFF_PREFIX,
};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

const MAX_FRAME_SIZES: [usize; 4] = [4096, 64, 0, ID_SNIFF_PREFIX + 7];

/// The frames a whole `stream` must produce, and what `finish` must say about its end.
fn reference(stream: &[u8], max: usize) -> (Vec<Frame>, Result<(), TruncatedFrame>) {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (frames, Ok(()));
        }
        let Some(header) = rest.get(..FRAME_HEADER_LEN) else {
            let have = rest.len();
            return (
                frames,
                Err(TruncatedFrame {
                    have,
                    want: FRAME_HEADER_LEN,
                }),
            );
        };
        let len = u32::from_be_bytes(header.try_into().unwrap()) as usize;
        let body = &rest[FRAME_HEADER_LEN..];
        if len > max {
            let want = len.min(ID_SNIFF_PREFIX);
            if body.len() >= want {
                frames.push(Frame::Oversized {
                    len: len as u64,
                    id: sniff_id(&body[..want]),
                });
            }
        } else if body.len() >= len {
            frames.push(Frame::Body(body[..len].into()));
        }
        if body.len() < len {
            let truncated = TruncatedFrame {
                have: FRAME_HEADER_LEN + body.len(),
                want: FRAME_HEADER_LEN + len,
            };
            return (frames, Err(truncated));
        }
        rest = &body[len..];
    }
}

fn check_body(body: &[u8]) {
    let mut scratch = body.to_vec();
    match EventEnvelope::decode(&mut scratch) {
        Ok(env) => {
            // A body the full parser accepts has exactly one top-level id (or none), and
            // the prefix scanner must find the same one.
            assert_eq!(sniff_id(body), env.id, "sniff_id disagrees with decode");
            // What we encode decodes back to the same envelope.
            let frame = env.encode().expect("encoding a decoded envelope");
            let mut again = frame[FRAME_HEADER_LEN..].to_vec();
            assert_eq!(EventEnvelope::decode(&mut again).as_ref(), Ok(&env));
        }
        Err(e) => {
            // An error that names an id names the one the body carries.
            if let Some(id) = e.id() {
                assert_eq!(sniff_id(body).as_deref(), Some(id), "{e:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [sel, a, b, stream @ ..] = data else {
        let _ = sniff_id(data);
        return;
    };
    let _ = sniff_id(data);
    let max = MAX_FRAME_SIZES[usize::from(sel & 3)];
    let sizes = [usize::from(*a).max(1), usize::from(*b).max(1)];
    // The longest partial frame the decoder may hold between pushes.
    let partial_bound = max.max(ID_SNIFF_PREFIX).max(FRAME_HEADER_LEN);

    let mut decoder = FrameDecoder::new(max);
    let mut got = Vec::new();
    let all = Bytes::copy_from_slice(stream);
    let mut at = 0;
    for i in 0.. {
        if at == all.len() {
            break;
        }
        let n = sizes[i % 2].min(all.len() - at);
        let before = decoder.buffered();
        decoder.push(all.slice(at..at + n));
        at += n;
        assert!(
            decoder.buffered() <= before + n,
            "buffered {} after pushing {n} onto {before}",
            decoder.buffered()
        );
        // Pop only after every other push, so frames also wait in the decoder.
        if i % 2 == 1 {
            got.extend(std::iter::from_fn(|| decoder.next_frame()));
            assert!(decoder.buffered() < partial_bound, "{}", decoder.buffered());
        }
    }
    got.extend(std::iter::from_fn(|| decoder.next_frame()));
    assert!(decoder.buffered() < partial_bound);

    let (want, end) = reference(stream, max);
    assert_eq!(got, want);
    assert_eq!(decoder.finish(), end);
    for frame in got {
        if let Frame::Body(body) = frame {
            assert!(body.len() <= max);
            check_body(&body);
        }
    }
});
