//! `sftp-get` and `sftp-put`: raw SFTP v3 sessions on `alknet/sftp`, one bidirectional
//! stream per connection, driven by a pipelined client of our own on the client thread's
//! monoio runtime (no SSH, no bridge: the server's cost is what is measured).
//!
//! The client behaves as OpenSSH's `sftp` does for one file: it asks the server for
//! `limits@openssh.com` and uses its read and write lengths (at most 255 KiB, OpenSSH's
//! `SFTP_MAX_MSG_LENGTH - 1024`; 32 KiB without the extension) and keeps `--streams`
//! READs or WRITEs of one file in flight (OpenSSH's default: 64). `--sftp-files N`
//! transfers N files of `--size` bytes instead of one of `--bytes`, `--sftp-files-in-flight`
//! at a time per session (OpenSSH's `get -r`/`put -r`: 1): each file is an OPEN, its
//! READs or WRITEs, and a CLOSE.
//!
//! A `get` first uploads what it will download (before the measured window), and every
//! run removes its files afterwards. Files are named after the harness's pid, the client
//! thread and the connection, so runs against one server do not collide.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use alknet_runtime::{Connection, RecvStream, SendStream};
use alknet_sftp::frame::FrameDecoder;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::harness::{thread_cpu, ClientThread, Schedule, Tally, Workload, UPLOAD};
use crate::rr::split;

/// Read and write length without `limits@openssh.com` (OpenSSH's default buffer).
const DEFAULT_CHUNK: u32 = 32 * 1024;
/// Largest read or write length the client uses (OpenSSH: `SFTP_MAX_MSG_LENGTH - 1024`).
const MAX_CHUNK: u32 = 255 * 1024;
/// Largest reply packet accepted (OpenSSH's `SFTP_MAX_MSG_LENGTH`).
const MAX_PACKET: u32 = 256 * 1024;
/// Setup (uploading what a `get` reads) and cleanup may take this long per session.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);

// SFTP v3 packet types and flags (draft-ietf-secsh-filexfer-02).
const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;
const FXP_EXTENDED: u8 = 200;
const FXP_EXTENDED_REPLY: u8 = 201;
const FXF_READ: u32 = 0x01;
const FXF_WRITE: u32 = 0x02;
const FXF_CREAT: u32 = 0x08;
const FXF_TRUNC: u32 = 0x10;
const FX_OK: u32 = 0;
const FX_EOF: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SftpOp {
    Get,
    Put,
}

