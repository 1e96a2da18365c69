//! The vault file: a versioned header (which also carries the Argon2id parameters and
//! salt), the AES-256-GCM ciphertext of the body with the header as associated data, and
//! a SHA-256 trailer that tells accidental damage apart from a wrong password.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "ALKVAULT"
//!      8     2  format version, big-endian (1)
//!     10     1  key derivation: 1 = Argon2id v1.3
//!     11     1  cipher: 1 = AES-256-GCM
//!     12     4  Argon2id memory, KiB
//!     16     4  Argon2id iterations
//!     20     4  Argon2id lanes
//!     24    16  salt
//!     40    12  nonce
//!     52     4  ciphertext length (body + 16-byte tag)
//!     56     n  ciphertext
//!   56+n    32  SHA-256 of bytes 0..56+n
//! ```
//!
//! The body (plaintext, version 1):
//!
//! ```text
//!   1  entropy length (16..=32, a multiple of 4)   |  entropy
//!  64  BIP39 seed (the passphrase already applied)
//!   1  1 if a BIP39 passphrase was used, else 0
//!   8  creation time, Unix seconds
//!   2  identity count (at most MAX_IDENTITIES), then per identity:
//!        1 name length | name | 8 creation time | 1 path depth | 4 per index
//! ```

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::slip10::{DerivationPath, MAX_PATH_DEPTH};
use crate::{valid_identity_name, IdentityRecord};

/// First bytes of every vault file.
pub const MAGIC: &[u8; 8] = b"ALKVAULT";
/// The only format version written and read.
pub const FORMAT_VERSION: u16 = 1;
/// Key-derivation id: Argon2id, version 0x13.
pub const KDF_ARGON2ID: u8 = 1;
/// Cipher id: AES-256-GCM.
pub const CIPHER_AES256GCM: u8 = 1;

pub const SALT_LEN: usize = 16;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const CHECKSUM_LEN: usize = 32;
/// Bytes before the ciphertext; all of them are the AEAD's associated data.
pub const HEADER_LEN: usize = 56;

/// Identities one vault records (each is a few dozen bytes).
pub const MAX_IDENTITIES: usize = 4096;
/// Largest body accepted: bounds what a damaged or hostile length field makes us read.
pub const MAX_BODY_LEN: usize = 1 << 20;
/// Largest vault file read.
pub const MAX_FILE_LEN: usize = HEADER_LEN + MAX_BODY_LEN + TAG_LEN + CHECKSUM_LEN;

/// Argon2id cost parameters, stored in the header of each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub lanes: u32,
}

/// Bounds a file's parameters must lie in. The minimum keeps a vault from being made
/// (or downgraded) to something cheap to brute-force; the maximum keeps a damaged or
/// hostile header from asking for more memory than a machine has.
pub const MIN_KDF_MEMORY_KIB: u32 = 8 * 1024;
pub const MAX_KDF_MEMORY_KIB: u32 = 4 * 1024 * 1024;
pub const MAX_KDF_ITERATIONS: u32 = 64;
pub const MAX_KDF_LANES: u32 = 16;

