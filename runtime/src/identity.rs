//! Who is on the other end: identities, the provider trait that resolves credentials to
//! them, and the per-connection [`AuthContext`] handed to handlers.

use std::net::SocketAddr;
use std::sync::Arc;

use alknet_proto::Fingerprint;
use rustc_hash::FxHashMap;
use serde::Deserialize;

/// An authenticated peer: a stable name and the scopes it was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub scopes: Vec<String>,
}

impl Identity {
    /// Whether `scope` was granted (exact match; no wildcards, default deny).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Resolves credentials to identities. Handlers extract credentials their own way (TLS
/// client certificate, SSH key, bearer token) and resolve them all here.
pub trait IdentityProvider: Send + Sync + 'static {
    /// An identity for a SHA-256 fingerprint of a certificate or public key.
    fn resolve_from_fingerprint(&self, fingerprint: &Fingerprint) -> Option<Identity>;
    /// An identity for an opaque bearer token.
    fn resolve_from_token(&self, token: &str) -> Option<Identity>;
}

/// A provider that knows nobody: every connection is anonymous.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoIdentities;

impl IdentityProvider for NoIdentities {
    fn resolve_from_fingerprint(&self, _: &Fingerprint) -> Option<Identity> {
        None
    }
    fn resolve_from_token(&self, _: &str) -> Option<Identity> {
        None
    }
}

/// One `[[identities]]` entry of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityEntry {
    pub name: String,
    #[serde(default)]
    pub fingerprints: Vec<String>,
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Errors loading identities from configuration.
#[derive(Debug, thiserror::Error)]
pub enum IdentityConfigError {
    #[error("identity {name:?}: {source}")]
    Fingerprint {
        name: String,
        source: alknet_proto::FingerprintParseError,
    },
    #[error("fingerprint {0} is listed for two identities")]
    DuplicateFingerprint(Fingerprint),
    #[error("a token is listed for two identities ({0:?} and {1:?})")]
    DuplicateToken(String, String),
}

/// The config-file adapter: identities listed in the TOML config.
#[derive(Debug, Default, Clone)]
pub struct ConfigIdentityProvider {
    by_fingerprint: FxHashMap<Fingerprint, Identity>,
    by_token: FxHashMap<String, Identity>,
}

impl ConfigIdentityProvider {
    pub fn new(entries: &[IdentityEntry]) -> Result<Self, IdentityConfigError> {
        let mut this = Self::default();
        for e in entries {
            let identity = Identity {
                name: e.name.clone(),
                scopes: e.scopes.clone(),
            };
            for fp in &e.fingerprints {
                let fp: Fingerprint =
                    fp.parse()
                        .map_err(|source| IdentityConfigError::Fingerprint {
                            name: e.name.clone(),
                            source,
                        })?;
                if this.by_fingerprint.insert(fp, identity.clone()).is_some() {
                    return Err(IdentityConfigError::DuplicateFingerprint(fp));
                }
            }
            for token in &e.tokens {
                if let Some(prev) = this.by_token.insert(token.clone(), identity.clone()) {
                    return Err(IdentityConfigError::DuplicateToken(
                        prev.name,
                        e.name.clone(),
                    ));
                }
            }
        }
        Ok(this)
    }
}

impl IdentityProvider for ConfigIdentityProvider {
    fn resolve_from_fingerprint(&self, fingerprint: &Fingerprint) -> Option<Identity> {
        self.by_fingerprint.get(fingerprint).cloned()
    }
    fn resolve_from_token(&self, token: &str) -> Option<Identity> {
        self.by_token.get(token).cloned()
    }
}

/// What the engine knows about a connection's peer when it hands it to a handler. It may be
/// partial: handlers that authenticate inside their protocol (SSH keys, tokens) complete it
/// through [`AuthContext::provider`].
#[derive(Clone)]
pub struct AuthContext {
    /// The peer's address when the handshake completed.
    pub remote: SocketAddr,
    /// The server's address the peer reached (the destination of its packets, or the TCP
    /// connection's local end), when known.
    pub local: Option<SocketAddr>,
    /// The negotiated ALPN.
    pub alpn: Vec<u8>,
    /// SHA-256 of the client certificate, if the client presented one.
    pub peer_fingerprint: Option<Fingerprint>,
    /// The identity that fingerprint resolved to, if any.
    pub identity: Option<Identity>,
    /// The provider, for credentials carried inside the protocol.
    pub provider: Arc<dyn IdentityProvider>,
}

