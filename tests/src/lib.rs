//! Shared helpers for Alknet's integration tests: an in-process server, a client runtime
//! with a hard timeout, deterministic payloads, and the path of the `alknet` binary.

mod bin_server;
mod child_lines;
mod chromium;
pub mod dns;
pub mod git;
pub mod ssh;
mod whoami;

pub use bin_server::{free_udp_port, sample_value, wait_output, BinServer};
pub use child_lines::ChildLines;
pub use chromium::{chromium_available, chromium_page};
pub use whoami::{ask_whoami, require_aioquic, WhoAmI, WHOAMI_ALPN};

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use alknet_runtime::rt::run_local;
use alknet_runtime::tls::{client_crypto, ClientAuth, ServerTrust, TlsIdentity};
use alknet_runtime::{
    AlpnRegistry, ClientEndpoint, Connection, EngineConfig, IdentityProvider, Limits, NoIdentities,
    ProtocolHandler, ServerHandle,
};

/// Every client scenario ends within this, or the test fails.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("ALKNET_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Options for [`start_server`].
pub struct ServerOptions {
    pub workers: usize,
    pub limits: Limits,
    pub handlers: Vec<Arc<dyn ProtocolHandler>>,
    pub provider: Arc<dyn IdentityProvider>,
    pub client_auth: ClientAuth,
    pub kernel_steering: bool,
    pub handshake: alknet_runtime::HandshakePolicy,
    pub admission: alknet_runtime::AdmissionLimits,
    /// A TLS-over-TCP listener on the same port (e.g. for `[tcp] stream_alpns`).
    pub tcp: Option<alknet_runtime::TcpSetup>,
    /// Run on every worker as it starts (e.g. classic DNS listeners).
    pub hooks: alknet_runtime::WorkerHooks,
    /// Where to listen (port 0: any free one); `127.0.0.1:0` by default.
    pub listen: std::net::SocketAddr,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            limits: Limits::default(),
            handlers: vec![Arc::new(alknet_echo::EchoHandler)],
            provider: Arc::new(NoIdentities),
            client_auth: ClientAuth::Optional,
            kernel_steering: true,
            handshake: alknet_runtime::HandshakePolicy::default(),
            admission: alknet_runtime::AdmissionLimits::default(),
            tcp: None,
            hooks: Vec::new(),
            listen: "127.0.0.1:0".parse().expect("addr"),
        }
    }
}

/// Starts an in-process server on `opts.listen` (127.0.0.1, an ephemeral port, by default).
pub fn start_server(opts: ServerOptions) -> ServerHandle {
    init_logging();
    let mut registry = AlpnRegistry::new();
    for h in opts.handlers {
        registry.register(h).expect("register handler");
    }
    let tls = TlsIdentity::generate_self_signed(&[]).expect("generate certificate");
    let config = EngineConfig {
        listen: opts.listen,
        workers: opts.workers,
        pin_workers: alknet_runtime::PinWorkers::Always(false),
        server_id: 0,
        limits: opts.limits,
        tls,
        client_auth: opts.client_auth,
        kernel_steering: opts.kernel_steering,
        handshake: opts.handshake,
        admission: opts.admission,
        qlog_dir: None,
        quic_host_key: None,
    };
    alknet_runtime::start_with_hooks(config, registry, opts.provider, opts.tcp, opts.hooks)
        .expect("start server")
}

/// Connects to `server` over TLS/TCP with `alpn` (a `[tcp] stream_alpns` service),
/// pinning its certificate: a one-stream connection.
pub async fn connect_tcp(
    server: &ServerHandle,
    alpn: &[u8],
) -> Result<Connection, alknet_runtime::TcpConnectError> {
    let config = alknet_runtime::tls::tcp_client_config(
        &ServerTrust::Fingerprint(server.fingerprint()),
        vec![alpn.to_vec()],
        None,
    )
    .expect("client TLS config");
    alknet_runtime::connect_tls_tcp(
        server.local_addr(),
        "localhost",
        config,
        alknet_runtime::DEFAULT_TCP_STREAM_BUFFER,
    )
    .await
}

/// Runs a client scenario on a fresh monoio runtime on this thread, failing the test if
/// it takes longer than [`TEST_TIMEOUT`].
pub fn run_client<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    init_logging();
    run_local(|_| async move {
        monoio::time::timeout(TEST_TIMEOUT, f())
            .await
            .expect("client scenario timed out")
    })
    .expect("client runtime")
}

