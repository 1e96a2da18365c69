//! Stateless TLS session tickets under keys derived from the QUIC host key, so a client's
//! ticket resumes its session on every worker, after a TLS reload and after a restart (and
//! on every node that shares the host key), with no cache and no lock.
//!
//! rustls' own choices each lose something here: its single-use session cache (our
//! `quic.session_tickets = "single-use"`) is memory in one process behind a mutex, emptied
//! by every restart and every rebuilt server config; its `Ticketer` rotates random keys
//! that die with the process. nginx keeps tickets across restarts and nodes the same way
//! as this (`ssl_session_ticket_key` files shared by the fleet).
//!
//! Keys: time is cut into periods of the ticket lifetime; period `n`'s key is HKDF-SHA256
//! of the host key with the lifetime and `n` in its info, an AES-256-GCM key. A ticket made
//! in period `n` is accepted in periods `n` and `n + 1` (so for at least one lifetime and at
//! most two), then its key is no longer derivable by this code: a ticket's lifetime is
//! enforced by the key schedule, as rustls' `ProducesTickets` asks, not by a field in the
//! ticket. Periods count from the Unix epoch by the wall clock, which nodes sharing a
//! key agree on; a clock step only moves which of two periods is current.
//!
//! Wire form: `period (4 bytes, big endian) ‖ nonce (12 random bytes) ‖ AES-256-GCM
//! ciphertext and tag`, the period bytes authenticated as associated data. Random nonces
//! under one key are safe far past what a period sees: at 10 000 handshakes a second and
//! two tickets each, a six-hour period seals 2^28.7 tickets, where a nonce collision has a
//! chance of about 2^-40.
//!
//! What it costs in security, as with any stateless ticket key: whoever learns the host
//! key can open the tickets of the periods they can derive, and so answer a resuming
//! client as the server would (a resumed handshake shows no certificate). Recorded traffic
//! stays sealed: rustls resumes only with a fresh ECDHE exchange (`psk_dhe_ke`), and it
//! refuses 0-RTT from a stateless ticket (it cannot take one only once), so `quic.zero_rtt`
//! needs the single-use cache; `HandshakePolicy` chooses that by itself.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;

const PERIOD_LEN: usize = 4;
const TAG_LEN: usize = 16;
/// HKDF info prefix of a period's ticket key (the lifetime, the scope and the period
/// follow).
const TICKET_INFO: &[u8] = b"session ticket key";

