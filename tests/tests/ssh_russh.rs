//! `alknet/ssh` driven by russh's client through the client side of the bridge
//! (`open_bridged_stream`), which OpenSSH cannot exercise: several SSH sessions on one
//! QUIC connection, `signal` requests, the session and channel limits, and the deadline
//! for authenticating.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alknet_runtime::{ConfigIdentityProvider, IdentityEntry, ServerHandle};
use alknet_ssh::russh::client::{self, Handle, Msg};
use alknet_ssh::russh::keys::{
    PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use alknet_ssh::russh::{self, Channel, ChannelMsg, ChannelOpenFailure, Sig};
use alknet_ssh::{ByteStream, SessionPlacement, SshAdapter, SshConfig, TokioBridge};
use alknet_tests::*;

#[derive(Default)]
struct Client {
    /// Where the host keys the server announces (`hostkeys-00@openssh.com`) go.
    announced: Option<tokio::sync::mpsc::UnboundedSender<Vec<PublicKey>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        // the QUIC handshake pinned the server's certificate
        Ok(true)
    }

    async fn openssh_ext_host_keys_announced(
        &mut self,
        keys: Vec<PublicKey>,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = &self.announced {
            let _ = tx.send(keys);
        }
        Ok(())
    }
}

/// An in-process server with `alknet/ssh` only, knowing `key` as "robot" with `scopes`.
fn ssh_server(config: SshConfig, key: &PrivateKey, scopes: &[&str]) -> ServerHandle {
    let host_key = alknet_ssh::generate_ed25519().expect("host key");
    ssh_server_with_host_keys(config, vec![host_key], key, scopes)
}

/// [`ssh_server`] with these host keys.
fn ssh_server_with_host_keys(
    config: SshConfig,
    host_keys: Vec<PrivateKey>,
    key: &PrivateKey,
    scopes: &[&str],
) -> ServerHandle {
    let provider = ConfigIdentityProvider::new(&[IdentityEntry {
        name: "robot".into(),
        fingerprints: vec![alknet_ssh::key_fingerprint(key.public_key()).to_string()],
        tokens: vec![],
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }])
    .expect("identities");
    let adapter = SshAdapter::with_host_keys(host_keys, config, 1).expect("adapter");
    start_server(ServerOptions {
        handlers: vec![Arc::new(adapter)],
        provider: Arc::new(provider),
        ..ServerOptions::default()
    })
}

/// Opens `streams` bridged streams on one QUIC connection to `server` (on this thread's
/// monoio runtime, which keeps driving the connection) and runs `scenario` with them on
/// the bridge's tokio runtime.
fn on_one_connection<F, Fut, T>(server: &ServerHandle, streams: usize, scenario: F) -> T
where
    F: FnOnce(Vec<ByteStream>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    run_client(|| async move {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, server, alknet_ssh::ALPN)
            .await
            .expect("connect");
        let mut opened = Vec::new();
        for _ in 0..streams {
            opened.push(
                alknet_ssh::open_bridged_stream(&conn)
                    .await
                    .expect("open stream"),
            );
        }
        let rt = TokioBridge::start(1).expect("bridge runtime");
        let (tx, rx) = async_channel::bounded(1);
        rt.spawn(async move {
            let _ = tx.send(scenario(opened).await).await;
        });
        let out = rx.recv().await.expect("scenario finished");
        conn.close(0u32.into(), b"");
        out
    })
}

/// The SSH handshake and public-key authentication on `stream`.
async fn session(stream: ByteStream, key: &Arc<PrivateKey>) -> Result<Handle<Client>, String> {
    session_with(stream, key, Client::default()).await
}

/// [`session`] with this client handler.
async fn session_with(
    stream: ByteStream,
    key: &Arc<PrivateKey>,
    client: Client,
) -> Result<Handle<Client>, String> {
    let mut handle = client::connect_stream(Arc::new(client::Config::default()), stream, client)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let auth = handle
        .authenticate_publickey("robot", PrivateKeyWithHashAlg::new(key.clone(), None))
        .await
        .map_err(|e| format!("auth: {e}"))?;
    if !auth.success() {
        return Err("key refused".into());
    }
    Ok(handle)
}

/// Collects a channel's stdout and how it ended.
async fn finish(mut channel: Channel<Msg>) -> (String, Option<u32>, Option<Sig>) {
    let (mut out, mut status, mut signal) = (Vec::new(), None, None);
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(signal_name),
            _ => {}
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), status, signal)
}