impl std::fmt::Debug for AuthContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthContext")
            .field("remote", &self.remote)
            .field("local", &self.local)
            .field("alpn", &String::from_utf8_lossy(&self.alpn))
            .field("peer_fingerprint", &self.peer_fingerprint)
            .field("identity", &self.identity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, fp: &str, token: &str) -> IdentityEntry {
        IdentityEntry {
            name: name.into(),
            fingerprints: vec![fp.into()],
            tokens: vec![token.into()],
            scopes: vec!["echo".into()],
        }
    }

    #[test]
    fn resolves_fingerprints_and_tokens() {
        let fp = Fingerprint([7; 32]);
        let p = ConfigIdentityProvider::new(&[entry("alice", &fp.to_string(), "t1")])
            .expect("valid entries");
        let id = p
            .resolve_from_fingerprint(&fp)
            .expect("alice by fingerprint");
        assert_eq!(id.name, "alice");
        assert!(id.has_scope("echo"));
        assert!(!id.has_scope("ech"));
        assert_eq!(
            p.resolve_from_token("t1").map(|i| i.name),
            Some("alice".into())
        );
        assert_eq!(p.resolve_from_token("t2"), None);
        assert_eq!(p.resolve_from_fingerprint(&Fingerprint([8; 32])), None);
    }

    #[test]
    fn rejects_duplicates_and_bad_fingerprints() {
        let fp = Fingerprint([7; 32]).to_string();
        assert!(matches!(
            ConfigIdentityProvider::new(&[entry("a", &fp, "t1"), entry("b", &fp, "t2")]),
            Err(IdentityConfigError::DuplicateFingerprint(_))
        ));
        assert!(matches!(
            ConfigIdentityProvider::new(&[entry("a", "zz", "t1")]),
            Err(IdentityConfigError::Fingerprint { .. })
        ));
        let fp2 = Fingerprint([9; 32]).to_string();
        assert!(matches!(
            ConfigIdentityProvider::new(&[entry("a", &fp, "t"), entry("b", &fp2, "t")]),
            Err(IdentityConfigError::DuplicateToken(..))
        ));
    }
}

/// Several providers asked in order: the first that knows a credential wins. The `alknet`
/// binary chains the config file's identities before the SQLite peer store.
#[derive(Clone, Default)]
pub struct ChainedIdentityProvider {
    providers: Vec<Arc<dyn IdentityProvider>>,
}

impl ChainedIdentityProvider {
    pub fn new(providers: Vec<Arc<dyn IdentityProvider>>) -> Self {
        Self { providers }
    }

    /// Appends a provider, asked after those already in the chain.
    pub fn push(&mut self, provider: Arc<dyn IdentityProvider>) {
        self.providers.push(provider);
    }

    pub fn len(&self) -> usize {
        self.providers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

impl std::fmt::Debug for ChainedIdentityProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainedIdentityProvider")
            .field("providers", &self.providers.len())
            .finish()
    }
}

impl IdentityProvider for ChainedIdentityProvider {
    fn resolve_from_fingerprint(&self, fingerprint: &Fingerprint) -> Option<Identity> {
        self.providers
            .iter()
            .find_map(|p| p.resolve_from_fingerprint(fingerprint))
    }
    fn resolve_from_token(&self, token: &str) -> Option<Identity> {
        self.providers
            .iter()
            .find_map(|p| p.resolve_from_token(token))
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    fn provider(name: &str, fp: Fingerprint, token: &str) -> Arc<dyn IdentityProvider> {
        Arc::new(
            ConfigIdentityProvider::new(&[IdentityEntry {
                name: name.into(),
                fingerprints: vec![fp.to_string()],
                tokens: vec![token.into()],
                scopes: vec![name.into()],
            }])
            .expect("valid entry"),
        )
    }

    #[test]
    fn chained_identity_first_match_wins() {
        let shared = Fingerprint([1; 32]);
        let chain = ChainedIdentityProvider::new(vec![
            Arc::new(NoIdentities),
            provider("first", shared, "t-first"),
            provider("second", shared, "t-second"),
        ]);
        assert_eq!(chain.len(), 3);
        let id = chain.resolve_from_fingerprint(&shared).expect("known");
        assert_eq!(id.name, "first");
        assert_eq!(id.scopes, ["first"]);
        assert_eq!(
            chain.resolve_from_token("t-second").map(|i| i.name),
            Some("second".into())
        );
        assert_eq!(chain.resolve_from_token("t-none"), None);
        assert_eq!(chain.resolve_from_fingerprint(&Fingerprint([2; 32])), None);
        let empty = ChainedIdentityProvider::default();
        assert!(empty.is_empty());
        assert_eq!(empty.resolve_from_fingerprint(&shared), None);
    }
}
