//! SFTP requests from a hostile client: framing, decoding (russh-sftp's types) and
//! dispatch through the server core, against a jail in a temporary directory with a
//! read-only identity (so the fuzzer reads and lists but cannot fill the disk).
//! Every frame must yield one well-formed reply or a clean framing error, never a panic;
//! every frame also goes through the `SSH_FXP_INIT` token reader (`alknet_sftp::init`).

#![no_main]

use std::sync::OnceLock;

use alknet_sftp::frame::{Frame, FrameDecoder, FrameError};
use bytes::Bytes;
use alknet_sftp::{decode_request, Decoded, Grants, Jail, Server, SftpConfig};
use libfuzzer_sys::fuzz_target;

fn server() -> &'static Server {
    static SERVER: OnceLock<(tempfile::TempDir, Server)> = OnceLock::new();
    &SERVER
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let jail = Jail::for_identity(dir.path(), "fuzz").expect("jail");
            let home = dir.path().join("fuzz");
            std::fs::create_dir(home.join("d")).expect("mkdir");
            std::fs::write(home.join("d/f"), b"0123456789").expect("write");
            std::os::unix::fs::symlink("/", home.join("up")).expect("symlink");
            let grants = Grants {
                read: true,
                write: false,
            };
            (dir, Server::new(jail, grants, SftpConfig::default()))
        })
        .1
}

/// Every packet (and the error that ends the stream, if any) from `decoder` once `feed`
/// has given it bytes, draining after each call.
fn drain(decoder: &mut FrameDecoder, out: &mut Vec<Result<Bytes, FrameError>>) -> bool {
    loop {
        match decoder.next_packet() {
            Ok(Some(p)) => out.push(Ok(p)),
            Ok(None) => return true,
            Err(e) => {
                out.push(Err(e));
                return false;
            }
        }
    }
}

/// As [`drain`], through `next_frame`: a frame in parts must join to the packet, and a
/// WRITE decoded from its parts must be the one decoded from the joined packet.
fn drain_frames(decoder: &mut FrameDecoder, out: &mut Vec<Result<Bytes, FrameError>>) -> bool {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                let parts = match &frame {
                    Frame::Parts(parts) => {
                        assert!(parts.len() > 1 && parts.iter().all(|p| !p.is_empty()));
                        Some(parts.clone())
                    }
                    Frame::One(_) => None,
                };
                let joined = frame.into_bytes();
                if let Some(from_parts) = parts.as_deref().and_then(alknet_sftp::decode_data_parts) {
                    assert_eq!(
                        flatten(Some(from_parts)),
                        flatten(alknet_sftp::decode_data_request(&joined))
                    );
                }
                out.push(Ok(joined));
            }
            Ok(None) => return true,
            Err(e) => {
                out.push(Err(e));
                return false;
            }
        }
    }
}

/// A decoded READ/WRITE with a WRITE's data in one piece, to compare decodings.
fn flatten(r: Option<alknet_sftp::DataRequest>) -> Option<(u32, String, u64, Vec<u8>)> {
    match r? {
        alknet_sftp::DataRequest::Write {
            id,
            handle,
            offset,
            data,
        } => Some((id, handle, offset, data.concat())),
        alknet_sftp::DataRequest::Read {
            id,
            handle,
            offset,
            len,
        } => Some((id, handle, offset, len.to_be_bytes().to_vec())),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let server = server();
    // The same stream, fed whole and cut into chunks (queued from 8 bytes, so the
    // fuzzer's short inputs reach the chunk queue), must give the same packets and error.
    let mut whole = FrameDecoder::new(64 * 1024);
    whole.feed(data);
    let mut expected = Vec::new();
    drain(&mut whole, &mut expected);
    let mut chunked = FrameDecoder::with_chunk_threshold(64 * 1024, 8);
    let stream = Bytes::copy_from_slice(data);
    let (mut at, mut cut) = (0, usize::from(seed));
    let mut got = Vec::new();
    while at < stream.len() {
        cut = cut.wrapping_mul(31).wrapping_add(7);
        let n = (1 + cut % 40).min(stream.len() - at);
        chunked.feed_bytes(stream.slice(at..at + n));
        at += n;
        if !drain_frames(&mut chunked, &mut got) {
            break;
        }
    }
    assert_eq!(got, expected);

    for frame in expected.into_iter().filter_map(Result::ok) {
        // an `alknet/sftp` session's first packet: its token, if it is an INIT (the
        // token is a slice of the packet); put back by the client side's rewrite, the
        // same token comes out again
        if let Ok(token) = alknet_sftp::init::token_of(&frame) {
            if let Some(t) = token {
                assert!(t.len() < frame.len());
            }
            let mut packet = (frame.len() as u32).to_be_bytes().to_vec();
            packet.extend_from_slice(&frame);
            if let (None, Ok(with)) = (token, alknet_sftp::init::with_token(&packet, "t")) {
                assert_eq!(alknet_sftp::init::token_of(&with[4..]), Ok(Some("t")));
            }
        }
        // the worker front's zero-copy READ/WRITE decoder sees every frame first; a
        // WRITE's data is a slice of the frame behind its fields
        if let Some(alknet_sftp::DataRequest::Write { data, handle, .. }) =
            alknet_sftp::decode_data_request(&frame)
        {
            assert!(data.iter().map(|d| d.len()).sum::<usize>() + handle.len() + 21 == frame.len());
        }
        let reply = match decode_request(frame) {
            Decoded::Reply(r) => r,
            Decoded::Request(p) => {
                let _ = server.plan(&p);
                server.execute(p)
            }
        };
        // a reply is one whole packet
        assert!(reply.len() >= 5);
        let len = u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize;
        assert_eq!(len + 4, reply.len());
    }
});
