use super::*;
use russh_sftp::protocol::{
    Close, Extended, Lstat, MkDir, Open, OpenDir, Read, ReadDir, ReadLink, RealPath, Remove,
    Rename, SetStat, Stat, Symlink, Write,
};
use std::path::Path;

struct Fixture {
    _dir: tempfile::TempDir,
    base: std::path::PathBuf,
    server: Server,
}

fn fixture(read: bool, write: bool) -> Fixture {
    fixture_in(tempfile::tempdir().unwrap(), read, write)
}

fn fixture_in(dir: tempfile::TempDir, read: bool, write: bool) -> Fixture {
    let base = dir.path().to_path_buf();
    std::fs::write(base.join("secret"), b"outside").unwrap();
    let jail = Jail::for_identity(&base, "alice").unwrap();
    let server = Server::new(jail, Grants { read, write }, SftpConfig::default());
    Fixture {
        _dir: dir,
        base,
        server,
    }
}

impl Fixture {
    fn home(&self) -> std::path::PathBuf {
        self.base.join("alice")
    }
    fn ask(&self, p: Packet) -> Packet {
        let mut bytes = self.server.execute(p);
        let len = bytes.get_u32() as usize;
        assert_eq!(len, bytes.len());
        Packet::try_from(&mut bytes).expect("reply decodes")
    }
    fn code(&self, p: Packet) -> StatusCode {
        match self.ask(p) {
            Packet::Status(s) => s.status_code,
            other => panic!("expected a status, got {other:?}"),
        }
    }
    fn open(&self, path: &str, pflags: OpenFlags) -> Result<String, StatusCode> {
        match self.ask(Packet::Open(Open {
            id: 1,
            filename: path.into(),
            pflags,
            attrs: FileAttributes::default(),
        })) {
            Packet::Handle(h) => Ok(h.handle),
            Packet::Status(s) => Err(s.status_code),
            other => panic!("{other:?}"),
        }
    }
    fn ext(&self, request: &str, fields: &[&[u8]]) -> Packet {
        let mut data = BytesMut::new();
        for f in fields {
            data.put_u32(f.len() as u32);
            data.put_slice(f);
        }
        self.ask(Packet::Extended(Extended {
            id: 9,
            request: request.into(),
            data: data.to_vec(),
        }))
    }
}

const W: OpenFlags = OpenFlags::WRITE
    .union(OpenFlags::CREATE)
    .union(OpenFlags::TRUNCATE);

