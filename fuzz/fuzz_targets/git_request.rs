//! The request line opening every alknet/git stream, pushed in arbitrary pieces.
#![no_main]

use alknet_proto::git_request::{
    encode_request, error_line, parse_request, Progress, RequestDecoder, MAX_REQUEST_LINE,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // first byte: how to cut the rest into pushes
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut % 16) + 1;
    let mut whole = RequestDecoder::default();
    let at_once = whole.push(data);
    let mut pieces = RequestDecoder::default();
    let mut pushed = 0;
    let mut result = Ok(Progress::NeedMore);
    for chunk in data.chunks(step) {
        result = pieces.push(chunk);
        match &result {
            Ok(Progress::NeedMore) => pushed += chunk.len(),
            Ok(Progress::Done { consumed, .. }) => {
                assert!(*consumed <= chunk.len());
                pushed += consumed;
                break;
            }
            Err(_) => break,
        }
    }
    // however the bytes arrive, the outcome is the same
    match (&at_once, &result) {
        (Ok(Progress::Done { request: a, consumed }), Ok(Progress::Done { request: b, .. })) => {
            assert_eq!(a, b);
            assert_eq!(*consumed, pushed);
            assert!(*consumed <= MAX_REQUEST_LINE);
            // a parsed request encodes to a line that parses to the same request
            let again = encode_request(
                a.service,
                &a.path,
                a.host.as_deref(),
                a.version,
                a.token.as_deref(),
            );
            let payload = &again[4..];
            assert_eq!(&parse_request(payload).expect("re-encoded request parses"), a);
        }
        (Ok(Progress::NeedMore), Ok(Progress::NeedMore)) => {}
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            let line = error_line(&a.to_string());
            assert!(line.len() <= 4 + 4 + 1024 + 1);
        }
        (a, b) => panic!("at once {a:?}, in pieces {b:?}"),
    }
});
