//! A received UDP datagram, as the per-worker router sees it.
//!
//! Input layout: bytes 0..2 server id, byte 2 worker count - 1, bytes 3..9 a
//! (worker, random) pair for the encode/decode round trip. The whole input is
//! also routed as a datagram, so the router sees every byte the fuzzer mutates.
#![no_main]

use alknet_proto::cid::{destination_cid, Route};
use alknet_proto::{CidLayout, CID_LEN};
use libfuzzer_sys::fuzz_target;

fn byte(data: &[u8], i: usize) -> u8 {
    data.get(i).copied().unwrap_or(0)
}

fn check(layout: &CidLayout, data: &[u8]) {
    let workers = layout.workers();
    match layout.route(data) {
        Route::Local => {}
        Route::Worker(w) => {
            assert!((w as usize) < workers, "worker {w} >= {workers}");
            let cid = destination_cid(data).expect("routed to a worker without a CID");
            assert_eq!(cid.len(), CID_LEN);
            assert_eq!(layout.decode(cid), Some(w));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let server_id = u16::from_be_bytes([byte(data, 0), byte(data, 1)]);
    let workers = usize::from(byte(data, 2)) + 1; // 1..=256

    // Pure parser: must never panic on any input.
    let _ = destination_cid(data);

    // The layout derived from the input, plus fixed ones (single worker, full
    // 256 workers, and a server id that differs from the input's).
    let layouts = [
        CidLayout::new(server_id, workers),
        CidLayout::new(server_id, 1),
        CidLayout::new(server_id, 256),
        CidLayout::new(server_id ^ 0xffff, workers),
    ];
    for layout in layouts {
        let layout = layout.expect("1..=256 workers is valid");
        check(&layout, data);
        // The whole input minus the 3 config bytes, so a datagram can be routed
        // with a CID naming the derived layout.
        check(&layout, data.get(3..).unwrap_or(&[]));

        // encode/decode round trip for an in-range worker.
        let w = (usize::from(byte(data, 3)) % layout.workers()) as u8;
        let r = [byte(data, 4), byte(data, 5), byte(data, 6), byte(data, 7), byte(data, 8)];
        let cid = layout.encode(w, r);
        assert_eq!(layout.decode(&cid), Some(w));
    }
});