#[test]
fn write_read_close_round_trip() {
    let f = fixture(true, true);
    let h = f.open("/a.txt", W).unwrap();
    for (off, chunk) in [(5u64, &b"world"[..]), (0, b"hello")] {
        let code = f.code(Packet::Write(Write {
            id: 2,
            handle: h.clone(),
            offset: off,
            data: chunk.to_vec(),
        }));
        assert_eq!(code, StatusCode::Ok);
    }
    assert_eq!(
        f.code(Packet::Close(Close {
            id: 3,
            handle: h.clone()
        })),
        StatusCode::Ok
    );
    // closed: the handle is gone
    assert_eq!(
        f.code(Packet::Close(Close { id: 4, handle: h })),
        StatusCode::Failure
    );
    assert_eq!(
        std::fs::read(f.home().join("a.txt")).unwrap(),
        b"helloworld"
    );

    let h = f.open("a.txt", OpenFlags::READ).unwrap();
    match f.ask(Packet::Read(Read {
        id: 5,
        handle: h.clone(),
        offset: 3,
        len: 100,
    })) {
        Packet::Data(d) => {
            assert_eq!(d.id, 5);
            assert_eq!(d.data, b"loworld");
        }
        other => panic!("{other:?}"),
    }
    let eof = f.code(Packet::Read(Read {
        id: 6,
        handle: h.clone(),
        offset: 10,
        len: 100,
    }));
    assert_eq!(eof, StatusCode::Eof);
    match f.ask(Packet::Fstat(russh_sftp::protocol::Fstat {
        id: 7,
        handle: h,
    })) {
        Packet::Attrs(a) => assert_eq!(a.attrs.size, Some(10)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn escapes_are_contained_or_refused() {
    let f = fixture(true, true);
    // `..` and absolute paths stop at the root: the file outside is never reached
    assert_eq!(
        f.open("../secret", OpenFlags::READ),
        Err(StatusCode::NoSuchFile)
    );
    assert_eq!(
        f.open("/../../secret", OpenFlags::READ),
        Err(StatusCode::NoSuchFile)
    );
    // a symlink to "/" leads to the root, not the host's /
    std::os::unix::fs::symlink("/", f.home().join("slash")).unwrap();
    assert_eq!(
        f.open("/slash/etc/passwd", OpenFlags::READ),
        Err(StatusCode::NoSuchFile)
    );
    // a symlink created by the client pointing out, then written through: stays inside
    let code = f.code(Packet::Symlink(Symlink {
        id: 1,
        linkpath: "../secret".into(), // OpenSSH order: target first
        targetpath: "/link".into(),
    }));
    assert_eq!(code, StatusCode::Ok);
    assert_eq!(
        std::fs::read_link(f.home().join("link")).unwrap(),
        Path::new("../secret")
    );
    let h = f.open("/link", W).unwrap();
    f.code(Packet::Write(Write {
        id: 2,
        handle: h.clone(),
        offset: 0,
        data: b"pwned".to_vec(),
    }));
    f.code(Packet::Close(Close { id: 3, handle: h }));
    assert_eq!(std::fs::read(f.base.join("secret")).unwrap(), b"outside");
    assert_eq!(std::fs::read(f.home().join("secret")).unwrap(), b"pwned");
    // rename out of the root lands inside it
    std::fs::write(f.home().join("x"), b"x").unwrap();
    let code = f.code(Packet::Rename(Rename {
        id: 4,
        oldpath: "/x".into(),
        newpath: "../../x-out".into(),
    }));
    assert_eq!(code, StatusCode::Ok);
    assert!(!f.base.join("x-out").exists());
    assert!(f.home().join("x-out").exists());
    // a hard link to a file outside: the name resolves inside (to the root's "secret")
    match f.ext("hardlink@openssh.com", &[b"../../secret", b"/hl0"]) {
        Packet::Status(s) => assert_eq!(s.status_code, StatusCode::Ok),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(f.home().join("hl0")).unwrap(), b"pwned");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(f.base.join("secret")).unwrap().nlink(), 1);
    // where there is no such file inside, there is nothing to link
    match f.ext("hardlink@openssh.com", &[b"../nothing", b"/hl1"]) {
        Packet::Status(s) => assert_eq!(s.status_code, StatusCode::NoSuchFile),
        other => panic!("{other:?}"),
    }
    // a hard link to the symlink pointing out is the symlink itself
    match f.ext("hardlink@openssh.com", &[b"/slash", b"/hl"]) {
        Packet::Status(s) => assert_eq!(s.status_code, StatusCode::Ok),
        other => panic!("{other:?}"),
    }
    assert!(std::fs::symlink_metadata(f.home().join("hl"))
        .unwrap()
        .is_symlink());
    // removing "/" or ".." names nothing
    assert_eq!(
        f.code(Packet::RmDir(russh_sftp::protocol::RmDir {
            id: 5,
            path: "/..".into()
        })),
        StatusCode::PermissionDenied
    );
    // realpath never shows the host's path
    match f.ask(Packet::RealPath(RealPath {
        id: 6,
        path: "/slash/../../..".into(),
    })) {
        Packet::Name(n) => assert_eq!(n.files[0].filename, "/"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn scopes_are_checked_per_request() {
    let ro = fixture(true, false);
    std::fs::write(ro.home().join("f"), b"data").unwrap();
    assert!(ro.open("/f", OpenFlags::READ).is_ok());
    assert_eq!(ro.open("/f", W), Err(StatusCode::PermissionDenied));
    assert_eq!(
        ro.open("/f", OpenFlags::READ | OpenFlags::APPEND),
        Err(StatusCode::PermissionDenied)
    );
    for p in [
        Packet::Remove(Remove {
            id: 1,
            filename: "/f".into(),
        }),
        Packet::MkDir(MkDir {
            id: 1,
            path: "/d".into(),
            attrs: FileAttributes::default(),
        }),
        Packet::Rename(Rename {
            id: 1,
            oldpath: "/f".into(),
            newpath: "/g".into(),
        }),
        Packet::SetStat(SetStat {
            id: 1,
            path: "/f".into(),
            attrs: FileAttributes {
                permissions: Some(0o600),
                ..Default::default()
            },
        }),
    ] {
        assert_eq!(ro.code(p), StatusCode::PermissionDenied);
    }
    assert_eq!(std::fs::read(ro.home().join("f")).unwrap(), b"data");
    let wo = fixture(false, true);
    assert_eq!(
        wo.code(Packet::Stat(Stat {
            id: 1,
            path: "/".into()
        })),
        StatusCode::PermissionDenied
    );
    assert!(wo.open("/new", W).is_ok());
}

#[test]
fn directories_links_and_attributes() {
    let f = fixture(true, true);
    let ok = |p| assert_eq!(f.code(p), StatusCode::Ok);
    ok(Packet::MkDir(MkDir {
        id: 1,
        path: "/d".into(),
        attrs: FileAttributes::default(),
    }));
    std::fs::write(f.home().join("d/one"), b"1").unwrap();
    ok(Packet::Symlink(Symlink {
        id: 1,
        linkpath: "one".into(),
        targetpath: "/d/ln".into(),
    }));
    match f.ask(Packet::ReadLink(ReadLink {
        id: 2,
        path: "/d/ln".into(),
    })) {
        Packet::Name(n) => assert_eq!(n.files[0].filename, "one"),
        other => panic!("{other:?}"),
    }
    match f.ask(Packet::Lstat(Lstat {
        id: 2,
        path: "/d/ln".into(),
    })) {
        Packet::Attrs(a) => assert_eq!(a.attrs.permissions.unwrap() & 0o170000, 0o120000),
        other => panic!("{other:?}"),
    }
    let h = match f.ask(Packet::OpenDir(OpenDir {
        id: 3,
        path: "/d".into(),
    })) {
        Packet::Handle(h) => h.handle,
        other => panic!("{other:?}"),
    };
    let mut names = Vec::new();
    loop {
        match f.ask(Packet::ReadDir(ReadDir {
            id: 4,
            handle: h.clone(),
        })) {
            Packet::Name(n) => {
                for e in n.files {
                    if e.filename == "ln" {
                        assert!(e.longname.starts_with('l'), "{}", e.longname);
                    }
                    names.push(e.filename);
                }
            }
            Packet::Status(s) => {
                assert_eq!(s.status_code, StatusCode::Eof);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    names.sort();
    assert_eq!(names, [".", "..", "ln", "one"]);
    ok(Packet::Close(Close { id: 5, handle: h }));
    ok(Packet::SetStat(SetStat {
        id: 6,
        path: "/d/ln".into(), // follows the link: chmods "one"
        attrs: FileAttributes {
            permissions: Some(0o640),
            atime: Some(1_000_000),
            mtime: Some(2_000_000),
            ..Default::default()
        },
    }));
    let meta = std::fs::metadata(f.home().join("d/one")).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(meta.mtime(), 2_000_000);
    // owner changes are refused
    let chown = Packet::SetStat(SetStat {
        id: 7,
        path: "/d/one".into(),
        attrs: FileAttributes {
            uid: Some(0),
            gid: Some(0),
            ..Default::default()
        },
    });
    assert_eq!(f.code(chown), StatusCode::PermissionDenied);
    // plain rename does not replace; posix-rename does
    std::fs::write(f.home().join("d/two"), b"2").unwrap();
    let plain = Packet::Rename(Rename {
        id: 8,
        oldpath: "/d/one".into(),
        newpath: "/d/two".into(),
    });
    assert_eq!(f.code(plain), StatusCode::Failure);
    match f.ext("posix-rename@openssh.com", &[b"/d/one", b"/d/two"]) {
        Packet::Status(s) => assert_eq!(s.status_code, StatusCode::Ok),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(f.home().join("d/two")).unwrap(), b"1");
    // statvfs, limits, expand-path
    match f.ext("statvfs@openssh.com", &[b"/"]) {
        Packet::ExtendedReply(r) => assert_eq!(r.data.len(), 88),
        other => panic!("{other:?}"),
    }
    match f.ext("limits@openssh.com", &[]) {
        Packet::ExtendedReply(r) => {
            assert_eq!(r.data.len(), 32);
            assert_eq!(
                &r.data[..8],
                &u64::from(DEFAULT_MAX_PACKET_FOR_TEST).to_be_bytes()
            );
        }
        other => panic!("{other:?}"),
    }
    match f.ext("expand-path@openssh.com", &[b"~/d"]) {
        Packet::Name(n) => assert_eq!(n.files[0].filename, "/d"),
        other => panic!("{other:?}"),
    }
    ok(Packet::Remove(Remove {
        id: 9,
        filename: "/d/two".into(),
    }));
    ok(Packet::Remove(Remove {
        id: 9,
        filename: "/d/ln".into(),
    }));
    ok(Packet::RmDir(russh_sftp::protocol::RmDir {
        id: 9,
        path: "/d".into(),
    }));
    assert!(!f.home().join("d").exists());
}

const DEFAULT_MAX_PACKET_FOR_TEST: u32 = crate::config::DEFAULT_MAX_PACKET;

#[test]
fn copy_data_fsync_and_handle_limit() {
    let dir = tempfile::tempdir().unwrap();
    let jail = Jail::for_identity(dir.path(), "bob").unwrap();
    let config = SftpConfig {
        max_handles: 2,
        ..SftpConfig::default()
    };
    let f = Fixture {
        base: dir.path().to_path_buf(),
        _dir: dir,
        server: Server::new(
            jail,
            Grants {
                read: true,
                write: true,
            },
            config,
        ),
    };
    std::fs::write(f.base.join("bob/src"), b"0123456789").unwrap();
    let r = f.open("/src", OpenFlags::READ).unwrap();
    let w = f.open("/dst", W | OpenFlags::READ).unwrap();
    // a third handle is over the limit
    assert_eq!(f.open("/src", OpenFlags::READ), Err(StatusCode::Failure));
    let mut data = BytesMut::new();
    data.put_u32(r.len() as u32);
    data.put_slice(r.as_bytes());
    data.put_u64(2);
    data.put_u64(0); // to the end
    data.put_u32(w.len() as u32);
    data.put_slice(w.as_bytes());
    data.put_u64(1);
    let code = f.code(Packet::Extended(Extended {
        id: 1,
        request: "copy-data".into(),
        data: data.to_vec(),
    }));
    assert_eq!(code, StatusCode::Ok);
    match f.ext("fsync@openssh.com", &[w.as_bytes()]) {
        Packet::Status(s) => assert_eq!(s.status_code, StatusCode::Ok),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read(f.base.join("bob/dst")).unwrap(),
        b"\x0023456789"
    );
    match f.ext("no-such@example.com", &[]) {
        Packet::Status(s) => assert_eq!(s.status_code, StatusCode::OpUnsupported),
        other => panic!("{other:?}"),
    }
}

#[test]
fn plans_name_handles_and_scopes() {
    let f = fixture(true, true);
    let p = f.server.plan(&Packet::Close(Close {
        id: 1,
        handle: "7".into(),
    }));
    assert_eq!(p.handle, Some(("7".into(), Access::Exclusive)));
    let p = f.server.plan(&Packet::Read(Read {
        id: 1,
        handle: "7".into(),
        offset: 0,
        len: 1,
    }));
    assert_eq!(
        p,
        Plan {
            handle: Some(("7".into(), Access::Shared)),
            need: Need::Read
        }
    );
    let p = f.server.plan(&Packet::Open(Open {
        id: 1,
        filename: "x".into(),
        pflags: OpenFlags::READ,
        attrs: FileAttributes::default(),
    }));
    assert_eq!(p.need, Need::Read);
}

#[test]
fn ls_dates() {
    assert_eq!(ls_date(0), "Jan  1 00:00");
    assert_eq!(ls_date(1_700_000_000), "Nov 14 22:13");
}

#[test]
fn only_device_io_and_long_extensions_may_wait() {
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    // a file system in memory too, where there is one (reads and writes then run inline)
    if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
        dirs.push(shm);
    }
    for dir in dirs {
        let on_memory_fs =
            rustix::fs::statfs(dir.path()).is_ok_and(|s| MEMORY_FS_MAGIC.contains(&s.f_type));
        let f = fixture_in(dir, true, true);
        let h = f.open("f", W).unwrap();
        let read = Packet::Read(Read {
            id: 2,
            handle: h.clone(),
            offset: 0,
            len: 10,
        });
        let write = Packet::Write(Write {
            id: 3,
            handle: h.clone(),
            offset: 0,
            data: b"x".to_vec(),
        });
        assert_eq!(f.server.may_wait(&read), !on_memory_fs);
        assert_eq!(f.server.may_wait(&write), !on_memory_fs);
        let ext = |request: &str| {
            Packet::Extended(Extended {
                id: 4,
                request: request.into(),
                data: Vec::new(),
            })
        };
        assert!(f.server.may_wait(&ext("copy-data")));
        assert!(f.server.may_wait(&ext("fsync@openssh.com")));
        assert!(!f.server.may_wait(&ext("statvfs@openssh.com")));
        let stat = Packet::Stat(Stat {
            id: 5,
            path: "f".into(),
        });
        assert!(!f.server.may_wait(&stat));
        let close = Packet::Close(Close { id: 6, handle: h });
        assert!(!f.server.may_wait(&close));
    }
}

#[test]
fn freeing_a_large_file_may_wait_and_a_small_one_runs_inline() {
    let f = fixture(true, true);
    let big = INLINE_FREE_MAX_BYTES + 1;
    // sparse: the size decides, as it bounds what the kernel may have to free
    std::fs::File::create(f.home().join("big"))
        .unwrap()
        .set_len(big)
        .unwrap();
    std::fs::write(f.home().join("small"), vec![7u8; 4096]).unwrap();
    std::os::unix::fs::symlink("big", f.home().join("to-big")).unwrap();
    std::fs::create_dir(f.home().join("dir")).unwrap();
    let open = |path: &str, pflags: OpenFlags| {
        Packet::Open(Open {
            id: 1,
            filename: path.into(),
            pflags,
            attrs: FileAttributes::default(),
        })
    };
    let sized = || FileAttributes {
        size: Some(0),
        ..FileAttributes::default()
    };
    let setstat = |path: &str, attrs: FileAttributes| {
        Packet::SetStat(SetStat {
            id: 2,
            path: path.into(),
            attrs,
        })
    };
    let remove = |path: &str| {
        Packet::Remove(Remove {
            id: 3,
            filename: path.into(),
        })
    };
    let posix_rename = |old: &str, new: &str| {
        let mut data = BytesMut::new();
        for s in [old, new] {
            data.put_u32(s.len() as u32);
            data.put_slice(s.as_bytes());
        }
        Packet::Extended(Extended {
            id: 4,
            request: "posix-rename@openssh.com".into(),
            data: data.to_vec(),
        })
    };
    let s = &f.server;
    // truncating opens: by the size of what the path names (a symlink followed)
    assert!(s.may_wait(&open("big", W)));
    assert!(s.may_wait(&open("/to-big", W)));
    assert!(!s.may_wait(&open("small", W)));
    assert!(!s.may_wait(&open("new-file", W)));
    assert!(!s.may_wait(&open("big", OpenFlags::WRITE)));
    assert!(!s.may_wait(&open("big", OpenFlags::READ)));
    // a setstat that sets a size
    assert!(s.may_wait(&setstat("big", sized())));
    assert!(!s.may_wait(&setstat("big", FileAttributes::default())));
    assert!(!s.may_wait(&setstat("small", sized())));
    // remove and posix-rename act on the entry: a symlink is small whatever it names
    assert!(s.may_wait(&remove("big")));
    assert!(!s.may_wait(&remove("to-big")));
    assert!(!s.may_wait(&remove("small")));
    assert!(!s.may_wait(&remove("dir")));
    assert!(s.may_wait(&posix_rename("small", "big")));
    assert!(!s.may_wait(&posix_rename("big", "small")));
    assert!(!s.may_wait(&posix_rename("big", "absent")));
    // v3 RENAME never replaces its target
    let rename = Packet::Rename(Rename {
        id: 5,
        oldpath: "small".into(),
        newpath: "big".into(),
    });
    assert!(!s.may_wait(&rename));
    // paths outside the jail resolve inside it (or not at all): nothing outside is looked at
    assert!(!s.may_wait(&remove("../secret")));
    // fsetstat by the handle's file
    let h = f.open("big", OpenFlags::WRITE).unwrap();
    let fsetstat = Packet::FSetStat(russh_sftp::protocol::FSetStat {
        id: 6,
        handle: h,
        attrs: sized(),
    });
    assert!(s.may_wait(&fsetstat));
    // closing the last descriptor of a removed file frees it; of a file still linked, not
    let close = |handle: &str| {
        Packet::Close(Close {
            id: 7,
            handle: handle.into(),
        })
    };
    let kept = f.open("big", OpenFlags::READ).unwrap();
    assert!(!s.may_wait(&close(&kept)));
    std::fs::copy(f.home().join("big"), f.home().join("doomed")).unwrap();
    let doomed = f.open("doomed", OpenFlags::READ).unwrap();
    std::fs::remove_file(f.home().join("doomed")).unwrap();
    assert!(s.may_wait(&close(&doomed)));
    assert_eq!(f.code(close(&doomed)), StatusCode::Ok);
    // deciding looked and changed nothing; running the requests does what they ask
    assert_eq!(std::fs::metadata(f.home().join("big")).unwrap().len(), big);
    f.open("big", W).unwrap();
    assert_eq!(std::fs::metadata(f.home().join("big")).unwrap().len(), 0);
    assert_eq!(f.code(remove("big")), StatusCode::Ok);
    assert!(!f.home().join("big").exists());
}
