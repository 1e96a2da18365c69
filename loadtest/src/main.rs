//! `alknet-loadtest`: drives an Alknet server with real QUIC clients and reports what it
//! measured, nothing more. Each client thread runs its own monoio runtime and client
//! endpoint, as a server worker does, so client and server scale the same way.

mod report;
mod rr;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;

use alknet_runtime::tls::{ClientAuth, TlsIdentity};
use alknet_runtime::{AlpnRegistry, EngineConfig, Fingerprint, Limits, NoIdentities, ServerHandle};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "alknet-loadtest", about = "Load-test an Alknet server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Request/response against `alknet/echo`: each request is one bidirectional stream
    /// carrying `--size` bytes each way.
    Rr(RrArgs),
}

/// Options of the `rr` scenario. Every range is bounded so a typo cannot start a run that
/// never ends or exhausts memory (`read_to_end` buffers each response).
#[derive(Debug, Args)]
pub struct RrArgs {
    /// Server to load (HOST:PORT). Without it, an in-process server is started on
    /// 127.0.0.1 with a fresh self-signed certificate.
    #[arg(long, value_parser = parse_target, requires = "fingerprint")]
    target: Option<Target>,
    /// SHA-256 fingerprint (hex) of the --target server's certificate.
    #[arg(long, requires = "target")]
    fingerprint: Option<Fingerprint>,
    /// Worker threads of the in-process server.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    server_workers: u16,
    /// Client threads, each with its own runtime and endpoint.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    client_threads: u16,
    /// Connections in total, spread evenly over the client threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// Requests in flight per connection. The server allows 256 concurrent bidirectional
    /// streams per connection by default; past that, opening a stream waits.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    streams: u32,
    /// Request and response size in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=16 << 20))]
    size: u32,
    /// Seconds measured.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Seconds of load before measuring (connections, caches and windows warm up).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup: u64,
    /// Print the summary as one JSON line.
    #[arg(long)]
    json: bool,
}

/// A resolved `--target`, keeping the host for the TLS server name.
#[derive(Debug, Clone)]
pub struct Target {
    addr: SocketAddr,
    host: String,
}

fn parse_target(s: &str) -> Result<Target, String> {
    let (host, _port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    let addr = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(Target { addr, host })
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Rr(args) => run_rr(&args),
    }
}

/// Runtime warnings (`ALKNET_LOG=debug` for more) go to stderr, so `--json` stays clean.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALKNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run_rr(args: &RrArgs) -> ExitCode {
    // The server lives until the clients are done, so its counters cover the whole run.
    let server = match &args.target {
        Some(_) => None,
        None => Some(start_echo_server(usize::from(args.server_workers))),
    };
    let (target, fingerprint) = match (&args.target, &args.fingerprint, &server) {
        (Some(t), Some(fp), _) => (t.clone(), *fp),
        (None, _, Some(s)) => (
            Target {
                addr: s.local_addr(),
                host: "localhost".into(),
            },
            s.fingerprint(),
        ),
        // clap's `requires` rules out --target without --fingerprint
        _ => unreachable!("--target and --fingerprint come together"),
    };
    let plan = rr::Plan::new(args, target, fingerprint);
    let outcome = rr::run(&plan);
    let server_stats = server.as_ref().map(|s| s.total_stats());
    let summary = report::Summary::new(&plan, &outcome, server_stats);
    if args.json {
        println!("{}", summary.json());
    } else {
        print!("{}", summary.text());
    }
    // Dropping the handle closes what is left and joins the workers.
    drop(server);
    if summary.requests == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// An in-process `alknet/echo` server on 127.0.0.1, as the integration tests start one.
fn start_echo_server(workers: usize) -> ServerHandle {
    let mut registry = AlpnRegistry::new();
    registry
        .register(Arc::new(alknet_echo::EchoHandler))
        .expect("register the echo handler");
    let config = EngineConfig {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        workers,
        pin_workers: false,
        server_id: 0,
        limits: Limits::default(),
        tls: TlsIdentity::generate_self_signed(&[]).expect("generate a certificate"),
        client_auth: ClientAuth::Optional,
    };
    alknet_runtime::start(config, registry, Arc::new(NoIdentities)).expect("start the server")
}
