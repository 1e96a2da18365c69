//! SOCKS5 greetings and requests from local clients of `alknet socks`.
#![no_main]

use alknet_proto::socks5::{parse_greeting, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((g, used))) = parse_greeting(data) {
        assert!(used <= data.len());
        // what was parsed encodes back to the bytes it came from
        assert_eq!(g.encode(), data[..used].to_vec());
    }
    match parse_request(data) {
        Ok(Some((r, used))) => {
            assert!(used <= data.len());
            assert_eq!(r.encode(), data[..used].to_vec());
            // a prefix never yields a different request
            for cut in 0..used {
                assert!(matches!(parse_request(&data[..cut]), Ok(None) | Err(_)));
            }
        }
        Ok(None) => {}
        Err(e) => {
            let _ = e.reply();
        }
    }
});
