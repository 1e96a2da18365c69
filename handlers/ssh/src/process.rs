//! Running `exec` commands and shells for a session channel: on pipes (stdout as data,
//! stderr as extended data 1) or on a pty, as the server's own user.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use alknet_runtime::pipe::RingPipe;
use alknet_runtime::rt::DriverKind;
use futures_util::future::{AbortHandle, Abortable};
use russh::server::{Handle, Msg};
use russh::{ChannelId, ChannelReadHalf, ChannelWriteHalf};
use rustix::process::{Pid, Signal};
use tokio::process::Child;
use tokio::sync::oneshot;

use crate::flow::Backlog;
use crate::pumps::{pump_input, pump_output, pump_output_ring, OnEof, OUTPUT_CHUNK};

/// After a hang-up (the channel or the session went away while the process ran), how long
/// it has to exit after SIGHUP before it is killed.
pub const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// Size of the buffers a command's output is read into on a worker's ring (each read
/// takes what the pipe holds, at most its 64 KiB; a buffer is shared by the reads that fit
/// and replaced when less than [`OUTPUT_CHUNK`] is left).
const OUTPUT_RING_BUFFER: usize = 128 * 1024;

/// `ALKNET_SSH_RING_PIPES=0` leaves commands' output to the tokio reactor on workers too
/// (for A/B runs, as `ALKNET_DRIVER=legacy` does for the driver).
pub const RING_PIPES_ENV: &str = "ALKNET_SSH_RING_PIPES";

/// `PATH` for sessions when the server has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A `pty-req`: terminal type, size and the client's terminal modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyRequest {
    pub term: String,
    pub cols: u16,
    pub rows: u16,
    pub pix_width: u16,
    pub pix_height: u16,
    /// Applied to the pty before the command starts (see `crate::termmodes`).
    pub modes: Vec<(russh::Pty, u32)>,
}

/// What to run and how.
#[derive(Debug)]
pub struct Launch {
    pub shell: PathBuf,
    /// `Some`: `SHELL -c COMMAND` (exec); `None`: a login shell (shell).
    pub command: Option<Vec<u8>>,
    pub env: Vec<(String, String)>,
    pub pty: Option<PtyRequest>,
    /// Who asked, for the child's environment (`ALKNET_IDENTITY`) and the logs.
    pub identity: String,
    /// The client's address and the server's it reached, for `SSH_CLIENT` and
    /// `SSH_CONNECTION`.
    pub remote: SocketAddr,
    pub local: Option<SocketAddr>,
    /// The forwarded agent's socket, for `SSH_AUTH_SOCK`.
    pub agent: Option<PathBuf>,
    /// The forwarded X display and its authority file, for `DISPLAY` and `XAUTHORITY`.
    pub x11: Option<(String, PathBuf)>,
}

/// A started process: what the session handler keeps to signal and resize it. Dropping it
/// hangs the process up.
#[derive(Debug)]
pub struct Running {
    pid: Option<Pid>,
    pty: Option<Arc<OwnedFd>>,
    _hangup: oneshot::Sender<()>,
}

impl Running {
    /// Delivers `sig` to the process group (the shell and what it started).
    pub fn signal(&self, sig: Signal) -> std::io::Result<()> {
        let pid = self
            .pid
            .ok_or_else(|| std::io::Error::other("the process has no pid (it already exited)"))?;
        rustix::process::kill_process_group(pid, sig).map_err(std::io::Error::from)
    }

    /// Applies a `window-change`; `false` when there is no pty.
    pub fn resize(&self, cols: u16, rows: u16, pix_width: u16, pix_height: u16) -> bool {
        let Some(fd) = &self.pty else {
            return false;
        };
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: pix_width,
            ws_ypixel: pix_height,
        };
        rustix::termios::tcsetwinsize(fd.as_ref(), size).is_ok()
    }
}

