//! TLS for QUIC with rustls: the server's certificate (from PEM files, or self-signed and
//! kept in the data directory), optional client certificates, and how clients decide to
//! trust a server (CA roots, a pinned fingerprint, or `--insecure`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use alknet_proto::Fingerprint;
pub use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::secret_files;

pub use crate::wtcert::{
    WebTransportCert, WebTransportCertEntry, WebTransportCerts, WEBTRANSPORT_CERT_ANNOUNCE_BEFORE,
    WEBTRANSPORT_CERT_BACKDATE, WEBTRANSPORT_CERT_ROTATE_BEFORE, WEBTRANSPORT_CERT_VALIDITY,
};

/// Errors building TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS configuration is not usable for QUIC: {0}")]
    Quic(String),
}

/// SHA-256 of a DER certificate.
pub fn fingerprint_of(cert: &CertificateDer<'_>) -> Fingerprint {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Fingerprint(out)
}

/// The crypto provider used everywhere (ring: fast AES-GCM, builds with a C compiler only),
/// preferring AES-128-GCM: every QUIC packet is sealed with the negotiated suite, and
/// AES-128 runs 10 rounds to AES-256's 14 (rustls lists AES-256 first; quinn's perf tool
/// reorders the same way).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// The environment variable naming the key log file ([`key_log`]), as curl, browsers,
/// quinn's examples and the QUIC interop runner use it.
pub const KEY_LOG_ENV: &str = "SSLKEYLOGFILE";

/// Where every TLS configuration built here (server and client, QUIC and TLS over TCP)
/// writes its connections' secrets: the file named by [`KEY_LOG_ENV`], in the NSS key log
/// format that Wireshark and tshark read to decrypt a capture, or nowhere when it is unset.
/// One file per process, opened (append, mode 0600) once at the first configuration and
/// shared by all later ones, so lines of concurrent handshakes never interleave. Only
/// handshakes write to it: the packet path never reaches it.
pub fn key_log() -> Arc<dyn rustls::KeyLog> {
    static KEY_LOG: OnceLock<Arc<dyn rustls::KeyLog>> = OnceLock::new();
    KEY_LOG
        .get_or_init(|| match key_log_path() {
            Some(_) => Arc::new(rustls::KeyLogFile::new()),
            None => Arc::new(rustls::NoKeyLog),
        })
        .clone()
}

/// The key log file [`key_log`] writes to, if [`KEY_LOG_ENV`] names one.
pub fn key_log_path() -> Option<PathBuf> {
    std::env::var_os(KEY_LOG_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Where a server's rustls takes the random bytes it asks for itself.
///
/// A TLS 1.3 server handshake asks rustls' provider for seven such pieces: the ServerHello
/// random, and for each of its two session tickets a nonce, an age offset and a cache id.
/// None of them is key material: the ServerHello random and the ticket nonce go to the
/// peer, the age offset only obscures the ticket's age, and the id names a cache entry
/// whose use still needs the resumption secret (the PSK binder). The key share and the
/// signature nonce are drawn by *ring* itself, from the kernel, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRandom {
    /// The calling thread's CSPRNG ([`rand::thread_rng`]: ChaCha12, seeded from the kernel
    /// and reseeded every 64 KiB it gives and in a forked child), the one that already
    /// draws the engine's connection IDs. The engine's choice: seven `getrandom(2)` calls
    /// per handshake are seven system calls on the worker's thread, and on a VM a system
    /// call is dear.
    Thread,
    /// One `getrandom(2)` per piece: rustls' default with *ring*, what `quinn-perf server`
    /// runs (the loadtest's quinn baseline keeps it).
    Kernel,
}

/// rustls' [`SecureRandom`](rustls::crypto::SecureRandom) over [`rand::thread_rng`] (see
/// [`ServerRandom::Thread`]).
#[derive(Debug)]
struct ThreadRandom;

impl rustls::crypto::SecureRandom for ThreadRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        rand::RngCore::try_fill_bytes(&mut rand::thread_rng(), buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

static THREAD_RANDOM: ThreadRandom = ThreadRandom;

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The browser-valid certificate `h3` connections get instead (`tls.webtransport_cert`).
    pub webtransport: Option<Arc<WebTransportCert>>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            webtransport: self.webtransport.clone(),
        }
    }
}

