//! Vault files (`alknet vault`, `[vault] file`): the envelope (header, lengths, Argon2id
//! parameters, checksum) is parsed before any password is tried, and the body parser
//! runs on what decryption returns.
#![no_main]

use alknet_vault::file::{assemble, decode_body, encode_body, parse_envelope, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = parse_envelope(data) {
        // what was parsed is exactly the file, and its parameters are within bounds
        assert_eq!(envelope.header.len(), HEADER_LEN);
        assert!(envelope.params.validate().is_ok());
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(envelope.header);
        assert_eq!(assemble(&header, envelope.ciphertext), data);
    }
    if let Ok(body) = decode_body(data) {
        // a body that parses encodes back to the same bytes
        assert_eq!(encode_body(&body).as_slice(), data);
    }
});
