//! `ssh-cat` and `ssh-rr`: SSH sessions over `alknet/ssh`, to measure what the SSH layer
//! and its monoio ⇄ tokio bridge cost next to plain QUIC streams (`bulk`, `rr`).
//!
//! Each connection opens one stream (monoio) whose bytes are bridged to a russh client on
//! the process's tokio runtime (`alknet_ssh::bridge`, as the server does), authenticates
//! with the load test's key, and then:
//! - `ssh-cat` runs `head -c BYTES /dev/zero` and reads stdout to the end: throughput of a
//!   large `cat` (compare with `bulk --direction download` of the same size);
//! - `ssh-rr` runs `cat` and ping-pongs `--size` bytes on the channel for the run: round
//!   trips per second and their latency (each one crosses the bridge twice per side).
//!
//! The load test's SSH key is fixed ([`LOADTEST_KEY_SEED`]) so the server child can know
//! it without a file: it is a benchmarking identity for loopback servers the harness
//! starts itself, never a credential.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use alknet_runtime::Connection;
use alknet_ssh::russh::client::{self, Handle, Msg};
use alknet_ssh::russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use alknet_ssh::russh::{self, Channel, ChannelMsg};

use crate::harness::{ClientThread, Schedule, Tally, Workload};
use crate::rr::split;

/// Seed of the load test's ed25519 client key (see the module comment).
pub const LOADTEST_KEY_SEED: [u8; 32] = *b"alknet-loadtest-ssh-client-key!!";
/// A round trip or session step slower than this counts as an error.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The load test's client key.
pub fn loadtest_key() -> PrivateKey {
    PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(
        &LOADTEST_KEY_SEED,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshMode {
    /// Stream `bytes` of stdout from `head -c`.
    Cat { bytes: u64 },
    /// Ping-pong `size` bytes through `cat`.
    Rr { size: usize },
}

#[derive(Debug, Clone)]
pub struct Ssh {
    pub connections: Vec<usize>,
    pub mode: SshMode,
}

impl Ssh {
    pub fn new(connections: usize, threads: usize, mode: SshMode) -> Self {
        Self {
            connections: split(connections, threads),
            mode,
        }
    }
}

struct Client;

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true) // the QUIC handshake pinned the server's certificate
    }
}

impl Workload for Ssh {
    async fn run_thread(
        self,
        thread: ClientThread,
        schedule: Arc<OnceLock<Schedule>>,
        ready: mpsc::Sender<()>,
    ) -> Tally {
        let mut tally = Tally::default();
        let n = self.connections.get(thread.index).copied().unwrap_or(0);
        let conns = thread.connect_many(n, &mut tally).await;
        let rt = match alknet_ssh::TokioBridge::start(2) {
            Ok(rt) => rt,
            Err(e) => {
                tally.error("tokio", || e.to_string());
                let _ = ready.send(());
                return tally;
            }
        };
        // SSH sessions are set up before the run starts, like the connections
        let mut sessions = Vec::new();
        for conn in &conns {
            match open_session(&rt, conn, self.mode).await {
                Ok(s) => sessions.push(s),
                Err(e) => tally.error("session", || e),
            }
        }
        let _ = ready.send(());
        if let Some(sched) = crate::harness::wait_for_start(&schedule).await {
            let cpu0 = crate::server::cpu_seconds(std::process::id());
            let (done_tx, done_rx) = async_channel::unbounded();
            let count = sessions.len();
            for (handle, channel) in sessions.drain(..) {
                let done = done_tx.clone();
                let mode = self.mode;
                rt.spawn(async move {
                    let t = run_session(handle, channel, mode, sched).await;
                    let _ = done.send(t).await;
                });
            }
            for _ in 0..count {
                match done_rx.recv().await {
                    Ok(t) => tally.merge(t),
                    Err(_) => tally.error("session", || "session task vanished".into()),
                }
            }
            // the whole client process (the tokio threads run the SSH work); counted once
            if thread.index == 0 {
                let cpu1 = crate::server::cpu_seconds(std::process::id());
                tally.cpu_s = cpu1.zip(cpu0).map_or(0.0, |(b, a)| b - a);
            }
        }
        thread.close_all(conns).await;
        tally.client = thread.endpoint.stats();
        tally
    }
}

