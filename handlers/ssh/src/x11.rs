//! X11 forwarding (`ssh -X`/`-Y`, the `x11-req` request), as sshd does it with its
//! defaults (`X11UseLocalhost yes`, `X11DisplayOffset 10`): a TCP listener on the loopback
//! at port 6000 + N for the first free display number N from `x11_display_offset`, named
//! to the session's commands as `DISPLAY=localhost:N.SCREEN`; the client's (fake) cookie
//! added with `xauth` for `unix:N.SCREEN`, so X clients on this host present it; each
//! connection to the display opens an `x11` channel back to the client, which checks that
//! cookie, puts its real one in its place and connects to its own X server (RFC 4254
//! §6.3; OpenSSH's `x11_open_helper`).
//!
//! sshd writes the cookie into the user's own `~/.Xauthority`; every session here runs as
//! the server's one user, so each session gets an authority file of its own instead, in a
//! fresh 0700 directory, named in `XAUTHORITY`, and removed with the session (with the
//! listener) — nothing of it is left in anybody's home directory.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::forward::ForwardContext;
use crate::metrics::ChannelKind;

/// TCP port of X display 0; display N listens on `X11_BASE_PORT + N`.
const X11_BASE_PORT: u32 = 6000;
/// Display numbers tried from `x11_display_offset` before giving up (sshd's
/// `MAX_DISPLAYS`).
pub const MAX_X11_DISPLAYS: u32 = 1000;
/// How long `xauth` may take to add the cookie before the request is refused.
const XAUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest cookie taken, in hex digits (MIT-MAGIC-COOKIE-1's is 32; OpenSSH's fake one has
/// the real one's length).
const MAX_COOKIE_HEX: usize = 1024;

/// What `x11-req` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct X11Request {
    pub single_connection: bool,
    pub protocol: String,
    pub cookie: String,
    pub screen: u32,
}

/// Why an `x11-req` was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum X11Error {
    #[error("malformed authentication protocol or cookie")]
    Malformed,
    #[error("no free X display from {from} to {to}")]
    NoDisplay { from: u32, to: u32 },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("xauth: {0}")]
    Xauth(String),
}

impl X11Request {
    /// The protocol name and cookie go to `xauth` on its standard input: a name of
    /// printable characters without spaces and an even run of hex digits, nothing else
    /// (sshd checks the same, so that a client cannot add `xauth` commands of its own).
    fn check(&self) -> Result<(), X11Error> {
        let protocol_ok = !self.protocol.is_empty()
            && self.protocol.len() <= 64
            && self.protocol.bytes().all(|b| b.is_ascii_graphic());
        let cookie_ok = !self.cookie.is_empty()
            && self.cookie.len() <= MAX_COOKIE_HEX
            && self.cookie.len().is_multiple_of(2)
            && self.cookie.bytes().all(|b| b.is_ascii_hexdigit());
        match protocol_ok && cookie_ok {
            true => Ok(()),
            false => Err(X11Error::Malformed),
        }
    }
}

/// One session's forwarded X display: dropping it stops the listener and removes the
/// authority file's directory.
pub(crate) struct X11Display {
    dir: PathBuf,
    authority: PathBuf,
    display: String,
    listener: AbortHandle,
}

impl X11Display {
    /// Checks the request, binds the first free display from `offset`, writes the cookie
    /// with `xauth` into a new authority file in `parent`, and starts accepting.
    pub async fn bind(
        request: &X11Request,
        offset: u32,
        xauth: &Path,
        parent: &Path,
        cx: ForwardContext,
    ) -> Result<Self, X11Error> {
        request.check()?;
        let (listener, number) = bind_display(offset).await?;
        let dir = crate::agent::private_dir(parent, "alknet-x11")?;
        let authority = dir.join("Xauthority");
        let display = format!("localhost:{number}.{}", request.screen);
        let entry = format!("unix:{number}.{}", request.screen);
        if let Err(e) = add_cookie(xauth, &authority, &entry, request).await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let task = tokio::spawn(accept_loop(listener, request.single_connection, cx));
        Ok(Self {
            dir,
            authority,
            display,
            listener: task.abort_handle(),
        })
    }

    /// What `DISPLAY` says to the session's commands.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// What `XAUTHORITY` says to the session's commands.
    pub fn authority(&self) -> &Path {
        &self.authority
    }
}