/// File names of the generated identity inside the data directory.
pub const GENERATED_CERT_FILE: &str = "cert.pem";
pub const GENERATED_KEY_FILE: &str = "key.pem";

impl TlsIdentity {
    /// Loads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_certs(cert)?;
        secret_files::warn_if_open_to_others(key, "TLS private key");
        let key_pem = fs::read(key).map_err(|source| TlsError::Read {
            path: key.into(),
            source,
        })?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            path: key.into(),
            message: format!("no usable private key: {e}"),
        })?;
        Ok(Self {
            chain,
            key,
            webtransport: None,
        })
    }

    /// A new self-signed certificate for `localhost`, 127.0.0.1 and ::1 (and `names`).
    pub fn generate_self_signed(names: &[String]) -> Result<Self, TlsError> {
        let ck = rcgen::generate_simple_self_signed(default_names(names))?;
        Ok(Self {
            chain: vec![ck.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into()),
            webtransport: None,
        })
    }

    /// A self-signed certificate (for `localhost`, 127.0.0.1, ::1 and `names`) for the
    /// Ed25519 key whose 32-byte private key (RFC 8032 secret) is `private_key`.
    ///
    /// Deterministic: the validity period and serial number are fixed (the serial is
    /// derived from the public key) and Ed25519 signatures are, so the same key and names
    /// give the same certificate, hence the same fingerprint, on any machine. That is
    /// what lets a node restored from its vault keep its pinned fingerprint. Browsers
    /// (WebTransport) need P-256 instead; rustls and alknet's clients accept Ed25519.
    pub fn from_ed25519_private_key(
        private_key: &[u8; 32],
        names: &[String],
    ) -> Result<Self, TlsError> {
        let mut pkcs8 = Vec::with_capacity(ED25519_PKCS8_PREFIX.len() + 32);
        pkcs8.extend_from_slice(&ED25519_PKCS8_PREFIX);
        pkcs8.extend_from_slice(private_key);
        let key_der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8);
        let key_pair =
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519)?;
        let mut params = rcgen::CertificateParams::new(default_names(names))?;
        params.not_before = rcgen::date_time_ymd(
            ED25519_CERT_NOT_BEFORE.0,
            ED25519_CERT_NOT_BEFORE.1,
            ED25519_CERT_NOT_BEFORE.2,
        );
        params.not_after = rcgen::date_time_ymd(
            ED25519_CERT_NOT_AFTER.0,
            ED25519_CERT_NOT_AFTER.1,
            ED25519_CERT_NOT_AFTER.2,
        );
        let public = key_pair.public_key_raw();
        let digest = ring::digest::digest(&ring::digest::SHA256, public);
        let mut serial = [0u8; 16];
        serial.copy_from_slice(&digest.as_ref()[..16]);
        serial[0] &= 0x7f; // a positive INTEGER
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.self_signed(&key_pair)?;
        Ok(Self {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key_der),
            webtransport: None,
        })
    }

    /// A new random Ed25519 key with a self-signed certificate for `localhost`,
    /// 127.0.0.1, ::1 and `names`: the Ed25519 counterpart of
    /// [`Self::generate_self_signed`] (ECDSA P-256), e.g. to compare handshake cost.
    pub fn generate_ed25519(names: &[String]) -> Result<Self, TlsError> {
        use ring::rand::SecureRandom;
        let mut private_key = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut private_key)
            .map_err(|_| TlsError::Quic("the system random source failed".into()))?;
        let identity = Self::from_ed25519_private_key(&private_key, names);
        private_key.fill(0);
        identity
    }

    /// The identity kept in `dir`, generated and written there (key mode 0600) on first use.
    /// Returns whether it was generated now, so the caller can tell the user.
    ///
    /// Safe against another process doing the same at once ([`crate::secret_files`]): both
    /// end with the one identity on disk. The key is written before the certificate, each
    /// by rename, so a certificate file present means its key is complete.
    pub fn load_or_generate(dir: &Path) -> Result<(Self, bool), TlsError> {
        let cert = dir.join(GENERATED_CERT_FILE);
        let key = dir.join(GENERATED_KEY_FILE);
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Write { path, source }
        };
        secret_files::load_or_generate(
            dir,
            &[&cert, &key],
            || Self::from_pem_files(&cert, &key),
            || {
                let generated = Self::generate_self_signed(&[])?;
                secret_files::write_atomically(&key, generated.key_pem().as_bytes(), 0o600)
                    .map_err(write_err(&key))?;
                secret_files::write_atomically(&cert, generated.chain_pem().as_bytes(), 0o644)
                    .map_err(write_err(&cert))?;
                Ok(generated)
            },
            write_err(dir),
        )
    }

    /// The certificate chain as PEM.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|c| pem_encode("CERTIFICATE", c.as_ref()))
            .collect()
    }

    /// The private key as PEM (PKCS#8 "PRIVATE KEY" for generated keys). A secret: write
    /// it only to a file of mode 0600.
    pub fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem_encode(label, self.key.secret_der())
    }

    /// Presents `cert` to `h3` connections (WebTransport from browsers) instead of this
    /// identity's certificate.
    pub fn with_webtransport_cert(mut self, cert: Arc<WebTransportCert>) -> Self {
        self.webtransport = Some(cert);
        self
    }

    /// SHA-256 of the leaf certificate: what clients pin with `--fingerprint`.
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint_of(&self.chain[0])
    }
}

