//! One SSH session (one QUIC stream): the russh `Handler` that authenticates the peer's
//! key through the identity providers and decides, scope by scope, what it may do.
//!
//! Callbacks run on the session's task in the bridge runtime and answer requests
//! synchronously (russh tracks one pending reply per channel); the work itself (processes,
//! pumps, forwarded connections) runs in tasks of its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use alknet_runtime::{AccessControl, Identity, IdentityProvider, Requirement};
use futures_util::FutureExt;
use russh::keys::{Certificate, HashAlg};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, ChannelReadHalf, ChannelWriteHalf, Pty, Sig};
use tokio::task::AbortHandle;

use crate::adapter::Shared;
use crate::agent::AgentSocket;
use crate::auth::{key_fingerprint, openssh_fingerprint};
use crate::certificate::{check_certificate, CertificateRefusal};
use crate::config::{MAX_ENV_PER_CHANNEL, MAX_TERMINAL_MODES};
use crate::flow::SessionFlow;
use crate::forward::{ForwardContext, SocketForward};
use crate::metrics::{AuthRefusal, ChannelKind, ChannelRefusal, RequestKind};
use crate::policy::{authorize, SshAction};
use crate::process::{Launch, PtyRequest, Running};
use crate::pumps::{pump_input, pump_output, splice, ChannelSlot, ChannelSlots, OnEof};
use crate::restrictions::{grant, Grant, KeyRestrictions, Permits};
use crate::x11::{X11Display, X11Request};

/// A `session` channel: its settings until something runs in it, then the process.
struct SessionChannel {
    /// Until the process starts: the channel's halves (moved into the pumps then).
    halves: Option<(ChannelReadHalf, ChannelWriteHalf<Msg>)>,
    env: Vec<(String, String)>,
    pty: Option<PtyRequest>,
    running: Option<Running>,
    /// A subsystem serves the channel.
    subsystem: bool,
    _slot: ChannelSlot,
}

impl SessionChannel {
    /// Discards what russh queued for the channel before its process started (requests
    /// are answered here, data before a command has nowhere to go), so the queue never
    /// fills and stalls the session.
    fn drain(&mut self) {
        if let Some((read, _)) = self.halves.as_mut() {
            while let Some(Some(_)) = read.wait().now_or_never() {}
        }
    }
}

/// The russh handler of one session.
pub(crate) struct SshSession {
    shared: Arc<Shared>,
    remote: SocketAddr,
    /// The server's address the client reached, when known.
    local: Option<SocketAddr>,
    provider: Arc<dyn IdentityProvider>,
    identity: Option<Identity>,
    /// Whether `pty-req` may be granted: false for a user certificate without the
    /// `permit-pty` extension (`ssh-keygen -O no-pty`).
    pty_allowed: bool,
    /// A user certificate's `force-command`: what every `exec` and `shell` runs instead.
    forced_command: Option<String>,
    /// Set once authenticated; the adapter's watchdog reads it.
    authenticated: Arc<AtomicBool>,
    slots: ChannelSlots,
    /// Inbound flow control: russh's window target follows it (see `crate::flow`).
    flow: SessionFlow,
    channels: HashMap<ChannelId, SessionChannel>,
    /// `tcpip-forward` listeners by (address as the client named it, bound port).
    forwards: HashMap<(String, u32), AbortHandle>,
    /// `streamlocal-forward@openssh.com` listeners by socket path (dropping one removes
    /// its socket).
    socket_forwards: HashMap<String, SocketForward>,
    /// The forwarded agent's socket, once `auth-agent-req@openssh.com` was granted.
    agent: Option<AgentSocket>,
    /// The forwarded X display, once `x11-req` was granted.
    x11: Option<X11Display>,
}

impl Drop for SshSession {
    /// The session is over: its listeners close; its processes are hung up (by dropping
    /// the channels).
    fn drop(&mut self) {
        for (_, listener) in self.forwards.drain() {
            listener.abort();
        }
    }
}

