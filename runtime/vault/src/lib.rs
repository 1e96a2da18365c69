//! Alknet's key vault: one BIP39 mnemonic gives every key a node has.
//!
//! - **Mnemonic**: 12 or 24 English words ([`generate_mnemonic`]), turned into a 64-byte
//!   seed with an optional BIP39 passphrase (the "25th word"; not the vault password).
//! - **Keys**: SLIP-0010 Ed25519, hardened derivation only ([`slip10`]), at a documented
//!   path per purpose ([`KeyPurpose::path`]), so the same words give the same keys on
//!   any machine.
//! - **At rest**: the entropy, the seed and the metadata (names, paths, creation times)
//!   are encrypted with AES-256-GCM under a key stretched from the vault password by
//!   Argon2id, whose parameters are in the versioned header, which is authenticated as
//!   associated data ([`file`](mod@file)). Files are written atomically with mode 0600.
//!
//! This crate depends on no other alknet crate: turning keys into TLS certificates or
//! OpenSSH keys is the binary's job. Secrets are zeroized when dropped and never appear
//! in `Debug` output or logs.

pub mod file;
pub mod hex;
mod mnemonic;
pub mod slip10;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use ed25519_dalek::Signer;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use bip39::Mnemonic;
pub use file::{FormatError, KdfParams};
pub use mnemonic::{generate_mnemonic, parse_mnemonic, WordCount};
pub use slip10::{DerivationPath, ExtendedKey, PathError};

/// Everything that can go wrong with a vault. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; a vault is never overwritten (move it away first)")]
    Exists { path: PathBuf },
    #[error("{path}: {source}")]
    Format { path: PathBuf, source: FormatError },
    #[error("{path}: wrong password (or the file was altered and its checksum recomputed)")]
    WrongPassword { path: PathBuf },
    #[error("{path}: the decrypted vault is malformed: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("Argon2id: {0}")]
    Kdf(String),
    #[error("invalid mnemonic: {0}")]
    Mnemonic(String),
    #[error("invalid derivation path: {0}")]
    Path(#[from] PathError),
    #[error(
        "invalid identity name {0:?}: 1 to 64 characters from A-Z a-z 0-9 . _ @ -, \
         not one of the reserved purpose names"
    )]
    InvalidName(String),
    #[error("the vault holds {} identities already", file::MAX_IDENTITIES)]
    TooManyIdentities,
    #[error("the system random source failed: {0}")]
    Random(String),
    #[error("encrypting the vault failed")]
    Encrypt,
}

/// The purpose index at the root of every alknet path: "alk" in ASCII (0x616c6b).
pub const ALKNET_PURPOSE: u32 = 0x0061_6c6b;
/// Second path component per purpose.
pub const BRANCH_NODE_TLS: u32 = 0;
pub const BRANCH_SSH_HOST: u32 = 1;
pub const BRANCH_PKARR: u32 = 2;
pub const BRANCH_CLIENT: u32 = 3;
pub const BRANCH_QUIC_HOST: u32 = 4;

/// Names that select a node purpose in `derive NAME`; no client identity may take them.
pub const NAME_NODE_TLS: &str = "node-tls";
pub const NAME_SSH_HOST: &str = "ssh-host";
pub const NAME_PKARR: &str = "pkarr";
pub const NAME_QUIC_HOST: &str = "quic-host";
pub const RESERVED_NAMES: [&str; 4] = [NAME_NODE_TLS, NAME_SSH_HOST, NAME_PKARR, NAME_QUIC_HOST];

/// Longest identity name (as peer names).
pub const MAX_NAME_LEN: usize = 64;

/// What a key is for; each purpose has its own path, so keys never repeat across them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPurpose {
    /// The node's TLS certificate key: `m/6384747'/0'/0'`.
    NodeTls,
    /// The node's SSH host key: `m/6384747'/1'/0'`.
    SshHost,
    /// The key that signs the node's pkarr / DNS records: `m/6384747'/2'/0'`.
    Pkarr,
    /// The node's QUIC host key (its private key's 32 bytes are the secret the stateless
    /// reset and address-token keys are derived from): `m/6384747'/4'/0'`.
    QuicHost,
    /// A named client identity (SSH user key, TLS client certificate):
    /// `m/6384747'/3'/N'` with N the first four bytes of SHA-256("alknet client
    /// identity\0" || name), big-endian, top bit cleared.
    Client(String),
}