/// The DER prefix of an Ed25519 private key in PKCS#8 v1 (RFC 8410, section 7): the
/// 32-byte private key follows it.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Validity of certificates made from an Ed25519 key (year, month, day): fixed, so the
/// certificate, and its fingerprint, depend on the key alone. The span is rcgen's default.
pub const ED25519_CERT_NOT_BEFORE: (i32, u8, u8) = (1975, 1, 1);
pub const ED25519_CERT_NOT_AFTER: (i32, u8, u8) = (4096, 1, 1);

/// The names of a generated certificate: loopback, then `extra`.
pub(crate) fn default_names(extra: &[String]) -> Vec<String> {
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    sans.extend(extra.iter().cloned());
    sans
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.into(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(chain)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Whether the server asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Never ask.
    None,
    /// Ask; connections without one are anonymous (the default).
    #[default]
    Optional,
    /// Refuse the handshake without a client certificate.
    Required,
}

impl ClientAuth {
    /// Names this policy in the derivation of session-ticket keys (`tickets.rs`): a
    /// resumed handshake is not asked for a certificate again, so a ticket issued under
    /// one policy must not resume under another (a node restarted with `required` would
    /// otherwise resume sessions that never showed a certificate).
    pub(crate) fn ticket_scope(self) -> &'static [u8] {
        match self {
            Self::None => b"client auth none",
            Self::Optional => b"client auth optional",
            Self::Required => b"client auth required",
        }
    }

    /// [`Self::ticket_scope`] for sessions in QUIC v2: a session ticket belongs to the
    /// QUIC version of the connection that issued it, and a server must not accept it in
    /// another (RFC 9369, "TLS Resumption and NEW_TOKEN Tokens"). v1's scope (and TLS over
    /// TCP's) stays what it was, so tickets issued before v2 existed still resume.
    pub(crate) fn ticket_scope_quic_v2(self) -> &'static [u8] {
        match self {
            Self::None => b"client auth none; quic v2",
            Self::Optional => b"client auth optional; quic v2",
            Self::Required => b"client auth required; quic v2",
        }
    }
}

/// Server TLS configuration advertising exactly `alpns`. A client offering none of them
/// fails the handshake with `no_application_protocol`.
pub fn server_crypto(
    identity: &TlsIdentity,
    alpns: Vec<Vec<u8>>,
    client_auth: ClientAuth,
) -> Result<Arc<QuicServerConfig>, TlsError> {
    server_crypto_with_policy(
        identity,
        alpns,
        client_auth,
        &crate::handshake::HandshakePolicy::default(),
        None,
    )
}