/// Whether a forced command is sshd's `internal-sftp` (with or without its arguments): a
/// key or certificate bound to it may run the `sftp` subsystem and nothing else, as
/// `command="internal-sftp"` and `ForceCommand internal-sftp` make sshd do. Its
/// arguments (`-d`, `-R`, …) are not honoured: the SFTP root and scopes say where and
/// what (`sftp:read` alone is read-only).
fn is_internal_sftp(command: &str) -> bool {
    command.split_whitespace().next() == Some("internal-sftp")
}

impl SshSession {
    pub(crate) fn new(
        shared: Arc<Shared>,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        provider: Arc<dyn IdentityProvider>,
        authenticated: Arc<AtomicBool>,
    ) -> Self {
        let slots = ChannelSlots::new(shared.config.max_channels_per_session);
        let flow = SessionFlow::new(shared.config.channel_buffer, shared.config.window_size);
        Self {
            shared,
            remote,
            local,
            provider,
            identity: None,
            pty_allowed: true,
            forced_command: None,
            authenticated,
            slots,
            flow,
            channels: HashMap::new(),
            forwards: HashMap::new(),
            socket_forwards: HashMap::new(),
            agent: None,
            x11: None,
        }
    }

    fn who(&self) -> &str {
        self.identity.as_ref().map_or("-", |i| i.name.as_str())
    }

    /// The identity of a key: the engine's providers first, then `authorized_keys` (with
    /// its line's sshd options), then any other extra provider.
    fn resolve(&self, key: &russh::keys::PublicKey) -> Option<(Identity, KeyRestrictions)> {
        let fp = key_fingerprint(key);
        if let Some(identity) = self.provider.resolve_from_fingerprint(&fp) {
            return Some((identity, KeyRestrictions::default()));
        }
        if let Some(entry) = self
            .shared
            .authorities
            .as_ref()
            .and_then(|f| f.key_entry(&fp))
        {
            return Some(entry);
        }
        let identity = self
            .shared
            .extra_provider
            .as_ref()?
            .resolve_from_fingerprint(&fp)?;
        Some((identity, KeyRestrictions::default()))
    }

    /// Takes what authentication granted for the rest of the session.
    fn take_grant(&mut self, grant: Grant) {
        self.pty_allowed = grant.pty;
        self.forced_command = grant.force_command;
        self.identity = Some(grant.identity);
    }

    /// Whether `[ssh] revoked_keys`, as the file is now, says `revoked` of it.
    fn revokes(&self, revoked: impl FnOnce(&crate::revoked::RevokedKeys) -> bool) -> bool {
        self.shared
            .revoked
            .as_ref()
            .and_then(|f| f.current())
            .is_some_and(|r| revoked(&r))
    }

    /// Whether `[ssh] revoked_keys` revokes `key` (logged and counted when it does).
    fn revoked_key(&self, key: &russh::keys::PublicKey) -> bool {
        let revoked = self.revokes(|r| r.key_revoked(key));
        if revoked {
            tracing::warn!(key = %openssh_fingerprint(key), remote = %self.remote, "ssh: revoked key refused");
            self.shared.metrics.auth_refused(AuthRefusal::Revoked);
        }
        revoked
    }

    /// The ACL check, logged when it denies.
    fn allowed(&self, action: SshAction) -> bool {
        match authorize(self.identity.as_ref(), action) {
            Ok(()) => true,
            Err(denied) => {
                tracing::warn!(remote = %self.remote, "ssh: denied: {denied}");
                false
            }
        }
    }

