//! `alknet connect`: one bidirectional stream piped to stdin/stdout.
//!
//! When stdin and stdout are pipes or sockets (how `ssh` runs a ProxyCommand, `sftp -D`
//! its server and git its remote helper) and the io_uring driver runs, the stream task
//! reads and writes them itself with io_uring operations: the kernel waits for the pipe,
//! no thread does. Otherwise (a terminal, a file, a descriptor in non-blocking mode, the
//! legacy driver) each gets a thread doing blocking calls, joined to the task by a bounded
//! channel. Either way a slow stdout stops reads from the stream (and so, by QUIC flow
//! control, the server), and stdin is read no faster than the stream takes it. Why not
//! threads always: every request/response round trip crossed both threads, two wake-ups
//! more per round trip than the pipes themselves cost, and round trips are what `sftp`'s
//! small-file transfers wait on.

use std::io::{IoSlice, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use alknet_runtime::pipe::RingPipe;
use alknet_runtime::rt::{run_local, DriverKind};
use alknet_runtime::tls::{client_crypto, tcp_client_config, ServerTrust, TlsIdentity};
use alknet_runtime::{
    connect_tls_tcp, Bytes, ClientEndpoint, ConnectError, Connection, ConnectionError, Fingerprint,
    Limits, QuicVersion, TcpConnectError, VarInt, DEFAULT_TCP_STREAM_BUFFER,
};
use clap::Args;

use crate::eyeballs;
use crate::hangup::Hangup;

/// Most bytes read from stdin at once, and the size of the buffers stdin is read into.
const STDIN_CHUNK: usize = 256 * 1024;
/// A stdin buffer with less room than this left is replaced by a new one: what was read
/// into it goes on as slices of it, and it is freed once the stream let go of them all.
const STDIN_MIN_ROOM: usize = 64 * 1024;
/// Capacity asked for the stdin and stdout pipes (Linux's default is 64 KiB; 1 MiB is the
/// default `/proc/sys/fs/pipe-max-size`): a bigger pipe lets each side move more per
/// wake-up of the other (ssh reads its ProxyCommand's output in big gulps).
const PIPE_CAPACITY: i32 = 1024 * 1024;
/// Most bytes taken from the stream for one write to stdout.
const STDOUT_CHUNK: usize = 256 * 1024;
/// Chunks in flight between the stdio threads and the stream (each way).
const PIPE_DEPTH: usize = 8;
/// Keep-alive for connect sessions, so an idle interactive session outlives the idle
/// timeout.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(10);
/// `--transport auto`: how long QUIC has alone before TLS over TCP races it, unless
/// `--fallback-delay-ms` says otherwise. Long enough for a QUIC handshake on any path a
/// person would call working (one round trip plus the server's certificate), short enough
/// that a network dropping UDP costs a person little; browsers give QUIC a head start of
/// the same order before they race TCP.
pub const FALLBACK_DELAY: std::time::Duration = std::time::Duration::from_millis(300);
/// After the session ends, how long to wait for the close to reach the server.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often to look whether the close has been sent.
const CLOSE_POLL: std::time::Duration = std::time::Duration::from_millis(1);

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// ALPN of the service, e.g. alknet/echo or alknet/ssh
    #[arg(long)]
    alpn: String,
    /// Run the session as this token's identity (a client certificate takes precedence).
    /// Over WebTransport it is sent as `?token=` in the session's URL; with `--alpn
    /// alknet/sftp` over QUIC or TCP, in the session's `SSH_FXP_INIT` (the `token@alknet`
    /// extension). Other QUIC and TCP connections are named by the client certificate
    /// alone.
    #[arg(long, env = "ALKNET_TOKEN")]
    token: Option<String>,
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
    /// How to reach the server: QUIC; WebTransport over HTTP/3; TLS over TCP on the same
    /// port, for networks that block UDP (one stream per connection); or auto, QUIC with
    /// TLS/TCP racing it when QUIC has not connected within 300 ms
    #[arg(long, value_enum, default_value_t = Transport::Quic)]
    pub transport: Transport,
    /// With --transport auto: milliseconds QUIC has alone before TLS over TCP races it
    #[arg(long, value_name = "MS", default_value_t = FALLBACK_DELAY.as_millis() as u64)]
    pub fallback_delay_ms: u64,
    /// Give up when no connection is made within this many milliseconds, every address
    /// and transport tried (0: each transport's own bound, QUIC's idle timeout of 30 s
    /// and TCP's 10 s), as curl's --connect-timeout
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub connect_timeout_ms: u64,
    /// QUIC version to start in: v1 (RFC 9000) or v2 (RFC 9369); a server that does not
    /// speak it refuses the connection with Version Negotiation
    #[arg(long, value_name = "v1|v2", default_value_t = QuicVersion::V1)]
    pub quic_version: QuicVersion,
    /// Server address
    #[arg(value_name = "HOST:PORT")]
    pub target: String,
}

