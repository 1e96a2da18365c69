//! `alknet`: serve QUIC on one UDP port with a protocol per ALPN, or connect to one.

mod call;
mod config;
mod connect;
mod eyeballs;
mod git;
mod hangup;
mod logging;
mod peer;
mod reload;
mod sftp;
mod socks;
mod systemd;
mod vault;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::FileConfig;

alknet_runtime::mimalloc_allocator!();

#[derive(Parser)]
#[command(
    name = "alknet",
    version,
    about = "One UDP port, QUIC, a service per ALPN"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (with no options: the embedded default config on 127.0.0.1:4433)
    Serve {
        /// TOML config file (see `alknet config`)
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override `listen`
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Override `workers` (0 = one per core)
        #[arg(long)]
        workers: Option<usize>,
        /// Override `data_dir`
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Reload when the --config file changes (checked every second), as on SIGHUP
        #[arg(long, requires = "config")]
        watch_config: bool,
        /// Check the configuration and exit (0: it would start; 78 and the error: it would
        /// not), binding nothing: parse and limits, handlers and their sections (DNS zones
        /// included), the vault, the TLS certificate and key, the identity store. Keys a
        /// first start generates are generated into the data directory, as `serve` would.
        #[arg(long, conflicts_with = "watch_config")]
        check: bool,
    },
    /// Open one bidirectional stream and pipe stdin/stdout through it (works as an OpenSSH
    /// ProxyCommand)
    Connect(connect::ConnectArgs),
    /// Call an alknet/call operation and print its JSON result (errors: code on stderr,
    /// exit status 2)
    Call(call::CallArgs),
    /// Run a local SOCKS5 proxy whose connections leave from the server, over one
    /// alknet/ssh session (each CONNECT is a direct-tcpip channel, as with ssh -D)
    Socks(socks::SocksArgs),
    /// Ask a running node to re-read its config file and apply what can change live
    /// (certificate, client-auth policy, identities, admission and transport limits,
    /// enabled handlers and their sections, log filter); prints what changed (needs
    /// node:admin)
    Reload(call::ReloadArgs),
    /// Print the SHA-256 fingerprint of the server certificate (generating it if needed)
    Fingerprint {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the default configuration file
    Config,
    /// Manage the peers of the SQLite identity store (names, certificate fingerprints,
    /// tokens, scopes)
    Peer(peer::PeerArgs),
    /// The key vault: one BIP39 mnemonic for the node's TLS and SSH host keys and named
    /// client identities (init, restore, list, derive, export-ssh, export-tls, sign,
    /// verify, show-mnemonic)
    Vault(vault::VaultArgs),
    /// Make a standalone Ed25519 key (OpenSSH and/or TLS), without a vault
    Keygen(vault::KeygenArgs),
    /// alknet/git repositories: `alknet git init PATH` creates a bare repository under
    /// [git] root
    Git(git::GitArgs),
}

