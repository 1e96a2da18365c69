//! `alknet-hq-quinn`: an HTTP/0.9 (`hq-interop`) client on quinn, for the QUIC interop case
//! that aioquic cannot play: `ecn`. aioquic neither marks its packets ECT nor reports ECN
//! counts in its ACKs; quinn (an implementation independent of this project, on tokio and
//! quinn-udp) does both, so with it the case checks both directions as the interop runner
//! does: the client's packets arrive marked, and each side keeps marking to the end, which
//! it only does while the other side's ACKs carry ECN counts that validate (RFC 9000,
//! section 13.4.2).
//!
//! ```text
//! alknet-hq-quinn --host 127.0.0.1 --port 4433 --www DIR --out client.json [--timeout S]
//! ```
//! Downloads every file of `DIR` (`GET /name\r\n` on its own bidirectional stream), compares
//! each byte for byte with the file, and writes what `hq_client.py check` reads.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use alknet_runtime::tls::{client_rustls_config, ServerTrust};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    host: IpAddr,
    #[arg(long)]
    port: u16,
    /// The files to fetch (every regular file in it) and to compare with.
    #[arg(long)]
    www: PathBuf,
    /// Where the JSON result goes.
    #[arg(long)]
    out: PathBuf,
    /// Seconds for the whole run.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// The largest response read into memory (the cases' files are at most a few MiB).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let result = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(args.timeout), fetch_all(&args)).await
    });
    let out = match result {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => json!({ "error": e, "files": {} }),
        Err(_) => json!({ "error": format!("timed out after {}s", args.timeout), "files": {} }),
    };
    let mut out = out;
    out["seconds"] = json!(started.elapsed().as_secs_f64());
    if let Err(e) = std::fs::write(&args.out, out.to_string()) {
        eprintln!("{}: {e}", args.out.display());
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

async fn fetch_all(args: &Args) -> Result<serde_json::Value, String> {
    let mut names: Vec<String> = std::fs::read_dir(&args.www)
        .map_err(|e| format!("{}: {e}", args.www.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();

    let bind: SocketAddr = match args.host {
        IpAddr::V4(_) => "0.0.0.0:0",
        IpAddr::V6(_) => "[::]:0",
    }
    .parse()
    .map_err(|e| format!("{e}"))?;
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| format!("endpoint: {e}"))?;
    // the server's certificate is the throwaway one the case generated
    // (stock quinn: its quinn-proto is not the engine's vendored copy, so it takes the
    // rustls config, not the engine's QUIC wrapper)
    let rustls_config = client_rustls_config(
        &ServerTrust::Insecure,
        vec![b"hq-interop".to_vec()],
        None,
        false,
    )
    .map_err(|e| e.to_string())?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(rustls_config)
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let server = SocketAddr::new(args.host, args.port);
    let conn = endpoint
        .connect(server, "localhost")
        .map_err(|e| format!("connect: {e}"))?
        .await
        .map_err(|e| format!("handshake: {e}"))?;

    let mut files = serde_json::Map::new();
    let mut bytes = 0usize;
    for name in &names {
        let want = std::fs::read(args.www.join(name)).map_err(|e| format!("{name}: {e}"))?;
        let verdict = match fetch(&conn, name).await {
            Ok(got) if got == want => {
                bytes += got.len();
                "ok".to_string()
            }
            Ok(got) => format!("{} bytes, want {}", got.len(), want.len()),
            Err(e) => format!("error: {e}"),
        };
        files.insert(name.clone(), json!(verdict));
    }
    let stats = conn.stats();
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    Ok(json!({
        "client": "quinn",
        "error": null,
        "files": files,
        "bytes": bytes,
        "connections": [{ "resumed": false }],
        "probes": [],
        "preferred_port": null,
        "received_frames": {},
        "received_packet_types": {},
        "sent_packet_types": {},
        "udp_tx_datagrams": stats.udp_tx.datagrams,
        "udp_rx_datagrams": stats.udp_rx.datagrams,
        "congestion_events": stats.path.congestion_events,
    }))
}

/// One HTTP/0.9 request on its own stream, read to FIN.
async fn fetch(conn: &quinn::Connection, name: &str) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(format!("GET /{name}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    recv.read_to_end(MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| e.to_string())
}
