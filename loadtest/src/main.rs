//! `alknet-loadtest`: drives a QUIC server with real clients and reports what it measured,
//! nothing more. Each client thread runs its own monoio runtime and client endpoint, as a
//! server worker does. Servers run as child processes (`serve`), alknet or the quinn
//! baseline, so both are measured the same way; `compare` alternates them.

mod alloc;
mod baseline;
mod baseline_h3;
mod bulk;
mod call;
mod compare;
mod cores;
mod doq;
mod flood;
mod h3;
mod handshake;
mod harness;
mod idle;
mod perf_rr;
mod probe;
mod quinn_client;
mod report;
mod rr;
mod server;
mod sftp;
mod ssh;
mod stream_echo;

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alknet_runtime::{Fingerprint, QuicVersion};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::harness::{ClientPlan, Schedule, Target};
use crate::report::Measurement;
use crate::server::{Kind, ServerProc};

#[global_allocator]
static GLOBAL: alloc::SwitchedAllocator = alloc::SwitchedAllocator;

#[derive(Debug, Parser)]
#[command(
    name = "alknet-loadtest",
    about = "Load-test a QUIC server (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Request/response on alknet/echo: one stream per request, --size bytes each way
    Rr(RunArgs),
    /// Request/response through the alknet/call stack: the `echo` operation, --streams
    /// calls in flight per connection on one call stream, a --size byte JSON string each way
    Call(RunArgs),
    /// SSH over alknet/ssh: each connection runs `head -c --bytes /dev/zero` in one
    /// session and reads it all (a large `cat` through the SSH bridge)
    SshCat(RunArgs),
    /// SSH over alknet/ssh: each connection ping-pongs --size bytes through `cat` in one
    /// session, for --duration
    SshRr(RunArgs),
    /// SFTP downloads on alknet/sftp (raw SFTP v3, one session per connection, a pipelined
    /// client as OpenSSH's): each session reads one file of --bytes, or --sftp-files files
    /// of --size bytes, with --streams READs in flight per file; what it reads is uploaded
    /// first, outside the window, and every file is removed after the run
    SftpGet(RunArgs),
    /// SFTP uploads on alknet/sftp: as sftp-get, with WRITEs
    SftpPut(RunArgs),
    /// Request/response with quinn-perf client's requests on the `perf` ALPN: per request a
    /// new bidirectional stream carrying the 8-byte download size and --upload-size bytes,
    /// then FIN; the response (--download-size bytes) is read to FIN. --streams requests in
    /// flight per connection (quinn-perf's --bi-requests)
    PerfRr(RunArgs),
    /// One-way transfers with the perf protocol: --connections x 1 stream x --bytes
    #[command(visible_alias = "perf-bulk")]
    Bulk(RunArgs),
    /// alknet/echo on one stream per connection, over --transport quic or tcp: each
    /// connection ping-pongs --size bytes in a closed loop
    StreamRr(RunArgs),
    /// alknet/echo on one stream per connection, over --transport quic or tcp: each
    /// connection echoes --bytes (every byte in and out of the server)
    StreamBulk(RunArgs),
    /// HTTP/3 request/response: --streams closed loops of `GET /health` per connection,
    /// each on its own request stream (h3 client on alknet's engine; the quinn baseline
    /// serves the same axum router with h3-quinn)
    H3(RunArgs),
    /// New connections per second: connect, one tiny exchange, close
    Handshake(RunArgs),
    /// Idle connections: server memory per connection
    Idle(RunArgs),
    /// DNS over QUIC (RFC 9250) against a running DoQ server (--server): --streams queries
    /// in flight per connection, one per stream, A queries for `host<i>.--dns-zone`, each
    /// connection replaced after --queries-per-connection; `loadtest/dns-measure.sh` runs
    /// it against alknet and hickory-dns
    Doq(RunArgs),
    /// Run a workload against alknet and the quinn baseline, alternating, and compare
    Compare(CompareArgs),
    /// A handshake flood (real Initials from many source ports of one prefix, never
    /// answered) beside a legitimate `rr` client: its p99 without and under the flood,
    /// what the server did with the Initials, its memory, and when Retry disengaged
    Flood(FloodArgs),
    /// Physical limits of this machine: loopback UDP and AES-128-GCM on one core
    Probe(ProbeArgs),
    /// (Child process) run a server until stdin closes
    Serve {
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        #[arg(long, value_enum, default_value_t)]
        tls_key: server::KeyType,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkloadKind {
    Rr,
    PerfRr,
    Call,
    SshCat,
    SshRr,
    #[value(alias = "perf-bulk")]
    Bulk,
    StreamRr,
    StreamBulk,
    H3,
    Handshake,
    Idle,
    Doq,
    SftpGet,
    SftpPut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientKind {
    Alknet,
    Quinn,
}

/// Options shared by every workload (each uses the ones that apply to it).
#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Server the harness starts: alknet or the quinn 0.11 + tokio baseline.
    #[arg(long, value_enum, default_value_t = Kind::Alknet)]
    target: Kind,
    /// Load an already running server (HOST:PORT) instead of starting one.
    #[arg(long, requires = "fingerprint")]
    server: Option<String>,
    /// SHA-256 fingerprint of --server's certificate.
    #[arg(long, requires = "server")]
    fingerprint: Option<Fingerprint>,
    /// PID of --server, to report its CPU and memory.
    #[arg(long, requires = "server")]
    server_pid: Option<u32>,
    /// Key type of the server certificate the harness generates (both servers).
    #[arg(long, value_enum, default_value_t)]
    tls_key: server::KeyType,
    /// Client implementation: alknet's engine (monoio), or (perf-rr, rr and handshake) quinn +
    /// tokio as `quinn-perf client` runs (a current-thread runtime and an endpoint per
    /// client thread), to check a ratio with the peer's kind of client.
    #[arg(long, value_enum, default_value_t = ClientKind::Alknet)]
    client: ClientKind,
    /// HTTP/3 client of the `h3` workload: `wire` sends pre-encoded requests and parses the
    /// responses by hand (the least client CPU, as h2load does for HTTP/2); `h3-crate` is
    /// the `h3` crate's client.
    #[arg(long, value_enum, default_value_t)]
    h3_client: h3::H3Client,
    /// Server worker threads (alknet workers, or tokio threads for quinn-mt).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
    /// Client threads, each with its own runtime and endpoint.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    client_threads: u16,
    /// Connections (for handshake: concurrent connect loops).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    connections: u32,
    /// rr: requests in flight per connection (the server allows 256 streams at once).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    streams: u32,
    /// rr: request and response size in bytes (sftp-get/sftp-put with --sftp-files: each
    /// file's size).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=16 << 20))]
    size: u32,
    /// perf-rr: bytes each request uploads after its 8-byte header (quinn-perf's
    /// --upload-size).
    #[arg(long, default_value_t = 64)]
    upload_size: u64,
    /// perf-rr: bytes each request asks the server for (quinn-perf's --download-size).
    #[arg(long, default_value_t = 64)]
    download_size: u64,
    /// bulk: bytes each connection transfers.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// bulk: which way the bytes go.
    #[arg(long, value_enum, default_value_t = bulk::Direction::Download)]
    direction: bulk::Direction,
    /// doq: queries a connection carries before the client closes it and connects anew
    /// (0: until the run ends). hickory-dns 0.26 ends every DoQ connection after 100.
    #[arg(long, default_value_t = 0)]
    queries_per_connection: u64,
    /// doq: offer this many queries per second in all (send times paced per connection,
    /// latency counted from each query's send time); 0: closed loop, each slot asks again
    /// as soon as it has its answer.
    #[arg(long, default_value_t = 0)]
    doq_rate: u64,
    /// doq: the zone whose `host<i>` names are asked for.
    #[arg(long, default_value = "bench.test")]
    dns_zone: String,
    /// doq: how many `host<i>` names (`host0` … `host<n-1>`) the queries cycle through.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    dns_names: u32,
    /// handshake: resume TLS sessions.
    #[arg(long)]
    resumption: bool,
    /// Seconds measured (bulk: the longest a transfer may take).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Seconds of load before measuring (idle: settling time before memory is read).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup: u64,
    /// Run the server on the first half of the CPUs and the client threads on the other
    /// half (the same for every server kind), so where the scheduler would have placed
    /// them does not decide the result.
    #[arg(long)]
    split_cores: bool,
    /// sftp-get/sftp-put: transfer this many files of --size bytes per session instead of
    /// one file of --bytes (0).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    sftp_files: u32,
    /// sftp-get/sftp-put with --sftp-files: files in flight per session (OpenSSH's `get -r`
    /// and `put -r` move one at a time).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    sftp_files_in_flight: u32,
    /// sftp-get/sftp-put: READ/WRITE length instead of the server's `limits@openssh.com`
    /// (capped at 255 KiB, as OpenSSH's client does; 32 KiB without the extension).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=261_120))]
    sftp_chunk: Option<u32>,
    /// sftp-get/sftp-put against --server: the client certificate (PEM) of an identity
    /// with sftp:read and sftp:write. The harness's own server trusts a certificate it
    /// generates for the run.
    #[arg(long, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    json: bool,
    /// How the client reaches the server: QUIC, or TLS over TCP on the same port (a
    /// one-stream connection per --connections; stream-rr and stream-bulk only).
    #[arg(long, value_enum, default_value_t = LoadTransport::Quic)]
    transport: LoadTransport,
    /// QUIC version alknet's client starts in: v1, or v2 (RFC 9369; alknet's server only:
    /// quinn serves v1 alone, and its client speaks v1).
    #[arg(long, value_name = "v1|v2", default_value_t = QuicVersion::V1)]
    quic_version: QuicVersion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LoadTransport {
    Quic,
    Tcp,
    /// a WebTransport session (at /alknet/echo) per HTTP/3 connection
    Webtransport,
}

#[derive(Debug, Args)]
struct CompareArgs {
    #[arg(long, value_enum)]
    workload: WorkloadKind,
    /// Baselines to run beside alknet (repeat for several). `quinn` is quinn-perf
    /// server's configuration, the strongest; `quinn-mt` the former, weaker one.
    #[arg(long = "baseline", value_enum, default_values_t = [Kind::Quinn])]
    baselines: Vec<Kind>,
    /// Rounds per server (A B A B …).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
struct FloodArgs {
    /// Initials per second the flooder sends.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate: u32,
    /// Source address of the flood: another prefix than the legitimate client's
    /// 127.0.0.1 (all of 127/8 reaches the loopback interface).
    #[arg(long, default_value = "127.0.3.1")]
    source: std::net::IpAddr,
    /// Source ports the flood comes from.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=4096))]
    ports: u16,
    /// Only the flood, for --duration seconds, no legitimate client: how many Initials the
    /// server disposes of per second and per server CPU-second (with --rate above what it
    /// can take, e.g. 1000000, the saturation rate).
    #[arg(long)]
    saturate: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// Datagram / packet size in bytes.
    #[arg(long, default_value_t = 1200)]
    payload: usize,
    /// Seconds per probe.
    #[arg(long, default_value_t = 2)]
    seconds: u64,
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Rr(a) => run_one(WorkloadKind::Rr, &a),
        Command::PerfRr(a) => run_one(WorkloadKind::PerfRr, &a),
        Command::Call(a) => run_one(WorkloadKind::Call, &a),
        Command::SshCat(a) => run_one(WorkloadKind::SshCat, &a),
        Command::SshRr(a) => run_one(WorkloadKind::SshRr, &a),
        Command::Bulk(a) => run_one(WorkloadKind::Bulk, &a),
        Command::StreamRr(a) => run_one(WorkloadKind::StreamRr, &a),
        Command::StreamBulk(a) => run_one(WorkloadKind::StreamBulk, &a),
        Command::H3(a) => run_one(WorkloadKind::H3, &a),
        Command::Handshake(a) => run_one(WorkloadKind::Handshake, &a),
        Command::Idle(a) => run_one(WorkloadKind::Idle, &a),
        Command::Doq(a) => run_one(WorkloadKind::Doq, &a),
        Command::SftpGet(a) => run_one(WorkloadKind::SftpGet, &a),
        Command::SftpPut(a) => run_one(WorkloadKind::SftpPut, &a),
        Command::Compare(c) => run_compare(&c),
        Command::Flood(f) => run_flood(&f),
        Command::Probe(p) => run_probe(&p),
        Command::Serve {
            kind,
            workers,
            tls_key,
        } => server::serve(kind, workers, tls_key),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alknet-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runtime warnings (`ALKNET_LOG=debug` for more) go to stderr, so `--json` stays clean.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALKNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run_one(workload: WorkloadKind, args: &RunArgs) -> Result<(), String> {
    if args.quic_version == QuicVersion::V2
        && (args.client == ClientKind::Quinn
            || (args.server.is_none() && args.target != Kind::Alknet))
    {
        return Err(
            "--quic-version v2 needs alknet's client and alknet's server (quinn serves and \
             speaks QUIC v1 only)"
                .into(),
        );
    }
    if args.client == ClientKind::Quinn
        && !matches!(
            workload,
            WorkloadKind::PerfRr | WorkloadKind::Rr | WorkloadKind::Handshake
        )
    {
        return Err("--client quinn drives perf-rr, rr and handshake only".into());
    }
    if args.transport == LoadTransport::Tcp
        && !matches!(workload, WorkloadKind::StreamRr | WorkloadKind::StreamBulk)
    {
        return Err("--transport tcp drives stream-rr and stream-bulk only (TLS/TCP connections carry one stream)".into());
    }
    if args.transport == LoadTransport::Webtransport
        && !matches!(
            workload,
            WorkloadKind::Rr
                | WorkloadKind::Bulk
                | WorkloadKind::StreamRr
                | WorkloadKind::StreamBulk
        )
    {
        return Err("--transport webtransport drives rr, stream-rr and stream-bulk (alknet/echo sessions; bulk is the perf ALPN, not offered over WebTransport)".into());
    }
    let m = measure(workload, args, args.target)?;
    if args.json {
        println!("{}", m.json());
    } else {
        print!("{}", m.text());
    }
    if m.tally.operations == 0 || m.tally.errors_total() > 0 {
        return Err(format!(
            "{} errors, {} operations",
            m.tally.errors_total(),
            m.tally.operations
        ));
    }
    Ok(())
}

fn run_compare(c: &CompareArgs) -> Result<(), String> {
    if c.run.quic_version == QuicVersion::V2 {
        return Err(
            "compare runs quinn, which serves QUIC v1 only: run the workload against alknet \
             with --quic-version v2, then with v1"
                .into(),
        );
    }
    if c.run.server.is_some() {
        return Err("compare starts both servers itself; --server does not apply".into());
    }
    if matches!(c.workload, WorkloadKind::SshCat | WorkloadKind::SshRr) {
        return Err(
            "the quinn baseline does not serve alknet/ssh; compare ssh-cat with bulk \
                    and ssh-rr with rr against alknet"
                .into(),
        );
    }
    if c.workload == WorkloadKind::Doq {
        return Err(
            "the harness's servers serve no DNS: `loadtest/dns-measure.sh` starts alknet and \
                    hickory-dns on one zone and runs `doq --server` against each"
                .into(),
        );
    }
    if matches!(c.workload, WorkloadKind::SftpGet | WorkloadKind::SftpPut) {
        return Err(
            "the quinn baseline does not serve SFTP: `loadtest/sftp-measure.sh` compares \
                    alknet/sftp with OpenSSH (sftp-server over a pipe, and sshd)"
                .into(),
        );
    }
    if c.workload == WorkloadKind::Call {
        return Err(
            "the quinn baseline does not serve alknet/call; run `call` and `rr` \
                    against alknet to compare the call stack with plain streams"
                .into(),
        );
    }
    let mut kinds = vec![Kind::Alknet];
    kinds.extend(c.baselines.iter().filter(|k| **k != Kind::Alknet));
    let mut results: Vec<(Kind, Vec<Measurement>)> =
        kinds.iter().map(|k| (*k, Vec::new())).collect();
    for round in 0..c.rounds {
        for (kind, runs) in results.iter_mut() {
            let m = measure(c.workload, &c.run, *kind)?;
            eprintln!(
                "round {}/{} {kind}: {:.1} {}",
                round + 1,
                c.rounds,
                m.headline().0,
                m.headline().1
            );
            if c.run.json {
                println!("{}", m.json());
            }
            runs.push(m);
        }
    }
    let unit = results[0].1.first().map_or("", |m| m.headline().1);
    print!(
        "{}",
        compare::table(workload_name(c.workload), unit, &results)
    );
    Ok(())
}

fn run_flood(f: &FloodArgs) -> Result<(), String> {
    if f.run.server.is_some() {
        return Err("flood starts its own server (it reads its counters)".into());
    }
    let mut proc = ServerProc::spawn(Kind::Alknet, usize::from(f.run.workers), f.run.tls_key)?;
    let pid = proc.pid();
    if f.saturate {
        return run_saturation(f, &mut proc);
    }
    let mut legit = f.run.clone();
    legit.server = Some(proc.addr.to_string());
    legit.fingerprint = Some(proc.fingerprint);
    legit.server_pid = Some(pid);
    let rss_before = flood::rss_mib(pid);
    let quiet = measure(WorkloadKind::Rr, &legit, Kind::Alknet)?;
    let initials = flood::make_initials(proc.addr, proc.fingerprint, flood::INITIAL_POOL)?;
    let before = flood::counters(&mut proc)?;
    let flooder =
        flood::Flooder::start(initials, proc.addr, f.source, usize::from(f.ports), f.rate)?;
    let flood_started = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let loaded = measure(WorkloadKind::Rr, &legit, Kind::Alknet)?;
    let rss_flood = flood::rss_mib(pid);
    let sent = flooder.sent();
    let flood_seconds = flood_started.elapsed().as_secs_f64();
    drop(flooder);
    let during = flood::counters(&mut proc)?.since(&before);
    // Retry stays on while the flood's accepted, never-finished handshakes are in flight:
    // probe with one legitimate connect loop per second until no Retry is sent
    let stopped = Instant::now();
    let mut probe = legit.clone();
    probe.connections = 1;
    probe.duration = 1;
    probe.warmup = 0;
    let mut disengaged = None;
    while stopped.elapsed() < flood::DISENGAGE_TIMEOUT {
        let a = flood::counters(&mut proc)?;
        let m = measure(WorkloadKind::Handshake, &probe, Kind::Alknet)?;
        let d = flood::counters(&mut proc)?.since(&a);
        if m.tally.operations > 0 && d.retries_sent == 0 {
            disengaged = Some(stopped.elapsed());
            break;
        }
    }
    let (q99, l99) = (quiet.p99_us(), loaded.p99_us());
    println!(
        "flood: {sent} Initials in {flood_seconds:.1} s ({:.0}/s) from {} ports of {}",
        sent as f64 / flood_seconds,
        f.ports,
        f.source
    );
    println!("server under the flood: {}", flood::describe(&during));
    println!(
        "legitimate rr: {:.0} req/s, p99 {q99} µs without the flood; {:.0} req/s, p99 {l99} µs under it ({:.2}x)",
        quiet.headline().0,
        loaded.headline().0,
        l99 as f64 / q99.max(1) as f64
    );
    println!(
        "server RSS: {rss_before} before, {rss_flood} under the flood, {} after",
        flood::rss_mib(pid)
    );
    match disengaged {
        Some(t) => println!(
            "Retry disengaged {:.1} s after the flood stopped",
            t.as_secs_f64()
        ),
        None => println!(
            "Retry still engaged {} s after the flood stopped",
            flood::DISENGAGE_TIMEOUT.as_secs()
        ),
    }
    for (name, m) in [("without the flood", &quiet), ("under the flood", &loaded)] {
        if m.tally.operations == 0 || m.tally.errors_total() > 0 {
            return Err(format!(
                "legitimate client {name}: {} errors, {} requests",
                m.tally.errors_total(),
                m.tally.operations
            ));
        }
    }
    Ok(())
}

/// `flood --saturate`: the flood alone; what the server disposed of, per second and per
/// server CPU-second.
fn run_saturation(f: &FloodArgs, proc: &mut ServerProc) -> Result<(), String> {
    let pid = proc.pid();
    let initials = flood::make_initials(proc.addr, proc.fingerprint, flood::INITIAL_POOL)?;
    let flooder =
        flood::Flooder::start(initials, proc.addr, f.source, usize::from(f.ports), f.rate)?;
    // the first second fills the handshake places; measure after it
    std::thread::sleep(Duration::from_secs(1));
    let before = flood::counters(proc)?;
    let cpu_before = server::cpu_seconds(pid).ok_or("reading the server's CPU time")?;
    let (sent_before, started) = (flooder.sent(), Instant::now());
    std::thread::sleep(Duration::from_secs(f.run.duration.max(1)));
    let seconds = started.elapsed().as_secs_f64();
    let sent = flooder.sent() - sent_before;
    let cpu = server::cpu_seconds(pid).ok_or("reading the server's CPU time")? - cpu_before;
    let during = flood::counters(proc)?.since(&before);
    drop(flooder);
    let handled = during.connections_accepted
        + during.retries_sent
        + during.refused_rate
        + during.refused_source
        + during.refused_handshakes
        + during.refused_capacity;
    let workers = f64::from(f.run.workers.max(1));
    println!(
        "saturation: {sent} Initials sent in {seconds:.1} s ({:.0}/s) from {} ports of {}",
        sent as f64 / seconds,
        f.ports,
        f.source
    );
    println!("server: {}", flood::describe(&during));
    println!(
        "server disposed of {:.0} Initials/s ({:.0}/s per worker), server CPU {cpu:.2} s: {:.0} per server CPU-second ({:.2} µs each); the rest was lost in socket buffers",
        handled as f64 / seconds,
        handled as f64 / seconds / workers,
        handled as f64 / cpu.max(1e-9),
        cpu * 1e6 / handled.max(1) as f64
    );
    Ok(())
}

fn workload_name(w: WorkloadKind) -> &'static str {
    match w {
        WorkloadKind::Rr => "rr",
        WorkloadKind::PerfRr => "perf-rr",
        WorkloadKind::Call => "call",
        WorkloadKind::SshCat => "ssh-cat",
        WorkloadKind::SshRr => "ssh-rr",
        WorkloadKind::Bulk => "bulk",
        WorkloadKind::StreamRr => "stream-rr",
        WorkloadKind::StreamBulk => "stream-bulk",
        WorkloadKind::H3 => "h3",
        WorkloadKind::Handshake => "handshake",
        WorkloadKind::Idle => "idle",
        WorkloadKind::Doq => "doq",
        WorkloadKind::SftpGet => "sftp-get",
        WorkloadKind::SftpPut => "sftp-put",
    }
}

fn is_sftp(w: WorkloadKind) -> bool {
    matches!(w, WorkloadKind::SftpGet | WorkloadKind::SftpPut)
}

/// Starts (or finds) the server, runs `workload` against it, and measures.
fn measure(workload: WorkloadKind, args: &RunArgs, kind: Kind) -> Result<Measurement, String> {
    let split = if args.split_cores {
        let cpus = cores::allowed().map_err(|e| format!("reading CPU affinity: {e}"))?;
        Some(cores::split(&cpus).ok_or("--split-cores needs at least two CPUs")?)
    } else {
        None
    };
    let mut proc = None;
    // sftp: the client certificate of an identity allowed SFTP (the harness's server is
    // told to trust a generated one)
    let client_identity = match (is_sftp(workload), &args.cert, &args.key) {
        (false, _, _) => None,
        (true, Some(c), Some(k)) => Some(Arc::new(
            alknet_runtime::tls::TlsIdentity::from_pem_files(c, k)
                .map_err(|e| format!("--cert/--key: {e}"))?,
        )),
        (true, _, _) if args.server.is_some() => {
            return Err("sftp-get/sftp-put against --server need --cert and --key".into())
        }
        (true, _, _) => Some(Arc::new(
            alknet_runtime::tls::TlsIdentity::generate_self_signed(&[])
                .map_err(|e| e.to_string())?,
        )),
    };
    let (target, pid, label) = match (&args.server, args.fingerprint) {
        (Some(s), Some(fp)) => (
            Target {
                quic_version: args.quic_version,
                ..resolve(s, fp)?
            },
            args.server_pid,
            s.clone(),
        ),
        _ if workload == WorkloadKind::Doq => {
            return Err(
                "doq loads a running DNS server: pass --server, --fingerprint and \
                 --server-pid (loadtest/dns-measure.sh starts the servers)"
                    .into(),
            )
        }
        _ => {
            let sftp_client = client_identity.as_ref().map(|i| i.fingerprint());
            let spawn = || {
                ServerProc::spawn_with(kind, usize::from(args.workers), args.tls_key, sftp_client)
            };
            let spawned = match &split {
                // a child inherits the affinity of the thread that forks it
                Some((server_cpus, _)) => std::thread::scope(|s| {
                    s.spawn(|| {
                        cores::restrict_current(server_cpus)
                            .map_err(|e| format!("restricting the server's CPUs: {e}"))?;
                        spawn()
                    })
                    .join()
                    .unwrap_or_else(|_| Err("server spawner panicked".into()))
                }),
                None => spawn(),
            };
            let proc = proc.insert(spawned?);
            let t = Target {
                addr: proc.addr,
                host: "localhost".into(),
                fingerprint: proc.fingerprint,
                quic_version: args.quic_version,
            };
            (
                t,
                Some(proc.pid()),
                format!(
                    "{kind} ({} workers, {})",
                    args.workers,
                    alloc::for_child(kind == Kind::Alknet)
                ),
            )
        }
    };
    let threads = usize::from(args.client_threads)
        .min(args.connections as usize)
        .max(1);
    let connections = args.connections as usize;
    let alpn = match workload {
        WorkloadKind::Bulk | WorkloadKind::PerfRr => alknet_perf::ALPN.to_vec(),
        WorkloadKind::Call => alknet_call::ALPN.to_vec(),
        WorkloadKind::SshCat | WorkloadKind::SshRr => alknet_ssh::ALPN.to_vec(),
        WorkloadKind::H3 => alknet_http::h3::ALPN.to_vec(),
        WorkloadKind::Doq => b"doq".to_vec(),
        WorkloadKind::SftpGet | WorkloadKind::SftpPut => alknet_sftp::ALPN.to_vec(),
        _ => alknet_echo::ALPN.to_vec(),
    };
    let plan = ClientPlan {
        target,
        alpn,
        threads,
        warmup: Duration::from_secs(if is_transfer(workload) {
            0
        } else {
            args.warmup
        }),
        duration: Duration::from_secs(args.duration),
        resumption: args.resumption,
        keep_alive: Duration::from_secs(5),
        cpus: split.as_ref().map(|(_, client)| client.clone()),
        tcp: args.transport == LoadTransport::Tcp,
        webtransport: args.transport == LoadTransport::Webtransport,
        identity: client_identity.clone(),
        as_connect: is_sftp(workload),
    };
    let rss_before = pid.and_then(server::rss_bytes);
    let windowed = !is_transfer(workload);
    let warmup = plan.warmup;
    let sample = |sched: Schedule| {
        wait_with_progress(sched.measure_from, sched.measure_from - warmup, "warm-up");
        let at_start = ServerSample::take(pid, proc.as_mut());
        // a windowed run is sampled again at the window's end, before the clients close
        let at_end = windowed.then(|| {
            wait_with_progress(sched.end, sched.measure_from, workload_name(workload));
            ServerSample::take(pid, proc.as_mut())
        });
        (at_start, at_end)
    };
    // the quinn client (`--client quinn`, `--h3-client quinn`) with this run's plan
    let quinn = |streams, request| quinn_client::QuinnPerfClient {
        target: plan.target.clone(),
        connections,
        threads,
        streams,
        request,
        warmup: plan.warmup,
        duration: plan.duration,
        cpus: plan.cpus.clone(),
    };
    let (tally, (start, end)) = match workload {
        WorkloadKind::Rr if args.client == ClientKind::Quinn => quinn_client::run(
            quinn(
                args.streams as usize,
                quinn_client::QuinnRequest::Echo {
                    payload: rr::payload(args.size as usize),
                },
            ),
            sample,
        ),
        WorkloadKind::Rr => harness::run(
            &plan,
            rr::Rr::new(
                connections,
                threads,
                args.streams as usize,
                args.size as usize,
            ),
            sample,
        ),
        WorkloadKind::PerfRr if args.client == ClientKind::Quinn => quinn_client::run(
            quinn(
                args.streams as usize,
                quinn_client::QuinnRequest::Perf {
                    upload: args.upload_size,
                    download: args.download_size,
                },
            ),
            sample,
        ),
        WorkloadKind::PerfRr => harness::run(
            &plan,
            perf_rr::PerfRr::new(
                connections,
                threads,
                args.streams as usize,
                args.upload_size,
                args.download_size,
            ),
            sample,
        ),
        WorkloadKind::Call => harness::run(
            &plan,
            call::Call::new(
                connections,
                threads,
                args.streams as usize,
                args.size as usize,
            ),
            sample,
        ),
        WorkloadKind::SshCat => harness::run(
            &plan,
            ssh::Ssh::new(
                connections,
                threads,
                ssh::SshMode::Cat { bytes: args.bytes },
            ),
            sample,
        ),
        WorkloadKind::SshRr => harness::run(
            &plan,
            ssh::Ssh::new(
                connections,
                threads,
                ssh::SshMode::Rr {
                    size: args.size as usize,
                },
            ),
            sample,
        ),
        WorkloadKind::Bulk => harness::run(
            &plan,
            bulk::Bulk::new(connections, threads, args.bytes, args.direction),
            sample,
        ),
        WorkloadKind::H3 if args.h3_client == h3::H3Client::Quinn => quinn_client::run(
            quinn(args.streams as usize, quinn_client::QuinnRequest::H3Health),
            sample,
        ),
        WorkloadKind::H3 => harness::run(
            &plan,
            h3::H3Rr::new(connections, threads, args.streams as usize, args.h3_client),
            sample,
        ),
        WorkloadKind::StreamRr => harness::run(
            &plan,
            stream_echo::StreamEcho::new(
                connections,
                threads,
                stream_echo::StreamMode::Rr {
                    size: args.size as usize,
                },
            ),
            sample,
        ),
        WorkloadKind::StreamBulk => harness::run(
            &plan,
            stream_echo::StreamEcho::new(
                connections,
                threads,
                stream_echo::StreamMode::Bulk { bytes: args.bytes },
            ),
            sample,
        ),
        WorkloadKind::Handshake if args.client == ClientKind::Quinn => quinn_client::run(
            quinn(
                1,
                quinn_client::QuinnRequest::Handshake {
                    resumption: args.resumption,
                },
            ),
            sample,
        ),
        WorkloadKind::Handshake => harness::run(
            &plan,
            handshake::Handshake::new(connections, threads),
            sample,
        ),
        WorkloadKind::Idle => harness::run(&plan, idle::Idle::new(connections, threads), sample),
        WorkloadKind::SftpGet | WorkloadKind::SftpPut => harness::run(
            &plan,
            sftp::Sftp::new(
                connections,
                threads,
                if workload == WorkloadKind::SftpGet {
                    sftp::SftpOp::Get
                } else {
                    sftp::SftpOp::Put
                },
                sftp_shape(args),
                args.streams as usize,
                args.sftp_chunk,
            ),
            sample,
        ),
        WorkloadKind::Doq => harness::run(
            &plan,
            doq::Doq::new(
                connections,
                threads,
                args.streams as usize,
                args.queries_per_connection,
                &args.dns_zone,
                args.dns_names,
                args.doq_rate,
            )?,
            sample,
        ),
    };
    // a transfer is sampled once its last byte has moved
    let end = end.unwrap_or_else(|| ServerSample::take(pid, proc.as_mut()));
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    let seconds = match workload {
        // all transfers start together: the slowest one's time is the run's
        WorkloadKind::Bulk | WorkloadKind::SshCat | WorkloadKind::StreamBulk => {
            tally.latency.max() as f64 / 1e6
        }
        // many files per session: until the last one ended
        WorkloadKind::SftpGet | WorkloadKind::SftpPut => tally.span_s,
        _ => plan.duration.as_secs_f64(),
    };
    // the samples' interval, scaled to the headline's (they differ by the sampling latency)
    let sampled = end.at.saturating_duration_since(start.at).as_secs_f64();
    let scale = |a: f64, b: f64| (sampled > 0.0).then(|| (b - a) * seconds / sampled);
    let server_cpu_s = start.cpu_s.zip(end.cpu_s).and_then(|(a, b)| scale(a, b));
    let server_context_switches = start
        .context_switches
        .zip(end.context_switches)
        .and_then(|(a, b)| scale(a as f64, b as f64))
        .map(|v| v.round() as u64);
    let server_io = start.counters.zip(end.counters).map(|(a, b)| b.since(&a));
    let rss_per_connection = match (workload, rss_before, start.rss) {
        (WorkloadKind::Idle, Some(before), Some(after)) if tally.operations > 0 => {
            Some((after as f64 - before as f64) / tally.operations as f64)
        }
        _ => None,
    };
    let label = if split.is_some() {
        format!("{label}, cores split")
    } else {
        label
    };
    let description = match workload {
        WorkloadKind::Rr => format!(
            "{label}: {} client, {threads} client threads, {connections} conns x {} streams, {} B each way",
            if args.client == ClientKind::Quinn { "quinn-perf-like" } else { "alknet" },
            args.streams, args.size
        ),
        WorkloadKind::PerfRr => format!(
            "{label}: {} client, {threads} client threads, {connections} conns x {} bi requests, upload {} B, download {} B",
            if args.client == ClientKind::Quinn { "quinn-perf-like" } else { "alknet" },
            args.streams, args.upload_size, args.download_size
        ),
        WorkloadKind::Call => format!(
            "{label}: {threads} client threads, {connections} conns x {} calls in flight, echo of {} B",
            args.streams, args.size
        ),
        WorkloadKind::SshCat => format!(
            "{label}: {threads} client threads, {connections} SSH sessions x `head -c {}`",
            args.bytes
        ),
        WorkloadKind::SshRr => format!(
            "{label}: {threads} client threads, {connections} SSH sessions ping-ponging {} B through cat",
            args.size
        ),
        WorkloadKind::Bulk => format!(
            "{label}: {threads} client threads, {connections} conns x {} B {:?}",
            args.bytes, args.direction
        ),
        WorkloadKind::Handshake => format!(
            "{label}: {} client, {threads} client threads, {connections} connect loops, resumption {}, {:?} certificate",
            if args.client == ClientKind::Quinn { "quinn (tokio current-thread)" } else { "alknet" },
            args.resumption, args.tls_key
        ),
        WorkloadKind::H3 => format!(
            "{label}: {:?} client, {threads} client threads, {connections} conns x {} requests in flight, GET /health over HTTP/3",
            args.h3_client, args.streams
        ),
        WorkloadKind::StreamRr => format!(
            "{label}: {threads} client threads, {connections} {:?} conns x 1 stream ping-ponging {} B through alknet/echo",
            args.transport, args.size
        ),
        WorkloadKind::StreamBulk => format!(
            "{label}: {threads} client threads, {connections} {:?} conns x 1 stream echoing {} B (in and out)",
            args.transport, args.bytes
        ),
        WorkloadKind::Idle => format!("{label}: {connections} idle connections"),
        WorkloadKind::SftpGet | WorkloadKind::SftpPut => format!(
            "{label}: {threads} client threads, {connections} alknet/sftp sessions x {}, {} requests in flight per file{}",
            match sftp_shape(args) {
                sftp::SftpShape::OneFile { bytes } => format!("1 file of {bytes} B"),
                sftp::SftpShape::Files { count, size, in_flight } =>
                    format!("{count} files of {size} B ({in_flight} at a time)"),
            },
            args.streams,
            args.sftp_chunk.map_or(String::new(), |c| format!(", {c} B per request")),
        ),
        WorkloadKind::Doq => format!(
            "{label}: {threads} client threads, {connections} conns x {} queries in flight{}, {} queries per connection, A for {} names of {}",
            args.streams,
            match args.doq_rate {
                0 => String::new(),
                r => format!(" (at most; paced at {r} queries/s in all)"),
            },
            match args.queries_per_connection {
                0 => "unlimited".to_string(),
                n => n.to_string(),
            },
            args.dns_names,
            args.dns_zone
        ),
    };
    let name = match (workload, args.sftp_files) {
        (WorkloadKind::SftpGet, 1..) => "sftp-get-files",
        (WorkloadKind::SftpPut, 1..) => "sftp-put-files",
        _ => workload_name(workload),
    };
    Ok(Measurement {
        workload: name,
        description,
        seconds,
        tally,
        server_cpu_s,
        server_context_switches,
        server_io,
        rss_per_connection,
    })
}

/// The server's counters at one instant (each `None` where it cannot be read).
struct ServerSample {
    at: Instant,
    cpu_s: Option<f64>,
    rss: Option<u64>,
    context_switches: Option<u64>,
    counters: Option<server::EngineCounters>,
}

impl ServerSample {
    fn take(pid: Option<u32>, proc: Option<&mut ServerProc>) -> Self {
        Self {
            at: Instant::now(),
            cpu_s: pid.and_then(server::cpu_seconds),
            rss: pid.and_then(server::rss_bytes),
            context_switches: pid.and_then(server::context_switches),
            counters: proc.and_then(ServerProc::counters),
        }
    }
}

/// Workloads that move a fixed amount once (measured until the last transfer ends)
/// rather than loading for a fixed window.
fn is_transfer(w: WorkloadKind) -> bool {
    matches!(
        w,
        WorkloadKind::Bulk
            | WorkloadKind::SshCat
            | WorkloadKind::StreamBulk
            | WorkloadKind::SftpGet
            | WorkloadKind::SftpPut
    )
}

/// What each sftp-get/sftp-put session transfers.
fn sftp_shape(args: &RunArgs) -> sftp::SftpShape {
    match args.sftp_files {
        0 => sftp::SftpShape::OneFile { bytes: args.bytes },
        count => sftp::SftpShape::Files {
            count,
            size: u64::from(args.size),
            in_flight: args.sftp_files_in_flight as usize,
        },
    }
}

/// Sleeps until `until`, drawing a progress line on stderr when it is a terminal.
fn wait_with_progress(until: Instant, from: Instant, label: &str) {
    let tty = std::io::stderr().is_terminal();
    loop {
        let now = Instant::now();
        if now >= until {
            return;
        }
        if tty {
            let total = until.saturating_duration_since(from).as_secs_f64();
            let done = now.saturating_duration_since(from).as_secs_f64();
            eprint!("\r\x1b[2K{label} {done:.1}/{total:.1} s");
        }
        std::thread::sleep((until - now).min(Duration::from_millis(200)));
    }
}

fn resolve(s: &str, fingerprint: Fingerprint) -> Result<Target, String> {
    let (host, _) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    let addr: SocketAddr = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))?;
    Ok(Target {
        addr,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        fingerprint,
        quic_version: alknet_runtime::QuicVersion::V1,
    })
}

fn run_probe(p: &ProbeArgs) -> Result<(), String> {
    let d = Duration::from_secs(p.seconds);
    let gso = probe::udp_loopback_limit(p.payload, d).map_err(|e| e.to_string())?;
    let plain = probe::udp_loopback_limit_unbatched(p.payload, d).map_err(|e| e.to_string())?;
    let seal = probe::aes128gcm_seal_limit(p.payload, d);
    println!(
        "udp loopback, {} B, GSO x{} + GRO: {:.0} datagrams/s, {:.2} Gbit/s",
        gso.payload, gso.segments_per_send, gso.datagrams_per_sec, gso.gbit_per_sec
    );
    println!(
        "udp loopback, {} B, one datagram per send: {:.0} datagrams/s, {:.2} Gbit/s",
        plain.payload, plain.datagrams_per_sec, plain.gbit_per_sec
    );
    println!(
        "aes-128-gcm seal, {} B packets, one core: {:.0} packets/s, {:.2} Gbit/s",
        seal.packet, seal.packets_per_sec, seal.gbit_per_sec
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_subcommand_s_arguments_are_consistent() {
        // clap checks argument names only when a command is built, in debug builds: a
        // workload flag that collides with another subcommand's (as --rate once did with
        // flood's) would otherwise surface only when that subcommand runs
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