/// The environment of a session's process: a fresh one, as sshd builds, not the server's.
fn environment(launch: &Launch) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    for (k, default) in [
        ("HOME", "/"),
        ("USER", ""),
        ("LOGNAME", ""),
        ("PATH", DEFAULT_PATH),
    ] {
        match std::env::var_os(k) {
            Some(v) => env.push((k.into(), v)),
            None if !default.is_empty() => env.push((k.into(), default.into())),
            None => {}
        }
    }
    env.push(("SHELL".into(), launch.shell.clone().into_os_string()));
    env.push(("ALKNET_IDENTITY".into(), launch.identity.clone().into()));
    if let Some(pty) = &launch.pty {
        env.push(("TERM".into(), pty.term.clone().into()));
    }
    // client-requested names were checked against [ssh].env_allow
    for (k, v) in &launch.env {
        env.push((k.into(), v.into()));
    }
    // last, so that no env request replaces them (as sshd sets them after the client's);
    // scripts and shells read them to tell a remote session
    let (client, port) = (launch.remote.ip().to_canonical(), launch.remote.port());
    let (server, server_port) = launch
        .local
        .map_or((None, 0), |l| (Some(l.ip().to_canonical()), l.port()));
    env.push((
        "SSH_CLIENT".into(),
        format!("{client} {port} {server_port}").into(),
    ));
    if let Some(server) = server {
        env.push((
            "SSH_CONNECTION".into(),
            format!("{client} {port} {server} {server_port}").into(),
        ));
    }
    if let Some(agent) = &launch.agent {
        env.push(("SSH_AUTH_SOCK".into(), agent.clone().into_os_string()));
    }
    if let Some((display, authority)) = &launch.x11 {
        env.push(("DISPLAY".into(), display.into()));
        env.push(("XAUTHORITY".into(), authority.clone().into_os_string()));
    }
    env
}

/// The login-shell `argv[0]`: `-sh` for `/bin/sh`, as sshd and login(1) do.
fn login_name(shell: &Path) -> OsString {
    let mut name = OsString::from("-");
    name.push(shell.file_name().unwrap_or(shell.as_os_str()));
    name
}

