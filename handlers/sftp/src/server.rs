//! The request handling of one SFTP session: a request in, filesystem calls inside the
//! [`Jail`], the encoded reply out. Blocking (plain syscalls): the driver runs each request
//! on a blocking thread, many at once. [`Server::plan`] says, before running, which
//! handle a request uses and how (for the [`crate::sequencer`]) and which scope it needs.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use russh_sftp::protocol::{
    Attrs, ExtendedReply, File as NameEntry, FileAttributes, Handle, Name, OpenFlags, Packet,
    Status, StatusCode, Version,
};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, RenameFlags, Stat, Timespec, Timestamps};

use crate::config::{SftpConfig, READDIR_BATCH};
use crate::jail::{cwd, proc_fd_path, split_last, Jail};
use crate::sequencer::Access;

/// Grants read access (open for reading, stat, lstat, fstat, opendir/readdir, readlink,
/// realpath, statvfs).
pub const SCOPE_READ: &str = "sftp:read";
/// Grants everything that changes the tree.
pub const SCOPE_WRITE: &str = "sftp:write";

/// The OpenSSH extensions served, as advertised in `SSH_FXP_VERSION`.
pub const EXTENSIONS: &[(&str, &str)] = &[
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("fstatvfs@openssh.com", "2"),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
    ("limits@openssh.com", "1"),
    ("expand-path@openssh.com", "1"),
    ("copy-data", "1"),
];

const SSH_FXP_DATA: u8 = 103;
/// Length, type, id and data length of an `SSH_FXP_DATA` packet.
const DATA_HEADER: usize = 13;
/// Buffer of `copy-data`.
const COPY_CHUNK: usize = 256 * 1024;
/// The largest regular file a request may truncate, remove or replace where the driver
/// runs (the worker's thread for `alknet/sftp`); a larger one goes to a blocking thread
/// ([`Server::may_wait`]). Why: the kernel frees a file's blocks inside the call, in
/// time proportional to the size. An `OPEN` with `SSH_FXF_TRUNC` of an existing 1 GiB
/// file on tmpfs (what `put` over a file does) held the worker, and every connection it
/// serves, for about 110 ms here; at 1 MiB the call costs about 0.1 ms, on the order of
/// the hop to a blocking thread and back that it would otherwise pay.
pub const INLINE_FREE_MAX_BYTES: u64 = 1024 * 1024;

/// What a session's identity may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    pub read: bool,
    pub write: bool,
}

impl Grants {
    pub fn of(identity: &alknet_runtime::Identity) -> Self {
        Self {
            read: identity.has_scope(SCOPE_READ),
            write: identity.has_scope(SCOPE_WRITE),
        }
    }

    /// Default deny: neither scope, no session.
    pub fn any(self) -> bool {
        self.read || self.write
    }
}

/// Which scope a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
    /// Nothing beyond having a session (CLOSE of a handle it got, `limits`).
    Session,
}

/// How a request is to be run: its handle (for ordering) and the scope it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub handle: Option<(String, Access)>,
    pub need: Need,
}

enum Handle_ {
    File(OpenedFile),
    Dir(Arc<Mutex<DirState>>),
}

/// A file handle's entry.
#[derive(Clone)]
struct OpenedFile {
    file: Arc<File>,
    append: bool,
    /// On a file system in memory ([`in_memory`]), decided at open.
    in_memory: bool,
}

struct DirState {
    dir: Dir,
    done: bool,
}

/// One session's state: the jail, its grants, its open handles.
pub struct Server {
    jail: Jail,
    grants: Grants,
    config: SftpConfig,
    handles: Mutex<HashMap<String, Handle_>>,
    next_handle: AtomicU64,
}

/// A request's failure, as the status it is answered with.
#[derive(Debug)]
struct Failed(StatusCode, String);

/// Log budget of [`storage_refused`]: one line per second for the whole process.
static STORAGE_LOG: alknet_runtime::LogThrottle = alknet_runtime::LogThrottle::new();

/// Tells the operator when the file system itself refuses a request: full, over quota,
/// read-only or failing. The client gets the status either way (OpenSSH prints only
/// "Failure"); without this line nobody on the server side would know why uploads fail.
fn storage_refused(e: &io::Error) {
    use rustix::io::Errno;
    let storage = [Errno::NOSPC, Errno::DQUOT, Errno::IO, Errno::ROFS];
    if e.raw_os_error()
        .is_some_and(|n| storage.iter().any(|s| s.raw_os_error() == n))
    {
        if let Some(suppressed) = STORAGE_LOG.admit(std::time::Instant::now()) {
            tracing::warn!(
                also_refused_since_last_report = suppressed,
                "sftp: the file system refused a request: {e}"
            );
        }
    }
}