/// A client endpoint on 127.0.0.1 with default limits.
pub fn client_endpoint() -> ClientEndpoint {
    client_endpoint_on("127.0.0.1:0".parse().expect("addr"))
}

/// A client endpoint bound to `local` (e.g. `[::1]:0` for an IPv6 server).
pub fn client_endpoint_on(local: std::net::SocketAddr) -> ClientEndpoint {
    ClientEndpoint::bind(local, &Limits::default()).expect("bind client")
}

/// Connects to `server` with `alpn`, pinning its certificate.
pub async fn connect(
    endpoint: &ClientEndpoint,
    server: &ServerHandle,
    alpn: &[u8],
) -> Result<Connection, alknet_runtime::ConnectError> {
    connect_addr(endpoint, server.local_addr(), server.fingerprint(), alpn).await
}

pub async fn connect_addr(
    endpoint: &ClientEndpoint,
    addr: SocketAddr,
    fingerprint: alknet_proto::Fingerprint,
    alpn: &[u8],
) -> Result<Connection, alknet_runtime::ConnectError> {
    let crypto = client_crypto(
        &ServerTrust::Fingerprint(fingerprint),
        vec![alpn.to_vec()],
        None,
    )
    .expect("client crypto");
    endpoint.connect(addr, "localhost", crypto).await
}

/// Deterministic pseudo-random bytes for stream `seed`.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Sends `data` on a new bi stream and returns the SHA-256 of what comes back.
pub async fn echo_roundtrip(conn: &Connection, data: Vec<u8>) -> [u8; 32] {
    let stream = conn.open_bi().await.expect("open stream");
    let (mut send, mut recv) = stream.split();
    let writer = async move {
        let mut chunks: Vec<bytes::Bytes> = bytes::Bytes::from(data)
            .chunks(100_000)
            .map(bytes::Bytes::copy_from_slice)
            .collect();
        send.write_all_chunks(&mut chunks).await.expect("write");
        send.finish().expect("finish");
    };
    let reader = async move {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        while let Some(chunk) = recv.read_chunk(usize::MAX).await.expect("read") {
            ctx.update(&chunk);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    };
    let ((), digest) = join(writer, reader).await;
    digest
}

/// Polls two futures concurrently on this thread.
pub async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    monoio::join!(a, b)
}

/// Path of the `alknet` binary, built (once per process) if cargo is at hand.
pub fn alknet_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/alknet
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory")
        .to_path_buf();
    let bin = dir.join("alknet");
    BUILD.call_once(|| {
        if let Some(cargo) = std::env::var_os("CARGO") {
            let status = std::process::Command::new(cargo)
                .args(["build", "--quiet", "--workspace", "--bins"])
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build -p alknet failed");
        }
    });
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p alknet` first",
        bin.display()
    );
    bin
}

/// `alknet connect --alpn ALPN --fingerprint FP --transport TRANSPORT ADDR`; stdio is the
/// caller's to set.
pub fn alknet_connect(
    alpn: &str,
    addr: &str,
    fingerprint: &str,
    transport: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(alknet_bin());
    cmd.args(["connect", "--alpn", alpn, "--fingerprint", fingerprint])
        .args(["--transport", transport])
        .arg(addr);
    cmd
}

/// A process's output as text (lossy UTF-8), for assertions and their messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// [`alknet_connect`] to the echo service.
pub fn echo_connect(addr: &str, fingerprint: &str, transport: &str) -> std::process::Command {
    alknet_connect("alknet/echo", addr, fingerprint, transport)
}

/// Runs `tests/interop/SCRIPT` (a Python client nobody here wrote) against `host:port`
/// pinning `fingerprint`, with `extra` arguments, for at most 300 s (the scripts bound
/// their own waits; this is the backstop); asserts it succeeded and returns its stdout.
pub fn interop_script(
    script: &str,
    host: &str,
    port: u16,
    fingerprint: &str,
    extra: &[&str],
) -> String {
    let path = format!("{}/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let child = std::process::Command::new("python3")
        .arg(path)
        .args(["--host", host, "--port", &port.to_string()])
        .args(["--fingerprint", fingerprint])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    let out = wait_output(child, std::time::Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} against {host} port {port} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