/// What each session transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SftpShape {
    /// One file of this many bytes.
    OneFile { bytes: u64 },
    /// `count` files of `size` bytes, `in_flight` at a time.
    Files {
        count: u32,
        size: u64,
        in_flight: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Sftp {
    connections: Vec<usize>,
    op: SftpOp,
    shape: SftpShape,
    /// READs or WRITEs in flight per file.
    requests: usize,
    /// Read/write length instead of the server's limits.
    chunk: Option<u32>,
}

impl Sftp {
    pub fn new(
        connections: usize,
        threads: usize,
        op: SftpOp,
        shape: SftpShape,
        requests: usize,
        chunk: Option<u32>,
    ) -> Self {
        Self {
            connections: split(connections, threads),
            op,
            shape,
            requests: requests.max(1),
            chunk,
        }
    }

    /// The files one session transfers, and the directory holding them (files mode).
    fn files(&self, thread: usize, session: usize) -> (Option<String>, Vec<(String, u64)>) {
        let base = format!("/alknet-loadtest-{}-{thread}-{session}", std::process::id());
        match self.shape {
            SftpShape::OneFile { bytes } => (None, vec![(format!("{base}.bin"), bytes)]),
            SftpShape::Files { count, size, .. } => {
                let files = (0..count).map(|i| (format!("{base}/f{i}"), size)).collect();
                (Some(base), files)
            }
        }
    }

    fn files_in_flight(&self) -> usize {
        match self.shape {
            SftpShape::OneFile { .. } => 1,
            SftpShape::Files { in_flight, .. } => in_flight.max(1),
        }
    }
}

impl Workload for Sftp {
    async fn run_thread(
        self,
        thread: ClientThread,
        schedule: Arc<OnceLock<Schedule>>,
        ready: mpsc::Sender<()>,
    ) -> Tally {
        let mut tally = Tally::default();
        let n = self.connections.get(thread.index).copied().unwrap_or(0);
        let conns = thread.connect_many(n, &mut tally).await;
        // sessions and what a get reads are set up before the window, concurrently
        let setups: Vec<_> = conns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (dir, files) = self.files(thread.index, i);
                let (this, conn) = (self.clone(), c.clone());
                monoio::spawn(async move {
                    let mut client = SftpClient::start(&conn, this.chunk).await?;
                    if let Some(dir) = &dir {
                        client
                            .simple(FXP_MKDIR, std::slice::from_ref(dir), true)
                            .await?;
                    }
                    if this.op == SftpOp::Get {
                        client
                            .transfer(SftpOp::Put, &files, this.requests, 16, None)
                            .await?;
                    }
                    Ok::<_, String>((client, dir, files))
                })
            })
            .collect();
        let mut sessions = Vec::new();
        for s in setups {
            match monoio::time::timeout(SETUP_TIMEOUT, s).await {
                Ok(Ok(s)) => sessions.push(s),
                Ok(Err(e)) => tally.error("setup", || e),
                Err(_) => tally.error("setup", || "session setup timed out".into()),
            }
        }
        let _ = ready.send(());
        if let Some(sched) = crate::harness::wait_for_start(&schedule).await {
            monoio::time::sleep_until(monoio::time::Instant::from_std(sched.measure_from)).await;
            let cpu_start = thread_cpu();
            let runs: Vec<_> = sessions
                .into_iter()
                .map(|(mut client, dir, files)| {
                    let this = self.clone();
                    monoio::spawn(async move {
                        let mut t = Tally::default();
                        let res = client
                            .transfer(
                                this.op,
                                &files,
                                this.requests,
                                this.files_in_flight(),
                                Some((&mut t, sched.end)),
                            )
                            .await;
                        if let Err(e) = res {
                            t.error("transfer", || e);
                        }
                        t.span_s = t
                            .span_s
                            .max((Instant::now() - sched.measure_from).as_secs_f64());
                        (client, dir, files, t)
                    })
                })
                .collect();
            let mut done = Vec::new();
            for r in runs {
                let (client, dir, files, t) = r.await;
                tally.merge(t);
                done.push((client, dir, files));
            }
            tally.cpu_s = (thread_cpu() - cpu_start).as_secs_f64();
            // remove what the run made, after the window
            let cleanups: Vec<_> = done
                .into_iter()
                .map(|(mut client, dir, files)| {
                    monoio::spawn(async move {
                        let paths: Vec<String> = files.into_iter().map(|(p, _)| p).collect();
                        client.simple(FXP_REMOVE, &paths, false).await?;
                        if let Some(dir) = dir {
                            client.simple(FXP_RMDIR, &[dir], false).await?;
                        }
                        client.end().await
                    })
                })
                .collect();
            for c in cleanups {
                if let Ok(Err(e)) = monoio::time::timeout(SETUP_TIMEOUT, c).await {
                    tracing::warn!("sftp cleanup: {e}");
                }
            }
        }
        thread.close_all(conns).await;
        tally.client = thread.endpoint.stats();
        tally
    }
}

/// A reply, parsed as far as the client needs.
enum Reply {
    Status { code: u32, message: String },
    Handle(Bytes),
    Data(Bytes),
    Extended(Bytes),
}

/// What a request in flight was for.
enum Pending {
    Open,
    Io { offset: u64, len: u32 },
    Close,
}

/// One file being transferred.
struct Job {
    path: usize,
    size: u64,
    handle: Option<Bytes>,
    /// Next offset not yet asked for.
    next: u64,
    /// Ranges a short read left to ask for again.
    retry: Vec<(u64, u32)>,
    moved: u64,
    in_flight: usize,
    closing: bool,
    started: Instant,
}

/// The client end of one SFTP session on a QUIC stream.
struct SftpClient {
    send: SendStream,
    recv: RecvStream,
    frames: FrameDecoder,
    next_id: u32,
    /// Encoded requests not yet written (headers, and WRITE data as slices of `UPLOAD`).
    out: Vec<Bytes>,
    header: BytesMut,
    read_len: u32,
    write_len: u32,
}