/// Waits until the child printed `marker` (so it is ready for a signal).
async fn wait_for(channel: &mut Channel<Msg>, marker: &str) {
    let mut seen = Vec::new();
    while let Some(msg) = channel.wait().await {
        if let ChannelMsg::Data { data } = msg {
            seen.extend_from_slice(&data);
            if String::from_utf8_lossy(&seen).contains(marker) {
                return;
            }
        }
    }
    panic!("the channel ended before {marker:?}");
}

#[test]
fn signals_and_several_sessions_on_one_connection() {
    signals_and_several_sessions(SessionPlacement::Worker);
}

/// The same with the sessions on the bridge runtime (`ssh.session_placement = "bridge"`).
#[test]
fn signals_and_several_sessions_on_the_bridge_runtime() {
    signals_and_several_sessions(SessionPlacement::Bridge);
}

fn signals_and_several_sessions(session_placement: SessionPlacement) {
    let key = Arc::new(alknet_ssh::generate_ed25519().expect("client key"));
    let config = SshConfig {
        session_placement,
        ..SshConfig::default()
    };
    let server = ssh_server(config, &key, &["ssh:exec"]);
    let results = on_one_connection(&server, 3, move |streams| async move {
        let mut handles = Vec::new();
        for s in streams {
            handles.push(session(s, &key).await.expect("session"));
        }
        // session 0: TERM ends `sleep` with exit-signal TERM
        let mut term = handles[0].channel_open_session().await.expect("channel");
        term.exec(true, "echo ready; exec sleep 30")
            .await
            .expect("exec");
        wait_for(&mut term, "ready").await;
        term.signal(Sig::TERM).await.expect("signal");
        // session 1: USR1 is caught by the shell's trap
        let mut usr1 = handles[1].channel_open_session().await.expect("channel");
        usr1.exec(
            true,
            // `ready` only once the background child has become `sleep`: a signal that
            // beats its exec finds it still a copy of the shell, running the inherited
            // trap instead of dying, and the sleep then holds the channel's output for
            // 30 s, longer than the connection's idle timeout (this client sends no
            // keep-alives). Waiting for the fork alone left that window open (a CI run
            // on 2026-12-06 hit it).
            "trap 'echo got-usr1; exit 9' USR1; sleep 30 & \
             while [ \"$(cat /proc/$!/comm 2>/dev/null)\" != sleep ]; do :; done; \
             echo ready; wait",
        )
        .await
        .expect("exec");
        wait_for(&mut usr1, "ready").await;
        usr1.signal(Sig::USR1).await.expect("signal");
        // session 2: an ordinary command, undisturbed by the others
        let plain = handles[2].channel_open_session().await.expect("channel");
        plain.exec(true, "echo three").await.expect("exec");
        let out = (finish(term).await, finish(usr1).await, finish(plain).await);
        drop(handles);
        out
    });
    let (term, usr1, plain) = results;
    assert!(
        matches!(term.2, Some(Sig::TERM)),
        "exit-signal: {:?} (status {:?})",
        term.2,
        term.1
    );
    assert_eq!(usr1.0, "got-usr1\n");
    assert_eq!(usr1.1, Some(9));
    assert_eq!((plain.0.as_str(), plain.1), ("three\n", Some(0)));
    assert!(plain.2.is_none());
}

