//! The SQLite identity adapter: peers, their certificate fingerprints and their tokens in
//! one database file, behind [`IdentityProvider`].
//!
//! ```text
//! peers(name TEXT PRIMARY KEY, scopes TEXT NOT NULL /* JSON array */, created_at INTEGER)
//! peer_fingerprints(fingerprint TEXT PRIMARY KEY /* 64 lowercase hex */, name → peers ON DELETE CASCADE)
//! peer_tokens(token_sha256 TEXT PRIMARY KEY /* hex SHA-256 */, name → peers ON DELETE CASCADE)
//! ```
//!
//! Tokens are never stored: only their SHA-256. The file is opened in WAL mode with a busy
//! timeout, so `alknet peer …` and a running server use it at the same time; the server
//! keeps no cache, so a change is seen at the next resolution (one indexed lookup, done
//! once per connection or per tokened request, never per packet).

use std::collections::HashSet;
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alknet_runtime::{Fingerprint, Identity, IdentityProvider};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// The schema this code writes, kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for another process's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest peer name, in characters.
pub const MAX_NAME_LEN: usize = 64;

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS peers (
    name TEXT PRIMARY KEY NOT NULL,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS peer_fingerprints (
    fingerprint TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL REFERENCES peers(name) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS peer_fingerprints_by_name ON peer_fingerprints(name);
CREATE TABLE IF NOT EXISTS peer_tokens (
    token_sha256 TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL REFERENCES peers(name) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS peer_tokens_by_name ON peer_tokens(name);
";

/// Errors of the peer store. Those about the file name it.
#[derive(Debug, thiserror::Error)]
pub enum PeerStoreError {
    #[error("peer database {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("peer database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "peer database {path}: schema version {found} is newer than this alknet supports \
         ({SCHEMA_VERSION}); upgrade alknet"
    )]
    NewerSchema { path: PathBuf, found: i64 },
    #[error("peer database {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("invalid peer name {0:?}: 1 to {MAX_NAME_LEN} characters from A-Z a-z 0-9 . _ @ -")]
    InvalidName(String),
    #[error("invalid scope {0:?}: scopes are non-empty and contain no whitespace")]
    InvalidScope(String),
    #[error("peer \"{0}\" needs at least one scope")]
    NoScopes(String),
    #[error("an empty token is not a credential")]
    EmptyToken,
    #[error("peer \"{0}\" already exists")]
    PeerExists(String),
    #[error("fingerprint {fingerprint} already belongs to peer \"{owner}\"")]
    FingerprintTaken {
        fingerprint: Fingerprint,
        owner: String,
    },
    #[error("that token already belongs to peer \"{owner}\"")]
    TokenTaken { owner: String },
}

/// A peer to add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewPeer {
    pub name: String,
    pub fingerprints: Vec<Fingerprint>,
    /// Bearer tokens in clear; only their SHA-256 is stored.
    pub tokens: Vec<String>,
    pub scopes: Vec<String>,
}

/// A stored peer as listed (tokens only counted: they cannot be recovered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSummary {
    pub name: String,
    pub fingerprints: Vec<Fingerprint>,
    pub token_count: usize,
    pub scopes: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
}