type Session = (Handle<Client>, Channel<Msg>);

/// Opens the bridged stream here (monoio), then the SSH session and its channel on tokio.
async fn open_session(
    rt: &tokio::runtime::Handle,
    conn: &Connection,
    mode: SshMode,
) -> Result<Session, String> {
    let stream = alknet_ssh::open_bridged_stream(conn)
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = async_channel::bounded(1);
    rt.spawn(async move {
        let r = async {
            let config = Arc::new(client::Config::default());
            let mut handle = client::connect_stream(config, stream, Client)
                .await
                .map_err(|e| format!("ssh handshake: {e}"))?;
            let key = PrivateKeyWithHashAlg::new(Arc::new(loadtest_key()), None);
            let auth = handle
                .authenticate_publickey("loadtest", key)
                .await
                .map_err(|e| format!("ssh auth: {e}"))?;
            if !auth.success() {
                return Err("the server refused the load test key (is it alknet --target?)".into());
            }
            let channel = handle
                .channel_open_session()
                .await
                .map_err(|e| format!("ssh session channel: {e}"))?;
            let command = match mode {
                SshMode::Cat { bytes } => format!("head -c {bytes} /dev/zero"),
                SshMode::Rr { .. } => "cat".to_string(),
            };
            channel
                .exec(true, command)
                .await
                .map_err(|e| format!("ssh exec: {e}"))?;
            Ok((handle, channel))
        }
        .await;
        let _ = tx.send(r).await;
    });
    rx.recv()
        .await
        .map_err(|_| "session setup task vanished".to_string())?
}

async fn run_session(
    handle: Handle<Client>,
    mut channel: Channel<Msg>,
    mode: SshMode,
    sched: Schedule,
) -> Tally {
    let mut tally = Tally::default();
    match mode {
        SshMode::Cat { bytes } => {
            tokio::time::sleep_until(sched.measure_from.into()).await;
            let started = Instant::now();
            let mut got = 0u64;
            let mut status = None;
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => got += data.len() as u64,
                    ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    _ => {}
                }
            }
            match status {
                Some(0) if got == bytes => tally.record(started.elapsed(), got),
                _ => tally.error("cat", || format!("{got} of {bytes} bytes, exit {status:?}")),
            }
        }
        SshMode::Rr { size } => {
            let ping = vec![0x5a; size.max(1)];
            let end = sched.end;
            'run: while Instant::now() < end {
                let started = Instant::now();
                let step = async {
                    channel
                        .data(&ping[..])
                        .await
                        .map_err(|e| format!("write: {e}"))?;
                    let mut got = 0;
                    while got < ping.len() {
                        match channel.wait().await {
                            Some(ChannelMsg::Data { data }) => got += data.len(),
                            Some(_) => {}
                            None => return Err("channel closed".to_string()),
                        }
                    }
                    Ok(())
                };
                match tokio::time::timeout(STEP_TIMEOUT.min(end - started + STEP_TIMEOUT), step)
                    .await
                {
                    Ok(Ok(())) => {
                        let done = Instant::now();
                        if sched.measuring(done) {
                            tally.record(done - started, 2 * ping.len() as u64);
                        }
                    }
                    Ok(Err(e)) => {
                        tally.error("round trip", || e);
                        break 'run;
                    }
                    Err(_) => {
                        tally.error("timeout", || "round trip timed out".into());
                        break 'run;
                    }
                }
            }
            let _ = channel.eof().await;
        }
    }
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "done", "en")
        .await;
    tally
}
