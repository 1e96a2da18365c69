//! The signals that end a client command (SIGHUP, SIGTERM, SIGINT) as a future, so that
//! it closes its QUIC connection before it exits.
//!
//! Why: OpenSSH sends SIGHUP to its ProxyCommand as soon as the session is over, and a
//! process killed by it leaves nothing on the wire. TCP's kernel would send a FIN for a
//! dead process; QUIC lives in the process, so the server went on holding the session (its
//! `ssh -R` listeners, forwarded-agent socket, channel and connection slots) until the
//! idle timeout, 30 s later. Caught, the signal becomes a CONNECTION_CLOSE that the server
//! acts on at once.

use std::io;
use std::os::unix::net::UnixStream as StdUnixStream;

use monoio::io::AsyncReadRent;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// A caught SIGHUP, SIGTERM or SIGINT, from [`Hangup::install`] on. The handlers stay for
/// the rest of the process: install it only where ending at the next turn of the event
/// loop is what the signal should do.
pub struct Hangup {
    /// `None` when the handlers could not be installed: the signals keep their default
    /// action (the process ends), and [`Hangup::caught`] never resolves.
    read: Option<monoio::net::UnixStream>,
}

impl Hangup {
    /// Replaces the default action of the three signals (end the process) with a byte on
    /// a socket pair that [`Hangup::caught`] reads (signal-hook's self-pipe, safe in a
    /// signal handler). Must run on a monoio runtime. A failure is logged, not returned:
    /// the process then ends on the signal as before.
    pub fn install() -> Self {
        match Self::socket_pair() {
            Ok(read) => Self { read: Some(read) },
            Err(e) => {
                tracing::warn!("cannot catch SIGHUP, SIGTERM and SIGINT: {e}");
                Self { read: None }
            }
        }
    }

    fn socket_pair() -> io::Result<monoio::net::UnixStream> {
        let (read, write) = StdUnixStream::pair()?;
        write.set_nonblocking(true)?;
        read.set_nonblocking(true)?;
        let read = monoio::net::UnixStream::from_std(read)?;
        for signal in [SIGHUP, SIGTERM, SIGINT] {
            signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
        }
        Ok(read)
    }

    /// Resolves when one of the signals has arrived (at once if one came before).
    pub async fn caught(&mut self) {
        let Some(read) = self.read.as_mut() else {
            return std::future::pending().await;
        };
        let (res, _) = read.read(vec![0u8; 1]).await;
        if let Err(e) = res {
            tracing::debug!("signal pipe: {e}");
        }
    }
}
