//! The SSH handler's key lists: `[ssh] revoked_keys` (an OpenSSH KRL, binary, or a text
//! list of keys) and `[ssh] authorized_keys` (sshd's format with our options). Operators
//! write them, but a KRL is often fetched from a CA's publication and both are re-read
//! whenever the file changes: any bytes must parse or be refused with an error, never
//! panic, and a parsed list's check must run on a key.
#![no_main]

use alknet_ssh::russh::keys::PublicKey;
use alknet_ssh::{parse_authorized_keys, RevokedKeys};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBNdZWEwAIUzvzwtoq52GT27XCIDiYgk4S3jZPzrZZLZ";

fuzz_target!(|data: &[u8]| {
    let key = PublicKey::from_openssh(KEY).expect("a valid key");
    // the same bytes as a KRL's body (behind its magic) and as they are
    let mut krl = b"SSHKRL\n\0".to_vec();
    krl.extend_from_slice(data);
    for bytes in [&krl[..], data] {
        if let Ok(revoked) = RevokedKeys::parse(bytes, "fuzz") {
            let _ = revoked.key_revoked(&key);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_authorized_keys(text, "fuzz");
    }
});
