use super::*;
use crate::frame::Frame;
use bytes::{BufMut, BytesMut};
use russh_sftp::protocol::{Close, Init, Open, OpenFlags, Read, Write};
use std::collections::HashMap;
use tokio::io::DuplexStream;

fn frame(p: Packet) -> Bytes {
    Bytes::try_from(p).unwrap()
}

async fn reply(c: &mut DuplexStream) -> Packet {
    let len = c.read_u32().await.unwrap() as usize;
    let mut buf = vec![0; len];
    c.read_exact(&mut buf).await.unwrap();
    Packet::try_from(&mut Bytes::from(buf)).unwrap()
}

fn start(
    config: SftpConfig,
) -> (
    tempfile::TempDir,
    DuplexStream,
    tokio::task::JoinHandle<Result<(), SessionError>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let jail = crate::Jail::for_identity(dir.path(), "alice").unwrap();
    let server = Arc::new(Server::new(
        jail,
        crate::Grants {
            read: true,
            write: true,
        },
        config.clone(),
    ));
    let (client, srv) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(serve(srv, server, config));
    (dir, client, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_then_the_session_ends_cleanly() {
    let (dir, mut c, task) = start(SftpConfig::default());
    let content: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    c.write_all(&frame(Packet::Init(Init::new())))
        .await
        .unwrap();
    match reply(&mut c).await {
        Packet::Version(v) => {
            assert_eq!(v.version, 3);
            assert!(v.extensions.contains_key("limits@openssh.com"));
        }
        other => panic!("{other:?}"),
    }
    c.write_all(&frame(Packet::Open(Open {
        id: 1,
        filename: "/big".into(),
        pflags: OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::READ,
        attrs: Default::default(),
    })))
    .await
    .unwrap();
    let Packet::Handle(h) = reply(&mut c).await else {
        panic!("no handle")
    };
    let chunk = 32 * 1024;
    // all writes in flight at once, then the close: it is answered after every write
    let mut wire = BytesMut::new();
    let mut id = 10u32;
    for (i, part) in content.chunks(chunk).enumerate() {
        wire.put(frame(Packet::Write(Write {
            id,
            handle: h.handle.clone(),
            offset: (i * chunk) as u64,
            data: part.to_vec(),
        })));
        id += 1;
    }
    let writes = id - 10;
    wire.put(frame(Packet::Close(Close {
        id: 5,
        handle: h.handle.clone(),
    })));
    let (mut rd, mut wr) = tokio::io::split(c);
    let sender = tokio::spawn(async move {
        wr.write_all(&wire).await.unwrap();
        wr
    });
    let mut seen = 0;
    loop {
        let len = rd.read_u32().await.unwrap() as usize;
        let mut buf = vec![0; len];
        rd.read_exact(&mut buf).await.unwrap();
        match Packet::try_from(&mut Bytes::from(buf)).unwrap() {
            Packet::Status(s) if s.id == 5 => {
                assert_eq!(s.status_code, StatusCode::Ok);
                assert_eq!(seen, writes, "close answered before its writes");
                break;
            }
            Packet::Status(s) => {
                assert_eq!(s.status_code, StatusCode::Ok, "{s:?}");
                assert_eq!(s.id, 10 + seen, "write replies in request order");
                seen += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    let mut wr = sender.await.unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("alice/big")).unwrap(),
        content
    );

    // pipelined reads: every id answered once with the right bytes
    wr.write_all(&frame(Packet::Open(Open {
        id: 2,
        filename: "/big".into(),
        pflags: OpenFlags::READ,
        attrs: Default::default(),
    })))
    .await
    .unwrap();
    let mut c = rd.unsplit(wr);
    let Packet::Handle(h) = reply(&mut c).await else {
        panic!("no handle")
    };
    let mut want = HashMap::new();
    for (i, _) in content.chunks(chunk).enumerate() {
        let id = 100 + i as u32;
        want.insert(id, i * chunk);
        c.write_all(&frame(Packet::Read(Read {
            id,
            handle: h.handle.clone(),
            offset: (i * chunk) as u64,
            len: chunk as u32,
        })))
        .await
        .unwrap();
    }
    let mut last = 0;
    while !want.is_empty() {
        match reply(&mut c).await {
            Packet::Data(d) => {
                // one handle: replies in request order (paramiko relies on it)
                assert!(d.id > last, "reply {} after {last}", d.id);
                last = d.id;
                let off = want.remove(&d.id).expect("one reply per id");
                assert_eq!(d.data, &content[off..(off + chunk).min(content.len())]);
            }
            other => panic!("{other:?}"),
        }
    }
    // the client ends its side: the server finishes and ends its own cleanly
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    task.await.unwrap().expect("clean end");
}

#[tokio::test]
async fn oversized_packets_and_missing_init_end_the_session() {
    let (_d, mut c, task) = start(SftpConfig::default());
    c.write_all(&[0, 0, 0, 5, 3, 0, 0, 0, 1]).await.unwrap();
    assert!(matches!(task.await.unwrap(), Err(SessionError::NoInit)));

    let (_d, mut c, task) = start(SftpConfig::default());
    c.write_all(&frame(Packet::Init(Init::new())))
        .await
        .unwrap();
    let _ = reply(&mut c).await;
    c.write_all(&(crate::DEFAULT_MAX_PACKET + 1).to_be_bytes())
        .await
        .unwrap();
    assert!(matches!(
        task.await.unwrap(),
        Err(SessionError::Frame(FrameError::TooLong { .. }))
    ));
}

#[tokio::test]
async fn malformed_and_unknown_requests_get_a_status_for_their_id() {
    let (_d, mut c, task) = start(SftpConfig::default());
    c.write_all(&frame(Packet::Init(Init::new())))
        .await
        .unwrap();
    let _ = reply(&mut c).await;
    // OPEN with id 77 and a truncated body
    c.write_all(&[0, 0, 0, 7, 3, 0, 0, 0, 77, 0, 9])
        .await
        .unwrap();
    match reply(&mut c).await {
        Packet::Status(s) => {
            assert_eq!(s.id, 77);
            assert_eq!(s.status_code, StatusCode::BadMessage);
        }
        other => panic!("{other:?}"),
    }
    // type 99 does not exist
    c.write_all(&[0, 0, 0, 5, 99, 0, 0, 0, 78]).await.unwrap();
    match reply(&mut c).await {
        Packet::Status(s) => {
            assert_eq!(s.id, 78);
            assert_eq!(s.status_code, StatusCode::OpUnsupported);
        }
        other => panic!("{other:?}"),
    }
    drop(c);
    task.await.unwrap().expect("EOF is a clean end");
}

#[test]
fn read_cost_is_the_reply_size() {
    let f = frame(Packet::Read(Read {
        id: 1,
        handle: "12".into(),
        offset: 0,
        len: 1000,
    }));
    // strip the length field, as the decoder does
    assert_eq!(cost(&f.slice(4..), 255 * 1024), 1064);
}

#[test]
fn data_requests_decode_like_russh_sftp_without_copying() {
    let read = frame(Packet::Read(Read {
        id: 7,
        handle: "12".into(),
        offset: 1 << 40,
        len: 32768,
    }))
    .slice(4..);
    assert_eq!(
        decode_data_request(&read),
        Some(DataRequest::Read {
            id: 7,
            handle: "12".into(),
            offset: 1 << 40,
            len: 32768
        })
    );
    let write = frame(Packet::Write(Write {
        id: 8,
        handle: "3".into(),
        offset: 5,
        data: b"hello".to_vec(),
    }))
    .slice(4..);
    match decode_data_request(&write) {
        Some(DataRequest::Write {
            id: 8,
            handle,
            offset: 5,
            data,
        }) => {
            assert_eq!(handle, "3");
            assert_eq!(data, [Bytes::from_static(b"hello")]);
            // a slice of the frame
            assert_eq!(data[0].as_ptr(), write[write.len() - 5..].as_ptr());
        }
        other => panic!("{other:?}"),
    }
    // truncated, trailing bytes, other types: left to decode_request
    assert_eq!(decode_data_request(&write.slice(..write.len() - 1)), None);
    let mut long = BytesMut::from(&write[..]);
    long.put_u8(0);
    assert_eq!(decode_data_request(&long.freeze()), None);
    let close = frame(Packet::Close(Close {
        id: 1,
        handle: "3".into(),
    }))
    .slice(4..);
    assert_eq!(decode_data_request(&close), None);
    assert_eq!(decode_data_request(&Bytes::new()), None);
}

#[test]
fn a_write_in_parts_is_decoded_without_joining_them() {
    let write = frame(Packet::Write(Write {
        id: 9,
        handle: "7".into(),
        offset: 1 << 33,
        data: (0..=255u8).cycle().take(1000).collect(),
    }))
    .slice(4..);
    let header = write.len() - 1000;
    // cut inside the data, and right after the fields
    for cuts in [vec![header + 10, header + 600], vec![header, header + 999]] {
        let mut parts = Vec::new();
        let mut at = 0;
        for c in cuts.iter().copied().chain([write.len()]) {
            parts.push(write.slice(at..c));
            at = c;
        }
        match decode_data_parts(&parts) {
            Some(DataRequest::Write {
                id: 9,
                offset,
                data,
                ..
            }) => {
                assert_eq!(offset, 1 << 33);
                let joined: Vec<u8> = data.iter().flat_map(|d| d.iter().copied()).collect();
                assert_eq!(joined, write[header..]);
                assert_eq!(data.last().unwrap().as_ptr(), write[cuts[1]..].as_ptr());
            }
            other => panic!("{cuts:?}: {other:?}"),
        }
    }
    // the fields cut: not decoded here (the caller joins the parts)
    let parts = [write.slice(..header - 3), write.slice(header - 3..)];
    assert_eq!(decode_data_parts(&parts), None);
    assert!(decode_data_request(&Frame::Parts(parts.to_vec()).into_bytes()).is_some());
    // a byte too many or too few: not a WRITE this decoder serves
    let mut long = BytesMut::from(&write[header..]);
    long.put_u8(0);
    assert_eq!(
        decode_data_parts(&[write.slice(..header), long.freeze()]),
        None
    );
    assert_eq!(
        decode_data_parts(&[write.slice(..header), write.slice(header..write.len() - 1)]),
        None
    );
    // a READ in parts is left to the caller
    let read = frame(Packet::Read(Read {
        id: 1,
        handle: "7".into(),
        offset: 0,
        len: 10,
    }))
    .slice(4..);
    assert_eq!(decode_data_parts(&[read.slice(..5), read.slice(5..)]), None);
}
