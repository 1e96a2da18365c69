//! SFTP requests from a hostile client: framing, decoding (russh-sftp's types) and
//! dispatch through the server core, against a jail in a temporary directory with a
//! read-only identity (so the fuzzer reads and lists but cannot fill the disk).
//! Every frame must yield one well-formed reply or a clean framing error, never a panic.

#![no_main]

use std::sync::OnceLock;

use alknet_sftp::frame::FrameDecoder;
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

fuzz_target!(|data: &[u8]| {
    let server = server();
    let mut decoder = FrameDecoder::new(64 * 1024);
    decoder.feed(data);
    while let Ok(Some(frame)) = decoder.next_packet() {
        // the worker front's zero-copy READ/WRITE decoder sees every frame first; a
        // WRITE's data is a slice of the frame behind its fields
        if let Some(alknet_sftp::DataRequest::Write { data, handle, .. }) =
            alknet_sftp::decode_data_request(&frame)
        {
            assert!(data.len() + handle.len() + 21 == frame.len());
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
