//! Live reconfiguration of a running server: what it can take without a restart.
//!
//! The packet path never locks for this: each worker reads one atomic generation counter
//! per poll and installs a new QUIC server config into its own endpoint when the counter
//! moved. New handshakes use the new certificate; open connections keep the keys they
//! negotiated. The identity provider is read once per handshake through an `ArcSwap`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use alknet_proto::Fingerprint;
use arc_swap::ArcSwap;

use crate::identity::{Identity, IdentityProvider};
use crate::server::build_server_config;
use crate::tls::{ClientAuth, TlsError, TlsIdentity};
use crate::worker::{ServerShared, ServerTls};

/// Publishes new configuration to every worker of one server. Cheap to clone, `Send`.
#[derive(Clone)]
pub struct ConfigReloadHandle(Arc<ServerShared>);

impl ConfigReloadHandle {
    pub(crate) fn new(shared: Arc<ServerShared>) -> Self {
        Self(shared)
    }

    /// Serves `tls` (with `client_auth`) to new handshakes from now on. The config is
    /// built completely before anything changes: on an error (a key that does not match,
    /// a certificate rustls refuses) the old certificate stays.
    pub fn reload_tls(
        &self,
        tls: &TlsIdentity,
        client_auth: ClientAuth,
    ) -> Result<Fingerprint, TlsError> {
        let s = &self.0;
        // the same [quic] policy: a reload changes the certificate, not Retry, 0-RTT or suites
        let config = build_server_config(
            tls,
            s.registry.alpns(),
            client_auth,
            &s.limits,
            &s.handshake,
        )?;
        let tcp = crate::server::build_tcp_config(s, tls, client_auth)?;
        let fingerprint = tls.fingerprint();
        s.tls.store(Arc::new(ServerTls {
            config,
            tcp,
            fingerprint,
        }));
        s.tls_generation.fetch_add(1, Ordering::AcqRel);
        // idle workers install it now rather than on their next datagram
        for inbox in s.inboxes.iter() {
            inbox.wake();
        }
        tracing::info!(%fingerprint, "TLS certificate reloaded; new handshakes use it");
        Ok(fingerprint)
    }

    /// Resolves identities through `provider` from the next handshake and request on.
    pub fn set_identity_provider(&self, provider: Arc<dyn IdentityProvider>) {
        self.0.provider.replace(provider);
        tracing::info!("identities reloaded");
    }

    /// The provider handlers are given: it always asks the provider published last.
    pub fn identity_provider(&self) -> Arc<dyn IdentityProvider> {
        self.0.provider.clone()
    }

    /// Fingerprint of the certificate new handshakes get.
    pub fn fingerprint(&self) -> Fingerprint {
        self.0.tls.load().fingerprint
    }
}

/// The provider handlers hold: it asks whichever provider was published last, so identity
/// and scope changes reach open connections at their next token lookup.
pub(crate) struct LiveIdentityProvider {
    current: ArcSwap<ProviderSlot>,
}

/// `ArcSwap` holds sized values: the trait object goes in a box of its own.
struct ProviderSlot(Arc<dyn IdentityProvider>);

impl LiveIdentityProvider {
    pub fn new(provider: Arc<dyn IdentityProvider>) -> Self {
        Self {
            current: ArcSwap::from_pointee(ProviderSlot(provider)),
        }
    }

    fn replace(&self, provider: Arc<dyn IdentityProvider>) {
        self.current.store(Arc::new(ProviderSlot(provider)));
    }
}

impl IdentityProvider for LiveIdentityProvider {
    fn resolve_from_fingerprint(&self, fingerprint: &Fingerprint) -> Option<Identity> {
        self.current.load().0.resolve_from_fingerprint(fingerprint)
    }

    fn resolve_from_token(&self, token: &str) -> Option<Identity> {
        self.current.load().0.resolve_from_token(token)
    }
}