impl SftpClient {
    /// Opens the session's stream, says INIT, and reads the server's limits.
    async fn start(conn: &Connection, chunk: Option<u32>) -> Result<Self, String> {
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| format!("open: {e}"))?
            .split();
        let mut c = Self {
            send,
            recv,
            frames: FrameDecoder::new(MAX_PACKET),
            next_id: 0,
            out: Vec::new(),
            header: BytesMut::with_capacity(64 * 1024),
            read_len: DEFAULT_CHUNK,
            write_len: DEFAULT_CHUNK,
        };
        let at = c.begin(FXP_INIT, None);
        c.header.put_u32(3);
        c.end_request(at, None);
        c.flush().await?;
        let mut version = c.packet().await?;
        if version.first() != Some(&FXP_VERSION) {
            return Err("the server did not answer INIT with VERSION".into());
        }
        version.advance(1);
        if take_u32(&mut version)? != 3 {
            return Err("the server speaks another SFTP version than 3".into());
        }
        let mut limits = false;
        while version.has_remaining() {
            let name = take_string(&mut version)?;
            take_string(&mut version)?;
            limits |= &name[..] == b"limits@openssh.com";
        }
        if limits {
            let id = c.id();
            let at = c.begin(FXP_EXTENDED, Some(id));
            put_string(&mut c.header, b"limits@openssh.com");
            c.end_request(at, None);
            c.flush().await?;
            match parse(c.packet().await?)? {
                (rid, Reply::Extended(mut body)) if rid == id => {
                    let _max_packet = take_u64(&mut body)?;
                    let max_read = take_u64(&mut body)?;
                    let max_write = take_u64(&mut body)?;
                    let clamp = |v: u64| match v {
                        0 => DEFAULT_CHUNK,
                        v => v.min(u64::from(MAX_CHUNK)) as u32,
                    };
                    c.read_len = clamp(max_read);
                    c.write_len = clamp(max_write);
                }
                _ => return Err("bad reply to limits@openssh.com".into()),
            }
        }
        if let Some(chunk) = chunk {
            c.read_len = chunk;
            c.write_len = chunk;
        }
        Ok(c)
    }

    fn id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Starts a request in `header`: returns where its length goes.
    fn begin(&mut self, kind: u8, id: Option<u32>) -> usize {
        let at = self.header.len();
        self.header.put_u32(0);
        self.header.put_u8(kind);
        if let Some(id) = id {
            self.header.put_u32(id);
        }
        at
    }

    /// Ends the request begun at `at`, followed by `data` (a WRITE's bytes, not copied).
    fn end_request(&mut self, at: usize, data: Option<Bytes>) {
        let extra = data.as_ref().map_or(0, |d| d.len());
        let len = (self.header.len() - at - 4 + extra) as u32;
        self.header[at..at + 4].copy_from_slice(&len.to_be_bytes());
        if let Some(d) = data {
            self.out.push(self.header.split().freeze());
            self.out.push(d);
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        if !self.header.is_empty() {
            self.out.push(self.header.split().freeze());
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.send.write_all_chunks(&mut self.out).await;
        self.out.clear();
        r.map_err(|e| format!("write: {e}"))
    }

    /// The next whole packet, reading as needed.
    async fn packet(&mut self) -> Result<Bytes, String> {
        loop {
            if let Some(p) = self.frames.next_packet().map_err(|e| e.to_string())? {
                return Ok(p);
            }
            match self.recv.read_chunk(usize::MAX).await {
                Ok(Some(chunk)) => self.frames.feed_bytes(chunk),
                Ok(None) => return Err("the server ended the session".into()),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Requests of one kind on each path (MKDIR, REMOVE, RMDIR), many in flight; with
    /// `strict`, any status but OK fails.
    async fn simple(&mut self, kind: u8, paths: &[String], strict: bool) -> Result<(), String> {
        let mut pending = 0usize;
        let mut next = paths.iter();
        loop {
            while pending < 64 {
                let Some(path) = next.next() else { break };
                let id = self.id();
                let at = self.begin(kind, Some(id));
                put_string(&mut self.header, path.as_bytes());
                if kind == FXP_MKDIR {
                    self.header.put_u32(0); // no attributes
                }
                self.end_request(at, None);
                pending += 1;
            }
            if pending == 0 {
                return Ok(());
            }
            self.flush().await?;
            match parse(self.packet().await?)? {
                (_, Reply::Status { code, message }) => {
                    if strict && code != FX_OK {
                        return Err(format!("status {code}: {message}"));
                    }
                }
                _ => return Err("unexpected reply".into()),
            }
            pending -= 1;
        }
    }

    /// Transfers `files` one way: `files_at_once` files at a time, `requests` READs or
    /// WRITEs in flight per file. With a tally, each file done before `end` is recorded
    /// (its time from OPEN to CLOSE's reply, and its size); past `end` it stops with an
    /// error.
    async fn transfer(
        &mut self,
        op: SftpOp,
        files: &[(String, u64)],
        requests: usize,
        files_at_once: usize,
        mut tally: Option<(&mut Tally, Instant)>,
    ) -> Result<(), String> {
        let mut pending: HashMap<u32, (usize, Pending)> = HashMap::new();
        let mut jobs: HashMap<usize, Job> = HashMap::new();
        let mut queue = files.iter().enumerate();
        let end = tally.as_ref().map(|(_, e)| *e);
        loop {
            while jobs.len() < files_at_once {
                let Some((i, (path, size))) = queue.next() else {
                    break;
                };
                let id = self.id();
                let at = self.begin(FXP_OPEN, Some(id));
                put_string(&mut self.header, path.as_bytes());
                self.header.put_u32(match op {
                    SftpOp::Get => FXF_READ,
                    SftpOp::Put => FXF_WRITE | FXF_CREAT | FXF_TRUNC,
                });
                self.header.put_u32(0); // no attributes
                self.end_request(at, None);
                pending.insert(id, (i, Pending::Open));
                jobs.insert(
                    i,
                    Job {
                        path: i,
                        size: *size,
                        handle: None,
                        next: 0,
                        retry: Vec::new(),
                        moved: 0,
                        in_flight: 0,
                        closing: false,
                        started: Instant::now(),
                    },
                );
            }
            for job in jobs.values_mut() {
                let Some(handle) = job.handle.clone() else {
                    continue;
                };
                if job.closing {
                    continue;
                }
                while job.in_flight < requests {
                    let (offset, len) = match job.retry.pop() {
                        Some(r) => r,
                        None if job.next < job.size => {
                            let chunk = match op {
                                SftpOp::Get => self.read_len,
                                SftpOp::Put => self.write_len,
                            };
                            let len = (job.size - job.next).min(u64::from(chunk)) as u32;
                            job.next += u64::from(len);
                            (job.next - u64::from(len), len)
                        }
                        None => break,
                    };
                    let id = self.id();
                    pending.insert(id, (job.path, Pending::Io { offset, len }));
                    job.in_flight += 1;
                    self.io_request(op, id, &handle, offset, len);
                }
                if job.in_flight == 0 && job.retry.is_empty() && job.next >= job.size {
                    let id = self.id();
                    let at = self.begin(FXP_CLOSE, Some(id));
                    put_string(&mut self.header, &handle);
                    self.end_request(at, None);
                    pending.insert(id, (job.path, Pending::Close));
                    job.closing = true;
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            self.flush().await?;
            let first = match end {
                Some(end) => {
                    let deadline = monoio::time::Instant::from_std(end);
                    monoio::time::timeout_at(deadline, self.packet())
                        .await
                        .map_err(|_| "the run ended before the transfer did".to_string())??
                }
                None => self.packet().await?,
            };
            // every reply already here before asking for more
            let mut next = Some(first);
            while let Some(p) = next {
                let (id, reply) = parse(p)?;
                let (path, what) = pending
                    .remove(&id)
                    .ok_or_else(|| format!("reply to unknown request {id}"))?;
                let job = jobs.get_mut(&path).ok_or("reply for a finished file")?;
                match (what, reply) {
                    (Pending::Open, Reply::Handle(h)) => job.handle = Some(h),
                    (Pending::Io { offset, len }, Reply::Data(data)) if op == SftpOp::Get => {
                        // every file holds UPLOAD's bytes (the put that made it wrote them)
                        if data.is_empty()
                            || data.len() > len as usize
                            || data.iter().any(|b| *b != UPLOAD[0])
                        {
                            return Err(format!(
                                "{}: read at {offset} returned {} bytes not written there",
                                files[path].0,
                                data.len()
                            ));
                        }
                        let n = data.len() as u32;
                        job.moved += u64::from(n);
                        job.in_flight -= 1;
                        if n < len {
                            job.retry.push((offset + u64::from(n), len - n));
                        }
                    }
                    (Pending::Io { len, .. }, Reply::Status { code: FX_OK, .. })
                        if op == SftpOp::Put =>
                    {
                        job.moved += u64::from(len);
                        job.in_flight -= 1;
                    }
                    (Pending::Close, Reply::Status { code: FX_OK, .. }) => {
                        let job = jobs.remove(&path).ok_or("closed twice")?;
                        if job.moved != job.size {
                            return Err(format!(
                                "{}: moved {} of {} bytes",
                                files[path].0, job.moved, job.size
                            ));
                        }
                        if let Some((t, _)) = tally.as_mut() {
                            t.record(job.started.elapsed(), job.size);
                        }
                    }
                    (_, Reply::Status { code: FX_EOF, .. }) => {
                        return Err(format!("{}: shorter than expected", files[path].0))
                    }
                    (_, Reply::Status { code, message }) => {
                        return Err(format!("{}: status {code}: {message}", files[path].0))
                    }
                    _ => return Err(format!("{}: unexpected reply", files[path].0)),
                }
                next = self.frames.next_packet().map_err(|e| e.to_string())?;
            }
        }
    }

    /// A READ, or a WRITE of `len` bytes of `UPLOAD` (sent as a slice, not copied).
    fn io_request(&mut self, op: SftpOp, id: u32, handle: &[u8], offset: u64, len: u32) {
        match op {
            SftpOp::Get => {
                let at = self.begin(FXP_READ, Some(id));
                put_string(&mut self.header, handle);
                self.header.put_u64(offset);
                self.header.put_u32(len);
                self.end_request(at, None);
            }
            SftpOp::Put => {
                let at = self.begin(FXP_WRITE, Some(id));
                put_string(&mut self.header, handle);
                self.header.put_u64(offset);
                self.header.put_u32(len);
                let from = (offset % UPLOAD.len() as u64) as usize;
                let to = (from + len as usize).min(UPLOAD.len());
                let mut data = Bytes::from_static(&UPLOAD[from..to]);
                if data.len() < len as usize {
                    // wraps around the buffer: one copy for this rare request
                    let mut joined = BytesMut::with_capacity(len as usize);
                    joined.extend_from_slice(&data);
                    joined.extend_from_slice(&UPLOAD[..len as usize - data.len()]);
                    data = joined.freeze();
                }
                self.end_request(at, Some(data));
            }
        }
    }

    /// Ends the session cleanly: FIN, then the server's FIN.
    async fn end(mut self) -> Result<(), String> {
        self.send.finish().map_err(|e| format!("finish: {e}"))?;
        loop {
            match self.recv.read_chunk(usize::MAX).await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// Splits a reply into its id and what it says.
fn parse(mut p: Bytes) -> Result<(u32, Reply), String> {
    if p.is_empty() {
        return Err("empty packet".into());
    }
    let kind = p.get_u8();
    let id = take_u32(&mut p)?;
    let reply = match kind {
        FXP_STATUS => {
            let code = take_u32(&mut p)?;
            let message = take_string(&mut p)
                .map(|m| String::from_utf8_lossy(&m).into_owned())
                .unwrap_or_default();
            Reply::Status { code, message }
        }
        FXP_HANDLE => Reply::Handle(take_string(&mut p)?),
        FXP_DATA => Reply::Data(take_string(&mut p)?),
        FXP_EXTENDED_REPLY => Reply::Extended(p),
        other => return Err(format!("unexpected packet type {other}")),
    };
    Ok((id, reply))
}

fn take_u32(b: &mut Bytes) -> Result<u32, String> {
    if b.remaining() < 4 {
        return Err("truncated packet".into());
    }
    Ok(b.get_u32())
}

fn take_u64(b: &mut Bytes) -> Result<u64, String> {
    if b.remaining() < 8 {
        return Err("truncated packet".into());
    }
    Ok(b.get_u64())
}

fn take_string(b: &mut Bytes) -> Result<Bytes, String> {
    let n = take_u32(b)? as usize;
    if b.remaining() < n {
        return Err("truncated string".into());
    }
    Ok(b.split_to(n))
}

fn put_string(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(s.len() as u32);
    b.put_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_and_truncation_is_an_error() {
        let mut status = BytesMut::new();
        status.put_u8(FXP_STATUS);
        status.put_u32(7);
        status.put_u32(FX_EOF);
        put_string(&mut status, b"end of file");
        put_string(&mut status, b"");
        match parse(status.clone().freeze()) {
            Ok((
                7,
                Reply::Status {
                    code: FX_EOF,
                    message,
                },
            )) => assert_eq!(message, "end of file"),
            _ => panic!("status did not parse"),
        }
        let mut data = BytesMut::new();
        data.put_u8(FXP_DATA);
        data.put_u32(9);
        put_string(&mut data, &[1, 2, 3]);
        let data = data.freeze();
        assert!(matches!(parse(data.clone()), Ok((9, Reply::Data(d))) if d[..] == [1, 2, 3]));
        assert!(parse(data.slice(..data.len() - 1)).is_err());
        assert!(parse(Bytes::new()).is_err());
    }
}