impl From<io::Error> for Failed {
    fn from(e: io::Error) -> Self {
        storage_refused(&e);
        let code = match e.kind() {
            io::ErrorKind::NotFound => StatusCode::NoSuchFile,
            io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
            _ => match e.raw_os_error() {
                Some(libc_errno) if libc_errno == rustix::io::Errno::XDEV.raw_os_error() => {
                    StatusCode::PermissionDenied
                }
                Some(n) if n == rustix::io::Errno::LOOP.raw_os_error() => {
                    StatusCode::PermissionDenied
                }
                Some(n) if n == rustix::io::Errno::PERM.raw_os_error() => {
                    StatusCode::PermissionDenied
                }
                _ => StatusCode::Failure,
            },
        };
        Failed(code, e.to_string())
    }
}

impl From<rustix::io::Errno> for Failed {
    fn from(e: rustix::io::Errno) -> Self {
        io::Error::from(e).into()
    }
}

fn fail<T>(code: StatusCode, msg: impl Into<String>) -> Result<T, Failed> {
    Err(Failed(code, msg.into()))
}

/// `f_type` of tmpfs and ramfs (`statfs(2)`): file systems in memory.
const MEMORY_FS_MAGIC: [rustix::fs::FsWord; 2] = [0x0102_1994, 0x8584_58f6];

/// Whether `file` is on a file system in memory (tmpfs, ramfs): reading and writing it
/// copies memory and never waits for a device. Such file systems offer no non-blocking
/// reads (`RWF_NOWAIT` fails with `EOPNOTSUPP`), so a driver that avoids waiting on its
/// own thread needs to know.
fn in_memory(file: &File) -> bool {
    rustix::fs::fstatfs(file).is_ok_and(|s| MEMORY_FS_MAGIC.contains(&s.f_type))
}

/// Encodes a reply; a packet that cannot be encoded (a name over 4 GiB) becomes a failure.
pub fn encode(packet: Packet) -> Bytes {
    let id = packet.get_request_id();
    Bytes::try_from(packet).unwrap_or_else(|e| {
        Bytes::try_from(Packet::status(
            id,
            StatusCode::Failure,
            &e.to_string(),
            "en",
        ))
        .unwrap_or_default()
    })
}

fn status(id: u32, code: StatusCode, msg: &str) -> Bytes {
    encode(Packet::Status(Status {
        id,
        status_code: code,
        error_message: msg.to_string(),
        language_tag: "en".to_string(),
    }))
}

/// The `SSH_FXP_VERSION` reply to `SSH_FXP_INIT`.
pub fn version_reply() -> Bytes {
    let mut v = Version::new();
    v.extensions = EXTENSIONS
        .iter()
        .map(|(k, val)| (k.to_string(), val.to_string()))
        .collect();
    encode(Packet::Version(v))
}

/// A reader of an extended request's fields.
struct Fields(Bytes);

impl Fields {
    fn string(&mut self) -> Result<String, Failed> {
        let bytes = self.bytes()?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
    fn bytes(&mut self) -> Result<Bytes, Failed> {
        let len = self.0.try_get_u32().map_err(|_| bad())? as usize;
        if self.0.remaining() < len {
            return Err(bad());
        }
        Ok(self.0.split_to(len))
    }
    fn u64(&mut self) -> Result<u64, Failed> {
        self.0.try_get_u64().map_err(|_| bad())
    }
}

fn bad() -> Failed {
    Failed(StatusCode::BadMessage, "malformed extended request".into())
}

fn writes(flags: OpenFlags) -> bool {
    flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE)
}

/// The handle a `copy-data` or `fsync` request names (its first field), for ordering.
fn first_string(data: &[u8]) -> Option<String> {
    Fields(Bytes::copy_from_slice(data)).string().ok()
}

impl Server {
    pub fn new(jail: Jail, grants: Grants, config: SftpConfig) -> Self {
        Self {
            jail,
            grants,
            config,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        }
    }

    pub fn grants(&self) -> Grants {
        self.grants
    }