/// The peer database. `Send + Sync`: one connection behind a mutex, held for one short
/// indexed query at a time.
pub struct SqlitePeerStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqlitePeerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlitePeerStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqlitePeerStore {
    /// Opens the database at `path`, creating it (mode 0600, and its parent directory
    /// with mode 0700 if missing) and its schema if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PeerStoreError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| PeerStoreError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io)?;
            }
        }
        // Create the file ourselves so that it is private from the first byte; SQLite
        // gives its -wal and -shm files the database file's permissions.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let sql = |source| PeerStoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "peer database is not in WAL mode");
        }
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql)?;
        // Immediate: two processes creating the file at once must not both create it.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        match version {
            0 => {
                tx.execute_batch(SCHEMA_V1).map_err(sql)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(sql)?;
            }
            SCHEMA_VERSION => {}
            found if found > SCHEMA_VERSION => {
                return Err(PeerStoreError::NewerSchema { path, found });
            }
            found => {
                return Err(PeerStoreError::Corrupt {
                    path,
                    message: format!("unknown schema version {found}"),
                })
            }
        }
        tx.commit().map_err(sql)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a peer with its credentials, all or nothing. Refused if the name exists or a
    /// fingerprint or token already belongs to a peer.
    pub fn add(&self, peer: &NewPeer) -> Result<(), PeerStoreError> {
        validate_name(&peer.name)?;
        let scopes = dedup(peer.scopes.iter().cloned());
        if scopes.is_empty() {
            return Err(PeerStoreError::NoScopes(peer.name.clone()));
        }
        for s in &scopes {
            validate_scope(s)?;
        }
        if peer.tokens.iter().any(|t| t.is_empty()) {
            return Err(PeerStoreError::EmptyToken);
        }
        let fingerprints = dedup(peer.fingerprints.iter().copied());
        let token_hashes = dedup(peer.tokens.iter().map(|t| token_hash(t)));
        let scopes_json = serde_json::to_string(&scopes).map_err(|e| self.corrupt(e))?;
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);

        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.sql(e))?;
        let exists = tx
            .query_row("SELECT 1 FROM peers WHERE name = ?1", [&peer.name], |_| {
                Ok(())
            })
            .optional()
            .map_err(|e| self.sql(e))?;
        if exists.is_some() {
            return Err(PeerStoreError::PeerExists(peer.name.clone()));
        }
        for fp in &fingerprints {
            let owner: Option<String> = tx
                .query_row(
                    "SELECT name FROM peer_fingerprints WHERE fingerprint = ?1",
                    [fp.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.sql(e))?;
            if let Some(owner) = owner {
                return Err(PeerStoreError::FingerprintTaken {
                    fingerprint: *fp,
                    owner,
                });
            }
        }
        for hash in &token_hashes {
            let owner: Option<String> = tx
                .query_row(
                    "SELECT name FROM peer_tokens WHERE token_sha256 = ?1",
                    [hash],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.sql(e))?;
            if let Some(owner) = owner {
                return Err(PeerStoreError::TokenTaken { owner });
            }
        }
        tx.execute(
            "INSERT INTO peers (name, scopes, created_at) VALUES (?1, ?2, ?3)",
            params![peer.name, scopes_json, created_at],
        )
        .map_err(|e| self.sql(e))?;
        for fp in &fingerprints {
            tx.execute(
                "INSERT INTO peer_fingerprints (fingerprint, name) VALUES (?1, ?2)",
                params![fp.to_string(), peer.name],
            )
            .map_err(|e| self.sql(e))?;
        }
        for hash in &token_hashes {
            tx.execute(
                "INSERT INTO peer_tokens (token_sha256, name) VALUES (?1, ?2)",
                params![hash, peer.name],
            )
            .map_err(|e| self.sql(e))?;
        }
        tx.commit().map_err(|e| self.sql(e))
    }

    /// Every peer, by name.
    pub fn list(&self) -> Result<Vec<PeerSummary>, PeerStoreError> {
        let mut conn = self.lock();
        // One read transaction: a consistent snapshot even while another process writes.
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let rows: Vec<(String, String, i64)> = {
            let mut stmt = tx
                .prepare("SELECT name, scopes, created_at FROM peers ORDER BY name")
                .map_err(|e| self.sql(e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, Option<i64>>(2)?))
                })
                .map_err(|e| self.sql(e))?;
            rows.map(|r| r.map(|(n, s, c)| (n, s, c.unwrap_or(0))))
                .collect::<Result<_, _>>()
                .map_err(|e| self.sql(e))?
        };
        let mut out = Vec::with_capacity(rows.len());
        let mut fps = tx
            .prepare(
                "SELECT fingerprint FROM peer_fingerprints WHERE name = ?1 ORDER BY fingerprint",
            )
            .map_err(|e| self.sql(e))?;
        let mut tokens = tx
            .prepare("SELECT COUNT(*) FROM peer_tokens WHERE name = ?1")
            .map_err(|e| self.sql(e))?;
        for (name, scopes, created_at) in rows {
            let fingerprints = fps
                .query_map([&name], |r| r.get::<_, String>(0))
                .map_err(|e| self.sql(e))?
                .map(|r| {
                    let hex = r.map_err(|e| self.sql(e))?;
                    hex.parse::<Fingerprint>().map_err(|e| {
                        self.corrupt(format!("peer {name:?}: fingerprint {hex:?}: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let token_count: i64 = tokens
                .query_row([&name], |r| r.get(0))
                .map_err(|e| self.sql(e))?;
            out.push(PeerSummary {
                scopes: self.parse_scopes(&name, &scopes)?,
                name,
                fingerprints,
                token_count: token_count as usize,
                created_at,
            });
        }
        Ok(out)
    }

    /// Removes a peer and its credentials; `false` if there was none by that name.
    pub fn remove(&self, name: &str) -> Result<bool, PeerStoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.sql(e))?;
        // ON DELETE CASCADE does this too; explicit so that a connection opened without
        // `foreign_keys = ON` (the sqlite3 shell's default) can never leave orphans.
        for table in ["peer_fingerprints", "peer_tokens"] {
            tx.execute(&format!("DELETE FROM {table} WHERE name = ?1"), [name])
                .map_err(|e| self.sql(e))?;
        }
        let removed = tx
            .execute("DELETE FROM peers WHERE name = ?1", [name])
            .map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(removed > 0)
    }

    /// The identity owning `fingerprint`, if any.
    pub fn lookup_fingerprint(
        &self,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Identity>, PeerStoreError> {
        self.lookup(
            "SELECT p.name, p.scopes FROM peer_fingerprints f JOIN peers p ON p.name = f.name \
             WHERE f.fingerprint = ?1",
            &fingerprint.to_string(),
        )
    }

    /// The identity owning `token`, if any.
    pub fn lookup_token(&self, token: &str) -> Result<Option<Identity>, PeerStoreError> {
        if token.is_empty() {
            return Ok(None);
        }
        self.lookup(
            "SELECT p.name, p.scopes FROM peer_tokens t JOIN peers p ON p.name = t.name \
             WHERE t.token_sha256 = ?1",
            &token_hash(token),
        )
    }

    fn lookup(&self, query: &str, key: &str) -> Result<Option<Identity>, PeerStoreError> {
        let conn = self.lock();
        let row: Option<(String, String)> = conn
            .prepare_cached(query)
            .and_then(|mut s| {
                s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.sql(e))?;
        drop(conn);
        row.map(|(name, scopes)| {
            Ok(Identity {
                scopes: self.parse_scopes(&name, &scopes)?,
                name,
            })
        })
        .transpose()
    }

    fn parse_scopes(&self, name: &str, json: &str) -> Result<Vec<String>, PeerStoreError> {
        serde_json::from_str(json)
            .map_err(|e| self.corrupt(format!("peer {name:?}: scopes {json:?}: {e}")))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave the connection inconsistent: an
        // unfinished transaction rolls back when dropped.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sql(&self, source: rusqlite::Error) -> PeerStoreError {
        PeerStoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, message: impl ToString) -> PeerStoreError {
        PeerStoreError::Corrupt {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }
}

impl IdentityProvider for SqlitePeerStore {
    fn resolve_from_fingerprint(&self, fingerprint: &Fingerprint) -> Option<Identity> {
        self.lookup_fingerprint(fingerprint).unwrap_or_else(|e| {
            tracing::warn!("resolving fingerprint {fingerprint}: {e}");
            None
        })
    }

    fn resolve_from_token(&self, token: &str) -> Option<Identity> {
        self.lookup_token(token).unwrap_or_else(|e| {
            tracing::warn!("resolving a token: {e}");
            None
        })
    }
}

/// Checks a peer name: 1 to 64 characters from `A-Z a-z 0-9 . _ @ -`.
pub fn validate_name(name: &str) -> Result<(), PeerStoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PeerStoreError::InvalidName(name.to_string()))
    }
}

/// Checks a scope: non-empty, no whitespace.
pub fn validate_scope(scope: &str) -> Result<(), PeerStoreError> {
    if scope.is_empty() || scope.chars().any(char::is_whitespace) {
        Err(PeerStoreError::InvalidScope(scope.to_string()))
    } else {
        Ok(())
    }
}

/// The stored form of a token: lowercase hex SHA-256 of its bytes.
pub fn token_hash(token: &str) -> String {
    alknet_runtime::hex::encode(
        ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref(),
    )
}

/// A new random bearer token: 32 bytes from the system CSPRNG as 64 lowercase hex digits.
pub fn generate_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random number generator failed");
    alknet_runtime::hex::encode(&bytes)
}

/// `items` without repeats, first occurrence kept.
fn dedup<T: Clone + Eq + std::hash::Hash>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items.filter(|i| seen.insert(i.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint([b; 32])
    }

    fn peer(name: &str, fps: &[Fingerprint], tokens: &[&str]) -> NewPeer {
        NewPeer {
            name: name.into(),
            fingerprints: fps.to_vec(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            scopes: vec!["echo".into(), "call".into()],
        }
    }

    fn store() -> (tempfile::TempDir, SqlitePeerStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqlitePeerStore::open(dir.path().join("peers.db")).expect("open");
        (dir, store)
    }

    #[test]
    fn peer_resolves_by_fingerprint_and_token() {
        let (_dir, s) = store();
        s.add(&peer("alice", &[fp(1), fp(2)], &["secret"]))
            .expect("add");
        for f in [fp(1), fp(2)] {
            let id = s
                .resolve_from_fingerprint(&f)
                .expect("alice by fingerprint");
            assert_eq!(id.name, "alice");
            assert_eq!(id.scopes, ["echo", "call"]);
        }
        let id = s.resolve_from_token("secret").expect("alice by token");
        assert_eq!(id.name, "alice");
        assert!(id.has_scope("call"));
        assert_eq!(s.resolve_from_token("Secret"), None);
        assert_eq!(s.resolve_from_token(""), None);
        assert_eq!(s.resolve_from_fingerprint(&fp(3)), None);
    }

    #[test]
    fn peer_tokens_are_stored_only_as_hashes() {
        let (dir, s) = store();
        s.add(&peer("alice", &[], &["very-secret-token"]))
            .expect("add");
        drop(s);
        let conn = Connection::open(dir.path().join("peers.db")).expect("raw open");
        let stored: String = conn
            .query_row("SELECT token_sha256 FROM peer_tokens", [], |r| r.get(0))
            .expect("row");
        assert_eq!(stored, token_hash("very-secret-token"));
        assert_eq!(stored.len(), 64);
        let bytes = std::fs::read(dir.path().join("peers.db")).expect("read");
        let wal = std::fs::read(dir.path().join("peers.db-wal")).unwrap_or_default();
        for file in [bytes, wal] {
            assert!(!file.windows(17).any(|w| w == b"very-secret-token"));
        }
    }

    #[test]
    fn peer_list_and_remove_cascades() {
        let (_dir, s) = store();
        s.add(&peer("bob", &[fp(9)], &["t1", "t2", "t1"]))
            .expect("add bob");
        s.add(&peer("alice", &[fp(2), fp(1), fp(2)], &[]))
            .expect("add alice");
        let list = s.list().expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, "alice");
        assert_eq!(list[0].fingerprints, [fp(1), fp(2)]);
        assert_eq!(list[0].token_count, 0);
        assert_eq!(list[1].name, "bob");
        assert_eq!(list[1].token_count, 2);
        assert_eq!(list[1].scopes, ["echo", "call"]);
        assert!(list[1].created_at > 1_600_000_000);

        assert!(s.remove("bob").expect("remove"));
        assert!(!s.remove("bob").expect("remove again"));
        assert_eq!(s.resolve_from_fingerprint(&fp(9)), None);
        assert_eq!(s.resolve_from_token("t1"), None);
        let conn = s.lock();
        for table in ["peer_fingerprints", "peer_tokens"] {
            let n: i64 = conn
                .query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE name = 'bob'"),
                    [],
                    |r| r.get(0),
                )
                .expect("count");
            assert_eq!(n, 0, "{table}");
        }
        drop(conn);
        // The credentials are free again.
        s.add(&peer("carol", &[fp(9)], &["t1"]))
            .expect("credentials reusable");
        assert_eq!(
            s.resolve_from_token("t1").map(|i| i.name),
            Some("carol".into())
        );
    }

    #[test]
    fn peer_duplicates_refused() {
        let (_dir, s) = store();
        s.add(&peer("alice", &[fp(1)], &["t"])).expect("add");
        let e = s.add(&peer("alice", &[fp(5)], &[])).expect_err("same name");
        assert_eq!(e.to_string(), "peer \"alice\" already exists");
        let e = s
            .add(&peer("bob", &[fp(1)], &[]))
            .expect_err("same fingerprint");
        assert!(matches!(&e, PeerStoreError::FingerprintTaken { owner, .. } if owner == "alice"));
        assert_eq!(
            e.to_string(),
            format!("fingerprint {} already belongs to peer \"alice\"", fp(1))
        );
        let e = s
            .add(&peer("bob", &[fp(2)], &["t"]))
            .expect_err("same token");
        assert!(
            e.to_string().contains("already belongs to peer \"alice\""),
            "{e}"
        );
        // Nothing of the refused peers was written.
        assert_eq!(s.list().expect("list").len(), 1);
        assert_eq!(s.resolve_from_fingerprint(&fp(2)), None);
    }

    #[test]
    fn peer_names_and_scopes_validated() {
        let (_dir, s) = store();
        for bad in ["", "a b", "ünï", "x/y", &"n".repeat(65)] {
            let e = s.add(&peer(bad, &[fp(1)], &[])).expect_err(bad);
            assert!(matches!(e, PeerStoreError::InvalidName(_)), "{bad}: {e}");
        }
        s.add(&peer(&"n".repeat(64), &[], &[])).expect("64 chars");
        s.add(&peer("a.b_c@d-E9", &[], &[])).expect("all classes");
        let mut p = peer("bob", &[], &[]);
        p.scopes = vec![];
        assert!(matches!(s.add(&p), Err(PeerStoreError::NoScopes(_))));
        for bad in ["", "a b", "tab\t"] {
            p.scopes = vec![bad.into()];
            assert!(
                matches!(s.add(&p), Err(PeerStoreError::InvalidScope(_))),
                "{bad:?}"
            );
        }
        p.scopes = vec!["ok".into()];
        p.tokens = vec![String::new()];
        assert!(matches!(s.add(&p), Err(PeerStoreError::EmptyToken)));
    }

    #[test]
    fn peer_two_handles_see_each_others_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("peers.db");
        let server = SqlitePeerStore::open(&path).expect("open 1");
        let cli = SqlitePeerStore::open(&path).expect("open 2");
        assert_eq!(server.resolve_from_fingerprint(&fp(4)), None);
        cli.add(&peer("dave", &[fp(4)], &["tok"])).expect("add");
        assert_eq!(
            server.resolve_from_fingerprint(&fp(4)).map(|i| i.name),
            Some("dave".into())
        );
        assert!(cli.remove("dave").expect("remove"));
        assert_eq!(server.resolve_from_token("tok"), None);
        // And from threads: the store is Send + Sync.
        let server = std::sync::Arc::new(server);
        let threads: Vec<_> = (0..4u8)
            .map(|i| {
                let path = path.clone();
                let server = server.clone();
                std::thread::spawn(move || {
                    let own = SqlitePeerStore::open(&path).expect("open in thread");
                    own.add(&peer(&format!("p{i}"), &[fp(100 + i)], &[]))
                        .expect("concurrent add");
                    server
                        .resolve_from_fingerprint(&fp(100 + i))
                        .map(|id| id.name)
                })
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            assert_eq!(t.join().expect("thread"), Some(format!("p{i}")));
        }
    }

    #[test]
    fn peer_database_is_private_and_versioned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/dir/peers.db");
        let s = SqlitePeerStore::open(&path).expect("open");
        s.add(&peer("alice", &[fp(1)], &[])).expect("add");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("sub/dir")), 0o700);
        assert_eq!(mode(&dir.path().join("sub")), 0o700);
        let wal = dir.path().join("sub/dir/peers.db-wal");
        if wal.exists() {
            assert_eq!(mode(&wal), 0o600);
        }
        let conn = s.lock();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, SCHEMA_VERSION);
        let jm: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("journal mode");
        assert_eq!(jm, "wal");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump");
        drop(conn);
        drop(s);
        let e = SqlitePeerStore::open(&path).expect_err("newer schema");
        assert!(matches!(e, PeerStoreError::NewerSchema { .. }), "{e}");
        assert!(e.to_string().contains("peers.db"), "{e}");
    }

    #[test]
    fn peer_open_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").expect("write");
        let e = SqlitePeerStore::open(blocker.join("peers.db")).expect_err("parent is a file");
        assert!(
            e.to_string().contains(&blocker.display().to_string()),
            "{e}"
        );
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x42; 4096]).expect("write");
        let e = SqlitePeerStore::open(&garbage).expect_err("not a database");
        assert!(e.to_string().contains("garbage.db"), "{e}");
    }

    #[test]
    fn peer_generated_tokens_are_random_hex() {
        let a = generate_token();
        let b = generate_token();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
