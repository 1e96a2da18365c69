//! `alknet socks`: a local SOCKS5 proxy whose connections leave from the server. One
//! `alknet/ssh` connection carries one SSH session; each SOCKS CONNECT becomes a
//! `direct-tcpip` channel on it (as `ssh -D` does), so the server's ACL applies.
//!
//! Threads: the QUIC connection lives on a monoio runtime (the engine's client), the SSH
//! client (russh) and the local TCP listener on a small tokio runtime; the SSH bytes cross
//! between them through the engine's bridge (`alknet_ssh::bridge`), as on the server.
//! The server is authenticated by TLS (the pinned fingerprint or CA), so the SSH host key
//! inside that channel is accepted as the server presents it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use alknet_proto::socks5::{
    encode_method_selection, parse_greeting, parse_request, Command, Reply, METHOD_NONE_ACCEPTABLE,
    METHOD_NO_AUTH,
};
use alknet_runtime::rt::run_local;
use alknet_runtime::Limits;
use alknet_ssh::russh;
use alknet_ssh::russh::client::{self, Handle};
use alknet_ssh::russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::connect::{close_and_wait, ServerArgs};

/// A SOCKS client has this long to finish its greeting and request.
pub const SOCKS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// SOCKS connections served at once; more wait for a free slot.
pub const MAX_SOCKS_CONNECTIONS: usize = 1024;
/// Largest greeting + request (a 255-byte domain name fits with room to spare).
const MAX_SOCKS_HEADER: usize = 600;
/// How often the proxy checks that its SSH session is still up.
const SESSION_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Keep-alive on the QUIC connection so an idle proxy outlives the idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct SocksArgs {
    /// Local address of the SOCKS5 proxy
    #[arg(long, default_value = "127.0.0.1:1080")]
    listen: SocketAddr,
    /// SSH private key (OpenSSH format) to authenticate with
    #[arg(long, short = 'i')]
    identity: PathBuf,
    /// SSH user name (the server's identities come from the key; the name is informative)
    #[arg(long, default_value = "alknet")]
    user: String,
    #[command(flatten)]
    server: ServerArgs,
}

struct AcceptTlsAuthenticatedHost;

impl client::Handler for AcceptTlsAuthenticatedHost {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        // the QUIC handshake already authenticated the server (see the module comment)
        Ok(true)
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("alknet socks: {msg}");
    ExitCode::FAILURE
}

pub fn run(args: SocksArgs) -> ExitCode {
    let key = match russh::keys::load_secret_key(&args.identity, None) {
        Ok(k) => Arc::new(k),
        Err(e) => return fail(format!("{}: {e}", args.identity.display())),
    };
    let dial = match args.server.resolve(alknet_ssh::ALPN) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    // the QUIC side: connect, open the SSH stream, hand it over, stay up until told
    let (stream_tx, stream_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let quic = std::thread::spawn(move || {
        run_local(|_| async move {
            let limits = Limits {
                keep_alive_interval: KEEP_ALIVE,
                ..Limits::default()
            };
            let (endpoint, conn) = match dial.connect(&limits).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = stream_tx.send(Err(e));
                    return;
                }
            };
            match alknet_ssh::open_bridged_stream(&conn).await {
                Ok(s) => {
                    let _ = stream_tx.send(Ok(s));
                }
                Err(e) => {
                    let _ = stream_tx.send(Err(e.to_string()));
                    return;
                }
            }
            // Ctrl-C, SIGTERM or SIGHUP: the server hears the close (see `hangup.rs`)
            let mut hangup = crate::hangup::Hangup::install();
            let signalled = monoio::select! {
                _ = stop_rx.recv() => false,
                _ = conn.closed() => false,
                () = hangup.caught() => true,
            };
            close_and_wait(&endpoint, conn).await;
            if signalled {
                std::process::exit(0);
            }
        })
    });
    let stream = match stream_rx.recv() {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(e),
        Err(_) => return fail("the QUIC thread ended before connecting"),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("alknet-socks")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("tokio runtime: {e}")),
    };
    let result = rt.block_on(serve(args.listen, args.user, key, stream));
    let _ = stop_tx.try_send(());
    drop(rt);
    let _ = quic.join();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