/// How a client reaches the server (`--transport`, git's `alknet.transport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// QUIC on UDP
    #[default]
    Quic,
    /// a WebTransport session over HTTP/3, at `https://HOST:PORT/<alpn>`
    Webtransport,
    /// TLS over TCP on the same port (one stream per connection)
    Tcp,
    /// QUIC first; TLS over TCP too if QUIC has not connected within 300 ms; the first
    /// to connect is used (for ProxyCommand lines that must work where UDP is blocked)
    Auto,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("unknown transport {s:?} (quic, webtransport, tcp or auto)"))
    }
}

/// A resolved server: addresses, name to verify, transport, and the client TLS settings
/// for one ALPN.
pub struct Dial {
    /// Every address the server's name resolved to, in the order they are tried
    /// ([`eyeballs::interleave`]); never empty, one port.
    pub remotes: Vec<SocketAddr>,
    pub server_name: String,
    pub transport: Transport,
    /// The service's ALPN (over WebTransport: the path it names).
    pub alpn: Vec<u8>,
    pub trust: ServerTrust,
    pub identity: Option<TlsIdentity>,
    /// The QUIC client config offering `alpn`.
    pub crypto: std::sync::Arc<alknet_runtime::tls::QuicClientConfig>,
    /// Over WebTransport, the token whose identity the session runs as (`?token=`).
    pub token: Option<String>,
    /// With [`Transport::Auto`], QUIC's head start over TLS/TCP.
    pub fallback_delay: std::time::Duration,
    /// The bound on making the connection (`--connect-timeout-ms`), if any.
    pub connect_timeout: Option<std::time::Duration>,
    /// The QUIC version QUIC connections start in (`--quic-version`).
    pub quic_version: QuicVersion,
}

/// What carries a client's connection; [`close_and_wait`] ends it.
pub enum Carrier {
    /// The QUIC endpoint, whose driver task sends the close.
    Quic(ClientEndpoint),
    /// TLS over TCP: the connection's driver is a task of its own.
    Tcp,
    /// A WebTransport session: the QUIC endpoint and the HTTP/3 connection carrying it.
    WebTransport(ClientEndpoint, Connection),
}

impl ServerArgs {
    /// Resolves the address and builds the TLS client config for `alpn`.
    pub fn resolve(&self, alpn: &[u8]) -> Result<Dial, String> {
        let remotes = match self.target.to_socket_addrs() {
            Ok(a) => eyeballs::interleave(a),
            Err(e) => return Err(format!("{}: {e}", self.target)),
        };
        if remotes.is_empty() {
            return Err(format!("{} resolves to no address", self.target));
        }
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
            remotes,
            server_name,
            transport: self.transport,
            alpn: alpn.to_vec(),
            trust,
            identity,
            crypto,
            token: None,
            fallback_delay: std::time::Duration::from_millis(self.fallback_delay_ms),
            connect_timeout: (self.connect_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(self.connect_timeout_ms)),
            quic_version: self.quic_version,
        })
    }
}

