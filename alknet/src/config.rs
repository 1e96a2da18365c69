//! The TOML configuration file. Every key has a default, so an empty file (or none) is a
//! working configuration; unknown keys are errors, so a typo is never silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alknet_call::{CallAdapter, CallLimits, CallNode, NodeInfo};
use alknet_dns::{
    Catalog, ClassicListeners, DnsConfig, DnsState, DohResolver, DoqHandler, DotHandler,
    PipelineHandler, PkarrStore, SharedCatalog, ZoneReloader,
};
use alknet_git::{GitConfig, GitHandler};
use alknet_http::{DnsServices, HttpConfig, HttpState, HttpTcpHandler};
use alknet_peers::SqlitePeerStore;
use alknet_runtime::host_key::{HostKeyError, QuicHostKey};
use alknet_runtime::resolve_workers;
use alknet_runtime::tls::{ClientAuth, TlsIdentity, WebTransportCert};
use alknet_runtime::{
    AlpnRegistry, ChainedIdentityProvider, ConfigIdentityProvider, DnsResolver, EngineConfig,
    HandshakePolicy, IdentityEntry, IdentityProvider, Limits, OperationInvoker, PkarrRelay,
    ProtocolHandler, TcpLimits, TcpRegistry, TcpSetup, DEFAULT_LISTEN,
};
use alknet_sftp::SftpConfig;
use alknet_ssh::{SshAdapter, SshConfig};

use crate::sftp::SftpService;
use serde::Deserialize;

use crate::vault::NodeKeys;

/// The configuration `alknet serve` runs with when given no file.
pub const DEFAULT_CONFIG: &str = r#"# Alknet configuration. Every key is optional; these are the defaults.

# UDP address of the QUIC endpoint. Loopback by default: set "[::]:4433" to serve the network.
listen = "127.0.0.1:4433"
# Worker threads, each with its own socket and QUIC endpoint; 0 = one per core.
workers = 0
# Pin worker i to core i: true, false, or "auto" = pin only on what looks like a
# dedicated machine (one worker per core and no other runnable thread at start-up);
# pinning beside other busy processes makes a worker share its core while another idles.
pin_workers = "auto"
# Server id carried in every connection ID (for a future QUIC-LB style balancer).
server_id = 0
# Let the kernel pick the worker from the QUIC connection ID (a reuseport BPF program).
kernel_steering = true
# Where the generated certificate lives. Default: $ALKNET_DATA_DIR, else
# $XDG_DATA_HOME/alknet, else ~/.local/share/alknet.
# data_dir = "/var/lib/alknet"

[tls]
# PEM certificate chain and key. Without them a self-signed certificate is generated
# in data_dir on first start and reused after.
# cert = "/etc/alknet/cert.pem"
# key = "/etc/alknet/key.pem"
# Client certificates: "none", "optional" (anonymous allowed) or "required".
client_auth = "optional"

[handlers]
# ALPNs served. Available: "alknet/echo", "perf" (quinn's perf tool protocol),
# "alknet/call" (JSON operations; see README), "alknet/ssh" (SSH sessions for OpenSSH
# through `alknet connect`; see README), "alknet/sftp" (raw SFTP sessions for OpenSSH's
# sftp through `alknet connect`; see README), "alknet/git" (git clone/fetch/push through
# git-remote-alknet; see README), "doq" (DNS over QUIC, RFC 9250) and "alknet/dns"
# (pipelined DNS over QUIC), which answer for the [[dns.zones]] below (not on by default),
# "hq-interop" (HTTP/0.9 file serving of the QUIC interop runner; off by default, needs
# [hq] root), "h3" (HTTP/3: the routes HTTP/1.1 and HTTP/2 serve over TLS/TCP, and
# WebTransport; see [http3]).
enabled = ["alknet/echo", "perf", "alknet/call", "alknet/ssh", "alknet/sftp", "alknet/git", "h3"]

[quic]
# Retry (address validation before any state is kept): "never", "always", or "auto" =
# only once a worker has retry_auto_threshold handshakes in flight from unvalidated
# addresses.
retry = "auto"
retry_auto_threshold = 256
# How resumable TLS sessions are kept: "host-key" = stateless tickets sealed under keys
# derived from the QUIC host key (valid on every worker, after reloads and restarts, and
# on every node sharing the key); "single-use" = an in-memory cache of session_cache
# sessions, each ticket usable once; "auto" = host-key unless zero_rtt needs single-use.
session_tickets = "auto"
# How long a host-key ticket resumes its session (6 h; at most 7 days).
session_ticket_lifetime_ms = 21600000
# Sessions kept by single-use tickets; 0 = no resumption at all.
session_cache = 4096
# Accept 0-RTT data from resuming clients. Handlers still see it only once the handshake
# has completed, so a replayed 0-RTT flight never reaches one (see README).
zero_rtt = false
# TLS 1.3 suites offered; empty = TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384,
# TLS13_CHACHA20_POLY1305_SHA256.
cipher_suites = []
# QUIC versions served, preferred first: a client starting in v1 that offers v2 is
# switched to v2 during its handshake (compatible version negotiation, RFC 9368).
versions = ["v2", "v1"]
# A second address (and port) offered to clients as the server's preferred address
# (RFC 9000, section 9.6): each worker listens there too, and a client may move its
# connection there after the handshake. Unset: none offered.
# preferred_address_v4 = "192.0.2.10:4433"
# preferred_address_v6 = "[2001:db8::10]:4433"

[admission]
# Who may start a connection; decided before any TLS work (a refused Initial costs no
# handshake). Live: SIGHUP / `alknet reload`. 0 turns a cap off.
# Open connections from one IP address, and from one prefix (/24 IPv4, /64 IPv6).
max_connections_per_address = 16384
max_connections_per_prefix = 65536
ipv4_prefix_len = 24
ipv6_prefix_len = 64
# New connections per second from one prefix (token bucket of new_connection_burst);
# Initials beyond it are dropped unanswered.
new_connections_per_second = 20000
new_connection_burst = 40000
# Handshakes in flight on one worker; beyond it new connections are refused.
max_handshakes_per_worker = 4096
# A QUIC handshake not complete this long after its Initial is closed (close code 0x6),
# so half-open handshakes (a flood's) do not hold their places until idle_timeout. 0 = off.
handshake_timeout_ms = 10000
# Open connections per service, e.g. { "alknet/ssh" = 1000 }; checked when the handshake
# completes (close code 0x5).
max_connections_per_alpn = {}

[log]
# What `alknet serve` logs: tracing filter directives ("info", "warn",
# "info,alknet_runtime=debug"); ALKNET_LOG overrides it. Live: SIGHUP / `alknet reload`.
filter = "info"

[hq]
# Directory served by "hq-interop" (GET /path -> the file; nothing outside it).
# root = "/srv/www"
# Bytes read from a file and queued per step; longest request line accepted.
chunk_size = 262144
max_request_bytes = 4096

[http3]
# Limits of the "h3" handler (HTTP/3): request header section and body bytes, requests
# served at once per connection, and the header/request/body-idle timeouts.
max_header_bytes = 16384
max_body_bytes = 16777216
max_concurrent_requests = 100
header_timeout_ms = 10000
request_timeout_ms = 30000
body_idle_timeout_ms = 30000
body_channel_chunks = 16

[webtransport]
# WebTransport (draft-02, what Chromium speaks) on the "h3" handler: a session at
# /alknet/call goes to the alknet/call handler, and so on. `allow` lists the ALPNs a
# session may reach (unset: every registered handler but "perf"). Per HTTP/3 connection:
# sessions at once; streams waiting for their session. Per session: streams and datagrams
# its handler has not taken yet. tls.webtransport_cert = "auto" gives h3 a certificate
# browsers accept by hash (GET /api/webtransport).
enabled = true
# allow = ["alknet/call", "alknet/echo", "alknet/ssh"]
max_sessions_per_connection = 16
max_buffered_streams = 16
max_queued_streams = 256
max_queued_datagrams = 256

[call]
# Largest frame body in bytes; bigger frames get INVALID_ARGUMENT (or close the stream).
max_frame_size = 1048576
# Deadline of requests that state none; requests may only ask for less (timeout_ms).
default_timeout_ms = 30000
# Requests running at once per connection; beyond it the server stops reading.
max_in_flight_per_connection = 1024
# How often requests stuck past their deadline are evicted.
sweep_interval_ms = 10000
# Events queued per subscriber before it is dropped as too slow.
subscriber_queue = 256
max_subscriptions_per_connection = 64
# Response bytes queued per stream before operations wait for the peer to read.
write_queue_bytes = 4194304