async fn serve(
    listen: SocketAddr,
    user: String,
    key: Arc<russh::keys::PrivateKey>,
    stream: alknet_ssh::ByteStream,
) -> Result<(), String> {
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(KEEP_ALIVE),
        ..Default::default()
    });
    let mut session = client::connect_stream(config, stream, AcceptTlsAuthenticatedHost)
        .await
        .map_err(|e| format!("SSH handshake: {e}"))?;
    let hash = session
        .best_supported_rsa_hash()
        .await
        .map_err(|e| format!("SSH: {e}"))?
        .flatten();
    let auth = session
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
        .await
        .map_err(|e| format!("SSH authentication: {e}"))?;
    if !auth.success() {
        return Err("the server refused the key".into());
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listen {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("alknet socks: SOCKS5 proxy listening on {local}");
    let session = Arc::new(session);
    let slots = Arc::new(Semaphore::new(MAX_SOCKS_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = accepted.map_err(|e| format!("accept: {e}"))?;
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return Ok(());
                };
                let session = session.clone();
                tokio::spawn(async move {
                    if let Err(e) = proxy(tcp, peer, &session).await {
                        tracing::info!(%peer, "SOCKS connection ended: {e}");
                    }
                    drop(slot);
                });
            }
            _ = tokio::time::sleep(SESSION_CHECK_INTERVAL) => {
                if session.is_closed() {
                    return Err("the SSH session ended".into());
                }
            }
        }
    }
}

/// Serves one SOCKS client: greeting, CONNECT request, then bytes both ways over a
/// `direct-tcpip` channel.
async fn proxy(
    mut tcp: TcpStream,
    peer: SocketAddr,
    session: &Handle<AcceptTlsAuthenticatedHost>,
) -> Result<(), String> {
    let request = tokio::time::timeout(SOCKS_HANDSHAKE_TIMEOUT, handshake(&mut tcp))
        .await
        .map_err(|_| "SOCKS handshake timed out".to_string())??;
    let unspecified: SocketAddr = (std::net::Ipv4Addr::UNSPECIFIED, 0).into();
    if request.command != Command::Connect {
        let _ = tcp
            .write_all(&Reply::CommandNotSupported.encode(unspecified))
            .await;
        return Err(format!("{:?} is not supported", request.command));
    }
    let target = format!("{}:{}", request.address, request.port);
    let channel = match session
        .channel_open_direct_tcpip(
            request.address.to_string(),
            u32::from(request.port),
            peer.ip().to_string(),
            u32::from(peer.port()),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let reply = match &e {
                russh::Error::ChannelOpenFailure(f) => match f {
                    russh::ChannelOpenFailure::AdministrativelyProhibited => Reply::NotAllowed,
                    russh::ChannelOpenFailure::ConnectFailed => Reply::HostUnreachable,
                    _ => Reply::GeneralFailure,
                },
                _ => Reply::GeneralFailure,
            };
            let _ = tcp.write_all(&reply.encode(unspecified)).await;
            return Err(format!("{target}: {e}"));
        }
    };
    tcp.write_all(&Reply::Succeeded.encode(unspecified))
        .await
        .map_err(|e| e.to_string())?;
    let mut remote = channel.into_stream();
    tokio::io::copy_bidirectional(&mut tcp, &mut remote)
        .await
        .map_err(|e| format!("{target}: {e}"))?;
    Ok(())
}

/// Reads the greeting and the request, answering the greeting.
async fn handshake(tcp: &mut TcpStream) -> Result<alknet_proto::socks5::Request, String> {
    let mut buf = Vec::with_capacity(64);
    let used = loop {
        match parse_greeting(&buf).map_err(|e| e.to_string())? {
            Some((greeting, used)) => {
                if !greeting.offers(METHOD_NO_AUTH) {
                    let _ = tcp
                        .write_all(&encode_method_selection(METHOD_NONE_ACCEPTABLE))
                        .await;
                    return Err("the client offers no method without authentication".into());
                }
                tcp.write_all(&encode_method_selection(METHOD_NO_AUTH))
                    .await
                    .map_err(|e| e.to_string())?;
                break used;
            }
            None => read_more(tcp, &mut buf).await?,
        }
    };
    buf.drain(..used);
    loop {
        match parse_request(&buf) {
            Ok(Some((request, _))) => return Ok(request),
            Ok(None) => read_more(tcp, &mut buf).await?,
            Err(e) => {
                if let Some(reply) = e.reply() {
                    let unspecified: SocketAddr = (std::net::Ipv4Addr::UNSPECIFIED, 0).into();
                    let _ = tcp.write_all(&reply.encode(unspecified)).await;
                }
                return Err(e.to_string());
            }
        }
    }
}

async fn read_more(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    if buf.len() >= MAX_SOCKS_HEADER {
        return Err("SOCKS header too long".into());
    }
    let mut chunk = [0u8; 256];
    let n = tcp.read(&mut chunk).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("the client closed during the SOCKS handshake".into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}