    /// Starts a command (`Some`) or a shell (`None`) in channel `id`; `false` when refused.
    fn start(&mut self, id: ChannelId, command: Option<&[u8]>, session: &mut Session) -> bool {
        let action = if command.is_some() {
            SshAction::Exec
        } else {
            SshAction::Shell
        };
        let allowed = self.allowed(action);
        let sftp_only = self.forced_command.as_deref().is_some_and(is_internal_sftp);
        if sftp_only {
            tracing::warn!(identity = %self.who(), "ssh: exec/shell refused: the key is bound to internal-sftp");
        }
        let identity = self.who().to_string();
        let shell = self.shared.config.shell.clone();
        let Some(ch) = self.channels.get_mut(&id) else {
            return false;
        };
        ch.drain();
        if !allowed || sftp_only || ch.running.is_some() {
            return false;
        }
        let Some((read, write)) = ch.halves.take() else {
            return false;
        };
        let mut env = std::mem::take(&mut ch.env);
        let command = match &self.forced_command {
            // as sshd: the forced command runs, and finds what was asked in the environment
            Some(forced) => {
                env.retain(|(k, _)| k != "SSH_ORIGINAL_COMMAND");
                if let Some(asked) = command {
                    let asked = String::from_utf8_lossy(asked).into_owned();
                    env.push(("SSH_ORIGINAL_COMMAND".into(), asked));
                }
                Some(forced.as_bytes())
            }
            None => command,
        };
        let launch = Launch {
            shell,
            command: command.map(<[u8]>::to_vec),
            env,
            pty: ch.pty.clone(),
            identity: identity.clone(),
            remote: self.remote,
            local: self.local,
            agent: self.agent.as_ref().map(|a| a.path().to_path_buf()),
            x11: self
                .x11
                .as_ref()
                .map(|x| (x.display().to_string(), x.authority().to_path_buf())),
        };
        let backlog = self.flow.backlog();
        match crate::process::start(launch, id, read, write, session.handle(), backlog) {
            Ok(running) => {
                tracing::info!(
                    identity = %identity,
                    remote = %self.remote,
                    command = %command.map_or("(shell)".into(), String::from_utf8_lossy),
                    pty = ch.pty.is_some(),
                    "ssh: started"
                );
                ch.running = Some(running);
                true
            }
            Err(e) => {
                tracing::warn!(identity = %identity, "ssh: cannot start {:?}: {e}", self.shared.config.shell);
                false
            }
        }
    }