[ssh]
# Shell running exec commands (SHELL -c CMD) and interactive sessions, as the server's user.
shell = "/bin/sh"
# Host keys (OpenSSH private key files), as sshd's HostKey lines: the first of each
# algorithm serves key exchange; every key is announced after authentication, so OpenSSH
# clients (UpdateHostKeys) learn a key added for a rotation. Default: ssh_host_ed25519_key
# and ssh_host_ecdsa_key in data_dir, generated on first start (ECDSA for clients that
# cannot use ed25519, e.g. OpenSSH in FIPS mode).
# host_keys = ["/etc/alknet/ssh_host_ed25519_key", "/etc/alknet/ssh_host_rsa_key"]
# Extra keys, OpenSSH authorized_keys format: [scopes="ssh:exec,ssh:shell"] KEY NAME.
# Keys are otherwise resolved by SHA-256 fingerprint through [[identities]] and the peers.
# authorized_keys = "/etc/alknet/authorized_keys"
# Environment variables clients may set: exact names, or a prefix ending in *.
env_allow = ["LANG", "LC_*", "GIT_PROTOCOL"]
# A socket already at an ssh -R socket path (a dropped session's S.gpg-agent) is replaced
# rather than the request refused (sshd's StreamLocalBindUnlink); only sockets.
stream_local_bind_unlink = false
# X11 forwarding (ssh -X/-Y, scope ssh:forward-x11): first display number (port 6000+N on
# the loopback) and the xauth program that writes each session's cookie.
x11_display_offset = 10
xauth = "/usr/bin/xauth"
# Subsystems served by a command (sshd's Subsystem), run as exec runs it; needs ssh:exec.
# subsystems = { netconf = "/usr/sbin/netconf-subsystem" }
# Addresses ssh -R (tcpip-forward) may bind, as the client names them.
forward_bind_allow = ["127.0.0.1", "::1", "localhost"]
# Directories beneath which Unix sockets may be forwarded (ssh -L PORT:/path, ssh -R /path:…);
# empty refuses both.
forward_socket_allow = []
# Threads of the tokio runtime running SSH sessions; 0 = as many as workers.
bridge_threads = 0
# SSH sessions (QUIC streams) open at once per connection.
max_sessions_per_connection = 32
# Channels (commands, shells, forwarded connections) open at once per session.
max_channels_per_session = 64
# ssh -R listeners (TCP and Unix sockets) per session.
max_forwards_per_session = 16
# Failed authentications before a session is disconnected.
max_auth_attempts = 6
# A session must authenticate within this long of opening.
auth_timeout_ms = 60000
# Every failed authentication takes at least this long (about sshd's floor).
auth_rejection_delay_ms = 10
# SSH channel window granted to clients, and the largest packet accepted.
window_size = 2097152
max_packet_size = 32768
# Messages russh queues per channel for its pump.
channel_queue = 64
# Inbound bytes a channel may hold unconsumed before the client's window is throttled.
channel_buffer = 1048576
# How long an ssh -L (direct-tcpip) connection to its target may take.
connect_timeout_ms = 10000

[git]
# Bare repositories served by alknet/git, addressed by their path below this directory.
# Default: git/ in data_dir.
# root = "/srv/git"
# "gix" (default): upload-pack (protocol v2 and v0) and receive-pack served natively
# with gitoxide, on a blocking thread per command; no git program needed.
# "git": the installed `git upload-pack` / `git receive-pack`, one process per command.
backend = "gix"
# The git executable of the "git" backend.
git_program = "git"
# Access is by scope (git:read, git:write, git:read:<path>, git:write:<path>, with
# <path>/* for a subtree, git:create); these repositories anyone may clone and fetch.
public_read = []
# Accept pushes that are not fast-forwards (git push --force) to branches.
allow_force_push = false
# Where HEAD points in repositories created by push (git:create) or `alknet git init`.
default_branch = "main"
# A stream must send its request line within this long.
request_timeout_ms = 10000
# Longest request line (bytes).
max_request_line = 8192
# git commands (streams) at once per connection, and git commands (processes, or the
# gix backend's threads) across the server.
max_commands_per_connection = 8
max_processes = 64
# gix backend: want/have/argument/ref-update lines in one request; the largest object a
# pushed pack may inflate to (bytes); objects walked checking a push's connectivity.
max_negotiation_lines = 100000
max_object_bytes = 1073741824
max_check_objects = 10000000
# Bytes of a failed git process's stderr kept for the log.
stderr_log_limit = 4096
# After a stream ends, how long git has to exit before it is killed.
exit_grace_ms = 5000
[dns]
# DoQ queries (streams) in progress at once per connection; past it DOQ_EXCESSIVE_LOAD.
max_queries_per_connection = 128
# Queries in flight at once on one pipelined connection or stream (classic TCP, DoT,
# alknet/dns): answers go out as they are ready, so a slow forwarded query holds back
# none behind it; at the bound the connection is not read until one is answered.
max_pipelined_queries = 128
# A query (DoQ), or a message begun (alknet/dns), must arrive whole within this long.
query_timeout_ms = 10000
# How often zone files are checked for changes and reloaded (0 = never). A zone that
# fails to parse keeps its previous version; the error and its line are logged.
reload_interval_ms = 2000
# Classic DNS over UDP and TCP (pipelined), off unless set; same zones.
# udp_listen = "127.0.0.1:5353"
# tcp_listen = "127.0.0.1:5353"
# Largest UDP answer for EDNS0 clients (512 without EDNS0); bigger ones are truncated (TC).
udp_payload_size = 1232
# A classic TCP connection that sends nothing for this long is closed (once the forwarded
# answers still to come are sent), and so is one that does not take its answers that long.
tcp_idle_timeout_ms = 10000
# TCP connections open at once; past it new ones are closed.
max_tcp_connections = 1024
# DNS over TLS (RFC 7858, ALPN "dot") on the [tcp] listener (the QUIC port): pipelined,
# answers in completion order. A connection with no query in progress for
# dot_idle_timeout_ms is closed, and so is one that does not read its answers that long.
dot = true
dot_idle_timeout_ms = 30000
# DNS over HTTPS (RFC 8484): GET /dns-query?dns=<base64url> and POST /dns-query
# (application/dns-message) on the HTTP router, over HTTP/1.1, HTTP/2 and HTTP/3.
doh = true
# Forwarding cache for names outside the zones: upstream resolvers (UDP, TCP when
# truncated). Empty = no forwarding. Recursion is only for identities with scope
# "dns:recursion" or sources in recursion_allow (no open resolver by default).
upstreams = []
recursion_allow = []
# How long one upstream may take before the next is tried (SERVFAIL when none answers).
forward_timeout_ms = 2000
# Answers kept by the forwarding cache (by TTL; negative answers per RFC 2308).
cache_entries = 10000
# Memory for encoded zone answers kept by the exact bytes of their query (per classic UDP
# socket and per worker for DoQ): a name asked again skips lookup and encoding. 0 = off.
answer_cache_bytes = 4194304
# pkarr names: records published by Ed25519 keys under <z-base32 key>. with the
# alknet/call operation dns.publish or the pkarr relay API (GET/PUT /pkarr/<key> on the
# HTTP router; relay URL https://<node>/pkarr) (signed packets; newest timestamp wins),
# kept in SQLite.
pkarr = false
# Default: pkarr.db in data_dir.
# pkarr_db = "/var/lib/alknet/pkarr.db"
# With pkarr: publish this node (address, port, certificate fingerprint) under its own key
# (pkarr_node_key in data_dir, made on first start) at start.
pkarr_publish_self = true
# Authoritative zones from RFC 1035 zone files; names outside them are REFUSED.
# [[dns.zones]]
# origin = "example.com."
# file = "/etc/alknet/example.com.zone"

[sftp]
# SFTP, both as alknet/sftp and as the sftp subsystem of alknet/ssh (gated there by the
# ssh:sftp scope). Scopes sftp:read and sftp:write are checked on every request; an
# identity with neither gets no session. Each identity works in ROOT/<identity name>/
# (created on first use), which it sees as "/": every path is resolved beneath it by the
# kernel (openat2 RESOLVE_IN_ROOT).
# Default root: sftp/ in data_dir.
# root = "/srv/alknet-sftp"
# Open files and directories per session.
max_handles = 256
# Largest SFTP packet accepted (bigger ones end the session), and the largest read served.
max_packet = 262144
max_read = 261120
# Requests served at once per session, and request/reply bytes held per session.
max_outstanding = 128
max_bytes_in_flight = 16777216
# SFTP sessions (QUIC streams) open at once per alknet/sftp connection.
max_sessions_per_connection = 16
# How long a new alknet/sftp session may take to send its SSH_FXP_INIT (which carries the
# token of a connection without a client certificate) before its stream is reset.
init_timeout_ms = 10000

[vault]
# A key vault (`alknet vault init|restore`): with `file` set, the TLS certificate (a
# self-signed Ed25519 one, the same on every machine restored from the same words) and
# the SSH host key come from the vault instead of tls.cert/key, ssh.host_key or the data
# directory. The password: password_file, else $ALKNET_VAULT_PASSWORD, else a prompt.
# file = "/var/lib/alknet/vault"
# password_file = "/etc/alknet/vault-password"