impl Dial {
    /// Connects over the chosen transport. The one place a client picks its transport:
    /// `alknet connect`, `socks`, `call` and git-remote-alknet all come through here.
    pub async fn connect(self, limits: &Limits) -> Result<(Carrier, Connection), String> {
        let Some(bound) = self.connect_timeout else {
            return self.connect_unbounded(limits).await;
        };
        let what = format!("{} ({})", self.server_name, self.remotes[0]);
        monoio::time::timeout(bound, self.connect_unbounded(limits))
            .await
            .unwrap_or_else(|_| Err(format!("{what}: no connection within {bound:?}")))
    }

    async fn connect_unbounded(self, limits: &Limits) -> Result<(Carrier, Connection), String> {
        match self.transport {
            Transport::Quic => self.connect_quic(limits).await,
            Transport::Tcp => self.connect_tcp().await,
            Transport::Webtransport => self.connect_webtransport(limits).await,
            Transport::Auto => self.connect_auto(limits).await,
        }
    }

    /// QUIC alone for the fallback delay ([`FALLBACK_DELAY`] unless set), then QUIC and
    /// TLS/TCP racing; the first to connect wins and the other attempt is dropped (Happy
    /// Eyeballs, RFC 8305, with UDP and TCP in place of two address families). An answer
    /// within the delay ends it either way: a server that refuses the QUIC connection (an
    /// ALPN it does not serve, a client it does not admit) is not asked again over TCP;
    /// only silence falls back, and a host that answers that nothing listens on the UDP
    /// port (ICMP port unreachable: UDP off, or a firewall that rejects it) falls back at
    /// once. If both fail, both errors are reported.
    async fn connect_auto(self, limits: &Limits) -> Result<(Carrier, Connection), String> {
        let both = |q: String, t: String| format!("over QUIC: {q}; over TLS/TCP: {t}");
        let mut quic = std::pin::pin!(self.dial_quic(limits));
        monoio::select! {
            r = &mut quic => match r {
                Ok(c) => {
                    tracing::debug!(remote = %c.1.remote_address(), "connected over QUIC");
                    return Ok(c);
                }
                Err(QuicDialError::Unreachable(q) | QuicDialError::Silent(q)) => {
                    tracing::debug!(server = %self.server_name, "{q}; trying TLS over TCP");
                    let c = self.connect_tcp().await.map_err(|t| both(q, t))?;
                    tracing::debug!(remote = %c.1.remote_address(), "connected over TLS/TCP");
                    return Ok(c);
                }
                Err(q) => return Err(q.into()),
            },
            _ = monoio::time::sleep(self.fallback_delay) => {}
        }
        tracing::debug!(
            server = %self.server_name,
            "no QUIC connection within {:?}; racing TLS over TCP",
            self.fallback_delay
        );
        let mut tcp = std::pin::pin!(self.connect_tcp());
        let (won, over) = monoio::select! {
            r = &mut quic => match r {
                Ok(c) => (c, "QUIC"),
                Err(q) => (tcp.await.map_err(|t| both(q.into(), t))?, "TLS/TCP"),
            },
            r = &mut tcp => match r {
                Ok(c) => (c, "TLS/TCP"),
                Err(t) => (quic.await.map_err(|q| both(q.into(), t))?, "QUIC"),
            },
        };
        tracing::debug!(remote = %won.1.remote_address(), "connected over {over}");
        Ok(won)
    }

