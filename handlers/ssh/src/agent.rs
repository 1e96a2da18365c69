//! Agent forwarding (`ssh -A`, `auth-agent-req@openssh.com`), as sshd does it: a Unix
//! socket in a fresh private directory, named to the session's commands in
//! `SSH_AUTH_SOCK`; each connection to it opens an `auth-agent@openssh.com` channel back
//! to the client, whose agent answers (PROTOCOL.agent in OpenSSH's sources).
//!
//! The directory is mode 0700 and only processes of the server's own user may connect
//! (their peer credentials are checked, as sshd checks with `getpeereid`): a forwarded
//! agent signs with the user's keys, so nobody else on the host may reach it. It lives as
//! long as the session: dropping the [`AgentSocket`] stops the listener and removes the
//! directory.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::AbortHandle;

use crate::forward::ForwardContext;
use crate::metrics::{ChannelKind, ChannelRefusal};

/// One session's forwarded-agent socket.
pub(crate) struct AgentSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: AbortHandle,
}

impl AgentSocket {
    /// Creates the directory (`alknet-agent-XXXXXXXX` in `parent`) and the socket, and
    /// starts accepting on it.
    pub fn bind(parent: &Path, cx: ForwardContext) -> io::Result<Self> {
        let dir = private_dir(parent, "alknet-agent")?;
        let path = dir.join(format!("agent.{}", std::process::id()));
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let task = tokio::spawn(accept_loop(listener, cx));
        Ok(Self {
            dir,
            path,
            listener: task.abort_handle(),
        })
    }

    /// What `SSH_AUTH_SOCK` says to the session's commands.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        self.listener.abort();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("ssh: removing the agent socket {}: {e}", self.dir.display());
        }
    }
}

/// A new directory of mode 0700 named `PREFIX-<random>` in `parent` (the forwarded
/// agent's socket, a session's X11 authority file).
pub(crate) fn private_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    let mut last = None;
    for _ in 0..8 {
        let mut bytes = [0u8; 6];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| io::Error::other("the system random number generator failed"))?;
        let dir = parent.join(format!("{prefix}-{}", alknet_runtime::hex::encode(&bytes)));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free directory name")))
}

/// Whether the process at the other end of `stream` runs as this server's user.
fn same_user(stream: &UnixStream) -> bool {
    let ours = rustix::process::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) => cred.uid() == ours,
        Err(e) => {
            tracing::debug!("ssh: agent socket peer credentials: {e}");
            false
        }
    }
}

/// Accepts until aborted (the session's end), each connection an `auth-agent@openssh.com`
/// channel to the client.
async fn accept_loop(listener: UnixListener, cx: ForwardContext) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                cx.accept_failed("agent socket", &e).await;
                continue;
            }
        };
        if !same_user(&stream) {
            tracing::warn!("ssh: agent socket: a process of another user connected; closed");
            cx.shared
                .metrics
                .channel_refused(ChannelKind::AuthAgent, ChannelRefusal::Denied);
            continue;
        }
        cx.forward(
            ChannelKind::AuthAgent,
            "agent connection".into(),
            stream.into_split(),
            |handle| async move { handle.channel_open_agent().await },
        );
    }
}