[limits]
max_connections = 100000
max_concurrent_bidi_streams = 256
max_concurrent_uni_streams = 100
idle_timeout_ms = 30000
keep_alive_interval_ms = 0
# A write that the peer lets make no progress this long (it keeps the connection alive but
# reads nothing) fails and its stream is reset with code 0x2 (0: wait for ever).
send_stall_timeout_ms = 60000
stream_receive_window = 1250000
connection_receive_window = 10000000
send_window = 10000000
max_udp_payload_size = 1472
# Path MTU discovery stops refining below this step (bytes): 136 probes 1336, then 1472.
mtu_probe_min_change = 136
# ... and starts only once a connection has sent this many packets (short ones never probe).
mtu_probe_after_packets = 100
# Path MTU discovery's bound for loopback peers (64 KiB packets; README's limits table).
loopback_max_udp_payload_size = 65507
datagram_receive_buffer = 1048576
datagram_send_buffer = 1048576
shutdown_timeout_ms = 10000
inbox_capacity = 4096
socket_buffer_size = 8388608

[tcp]
# TLS over TCP on the same address and port as QUIC, one SO_REUSEPORT listener per
# worker, for clients whose UDP is blocked: HTTP/2 (ALPN "h2"), HTTP/1.1 ("http/1.1",
# or no ALPN), DoT, and the stream_alpns services. Same certificate and client_auth as
# QUIC; other ALPNs are refused.
enabled = true
# A connection must finish its TLS handshake within this long.
tls_handshake_timeout_ms = 10000
# TCP connections open at once per worker. Per source, TCP connections count with QUIC
# ones under [admission] (per address, per prefix, new connections per second).
max_connections_per_worker = 10000
# Connections the kernel queues per listener before they are accepted.
listen_backlog = 1024
# QUIC services also served over TLS/TCP here, for networks that block UDP (`alknet
# connect --transport tcp`, git's alknet.transport = tcp): each TCP connection carries
# exactly one bidirectional stream, run by the same handler with the same identity and
# client_auth; no datagrams. Listed ALPNs that are not enabled handlers are not offered.
stream_alpns = ["alknet/ssh", "alknet/sftp", "alknet/git", "alknet/call", "alknet/echo"]
# Bytes such a stream buffers each way; past it the handler waits and TCP's window stops
# the peer.
stream_buffer = 1048576
# TCP keep-alive on every TCP connection after this long without traffic (0: off): probes
# every 10 s, 3 unanswered end the connection, so a vanished client frees its slot while
# an idle SSH shell over TLS/TCP stays up.
keepalive_idle_ms = 30000
# A write on such a stream that the peer lets make no progress this long (it reads
# nothing: our buffer and the kernel's are full) fails and cuts the connection (0: never).
send_stall_timeout_ms = 60000

[http]
# HTTP front end over TCP (and the h3 ALPN): GET /health, GET /metrics (Prometheus; needs
# the scope "node:metrics" unless listed here), POST /api/call/{operationId} (the
# alknet/call operations, same identities and ACL), GET /openapi.json.
public = []
# Request head bytes (HTTP/1.1; HTTP/2 header list size), header count: past them, 431.
max_header_bytes = 16384
max_headers = 100
# Request body bytes: past it, 413.
max_body_bytes = 1048576
# HTTP/1.1: a request head must arrive within this long (also the keep-alive idle bound).
header_read_timeout_ms = 10000
# Request head to response head; past it, 503.
request_timeout_ms = 60000
# Connections with no byte moving this long are shut down gracefully (HTTP/2: GOAWAY).
keep_alive_idle_timeout_ms = 60000
# A connection still open this long after its graceful shutdown began (GOAWAY, draining)
# is closed outright.
graceful_close_timeout_ms = 10000
# HTTP/2: requests in flight per connection; client resets tolerated (rapid reset) and
# protocol-error resets tolerated before GOAWAY.
h2_max_concurrent_streams = 128
h2_max_pending_accept_reset_streams = 20
h2_max_local_error_reset_streams = 1024
# Diagnostic routes POST /echo and GET /bytes/{n} (up to 1 GiB per request): for
# checking an HTTP client end to end and for load tests; off on a public node.
diagnostics = false
# Serve the files of this directory at GET /{path} (to anyone, over HTTP/1.1, 2 and 3;
# nothing outside it). Unset: no files. Bytes per read/body chunk, chunks read ahead,
# byte ranges served in one response (multipart/byteranges; more: the whole file), and
# the files a directory's path serves (the first that exists, as nginx's `index`).
# static_root = "/srv/www"
static_chunk_bytes = 65536
static_channel_chunks = 4
static_max_ranges = 16
static_index = ["index.html"]

[identity]
# The SQLite peer store managed with `alknet peer add|list|remove`, asked after the
# [[identities]] below. Created (mode 0600) at start if missing.
sqlite = true
# Default: peers.db in data_dir.
# peers_db = "/var/lib/alknet/peers.db"

# Identities for client certificates (by SHA-256 fingerprint) and tokens.
# [[identities]]
# name = "alice"
# fingerprints = ["<64 hex digits>"]
# tokens = []
# scopes = ["echo"]
"#;

/// Errors in the configuration: always with the file name and, for syntax, the position.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: unknown handler {name:?} in handlers.enabled (available: {available})")]
    UnknownHandler { name: String, available: String },
    #[error("config: tls.cert and tls.key must be given together")]
    HalfTls,
    #[error("config: [vault] file is set, so the {0} comes from the vault; remove {1}")]
    VaultConflict(&'static str, &'static str),
    #[error("vault: {0}")]
    Vault(String),
    #[error("config: {0}")]
    Invalid(String),
    #[error("QUIC host key: {0}")]
    HostKey(#[from] HostKeyError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub workers: usize,
    #[serde(default)]
    pub pin_workers: alknet_runtime::PinWorkers,
    #[serde(default)]
    pub server_id: u16,
    #[serde(default = "yes")]
    pub kernel_steering: bool,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub handlers: HandlersSection,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub identities: Vec<IdentityEntry>,
    #[serde(default)]
    pub call: CallLimits,
    #[serde(default)]
    pub identity: IdentitySection,
    #[serde(default)]
    pub ssh: SshConfig,
    #[serde(default)]
    pub sftp: SftpConfig,
    #[serde(default)]
    pub vault: VaultSection,
    #[serde(default)]
    pub git: GitConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    /// The DNS catalog, made once for the DNS handlers and the classic listener.
    #[serde(skip)]
    dns_state: std::cell::OnceCell<DnsState>,
    /// The pkarr store, opened once for the catalog and the `dns.publish` operation.
    #[serde(skip)]
    pkarr: std::cell::OnceCell<Option<Arc<PkarrStore>>>,
    /// Where `node.reload` sends its requests (set by `alknet serve` before the call
    /// handler is built; without it the operation is not offered).
    #[serde(skip)]
    pub reload_requests: Option<crate::reload::ReloadSender>,
    #[serde(default)]
    pub quic: HandshakePolicy,
    #[serde(default)]
    pub admission: alknet_runtime::AdmissionLimits,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub hq: alknet_hq::HqConfig,
    #[serde(default)]
    pub http3: alknet_http::h3::H3Limits,
    #[serde(default)]
    pub tcp: TcpLimits,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub webtransport: alknet_http::h3::WebTransportConfig,
    /// The call node the `alknet/call` handler serves, once [`FileConfig::registry`] built
    /// it: the HTTP front end runs the same operations (and counts into the same stats).
    #[serde(skip)]
    call_node: std::cell::OnceCell<CallNodeSlot>,
    /// The HTTP routes' shared state (one for TCP and HTTP/3: one set of metrics).
    #[serde(skip)]
    http_state: std::cell::OnceCell<HttpState>,
    /// The node keys from the vault, once [`FileConfig::unlock_vault`] has run.
    #[serde(skip)]
    pub vault_keys: Option<NodeKeys>,
    /// The thread reloading the zone files into the DNS catalog; stopped when dropped, so
    /// the config the node runs with is kept for as long as it runs.
    #[serde(skip)]
    zone_watch: std::cell::RefCell<Option<ZoneReloader>>,
    /// What a live reload builds from the running node (see [`FileConfig::adopt`]).
    #[serde(skip)]
    reload_base: ReloadBase,
}

/// What a reload carries over from the running node into the handlers it rebuilds: the
/// call node to reconfigure (its operations, topics and counters go on), the HTTP state
/// (its counters and the server status), and zones loaded for the running catalog.
#[derive(Default)]
struct ReloadBase {
    call: Option<Arc<CallNode>>,
    http: Option<HttpState>,
    zones: Option<Catalog>,
}

impl std::fmt::Debug for ReloadBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadBase").finish_non_exhaustive()
    }
}

/// Which handlers a reload rebuilds, from the config sections that changed (see
/// [`FileConfig::adopt`]): a handler listed is built anew for new connections, the others
/// are kept as they run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rebuild {
    pub alpns: Vec<&'static [u8]>,
    /// The HTTP routes' state (`[http]`, or the call node they run, changed): the `h3`
    /// handler and the TLS-over-TCP handler are rebuilt on a new one.
    pub http: bool,
    /// `[tcp]`, or the HTTP state, changed: the TCP listener gets a new setup.
    pub tcp: bool,
}

/// `[log]`: what `alknet serve` logs (to stderr).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `tracing` filter directives, e.g. `"info"` or `"info,alknet_runtime=debug"`;
    /// `ALKNET_LOG` in the environment overrides it. Reloadable.
    #[serde(default = "default_log_filter")]
    pub filter: String,
}

