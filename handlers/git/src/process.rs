//! The `git` backend: the installed `git upload-pack` / `git receive-pack` serve the
//! conversation, one process per stream, as git-daemon runs them.
//!
//! The child's stdin and stdout are one end of a Unix socket pair; the worker holds the
//! other end as a monoio `UnixStream`, so its reads and writes go through the worker's
//! event loop (io_uring or epoll) like any socket and the packet path never blocks on
//! the child. Two pumps move bytes:
//!
//! ```text
//!  QUIC RecvStream ──read_chunk──▶ socket ──▶ git stdin      (FIN → shutdown(SHUT_WR))
//!  QUIC SendStream ◀─write_chunk── socket ◀── git stdout     (EOF → FIN)
//!                                  socket ◀── git stderr     (kept for the log, bounded)
//! ```
//!
//! Back-pressure is the socket buffer's and QUIC's: a pump waits on a full side before it
//! reads more from the other. When the peer resets its side of the stream, or the
//! connection is lost, git's stdin ends, as when a TCP client goes away: git fails the
//! command and removes a push's quarantine itself. If it has not exited `exit_grace`
//! later, or when the peer stops reading, its process group gets SIGTERM, then SIGKILL. Spawning itself (fork/exec) is a short synchronous call.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::pin::pin;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use alknet_runtime::{Bytes, RecvStream, SendStream, VarInt};
use bytes::BytesMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};

use crate::request::Service;

/// Bytes read from the child (or the QUIC stream) at once.
pub const PUMP_CHUNK: usize = 64 * 1024;

/// Application error code of a stream reset because the command failed midway.
pub const GIT_ABORT_CODE: u32 = 0x1;

/// How one command is run.
#[derive(Debug, Clone)]
pub struct GitCommand {
    pub program: PathBuf,
    pub service: Service,
    /// The repository's canonical directory.
    pub dir: PathBuf,
    /// `version=N` from the request, passed on as `GIT_PROTOCOL` (as git-daemon does).
    pub version: Option<u8>,
    /// For receive-pack: allow non-fast-forward updates.
    pub allow_force_push: bool,
    /// For upload-pack: serve partial clones (`[git] allow_filter`).
    pub allow_filter: bool,
    /// For upload-pack: protocol v2 `want-ref` (`[git] allow_want_ref`, off unless set:
    /// [`crate::GIT_BACKEND_ALLOW_WANT_REF`]).
    pub allow_want_ref: bool,
    /// For the hooks and the log: who runs it.
    pub identity: Option<String>,
    pub stderr_log_limit: usize,
    pub exit_grace: Duration,
}

impl GitCommand {
    /// The `std::process::Command` for it (stdio not set yet).
    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program);
        if self.service == Service::ReceivePack {
            // refused by receive-pack itself, before any ref moves ("non-fast-forward")
            cmd.arg("-c").arg(format!(
                "receive.denyNonFastForwards={}",
                !self.allow_force_push
            ));
        }
        if self.service == Service::UploadPack {
            // what `[git]` decides, per invocation (the served repository's config is
            // never written), set both ways so that the repository's own config does not
            // turn on what the server's operator turned off. As the gix backend: with
            // filters on, a partial clone's later fetches of missing objects by id are
            // allowed (v0 clients ask only when `allow-*-sha1-in-want` is advertised)
            for (key, on) in [
                ("uploadpack.allowFilter", self.allow_filter),
                ("uploadpack.allowAnySHA1InWant", self.allow_filter),
                ("uploadpack.allowRefInWant", self.allow_want_ref),
            ] {
                cmd.arg("-c").arg(format!("{key}={on}"));
            }
        }
        cmd.arg(self.service.subcommand());
        if self.service == Service::UploadPack {
            // exactly this directory: no `.git` suffix or `/.git` guessing by git
            cmd.arg("--strict");
        }
        cmd.arg(&self.dir);
        cmd.current_dir(&self.dir);
        // what a client's environment could have steered: none of it reaches git
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_NAMESPACE",
            "GIT_PROTOCOL",
            "GIT_CONFIG_PARAMETERS",
            "GIT_CONFIG_COUNT",
        ] {
            cmd.env_remove(var);
        }
        if let Some(v @ 1..=2) = self.version {
            cmd.env("GIT_PROTOCOL", format!("version={v}"));
        }
        if let Some(id) = &self.identity {
            cmd.env("ALKNET_IDENTITY", id);
        }
        // its own process group: a terminal's ^C to the server does not reach it directly
        cmd.process_group(0);
        cmd
    }
}