impl KeyPurpose {
    /// The purpose `name` selects: a reserved node purpose, else a client identity.
    pub fn from_name(name: &str) -> Result<Self, VaultError> {
        Ok(match name {
            NAME_NODE_TLS => Self::NodeTls,
            NAME_SSH_HOST => Self::SshHost,
            NAME_PKARR => Self::Pkarr,
            NAME_QUIC_HOST => Self::QuicHost,
            _ if valid_identity_name(name) => Self::Client(name.to_string()),
            _ => return Err(VaultError::InvalidName(name.to_string())),
        })
    }

    /// The name `derive` and `list` show.
    pub fn name(&self) -> &str {
        match self {
            Self::NodeTls => NAME_NODE_TLS,
            Self::SshHost => NAME_SSH_HOST,
            Self::Pkarr => NAME_PKARR,
            Self::QuicHost => NAME_QUIC_HOST,
            Self::Client(n) => n,
        }
    }

    /// The SLIP-0010 path of this purpose.
    pub fn path(&self) -> DerivationPath {
        let (branch, index) = match self {
            Self::NodeTls => (BRANCH_NODE_TLS, 0),
            Self::SshHost => (BRANCH_SSH_HOST, 0),
            Self::Pkarr => (BRANCH_PKARR, 0),
            Self::QuicHost => (BRANCH_QUIC_HOST, 0),
            Self::Client(name) => (BRANCH_CLIENT, client_index(name)),
        };
        DerivationPath::new(vec![ALKNET_PURPOSE, branch, index])
            .expect("indices are below 2^31 by construction")
    }
}

/// The path index of a client identity name (see [`KeyPurpose::Client`]).
fn client_index(name: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(b"alknet client identity\0");
    h.update(name.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) & !slip10::HARDENED
}

/// Whether `name` may name a client identity: 1 to 64 characters from
/// `A-Z a-z 0-9 . _ @ -`, not a reserved purpose name.
pub fn valid_identity_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
        && !RESERVED_NAMES.contains(&name)
}

/// A client identity recorded in the vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    pub name: String,
    pub path: DerivationPath,
    /// Unix seconds.
    pub created_at: u64,
}

/// A derived Ed25519 key pair. The private half is zeroized on drop and hidden from
/// `Debug`.
pub struct Ed25519Key {
    path: DerivationPath,
    private: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Key")
            .field("path", &self.path)
            .field("public", &hex::encode(&self.public))
            .finish_non_exhaustive()
    }
}

impl Ed25519Key {
    fn from_extended(path: DerivationPath, key: &ExtendedKey) -> Self {
        Self {
            path,
            private: Zeroizing::new(*key.private_key()),
            public: key.public_key(),
        }
    }

    /// The derivation path the key came from.
    pub fn path(&self) -> &DerivationPath {
        &self.path
    }

    /// The 32-byte private key (the RFC 8032 secret seed): what OpenSSH, PKCS#8 and
    /// `ring` take.
    pub fn private_key(&self) -> &[u8; 32] {
        &self.private
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// An Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        ed25519_dalek::SigningKey::from_bytes(&self.private)
            .sign(message)
            .to_bytes()
    }
}

/// Whether `signature` is a valid (strict RFC 8032) Ed25519 signature of `message` by
/// `public_key`.
pub fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
        .is_ok()
}

/// An unlocked vault: the seed in memory (zeroized on drop) and the file key, so that
/// recording an identity does not run Argon2id again.
pub struct Vault {
    path: PathBuf,
    params: KdfParams,
    salt: [u8; file::SALT_LEN],
    file_key: Zeroizing<[u8; 32]>,
    body: file::Body,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .field("params", &self.params)
            .field("identities", &self.body.identities)
            .finish_non_exhaustive()
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).map_err(|e| VaultError::Random(e.to_string()))?;
    Ok(out)
}

/// The AES-256 key of a vault: Argon2id of the password with the file's salt.
pub fn stretch_password(
    password: &[u8],
    salt: &[u8; file::SALT_LEN],
    params: &KdfParams,
) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    params.validate().map_err(VaultError::Kdf)?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(params.memory_kib, params.iterations, params.lanes, Some(32))
            .map_err(|e| VaultError::Kdf(e.to_string()))?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password, salt, key.as_mut())
        .map_err(|e| VaultError::Kdf(e.to_string()))?;
    Ok(key)
}