fn default_log_filter() -> String {
    "info".into()
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            filter: default_log_filter(),
        }
    }
}

/// The shared call node (it has no `Debug` of its own).
struct CallNodeSlot(Arc<alknet_call::CallNode>);

impl std::fmt::Debug for CallNodeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallNode")
    }
}

/// `[vault]`: serve the node keys from a key vault.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSection {
    /// The vault file; unset, the vault is not used by `serve`.
    pub file: Option<PathBuf>,
    /// A file holding the vault password (else $ALKNET_VAULT_PASSWORD, else a prompt).
    pub password_file: Option<PathBuf>,
}

/// `[identity]`: the SQLite peer store (the `[[identities]]` list is the config adapter).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// The peer database; default `peers.db` in the data directory.
    #[serde(default)]
    pub peers_db: Option<PathBuf>,
    /// Whether the server resolves identities from the peer database too.
    #[serde(default = "yes")]
    pub sqlite: bool,
}

impl Default for IdentitySection {
    fn default() -> Self {
        Self {
            peers_db: None,
            sqlite: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// `"auto"`: keep a browser-valid certificate for WebTransport beside the main one
    /// and present it to `h3` connections (see `alknet_runtime::tls::WebTransportCert`).
    #[serde(default)]
    pub webtransport_cert: WebTransportCertMode,
}

/// `tls.webtransport_cert`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebTransportCertMode {
    /// `h3` connections get the main certificate (default: clients that pin it keep
    /// working).
    #[default]
    Off,
    /// A P-256 certificate valid 13 days, rotated before expiry, its hash published at
    /// `GET /api/webtransport`.
    Auto,
}

/// The node's WebTransport certificate: one per process, so a reload (which builds the
/// TLS config and the HTTP state anew) keeps presenting and publishing the same one.
fn webtransport_cert() -> Result<Arc<WebTransportCert>, alknet_runtime::tls::TlsError> {
    static CERT: std::sync::OnceLock<Arc<WebTransportCert>> = std::sync::OnceLock::new();
    if let Some(c) = CERT.get() {
        return Ok(c.clone());
    }
    let made = WebTransportCert::generate(&[])?;
    Ok(CERT.get_or_init(|| made).clone())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlersSection {
    pub enabled: Vec<String>,
}

impl Default for HandlersSection {
    fn default() -> Self {
        Self {
            enabled: default_handlers(),
        }
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 4433)))
}

fn yes() -> bool {
    true
}

