//! pkarr names: DNS records published by an Ed25519 key under `<z-base32 key>.`, in
//! pkarr's signed-packet format (64-byte signature ‖ 8-byte big-endian µs timestamp ‖ DNS
//! packet ≤ 1000 bytes, signed over the BEP44 encoding; verified with the `pkarr` crate's
//! `SignedPacket`; see [`crate::pkarr_packet`]). Kept in SQLite (the newest timestamp wins;
//! an older one is refused, as a relay answers 409) and in memory for lookups, which never
//! touch the database.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hickory_proto::rr::{Name, RecordType};

use alknet_runtime::{RelayError, RelayPacket};

pub use crate::pkarr_packet::{PublishError, SignedRecords, MAX_RELAY_PAYLOAD};
use crate::zone::ZoneAnswer;

/// The signed packets this node serves, by key.
pub struct PkarrStore {
    db: Mutex<rusqlite::Connection>,
    packets: ArcSwap<HashMap<String, Arc<SignedRecords>>>,
}

impl std::fmt::Debug for PkarrStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PkarrStore")
            .field("keys", &self.packets.load().len())
            .finish()
    }
}

fn storage(e: rusqlite::Error) -> PublishError {
    PublishError::Storage(e.to_string())
}

impl PkarrStore {
    /// Opens (creating) the database at `path` and loads every packet in it; a row that no
    /// longer verifies is skipped with a warning.
    pub fn open(path: &Path) -> Result<Self, PublishError> {
        let db = rusqlite::Connection::open(path).map_err(storage)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS pkarr_packets (
                 key TEXT PRIMARY KEY,
                 timestamp INTEGER NOT NULL,
                 payload BLOB NOT NULL
             )",
        )
        .map_err(storage)?;
        let mut packets = HashMap::new();
        {
            let mut stmt = db
                .prepare("SELECT key, payload FROM pkarr_packets")
                .map_err(storage)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(storage)?;
            for row in rows {
                let (key, payload) = row.map_err(storage)?;
                match SignedRecords::verify(&key, &payload) {
                    Ok(stored) => {
                        packets.insert(key, Arc::new(stored));
                    }
                    Err(e) => tracing::warn!(%key, "pkarr packet in the store skipped: {e}"),
                }
            }
        }
        Ok(Self {
            db: Mutex::new(db),
            packets: ArcSwap::from_pointee(packets),
        })
    }

    /// Stores a relay payload for `key` (z-base32) if it verifies and is newer than what
    /// is stored; returns its timestamp. Republishing the same packet is accepted.
    pub fn publish(&self, key: &str, payload: &[u8]) -> Result<u64, PublishError> {
        self.publish_if(key, payload, None)
    }

    /// [`Self::publish`], and with `if_match` only if the stored packet's timestamp is that
    /// one (the relay API's `If-Match`, BEP44's compare-and-swap; no stored packet matches
    /// any).
    pub fn publish_if(
        &self,
        key: &str,
        payload: &[u8],
        if_match: Option<u64>,
    ) -> Result<u64, PublishError> {
        let key = key.trim_end_matches('.').to_ascii_lowercase();
        let stored = SignedRecords::verify(&key, payload)?;
        let timestamp = stored.timestamp();
        let db = self
            .db
            .lock()
            .map_err(|_| PublishError::Storage("poisoned".into()))?;
        let have: Option<(u64, Vec<u8>)> = db
            .query_row(
                "SELECT timestamp, payload FROM pkarr_packets WHERE key = ?1",
                [&key],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(storage(e)),
            })?;
        if let (Some(want), Some((have, _))) = (if_match, &have) {
            if want != *have {
                return Err(PublishError::PreconditionFailed(want));
            }
        }
        if let Some((have, bytes)) = have {
            if have == timestamp && bytes == payload {
                return Ok(timestamp);
            }
            if have >= timestamp {
                return Err(PublishError::Stale {
                    have,
                    got: timestamp,
                });
            }
        }
        db.execute(
            "INSERT INTO pkarr_packets (key, timestamp, payload) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET timestamp = ?2, payload = ?3",
            rusqlite::params![key, timestamp as i64, payload],
        )
        .map_err(storage)?;
        let stored = Arc::new(stored);
        self.packets.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(key.clone(), stored.clone());
            next
        });
        Ok(timestamp)
    }

    /// [`Self::publish`] with the payload in standard base64 (as the call operation takes).
    pub fn publish_base64(&self, key: &str, payload: &str) -> Result<u64, PublishError> {
        let bytes = data_encoding::BASE64
            .decode(payload.as_bytes())
            .map_err(|_| PublishError::Encoding)?;
        self.publish(key, &bytes)
    }

    /// The key a name falls under (its last label), if it is a pkarr key at all.
    pub fn key_of(name: &Name) -> Option<String> {
        let last = name.iter().next_back()?;
        let label = std::str::from_utf8(last).ok()?.to_ascii_lowercase();
        pkarr::PublicKey::try_from(label.as_str()).ok()?;
        Some(label)
    }

    /// Answers `qname`/`qtype` from the stored packet of its key: `None` when the name is
    /// not under a key this node has. Exact names (and a CNAME there) only; no SOA exists,
    /// so negative answers carry no authority.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Option<ZoneAnswer> {
        let key = Self::key_of(qname)?;
        let packets = self.packets.load();
        Some(packets.get(&key)?.lookup(qname, qtype))
    }
}

