//! Running `exec` commands and shells for a session channel: on pipes (stdout as data,
//! stderr as extended data 1) or on a pty, as the server's own user.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{Handle, Msg};
use russh::{ChannelId, ChannelReadHalf, ChannelWriteHalf};
use rustix::process::{Pid, Signal};
use tokio::process::Child;
use tokio::sync::oneshot;

use crate::flow::Backlog;
use crate::pumps::{pump_input, pump_output, OnEof};

/// After a hang-up (the channel or the session went away while the process ran), how long
/// it has to exit after SIGHUP before it is killed.
pub const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// `PATH` for sessions when the server has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A `pty-req`: terminal type and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyRequest {
    pub term: String,
    pub cols: u16,
    pub rows: u16,
    pub pix_width: u16,
    pub pix_height: u16,
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
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // its own process group, so signals and hang-ups reach what it starts
                .process_group(0)
                .kill_on_drop(true);
            let mut child = cmd.spawn()?;
            let pid = child.id().and_then(|p| Pid::from_raw(p as i32));
            let stdin = child.stdin.take();
            let stdout = child.stdout.take();
            let stderr = child.stderr.take();
            // beside the session: its input reaches the pipe without a thread hop
            crate::bridge::spawn_session_task(pump_input(read, stdin, OnEof::Close, backlog));
            let out_write = write.clone();
            let outputs = async move {
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
            };
            let outputs = tokio::spawn(outputs);
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
            let mut cmd = pty_process::Command::new(&launch.shell)
                .env_clear()
                .envs(env)
                .current_dir(working_dir())
                .kill_on_drop(true);
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
            let outputs = async move {
                let _ = pump_output(pty_read, &out_write, None).await;
            };
            let outputs = tokio::spawn(outputs);
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

/// Waits for the child and its output, then sends `exit-status` (or `exit-signal`), EOF
/// and close. A hang-up instead sends SIGHUP, then SIGKILL after [`HANGUP_GRACE`].
#[allow(clippy::too_many_arguments)]
async fn supervise(
    mut child: Child,
    pid: Option<Pid>,
    mut outputs: tokio::task::JoinHandle<()>,
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
        outputs.abort();
        return hang_up(child, pid, &label).await;
    };
    // everything the process wrote goes out before its exit status
    tokio::select! {
        _ = &mut outputs => {}
        _ = &mut hangup => {
            outputs.abort();
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
            }),
            identity: "alice".into(),
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
        assert!(
            get("CARGO").is_none(),
            "the server's own environment stays out"
        );
    }
}
