//! The path of a file request a peer sends: the `hq-interop` request line (`GET /path`)
//! and the path rule it shares with the HTTP static files (`alknet_runtime::files`). The
//! property that matters is confinement: whatever the bytes, an accepted path is relative,
//! made of plain components only, and names something (never `..`, `/`, `.`, NUL).
#![no_main]

use std::path::Component;

use alknet_hq::{parse_request, Request};
use alknet_runtime::files::relative_path;
use libfuzzer_sys::fuzz_target;

fn assert_confined(path: &std::path::Path) {
    let mut parts = 0;
    for c in path.components() {
        assert!(matches!(c, Component::Normal(_)), "{path:?}");
        parts += 1;
    }
    assert!(parts > 0, "{path:?}");
    assert!(!path.as_os_str().as_encoded_bytes().contains(&0), "{path:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = relative_path(data) {
        assert_confined(&p);
    }
    match parse_request(data) {
        Request::Get(p) => {
            assert!(data.starts_with(b"GET "), "{data:?}");
            assert_confined(&p);
        }
        Request::Bad(why) => assert!(!why.is_empty()),
    }
});
