//! The certificate a browser accepts for WebTransport without a CA: Chromium takes a
//! self-signed one through `serverCertificateHashes` if it is ECDSA P-256 (or P-384,
//! Ed25519; never RSA) and valid for at most 14 days. The node keeps one beside its main
//! certificate, presents it to `h3` connections (the resolver sees the ALPN in the
//! ClientHello) and replaces it before it expires, without a restart.
//!
//! Rotation is announced ahead: from [`WEBTRANSPORT_CERT_ANNOUNCE_BEFORE`] before the
//! switch the next certificate exists and its hash is published beside the current one,
//! so a page that fetched the hashes shortly before the switch still connects after it.
//! Everything is decided from a `now` the caller passes, so it is tested without clocks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;

use crate::tls::TlsError;

/// Validity of each certificate (`notAfter - notBefore`); Chromium's limit is 14 days.
pub const WEBTRANSPORT_CERT_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// How far `notBefore` lies in the past, for clients whose clock is behind.
pub const WEBTRANSPORT_CERT_BACKDATE: Duration = Duration::from_secs(3600);
/// The current certificate is replaced when this little validity is left.
pub const WEBTRANSPORT_CERT_ROTATE_BEFORE: Duration = Duration::from_secs(2 * 24 * 3600);
/// The next certificate is made, and its hash published, this long before the switch
/// (counted from the current one's `notAfter`).
pub const WEBTRANSPORT_CERT_ANNOUNCE_BEFORE: Duration = Duration::from_secs(5 * 24 * 3600);

/// The ALPN whose connections get the WebTransport certificate.
const H3_ALPN: &[u8] = b"h3";

/// One certificate and what a page needs to know of it.
#[derive(Debug)]
pub struct WebTransportCertEntry {
    pub certified: Arc<CertifiedKey>,
    /// SHA-256 of the DER certificate: the value of `serverCertificateHashes`.
    pub sha256: [u8; 32],
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl WebTransportCertEntry {
    fn generate(names: &[String], now: SystemTime) -> Result<Self, TlsError> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(crate::tls::default_names(names))?;
        let not_before = now
            .checked_sub(WEBTRANSPORT_CERT_BACKDATE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let not_after = not_before + WEBTRANSPORT_CERT_VALIDITY;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.self_signed(&key_pair)?;
        let der = cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
        let signer = crate::tls::crypto_provider()
            .key_provider
            .load_private_key(key)?;
        let sha256 = crate::tls::fingerprint_of(&der).0;
        Ok(Self {
            certified: Arc::new(CertifiedKey::new(vec![der], signer)),
            sha256,
            not_before,
            not_after,
        })
    }

    fn rotate_at(&self) -> SystemTime {
        self.not_after
            .checked_sub(WEBTRANSPORT_CERT_ROTATE_BEFORE)
            .unwrap_or(self.not_before)
    }

    fn announce_at(&self) -> SystemTime {
        self.not_after
            .checked_sub(WEBTRANSPORT_CERT_ANNOUNCE_BEFORE)
            .unwrap_or(self.not_before)
    }
}

/// The current certificate and, near a rotation, the next.
#[derive(Debug, Clone)]
pub struct WebTransportCerts {
    pub current: Arc<WebTransportCertEntry>,
    pub next: Option<Arc<WebTransportCertEntry>>,
}

/// The node's WebTransport certificates, shared by the TLS resolver of every worker and
/// the HTTP route that publishes the hashes.
#[derive(Debug)]
pub struct WebTransportCert {
    names: Vec<String>,
    state: Mutex<WebTransportCerts>,
}

impl WebTransportCert {
    /// A new P-256 certificate for `localhost`, 127.0.0.1, ::1 and `names`.
    pub fn generate(names: &[String]) -> Result<Arc<Self>, TlsError> {
        Self::generate_at(names, SystemTime::now())
    }

    pub fn generate_at(names: &[String], now: SystemTime) -> Result<Arc<Self>, TlsError> {
        let current = Arc::new(WebTransportCertEntry::generate(names, now)?);
        Ok(Arc::new(Self {
            names: names.to_vec(),
            state: Mutex::new(WebTransportCerts {
                current,
                next: None,
            }),
        }))
    }

    /// The certificates as of `now`, rotating first if it is time. A failure to make a
    /// new certificate (the system random source) keeps the old one and is logged; it
    /// is tried again at the next call.
    pub fn at(&self, now: SystemTime) -> WebTransportCerts {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.next.is_none() && now >= st.current.announce_at() {
            match WebTransportCertEntry::generate(&self.names, now) {
                Ok(next) => st.next = Some(Arc::new(next)),
                Err(e) => tracing::error!("next WebTransport certificate not made: {e}"),
            }
        }
        if now >= st.current.rotate_at() {
            let next = match st.next.take() {
                Some(next) => Ok(next),
                None => WebTransportCertEntry::generate(&self.names, now).map(Arc::new),
            };
            match next {
                Ok(next) => {
                    tracing::info!("WebTransport certificate rotated");
                    st.current = next;
                }
                Err(e) => tracing::error!("WebTransport certificate not rotated: {e}"),
            }
        }
        st.clone()
    }

    /// The certificates now.
    pub fn current(&self) -> WebTransportCerts {
        self.at(SystemTime::now())
    }
}

/// Presents the WebTransport certificate to clients offering `h3`, the main one to others.
#[derive(Debug)]
pub(crate) struct AlpnCertResolver {
    pub main: Arc<CertifiedKey>,
    pub webtransport: Arc<WebTransportCert>,
}

impl ResolvesServerCert for AlpnCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let wants_h3 = hello.alpn().is_some_and(|mut a| a.any(|p| p == H3_ALPN));
        Some(if wants_h3 {
            self.webtransport.current().current.certified.clone()
        } else {
            self.main.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn browser_valid_and_rotated_before_expiry_with_the_next_announced() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let certs = WebTransportCert::generate_at(&[], t0).expect("generated");
        let first = certs.at(t0);
        let c = &first.current;
        // Chromium: at most 14 days, and now inside the window
        let span = c.not_after.duration_since(c.not_before).expect("ordered");
        assert!(span <= 14 * DAY, "{span:?}");
        assert!(c.not_before <= t0 && t0 < c.not_after);
        assert!(first.next.is_none());
        // P-256: the DER names the prime256v1 curve OID (1.2.840.10045.3.1.7)
        let der = c.certified.cert[0].as_ref();
        let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(der.windows(p256.len()).any(|w| w == p256));
        assert_eq!(c.sha256, crate::tls::fingerprint_of(&c.certified.cert[0]).0);

        // announced ahead of the switch, still serving the first
        let announce = c.not_after - WEBTRANSPORT_CERT_ANNOUNCE_BEFORE;
        let near = certs.at(announce);
        assert_eq!(near.current.sha256, c.sha256);
        let next = near.next.clone().expect("next announced");
        assert_ne!(next.sha256, c.sha256);
        // the switch: the announced one becomes current, still valid for days
        let switch = c.not_after - WEBTRANSPORT_CERT_ROTATE_BEFORE;
        let after = certs.at(switch);
        assert_eq!(after.current.sha256, next.sha256);
        assert!(after.next.is_none());
        assert!(after.current.not_after > switch + 7 * DAY);
        // a node asleep past the whole window makes a fresh one at once
        let late = switch + 30 * DAY;
        let woke = certs.at(late);
        assert!(woke.current.not_before <= late && late < woke.current.not_after);
    }
}