fn init_logging(default: &str) {
    logging::init(default);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            workers,
            data_dir,
            watch_config,
            check,
        } => {
            init_logging(if check { "warn" } else { "info" });
            let mode = match (check, watch_config) {
                (true, _) => ServeMode::Check,
                (false, true) => ServeMode::WatchConfig,
                (false, false) => ServeMode::Serve,
            };
            serve(config, listen, workers, data_dir, mode)
        }
        Command::Connect(args) => {
            init_logging("warn");
            connect::run(args)
        }
        Command::Call(args) => {
            init_logging("warn");
            call::run(args)
        }
        Command::Reload(args) => {
            init_logging("warn");
            call::reload(args)
        }
        Command::Socks(args) => {
            init_logging("warn");
            socks::run(args)
        }
        Command::Fingerprint { config, data_dir } => {
            init_logging("warn");
            let mut cfg = match load_config(config, data_dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Err(e) = cfg.unlock_vault() {
                eprintln!("alknet: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            match cfg.tls_identity() {
                Ok((id, _)) => {
                    println!("{}", id.fingerprint());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("alknet: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config => {
            print!("{}", config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Command::Peer(args) => {
            init_logging("warn");
            peer::run(args)
        }
        Command::Vault(args) => {
            init_logging("warn");
            vault::run(args)
        }
        Command::Keygen(args) => {
            init_logging("warn");
            vault::keygen(args)
        }
        Command::Git(args) => {
            init_logging("warn");
            git::run(args)
        }
    }
}

/// Exit code for configuration errors (as sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn load_config(path: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<FileConfig, ExitCode> {
    match FileConfig::load(path.as_deref()) {
        Ok(mut c) => {
            if data_dir.is_some() {
                c.data_dir = data_dir;
            }
            Ok(c)
        }
        Err(e) => {
            eprintln!("alknet: {e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// Says at start-up that `SSLKEYLOGFILE` is in effect (the secrets of every connection go
/// to that file: whoever reads it decrypts the node's traffic), or that it names a file
/// the process cannot open, which rustls would otherwise only note in a log this binary
/// does not collect.
fn warn_of_key_log() {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(path) = alknet_runtime::tls::key_log_path() else {
        return;
    };
    let opened = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path);
    match opened {
        Ok(_) => tracing::warn!(
            path = %path.display(),
            "{} is set: the TLS secrets of every connection are written to this file \
             (whoever reads it can decrypt this node's traffic)",
            alknet_runtime::tls::KEY_LOG_ENV
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            "{} is set but its file cannot be opened ({e}): no secrets are logged",
            alknet_runtime::tls::KEY_LOG_ENV
        ),
    }
}

/// What `alknet serve` is asked to do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ServeMode {
    Serve,
    /// Serve, reloading when the config file changes.
    WatchConfig,
    /// `--check`: build what serving needs without binding anything, then exit.
    Check,
}

fn serve(
    config: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    workers: Option<usize>,
    data_dir: Option<PathBuf>,
    mode: ServeMode,
) -> ExitCode {
    let watch_config = mode == ServeMode::WatchConfig;
    // first of all: a SIGHUP that arrives while the node starts (a service manager
    // reloading early) is held and applied once the reloader runs, instead of killing the
    // process with SIGHUP's default action
    let hangups = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]);
    // the file as it is read now: a change made while the node starts is a change too
    let watched = config
        .as_ref()
        .filter(|_| watch_config)
        .map(|p| (p.clone(), reload::file_stamp(p)));
    let source = reload::ConfigSource {
        path: config,
        data_dir,
    };
    // the text as a table too: a reload compares the file's sections with it
    let (table, mut cfg) = match source.read() {
        Ok(read) => read,
        Err(e) => {
            eprintln!("alknet: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // --check reports on stdout and keeps the log to warnings (the filter was validated
    // with the rest of the config)
    if mode != ServeMode::Check {
        if let Err(e) = logging::set_filter(&cfg.log.filter) {
            eprintln!("alknet: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let (reload_tx, reload_rx) = std::sync::mpsc::channel();
    cfg.reload_requests = Some(reload_tx.clone());
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(w) = workers {
        cfg.workers = w;
    }
    let prepared = (|| -> Result<_, Box<dyn std::error::Error>> {
        // first: the handlers and the TLS identity take their keys from it
        cfg.unlock_vault()?;
        let registry = cfg.registry()?;
        let mut hooks = alknet_runtime::WorkerHooks::new();
        if mode == ServeMode::Check {
            cfg.check_dns_classic()?;
        } else if let Some(dns) = cfg.bind_dns_classic()? {
            let addrs = dns.addrs();
            tracing::info!(udp = ?addrs.udp, tcp = ?addrs.tcp, "classic dns bound, served on the workers");
            hooks.push(dns);
        }
        let provider = cfg.identity_provider()?;
        let (tls, generated) = cfg.tls_identity()?;
        let host_key = cfg.quic_host_key()?;
        let (tcp, http) = cfg.tcp_setup()?;
        Ok((
            registry, provider, tls, generated, host_key, tcp, http, hooks,
        ))
    })();
    let (registry, provider, tls, generated, (host_key, host_key_made), tcp, http, hooks) =
        match prepared {
            Ok(p) => p,
            Err(e) => {
                eprintln!("alknet: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
    if mode == ServeMode::Check {
        let alpns: Vec<String> = registry
            .alpns()
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        println!(
            "alknet: config OK ({}): listen {}, handlers {}, certificate fingerprint (sha256) {}",
            source
                .path
                .as_ref()
                .map_or("the embedded default".to_string(), |p| p
                    .display()
                    .to_string()),
            cfg.listen,
            alpns.join(","),
            tls.fingerprint()
        );
        if let Some(dir) = &generated {
            println!(
                "alknet: generated a self-signed certificate in {}",
                dir.display()
            );
        }
        if host_key_made {
            println!(
                "alknet: generated a QUIC host key in {}",
                cfg.data_dir().display()
            );
        }
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = generated {
        tracing::info!("generated a self-signed certificate in {}", dir.display());
    }
    if host_key_made {
        tracing::info!(
            "generated a QUIC host key (stateless-reset and address-token keys) in {}",
            cfg.data_dir().display()
        );
    }
    let mut engine = cfg.engine(tls);
    engine.quic_host_key = Some(host_key);
    let alpns: Vec<String> = registry
        .alpns()
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let tcp_alpns: Vec<String> = tcp
        .offered_alpns(&registry)
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let server =
        match alknet_runtime::start_with_hooks(engine, registry, provider, Some(tcp), hooks) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("alknet: {e}");
                return ExitCode::FAILURE;
            }
        };
    http.set_status(server.status());
    if !tcp_alpns.is_empty() {
        tracing::info!(
            listen = %server.local_addr(),
            alpns = %tcp_alpns.join(","),
            "TLS over TCP listening"
        );
    }
    let drivers: Vec<String> = server.drivers().iter().map(|d| d.to_string()).collect();
    tracing::info!(
        listen = %server.local_addr(),
        workers = server.workers(),
        drivers = %drivers.join(","),
        alpns = %alpns.join(","),
        "alknet serving"
    );
    tracing::info!("certificate fingerprint (sha256): {}", server.fingerprint());
    warn_of_key_log();
    match cfg.publish_node_name(server.local_addr(), &server.fingerprint().to_string()) {
        Ok(Some(name)) => tracing::info!("pkarr node name: {name}"),
        Ok(None) => {}
        Err(e) => tracing::warn!("{e}"),
    }

    // the reloader keeps the config the handlers were built from (and so the DNS zone
    // watcher) for as long as the node runs
    reload::Reloader::new(
        source,
        table,
        cfg,
        server.reload_handle(),
        reload_tx.clone(),
    )
    .spawn(reload_rx);
    if let Some((path, stamp)) = watched {
        reload::watch(path, stamp, reload_tx.clone());
    }
    match hangups {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                for _ in signals.forever() {
                    tracing::info!("SIGHUP: reloading the config");
                    if reload_tx
                        .send(reload::ReloadRequest { reply: None })
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot install the SIGHUP handler: {e}"),
    }

    let trigger = server.shutdown_trigger();
    match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                let mut seen = 0;
                for sig in signals.forever() {
                    seen += 1;
                    if seen == 1 {
                        systemd::notify("STOPPING=1");
                        tracing::info!(
                            signal = sig,
                            "shutting down gracefully (signal again to close now)"
                        );
                        trigger.graceful();
                    } else {
                        tracing::info!(signal = sig, "closing all connections now");
                        trigger.immediate();
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot install signal handlers: {e}"),
    }
    // Ready only now: a SIGHUP sent on READY=1 must find its handler installed.
    systemd::notify(&format!(
        "READY=1\nSTATUS=serving on {} with {} workers",
        server.local_addr(),
        server.workers()
    ));
    let totals = server.join();
    tracing::info!("alknet stopped; counters: {totals:?}");
    ExitCode::SUCCESS
}