impl KdfParams {
    /// The default: 64 MiB, 3 passes, 1 lane (RFC 9106's second recommended option, with
    /// one lane because the `argon2` crate computes lanes one after the other). About a
    /// quarter of a second per unlock on one core; see the README for measurements.
    pub const DEFAULT: Self = Self {
        memory_kib: 64 * 1024,
        iterations: 3,
        lanes: 1,
    };

    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_KDF_MEMORY_KIB..=MAX_KDF_MEMORY_KIB).contains(&self.memory_kib) {
            return Err(format!(
                "Argon2id memory {} KiB is outside {MIN_KDF_MEMORY_KIB}..={MAX_KDF_MEMORY_KIB}",
                self.memory_kib
            ));
        }
        if !(1..=MAX_KDF_ITERATIONS).contains(&self.iterations) {
            return Err(format!(
                "Argon2id iterations {} are outside 1..={MAX_KDF_ITERATIONS}",
                self.iterations
            ));
        }
        if !(1..=MAX_KDF_LANES).contains(&self.lanes) {
            return Err(format!(
                "Argon2id lanes {} are outside 1..={MAX_KDF_LANES}",
                self.lanes
            ));
        }
        Ok(())
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What is wrong with a file before any password is tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a vault file (no ALKVAULT magic)")]
    NotAVault,
    #[error(
        "vault format version {0} is not supported (this build reads version {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u16),
    #[error("the file is truncated")]
    Truncated,
    #[error("the file is larger than a vault can be ({MAX_FILE_LEN} bytes)")]
    TooLarge,
    #[error("{0} bytes follow the end of the vault")]
    TrailingData(usize),
    #[error("unknown {what} id {id}")]
    UnknownAlgorithm { what: &'static str, id: u8 },
    #[error("{0}")]
    BadParameters(String),
    #[error("the file is damaged: its checksum does not match")]
    Damaged,
}

/// A parsed envelope: the header fields and the ciphertext, not yet decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub params: KdfParams,
    pub salt: [u8; SALT_LEN],
    pub nonce: [u8; NONCE_LEN],
    /// The header bytes: the associated data of the ciphertext.
    pub header: &'a [u8],
    pub ciphertext: &'a [u8],
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

/// Parses the envelope of an untrusted file: every length and parameter is checked, and
/// the checksum too, before a password is tried.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope<'_>, FormatError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(FormatError::NotAVault);
    }
    if bytes.len() < 10 {
        return Err(FormatError::Truncated);
    }
    // the version first: a later format may lay out everything after it differently
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    if bytes.len() > MAX_FILE_LEN {
        return Err(FormatError::TooLarge);
    }
    if bytes.len() < HEADER_LEN + TAG_LEN + CHECKSUM_LEN {
        return Err(FormatError::Truncated);
    }
    let ciphertext_len = be_u32(bytes, 52) as usize;
    let end = HEADER_LEN
        .checked_add(ciphertext_len)
        .and_then(|n| n.checked_add(CHECKSUM_LEN))
        .ok_or(FormatError::TooLarge)?;
    if end > MAX_FILE_LEN {
        return Err(FormatError::TooLarge);
    }
    if bytes.len() < end {
        return Err(FormatError::Truncated);
    }
    if bytes.len() > end {
        return Err(FormatError::TrailingData(bytes.len() - end));
    }
    let body_end = end - CHECKSUM_LEN;
    if Sha256::digest(&bytes[..body_end]).as_slice() != &bytes[body_end..] {
        return Err(FormatError::Damaged);
    }
    if bytes[10] != KDF_ARGON2ID {
        return Err(FormatError::UnknownAlgorithm {
            what: "key derivation",
            id: bytes[10],
        });
    }
    if bytes[11] != CIPHER_AES256GCM {
        return Err(FormatError::UnknownAlgorithm {
            what: "cipher",
            id: bytes[11],
        });
    }
    if ciphertext_len < TAG_LEN {
        return Err(FormatError::Truncated);
    }
    let params = KdfParams {
        memory_kib: be_u32(bytes, 12),
        iterations: be_u32(bytes, 16),
        lanes: be_u32(bytes, 20),
    };
    params.validate().map_err(FormatError::BadParameters)?;
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&bytes[24..40]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes[40..52]);
    Ok(Envelope {
        params,
        salt,
        nonce,
        header: &bytes[..HEADER_LEN],
        ciphertext: &bytes[HEADER_LEN..body_end],
    })
}