/// [`server_crypto`] with the cipher suites, session resumption and 0-RTT of `policy`;
/// `ticket_key` seals host-key session tickets (see [`server_rustls_config`]).
pub fn server_crypto_with_policy(
    identity: &TlsIdentity,
    alpns: Vec<Vec<u8>>,
    client_auth: ClientAuth,
    policy: &crate::handshake::HandshakePolicy,
    ticket_key: Option<&ring::hkdf::Prk>,
) -> Result<Arc<QuicServerConfig>, TlsError> {
    let cfg = server_rustls_config(
        identity,
        alpns,
        client_auth,
        policy,
        ServerRandom::Thread,
        ticket_key,
    )?;
    // QUIC v2 sessions: the same config but for their tickets, which only v2 takes back
    // (host-key tickets under a v2 scope; single-use ones in a cache of their own)
    let v2 = policy
        .versions
        .contains(&crate::handshake::QuicVersion::V2)
        .then(|| {
            let mut v2 = cfg.clone();
            policy.apply(&mut v2, ticket_key, client_auth.ticket_scope_quic_v2());
            Arc::new(v2)
        });
    let mut quic = QuicServerConfig::with_initial(Arc::new(cfg), initial_suite()?)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    if let Some(v2) = v2 {
        quic = quic.with_v2_config(v2);
    }
    Ok(Arc::new(quic))
}

/// The TLS-over-TCP server config: the same certificate, client-certificate policy and
/// cipher suites as QUIC ([`server_crypto_with_policy`]), advertising `alpns`. A client
/// offering ALPNs of which none is served gets the `no_application_protocol` alert; one
/// offering none is accepted (HTTP/1.1). No early data over TCP.
pub fn tcp_server_config(
    identity: &TlsIdentity,
    alpns: Vec<Vec<u8>>,
    client_auth: ClientAuth,
    policy: &crate::handshake::HandshakePolicy,
    ticket_key: Option<&ring::hkdf::Prk>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = server_rustls_config(
        identity,
        alpns,
        client_auth,
        policy,
        ServerRandom::Thread,
        ticket_key,
    )?;
    cfg.max_early_data_size = 0;
    Ok(Arc::new(cfg))
}

/// The suite of QUIC Initial packets (AES-128-GCM, from ring), whatever the negotiated
/// suites are: a chacha20-only policy still protects its Initials with it.
pub fn initial_suite() -> Result<rustls::quic::Suite, TlsError> {
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .and_then(|s| s.quic_suite())
        .ok_or_else(|| TlsError::Quic("no AES-128-GCM suite for QUIC Initial packets".into()))
}

/// The rustls configuration under [`server_crypto_with_policy`], for a QUIC stack other
/// than the engine's: `alknet-loadtest`'s baseline runs stock quinn, whose `quinn-proto`
/// is a different crate from the engine's vendored copy (so it cannot take
/// [`QuicServerConfig`]), and wraps this in its own, with `random` =
/// [`ServerRandom::Kernel`] as quinn-perf runs. With `ticket_key` (the QUIC host key's
/// ticket derivation), sessions resume by host-key tickets as `policy` allows; without
/// one, by rustls' single-use cache.
pub fn server_rustls_config(
    identity: &TlsIdentity,
    alpns: Vec<Vec<u8>>,
    client_auth: ClientAuth,
    policy: &crate::handshake::HandshakePolicy,
    random: ServerRandom,
    ticket_key: Option<&ring::hkdf::Prk>,
) -> Result<rustls::ServerConfig, TlsError> {
    let base = match random {
        ServerRandom::Kernel => crypto_provider(),
        ServerRandom::Thread => {
            let mut p = (*crypto_provider()).clone();
            p.secure_random = &THREAD_RANDOM;
            Arc::new(p)
        }
    };
    let provider = policy.provider(base);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            builder.with_client_cert_verifier(Arc::new(AnyClientCert {
                provider: provider.clone(),
                mandatory: client_auth == ClientAuth::Required,
            }))
        }
    };
    let mut cfg = match &identity.webtransport {
        None => builder.with_single_cert(identity.chain.clone(), identity.key.clone_key())?,
        Some(webtransport) => {
            let signer = provider
                .key_provider
                .load_private_key(identity.key.clone_key())?;
            let main = rustls::sign::CertifiedKey::new(identity.chain.clone(), signer);
            main.keys_match()?;
            builder.with_cert_resolver(Arc::new(crate::wtcert::AlpnCertResolver {
                main: Arc::new(main),
                webtransport: webtransport.clone(),
            }))
        }
    };
    cfg.alpn_protocols = alpns;
    cfg.key_log = key_log();
    policy.apply(&mut cfg, ticket_key, client_auth.ticket_scope());
    Ok(cfg)
}