/// The pkarr key of an Ed25519 seed (the vault's `pkarr` purpose).
pub fn keypair_from_seed(seed: &[u8; 32]) -> pkarr::Keypair {
    pkarr::Keypair::from_secret_key(seed)
}

/// The node's own pkarr key, kept as a hex secret in `path` (mode 0600), made on first use.
/// (A key from the vault would make the name survive a reinstall; this one lives and dies
/// with the data directory.)
pub fn node_keypair(path: &Path) -> Result<pkarr::Keypair, PublishError> {
    use alknet_runtime::secret_files::{load_or_generate, write_atomically};
    let storage =
        |e: &dyn std::fmt::Display| PublishError::Storage(format!("{}: {e}", path.display()));
    // two servers starting at once must end with one key (secret_files says why)
    load_or_generate(
        path.parent().unwrap_or(Path::new(".")),
        &[path],
        || pkarr::Keypair::from_secret_key_file(path).map_err(|e| storage(&e)),
        || {
            let kp = pkarr::Keypair::random();
            let hex = alknet_runtime::hex::encode(&kp.secret_key());
            write_atomically(path, hex.as_bytes(), 0o600).map_err(|e| storage(&e))?;
            Ok(kp)
        },
        |e| storage(&e),
    )
    .map(|(kp, _)| kp)
}

impl PkarrStore {
    /// Publishes this node under `keypair`: its address at the apex (unless it listens on
    /// an unspecified address) and `_alknet` TXT "port=… fp=…" (the UDP port and the TLS
    /// certificate's SHA-256, for pinning). Returns the node's name (the z-base32 key).
    pub fn publish_node(
        &self,
        keypair: &pkarr::Keypair,
        addr: std::net::SocketAddr,
        fingerprint: &str,
    ) -> Result<String, PublishError> {
        let invalid = |e: String| PublishError::Invalid(e);
        let mut builder = pkarr::SignedPacket::builder();
        if !addr.ip().is_unspecified() {
            builder = builder.address(
                ".".try_into().map_err(|e| invalid(format!("{e}")))?,
                addr.ip(),
                NODE_TTL,
            );
        }
        let text = format!("port={} fp={fingerprint}", addr.port());
        let packet = builder
            .txt(
                "_alknet".try_into().map_err(|e| invalid(format!("{e}")))?,
                text.as_str()
                    .try_into()
                    .map_err(|e| invalid(format!("{e}")))?,
                NODE_TTL,
            )
            .sign(keypair)
            .map_err(|e| invalid(e.to_string()))?;
        let key = keypair.public_key().to_z32();
        self.publish(&key, &packet.to_relay_payload())?;
        Ok(key)
    }
}

impl alknet_runtime::PkarrRelay for PkarrStore {
    fn get(&self, key: &str) -> Result<Option<RelayPacket>, RelayError> {
        let key = key.to_ascii_lowercase();
        pkarr::PublicKey::try_from(key.as_str()).map_err(|_| RelayError::Key(key.clone()))?;
        Ok(self.packets.load().get(&key).map(|s| RelayPacket {
            payload: s.payload().clone(),
            timestamp: s.timestamp(),
            min_ttl: s.min_ttl(),
        }))
    }

    fn put(&self, key: &str, payload: &[u8], if_match: Option<u64>) -> Result<(), RelayError> {
        self.publish_if(key, payload, if_match)
            .map(drop)
            .map_err(|e| match e {
                PublishError::Key(k) => RelayError::Key(k),
                PublishError::TooLarge(_) => RelayError::TooLarge(e.to_string()),
                PublishError::Encoding | PublishError::Invalid(_) => {
                    RelayError::Invalid(e.to_string())
                }
                PublishError::Stale { .. } => RelayError::Stale(e.to_string()),
                PublishError::PreconditionFailed(_) => RelayError::PreconditionFailed,
                PublishError::Storage(s) => RelayError::Storage(s),
            })
    }
}