/// The header of a file with these parameters and a ciphertext of `ciphertext_len` bytes.
pub fn encode_header(
    params: &KdfParams,
    salt: &[u8; SALT_LEN],
    nonce: &[u8; NONCE_LEN],
    ciphertext_len: u32,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    h[10] = KDF_ARGON2ID;
    h[11] = CIPHER_AES256GCM;
    h[12..16].copy_from_slice(&params.memory_kib.to_be_bytes());
    h[16..20].copy_from_slice(&params.iterations.to_be_bytes());
    h[20..24].copy_from_slice(&params.lanes.to_be_bytes());
    h[24..40].copy_from_slice(salt);
    h[40..52].copy_from_slice(nonce);
    h[52..56].copy_from_slice(&ciphertext_len.to_be_bytes());
    h
}

/// Header, ciphertext and checksum as one file.
pub fn assemble(header: &[u8; HEADER_LEN], ciphertext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len() + CHECKSUM_LEN);
    out.extend_from_slice(header);
    out.extend_from_slice(ciphertext);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// The decrypted body: the secrets and the metadata.
pub struct Body {
    pub entropy: Zeroizing<Vec<u8>>,
    pub seed: Zeroizing<[u8; 64]>,
    pub bip39_passphrase_used: bool,
    pub created_at: u64,
    pub identities: Vec<IdentityRecord>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("secrets", &"<secret>")
            .field("created_at", &self.created_at)
            .field("identities", &self.identities)
            .finish()
    }
}

/// Serializes a body into a buffer that is zeroized when dropped.
pub fn encode_body(body: &Body) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(128 + body.identities.len() * 64));
    out.push(body.entropy.len() as u8);
    out.extend_from_slice(&body.entropy);
    out.extend_from_slice(body.seed.as_ref());
    out.push(u8::from(body.bip39_passphrase_used));
    out.extend_from_slice(&body.created_at.to_be_bytes());
    out.extend_from_slice(&(body.identities.len() as u16).to_be_bytes());
    for id in &body.identities {
        out.push(id.name.len() as u8);
        out.extend_from_slice(id.name.as_bytes());
        out.extend_from_slice(&id.created_at.to_be_bytes());
        out.push(id.path.indices().len() as u8);
        for i in id.path.indices() {
            out.extend_from_slice(&i.to_be_bytes());
        }
    }
    out
}

/// A cursor over untrusted bytes whose reads fail instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or("the body ends early")?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let mut x = [0u8; 4];
        x.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(x))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut x = [0u8; 8];
        x.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(x))
    }
}