    /// Open handles.
    pub fn open_handles(&self) -> usize {
        self.handles.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// The handle `packet` uses and the scope it needs.
    pub fn plan(&self, packet: &Packet) -> Plan {
        use Access::{Exclusive, Shared};
        let on = |h: &str, a| Some((h.to_string(), a));
        let (handle, need) = match packet {
            Packet::Open(o) => (
                None,
                if writes(o.pflags) {
                    Need::Write
                } else {
                    Need::Read
                },
            ),
            Packet::Close(c) => (on(&c.handle, Exclusive), Need::Session),
            Packet::Read(r) => (on(&r.handle, Shared), Need::Read),
            Packet::Write(w) => (on(&w.handle, self.write_access(&w.handle)), Need::Write),
            Packet::Fstat(f) => (on(&f.handle, Shared), Need::Read),
            Packet::FSetStat(f) => (on(&f.handle, Shared), Need::Write),
            Packet::ReadDir(r) => (on(&r.handle, Exclusive), Need::Read),
            Packet::Lstat(_)
            | Packet::Stat(_)
            | Packet::OpenDir(_)
            | Packet::RealPath(_)
            | Packet::ReadLink(_) => (None, Need::Read),
            Packet::SetStat(_)
            | Packet::Remove(_)
            | Packet::MkDir(_)
            | Packet::RmDir(_)
            | Packet::Rename(_)
            | Packet::Symlink(_) => (None, Need::Write),
            Packet::Extended(e) => match e.request.as_str() {
                "statvfs@openssh.com" | "expand-path@openssh.com" => (None, Need::Read),
                "fstatvfs@openssh.com" => (first_string(&e.data).map(|h| (h, Shared)), Need::Read),
                "limits@openssh.com" => (None, Need::Session),
                "fsync@openssh.com" => (first_string(&e.data).map(|h| (h, Shared)), Need::Write),
                // ordered on the handle written to
                "copy-data" => {
                    let mut f = Fields(Bytes::copy_from_slice(&e.data));
                    let target = (|| {
                        f.bytes()?;
                        f.u64()?;
                        f.u64()?;
                        f.string()
                    })()
                    .ok();
                    (target.map(|h| (h, Exclusive)), Need::Write)
                }
                _ => (None, Need::Write),
            },
            _ => (None, Need::Session),
        };
        Plan { handle, need }
    }

    /// How a `WRITE` uses `handle`: alone in append mode (each lands at the end, in
    /// order), beside other requests otherwise.
    pub fn write_access(&self, handle: &str) -> Access {
        let append = matches!(
            self.handles
                .lock()
                .ok()
                .as_ref()
                .and_then(|h| h.get(handle)),
            Some(Handle_::File(OpenedFile { append: true, .. }))
        );
        if append {
            Access::Exclusive
        } else {
            Access::Shared
        }
    }

    /// Whether running `packet` may wait for a device or take long, and so belongs on a
    /// blocking thread: `READ` and `WRITE` of a file not in memory, `copy-data` (a whole
    /// range), `fsync@openssh.com`, and requests that free more than
    /// [`INLINE_FREE_MAX_BYTES`] of a file (`Server::frees_large_file`). Everything
    /// else (open, stat, close, readdir, rename, ...) is a few system calls on a local
    /// file system, and a hop to another thread and back costs more than the calls:
    /// drivers run those where they are.
    pub fn may_wait(&self, packet: &Packet) -> bool {
        let on_device = |h: &str| self.file(h).map_or(true, |f| !f.in_memory);
        match packet {
            Packet::Read(r) => on_device(&r.handle),
            Packet::Write(w) => on_device(&w.handle),
            Packet::Extended(e) if e.request == "copy-data" || e.request == "fsync@openssh.com" => {
                true
            }
            _ => self.frees_large_file(packet),
        }
    }

    /// Whether `packet` truncates, removes or replaces a regular file of more than
    /// [`INLINE_FREE_MAX_BYTES`]: `OPEN` with `SSH_FXF_TRUNC`, `SETSTAT`/`FSETSTAT` with a
    /// size, `REMOVE`, `posix-rename@openssh.com` onto an existing file (v3 `RENAME`
    /// never replaces), and the `CLOSE` of a handle whose file was removed meanwhile (the
    /// last descriptor's close frees it). One `openat2(O_PATH)` or `fstat` decides; a
    /// path that does not resolve frees nothing.
    fn frees_large_file(&self, packet: &Packet) -> bool {
        let large = |st: Stat| {
            FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && u64::try_from(st.st_size).unwrap_or(0) > INLINE_FREE_MAX_BYTES
        };
        // `follow`: the request acts on what a symlink names (open, setstat), or on the
        // directory entry itself (remove, rename)
        let large_at = |path: &str, follow: bool| {
            let flags = if follow {
                OFlags::PATH
            } else {
                OFlags::PATH | OFlags::NOFOLLOW
            };
            self.jail
                .open_at(path, flags, Mode::empty())
                .and_then(|fd| Ok(rustix::fs::fstat(&fd)?))
                .is_ok_and(large)
        };
        let handle_stat = |handle: &str| {
            self.file(handle)
                .ok()
                .and_then(|f| rustix::fs::fstat(&*f.file).ok())
        };
        match packet {
            Packet::Open(o) => {
                o.pflags.contains(OpenFlags::TRUNCATE) && large_at(&o.filename, true)
            }
            Packet::SetStat(s) => s.attrs.size.is_some() && large_at(&s.path, true),
            Packet::FSetStat(s) => {
                s.attrs.size.is_some() && handle_stat(&s.handle).is_some_and(large)
            }
            Packet::Remove(r) => large_at(&r.filename, false),
            Packet::Close(c) => {
                handle_stat(&c.handle).is_some_and(|st| st.st_nlink == 0 && large(st))
            }
            Packet::Extended(e) if e.request == "posix-rename@openssh.com" => {
                let mut f = Fields(Bytes::copy_from_slice(&e.data));
                let target = f.string().and_then(|_| f.string());
                target.is_ok_and(|new| large_at(&new, false))
            }
            _ => false,
        }
    }

    /// `Ok` if the session's grants allow what request `id` needs, else its
    /// `SSH_FX_PERMISSION_DENIED` reply.
    pub fn check(&self, id: u32, need: Need) -> Result<(), Bytes> {
        let allowed = match need {
            Need::Read => self.grants.read,
            Need::Write => self.grants.write,
            Need::Session => true,
        };
        if allowed {
            return Ok(());
        }
        let scope = if need == Need::Read {
            SCOPE_READ
        } else {
            SCOPE_WRITE
        };
        Err(status(
            id,
            StatusCode::PermissionDenied,
            &format!("needs scope {scope}"),
        ))
    }

    /// The open file behind `handle`, for a driver that reads and writes it itself (the
    /// worker front, through io_uring), and whether it is on a file system in memory; or
    /// the reply to request `id` when there is none.
    pub fn file_of(&self, id: u32, handle: &str) -> Result<(Arc<File>, bool), Bytes> {
        self.file(handle)
            .map(|f| (f.file, f.in_memory))
            .map_err(|Failed(code, msg)| status(id, code, &msg))
    }

    /// Serves one request (not `INIT`) and returns the encoded reply.
    pub fn execute(&self, packet: Packet) -> Bytes {
        let id = packet.get_request_id();
        if let Err(denied) = self.check(id, self.plan(&packet).need) {
            return denied;
        }
        match self.run(packet) {
            Ok(reply) => reply,
            Err(Failed(code, msg)) => status(id, code, &msg),
        }
    }

    fn run(&self, packet: Packet) -> Result<Bytes, Failed> {
        let ok = |id| Ok(status(id, StatusCode::Ok, "ok"));
        match packet {
            Packet::Open(o) => self.open(o.id, &o.filename, o.pflags, &o.attrs),
            Packet::Close(c) => {
                let removed = self
                    .handles
                    .lock()
                    .map_err(|_| poisoned())?
                    .remove(&c.handle);
                match removed {
                    Some(_) => ok(c.id),
                    None => fail(StatusCode::Failure, "no such handle"),
                }
            }
            Packet::Read(r) => self.read(r.id, &r.handle, r.offset, r.len),
            Packet::Write(w) => {
                let file = self.file(&w.handle)?.file;
                file.write_all_at(&w.data, w.offset)?;
                ok(w.id)
            }
            Packet::Lstat(l) => {
                let fd =
                    self.jail
                        .open_at(&l.path, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?;
                Ok(attrs_reply(l.id, &rustix::fs::fstat(&fd)?))
            }
            Packet::Stat(s) => {
                let fd = self.jail.open_at(&s.path, OFlags::PATH, Mode::empty())?;
                Ok(attrs_reply(s.id, &rustix::fs::fstat(&fd)?))
            }
            Packet::Fstat(f) => {
                let st = match self.handle(&f.handle)? {
                    Handle_::File(opened) => rustix::fs::fstat(&*opened.file)?,
                    Handle_::Dir(d) => {
                        let d = d.lock().map_err(|_| poisoned())?;
                        rustix::fs::fstat(d.dir.fd()?)?
                    }
                };
                Ok(attrs_reply(f.id, &st))
            }
            Packet::SetStat(s) => {
                self.setstat(&s.path, &s.attrs)?;
                ok(s.id)
            }
            Packet::FSetStat(s) => {
                let file = self.file(&s.handle)?.file;
                set_attrs_fd(&*file, &s.attrs)?;
                ok(s.id)
            }
            Packet::OpenDir(o) => {
                let fd = self.jail.open_at(
                    &o.path,
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    Mode::empty(),
                )?;
                let dir = Dir::new(fd)?;
                let state = DirState { dir, done: false };
                self.add_handle(o.id, Handle_::Dir(Arc::new(Mutex::new(state))))
            }
            Packet::ReadDir(r) => self.readdir(r.id, &r.handle),
            Packet::Remove(r) => {
                let (dir, name) = self.jail.parent(&r.filename)?;
                rustix::fs::unlinkat(&dir, &name[..], AtFlags::empty())?;
                ok(r.id)
            }
            Packet::MkDir(m) => {
                let (dir, name) = self.jail.parent(&m.path)?;
                let mode = m.attrs.permissions.map_or(0o777, |p| p & 0o7777);
                rustix::fs::mkdirat(&dir, &name[..], Mode::from_raw_mode(mode))?;
                ok(m.id)
            }
            Packet::RmDir(r) => {
                let (dir, name) = self.jail.parent(&r.path)?;
                rustix::fs::unlinkat(&dir, &name[..], AtFlags::REMOVEDIR)?;
                ok(r.id)
            }
            Packet::RealPath(r) => Ok(name_reply(r.id, self.realpath(&r.path)?)),
            Packet::Rename(r) => {
                // SFTP v3 rename does not replace an existing target
                self.rename(&r.oldpath, &r.newpath, RenameFlags::NOREPLACE)?;
                ok(r.id)
            }
            Packet::ReadLink(r) => {
                let fd =
                    self.jail
                        .open_at(&r.path, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?;
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
                Ok(name_reply(r.id, target.to_string_lossy().into_owned()))
            }
            // OpenSSH sends the target first and the new link second (the reverse of the
            // draft); russh-sftp names the fields after the draft
            Packet::Symlink(s) => {
                let (target, link) = (s.linkpath, s.targetpath);
                let (dir, name) = self.jail.parent(&link)?;
                rustix::fs::symlinkat(target.as_str(), &dir, &name[..])?;
                ok(s.id)
            }
            Packet::Extended(e) => self.extended(e.id, &e.request, Bytes::from(e.data)),
            other => fail(
                StatusCode::OpUnsupported,
                format!("not a request: {:?}", std::mem::discriminant(&other)),
            ),
        }
    }

    fn extended(&self, id: u32, request: &str, data: Bytes) -> Result<Bytes, Failed> {
        let mut f = Fields(data);
        let ok = Ok(status(id, StatusCode::Ok, "ok"));
        match request {
            "posix-rename@openssh.com" => {
                let (old, new) = (f.string()?, f.string()?);
                self.rename(&old, &new, RenameFlags::empty())?;
                ok
            }
            "hardlink@openssh.com" => {
                let (old, new) = (f.string()?, f.string()?);
                let (odir, oname) = self.jail.parent(&old)?;
                let (ndir, nname) = self.jail.parent(&new)?;
                // flags 0: a symlink is linked as itself, never followed
                rustix::fs::linkat(&odir, &oname[..], &ndir, &nname[..], AtFlags::empty())?;
                ok
            }
            "statvfs@openssh.com" => {
                let fd = self
                    .jail
                    .open_at(&f.string()?, OFlags::PATH, Mode::empty())?;
                Ok(statvfs_reply(id, &fd)?)
            }
            "fstatvfs@openssh.com" => match self.handle(&f.string()?)? {
                Handle_::File(opened) => Ok(statvfs_reply(id, &*opened.file)?),
                Handle_::Dir(d) => {
                    let d = d.lock().map_err(|_| poisoned())?;
                    Ok(statvfs_reply(id, d.dir.fd()?)?)
                }
            },
            "fsync@openssh.com" => {
                let file = self.file(&f.string()?)?.file;
                file.sync_all()?;
                ok
            }
            "limits@openssh.com" => {
                let mut out = BytesMut::new();
                out.put_u64(u64::from(self.config.max_packet));
                out.put_u64(u64::from(self.config.max_read));
                // a WRITE carries its handle and offset beside the data
                out.put_u64(u64::from(self.config.max_read));
                out.put_u64(self.config.max_handles as u64);
                Ok(encode(Packet::ExtendedReply(ExtendedReply {
                    id,
                    data: out.to_vec(),
                })))
            }
            "expand-path@openssh.com" => {
                let path = f.string()?;
                // the home directory is the root
                let path = match path.strip_prefix('~') {
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("/{rest}"),
                    _ => path,
                };
                Ok(name_reply(id, self.realpath(&path)?))
            }
            "copy-data" => {
                let (rh, roff, rlen) = (f.string()?, f.u64()?, f.u64()?);
                let (wh, woff) = (f.string()?, f.u64()?);
                let src = self.file(&rh)?.file;
                let dst = self.file(&wh)?.file;
                copy_range(&src, roff, rlen, &dst, woff)?;
                ok
            }
            other => fail(
                StatusCode::OpUnsupported,
                format!("extension {other:?} not supported"),
            ),
        }
    }

    fn handle(&self, h: &str) -> Result<Handle_, Failed> {
        let table = self.handles.lock().map_err(|_| poisoned())?;
        match table.get(h) {
            Some(Handle_::File(f)) => Ok(Handle_::File(f.clone())),
            Some(Handle_::Dir(d)) => Ok(Handle_::Dir(d.clone())),
            None => fail(StatusCode::Failure, "no such handle"),
        }
    }

    fn file(&self, h: &str) -> Result<OpenedFile, Failed> {
        match self.handle(h)? {
            Handle_::File(f) => Ok(f),
            Handle_::Dir(_) => fail(StatusCode::Failure, "a directory handle"),
        }
    }

    fn add_handle(&self, id: u32, entry: Handle_) -> Result<Bytes, Failed> {
        let mut table = self.handles.lock().map_err(|_| poisoned())?;
        if table.len() >= self.config.max_handles {
            return fail(
                StatusCode::Failure,
                format!(
                    "too many open handles ({}; sftp.max_handles)",
                    self.config.max_handles
                ),
            );
        }
        let name = self.next_handle.fetch_add(1, Ordering::Relaxed).to_string();
        table.insert(name.clone(), entry);
        Ok(encode(Packet::Handle(Handle { id, handle: name })))
    }

    fn open(
        &self,
        id: u32,
        path: &str,
        pflags: OpenFlags,
        attrs: &FileAttributes,
    ) -> Result<Bytes, Failed> {
        let read = pflags.contains(OpenFlags::READ);
        let write = pflags.intersects(OpenFlags::WRITE | OpenFlags::APPEND);
        let mut flags = match (read, write) {
            (_, false) => OFlags::RDONLY,
            (false, true) => OFlags::WRONLY,
            (true, true) => OFlags::RDWR,
        };
        let append = pflags.contains(OpenFlags::APPEND);
        if append {
            flags |= OFlags::APPEND;
        }
        if pflags.contains(OpenFlags::CREATE) {
            flags |= OFlags::CREATE;
            if pflags.contains(OpenFlags::EXCLUDE) {
                flags |= OFlags::EXCL;
            }
        }
        if pflags.contains(OpenFlags::TRUNCATE) {
            flags |= OFlags::TRUNC;
        }
        // NONBLOCK: opening a FIFO must not hang a thread (regular files ignore it)
        // openat2 refuses a mode without O_CREAT
        let mode = if flags.contains(OFlags::CREATE) {
            attrs.permissions.map_or(0o666, |p| p & 0o7777)
        } else {
            0
        };
        let fd = self
            .jail
            .open_at(path, flags | OFlags::NONBLOCK, Mode::from_raw_mode(mode))?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return fail(StatusCode::Failure, "not a regular file");
        }
        // back to blocking for the reads and writes
        rustix::fs::fcntl_setfl(&fd, rustix::fs::fcntl_getfl(&fd)? - OFlags::NONBLOCK)?;
        let file = File::from(fd);
        self.add_handle(
            id,
            Handle_::File(OpenedFile {
                in_memory: in_memory(&file),
                file: Arc::new(file),
                append,
            }),
        )
    }

    fn read(&self, id: u32, handle: &str, offset: u64, len: u32) -> Result<Bytes, Failed> {
        let file = self.file(handle)?.file;
        let len = len.min(self.config.max_read) as usize;
        // read into spare capacity: zeroing a buffer the file then overwrites (32 KiB or
        // more per request, most of it unused at a small file's end) cost more than the
        // read itself
        let mut buf = Vec::with_capacity(DATA_HEADER + len);
        buf.resize(DATA_HEADER, 0);
        while buf.len() < DATA_HEADER + len {
            let at = offset + (buf.len() - DATA_HEADER) as u64;
            match rustix::io::pread(&*file, rustix::buffer::spare_capacity(&mut buf), at) {
                Ok(0) => break,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let got = buf.len() - DATA_HEADER;
        if got == 0 && len > 0 {
            return Ok(eof_reply(id));
        }
        put_data_header(&mut &mut buf[..DATA_HEADER], id, got);
        Ok(Bytes::from(buf))
    }

    fn readdir(&self, id: u32, handle: &str) -> Result<Bytes, Failed> {
        let Handle_::Dir(state) = self.handle(handle)? else {
            return fail(StatusCode::Failure, "not a directory handle");
        };
        let mut state = state.lock().map_err(|_| poisoned())?;
        if state.done {
            return Ok(status(id, StatusCode::Eof, "end of directory"));
        }
        let mut files = Vec::new();
        while files.len() < READDIR_BATCH {
            let Some(entry) = state.dir.read() else {
                state.done = true;
                break;
            };
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // lstat: a symlink is listed as one, never followed
            let attrs = match rustix::fs::statat(
                state.dir.fd()?,
                entry.file_name(),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                Err(_) => continue, // removed meanwhile
            };
            let longname = longname(&name, &attrs);
            files.push(NameEntry {
                filename: name,
                longname,
                attrs: file_attrs(&attrs),
            });
        }
        if files.is_empty() {
            return Ok(status(id, StatusCode::Eof, "end of directory"));
        }
        Ok(encode(Packet::Name(Name { id, files })))
    }

    fn setstat(&self, path: &str, attrs: &FileAttributes) -> Result<(), Failed> {
        refuse_owner_change(attrs)?;
        if let Some(size) = attrs.size {
            let fd = self
                .jail
                .open_at(path, OFlags::WRONLY | OFlags::NONBLOCK, Mode::empty())?;
            rustix::fs::ftruncate(&fd, size)?;
        }
        if attrs.permissions.is_some() || attrs.atime.is_some() || attrs.mtime.is_some() {
            let fd = self.jail.open_at(path, OFlags::PATH, Mode::empty())?;
            // chmod and utimes have no form for an O_PATH descriptor: go through its
            // /proc link, which names the file already resolved inside the jail
            let link = proc_fd_path(&fd);
            if let Some(mode) = attrs.permissions {
                rustix::fs::chmodat(
                    cwd(),
                    &link,
                    Mode::from_raw_mode(mode & 0o7777),
                    AtFlags::empty(),
                )?;
            }
            if let Some(times) = timestamps(attrs) {
                rustix::fs::utimensat(cwd(), &link, &times, AtFlags::empty())?;
            }
        }
        Ok(())
    }

    fn rename(&self, old: &str, new: &str, flags: RenameFlags) -> Result<(), Failed> {
        let (odir, oname) = self.jail.parent(old)?;
        let (ndir, nname) = self.jail.parent(new)?;
        rustix::fs::renameat_with(&odir, &oname[..], &ndir, &nname[..], flags)?;
        Ok(())
    }

    /// The client's canonical view of `path`; for a path that does not exist yet, its
    /// directory's canonical view and its last component.
    fn realpath(&self, path: &str) -> Result<String, Failed> {
        let path = if path.is_empty() { "." } else { path };
        match self.jail.open_at(path, OFlags::PATH, Mode::empty()) {
            Ok(fd) => Ok(self.jail.client_view(&fd)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some((dir, name)) = split_last(path) else {
                    return Err(e.into());
                };
                let fd = self
                    .jail
                    .open_at(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
                let dir = self.jail.client_view(&fd)?;
                let name = String::from_utf8_lossy(name);
                Ok(if dir == "/" {
                    format!("/{name}")
                } else {
                    format!("{dir}/{name}")
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Writes the header of an `SSH_FXP_DATA` reply to request `id` carrying `len` bytes
/// (length, type, id, data length: [`DATA_HEADER`] bytes).
fn put_data_header(out: &mut impl BufMut, id: u32, len: usize) {
    out.put_u32((DATA_HEADER - 4 + len) as u32);
    out.put_u8(SSH_FXP_DATA);
    out.put_u32(id);
    out.put_u32(len as u32);
}

/// The header of an `SSH_FXP_DATA` reply whose `len` data bytes follow separately
/// (a driver that sends the data as read, without copying it behind a header).
pub fn data_header(id: u32, len: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(DATA_HEADER);
    put_data_header(&mut out, id, len);
    out.freeze()
}

/// `SSH_FX_EOF` for a `READ` at or past the end.
pub fn eof_reply(id: u32) -> Bytes {
    status(id, StatusCode::Eof, "end of file")
}

/// `SSH_FX_OK`.
pub fn ok_reply(id: u32) -> Bytes {
    status(id, StatusCode::Ok, "ok")
}

/// The status answering request `id` after an i/o error.
pub fn io_error_reply(id: u32, e: io::Error) -> Bytes {
    let Failed(code, msg) = e.into();
    status(id, code, &msg)
}

fn poisoned() -> Failed {
    Failed(StatusCode::Failure, "internal error".into())
}

fn refuse_owner_change(attrs: &FileAttributes) -> Result<(), Failed> {
    if attrs.uid.is_some() || attrs.gid.is_some() {
        return fail(
            StatusCode::PermissionDenied,
            "owner and group are reported, not changeable",
        );
    }
    Ok(())
}

fn timestamps(attrs: &FileAttributes) -> Option<Timestamps> {
    let (a, m) = (attrs.atime?, attrs.mtime?);
    let ts = |s: u32| Timespec {
        tv_sec: i64::from(s),
        tv_nsec: 0,
    };
    Some(Timestamps {
        last_access: ts(a),
        last_modification: ts(m),
    })
}

fn set_attrs_fd(fd: impl AsFd, attrs: &FileAttributes) -> Result<(), Failed> {
    refuse_owner_change(attrs)?;
    if let Some(size) = attrs.size {
        rustix::fs::ftruncate(&fd, size)?;
    }
    if let Some(mode) = attrs.permissions {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))?;
    }
    if let Some(times) = timestamps(attrs) {
        rustix::fs::futimens(&fd, &times)?;
    }
    Ok(())
}

fn copy_range(src: &File, mut roff: u64, len: u64, dst: &File, mut woff: u64) -> io::Result<()> {
    let mut left = if len == 0 { u64::MAX } else { len };
    let mut buf = vec![0u8; COPY_CHUNK];
    while left > 0 {
        let want = (left.min(COPY_CHUNK as u64)) as usize;
        let n = src.read_at(&mut buf[..want], roff)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], woff)?;
        (roff, woff, left) = (roff + n as u64, woff + n as u64, left - n as u64);
    }
    Ok(())
}

fn statvfs_reply(id: u32, fd: impl AsFd) -> Result<Bytes, Failed> {
    let s = rustix::fs::fstatvfs(fd)?;
    let mut out = BytesMut::new();
    for v in [
        s.f_bsize,
        s.f_frsize,
        s.f_blocks,
        s.f_bfree,
        s.f_bavail,
        s.f_files,
        s.f_ffree,
        s.f_favail,
        s.f_fsid,
        s.f_flag.bits(),
        s.f_namemax,
    ] {
        out.put_u64(v);
    }
    Ok(encode(Packet::ExtendedReply(ExtendedReply {
        id,
        data: out.to_vec(),
    })))
}

fn file_attrs(st: &Stat) -> FileAttributes {
    FileAttributes {
        size: Some(st.st_size as u64),
        uid: Some(st.st_uid),
        user: None,
        gid: Some(st.st_gid),
        group: None,
        permissions: Some(st.st_mode),
        atime: Some(st.st_atime as u32),
        mtime: Some(st.st_mtime as u32),
    }
}

fn attrs_reply(id: u32, st: &Stat) -> Bytes {
    encode(Packet::Attrs(Attrs {
        id,
        attrs: file_attrs(st),
    }))
}

fn name_reply(id: u32, name: String) -> Bytes {
    encode(Packet::Name(Name {
        id,
        files: vec![NameEntry {
            filename: name,
            longname: String::new(),
            attrs: FileAttributes::default(),
        }],
    }))
}

/// `ls -l`'s line for an entry, as OpenSSH's sftp-server writes it.
pub fn longname(name: &str, st: &Stat) -> String {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharacterDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
        _ => '-',
    };
    let mut perms = String::with_capacity(9);
    for shift in [6u32, 3, 0] {
        let bits = (st.st_mode >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    format!(
        "{kind}{perms} {:>4} {:<8} {:<8} {:>8} {} {name}",
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        st.st_size,
        ls_date(st.st_mtime)
    )
}

/// `Mon dd HH:MM` (UTC) of a Unix time.
fn ls_date(secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil-from-days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{} {:>2} {:02}:{:02}",
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        (rem % 3600) / 60
    )
}

#[cfg(test)]
mod tests;