    /// QUIC with ALPN `h3`, then a WebTransport session at `/<alpn>`: the session is the
    /// connection handed back, the HTTP/3 connection its carrier.
    async fn connect_webtransport(self, limits: &Limits) -> Result<(Carrier, Connection), String> {
        let crypto = client_crypto(
            &self.trust,
            vec![alknet_http::h3::ALPN.to_vec()],
            self.identity.as_ref(),
        )
        .map_err(|e| e.to_string())?;
        let path = alknet_http::h3::webtransport::client::session_path(
            &String::from_utf8_lossy(&self.alpn),
            self.token.as_deref(),
        );
        let authority = format!("{}:{}", self.server_name, self.remotes[0].port());
        let (carrier, h3) = Dial { crypto, ..self }.connect_quic(limits).await?;
        let Carrier::Quic(endpoint) = carrier else {
            return Err("QUIC connect gave no endpoint".into());
        };
        let session =
            alknet_http::h3::webtransport::client::open_session(h3.clone(), &authority, &path)
                .await
                .map_err(|e| format!("WebTransport session {path}: {e}"))?;
        Ok((Carrier::WebTransport(endpoint, h3), session))
    }

    /// TLS over TCP to the same address and port: a one-stream connection. Every address
    /// of the name is tried ([`eyeballs::race`]); a TLS handshake that fails is the
    /// server's answer and ends it.
    async fn connect_tcp(&self) -> Result<(Carrier, Connection), String> {
        let config =
            tcp_client_config(&self.trust, vec![self.alpn.clone()], self.identity.as_ref())
                .map_err(|e| e.to_string())?;
        let attempt = |remote: SocketAddr| {
            let config = config.clone();
            async move {
                connect_tls_tcp(remote, &self.server_name, config, DEFAULT_TCP_STREAM_BUFFER)
                    .await
                    .map_err(|e| (remote, e))
            }
        };
        let answered = |(_, e): &(SocketAddr, TcpConnectError)| {
            matches!(
                e,
                TcpConnectError::Handshake(_) | TcpConnectError::ServerName(_)
            )
        };
        let conn = eyeballs::race(
            &self.remotes,
            eyeballs::ADDRESS_ATTEMPT_DELAY,
            monoio::time::sleep,
            attempt,
            answered,
        )
        .await
        .map_err(|errors| {
            join_errors(
                errors
                    .into_iter()
                    .map(|(remote, e)| format!("{remote}: {e}")),
            )
        })?;
        Ok((Carrier::Tcp, conn))
    }

    /// Connects over QUIC to one of the name's addresses ([`eyeballs::race`]).
    async fn connect_quic(&self, limits: &Limits) -> Result<(Carrier, Connection), String> {
        self.dial_quic(limits).await.map_err(String::from)
    }

    /// [`Self::connect_quic`], saying whether every address answered that nothing
    /// listens. A server that answers and refuses (CONNECTION_CLOSE, a TLS alert) ends
    /// the race: the other addresses are the same server.
    async fn dial_quic(&self, limits: &Limits) -> Result<(Carrier, Connection), QuicDialError> {
        let answered = |e: &QuicDialError| matches!(e, QuicDialError::Answered(_));
        let errors = match eyeballs::race(
            &self.remotes,
            eyeballs::ADDRESS_ATTEMPT_DELAY,
            monoio::time::sleep,
            |remote| self.dial_quic_to(remote, limits),
            answered,
        )
        .await
        {
            Ok(won) => return Ok(won),
            Err(errors) => errors,
        };
        let unreachable = errors
            .iter()
            .all(|e| matches!(e, QuicDialError::Unreachable(_)));
        let said = join_errors(errors.into_iter().map(String::from));
        Err(if unreachable {
            QuicDialError::Unreachable(said)
        } else {
            QuicDialError::Silent(said)
        })
    }

    /// Binds a client endpoint of `remote`'s address family and connects over QUIC.
    async fn dial_quic_to(
        &self,
        remote: SocketAddr,
        limits: &Limits,
    ) -> Result<(Carrier, Connection), QuicDialError> {
        let local: SocketAddr = if remote.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = ClientEndpoint::bind(local, limits)
            .map_err(|e| QuicDialError::Silent(format!("{remote}: bind: {e}")))?;
        endpoint.set_quic_version(self.quic_version);
        let conn = endpoint
            .connect(remote, &self.server_name, self.crypto.clone())
            .await
            .map_err(|e| {
                let said = format!("{remote}: {e}");
                match e {
                    ConnectError::Unreachable(_) => QuicDialError::Unreachable(said),
                    ConnectError::Handshake(
                        ConnectionError::TimedOut | ConnectionError::LocallyClosed,
                    ) => QuicDialError::Silent(said),
                    _ => QuicDialError::Answered(said),
                }
            })?;
        Ok((Carrier::Quic(endpoint), conn))
    }
}