/// Parses a decrypted body. It was authenticated, so an error here means a bug or a file
/// written by a different program; it is still parsed as untrusted input.
pub fn decode_body(bytes: &[u8]) -> Result<Body, String> {
    let mut r = Reader { bytes, at: 0 };
    let entropy_len = r.u8()? as usize;
    if !(16..=32).contains(&entropy_len) || !entropy_len.is_multiple_of(4) {
        return Err(format!("entropy of {entropy_len} bytes"));
    }
    let entropy = Zeroizing::new(r.take(entropy_len)?.to_vec());
    let mut seed = Zeroizing::new([0u8; 64]);
    seed.copy_from_slice(r.take(64)?);
    let bip39_passphrase_used = match r.u8()? {
        0 => false,
        1 => true,
        other => return Err(format!("passphrase flag {other}")),
    };
    let created_at = r.u64()?;
    let count = r.u16()? as usize;
    if count > MAX_IDENTITIES {
        return Err(format!("{count} identities (at most {MAX_IDENTITIES})"));
    }
    let mut identities = Vec::with_capacity(count);
    for _ in 0..count {
        let name_len = r.u8()? as usize;
        let name = std::str::from_utf8(r.take(name_len)?)
            .map_err(|_| "an identity name is not UTF-8".to_string())?;
        if !valid_identity_name(name) {
            return Err(format!("invalid identity name {name:?}"));
        }
        let id_created_at = r.u64()?;
        let depth = r.u8()? as usize;
        if depth > MAX_PATH_DEPTH {
            return Err(format!("a path of {depth} components"));
        }
        let mut indices = Vec::with_capacity(depth);
        for _ in 0..depth {
            indices.push(r.u32()?);
        }
        let path = DerivationPath::new(indices).map_err(|e| e.to_string())?;
        if identities.iter().any(|i: &IdentityRecord| i.name == name) {
            return Err(format!("identity {name:?} recorded twice"));
        }
        identities.push(IdentityRecord {
            name: name.to_string(),
            path,
            created_at: id_created_at,
        });
    }
    if r.at != bytes.len() {
        return Err(format!("{} bytes after the body", bytes.len() - r.at));
    }
    Ok(Body {
        entropy,
        seed,
        bip39_passphrase_used,
        created_at,
        identities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_body() -> Body {
        Body {
            entropy: Zeroizing::new(vec![7; 32]),
            seed: Zeroizing::new([9; 64]),
            bip39_passphrase_used: true,
            created_at: 1_700_000_000,
            identities: vec![IdentityRecord {
                name: "alice@laptop".into(),
                path: "m/1'/2'".parse().expect("path"),
                created_at: 1_700_000_001,
            }],
        }
    }

    #[test]
    fn body_round_trips_and_rejects_garbage() {
        let bytes = encode_body(&sample_body());
        let back = decode_body(&bytes).expect("decode");
        assert_eq!(back.entropy.as_slice(), [7; 32]);
        assert_eq!(back.seed.as_ref(), &[9; 64]);
        assert!(back.bip39_passphrase_used);
        assert_eq!(back.identities, sample_body().identities);
        for cut in 0..bytes.len() {
            assert!(decode_body(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(decode_body(&longer).is_err());
    }

    fn sample_file() -> Vec<u8> {
        let ct = [0xaa; 40];
        let h = encode_header(&KdfParams::DEFAULT, &[1; 16], &[2; 12], ct.len() as u32);
        assemble(&h, &ct)
    }

    #[test]
    fn envelope_parses_and_every_damage_is_named() {
        let file = sample_file();
        let env = parse_envelope(&file).expect("parse");
        assert_eq!(env.params, KdfParams::DEFAULT);
        assert_eq!(env.salt, [1; 16]);
        assert_eq!(env.ciphertext, [0xaa; 40]);
        assert_eq!(env.header.len(), HEADER_LEN);

        assert_eq!(parse_envelope(b"hello"), Err(FormatError::NotAVault));
        assert_eq!(parse_envelope(b""), Err(FormatError::NotAVault));
        for cut in 8..file.len() {
            let e = parse_envelope(&file[..cut]).expect_err("truncated");
            assert_eq!(e, FormatError::Truncated, "cut at {cut}");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert_eq!(parse_envelope(&longer), Err(FormatError::TrailingData(1)));
        for at in 10..file.len() {
            let mut flipped = file.clone();
            flipped[at] ^= 0x40;
            let e = parse_envelope(&flipped).expect_err("flipped");
            assert!(
                matches!(
                    e,
                    FormatError::Damaged
                        | FormatError::Truncated
                        | FormatError::TooLarge
                        | FormatError::TrailingData(_)
                ),
                "byte {at}: {e}"
            );
        }
        let mut future = file.clone();
        future[9] = 2;
        assert_eq!(
            parse_envelope(&future),
            Err(FormatError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn parameters_out_of_bounds_are_refused() {
        let weak = KdfParams {
            memory_kib: 64,
            ..KdfParams::DEFAULT
        };
        let h = encode_header(&weak, &[1; 16], &[2; 12], 16);
        let e = parse_envelope(&assemble(&h, &[0; 16])).expect_err("weak");
        assert!(matches!(e, FormatError::BadParameters(_)), "{e}");
        for bad in [
            KdfParams {
                memory_kib: MAX_KDF_MEMORY_KIB + 1,
                ..KdfParams::DEFAULT
            },
            KdfParams {
                iterations: 0,
                ..KdfParams::DEFAULT
            },
            KdfParams {
                lanes: MAX_KDF_LANES + 1,
                ..KdfParams::DEFAULT
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        KdfParams::DEFAULT.validate().expect("default is valid");
    }
}
