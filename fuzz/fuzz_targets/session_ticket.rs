//! Session tickets as clients offer them (the PSK identity of a resuming ClientHello):
//! any bytes go to the host-key ticketer's `open_at`, which must refuse what it did not
//! seal without panicking; what it seals must open to the same bytes.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use alknet_runtime::host_key::QuicHostKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ticketer = QuicHostKey::from_bytes([7; 32]).ticketer(Duration::from_secs(3600));
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    // a forged ticket opens only by breaking AES-GCM
    assert_eq!(ticketer.open_at(now, data), None);
    let sealed = ticketer.seal_at(now, data).expect("sealed");
    assert_eq!(ticketer.open_at(now, &sealed).as_deref(), Some(data));
});