    /// Whether a request on session channel `channel` may set up `action` (agent or X11
    /// forwarding) for what the session runs next: the channel exists and runs nothing yet
    /// (nor a subsystem), the key is not bound to `internal-sftp`, and the scope allows it.
    fn may_forward_into(&mut self, channel: ChannelId, action: SshAction) -> bool {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return false;
        };
        ch.drain();
        if ch.subsystem || ch.running.is_some() {
            return false;
        }
        if self.forced_command.as_deref().is_some_and(is_internal_sftp) {
            return false;
        }
        self.allowed(action)
    }

    /// Grants `auth-agent-req@openssh.com` on session channel `channel`: the session's
    /// agent socket (one per session, as sshd's), named in `SSH_AUTH_SOCK` to what runs
    /// from now on; `false` when refused.
    fn forward_agent(&mut self, channel: ChannelId, session: &mut Session) -> bool {
        if !self.may_forward_into(channel, SshAction::ForwardAgent) {
            return false;
        }
        if self.agent.is_some() {
            return true;
        }
        match AgentSocket::bind(&std::env::temp_dir(), self.forward_context(session)) {
            Ok(agent) => {
                tracing::info!(identity = %self.who(), socket = %agent.path().display(), "ssh: agent forwarded");
                self.agent = Some(agent);
                true
            }
            Err(e) => {
                tracing::warn!(identity = %self.who(), "ssh: agent forwarding: {e}");
                false
            }
        }
    }

    /// Grants `x11-req` on session channel `channel`: the session's forwarded X display
    /// (one per session, as sshd's), named in `DISPLAY` (with its cookie's file in
    /// `XAUTHORITY`) to what runs from now on; `false` when refused.
    async fn forward_x11(
        &mut self,
        channel: ChannelId,
        request: X11Request,
        session: &mut Session,
    ) -> bool {
        if !self.may_forward_into(channel, SshAction::ForwardX11) {
            return false;
        }
        if self.x11.is_some() {
            // sshd: "X11 forwarding is already active"
            return false;
        }
        let config = &self.shared.config;
        let bound = X11Display::bind(
            &request,
            config.x11_display_offset,
            &config.xauth,
            &std::env::temp_dir(),
            self.forward_context(session),
        )
        .await;
        match bound {
            Ok(x11) => {
                tracing::info!(identity = %self.who(), display = x11.display(), "ssh: X11 forwarded");
                self.x11 = Some(x11);
                true
            }
            Err(e) => {
                tracing::warn!(identity = %self.who(), "ssh: X11 forwarding: {e}");
                false
            }
        }
    }

    /// A channel the client opens to something the server connects to (`direct-tcpip`,
    /// `direct-streamlocal`): refused unless `allowed`, then a channel slot, then `connect`
    /// (bounded by `connect_timeout_ms`, in a task) and the channel spliced to what it
    /// gave. Counted under `kind`; `what` names it in the logs.
    async fn connect_for_client<R, W, Fut>(
        &self,
        kind: ChannelKind,
        allowed: bool,
        what: String,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        connect: Fut,
    ) where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
        Fut: std::future::Future<Output = std::io::Result<(R, W)>> + Send + 'static,
    {
        let shared = self.shared.clone();
        if !allowed {
            shared.metrics.channel_refused(kind, ChannelRefusal::Denied);
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        }
        let Some(slot) = self.slots.try_acquire() else {
            shared.metrics.channel_refused(kind, ChannelRefusal::Limit);
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return;
        };
        let backlog = self.flow.backlog();
        let timeout = self.shared.config.connect_timeout();
        let identity = self.who().to_string();
        tokio::spawn(async move {
            let _slot = slot;
            let metrics = &shared.metrics;
            let failed = match tokio::time::timeout(timeout, connect).await {
                Ok(Ok((read, write))) => {
                    metrics.channel_opened(kind);
                    tracing::debug!(identity = %identity, "ssh: {what}");
                    reply.accept().await;
                    splice(channel, read, write, backlog).await;
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            tracing::info!(identity = %identity, "ssh: {what}: {failed}");
            metrics.channel_refused(kind, ChannelRefusal::ConnectFailed);
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
        });
    }

    /// What a forwarding listener of this session needs to hand connections to the client.
    fn forward_context(&self, session: &Session) -> ForwardContext {
        ForwardContext {
            handle: session.handle(),
            slots: self.slots.clone(),
            flow: self.flow.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Whether the session holds `max_forwards_per_session` listeners (TCP and Unix).
    fn forwards_full(&self) -> bool {
        self.forwards.len() + self.socket_forwards.len()
            >= self.shared.config.max_forwards_per_session
    }

    /// Starts a `streamlocal-forward@openssh.com` listener; `false` when refused.
    fn forward_remote_socket(&mut self, path: &str, session: &mut Session) -> bool {
        if !self.allowed(SshAction::ForwardRemote) {
            return false;
        }
        if !self.shared.config.socket_allowed(path) {
            tracing::warn!(identity = %self.who(), "ssh: streamlocal-forward on {path:?} refused (not beneath ssh.forward_socket_allow)");
            return false;
        }
        if self.forwards_full() {
            tracing::warn!(identity = %self.who(), "ssh: streamlocal-forward limit reached");
            return false;
        }
        if self.socket_forwards.contains_key(path) {
            return false;
        }
        let unlink_stale = self.shared.config.stream_local_bind_unlink;
        match SocketForward::bind(path, unlink_stale, self.forward_context(session)) {
            Ok(forward) => {
                tracing::info!(identity = %self.who(), "ssh: forwarding {path} to the client");
                self.socket_forwards.insert(path.to_string(), forward);
                true
            }
            Err(e) => {
                tracing::info!(identity = %self.who(), "ssh: streamlocal-forward {path}: {e}");
                false
            }
        }
    }

    /// Starts a `tcpip-forward` listener; `false` when refused.
    async fn forward_remote(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> bool {
        if !self.allowed(SshAction::ForwardRemote) {
            return false;
        }
        if !self.shared.config.bind_allowed(address) {
            tracing::warn!(identity = %self.who(), "ssh: tcpip-forward on {address:?} refused (not in ssh.forward_bind_allow)");
            return false;
        }
        if self.forwards_full() {
            tracing::warn!(identity = %self.who(), "ssh: tcpip-forward limit reached");
            return false;
        }
        let Ok(requested) = u16::try_from(*port) else {
            return false;
        };
        let listener = match crate::forward::bind(address, requested).await {
            Ok(l) => l,
            Err(e) => {
                tracing::info!(identity = %self.who(), "ssh: tcpip-forward {address}:{requested}: {e}");
                return false;
            }
        };
        let bound = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(_) => return false,
        };
        if requested == 0 {
            *port = u32::from(bound);
        }
        let task = tokio::spawn(crate::forward::accept_loop(
            listener,
            address.to_string(),
            u32::from(bound),
            self.forward_context(session),
        ));
        tracing::info!(identity = %self.who(), "ssh: forwarding {address}:{bound} to the client");
        // OpenSSH cancels a port-0 forward by the port it was given
        if let Some(old) = self
            .forwards
            .insert((address.to_string(), u32::from(bound)), task.abort_handle())
        {
            old.abort();
        }
        true
    }

    /// Starts subsystem `name` in `channel`; `false` when refused.
    fn start_subsystem(&mut self, channel: ChannelId, name: &str, session: &mut Session) -> bool {
        // a forced command leaves no subsystem, except sshd's idiom for SFTP-only keys
        if let Some(forced) = self.forced_command.as_deref() {
            if !(name == "sftp" && is_internal_sftp(forced)) {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.drain();
                }
                tracing::warn!(identity = %self.who(), "ssh: subsystem {name:?} refused: the key forces a command");
                return false;
            }
        }
        let configured = match self.forced_command {
            // an internal-sftp key gets the built-in sftp, whatever `subsystems` says
            Some(_) => None,
            None => self.shared.config.subsystems.get(name).cloned(),
        };
        if let Some(command) = configured {
            tracing::info!(identity = %self.who(), "ssh: subsystem {name:?}: {command}");
            return self.start(channel, Some(command.as_bytes()), session);
        }
        let Some(registered) = self.shared.subsystems.0.get(name).cloned() else {
            if let Some(ch) = self.channels.get_mut(&channel) {
                ch.drain();
            }
            tracing::info!(identity = %self.who(), "ssh: subsystem {name:?} refused (not served)");
            return false;
        };
        let resource = format!("ssh subsystem {name}");
        let checked = AccessControl::check(
            self.identity.as_ref(),
            &resource,
            &Requirement::Scopes(vec![registered.scope.clone()]),
        );
        let identity = match (checked, self.identity.clone()) {
            (Ok(()), Some(identity)) => identity,
            (Err(denied), _) => {
                tracing::warn!(remote = %self.remote, "ssh: denied: {denied}");
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.drain();
                }
                return false;
            }
            (Ok(()), None) => return false,
        };
        let Some(ch) = self.channels.get_mut(&channel) else {
            return false;
        };
        ch.drain();
        if ch.running.is_some() || ch.subsystem {
            return false;
        }
        let Some((read, write)) = ch.halves.take() else {
            return false;
        };
        let (ours, theirs) = tokio::io::duplex(crate::subsystem::SUBSYSTEM_PIPE);
        let serving = match registered.subsystem.start(&identity, theirs) {
            Ok(fut) => fut,
            Err(why) => {
                tracing::warn!(identity = %identity.name, "ssh: subsystem {name:?}: {why}");
                return false;
            }
        };
        ch.subsystem = true;
        tracing::info!(identity = %identity.name, remote = %self.remote, "ssh: subsystem {name:?} started");
        let backlog = self.flow.backlog();
        // beside the session (on its worker): each request and answer is a round trip
        crate::bridge::spawn_session_task(async move {
            let (from_sub, to_sub) = tokio::io::split(ours);
            let (status_tx, status_rx) = tokio::sync::oneshot::channel();
            let inbound = pump_input(read, Some(to_sub), OnEof::Close, backlog);
            let serving = async move {
                let _ = status_tx.send(serving.await);
            };
            let outbound = async {
                if let Err(e) = pump_output(from_sub, &write, None).await {
                    tracing::debug!("ssh subsystem output: {e}");
                }
                // all it wrote is out; then its exit status, EOF and close, as sshd ends
                // a subsystem channel (a subsystem task that panicked reports failure)
                let _ = write.exit_status(status_rx.await.unwrap_or(1)).await;
                let _ = write.eof().await;
                let _ = write.close().await;
            };
            tokio::join!(inbound, outbound, serving);
        });
        true
    }
}

/// `channel-success` or `channel-failure` for a request that wanted a reply.
fn answer(session: &mut Session, channel: ChannelId, ok: bool) -> Result<(), russh::Error> {
    if ok {
        session.channel_success(channel)
    } else {
        session.channel_failure(channel)
    }
}

impl russh::server::Handler for SshSession {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.revoked_key(offer.public_key) {
            return Ok(Auth::reject());
        }
        // spare the signature when the key is unknown anyway; but a certificate's key is
        // offered as the bare key (russh does not say which it was), so with a
        // certificate authority listed every key goes on to its signature, and
        // `auth_publickey` or `auth_openssh_certificate` decides
        let authorities = self
            .shared
            .authorities
            .as_ref()
            .is_some_and(|a| a.has_authorities());
        Ok(match self.resolve(offer.public_key) {
            Some(_) => Auth::Accept,
            None if authorities => Auth::Accept,
            None => {
                tracing::info!(
                    key = %openssh_fingerprint(offer.public_key),
                    remote = %self.remote,
                    "ssh: unknown key refused"
                );
                self.shared.metrics.auth_refused(AuthRefusal::UnknownKey);
                Auth::reject()
            }
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.revoked_key(key.public_key) {
            return Ok(Auth::reject());
        }
        match self.resolve(key.public_key) {
            Some((identity, line)) => {
                let name = identity.name.clone();
                match grant(identity, &line, self.remote.ip(), Permits::ALL, None) {
                    Ok(granted) => {
                        tracing::info!(
                            identity = %name,
                            user,
                            key = %openssh_fingerprint(key.public_key),
                            remote = %self.remote,
                            "ssh: authenticated"
                        );
                        self.take_grant(granted);
                        Ok(Auth::Accept)
                    }
                    Err(refusal) => {
                        tracing::info!(
                            identity = %name,
                            key = %openssh_fingerprint(key.public_key),
                            remote = %self.remote,
                            "ssh: key refused by its authorized_keys options: {refusal}"
                        );
                        self.shared.metrics.auth_refused(AuthRefusal::Restricted);
                        Ok(Auth::reject())
                    }
                }
            }
            None => {
                tracing::info!(
                    key = %openssh_fingerprint(key.public_key),
                    remote = %self.remote,
                    "ssh: unknown key refused"
                );
                self.shared.metrics.auth_refused(AuthRefusal::UnknownKey);
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let revoked = self.revokes(|r| r.certificate_revoked(certificate));
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let authority =
            |fp: &alknet_runtime::Fingerprint| self.shared.authorities.as_ref()?.authority(fp);
        let checked = if revoked {
            Err(CertificateRefusal::Revoked)
        } else {
            check_certificate(certificate, user, self.remote.ip(), unix_now, authority)
        };
        match checked {
            Ok(granted) => {
                tracing::info!(
                    identity = %granted.identity.name,
                    user,
                    key_id = certificate.key_id(),
                    serial = certificate.serial(),
                    ca = %certificate.signature_key().fingerprint(HashAlg::Sha256),
                    remote = %self.remote,
                    "ssh: authenticated with a certificate"
                );
                self.take_grant(granted);
                Ok(Auth::Accept)
            }
            Err(refusal) => {
                tracing::info!(
                    user,
                    key_id = certificate.key_id(),
                    serial = certificate.serial(),
                    remote = %self.remote,
                    "ssh: certificate refused: {refusal}"
                );
                self.shared.metrics.auth_refused(match refusal {
                    CertificateRefusal::Revoked => AuthRefusal::Revoked,
                    _ => AuthRefusal::Certificate,
                });
                Ok(Auth::reject())
            }
        }
    }

    /// russh asks after each window adjustment what the next target is: the flow control
    /// answers (a trickle while any channel's backlog is over `channel_buffer`).
    fn adjust_window(&mut self, _channel: ChannelId, _current: u32) -> u32 {
        self.flow.target_window()
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.authenticated.store(true, Ordering::Release);
        self.shared.metrics.authenticated();
        // as sshd does after authentication: every host key, so that an OpenSSH client
        // with UpdateHostKeys learns keys added for a rotation (it asks for proof, which
        // the vendored russh answers) and forgets retired ones
        session.announce_host_keys()?;
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let metrics = &self.shared.metrics;
        if !self.allowed(SshAction::OpenSession) {
            metrics.channel_refused(ChannelKind::Session, ChannelRefusal::Denied);
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let Some(slot) = self.slots.try_acquire() else {
            tracing::warn!(identity = %self.who(), "ssh: channel limit reached");
            metrics.channel_refused(ChannelKind::Session, ChannelRefusal::Limit);
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        metrics.channel_opened(ChannelKind::Session);
        let id = channel.id();
        self.channels.insert(
            id,
            SessionChannel {
                halves: Some(channel.split()),
                env: Vec::new(),
                pty: None,
                running: None,
                subsystem: false,
                _slot: slot,
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let allowed = self.allowed(SshAction::ForwardLocal);
        let target = (host.to_string(), u16::try_from(port).ok());
        let what = format!("direct-tcpip to {host}:{port}");
        self.connect_for_client(
            ChannelKind::DirectTcpip,
            allowed,
            what,
            channel,
            reply,
            async move {
                let (host, Some(port)) = target else {
                    return Err(std::io::Error::other("port out of range"));
                };
                let tcp = tokio::net::TcpStream::connect((host, port)).await?;
                let _ = tcp.set_nodelay(true);
                Ok(tcp.into_split())
            },
        )
        .await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let permitted = self.shared.config.socket_allowed(socket_path);
        if !permitted {
            tracing::warn!(identity = %self.who(), "ssh: direct-streamlocal to {socket_path:?} refused (not beneath ssh.forward_socket_allow)");
        }
        let allowed = permitted && self.allowed(SshAction::ForwardLocal);
        let path = socket_path.to_string();
        let what = format!("direct-streamlocal to {socket_path}");
        self.connect_for_client(
            ChannelKind::DirectStreamlocal,
            allowed,
            what,
            channel,
            reply,
            async move { Ok(tokio::net::UnixStream::connect(path).await?.into_split()) },
        )
        .await;
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.drain();
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // a process still running is hung up
        self.channels.remove(&channel);
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // the data itself reaches the process through the channel's queue
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.drain();
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return session.channel_failure(channel);
        };
        ch.drain();
        if ch.running.is_some() || ch.pty.is_some() {
            return session.channel_failure(channel);
        }
        if !self.pty_allowed {
            tracing::warn!(identity = %self.who(), "ssh: pty refused: the certificate has no permit-pty");
            return session.channel_failure(channel);
        }
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        ch.pty = Some(PtyRequest {
            // a hostile TERM cannot do much (it is one environment value), but keep it sane
            term: term.chars().take(64).filter(|c| !c.is_control()).collect(),
            cols: clamp(col_width),
            rows: clamp(row_height),
            pix_width: clamp(pix_width),
            pix_height: clamp(pix_height),
            // RFC 4254 knows about 60 opcodes; more is a client repeating itself
            modes: modes.iter().take(MAX_TERMINAL_MODES).copied().collect(),
        });
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let allowed = self.shared.config.env_allowed(name);
        let Some(ch) = self.channels.get_mut(&channel) else {
            return session.channel_failure(channel);
        };
        ch.drain();
        if !allowed || ch.running.is_some() || ch.env.len() >= MAX_ENV_PER_CHANNEL {
            tracing::debug!("ssh: env {name:?} refused");
            return session.channel_failure(channel);
        }
        ch.env.retain(|(k, _)| k != name);
        ch.env.push((name.to_string(), value.to_string()));
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let started = self.start(channel, Some(data), session);
        self.shared.metrics.request(RequestKind::Exec, started);
        answer(session, channel, started)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let started = self.start(channel, None, session);
        self.shared.metrics.request(RequestKind::Shell, started);
        answer(session, channel, started)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let started = self.start_subsystem(channel, name, session);
        self.shared.metrics.request(RequestKind::Subsystem, started);
        answer(session, channel, started)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        single_connection: bool,
        x11_auth_protocol: &str,
        x11_auth_cookie: &str,
        x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = X11Request {
            single_connection,
            protocol: x11_auth_protocol.to_string(),
            cookie: x11_auth_cookie.to_string(),
            screen: x11_screen_number,
        };
        let granted = self.forward_x11(channel, request, session).await;
        self.shared
            .metrics
            .request(RequestKind::X11Forward, granted);
        answer(session, channel, granted)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let granted = self.forward_agent(channel, session);
        self.shared
            .metrics
            .request(RequestKind::AgentForward, granted);
        Ok(granted)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        let Some(ch) = self.channels.get_mut(&channel) else {
            return session.channel_failure(channel);
        };
        ch.drain();
        let (cols, rows, pw, ph) = (
            clamp(col_width),
            clamp(row_height),
            clamp(pix_width),
            clamp(pix_height),
        );
        let resized = match (&ch.running, &mut ch.pty) {
            (Some(running), _) => running.resize(cols, rows, pw, ph),
            // before the shell starts: the size it will start with
            (None, Some(pty)) => {
                (pty.cols, pty.rows, pty.pix_width, pty.pix_height) = (cols, rows, pw, ph);
                true
            }
            (None, None) => false,
        };
        if resized {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return Ok(());
        };
        ch.drain();
        match (&ch.running, crate::signals::to_posix(&signal)) {
            (Some(running), Some(sig)) => {
                if let Err(e) = running.signal(sig) {
                    tracing::debug!("ssh: signal {signal:?}: {e}");
                }
            }
            _ => tracing::debug!("ssh: signal {signal:?} not delivered"),
        }
        // `signal` requests never want a reply (RFC 4254 §6.9)
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let served = self.forward_remote(address, port, session).await;
        self.shared
            .metrics
            .request(RequestKind::TcpipForward, served);
        Ok(served)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        match self.forwards.remove(&(address.to_string(), port)) {
            Some(listener) => {
                listener.abort();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let served = self.forward_remote_socket(socket_path, session);
        self.shared
            .metrics
            .request(RequestKind::StreamlocalForward, served);
        Ok(served)
    }

    async fn cancel_streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.socket_forwards.remove(socket_path).is_some())
    }
}
