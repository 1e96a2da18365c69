//! russh's server (the vendored copy, `handlers/ssh/vendor/russh`) on any bytes a peer
//! sends before a key is agreed: the version line, then cleartext binary packets — the
//! client's KEXINIT (name lists, the `first_kex_packet_follows` guess), its ECDH or DH
//! key exchange message, strict-kex ordering, IGNORE/DEBUG/UNIMPLEMENTED, anything out of
//! order. That is all of SSH a peer reaches without a key of ours. Run under the
//! configuration `alknet/ssh` serves with (`SshAdapter::russh_config`: its host keys,
//! algorithms and limits). Each input must end the session, with an error or not, once
//! the peer's side of the stream has ended: a session still alive 10 s after its peer
//! went away is an abandoned peer holding server memory, and fails the target.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alknet_ssh::russh::{self, server};
use alknet_ssh::{SshAdapter, SshConfig};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Refuses every authentication (russh's defaults): nothing gets past key exchange
/// here anyway, since the fuzzer cannot finish one.
struct Refuser;

impl server::Handler for Refuser {
    type Error = russh::Error;
}

fn config() -> Arc<server::Config> {
    static CONFIG: OnceLock<Arc<server::Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            // a fixed ed25519 host key: key generation per input would dominate the run
            let seed = [7u8; 32];
            let keypair = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed);
            let key = russh::keys::PrivateKey::from(keypair);
            SshAdapter::new(key, SshConfig::default(), 1)
                .expect("adapter")
                .russh_config()
        })
        .clone()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// An SSH name-list or string.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// `payload` as an unencrypted binary packet (RFC 4253, section 6): length, padding
/// length, payload, at least four bytes of padding, the whole a multiple of eight.
fn packet(out: &mut Vec<u8>, payload: &[u8]) {
    let mut padding = 8 - (5 + payload.len()) % 8;
    if padding < 4 {
        padding += 8;
    }
    out.extend_from_slice(&((1 + payload.len() + padding) as u32).to_be_bytes());
    out.push(padding as u8);
    out.extend_from_slice(payload);
    out.extend(std::iter::repeat_n(0u8, padding));
}

/// A KEXINIT as OpenSSH's client sends it, narrowed to one algorithm each that alknet
/// serves, so that what follows reaches the key exchange itself.
fn client_kexinit() -> Vec<u8> {
    let mut p = vec![20u8];
    p.extend_from_slice(&[0x5a; 16]);
    let lists: [&[u8]; 10] = [
        b"curve25519-sha256,ext-info-c,kex-strict-c-v00@openssh.com",
        b"ssh-ed25519",
        b"aes256-gcm@openssh.com",
        b"aes256-gcm@openssh.com",
        b"hmac-sha2-256",
        b"hmac-sha2-256",
        b"none",
        b"none",
        b"",
        b"",
    ];
    for list in lists {
        put_string(&mut p, list);
    }
    p.push(0); // first_kex_packet_follows
    p.extend_from_slice(&[0; 4]);
    p
}

/// What the peer sends, from the input's first byte: bit 0 clear, the rest of the
/// input as it is (the version line and the packet framing are fuzzed too); set, a
/// valid version line and then packets whose payloads the input gives as (length byte,
/// bytes) pairs, after a valid KEXINIT when bit 1 is set (so the fuzzer works on
/// message contents: KEXINIT's lists, ECDH/DH values, messages out of order).
fn peer_bytes(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    if mode & 1 == 0 {
        return rest.to_vec();
    }
    let mut out = b"SSH-2.0-OpenSSH_9.2p1 fuzz\r\n".to_vec();
    if mode & 2 != 0 {
        packet(&mut out, &client_kexinit());
    }
    let mut rest = rest;
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        packet(&mut out, &tail[..len]);
        rest = &tail[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let data = peer_bytes(data);
    runtime().block_on(async {
        let (mut peer, ours) = tokio::io::duplex(1 << 16);
        let session = async {
            if let Ok(running) = server::run_stream(config(), ours, Refuser).await {
                let _ = running.await;
            }
        };
        let client = async {
            let _ = peer.write_all(&data).await;
            let _ = peer.shutdown().await;
            // what the server writes, until it lets go of its side
            let mut sink = Vec::new();
            let _ = peer.read_to_end(&mut sink).await;
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(session, client);
        })
        .await
        .expect("the session outlived its peer's stream by 10 s");
    });
});