impl Vault {
    /// Creates the vault file at `path` (never overwriting one) holding `mnemonic`'s
    /// entropy and its seed under `bip39_passphrase` (empty for none), encrypted under
    /// `password`.
    pub fn create(
        path: &Path,
        mnemonic: &Mnemonic,
        bip39_passphrase: &str,
        password: &[u8],
        params: KdfParams,
    ) -> Result<Self, VaultError> {
        if path.exists() {
            return Err(VaultError::Exists { path: path.into() });
        }
        let (entropy_array, entropy_len) = mnemonic.to_entropy_array();
        let entropy_array = Zeroizing::new(entropy_array);
        let salt = random::<{ file::SALT_LEN }>()?;
        let file_key = stretch_password(password, &salt, &params)?;
        let vault = Self {
            path: path.into(),
            params,
            salt,
            file_key,
            body: file::Body {
                entropy: Zeroizing::new(entropy_array[..entropy_len].to_vec()),
                seed: Zeroizing::new(mnemonic.to_seed(bip39_passphrase)),
                bip39_passphrase_used: !bip39_passphrase.is_empty(),
                created_at: now_unix(),
                identities: Vec::new(),
            },
        };
        vault.save(false)?;
        Ok(vault)
    }

    /// Opens and decrypts the vault at `path`. Nothing is written.
    pub fn open(path: &Path, password: &[u8]) -> Result<Self, VaultError> {
        let io = |source| VaultError::Io {
            path: path.into(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > file::MAX_FILE_LEN as u64 {
            return Err(VaultError::Format {
                path: path.into(),
                source: FormatError::TooLarge,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let envelope = file::parse_envelope(&bytes).map_err(|source| VaultError::Format {
            path: path.into(),
            source,
        })?;
        let file_key = stretch_password(password, &envelope.salt, &envelope.params)?;
        let plaintext = Zeroizing::new(
            Aes256Gcm::new(&(*file_key).into())
                .decrypt(
                    &envelope.nonce.into(),
                    Payload {
                        msg: envelope.ciphertext,
                        aad: envelope.header,
                    },
                )
                .map_err(|_| VaultError::WrongPassword { path: path.into() })?,
        );
        let body = file::decode_body(&plaintext).map_err(|reason| VaultError::Corrupt {
            path: path.into(),
            reason,
        })?;
        Ok(Self {
            path: path.into(),
            params: envelope.params,
            salt: envelope.salt,
            file_key,
            body,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kdf_params(&self) -> KdfParams {
        self.params
    }

    /// Unix seconds when the vault was made.
    pub fn created_at(&self) -> u64 {
        self.body.created_at
    }

    /// Whether the seed was made with a BIP39 passphrase (needed again to restore).
    pub fn bip39_passphrase_used(&self) -> bool {
        self.body.bip39_passphrase_used
    }

    /// The client identities recorded so far.
    pub fn identities(&self) -> &[IdentityRecord] {
        &self.body.identities
    }

    /// The mnemonic's words, for `show-mnemonic`.
    pub fn mnemonic_words(&self) -> Result<Zeroizing<String>, VaultError> {
        let m = Mnemonic::from_entropy(&self.body.entropy)
            .map_err(|e| VaultError::Mnemonic(e.to_string()))?;
        Ok(Zeroizing::new(m.to_string()))
    }

    /// The key of `purpose`.
    pub fn derive(&self, purpose: &KeyPurpose) -> Ed25519Key {
        self.derive_path(&purpose.path())
    }

    /// The key at an explicit SLIP-0010 path.
    pub fn derive_path(&self, path: &DerivationPath) -> Ed25519Key {
        let key = ExtendedKey::derive(self.body.seed.as_ref(), path)
            .expect("a BIP39 seed is 64 bytes, within SLIP-0010's bounds");
        Ed25519Key::from_extended(path.clone(), &key)
    }

    /// Records client identity `name` (its path and the time) and rewrites the file.
    /// Returns false, writing nothing, when it was recorded already.
    pub fn add_identity(&mut self, name: &str) -> Result<bool, VaultError> {
        let KeyPurpose::Client(name) = KeyPurpose::from_name(name)? else {
            return Err(VaultError::InvalidName(name.to_string()));
        };
        if self.body.identities.iter().any(|i| i.name == name) {
            return Ok(false);
        }
        if self.body.identities.len() >= file::MAX_IDENTITIES {
            return Err(VaultError::TooManyIdentities);
        }
        let path = KeyPurpose::Client(name.clone()).path();
        self.body.identities.push(IdentityRecord {
            name,
            path,
            created_at: now_unix(),
        });
        if let Err(e) = self.save(true) {
            self.body.identities.pop();
            return Err(e);
        }
        Ok(true)
    }

    /// Encrypts the body under a fresh nonce and writes the file atomically.
    fn save(&self, replace: bool) -> Result<(), VaultError> {
        let nonce = random::<{ file::NONCE_LEN }>()?;
        let plaintext = file::encode_body(&self.body);
        let ciphertext_len = (plaintext.len() + file::TAG_LEN) as u32;
        let header = file::encode_header(&self.params, &self.salt, &nonce, ciphertext_len);
        let ciphertext = Aes256Gcm::new(&(*self.file_key).into())
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: &plaintext,
                    aad: &header,
                },
            )
            .map_err(|_| VaultError::Encrypt)?;
        write_atomically(&self.path, &file::assemble(&header, &ciphertext), replace)
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one:
/// a temporary file in the same directory (mode 0600), fsync, then a rename over `path`
/// (or, with `replace` false, a hard link that fails if `path` exists), then fsync of
/// the directory. The directory is created (mode 0700) if missing.
pub fn write_atomically(path: &Path, bytes: &[u8], replace: bool) -> Result<(), VaultError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| VaultError::Io { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io(&dir))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vault".into());
    let tag = hex::encode(&random::<6>()?);
    let tmp = dir.join(format!(".{file_name}.{tag}.tmp"));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        if replace {
            std::fs::rename(&tmp, path).map_err(io(path))?;
        } else {
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(VaultError::Exists { path: path.into() })
                }
                Err(e) => return Err(io(path)(e)),
            }
            std::fs::remove_file(&tmp).map_err(io(&tmp))?;
        }
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cheapest parameters a file may have: keeps the tests fast.
    const TEST_PARAMS: KdfParams = KdfParams {
        memory_kib: file::MIN_KDF_MEMORY_KIB,
        iterations: 1,
        lanes: 1,
    };

    const WORDS: &str = "legal winner thank year wave sausage worth useful legal winner thank \
                         yellow";

    fn new_vault(dir: &Path, passphrase: &str) -> Vault {
        let m = parse_mnemonic(WORDS).expect("words");
        Vault::create(&dir.join("vault"), &m, passphrase, b"pw", TEST_PARAMS).expect("create")
    }

    #[test]
    fn create_open_derive_and_record_identities() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut v = new_vault(dir.path(), "");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(v.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(v.mnemonic_words().expect("words").as_str(), WORDS);
        assert!(!v.bip39_passphrase_used());

        let tls = v.derive(&KeyPurpose::NodeTls);
        assert_eq!(tls.path().to_string(), "m/6384747'/0'/0'");
        assert!(v.add_identity("alice").expect("add"));
        assert!(!v.add_identity("alice").expect("again"), "recorded once");
        assert!(v.add_identity("node-tls").is_err(), "reserved");
        assert!(v.add_identity("a b").is_err());

        let again = Vault::open(v.path(), b"pw").expect("open");
        assert_eq!(again.identities().len(), 1);
        assert_eq!(again.identities()[0].name, "alice");
        assert_eq!(
            again.identities()[0].path,
            KeyPurpose::Client("alice".into()).path()
        );
        assert_eq!(
            again.derive(&KeyPurpose::NodeTls).public_key(),
            tls.public_key()
        );
        assert_eq!(again.kdf_params(), TEST_PARAMS);
        // no temporary file left behind
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["vault"]);
        // a vault is never overwritten
        let m = parse_mnemonic(WORDS).expect("words");
        let e = Vault::create(v.path(), &m, "", b"pw", TEST_PARAMS).expect_err("exists");
        assert!(matches!(e, VaultError::Exists { .. }), "{e}");
    }

    #[test]
    fn keys_depend_on_words_passphrase_and_purpose_only() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let (va, vb) = (new_vault(a.path(), ""), new_vault(b.path(), ""));
        let purposes = [
            KeyPurpose::NodeTls,
            KeyPurpose::SshHost,
            KeyPurpose::Pkarr,
            KeyPurpose::QuicHost,
            KeyPurpose::Client("alice".into()),
            KeyPurpose::Client("bob".into()),
        ];
        let mut seen = std::collections::HashSet::new();
        for p in &purposes {
            let k = va.derive(p);
            assert_eq!(k.public_key(), vb.derive(p).public_key(), "{p:?}");
            assert!(seen.insert(*k.public_key()), "{p:?} repeats a key");
        }
        // the 25th word gives other keys
        let c = tempfile::tempdir().expect("tempdir");
        let vc = new_vault(c.path(), "TREZOR");
        assert!(vc.bip39_passphrase_used());
        assert_ne!(
            vc.derive(&KeyPurpose::NodeTls).public_key(),
            va.derive(&KeyPurpose::NodeTls).public_key()
        );
        // the seed is BIP39's: vector 2 of trezor/python-mnemonic with "TREZOR"
        let path: DerivationPath = "m".parse().expect("m");
        let master = ExtendedKey::master(
            &hex::decode(
                "2e8905819b8723fe2c1d161860e5ee1830318dbf49a83bd451cfb8440c28bd6fa457fe1296106559a3c80937a1c1069be3a3a5bd381ee6260e8d9739fce1f607",
            )
            .expect("hex"),
        )
        .expect("master");
        assert_eq!(vc.derive_path(&path).public_key(), &master.public_key());
    }

    #[test]
    fn signatures_verify_and_forgeries_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = new_vault(dir.path(), "");
        let k = v.derive(&KeyPurpose::Client("alice".into()));
        let sig = k.sign(b"hello");
        assert!(verify(k.public_key(), b"hello", &sig));
        assert!(!verify(k.public_key(), b"hellO", &sig));
        let other = v.derive(&KeyPurpose::NodeTls);
        assert!(!verify(other.public_key(), b"hello", &sig));
        assert!(!format!("{k:?}").contains(&hex::encode(k.private_key())));
    }

    #[test]
    fn bad_files_are_clear_errors_and_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = new_vault(dir.path(), "");
        let path = v.path().to_path_buf();
        let original = std::fs::read(&path).expect("read");

        let e = Vault::open(&path, b"wrong").expect_err("wrong password");
        assert!(matches!(e, VaultError::WrongPassword { .. }), "{e}");
        assert!(e.to_string().contains("wrong password"), "{e}");
        assert_eq!(std::fs::read(&path).expect("read"), original);

        let check = |bytes: &[u8], want: &str| {
            let p = dir.path().join("bad");
            std::fs::write(&p, bytes).expect("write");
            let e = Vault::open(&p, b"pw").expect_err(want);
            assert!(e.to_string().contains(want), "{want}: {e}");
            assert_eq!(std::fs::read(&p).expect("read"), bytes, "unchanged");
        };
        check(&original[..original.len() - 1], "truncated");
        check(&original[..30], "truncated");
        check(b"", "not a vault file");
        let mut flipped = original.clone();
        flipped[file::HEADER_LEN + 3] ^= 1;
        check(&flipped, "damaged");
        let mut flipped = original.clone();
        flipped[30] ^= 1; // the salt, in the header
        check(&flipped, "damaged");
        let mut future = original.clone();
        future[9] = 9;
        check(&future, "version 9 is not supported");

        // Altered with the checksum recomputed: only the AEAD can tell, and it does.
        for at in [12, 30, 45, file::HEADER_LEN + 1] {
            let mut forged = original[..original.len() - file::CHECKSUM_LEN].to_vec();
            forged[at] ^= 1;
            let sum = Sha256::digest(&forged);
            forged.extend_from_slice(&sum);
            let p = dir.path().join("forged");
            std::fs::write(&p, &forged).expect("write");
            match Vault::open(&p, b"pw") {
                Err(VaultError::WrongPassword { .. }) => {}
                Err(VaultError::Format { .. }) if at == 12 => {} // memory below the minimum
                other => panic!("byte {at}: {other:?}"),
            }
        }
    }

    #[test]
    fn atomic_write_replaces_or_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub").join("f");
        write_atomically(&p, b"one", false).expect("first");
        assert!(matches!(
            write_atomically(&p, b"two", false),
            Err(VaultError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&p).expect("read"), b"one");
        write_atomically(&p, b"two", true).expect("replace");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert_eq!(
            std::fs::read_dir(p.parent().expect("dir"))
                .expect("ls")
                .count(),
            1
        );
    }

    #[test]
    fn identity_names_follow_the_peer_rules() {
        assert!(valid_identity_name("alice@laptop.home-1_x"));
        for bad in [
            "",
            "a b",
            "é",
            "node-tls",
            "ssh-host",
            "pkarr",
            "quic-host",
            &"x".repeat(65),
        ] {
            assert!(!valid_identity_name(bad), "{bad:?}");
        }
        assert_eq!(
            KeyPurpose::from_name("ssh-host").expect("reserved"),
            KeyPurpose::SshHost
        );
        assert_eq!(
            KeyPurpose::Client("alice".into()).path(),
            KeyPurpose::from_name("alice").expect("client").path()
        );
    }
}
