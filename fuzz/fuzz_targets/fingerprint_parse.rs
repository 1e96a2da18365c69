//! Fingerprint strings (`--fingerprint`, config files, pasted by users).
#![no_main]

use alknet_proto::Fingerprint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(fp) = s.parse::<Fingerprint>() {
        // The printed form must parse back to the same digest.
        let printed = fp.to_string();
        assert_eq!(printed.len(), 64);
        assert_eq!(printed.parse::<Fingerprint>(), Ok(fp));
    }
});