impl FileConfig {
    /// Parses config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.limits
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.call
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.ssh
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.git
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.dns
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.quic
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.admission
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        crate::logging::parse(&cfg.log.filter).map_err(ConfigError::Invalid)?;
        cfg.sftp
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.tcp
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.http
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.webtransport
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if cfg.vault.file.is_some() {
            if cfg.tls.cert.is_some() || cfg.tls.key.is_some() {
                return Err(ConfigError::VaultConflict(
                    "TLS certificate",
                    "tls.cert and tls.key",
                ));
            }
            if cfg.ssh.host_key.is_some() {
                return Err(ConfigError::VaultConflict("SSH host key", "ssh.host_key"));
            }
            if !cfg.ssh.host_keys.is_empty() {
                return Err(ConfigError::VaultConflict("SSH host key", "ssh.host_keys"));
            }
        }
        Ok(cfg)
    }

    /// Reads a config file, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::parse(DEFAULT_CONFIG, "<default>"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Self::parse(&text, &p.display().to_string())
            }
        }
    }

    /// The data directory: the config's, else `$ALKNET_DATA_DIR`, else the XDG default.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        default_data_dir()
    }

    /// The handlers named in `handlers.enabled`.
    pub fn registry(&self) -> Result<AlpnRegistry, ConfigError> {
        self.registry_reusing(&AlpnRegistry::new(), &[])
    }

    /// The handlers named in `handlers.enabled`, taking the ones `running` already has
    /// (the same instances, so their open connections and state go on) except those of
    /// `rebuild`, and building the others (a reload that enables a handler, or changes its
    /// section).
    pub fn registry_reusing(
        &self,
        running: &AlpnRegistry,
        rebuild: &[&[u8]],
    ) -> Result<AlpnRegistry, ConfigError> {
        let mut registry = AlpnRegistry::new();
        // h3 serves the HTTP router, which runs the call handler's operations: build it
        // after the others (registration stays in the configured order)
        let build = |name: &String| match running.lookup(name.as_bytes()) {
            Some(h) if !rebuild.contains(&name.as_bytes()) => Ok(h.clone()),
            _ => self.handler(name),
        };
        let is_h3 = |name: &&String| name.as_bytes() == alknet_http::h3::ALPN;
        let mut built: Vec<Option<Arc<dyn ProtocolHandler>>> = Vec::new();
        for name in &self.handlers.enabled {
            built.push(if is_h3(&name) {
                None
            } else {
                Some(build(name)?)
            });
        }
        for (slot, name) in built.iter_mut().zip(&self.handlers.enabled) {
            if slot.is_none() {
                *slot = Some(build(name)?);
            }
        }
        for handler in built.into_iter().flatten() {
            registry
                .register(handler)
                .map_err(|e| ConfigError::Invalid(format!("handlers.enabled: {e}")))?;
        }
        if registry.is_empty() {
            return Err(ConfigError::Invalid("handlers.enabled is empty".into()));
        }
        Ok(registry)
    }

    /// Builds the handler of one ALPN named in `handlers.enabled`.
    fn handler(&self, name: &str) -> Result<Arc<dyn ProtocolHandler>, ConfigError> {
        // one catalog for both DNS handlers, loaded only when one is enabled
        Ok(match name.as_bytes() {
            alknet_echo::ALPN => Arc::new(alknet_echo::EchoHandler),
            alknet_perf::ALPN => Arc::new(alknet_perf::PerfHandler),
            alknet_call::ALPN => {
                let adapter = self.call_adapter()?;
                let _ = self.call_node.set(CallNodeSlot(adapter.node()));
                Arc::new(adapter)
            }
            alknet_ssh::ALPN => Arc::new(self.ssh_adapter()?),
            alknet_git::ALPN => Arc::new(self.git_handler()?),
            alknet_dns::DOQ_ALPN => Arc::new(DoqHandler::new(self.dns_state()?)),
            alknet_dns::PIPELINE_ALPN => Arc::new(PipelineHandler::new(self.dns_state()?)),
            alknet_hq::ALPN => Arc::new(
                alknet_hq::HqHandler::new(&self.hq)
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?,
            ),
            crate::sftp::ALPN => Arc::new(self.sftp_service().alpn()),
            alknet_http::h3::ALPN => {
                self.http3
                    .validate()
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
                let state = self.http_state()?;
                Arc::new(
                    alknet_http::h3::H3Handler::new(
                        alknet_http::router(state.clone()),
                        self.http3.clone(),
                    )
                    .with_drain_of(state)
                    .with_webtransport(self.webtransport.clone()),
                )
            }
            _ => {
                return Err(ConfigError::UnknownHandler {
                    name: name.to_string(),
                    available: available_handlers().join(", "),
                })
            }
        })
    }

    /// The keys of handler sections a reload cannot change, each with why, that differ
    /// between `running` (the config the node serves) and this one.
    pub fn restart_only_changes(&self, running: &FileConfig) -> Vec<(&'static str, &'static str)> {
        let (now, was) = (&self.dns, &running.dns);
        const SOCKETS: &str = "a socket bound at start";
        const PKARR: &str = "the pkarr store is opened at start, for the DNS catalog and the \
                             dns.publish operation";
        let mut fixed = Vec::new();
        let mut check = |differs: bool, key, why| {
            if differs {
                fixed.push((key, why));
            }
        };
        check(now.udp_listen != was.udp_listen, "dns.udp_listen", SOCKETS);
        check(now.tcp_listen != was.tcp_listen, "dns.tcp_listen", SOCKETS);
        check(now.pkarr != was.pkarr, "dns.pkarr", PKARR);
        check(now.pkarr_db != was.pkarr_db, "dns.pkarr_db", PKARR);
        check(
            now.pkarr_publish_self != was.pkarr_publish_self,
            "dns.pkarr_publish_self",
            "the node publishes itself once, at start",
        );
        // the classic listeners run with the [dns] settings they started with (only the
        // zones, one catalog with doq and alknet/dns, follow a reload)
        if was.udp_listen.is_some() || was.tcp_listen.is_some() {
            const CLASSIC: &str = "read by the classic DNS listeners, which start with the node";
            check(
                now.udp_payload_size != was.udp_payload_size,
                "dns.udp_payload_size",
                CLASSIC,
            );
            check(
                now.tcp_idle_timeout != was.tcp_idle_timeout,
                "dns.tcp_idle_timeout_ms",
                CLASSIC,
            );
            check(
                now.max_tcp_connections != was.max_tcp_connections,
                "dns.max_tcp_connections",
                CLASSIC,
            );
            check(
                now.max_pipelined_queries != was.max_pipelined_queries,
                "dns.max_pipelined_queries",
                CLASSIC,
            );
            check(now.upstreams != was.upstreams, "dns.upstreams", CLASSIC);
            check(
                now.recursion_allow != was.recursion_allow,
                "dns.recursion_allow",
                CLASSIC,
            );
            check(
                now.forward_timeout != was.forward_timeout,
                "dns.forward_timeout_ms",
                CLASSIC,
            );
            check(
                now.cache_entries != was.cache_entries,
                "dns.cache_entries",
                CLASSIC,
            );
            check(
                now.answer_cache_bytes != was.answer_cache_bytes,
                "dns.answer_cache_bytes",
                "each answer cache is sized when it is made (a classic UDP socket's at start, \
                 a worker's DoQ one at its first query)",
            );
            check(
                now.rrl_responses_per_second != was.rrl_responses_per_second,
                "dns.rrl_responses_per_second",
                CLASSIC,
            );
            check(now.rrl_slip != was.rrl_slip, "dns.rrl_slip", CLASSIC);
            check(
                now.rrl_table_size != was.rrl_table_size,
                "dns.rrl_table_size",
                CLASSIC,
            );
        }
        check(
            self.ssh.bridge_threads != running.ssh.bridge_threads,
            "ssh.bridge_threads",
            "the SSH bridge's tokio runtime starts once per process",
        );
        const TCP: &str = "the TLS-over-TCP listeners are bound at start";
        check(self.tcp.enabled != running.tcp.enabled, "tcp.enabled", TCP);
        check(
            self.tcp.listen_backlog != running.tcp.listen_backlog,
            "tcp.listen_backlog",
            TCP,
        );
        fixed
    }

    /// For a live reload of `running` (the config the node serves now) with the top-level
    /// sections `changed`: takes over the node-wide parts no changed section touches (the
    /// vault keys, the pkarr store, the DNS catalog, the call node, the HTTP state), so the
    /// handlers built from this config share them, and says which handlers to rebuild.
    /// Zones whose configuration changed are loaded now (an error changes nothing) and
    /// stored into the running catalog by [`FileConfig::commit_reload`].
    pub fn adopt(
        &mut self,
        running: &FileConfig,
        changed: &[String],
    ) -> Result<Rebuild, ConfigError> {
        let changed = |section: &str| changed.iter().any(|c| c == section);
        let enabled = |alpn: &[u8]| self.handlers.enabled.iter().any(|a| a.as_bytes() == alpn);
        self.vault_keys = running.vault_keys.clone();
        if let Some(store) = running.pkarr.get() {
            let _ = self.pkarr.set(store.clone());
        }
        let mut alpns: Vec<&'static [u8]> = Vec::new();
        if changed("dns") {
            alpns.extend([alknet_dns::DOQ_ALPN, alknet_dns::PIPELINE_ALPN]);
        }
        if let Some(state) = running.dns_state.get() {
            if !changed("dns") {
                let _ = self.dns_state.set(state.clone());
            } else {
                // one catalog for the node's life: the classic listeners and the open
                // connections read it too
                if self.dns.zones != running.dns.zones
                    || self.dns.reload_interval != running.dns.reload_interval
                {
                    self.reload_base.zones = Some(self.load_zones()?);
                }
                let next = DnsState::new(state.catalog.clone(), self.dns.clone());
                let _ = self.dns_state.set(next);
            }
        }
        let call_now = enabled(alknet_call::ALPN);
        let call_before = running.call_node.get();
        let call_rebuilt = call_now != call_before.is_some() || (call_now && changed("call"));
        if call_now && changed("call") {
            alpns.push(alknet_call::ALPN);
            self.reload_base.call = call_before.map(|slot| slot.0.clone());
        } else if let Some(slot) = call_before.filter(|_| call_now) {
            let _ = self.call_node.set(CallNodeSlot(slot.0.clone()));
        }
        // the HTTP routes hold the DNS state (DoH) and the TCP listener DoT's
        // the routes publish [webtransport] and tls.webtransport_cert (GET /api/webtransport)
        let http = changed("http")
            || call_rebuilt
            || changed("dns")
            || changed("handlers")
            || changed("webtransport")
            || changed("tls");
        match running.http_state.get() {
            Some(state) if http => self.reload_base.http = Some(state.clone()),
            Some(state) => {
                let _ = self.http_state.set(state.clone());
            }
            None => {}
        }
        if http || changed("http3") {
            alpns.push(alknet_http::h3::ALPN);
        }
        if changed("ssh") || changed("sftp") {
            alpns.push(alknet_ssh::ALPN);
        }
        if changed("sftp") {
            alpns.push(crate::sftp::ALPN);
        }
        if changed("git") {
            alpns.push(alknet_git::ALPN);
        }
        if changed("hq") {
            alpns.push(alknet_hq::ALPN);
        }
        Ok(Rebuild {
            alpns,
            http,
            tcp: http || changed("tcp"),
        })
    }

    /// Once a reload built on [`FileConfig::adopt`] is applied: zones loaded for it go into
    /// the running catalog (and a watcher of the new zone files replaces the old one), and
    /// the zone watcher of `running` moves here, as this config replaces it.
    pub fn commit_reload(&mut self, running: &FileConfig) {
        let zones = self.reload_base.zones.take();
        if let (Some(zones), Some(state)) = (zones, self.dns_state.get()) {
            state.catalog.store(Arc::new(zones));
            *self.zone_watch.borrow_mut() = ZoneReloader::start(&self.dns, state.catalog.clone());
            tracing::info!("dns zones reloaded from the config");
        } else if self.zone_watch.borrow().is_none() {
            *self.zone_watch.borrow_mut() = running.zone_watch.borrow_mut().take();
        }
        self.reload_base = ReloadBase::default();
    }

    /// The pkarr store (`[dns] pkarr = true`): `dns.pkarr_db`, else `pkarr.db` in the data
    /// directory; opened, or created, once.
    pub fn pkarr_store(&self) -> Result<Option<Arc<PkarrStore>>, ConfigError> {
        if let Some(store) = self.pkarr.get() {
            return Ok(store.clone());
        }
        let store = if self.dns.pkarr {
            let path = self
                .dns
                .pkarr_db
                .clone()
                .unwrap_or_else(|| self.data_dir().join("pkarr.db"));
            let store = PkarrStore::open(&path).map_err(|e| {
                ConfigError::Invalid(format!("dns.pkarr_db {}: {e}", path.display()))
            })?;
            Some(Arc::new(store))
        } else {
            None
        };
        Ok(self.pkarr.get_or_init(|| store).clone())
    }

    /// With `dns.pkarr` and `dns.pkarr_publish_self`: publishes this node (its address, its
    /// port, its certificate fingerprint) under its own key, and returns the name.
    pub fn publish_node_name(
        &self,
        addr: SocketAddr,
        fingerprint: &str,
    ) -> Result<Option<String>, ConfigError> {
        let Some(store) = self.pkarr_store()? else {
            return Ok(None);
        };
        if !self.dns.pkarr_publish_self {
            return Ok(None);
        }
        let invalid = |e: alknet_dns::PublishError| ConfigError::Invalid(format!("pkarr: {e}"));
        // the vault's pkarr key when the node has a vault, else one kept in the data dir
        let keypair = match &self.vault_keys {
            Some(keys) => alknet_dns::pkarr::keypair_from_seed(&keys.pkarr_seed),
            None => alknet_dns::pkarr::node_keypair(&self.data_dir().join("pkarr_node_key"))
                .map_err(invalid)?,
        };
        let name = store
            .publish_node(&keypair, addr, fingerprint)
            .map_err(invalid)?;
        Ok(Some(name))
    }

    /// The DNS catalog, settings and forwarding cache, made once for both DNS handlers and
    /// the classic listener.
    fn dns_state(&self) -> Result<DnsState, ConfigError> {
        if let Some(state) = self.dns_state.get() {
            return Ok(state.clone());
        }
        let state = DnsState::new(self.dns_catalog()?, self.dns.clone());
        Ok(self.dns_state.get_or_init(|| state).clone())
    }

    /// Classic DNS on `[dns] udp_listen` / `tcp_listen`, when set: bound now, one socket
    /// per worker, served on the workers (a [`alknet_runtime::WorkerHook`] for
    /// `start_with_hooks`), from the same catalog as `doq` and `alknet/dns`.
    pub fn bind_dns_classic(&self) -> Result<Option<Arc<ClassicListeners>>, ConfigError> {
        if self.dns.udp_listen.is_none() && self.dns.tcp_listen.is_none() {
            return Ok(None);
        }
        let workers = resolve_workers(self.workers);
        let listeners = ClassicListeners::bind(&self.dns_state()?, workers)
            .map_err(|e| ConfigError::Invalid(format!("dns classic listener: {e}")))?;
        Ok(Some(Arc::new(listeners)))
    }

    /// What [`Self::bind_dns_classic`] checks before it binds (`alknet serve --check`):
    /// with classic DNS listeners configured, the catalog they serve loads.
    pub fn check_dns_classic(&self) -> Result<(), ConfigError> {
        if self.dns.udp_listen.is_none() && self.dns.tcp_listen.is_none() {
            return Ok(());
        }
        self.dns_state().map(|_| ())
    }

    /// The `[[dns.zones]]`, loaded now (a zone that fails refuses the start, naming its
    /// file and line), and a thread reloading them as their files change; it ends when
    /// the handlers holding the catalog are dropped.
    pub fn dns_catalog(&self) -> Result<SharedCatalog, ConfigError> {
        let catalog = alknet_dns::shared(self.load_zones()?);
        *self.zone_watch.borrow_mut() = ZoneReloader::start(&self.dns, catalog.clone());
        Ok(catalog)
    }

    /// The `[[dns.zones]]` read from their files now, with the pkarr names.
    fn load_zones(&self) -> Result<Catalog, ConfigError> {
        let mut catalog = alknet_dns::load_catalog(&self.dns)
            .map_err(|e| ConfigError::Invalid(format!("dns: {e}")))?;
        if let Some(store) = self.pkarr_store()? {
            catalog.set_pkarr(store);
        }
        Ok(catalog)
    }

    /// The identity providers: `[[identities]]` first, then the peer database when
    /// `identity.sqlite` is on (opened, and created if missing, now).
    pub fn identity_provider(&self) -> Result<Arc<dyn IdentityProvider>, ConfigError> {
        let from_config = ConfigIdentityProvider::new(&self.identities)
            .map_err(|e| ConfigError::Invalid(format!("identities: {e}")))?;
        if !self.identity.sqlite {
            return Ok(Arc::new(from_config));
        }
        let store = SqlitePeerStore::open(self.peers_db())
            .map_err(|e| ConfigError::Invalid(format!("identity: {e}")))?;
        Ok(Arc::new(ChainedIdentityProvider::new(vec![
            Arc::new(from_config),
            Arc::new(store),
        ])))
    }

    /// The peer database: `identity.peers_db`, else `peers.db` in the data directory.
    pub fn peers_db(&self) -> PathBuf {
        self.identity
            .peers_db
            .clone()
            .unwrap_or_else(|| self.data_dir().join("peers.db"))
    }

    /// The `alknet/call` handler with the built-in operations and the `[call]` limits.
    pub fn call_adapter(&self) -> Result<CallAdapter, ConfigError> {
        let mut registry = alknet_call::default_registry()
            .map_err(|e| ConfigError::Invalid(format!("call operations: {e}")))?;
        if let Some(store) = self.pkarr_store()? {
            registry
                .register(dns_publish_operation(store))
                .map_err(|e| ConfigError::Invalid(format!("call operations: {e}")))?;
        }
        if let Some(requests) = &self.reload_requests {
            registry
                .register(crate::reload::reload_operation(requests.clone()))
                .map_err(|e| ConfigError::Invalid(format!("call operations: {e}")))?;
        }
        let info = NodeInfo {
            workers: resolve_workers(self.workers),
            alpns: self.handlers.enabled.clone(),
            ..NodeInfo::default()
        };
        if let Some(running) = &self.reload_base.call {
            let node = running.reconfigured(self.call.clone(), info);
            return Ok(CallAdapter::from_node(Arc::new(node)));
        }
        Ok(CallAdapter::with_parts(
            registry,
            self.call.clone(),
            info,
            None,
        ))
    }

    /// The repository root of `alknet/git`: `git.root`, else `git/` in the data directory.
    pub fn git_root(&self) -> PathBuf {
        self.git.root_in(&self.data_dir())
    }

    /// The `alknet/git` handler (the repository root is created if missing).
    pub fn git_handler(&self) -> Result<GitHandler, ConfigError> {
        GitHandler::new(self.git.clone(), &self.git_root())
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// SFTP (both fronts): `[sftp]`, its root in the data directory unless set.
    pub fn sftp_service(&self) -> SftpService {
        let threads = if self.ssh.bridge_threads == 0 {
            resolve_workers(self.workers)
        } else {
            self.ssh.bridge_threads
        };
        SftpService::new(
            self.sftp.root_in(&self.data_dir()),
            self.sftp.clone(),
            threads,
        )
    }

    /// With `[vault] file` set: unlocks the vault (asking for the password as
    /// [`crate::vault::read_vault_password`] does) and keeps the node's TLS identity and
    /// SSH host key for [`Self::tls_identity`] and [`Self::ssh_adapter`]. Without, nothing.
    pub fn unlock_vault(&mut self) -> Result<(), ConfigError> {
        let Some(file) = &self.vault.file else {
            return Ok(());
        };
        let keys = crate::vault::node_keys(file, self.vault.password_file.as_deref())
            .map_err(ConfigError::Vault)?;
        tracing::info!("node keys from the vault {}", file.display());
        self.vault_keys = Some(keys);
        Ok(())
    }

    /// The `alknet/ssh` handler: the `[ssh]` settings, the host key (from the vault, or
    /// generated in the data directory on first start; its fingerprint is logged) and
    /// `authorized_keys`.
    pub fn ssh_adapter(&self) -> Result<SshAdapter, ConfigError> {
        if self.vault.file.is_some() {
            let keys = self.vault_keys.as_ref().ok_or(ConfigError::Vault(
                "the vault was not unlocked before the SSH handler was built".into(),
            ))?;
            let adapter = SshAdapter::load_with_host_key(
                self.ssh.clone(),
                keys.ssh_host.clone(),
                resolve_workers(self.workers),
            )
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            tracing::info!(
                "ssh host key fingerprint: {}",
                adapter.host_key_fingerprint()
            );
            return Ok(self.with_sftp_subsystem(adapter));
        }
        let (adapter, generated) = SshAdapter::load(
            self.ssh.clone(),
            &self.data_dir(),
            resolve_workers(self.workers),
        )
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if generated {
            tracing::info!("generated SSH host keys in {}", self.data_dir().display());
        }
        let fingerprints = adapter.host_key_fingerprints();
        for (i, (algorithm, fingerprint)) in fingerprints.iter().enumerate() {
            if fingerprints[..i].iter().any(|(a, _)| a == algorithm) {
                tracing::info!(
                    "ssh host key fingerprint: {fingerprint} ({algorithm}; announced only, \
                     the first {algorithm} key listed serves key exchange)"
                );
            } else {
                tracing::info!("ssh host key fingerprint: {fingerprint} ({algorithm})");
            }
        }
        Ok(self.with_sftp_subsystem(adapter))
    }

    /// The `sftp` subsystem, gated by `ssh:sftp`.
    fn with_sftp_subsystem(&self, adapter: SshAdapter) -> SshAdapter {
        adapter.with_subsystem(
            "sftp",
            alknet_ssh::policy::SCOPE_SFTP,
            Arc::new(self.sftp_service()),
        )
    }

    /// The TLS identity: the configured PEM files, or the generated one in the data
    /// directory (and whether it was generated just now).
    pub fn tls_identity(
        &self,
    ) -> Result<(TlsIdentity, Option<PathBuf>), Box<dyn std::error::Error>> {
        let (identity, generated) = self.main_tls_identity()?;
        Ok(match self.tls.webtransport_cert {
            WebTransportCertMode::Off => (identity, generated),
            WebTransportCertMode::Auto => (
                identity.with_webtransport_cert(webtransport_cert()?),
                generated,
            ),
        })
    }

    fn main_tls_identity(
        &self,
    ) -> Result<(TlsIdentity, Option<PathBuf>), Box<dyn std::error::Error>> {
        if self.vault.file.is_some() {
            let keys = self.vault_keys.as_ref().ok_or(ConfigError::Vault(
                "the vault was not unlocked before the TLS identity was asked for".into(),
            ))?;
            return Ok((keys.tls.clone(), None));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(c), Some(k)) => Ok((TlsIdentity::from_pem_files(c, k)?, None)),
            (None, None) => {
                let dir = self.data_dir();
                let (id, generated) = TlsIdentity::load_or_generate(&dir)?;
                Ok((id, generated.then_some(dir)))
            }
            _ => Err(Box::new(ConfigError::HalfTls)),
        }
    }

    /// The TLS-over-TCP side (`[tcp]`, `[http]`): the HTTP handler, serving the call
    /// operations when `alknet/call` is enabled. Call after [`FileConfig::registry`].
    /// Returns the HTTP state too, to be given the running server's status.
    /// The state of the HTTP routes, made once (after the call handler, whose operations
    /// it runs: [`FileConfig::registry`] builds `h3` last).
    pub fn http_state(&self) -> Result<HttpState, ConfigError> {
        if let Some(state) = self.http_state.get() {
            return Ok(state.clone());
        }
        let invoker = self.call_node.get().map(|slot| {
            Arc::new(alknet_call::NodeInvoker(slot.0.clone())) as Arc<dyn OperationInvoker>
        });
        let state = match &self.reload_base.http {
            Some(running) => running.reconfigured(self.http.clone(), invoker),
            None => HttpState::new(self.http.clone(), invoker),
        }
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        state.set_dns(self.dns_services()?);
        let cert = match self.tls.webtransport_cert {
            WebTransportCertMode::Off => None,
            WebTransportCertMode::Auto => {
                Some(webtransport_cert().map_err(|e| ConfigError::Invalid(e.to_string()))?)
            }
        };
        state.set_webtransport(alknet_http::WebTransportPublish {
            cert,
            config: self.webtransport.clone(),
        });
        Ok(self.http_state.get_or_init(|| state).clone())
    }

    /// Whether a DNS handler (`doq`, `alknet/dns`) is enabled: DoT and DoH follow them.
    fn serves_dns(&self) -> bool {
        self.handlers.enabled.iter().any(|a| {
            a.as_bytes() == alknet_dns::DOQ_ALPN || a.as_bytes() == alknet_dns::PIPELINE_ALPN
        })
    }

    /// What the HTTP routes get from the DNS side: DoH's resolver (with a DNS handler and
    /// `dns.doh`) and the pkarr relay (with `dns.pkarr`).
    fn dns_services(&self) -> Result<DnsServices, ConfigError> {
        let resolver = if self.dns.doh && self.serves_dns() {
            Some(Arc::new(DohResolver::new(self.dns_state()?)) as Arc<dyn DnsResolver>)
        } else {
            None
        };
        let relay = self
            .pkarr_store()?
            .map(|store| store as Arc<dyn PkarrRelay>);
        Ok(DnsServices { resolver, relay })
    }

    pub fn tcp_setup(&self) -> Result<(TcpSetup, HttpState), ConfigError> {
        let state = self.http_state()?;
        let mut registry = TcpRegistry::new();
        if self.tcp.enabled {
            // fixed distinct ALPNs (h2, http/1.1; dot): registration cannot clash
            if let Err(e) = registry.register(Arc::new(HttpTcpHandler::new(state.clone()))) {
                tracing::error!("TCP handlers: {e}");
            }
            if self.dns.dot && self.serves_dns() {
                let dot = Arc::new(DotHandler::new(self.dns_state()?));
                if let Err(e) = registry.register(dot) {
                    tracing::error!("TCP handlers: {e}");
                }
            }
        }
        Ok((
            TcpSetup {
                registry,
                limits: self.tcp.clone(),
            },
            state,
        ))
    }

    pub fn engine(&self, tls: TlsIdentity) -> EngineConfig {
        EngineConfig {
            listen: self.listen,
            workers: self.workers,
            pin_workers: self.pin_workers,
            server_id: self.server_id,
            limits: self.limits.clone(),
            tls,
            client_auth: self.tls.client_auth,
            kernel_steering: self.kernel_steering,
            handshake: self.quic.clone(),
            admission: self.admission.clone(),
            // a debugging switch, as in the QUIC interop runner's images
            qlog_dir: std::env::var_os("QLOGDIR").map(PathBuf::from),
            quic_host_key: None,
        }
    }

    /// The QUIC host key (the stateless-reset and address-token keys come from it, so a
    /// restarted node's resets are accepted by the old process's clients): from the
    /// vault when the node has one, else kept in the data directory (generated on first
    /// start); and whether it was generated now.
    pub fn quic_host_key(&self) -> Result<(QuicHostKey, bool), ConfigError> {
        if let Some(keys) = &self.vault_keys {
            return Ok((keys.quic_host.clone(), false));
        }
        if self.vault.file.is_some() {
            return Err(ConfigError::Vault(
                "the vault was not unlocked before the QUIC host key was asked for".into(),
            ));
        }
        Ok(QuicHostKey::load_or_generate(&self.data_dir())?)
    }
}