#[test]
fn session_and_channel_limits_hold() {
    let key = Arc::new(alknet_ssh::generate_ed25519().expect("client key"));
    let config = SshConfig {
        max_sessions_per_connection: 2,
        max_channels_per_session: 2,
        ..SshConfig::default()
    };
    let server = ssh_server(config, &key, &["ssh:exec"]);
    let (third_session, third_channel, after_close) =
        on_one_connection(&server, 3, move |mut streams| async move {
            let extra = streams.pop().expect("third stream");
            let mut handles = Vec::new();
            for s in streams {
                handles.push(session(s, &key).await.expect("session"));
            }
            // a third session on the connection is refused (its stream is reset)
            let third_session = session(extra, &key).await.map(|_| ());
            // a third channel in one session is refused
            let a = handles[0].channel_open_session().await.expect("first");
            let b = handles[0].channel_open_session().await.expect("second");
            let third_channel = handles[0].channel_open_session().await.map(|_| ());
            // closing one frees its slot
            a.close().await.expect("close");
            drop(a);
            let mut after_close = Err(String::new());
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match handles[0].channel_open_session().await {
                    Ok(c) => {
                        after_close = Ok(());
                        drop(c);
                        break;
                    }
                    Err(e) => {
                        after_close = Err(e.to_string());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            drop(b);
            (third_session, third_channel, after_close)
        });
    assert!(third_session.is_err(), "a third session was served");
    assert!(
        matches!(
            third_channel,
            Err(russh::Error::ChannelOpenFailure(
                ChannelOpenFailure::ResourceShortage
            ))
        ),
        "{third_channel:?}"
    );
    after_close.expect("a channel after one was closed");
}

#[test]
fn passwords_are_refused_and_unauthenticated_sessions_time_out() {
    let key = Arc::new(alknet_ssh::generate_ed25519().expect("client key"));
    let config = SshConfig {
        auth_timeout_ms: 500,
        auth_rejection_delay_ms: 10,
        ..SshConfig::default()
    };
    let server = ssh_server(config, &key, &["ssh:exec"]);
    let (password, closed_after) = on_one_connection(&server, 1, move |mut streams| async move {
        let stream = streams.pop().expect("stream");
        let mut handle = client::connect_stream(
            Arc::new(client::Config::default()),
            stream,
            Client::default(),
        )
        .await
        .expect("handshake");
        let password = handle
            .authenticate_password("robot", "hunter2")
            .await
            .map(|r| r.success());
        // then nothing: the server gives up on the session
        let started = Instant::now();
        while !handle.is_closed() && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (password, handle.is_closed().then(|| started.elapsed()))
    });
    assert!(
        matches!(password, Ok(false)),
        "password auth must fail: {password:?}"
    );
    let closed_after = closed_after.expect("the unauthenticated session was not closed");
    assert!(closed_after < Duration::from_secs(10), "{closed_after:?}");
}

/// Host key rotation's protocol, from the client side OpenSSH cannot show: after
/// authentication the server announces every host key, in the order listed (a second
/// ed25519 key, announced only, included); it proves each of them in one
/// `hostkeys-prove-00@openssh.com` (russh's client checks every signature over this
/// session's identifier); a key it does not hold, alone or among its own, is refused
/// (`RequestDenied`) and the session goes on.
#[test]
fn host_keys_are_announced_after_login_and_proved_on_request() {
    let key = Arc::new(alknet_ssh::generate_ed25519().expect("client key"));
    let host_keys = vec![
        alknet_ssh::generate_ed25519().expect("host key"),
        alknet_ssh::generate_ecdsa_p256().expect("host key"),
        alknet_ssh::generate_ed25519().expect("host key"),
    ];
    let expected: Vec<PublicKey> = host_keys.iter().map(|k| k.public_key().clone()).collect();
    let stranger = alknet_ssh::generate_ed25519()
        .expect("key")
        .public_key()
        .clone();
    let server = ssh_server_with_host_keys(SshConfig::default(), host_keys, &key, &["ssh:exec"]);
    let (announced, own, strangers, mixed, after) =
        on_one_connection(&server, 1, move |mut streams| async move {
            let stream = streams.pop().expect("stream");
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let client = Client {
                announced: Some(tx),
            };
            let handle = session_with(stream, &key, client).await.expect("session");
            let announced = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("no hostkeys-00 within 10 s")
                .expect("announcement");
            let own = handle.hostkeys_prove(announced.clone()).await;
            let strangers = handle.hostkeys_prove(vec![stranger.clone()]).await;
            let mixed = handle
                .hostkeys_prove(vec![announced[0].clone(), stranger])
                .await;
            // the session still works
            let channel = handle.channel_open_session().await.expect("channel");
            channel.exec(true, "echo after").await.expect("exec");
            let (out, status, _) = finish(channel).await;
            (announced, own, strangers, mixed, (out, status))
        });
    assert_eq!(announced, expected, "announced keys and their order");
    assert!(own.is_ok(), "proof of the server's own keys: {own:?}");
    assert!(
        matches!(strangers, Err(russh::Error::RequestDenied)),
        "{strangers:?}"
    );
    assert!(
        matches!(mixed, Err(russh::Error::RequestDenied)),
        "{mixed:?}"
    );
    assert_eq!(after, ("after\n".to_string(), Some(0)));
}
