//! `alknet connect`: one bidirectional stream piped to stdin/stdout.
//!
//! stdin and stdout are blocking, so each gets its own thread, joined to the monoio task
//! by a bounded channel: a slow stdout stops reads from the stream (and so, by QUIC flow
//! control, the server), and stdin is read no faster than the stream takes it.

use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use alknet_runtime::rt::run_local;
use alknet_runtime::tls::{client_crypto, ServerTrust, TlsIdentity};
use alknet_runtime::{Bytes, ClientEndpoint, Connection, Fingerprint, Limits, VarInt};
use clap::Args;

/// Chunks read from stdin at once.
const STDIN_CHUNK: usize = 64 * 1024;
/// Chunks in flight between the stdio threads and the stream (each way).
const PIPE_DEPTH: usize = 8;
/// Keep-alive for connect sessions, so an idle interactive session outlives the idle
/// timeout.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(10);
/// After the session ends, how long to wait for the close to reach the server.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// ALPN of the service, e.g. alknet/echo or alknet/ssh
    #[arg(long)]
    alpn: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// Which server to reach and how to trust it; shared by the client subcommands.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Trust only the server certificate with this SHA-256 fingerprint
    #[arg(long, conflicts_with_all = ["insecure", "ca"])]
    pub fingerprint: Option<Fingerprint>,
    /// Trust any server certificate (the handshake is still encrypted, not authenticated)
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// Trust servers whose certificate chains to these PEM CA certificates
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) to present
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Name to verify in the server certificate (default: the host part of HOST:PORT)
    #[arg(long)]
    pub server_name: Option<String>,
    /// Server address
    #[arg(value_name = "HOST:PORT")]
    pub target: String,
}

/// A resolved server: address, name to verify and the client TLS config for one ALPN.
pub struct Dial {
    pub remote: SocketAddr,
    pub server_name: String,
    pub crypto: std::sync::Arc<alknet_runtime::tls::QuicClientConfig>,
}

impl ServerArgs {
    /// Resolves the address and builds the TLS client config for `alpn`.
    pub fn resolve(&self, alpn: &[u8]) -> Result<Dial, String> {
        let remote: SocketAddr = match self.target.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) => return Err(format!("{} resolves to no address", self.target)),
            Err(e) => return Err(format!("{}: {e}", self.target)),
        };
        let host = self
            .target
            .rsplit_once(':')
            .map_or(self.target.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = self.server_name.clone().unwrap_or(host);
        let trust = if let Some(fp) = self.fingerprint {
            ServerTrust::Fingerprint(fp)
        } else if self.insecure {
            ServerTrust::Insecure
        } else if let Some(ca) = &self.ca {
            ServerTrust::roots_from_pem(ca).map_err(|e| e.to_string())?
        } else {
            ServerTrust::WebPki
        };
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                Some(TlsIdentity::from_pem_files(c, k).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let crypto = client_crypto(&trust, vec![alpn.to_vec()], identity.as_ref())
            .map_err(|e| e.to_string())?;
        Ok(Dial {
            remote,
            server_name,
            crypto,
        })
    }
}

impl Dial {
    /// Binds a client endpoint of the right address family and connects.
    pub async fn connect(self, limits: &Limits) -> Result<(ClientEndpoint, Connection), String> {
        let local: SocketAddr = if self.remote.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = ClientEndpoint::bind(local, limits).map_err(|e| format!("bind: {e}"))?;
        let conn = endpoint
            .connect(self.remote, &self.server_name, self.crypto)
            .await
            .map_err(|e| format!("{}: {e}", self.remote))?;
        Ok((endpoint, conn))
    }
}

/// After a session ends, waits (bounded) for the close to reach the server.
pub async fn close_and_wait(endpoint: &ClientEndpoint, conn: Connection) {
    conn.close(VarInt::from_u32(0), b"");
    drop(conn);
    monoio::select! {
        _ = endpoint.wait_idle() => {}
        _ = monoio::time::sleep(CLOSE_WAIT) => {}
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("alknet connect: {msg}");
    ExitCode::FAILURE
}

pub fn run(args: ConnectArgs) -> ExitCode {
    let dial = match args.server.resolve(args.alpn.as_bytes()) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    match pipe_stdio(dial, None, None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Connects, opens one bidirectional stream and pipes stdin and stdout through it until
/// both ends are done. `preamble` is written on the stream first; `greeting` goes to
/// stdout once the stream is open, before anything read from it (what a git remote
/// helper answers `connect` with).
pub fn pipe_stdio(
    dial: Dial,
    preamble: Option<Bytes>,
    greeting: Option<Bytes>,
) -> Result<(), String> {
    let (stdin_tx, stdin_rx) = async_channel::bounded::<Bytes>(PIPE_DEPTH);
    let (stdout_tx, stdout_rx) = async_channel::bounded::<Bytes>(PIPE_DEPTH);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stdin_tx
                        .send_blocking(Bytes::copy_from_slice(&buf[..n]))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    let stdout_thread = std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        while let Ok(chunk) = stdout_rx.recv_blocking() {
            if stdout
                .write_all(&chunk)
                .and_then(|_| stdout.flush())
                .is_err()
            {
                break;
            }
        }
    });

    let outcome = run_local(|_| async move {
        let limits = Limits {
            keep_alive_interval: KEEP_ALIVE,
            ..Limits::default()
        };
        let (endpoint, conn) = dial.connect(&limits).await?;
        let stream = conn.open_bi().await.map_err(|e| e.to_string())?;
        let (mut send, mut recv) = stream.split();
        if let Some(p) = preamble {
            send.write_chunk(p).await.map_err(|e| e.to_string())?;
        }
        if let Some(g) = greeting {
            stdout_tx.send(g).await.map_err(|e| e.to_string())?;
        }
        let upload = async move {
            while let Ok(chunk) = stdin_rx.recv().await {
                if send.write_chunk(chunk).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
            // keep the stream open until the data is acknowledged or the peer stops it
            let _ = send.stopped().await;
        };
        alknet_runtime::rt::spawn_guarded("connect stdin", upload);
        let mut result = Ok(());
        loop {
            match recv.read_chunk(STDIN_CHUNK).await {
                Ok(Some(chunk)) => {
                    if stdout_tx.send(chunk).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    result = Err(e.to_string());
                    break;
                }
            }
        }
        drop(stdout_tx);
        drop(recv);
        close_and_wait(&endpoint, conn).await;
        result
    });
    let _ = stdout_thread.join();
    match outcome {
        Ok(r) => r,
        Err(e) => Err(format!("runtime: {e}")),
    }
}