/// TTL of the node's own records.
const NODE_TTL: u32 = 300;

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::zone::Outcome;

    fn packet(keypair: &pkarr::Keypair, ts: u64, addr: [u8; 4]) -> Vec<u8> {
        pkarr::SignedPacket::builder()
            .a("_foo".try_into().expect("name"), addr.into(), 300)
            .txt(
                ".".try_into().expect("name"),
                "hello".try_into().expect("txt"),
                300,
            )
            .timestamp(ts.into())
            .sign(keypair)
            .expect("sign")
            .to_relay_payload()
            .to_vec()
    }

    #[test]
    fn servers_starting_at_once_end_with_one_node_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("pkarr_node_key");
        let starts = std::sync::Barrier::new(8);
        let keys: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        starts.wait();
                        node_keypair(&key_file)
                            .expect("load or generate")
                            .public_key()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let on_disk = node_keypair(&key_file).expect("reload").public_key();
        assert!(keys.iter().all(|k| *k == on_disk));
    }

    #[test]
    fn publishes_resolves_and_refuses_stale_or_forged_packets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("pkarr.db");
        let store = PkarrStore::open(&db).expect("open");
        let kp = pkarr::Keypair::random();
        let key = kp.public_key().to_z32();
        store
            .publish(&key, &packet(&kp, 1_000_000, [192, 0, 2, 1]))
            .expect("publish");
        let name = Name::from_str(&format!("_foo.{key}.")).expect("name");
        let a = store.lookup(&name, RecordType::A).expect("our key");
        assert_eq!(a.outcome, Outcome::Answer);
        assert_eq!(a.answers.len(), 1);
        let apex = Name::from_str(&format!("{key}.")).expect("name");
        let txt = store.lookup(&apex, RecordType::TXT).expect("our key");
        assert_eq!(txt.answers.len(), 1);
        let nodata = store.lookup(&name, RecordType::AAAA).expect("our key");
        assert_eq!(nodata.outcome, Outcome::NoData);
        let nx = Name::from_str(&format!("_bar.{key}.")).expect("name");
        assert_eq!(
            store.lookup(&nx, RecordType::A).expect("our key").outcome,
            Outcome::NxDomain
        );
        // an older packet is refused, a newer one replaces it
        let e = store
            .publish(&key, &packet(&kp, 999_999, [192, 0, 2, 9]))
            .expect_err("stale");
        assert!(matches!(e, PublishError::Stale { .. }), "{e}");
        store
            .publish(&key, &packet(&kp, 1_000_000, [192, 0, 2, 1]))
            .expect("the same packet again");
        store
            .publish(&key, &packet(&kp, 2_000_000, [192, 0, 2, 2]))
            .expect("newer");
        // forged: a flipped signature byte, or another key's packet
        let mut forged = packet(&kp, 3_000_000, [192, 0, 2, 3]);
        forged[0] ^= 1;
        assert!(matches!(
            store.publish(&key, &forged),
            Err(PublishError::Invalid(_))
        ));
        let other = pkarr::Keypair::random();
        assert!(store
            .publish(&key, &packet(&other, 4_000_000, [192, 0, 2, 4]))
            .is_err());
        assert!(matches!(
            store.publish("not-a-key", &packet(&kp, 5, [1, 1, 1, 1])),
            Err(PublishError::Key(_))
        ));
        // kept across a restart, newest version
        drop(store);
        let store = PkarrStore::open(&db).expect("reopen");
        let a = store.lookup(&name, RecordType::A).expect("our key");
        assert_eq!(a.answers[0].data.to_string(), "192.0.2.2");
        // the node's own name: a key made once and reused, its address and fingerprint
        let key_file = dir.path().join("node_key");
        let node = node_keypair(&key_file).expect("node key");
        assert_eq!(
            node_keypair(&key_file).expect("again").public_key(),
            node.public_key()
        );
        let z32 = store
            .publish_node(&node, "127.0.0.1:4433".parse().expect("addr"), "ab12")
            .expect("publish node");
        let apex = Name::from_str(&format!("{z32}.")).expect("name");
        let a = store.lookup(&apex, RecordType::A).expect("node");
        assert_eq!(a.answers[0].data.to_string(), "127.0.0.1");
        let txt_name = Name::from_str(&format!("_alknet.{z32}.")).expect("name");
        let txt = store.lookup(&txt_name, RecordType::TXT).expect("node");
        assert!(txt.answers[0]
            .data
            .to_string()
            .contains("port=4433 fp=ab12"));
        // names under no known key are not ours
        let other_name =
            Name::from_str(&format!("x.{}.", other.public_key().to_z32())).expect("name");
        assert!(store.lookup(&other_name, RecordType::A).is_none());
        assert!(store
            .lookup(
                &Name::from_str("example.com.").expect("name"),
                RecordType::A
            )
            .is_none());
    }
}