/// The longest ticket lifetime TLS 1.3 allows (RFC 8446, section 4.6.1): seven days.
pub const MAX_TICKET_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Seals and opens session tickets under keys derived from a host key (see the module
/// documentation). One per server config (the QUIC one and the TLS/TCP one, rebuilt at a
/// reload), shared by every worker that serves it; all of them derive the same keys.
pub struct HostKeyTicketer {
    prk: hkdf::Prk,
    lifetime_secs: u32,
    scope: &'static [u8],
    /// The keys of the current period and the one before, derived when the period turns.
    keys: ArcSwap<PeriodKeys>,
}

struct PeriodKeys {
    period: u32,
    current: LessSafeKey,
    previous: LessSafeKey,
}

impl std::fmt::Debug for HostKeyTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKeyTicketer")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl HostKeyTicketer {
    /// A ticketer whose keys come from `prk` (the host key's ticket derivation) and whose
    /// tickets live `lifetime`, clamped to 1 s ..= [`MAX_TICKET_LIFETIME`]. `scope` names
    /// what a resumed session skips checking again (the client-certificate policy): its
    /// keys differ from those of any other scope, so tickets do not cross it.
    pub(crate) fn new(prk: hkdf::Prk, lifetime: Duration, scope: &'static [u8]) -> Arc<Self> {
        let lifetime_secs = lifetime.as_secs().clamp(1, MAX_TICKET_LIFETIME.as_secs()) as u32;
        let period = period_at(SystemTime::now(), lifetime_secs);
        let keys = ArcSwap::from_pointee(derive_period_keys(&prk, lifetime_secs, scope, period));
        Arc::new(Self {
            prk,
            lifetime_secs,
            scope,
            keys,
        })
    }

    /// The keys for `period`, derived now if the cached ones are of another period.
    fn keys_for(&self, period: u32) -> Arc<PeriodKeys> {
        let keys = self.keys.load_full();
        if keys.period == period {
            return keys;
        }
        // two workers may derive the same keys at the turn of a period; both are the same
        let fresh = Arc::new(derive_period_keys(
            &self.prk,
            self.lifetime_secs,
            self.scope,
            period,
        ));
        self.keys.store(fresh.clone());
        fresh
    }

    /// `plain` sealed as a ticket of the period `now` is in (`None` only if the random
    /// source fails).
    pub fn seal_at(&self, now: SystemTime, plain: &[u8]) -> Option<Vec<u8>> {
        let period = period_at(now, self.lifetime_secs);
        let keys = self.keys_for(period);
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::try_fill_bytes(&mut rand::thread_rng(), &mut nonce).ok()?;
        let mut out = Vec::with_capacity(PERIOD_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&period.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let (head, body) = out.split_at_mut(PERIOD_LEN + NONCE_LEN);
        let tag = keys
            .current
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&head[..PERIOD_LEN]),
                body,
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// What `ticket` (bytes a client sent: anything) seals, if it is a ticket of this key
    /// from the period `now` is in or the one before, untouched.
    pub fn open_at(&self, now: SystemTime, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < PERIOD_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (period_bytes, rest) = ticket.split_at(PERIOD_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let minted = u32::from_be_bytes(period_bytes.try_into().ok()?);
        let now = period_at(now, self.lifetime_secs);
        let keys = self.keys_for(now);
        let key = if minted == now {
            &keys.current
        } else if minted.checked_add(1) == Some(now) {
            &keys.previous
        } else {
            return None; // expired, or from a period this clock has not reached
        };
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain_len = key
            .open_in_place(nonce, Aad::from(period_bytes), &mut buf)
            .ok()?
            .len();
        buf.truncate(plain_len);
        Some(buf)
    }
}

impl rustls::server::ProducesTickets for HostKeyTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime_secs
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(SystemTime::now(), plain)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.open_at(SystemTime::now(), ticket)
    }
}

/// The period `now` falls in. A clock before 1970 is period 0; periods of one second
/// overflow `u32` in the year 2106, when this wraps (and tickets across the wrap fail).
fn period_at(now: SystemTime, lifetime_secs: u32) -> u32 {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    (secs / u64::from(lifetime_secs.max(1))) as u32
}

fn derive_period_keys(
    prk: &hkdf::Prk,
    lifetime_secs: u32,
    scope: &[u8],
    period: u32,
) -> PeriodKeys {
    PeriodKeys {
        period,
        current: period_key(prk, lifetime_secs, scope, period),
        previous: period_key(prk, lifetime_secs, scope, period.wrapping_sub(1)),
    }
}