impl Drop for X11Display {
    fn drop(&mut self) {
        self.listener.abort();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(
                "ssh: removing the X11 authority {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// The first display number from `offset` whose port on the IPv4 loopback is free, and
/// its listener (sshd's `X11UseLocalhost yes`: only this host's processes can reach it).
async fn bind_display(offset: u32) -> Result<(TcpListener, u32), X11Error> {
    let last = offset.saturating_add(MAX_X11_DISPLAYS - 1);
    for number in offset..=last {
        let Some(port) = X11_BASE_PORT
            .checked_add(number)
            .and_then(|p| u16::try_from(p).ok())
        else {
            break;
        };
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return Ok((listener, number)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(X11Error::NoDisplay {
        from: offset,
        to: last,
    })
}

/// `xauth -q -f AUTHORITY -` with `add ENTRY PROTOCOL COOKIE` on its standard input.
async fn add_cookie(
    xauth: &Path,
    authority: &Path,
    entry: &str,
    request: &X11Request,
) -> Result<(), X11Error> {
    let mut child = tokio::process::Command::new(xauth)
        .arg("-q")
        .arg("-f")
        .arg(authority)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| X11Error::Xauth(format!("{}: {e}", xauth.display())))?;
    let script = format!("add {entry} {} {}\n", request.protocol, request.cookie);
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).await?;
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(XAUTH_TIMEOUT, run)
        .await
        .map_err(|_| X11Error::Xauth(format!("no answer in {XAUTH_TIMEOUT:?}")))?
        .map_err(|e| X11Error::Xauth(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(X11Error::Xauth(format!("{}: {}", out.status, err.trim())));
    }
    Ok(())
}

/// Accepts until aborted (the session's end; or after one connection, for a
/// single-connection request), each connection an `x11` channel to the client named by
/// the connecting process's address and port.
async fn accept_loop(listener: TcpListener, single_connection: bool, cx: ForwardContext) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                cx.accept_failed("X11 display", &e).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        cx.forward(
            ChannelKind::X11,
            format!("X11 connection from {peer}"),
            tcp.into_split(),
            move |handle| async move {
                handle
                    .channel_open_x11(peer.ip().to_string(), u32::from(peer.port()))
                    .await
            },
        );
        if single_connection {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(protocol: &str, cookie: &str) -> X11Request {
        X11Request {
            single_connection: false,
            protocol: protocol.into(),
            cookie: cookie.into(),
            screen: 0,
        }
    }

    #[test]
    fn only_a_plain_protocol_name_and_hex_cookie_reach_xauth() {
        let good = "0123456789abcdef0123456789ABCDEF";
        assert!(request("MIT-MAGIC-COOKIE-1", good).check().is_ok());
        for (protocol, cookie) in [
            ("MIT-MAGIC-COOKIE-1", "abc"),                 // odd length
            ("MIT-MAGIC-COOKIE-1", "zz"),                  // not hex
            ("MIT-MAGIC-COOKIE-1", "ab\nremove *"),        // a second xauth command
            ("MIT MAGIC", good),                           // a space
            ("MIT-MAGIC-COOKIE-1\nadd evil:0 . 00", good), // a newline
            ("", good),
            ("MIT-MAGIC-COOKIE-1", ""),
        ] {
            assert!(
                request(protocol, cookie).check().is_err(),
                "{protocol:?} {cookie:?}"
            );
        }
        let long = "ab".repeat(MAX_COOKIE_HEX / 2 + 1);
        assert!(request("MIT-MAGIC-COOKIE-1", &long).check().is_err());
    }

    #[tokio::test]
    async fn the_first_free_display_is_taken() {
        // two displays from the same offset: the second gets the next free number
        let offset = 4000 + (std::process::id() % 500);
        let (a, n) = bind_display(offset).await.expect("first");
        let (b, m) = bind_display(offset).await.expect("second");
        assert!(m > n, "{n} then {m}");
        assert_eq!(
            a.local_addr().expect("addr").port() as u32,
            X11_BASE_PORT + n
        );
        assert_eq!(
            b.local_addr().expect("addr").port() as u32,
            X11_BASE_PORT + m
        );
        // past the last port there is none
        assert!(matches!(
            bind_display(65535 - X11_BASE_PORT + 1).await,
            Err(X11Error::NoDisplay { .. })
        ));
    }
}