/// The errors of the addresses tried, in the order they failed.
fn join_errors(errors: impl Iterator<Item = String>) -> String {
    errors.collect::<Vec<_>>().join(" | ")
}

/// Why a QUIC dial failed.
enum QuicDialError {
    /// The host answered that nothing listens on its UDP port (ICMP port unreachable;
    /// the server may still be there over TLS/TCP).
    Unreachable(String),
    /// No answer: the handshake timed out (a path that drops UDP), or the endpoint could
    /// not be bound.
    Silent(String),
    /// The server answered and refused: an ALPN it does not serve, a client it does not
    /// admit, a certificate that does not verify.
    Answered(String),
}

impl From<QuicDialError> for String {
    fn from(e: QuicDialError) -> String {
        match e {
            QuicDialError::Unreachable(s)
            | QuicDialError::Silent(s)
            | QuicDialError::Answered(s) => s,
        }
    }
}

/// After a session ends, closes the connection and waits (bounded) until the close has
/// left in a datagram: the server learns of it at once. Not for the end of the draining
/// period (three probe timeouts, ~80 ms on loopback), which only keeps this side
/// answering late packets; git waits for its helper to exit, so every fetch paid it.
///
/// Over TLS/TCP the connection is cut at once (the session is over: the server has
/// finished its side).
pub async fn close_and_wait(carrier: &Carrier, conn: Connection) {
    let (endpoint, conn) = match carrier {
        Carrier::Quic(endpoint) => (endpoint, conn),
        Carrier::Tcp => {
            conn.close(VarInt::from_u32(0), b"");
            return;
        }
        // the session first (its CONNECT stream is finished), then the HTTP/3 connection
        Carrier::WebTransport(endpoint, h3) => {
            conn.close(VarInt::from_u32(0), b"");
            drop(conn);
            (endpoint, h3.clone())
        }
    };
    let sent_before = endpoint.stats().datagrams_sent;
    conn.close(VarInt::from_u32(0), b"");
    drop(conn);
    let close_sent = async {
        // the driver sends the close on its next turn; checked every CLOSE_POLL
        for _ in 0..CLOSE_WAIT.as_millis() / CLOSE_POLL.as_millis() {
            if endpoint.stats().datagrams_sent > sent_before {
                return;
            }
            monoio::time::sleep(CLOSE_POLL).await;
        }
    };
    monoio::select! {
        _ = endpoint.wait_idle() => {}
        _ = close_sent => {}
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
    // where the token travels: the WebTransport session's URL, or the SFTP session's INIT
    let (dial, sftp_token) = match (dial.transport, args.token) {
        (Transport::Webtransport, token) => (Dial { token, ..dial }, None),
        (_, Some(token)) if dial.alpn == alknet_sftp::ALPN => (dial, Some(token)),
        (_, _) => (dial, None),
    };
    match pipe_stdio(dial, None, None, sftp_token) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Connects, opens one bidirectional stream and pipes stdin and stdout through it until
/// both ends are done. `preamble` is written on the stream first; `greeting` goes to
/// stdout once the stream is open, before anything read from it (what a git remote
/// helper answers `connect` with). `sftp_token` goes into the first packet stdin sends,
/// an SFTP `INIT` ([`alknet_sftp::init`]). Whoever read stdin before must have left
/// nothing of it in a buffer of its own: the io_uring path reads the descriptor itself.
pub fn pipe_stdio(
    dial: Dial,
    preamble: Option<Bytes>,
    greeting: Option<Bytes>,
    sftp_token: Option<String>,
) -> Result<(), String> {
    enlarge_pipe(0);
    enlarge_pipe(1);
    let mut stdout_thread = None;
    let threads = &mut stdout_thread;
    let outcome = run_local(|driver| async move {
        let (mut stdin, mut stdout) = if driver == DriverKind::IoUring {
            match (ring_stdio(0), ring_stdio(1)) {
                (Some(i), Some(o)) => (StdinSource::Ring(i), StdoutSink::Ring(o)),
                _ => stdio_threads(threads),
            }
        } else {
            stdio_threads(threads)
        };
        let limits = Limits {
            keep_alive_interval: KEEP_ALIVE,
            stream_receive_window: alknet_runtime::CONNECT_STREAM_RECEIVE_WINDOW,
            ..Limits::default()
        };
        let (endpoint, conn) = dial.connect(&limits).await?;
        // from here a SIGHUP (ssh's, when its session ends) closes the connection
        let mut hangup = Hangup::install();
        let stream = conn.open_bi().await.map_err(|e| e.to_string())?;
        let (mut send, mut recv) = stream.split();
        // a tunnel: whatever is behind the server end may pause as long as it likes
        // (keep-alives and the idle timeout watch the server)
        send.set_stall_timeout(std::time::Duration::ZERO);
        if let Some(p) = preamble {
            send.write_chunk(p).await.map_err(|e| e.to_string())?;
        }
        if let Some(g) = greeting {
            stdout.put(g).await.map_err(|e| format!("stdout: {e}"))?;
        }
        let upload = async move {
            if let Some(token) = sftp_token {
                let head = sftp_init_with_token(&mut stdin, &token).await;
                if send.write_chunk(head).await.is_err() {
                    return;
                }
            }
            while let Some(chunk) = stdin.next().await {
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
        let mut hung_up = std::pin::pin!(hangup.caught());
        loop {
            // what has arrived, merged: a write to stdout per QUIC packet would cost a
            // system call (and on the thread path a wake-up) per 1.2 KB
            let read = monoio::select! {
                read = recv.read_available(STDOUT_CHUNK) => read,
                () = &mut hung_up => {
                    tracing::debug!("hung up: closing the connection");
                    break;
                }
            };
            match read {
                Ok(Some(chunk)) => {
                    if stdout.put(chunk).await.is_err() {
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
        drop(stdout);
        drop(recv);
        close_and_wait(&endpoint, conn).await;
        result
    });
    if let Some(t) = stdout_thread {
        let _ = t.join();
    }
    match outcome {
        Ok(r) => r,
        Err(e) => Err(format!("runtime: {e}")),
    }
}

/// The start of stdin up to and including its first packet, an SFTP `INIT`, with the
/// token added. Anything that is not one whole `INIT` goes as it came, with a warning:
/// the server then refuses the session and says why.
async fn sftp_init_with_token(stdin: &mut StdinSource, token: &str) -> Bytes {
    use alknet_sftp::init::{first_packet_len, with_token, MAX_INIT};
    let mut head = Vec::new();
    while first_packet_len(&head).is_none() && head.len() <= MAX_INIT {
        match stdin.next().await {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => break,
        }
    }
    let Some(n) = first_packet_len(&head) else {
        eprintln!("alknet connect: stdin did not start with an SFTP packet; the token is not sent");
        return Bytes::from(head);
    };
    match with_token(&head[..n], token) {
        Ok(mut init) => {
            init.extend_from_slice(&head[n..]);
            Bytes::from(init)
        }
        Err(e) => {
            eprintln!("alknet connect: {e}; the token is not sent");
            Bytes::from(head)
        }
    }
}

/// Where the stream task takes stdin's bytes from.
enum StdinSource {
    /// A thread doing blocking reads.
    Thread(async_channel::Receiver<Bytes>),
    /// io_uring reads on the task's thread.
    Ring(RingPipe),
}

impl StdinSource {
    /// The next chunk of stdin, `None` at its end (or on an error reading it).
    async fn next(&mut self) -> Option<Bytes> {
        match self {
            StdinSource::Thread(rx) => rx.recv().await.ok(),
            StdinSource::Ring(pipe) => pipe.read_chunk().await.ok().flatten(),
        }
    }
}

/// Where the stream task puts what arrives for stdout.
enum StdoutSink {
    /// A thread doing blocking writes.
    Thread(async_channel::Sender<Bytes>),
    /// io_uring writes on the task's thread.
    Ring(RingPipe),
}

impl StdoutSink {
    async fn put(&mut self, chunk: Bytes) -> std::io::Result<()> {
        match self {
            StdoutSink::Thread(tx) => tx
                .send(chunk)
                .await
                .map_err(|_| std::io::ErrorKind::BrokenPipe.into()),
            StdoutSink::Ring(pipe) => pipe.write_all(chunk).await,
        }
    }
}

/// stdin (`fd` 0) or stdout (1) for io_uring operations on the stream task's thread, if
/// it is a pipe or a socket in blocking mode ([`RingPipe::new`]; its flags are shared with
/// whoever else holds it, so they are not changed).
fn ring_stdio(fd: i32) -> Option<RingPipe> {
    let owned = if fd == 0 {
        std::io::stdin().as_fd().try_clone_to_owned().ok()?
    } else {
        std::io::stdout().as_fd().try_clone_to_owned().ok()?
    };
    RingPipe::new(owned, STDIN_CHUNK, STDIN_MIN_ROOM).ok()
}

/// The thread path: a thread reading stdin and one writing stdout (its handle goes to
/// `stdout_thread`, to be joined once the stream is done).
fn stdio_threads(
    stdout_thread: &mut Option<std::thread::JoinHandle<()>>,
) -> (StdinSource, StdoutSink) {
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
    *stdout_thread = Some(std::thread::spawn(move || {
        // the raw descriptor: std's stdout is line-buffered, and flushing after each chunk
        // would cost a second write per chunk that holds a newline
        let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else {
            return;
        };
        let mut stdout = std::fs::File::from(fd);
        let mut batch = Vec::with_capacity(PIPE_DEPTH);
        while let Ok(chunk) = stdout_rx.recv_blocking() {
            // everything queued goes out in one writev: fewer system calls, and fewer
            // wake-ups of the stream task waiting for room in the channel
            batch.push(chunk);
            while let Ok(more) = stdout_rx.try_recv() {
                batch.push(more);
            }
            if write_all_chunks(&mut stdout, &batch).is_err() {
                break;
            }
            batch.clear();
        }
    }));
    (StdinSource::Thread(stdin_rx), StdoutSink::Thread(stdout_tx))
}

/// Writes every chunk, in order, with as few `writev` calls as the pipe allows.
fn write_all_chunks(out: &mut std::fs::File, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match out.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Asks for a [`PIPE_CAPACITY`] buffer on `fd` if it is a pipe, or a [`PIPE_CAPACITY`]
/// send buffer if it is a socket (`sftp -D` and `ssh`'s ProxyCommand hand over one end of
/// a Unix socket pair, whose default send buffer, about 208 KiB, is smaller than one
/// 255 KiB SFTP read reply); anything else (a file, a terminal) or a refusal leaves it as
/// it is.
fn enlarge_pipe(fd: i32) {
    // SAFETY: F_SETPIPE_SZ takes an int and touches no memory; on a descriptor that is
    // not a pipe it fails with EBADF/EINVAL, which is ignored.
    #[allow(unsafe_code)]
    let piped = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_CAPACITY) } >= 0;
    if !piped {
        let size: libc::c_int = PIPE_CAPACITY;
        // SAFETY: setsockopt reads `size` (an int, its length given) and nothing else; on
        // a descriptor that is not a socket it fails with ENOTSOCK, which is ignored. The
        // kernel caps the size at net.core.wmem_max.
        #[allow(unsafe_code)]
        let _ = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                std::ptr::addr_of!(size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
}