/// Period `period`'s AES-256-GCM key. The lifetime is part of the derivation: nodes that
/// share a host key but not a lifetime number their periods differently, and their
/// tickets fail to open instead of opening under a confused schedule. So is the scope
/// (see [`HostKeyTicketer::new`]); its length goes first, so no two (scope, period) pairs
/// give the same info.
fn period_key(prk: &hkdf::Prk, lifetime_secs: u32, scope: &[u8], period: u32) -> LessSafeKey {
    let lifetime = lifetime_secs.to_be_bytes();
    let scope_len = (scope.len() as u32).to_be_bytes();
    let period = period.to_be_bytes();
    let info = [
        TICKET_INFO,
        &lifetime[..],
        &scope_len[..],
        scope,
        &period[..],
    ];
    let key: UnboundKey = crate::host_key::expand(prk, &info, &AES_256_GCM);
    LessSafeKey::new(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_key::{QuicHostKey, QUIC_HOST_KEY_LEN};

    const HOUR: Duration = Duration::from_secs(3600);

    fn ticketer(key: u8, lifetime: Duration) -> Arc<HostKeyTicketer> {
        QuicHostKey::from_bytes([key; QUIC_HOST_KEY_LEN]).ticketer(lifetime)
    }

    #[test]
    fn tickets_do_not_cross_client_certificate_policies() {
        use crate::tls::ClientAuth;
        let key = QuicHostKey::from_bytes([9; QUIC_HOST_KEY_LEN]).ticket_key();
        let under = |auth: ClientAuth| HostKeyTicketer::new(key.clone(), HOUR, auth.ticket_scope());
        let now = at(3_000_000);
        let t = under(ClientAuth::Optional)
            .seal_at(now, b"no certificate shown")
            .expect("sealed");
        assert!(under(ClientAuth::Optional).open_at(now, &t).is_some());
        assert_eq!(under(ClientAuth::Required).open_at(now, &t), None);
        assert_eq!(under(ClientAuth::None).open_at(now, &t), None);
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_ticket_opens_under_the_same_host_key_and_not_another() {
        let a = ticketer(1, 6 * HOUR);
        let t = a.seal_at(at(1_000_000), b"session state").expect("sealed");
        assert_ne!(&t[PERIOD_LEN + NONCE_LEN..][..13], b"session state");
        // another process with the same host key (a restart, another node)
        let again = ticketer(1, 6 * HOUR);
        assert_eq!(
            again.open_at(at(1_000_001), &t).as_deref(),
            Some(&b"session state"[..])
        );
        assert_eq!(ticketer(2, 6 * HOUR).open_at(at(1_000_001), &t), None);
        // the same key with another lifetime numbers its periods otherwise
        assert_eq!(ticketer(1, 5 * HOUR).open_at(at(1_000_001), &t), None);
    }

    #[test]
    fn a_ticket_lives_through_its_period_and_the_next_then_not() {
        let t6 = 6 * 3600;
        let k = ticketer(3, 6 * HOUR);
        // minted at the last second of period 10
        let t = k.seal_at(at(11 * t6 - 1), b"x").expect("sealed");
        assert!(k.open_at(at(11 * t6 - 1), &t).is_some());
        assert!(k.open_at(at(12 * t6 - 1), &t).is_some(), "next period");
        assert!(k.open_at(at(12 * t6), &t).is_none(), "two periods on");
        assert!(k.open_at(at(10 * t6), &t).is_some(), "same period");
        assert!(
            k.open_at(at(10 * t6 - 1), &t).is_none(),
            "clock behind the minting"
        );
    }

    #[test]
    fn tampered_and_short_tickets_are_refused_without_panicking() {
        let k = ticketer(4, HOUR);
        let now = at(5_000_000);
        let t = k.seal_at(now, b"state of a session").expect("sealed");
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 0x01;
            assert_eq!(k.open_at(now, &bad), None, "bit flipped at {i}");
        }
        for len in 0..t.len() {
            assert_eq!(k.open_at(now, &t[..len]), None, "truncated to {len}");
        }
        assert!(k.open_at(now, &[0xff; 200]).is_none());
    }

    /// A ticket sealed by the first release with host-key tickets (2026-12-06): an upgrade
    /// in place must keep resuming its clients, so the derivation must not drift.
    #[test]
    fn a_ticket_sealed_by_an_earlier_release_still_opens() {
        const SEALED: &str = "000144e8c1378202f74b07454bbe039aaca2c0c1d2863a5aaef4ba9c39e599a6\
                              ee4f1f8f80f9637652973a854857306bc88c5fa4";
        let bytes = alknet_proto::hex::decode(SEALED).expect("hex");
        let k = ticketer(0x42, 6 * HOUR);
        assert_eq!(
            k.open_at(at(1_796_601_600), &bytes).as_deref(),
            Some(&b"alknet session state"[..])
        );
    }

    #[test]
    fn two_tickets_of_the_same_state_differ() {
        let k = ticketer(5, HOUR);
        let now = at(7_000_000);
        let (a, b) = (k.seal_at(now, b"s"), k.seal_at(now, b"s"));
        assert_ne!(a, b, "a fresh nonce each time");
    }

    #[test]
    fn lifetime_is_clamped_to_what_tls_allows() {
        use rustls::server::ProducesTickets;
        assert_eq!(
            ticketer(6, Duration::from_secs(30 * 24 * 3600)).lifetime(),
            7 * 24 * 3600
        );
        assert_eq!(ticketer(6, Duration::ZERO).lifetime(), 1);
        assert_eq!(ticketer(6, 6 * HOUR).lifetime(), 6 * 3600);
    }
}