/// How a client decides to trust the server it dials.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// The public web PKI (Mozilla's roots).
    WebPki,
    /// These CA certificates.
    Roots(Vec<CertificateDer<'static>>),
    /// Exactly the certificate with this SHA-256 fingerprint (self-hosted, self-signed).
    Fingerprint(Fingerprint),
    /// Any certificate. The handshake signature is still checked; only the certificate's
    /// authenticity is not. For tests and first contact.
    Insecure,
}

impl ServerTrust {
    /// Reads CA certificates from a PEM file.
    pub fn roots_from_pem(path: &Path) -> Result<Self, TlsError> {
        Ok(Self::Roots(read_certs(path)?))
    }
}

/// Client TLS configuration offering `alpns`, optionally presenting `identity`.
pub fn client_crypto(
    trust: &ServerTrust,
    alpns: Vec<Vec<u8>>,
    identity: Option<&TlsIdentity>,
) -> Result<Arc<QuicClientConfig>, TlsError> {
    client_crypto_with_resumption(trust, alpns, identity, true)
}

/// [`client_crypto`], choosing whether sessions are resumed. Connections made with one
/// returned config share its session cache, so with `resumption` the second handshake to a
/// server is an abbreviated one.
pub fn client_crypto_with_resumption(
    trust: &ServerTrust,
    alpns: Vec<Vec<u8>>,
    identity: Option<&TlsIdentity>,
    resumption: bool,
) -> Result<Arc<QuicClientConfig>, TlsError> {
    let cfg = client_rustls_config(trust, alpns, identity, resumption)?;
    let quic = QuicClientConfig::try_from(cfg).map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(Arc::new(quic))
}

/// The client TLS configuration for TLS over TCP (`alknet connect --transport tcp`): the
/// same trust, identity and TLS 1.3-only suites as [`client_crypto`], offering `alpns`.
pub fn tcp_client_config(
    trust: &ServerTrust,
    alpns: Vec<Vec<u8>>,
    identity: Option<&TlsIdentity>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    Ok(Arc::new(client_rustls_config(
        trust, alpns, identity, true,
    )?))
}