/// How a command ended.
#[derive(Debug)]
pub struct Outcome {
    pub status: Option<ExitStatus>,
    /// The peer went away (reset, stop, connection lost) before the command finished.
    pub aborted: bool,
    pub stderr: String,
}

/// A started child with the worker's ends of its stdio sockets.
pub struct Spawned {
    child: ChildGuard,
    sock: monoio::net::UnixStream,
    err_sock: monoio::net::UnixStream,
    stderr_log_limit: usize,
    exit_grace: Duration,
}

/// Spawns `cmd` (a short synchronous fork/exec). Must be called on a monoio worker.
pub fn spawn(cmd: &GitCommand) -> io::Result<Spawned> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let (err_ours, err_theirs) = std::os::unix::net::UnixStream::pair()?;
    let child = {
        let mut command = cmd.command();
        command
            .stdin(Stdio::from(OwnedFd::from(theirs.try_clone()?)))
            .stdout(Stdio::from(OwnedFd::from(theirs)))
            .stderr(Stdio::from(OwnedFd::from(err_theirs)));
        command.spawn()?
        // `command` drops here, closing our copies of the child's ends: EOF works
    };
    let child = ChildGuard(Some(child));
    // monoio's epoll driver needs non-blocking fds (from_std does not set it): a blocking
    // read there would stall the whole worker
    ours.set_nonblocking(true)?;
    err_ours.set_nonblocking(true)?;
    Ok(Spawned {
        child,
        sock: monoio::net::UnixStream::from_std(ours)?,
        err_sock: monoio::net::UnixStream::from_std(err_ours)?,
        stderr_log_limit: cmd.stderr_log_limit,
        exit_grace: cmd.exit_grace,
    })
}

impl Spawned {
    /// Runs the child on the stream: `leftover` (bytes that came behind the request line)
    /// first, then the rest of `recv`. Returns when the child has exited.
    pub async fn serve(self, send: SendStream, recv: RecvStream, leftover: Bytes) -> Outcome {
        let Spawned {
            mut child,
            sock,
            err_sock,
            stderr_log_limit,
            exit_grace,
        } = self;
        let (mut send, mut recv) = (send, recv);
        let (mut rd, mut wr) = sock.into_split();

        // QUIC → child stdin. Ok(()) on a clean end (FIN, or the child stopped reading).
        let upload = async {
            if !leftover.is_empty() {
                let (res, _) = wr.write_all(leftover).await;
                if res.is_err() {
                    return Ok(());
                }
            }
            loop {
                match recv.read_chunk(PUMP_CHUNK).await {
                    Ok(Some(chunk)) => {
                        let (res, _) = wr.write_all(chunk).await;
                        if res.is_err() {
                            // the child closed its stdin (it is done): stop the peer
                            let _ = recv.stop(VarInt::from_u32(0));
                            return Ok(());
                        }
                    }
                    Ok(None) => {
                        let _ = wr.shutdown().await;
                        return Ok(());
                    }
                    Err(e) => {
                        // end of input: git fails the command as on a dropped TCP
                        // connection and cleans up after itself (a push's quarantine)
                        let _ = wr.shutdown().await;
                        return Err(e);
                    }
                }
            }
        };
        // child stdout → QUIC. Ok(true) on EOF (the child is done), Ok(false) if the peer
        // stopped the stream.
        let download = async {
            let mut buf = BytesMut::with_capacity(PUMP_CHUNK);
            loop {
                if buf.capacity() - buf.len() < PUMP_CHUNK / 4 {
                    buf = BytesMut::with_capacity(PUMP_CHUNK);
                }
                let (res, b) = rd.read(buf).await;
                buf = b;
                match res {
                    Ok(0) => return true,
                    Ok(_) => {
                        let chunk = buf.split().freeze();
                        if send.write_chunk(chunk).await.is_err() {
                            return false;
                        }
                    }
                    Err(e) => {
                        tracing::debug!("git: reading the child's stdout: {e}");
                        return false;
                    }
                }
            }
        };
        let stderr = read_bounded(err_sock, stderr_log_limit);

        // the pumps borrow the streams: they are dropped at the end of this block
        let (aborted, stderr_text) = {
            let mut upload = pin!(upload);
            let mut download = pin!(download);
            let mut stderr = pin!(stderr);
            let mut aborted = false;
            let mut upload_done = false;
            let mut stderr_text = None;
            // after an abort, how long git has to notice its input ended and exit
            let mut deadline = None;
            let child_done = loop {
                let grace_over = async {
                    match deadline {
                        Some(d) => monoio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                monoio::select! {
                    d = &mut download => break d,
                    u = &mut upload, if !upload_done => {
                        upload_done = true;
                        if let Err(e) = u {
                            tracing::debug!("git: stream read ended: {e}");
                            aborted = true;
                            deadline = Some(monoio::time::Instant::now() + exit_grace);
                        }
                    }
                    t = &mut stderr, if stderr_text.is_none() => stderr_text = Some(t),
                    _ = grace_over => {
                        terminate(child.get());
                        deadline = None;
                    }
                }
            };
            if !child_done {
                aborted = true;
                terminate(child.get());
            }
            let stderr_text = match stderr_text {
                Some(t) => t,
                None => monoio::time::timeout(exit_grace, stderr)
                    .await
                    .unwrap_or_default(),
            };
            (aborted, stderr_text)
        };
        let status = reap(child.get(), exit_grace).await;
        child.0 = None;
        if aborted {
            let _ = send.reset(VarInt::from_u32(GIT_ABORT_CODE));
        } else {
            let _ = send.finish();
            // keep the stream until the peer has it all (bounded by the connection's life)
            let _ = monoio::time::timeout(exit_grace, send.stopped()).await;
        }
        Outcome {
            status,
            aborted,
            stderr: stderr_text,
        }
    }
}

/// Reads a stream to its end, keeping the first `limit` bytes as (lossy) text.
async fn read_bounded(mut sock: monoio::net::UnixStream, limit: usize) -> String {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let (res, b) = sock.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).trim_end().to_string()
}

/// Asks the child to stop with SIGTERM: git's handlers then remove a push's quarantine
/// directory before it exits (SIGKILL would leave it behind). [`reap`] kills what does
/// not exit within the grace period.
fn terminate(child: &Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) on the process group of a child we spawned as its leader
    // (`process_group(0)`) and have not reaped yet, so the id cannot have been reused.
    // The group: receive-pack's index-pack must stop too.
    unsafe {
        libc::kill(-pid, libc::SIGTERM);
    }
}