/// `dns.publish`: stores a pkarr signed packet, `{"key": "<z-base32>", "payload":
/// "<base64 relay payload>"}` → `{"key", "timestamp"}`. Public, as pkarr relays are: the
/// signature is the authorization. Stale or forged packets get INVALID_ARGUMENT.
fn dns_publish_operation(store: Arc<PkarrStore>) -> alknet_call::Operation {
    use alknet_call::CallError;
    alknet_call::Operation::unary("dns.publish", move |_, input| {
        let store = store.clone();
        async move {
            let key = input["key"]
                .as_str()
                .ok_or_else(|| CallError::invalid_argument("key: a z-base32 public key"))?;
            let payload = input["payload"]
                .as_str()
                .ok_or_else(|| CallError::invalid_argument("payload: the base64 relay payload"))?;
            let timestamp = store
                .publish_base64(key, payload)
                .map_err(|e| CallError::invalid_argument(e.to_string()))?;
            Ok(serde_json::json!({"key": key, "timestamp": timestamp}))
        }
    })
    .public()
    .describe("Publish a pkarr signed packet (signature ‖ timestamp ‖ DNS packet) served over DNS")
}

/// Every handler this binary can serve, in the default preference order.
pub fn available_handlers() -> Vec<String> {
    [
        alknet_echo::ALPN,
        alknet_perf::ALPN,
        alknet_call::ALPN,
        alknet_ssh::ALPN,
        crate::sftp::ALPN,
        alknet_git::ALPN,
        alknet_dns::DOQ_ALPN,
        alknet_dns::PIPELINE_ALPN,
        alknet_hq::ALPN,
        alknet_http::h3::ALPN,
    ]
    .iter()
    .map(|a| String::from_utf8_lossy(a).into_owned())
    .collect()
}