/// The rustls configuration under [`client_crypto_with_resumption`], for a QUIC stack
/// other than the engine's (see [`server_rustls_config`]).
pub fn client_rustls_config(
    trust: &ServerTrust,
    alpns: Vec<Vec<u8>>,
    identity: Option<&TlsIdentity>,
    resumption: bool,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = crypto_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        ServerTrust::WebPki | ServerTrust::Roots(_) => {
            let mut roots = rustls::RootCertStore::empty();
            if let ServerTrust::Roots(certs) = trust {
                for c in certs {
                    roots.add(c.clone())?;
                }
            } else {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?
        }
        ServerTrust::Fingerprint(fp) => Arc::new(PinnedServerCert {
            provider,
            pinned: Some(*fp),
        }),
        ServerTrust::Insecure => Arc::new(PinnedServerCert {
            provider,
            pinned: None,
        }),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpns;
    cfg.key_log = key_log();
    if !resumption {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Ok(cfg)
}

/// The handshake-signature methods both verifiers share: whatever we conclude about the
/// certificate, the peer must prove it holds the certificate's key.
macro_rules! handshake_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Accepts any client certificate as proof of a key (its fingerprint becomes the peer's
/// identity claim); authorization is the `IdentityProvider`'s job, not the CA's.
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<CryptoProvider>,
    mandatory: bool,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    handshake_signature_checks!();
}

/// Trusts one pinned certificate (or, with `pinned: None`, any), still checking that the
/// server holds the certificate's key.
#[derive(Debug)]
struct PinnedServerCert {
    provider: Arc<CryptoProvider>,
    pinned: Option<Fingerprint>,
}

impl ServerCertVerifier for PinnedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pinned {
            None => Ok(ServerCertVerified::assertion()),
            Some(fp) if fingerprint_of(end_entity) == fp => Ok(ServerCertVerified::assertion()),
            Some(fp) => Err(rustls::Error::General(format!(
                "server certificate fingerprint {} does not match the pinned {fp}",
                fingerprint_of(end_entity)
            ))),
        }
    }
    handshake_signature_checks!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_starting_at_once_end_with_one_identity() {
        // threads open the lock file each for themselves, as processes would
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("data");
        let starts = std::sync::Barrier::new(8);
        let results: Vec<(Fingerprint, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        starts.wait();
                        let (id, generated) =
                            TlsIdentity::load_or_generate(&sub).expect("load or generate");
                        (id.fingerprint(), generated)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let (on_disk, _) = TlsIdentity::load_or_generate(&sub).expect("reload");
        assert_eq!(
            results.iter().filter(|(_, generated)| *generated).count(),
            1
        );
        assert!(results.iter().all(|(fp, _)| *fp == on_disk.fingerprint()));
    }

    #[test]
    fn generated_identity_is_kept_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("data");
        let (first, generated) = TlsIdentity::load_or_generate(&sub).expect("generate");
        assert!(generated);
        let (second, generated) = TlsIdentity::load_or_generate(&sub).expect("reload");
        assert!(!generated);
        assert_eq!(first.fingerprint(), second.fingerprint());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(sub.join(GENERATED_KEY_FILE))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn pem_files_errors_are_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("c.pem");
        fs::write(&cert, "not pem").expect("write");
        let err = TlsIdentity::from_pem_files(&cert, &cert).expect_err("must fail");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let err =
            TlsIdentity::from_pem_files(&dir.path().join("missing"), &cert).expect_err("must fail");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn server_random_is_the_one_asked_for() {
        let id = TlsIdentity::generate_self_signed(&[]).expect("generate");
        let policy = crate::handshake::HandshakePolicy::default();
        // by type name: both sources are zero-sized, so their addresses tell nothing apart
        let source = |random| {
            let cfg = server_rustls_config(&id, vec![], ClientAuth::None, &policy, random, None)
                .expect("config");
            format!("{:?}", cfg.crypto_provider().secure_random)
        };
        let ring = format!(
            "{:?}",
            rustls::crypto::ring::default_provider().secure_random
        );
        assert_eq!(source(ServerRandom::Kernel), ring);
        assert_eq!(source(ServerRandom::Thread), "ThreadRandom");
        assert_ne!(ring, "ThreadRandom");
        // two fills of 32 bytes: equal (or all zero) only if the source is broken
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        rustls::crypto::SecureRandom::fill(&THREAD_RANDOM, &mut a).expect("fill");
        rustls::crypto::SecureRandom::fill(&THREAD_RANDOM, &mut b).expect("fill");
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn configs_build_for_quic() {
        let id = TlsIdentity::generate_self_signed(&[]).expect("generate");
        server_crypto(&id, vec![b"alknet/echo".to_vec()], ClientAuth::Optional).expect("server");
        client_crypto(
            &ServerTrust::Fingerprint(id.fingerprint()),
            vec![],
            Some(&id),
        )
        .expect("client");
        client_crypto(&ServerTrust::WebPki, vec![], None).expect("webpki client");
    }

    #[test]
    fn ed25519_identities_are_deterministic_and_usable() {
        let key = [7u8; 32];
        let a = TlsIdentity::from_ed25519_private_key(&key, &[]).expect("ed25519");
        let b = TlsIdentity::from_ed25519_private_key(&key, &[]).expect("again");
        assert_eq!(a.chain, b.chain, "same key, same certificate");
        assert_eq!(a.fingerprint(), b.fingerprint());
        let other = TlsIdentity::from_ed25519_private_key(&[8u8; 32], &[]).expect("other");
        assert_ne!(a.fingerprint(), other.fingerprint());
        let random = TlsIdentity::generate_ed25519(&["node.example".into()]).expect("random");
        assert_ne!(random.fingerprint(), a.fingerprint());
        for id in [&a, &random] {
            server_crypto(id, vec![b"alknet/echo".to_vec()], ClientAuth::Optional).expect("server");
            client_crypto(&ServerTrust::Fingerprint(a.fingerprint()), vec![], Some(id))
                .expect("client");
        }
    }
}