/// Waits (without blocking the worker) for the child to exit; kills it after `grace`.
async fn reap(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let deadline = std::time::Instant::now() + grace;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("git: waiting for the child: {e}");
                return None;
            }
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(pid = child.id(), "git: child still running; killing it");
            let _ = child.kill();
            // after SIGKILL the exit is immediate
            return child.wait().ok();
        }
        monoio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Owns the child until it is reaped. If the task serving it is dropped first (the
/// server shuts down, the connection's task ends), the child is killed and reaped on a
/// short-lived thread, so neither a process nor a zombie is left behind.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn get(&mut self) -> &mut Child {
        self.0.as_mut().expect("the child is taken only by reap")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            std::thread::spawn(move || child.wait());
        }
    }
}

/// Describes an exit status for logs (`exit 128`, `signal 9`).
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(service: Service, allow: bool) -> Vec<String> {
        let cmd = GitCommand {
            program: PathBuf::from("git"),
            service,
            dir: PathBuf::from("/srv/git/r.git"),
            version: Some(2),
            allow_force_push: false,
            allow_filter: allow,
            allow_want_ref: allow,
            identity: None,
            stderr_log_limit: 0,
            exit_grace: Duration::ZERO,
        };
        cmd.command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// `[git] allow_filter` / `allow_want_ref` reach upload-pack as `-c` options, both
    /// ways, before the subcommand (where git reads them); receive-pack gets none.
    #[test]
    fn upload_pack_gets_the_filter_and_want_ref_switches() {
        let on = command(Service::UploadPack, true);
        assert_eq!(
            on,
            [
                "-c",
                "uploadpack.allowFilter=true",
                "-c",
                "uploadpack.allowAnySHA1InWant=true",
                "-c",
                "uploadpack.allowRefInWant=true",
                "upload-pack",
                "--strict",
                "/srv/git/r.git"
            ]
        );
        let off = command(Service::UploadPack, false);
        assert!(off.contains(&"uploadpack.allowFilter=false".to_string()));
        assert!(off.contains(&"uploadpack.allowAnySHA1InWant=false".to_string()));
        assert!(off.contains(&"uploadpack.allowRefInWant=false".to_string()));
        let push = command(Service::ReceivePack, true);
        assert!(
            !push.iter().any(|a| a.starts_with("uploadpack.")),
            "{push:?}"
        );
    }
}