/// The handlers served when `handlers.enabled` is not given: all but DNS, which answers
/// only for configured zones and so is turned on with them, and `hq-interop`, which serves
/// files to anyone and so only when asked for. `h3` is served: the same router as HTTP/1.1
/// and HTTP/2 over TLS/TCP, which are on by default too (`[tcp]`).
pub fn default_handlers() -> Vec<String> {
    let opt_in = [
        alknet_dns::DOQ_ALPN,
        alknet_dns::PIPELINE_ALPN,
        alknet_hq::ALPN,
    ];
    available_handlers()
        .into_iter()
        .filter(|h| !opt_in.contains(&h.as_bytes()))
        .collect()
}

pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ALKNET_DATA_DIR") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("alknet");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/share/alknet");
    }
    PathBuf::from(".alknet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_to_the_defaults() {
        let cfg = FileConfig::load(None).expect("default config");
        assert_eq!(cfg.limits, Limits::default());
        assert_eq!(cfg.listen, default_listen());
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = cfg;
        // the ssh handler keeps its host key in the data directory
        cfg.data_dir = Some(dir.path().to_path_buf());
        let registry = cfg.registry().expect("registry");
        assert_eq!(registry.len(), 7);
        assert!(
            registry.alpns().contains(&alknet_http::h3::ALPN.to_vec()),
            "HTTP/3 is served by default, as HTTP/1.1 and HTTP/2 are over TLS/TCP"
        );
        assert!(dir.path().join(alknet_ssh::HOST_KEY_FILE).exists());
        assert!(dir.path().join("git").is_dir(), "the git root is created");
        assert_eq!(cfg.git, GitConfig::default());
        assert_eq!(cfg.ssh, SshConfig::default());
        assert_eq!(cfg.sftp, SftpConfig::default());
        assert_eq!(cfg.call, CallLimits::default());
        assert_eq!(cfg.tcp, TcpLimits::default());
        assert!(cfg.tcp.enabled, "TLS over TCP is on by default");
        assert_eq!(cfg.http, HttpConfig::default());
        let (tcp, _) = cfg.tcp_setup().expect("tcp setup");
        assert_eq!(
            tcp.registry.alpns(),
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let empty = FileConfig::parse("", "<empty>").expect("empty config");
        assert_eq!(empty.limits, Limits::default());
        assert_eq!(empty.handlers.enabled, cfg.handlers.enabled);
    }

    /// A running config with its handlers built (the call node and the HTTP state made).
    fn running(text: &str, dir: &Path) -> (FileConfig, AlpnRegistry) {
        let mut cfg = FileConfig::parse(text, "running.toml").expect("running config");
        cfg.data_dir = Some(dir.to_path_buf());
        let registry = cfg.registry().expect("registry");
        cfg.tcp_setup().expect("tcp setup");
        (cfg, registry)
    }

    fn reloaded(text: &str, dir: &Path) -> FileConfig {
        let mut cfg = FileConfig::parse(text, "reloaded.toml").expect("reloaded config");
        cfg.data_dir = Some(dir.to_path_buf());
        cfg
    }

    #[test]
    fn a_reload_rebuilds_the_handlers_of_the_changed_sections_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base =
            "[handlers]\nenabled = [\"alknet/echo\", \"alknet/call\", \"alknet/git\", \"h3\"]\n";
        let (live, registry) = running(base, dir.path());
        let same = |a: &AlpnRegistry, b: &AlpnRegistry, alpn: &[u8]| {
            Arc::ptr_eq(
                a.lookup(alpn).expect("running"),
                b.lookup(alpn).expect("reloaded"),
            )
        };

        // [git]: alknet/git only; the call node and the HTTP state go on
        let mut next = reloaded(
            &format!("{base}[git]\nallow_force_push = true\n"),
            dir.path(),
        );
        let rebuild = next.adopt(&live, &["git".into()]).expect("adopt");
        assert_eq!(rebuild.alpns, vec![alknet_git::ALPN]);
        assert!(!rebuild.http && !rebuild.tcp);
        let r = next
            .registry_reusing(&registry, &rebuild.alpns)
            .expect("registry");
        assert!(!same(&registry, &r, alknet_git::ALPN), "git rebuilt");
        for kept in [alknet_echo::ALPN, alknet_call::ALPN, alknet_http::h3::ALPN] {
            assert!(same(&registry, &r, kept), "{kept:?} kept");
        }

        // [call]: a reconfigured node (same operations and counters), and the HTTP routes
        // that run its operations
        let mut next = reloaded(
            &format!("{base}[call]\nmax_frame_size = 4096\n"),
            dir.path(),
        );
        let rebuild = next.adopt(&live, &["call".into()]).expect("adopt");
        assert_eq!(
            rebuild.alpns,
            vec![alknet_call::ALPN, alknet_http::h3::ALPN]
        );
        assert!(rebuild.http && rebuild.tcp);
        let r = next
            .registry_reusing(&registry, &rebuild.alpns)
            .expect("registry");
        assert!(!same(&registry, &r, alknet_call::ALPN));
        assert!(!same(&registry, &r, alknet_http::h3::ALPN));
        let (old, new) = (
            live.call_node.get().expect("running node"),
            next.call_node.get().expect("new node"),
        );
        assert!(!Arc::ptr_eq(&old.0, &new.0));
        assert_eq!(new.0.limits.max_frame_size, 4096);
        assert!(Arc::ptr_eq(&old.0.stats, &new.0.stats), "counters go on");
        assert!(Arc::ptr_eq(&old.0.bus, &new.0.bus), "one topic bus");

        // [tcp] alone: the TCP listener's setup, no QUIC handler
        let mut next = reloaded(
            &format!("{base}[tcp]\nmax_connections_per_worker = 3\n"),
            dir.path(),
        );
        let rebuild = next.adopt(&live, &["tcp".into()]).expect("adopt");
        assert!(rebuild.alpns.is_empty() && rebuild.tcp && !rebuild.http);
    }

    #[test]
    fn keys_bound_at_start_are_named_as_needing_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (live, _) = running("[dns]\nudp_listen = \"127.0.0.1:5353\"\n", dir.path());
        let next = reloaded(
            "[dns]\nudp_listen = \"127.0.0.1:5354\"\nupstreams = [\"127.0.0.1:53\"]\nquery_timeout_ms = 5\n\
             [tcp]\nlisten_backlog = 7\ntls_handshake_timeout_ms = 5\n",
            dir.path(),
        );
        let keys: Vec<&str> = next
            .restart_only_changes(&live)
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(
            keys,
            ["dns.udp_listen", "dns.upstreams", "tcp.listen_backlog"]
        );
        let (live, _) = running("", dir.path());
        let next = reloaded("[dns]\nupstreams = [\"127.0.0.1:53\"]\n", dir.path());
        assert!(
            next.restart_only_changes(&live).is_empty(),
            "no classic listener: the forwarder is rebuilt with doq"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = FileConfig::parse("listen = 5", "x.toml").expect_err("bad type");
        assert!(e.to_string().contains("x.toml"), "{e}");
        let e = FileConfig::parse("lisen = \"1.2.3.4:1\"", "x.toml").expect_err("typo");
        assert!(e.to_string().contains("lisen"), "{e}");
        let e = FileConfig::parse("[call]\nmax_frame_size = 0", "x.toml").expect_err("zero");
        assert!(e.to_string().contains("call.max_frame_size"), "{e}");
        let e = FileConfig::parse("[limits]\nmax_connections = 0", "x.toml").expect_err("zero");
        assert!(e.to_string().contains("max_connections"), "{e}");
        let cfg = FileConfig::parse("[handlers]\nenabled = [\"nope\"]", "x.toml").expect("parses");
        let e = cfg.registry().expect_err("unknown handler");
        assert!(e.to_string().contains("nope"), "{e}");
        let cfg = FileConfig::parse("[tls]\ncert = \"/x\"", "x.toml").expect("parses");
        assert!(cfg.tls_identity().is_err());
    }

    #[test]
    fn dns_section_builds_both_handlers_on_one_catalog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let zone = dir.path().join("example.com.zone");
        std::fs::write(
            &zone,
            "$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\nwww IN A 192.0.2.1\n",
        )
        .expect("write zone");
        let text = format!(
            "[handlers]\nenabled = [\"doq\", \"alknet/dns\"]\n[dns]\nquery_timeout_ms = 500\n\
             [[dns.zones]]\norigin = \"example.com\"\nfile = {zone:?}\n"
        );
        let cfg = FileConfig::parse(&text, "x.toml").expect("parses");
        assert_eq!(cfg.dns.zones.len(), 1);
        assert_eq!(cfg.dns.query_timeout, std::time::Duration::from_millis(500));
        let registry = cfg.registry().expect("registry");
        assert_eq!(
            registry.alpns(),
            vec![b"doq".to_vec(), b"alknet/dns".to_vec()]
        );
        // not served unless asked for
        let default = FileConfig::load(None).expect("default");
        assert!(!default.handlers.enabled.iter().any(|h| h == "doq"));
        // a broken zone refuses the start, naming the file and line
        std::fs::write(&zone, "$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\nwww IN A nope\n")
            .expect("write zone");
        let cfg = FileConfig::parse(&text, "x.toml").expect("parses");
        let e = cfg.registry().expect_err("broken zone");
        assert!(e.to_string().contains("line 3"), "{e}");
        let e =
            FileConfig::parse("[dns]\nmax_queries_per_connection = 0", "x.toml").expect_err("zero");
        assert!(
            e.to_string().contains("dns.max_queries_per_connection"),
            "{e}"
        );
        let e = FileConfig::parse("[dns]\nzone = []", "x.toml").expect_err("typo");
        assert!(e.to_string().contains("zone"), "{e}");
    }

    #[test]
    fn vault_section_conflicts_with_other_key_sources() {
        let cfg = FileConfig::parse("[vault]\nfile = \"/v\"\n", "x.toml").expect("parses");
        assert_eq!(cfg.vault.file.as_deref(), Some(Path::new("/v")));
        // not unlocked yet: asking for the keys is an error, not a generated certificate
        let e = cfg.tls_identity().expect_err("locked");
        assert!(e.to_string().contains("not unlocked"), "{e}");
        let e = FileConfig::parse(
            "[vault]\nfile = \"/v\"\n[tls]\ncert = \"/c\"\nkey = \"/k\"\n",
            "x.toml",
        )
        .expect_err("tls conflict");
        assert!(e.to_string().contains("tls.cert"), "{e}");
        let e = FileConfig::parse(
            "[vault]\nfile = \"/v\"\n[ssh]\nhost_key = \"/k\"\n",
            "x.toml",
        )
        .expect_err("ssh conflict");
        assert!(e.to_string().contains("ssh.host_key"), "{e}");
        let e = FileConfig::parse("[vault]\nfiel = \"/v\"\n", "x.toml").expect_err("typo");
        assert!(e.to_string().contains("fiel"), "{e}");
    }

    #[test]
    fn identity_config_chains_the_peer_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = FileConfig::load(None).expect("default config");
        assert!(default.identity.sqlite);
        assert_eq!(default.identity.peers_db, None);

        let text = format!(
            "data_dir = {:?}\n[[identities]]\nname = \"alice\"\ntokens = [\"t1\", \"both\"]\n\
             scopes = [\"echo\"]\n",
            dir.path()
        );
        let cfg = FileConfig::parse(&text, "x.toml").expect("parses");
        assert_eq!(cfg.peers_db(), dir.path().join("peers.db"));
        let provider = cfg.identity_provider().expect("provider");
        let store = SqlitePeerStore::open(dir.path().join("peers.db")).expect("created at start");
        store
            .add(&alknet_peers::NewPeer {
                name: "bob".into(),
                tokens: vec!["t2".into(), "both".into()],
                scopes: vec!["call".into()],
                ..Default::default()
            })
            .expect("add bob");
        let name = |t: &str| provider.resolve_from_token(t).map(|i| i.name);
        assert_eq!(name("t1").as_deref(), Some("alice"));
        assert_eq!(
            name("t2").as_deref(),
            Some("bob"),
            "added after start, seen"
        );
        assert_eq!(name("both").as_deref(), Some("alice"), "config file first");
        assert_eq!(name("t3"), None);

        let off = dir.path().join("off.db");
        let text = format!("[identity]\nsqlite = false\npeers_db = {off:?}\n");
        let cfg = FileConfig::parse(&text, "x.toml").expect("parses");
        assert_eq!(cfg.peers_db(), off);
        let provider = cfg.identity_provider().expect("provider");
        assert_eq!(provider.resolve_from_token("t2"), None);
        assert!(!off.exists());

        let blocked = dir.path().join("peers.db").join("x.db");
        let text = format!("[identity]\npeers_db = {blocked:?}\n");
        let cfg = FileConfig::parse(&text, "x.toml").expect("parses");
        let Err(e) = cfg.identity_provider() else {
            panic!("{} opened", blocked.display());
        };
        assert!(
            e.to_string().contains(&blocked.display().to_string()),
            "{e}"
        );
        let e = FileConfig::parse("[identity]\nsqlit = true", "x.toml").expect_err("typo");
        assert!(e.to_string().contains("sqlit"), "{e}");
    }
}