fn working_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_dir())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Starts `launch` for channel `id`: the child, the pumps between it and the channel, and
/// a supervisor that reports the exit and closes the channel. Must run inside the tokio
/// runtime (russh callbacks do).
pub fn start(
    launch: Launch,
    id: ChannelId,
    read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    handle: Handle,
    backlog: Backlog,
) -> std::io::Result<Running> {
    let env = environment(&launch);
    let (hangup_tx, hangup_rx) = oneshot::channel();
    let write = Arc::new(write);
    let label = format!("{} {:?}", launch.identity, id);
    match &launch.pty {
        None => {
            let mut cmd = tokio::process::Command::new(&launch.shell);
            match &launch.command {
                Some(c) => {
                    cmd.arg("-c").arg(OsStr::from_bytes(c));
                }
                None => {
                    cmd.arg0(login_name(&launch.shell));
                }
            }
            cmd.env_clear()
                .envs(env)
                .current_dir(working_dir())
                // tokio's pipe: a write goes to the kernel at once while the pipe has room
                // (an io_uring write would wait for the worker's next turn of the ring,
                // one chunk per turn), and only a full pipe waits for the reactor
                .stdin(Stdio::piped())
                // its own process group, so signals and hang-ups reach what it starts
                .process_group(0)
                .kill_on_drop(true);
            // on a worker, the command's pipes are read and written by its ring; elsewhere
            // (the bridge placement, the legacy driver) through the tokio reactor's thread
            let ring = pipes_for_the_ring(&mut cmd);
            if ring.is_none() {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            let mut child = cmd.spawn()?;
            // the Command holds the child's ends of the ring's pipes; they must close here,
            // or the pumps would never see EOF
            drop(cmd);
            let pid = child.id().and_then(|p| Pid::from_raw(p as i32));
            let stdin = child.stdin.take();
            // beside the session: its input reaches the pipe without a thread hop while
            // the pipe has room
            crate::bridge::spawn_session_task(pump_input(read, stdin, OnEof::Close, backlog));
            let out_write = write.clone();
            let outputs = match ring {
                Some(RingPipes { stdout, stderr }) => {
                    let (task, outputs) = Outputs::watch(async move {
                        let out = pump_output_ring(stdout, &out_write, None);
                        let err = pump_output_ring(stderr, &out_write, Some(1));
                        let _ = futures_util::future::join(out, err).await;
                    });
                    crate::bridge::spawn_worker_task(task);
                    outputs
                }
                None => {
                    let stdout = child.stdout.take();
                    let stderr = child.stderr.take();
                    let (task, outputs) = Outputs::watch(async move {
                        let out = async {
                            if let Some(s) = stdout {
                                let _ = pump_output(s, &out_write, None).await;
                            }
                        };
                        let err = async {
                            if let Some(s) = stderr {
                                let _ = pump_output(s, &out_write, Some(1)).await;
                            }
                        };
                        tokio::join!(out, err);
                    });
                    tokio::spawn(task);
                    outputs
                }
            };
            tokio::spawn(supervise(
                child, pid, outputs, write, handle, id, hangup_rx, label,
            ));
            Ok(Running {
                pid,
                pty: None,
                _hangup: hangup_tx,
            })
        }
        Some(req) => {
            let (pty, pts) = pty_process::open().map_err(std::io::Error::other)?;
            pty.resize(pty_process::Size::new_with_pixel(
                req.rows,
                req.cols,
                req.pix_width,
                req.pix_height,
            ))
            .map_err(std::io::Error::other)?;
            if !req.modes.is_empty() {
                let set = rustix::termios::tcgetattr(&pts).and_then(|mut t| {
                    crate::termmodes::apply(&mut t, &req.modes);
                    rustix::termios::tcsetattr(&pts, rustix::termios::OptionalActions::Now, &t)
                });
                if let Err(e) = set {
                    // as sshd: the session goes on with the pty's own modes
                    tracing::warn!("ssh: setting the client's terminal modes: {e}");
                }
            }
            let tty = rustix::termios::ttyname(&pts, Vec::new())
                .map(|name| OsString::from_vec(name.into_bytes()));
            let mut cmd = pty_process::Command::new(&launch.shell)
                .env_clear()
                .envs(env)
                .current_dir(working_dir())
                .kill_on_drop(true);
            if let Ok(tty) = tty {
                cmd = cmd.env("SSH_TTY", tty);
            }
            cmd = match &launch.command {
                Some(c) => cmd.arg("-c").arg(OsStr::from_bytes(c)),
                None => cmd.arg0(login_name(&launch.shell)),
            };
            // the child becomes a session leader with the pty as controlling terminal
            let child = cmd.spawn(pts).map_err(std::io::Error::other)?;
            let pid = child.id().and_then(|p| Pid::from_raw(p as i32));
            let resizer = std::os::fd::AsFd::as_fd(&pty).try_clone_to_owned()?;
            let (pty_read, pty_write) = pty.into_split();
            crate::bridge::spawn_session_task(pump_input(
                read,
                Some(pty_write),
                OnEof::Keep,
                backlog,
            ));
            let out_write = write.clone();
            // a terminal stays with the reactor: io_uring would read it on a kernel
            // worker thread per read
            let (task, outputs) = Outputs::watch(async move {
                let _ = pump_output(pty_read, &out_write, None).await;
            });
            tokio::spawn(task);
            tokio::spawn(supervise(
                child, pid, outputs, write, handle, id, hangup_rx, label,
            ));
            Ok(Running {
                pid,
                pty: Some(Arc::new(resizer)),
                _hangup: hangup_tx,
            })
        }
    }
}

/// Our ends of a command's output pipes, read by the worker's ring.
struct RingPipes {
    stdout: RingPipe,
    stderr: RingPipe,
}

/// Fresh pipes for a command's stdout and stderr, read with io_uring on this thread, if
/// this is a worker on the io_uring driver ([`RingPipe::new`]): their write ends go to
/// `cmd`. `None` elsewhere, with `cmd` untouched: the command then gets tokio's pipes.
fn pipes_for_the_ring(cmd: &mut tokio::process::Command) -> Option<RingPipes> {
    static SWITCHED_OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *SWITCHED_OFF.get_or_init(|| std::env::var(RING_PIPES_ENV).is_ok_and(|v| v == "0"));
    if off || alknet_runtime::rt::current_driver() != Some(DriverKind::IoUring) {
        return None;
    }
    let ring = |r: std::io::PipeReader| {
        RingPipe::new(OwnedFd::from(r), OUTPUT_RING_BUFFER, OUTPUT_CHUNK).ok()
    };
    let (out_r, stdout_end) = std::io::pipe().ok()?;
    let (err_r, stderr_end) = std::io::pipe().ok()?;
    let pipes = RingPipes {
        stdout: ring(out_r)?,
        stderr: ring(err_r)?,
    };
    cmd.stdout(stdout_end).stderr(stderr_end);
    Some(pipes)
}

/// The pumps copying a process's output to its channel, wherever they run: the
/// supervisor waits for them to finish (`done`) before it reports the exit, and stops them
/// (`abort`) on a hang-up.
struct Outputs {
    done: oneshot::Receiver<()>,
    abort: AbortHandle,
}

impl Outputs {
    /// The task to spawn for `pumps`, and its [`Outputs`].
    fn watch(pumps: impl Future<Output = ()>) -> (impl Future<Output = ()>, Outputs) {
        let (done_tx, done) = oneshot::channel();
        let (abort, registration) = AbortHandle::new_pair();
        let task = async move {
            let _ = Abortable::new(pumps, registration).await;
            let _ = done_tx.send(());
        };
        (task, Outputs { done, abort })
    }
}

/// Waits for the child and its output, then sends `exit-status` (or `exit-signal`), EOF
/// and close. A hang-up instead sends SIGHUP, then SIGKILL after [`HANGUP_GRACE`].
#[allow(clippy::too_many_arguments)]
async fn supervise(
    mut child: Child,
    pid: Option<Pid>,
    mut outputs: Outputs,
    write: Arc<ChannelWriteHalf<Msg>>,
    handle: Handle,
    id: ChannelId,
    mut hangup: oneshot::Receiver<()>,
    label: String,
) {
    let status = tokio::select! {
        s = child.wait() => Some(s),
        _ = &mut hangup => None,
    };
    let Some(status) = status else {
        outputs.abort.abort();
        return hang_up(child, pid, &label).await;
    };
    // everything the process wrote goes out before its exit status
    tokio::select! {
        _ = &mut outputs.done => {}
        _ = &mut hangup => {
            outputs.abort.abort();
            return;
        }
    }
    match status {
        Ok(st) => {
            if let Some(code) = st.code() {
                let _ = write.exit_status(code as u32).await;
            } else if let Some(signo) = st.signal() {
                let _ = handle
                    .exit_signal_request(
                        id,
                        crate::signals::from_posix(signo),
                        st.core_dumped(),
                        String::new(),
                        String::new(),
                    )
                    .await;
            }
        }
        Err(e) => tracing::warn!("waiting for a session process: {e}"),
    }
    let _ = write.eof().await;
    let _ = write.close().await;
}

/// SIGHUP to the process group, then SIGKILL if it is still there after [`HANGUP_GRACE`].
async fn hang_up(mut child: Child, pid: Option<Pid>, label: &str) {
    tracing::debug!(session = %label, "hanging up the process");
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, Signal::HUP);
    }
    if tokio::time::timeout(HANGUP_GRACE, child.wait())
        .await
        .is_err()
    {
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_shells_get_a_dash() {
        assert_eq!(login_name(Path::new("/bin/sh")), OsString::from("-sh"));
        assert_eq!(
            login_name(Path::new("/usr/bin/bash")),
            OsString::from("-bash")
        );
    }

    #[test]
    fn the_environment_is_fresh_and_carries_allowed_names() {
        let launch = Launch {
            shell: "/bin/sh".into(),
            command: None,
            env: vec![("LANG".into(), "C.UTF-8".into())],
            pty: Some(PtyRequest {
                term: "xterm".into(),
                cols: 80,
                rows: 24,
                pix_width: 0,
                pix_height: 0,
                modes: Vec::new(),
            }),
            identity: "alice".into(),
            remote: "[::ffff:192.0.2.7]:50000".parse().expect("addr"),
            local: Some("[::1]:4433".parse().expect("addr")),
            agent: None,
            x11: Some(("localhost:10.0".into(), "/tmp/x/Xauthority".into())),
        };
        let env = environment(&launch);
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("TERM").as_deref(), Some("xterm"));
        assert_eq!(get("LANG").as_deref(), Some("C.UTF-8"));
        assert_eq!(get("SHELL").as_deref(), Some("/bin/sh"));
        assert_eq!(get("ALKNET_IDENTITY").as_deref(), Some("alice"));
        assert!(get("PATH").is_some());
        // the client as IPv4 (a dual-stack socket's mapped form undone), as sshd shows it
        assert_eq!(get("SSH_CLIENT").as_deref(), Some("192.0.2.7 50000 4433"));
        assert_eq!(
            get("SSH_CONNECTION").as_deref(),
            Some("192.0.2.7 50000 ::1 4433")
        );
        assert_eq!(get("DISPLAY").as_deref(), Some("localhost:10.0"));
        assert_eq!(get("XAUTHORITY").as_deref(), Some("/tmp/x/Xauthority"));
        assert!(
            get("CARGO").is_none(),
            "the server's own environment stays out"
        );
    }
}
