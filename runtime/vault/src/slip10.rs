//! SLIP-0010 key derivation for Ed25519 (satoshilabs/slips, `slip-0010.md`).
//!
//! Ed25519 has only hardened derivation: the master key is
//! `HMAC-SHA512(key = "ed25519 seed", data = seed)`, split into the private key (left 32
//! bytes) and the chain code (right 32 bytes); each child is
//! `HMAC-SHA512(key = chain code, data = 0x00 || private key || ser32(index | 2^31))`.
//! Every intermediate secret is zeroized when dropped.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;
use zeroize::{Zeroize, Zeroizing};

/// The HMAC key of the master-key step for the ed25519 curve.
const ED25519_CURVE_KEY: &[u8] = b"ed25519 seed";

/// The bit that marks an index as hardened (`2^31`).
pub const HARDENED: u32 = 0x8000_0000;

/// Path components allowed in one path: far more than any purpose uses, and a bound for
/// what a vault file or a command line may ask for.
pub const MAX_PATH_DEPTH: usize = 16;

/// Seeds SLIP-0010 accepts: 128 to 512 bits.
pub const MIN_SEED_LEN: usize = 16;
pub const MAX_SEED_LEN: usize = 64;

/// A derivation path: hardened indices below the master key, written `m/44'/0'/1'` (`H`
/// or `h` is accepted for `'`). Indices are stored without the hardened bit.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct DerivationPath(Vec<u32>);

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("a derivation path starts with \"m\"")]
    NoMaster,
    #[error("component {0:?} is not hardened: Ed25519 has only hardened derivation (write {0}')")]
    NotHardened(String),
    #[error("component {0:?} is not an index below 2^31")]
    BadIndex(String),
    #[error("more than {MAX_PATH_DEPTH} components")]
    TooDeep,
}

impl DerivationPath {
    /// A path of these (unhardened) indices; each must be below 2^31.
    pub fn new(indices: Vec<u32>) -> Result<Self, PathError> {
        if indices.len() > MAX_PATH_DEPTH {
            return Err(PathError::TooDeep);
        }
        if let Some(bad) = indices.iter().find(|&&i| i >= HARDENED) {
            return Err(PathError::BadIndex(bad.to_string()));
        }
        Ok(Self(indices))
    }

    /// The indices, without the hardened bit.
    pub fn indices(&self) -> &[u32] {
        &self.0
    }
}

impl FromStr for DerivationPath {
    type Err = PathError;

    fn from_str(text: &str) -> Result<Self, PathError> {
        let mut parts = text.trim().split('/');
        if parts.next() != Some("m") {
            return Err(PathError::NoMaster);
        }
        let mut indices = Vec::new();
        for part in parts {
            let Some(digits) = part
                .strip_suffix('\'')
                .or_else(|| part.strip_suffix('H'))
                .or_else(|| part.strip_suffix('h'))
            else {
                return Err(PathError::NotHardened(part.to_string()));
            };
            // digits only: no sign, no spaces, no empty component
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(PathError::BadIndex(part.to_string()));
            }
            let index: u32 = digits
                .parse()
                .map_err(|_| PathError::BadIndex(part.to_string()))?;
            if index >= HARDENED {
                return Err(PathError::BadIndex(part.to_string()));
            }
            if indices.len() == MAX_PATH_DEPTH {
                return Err(PathError::TooDeep);
            }
            indices.push(index);
        }
        Ok(Self(indices))
    }
}

impl fmt::Display for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("m")?;
        for i in &self.0 {
            write!(f, "/{i}'")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DerivationPath({self})")
    }
}

/// A private key and its chain code. Both are zeroized on drop; `Debug` shows neither.
pub struct ExtendedKey {
    private: Zeroizing<[u8; 32]>,
    chain_code: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for ExtendedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExtendedKey(<secret>)")
    }
}

impl ExtendedKey {
    /// The master key of `seed` (16 to 64 bytes; a BIP39 seed is 64).
    pub fn master(seed: &[u8]) -> Result<Self, SeedLengthError> {
        if !(MIN_SEED_LEN..=MAX_SEED_LEN).contains(&seed.len()) {
            return Err(SeedLengthError(seed.len()));
        }
        Ok(Self::split(hmac_sha512(ED25519_CURVE_KEY, &[seed])))
    }

    /// The hardened child `index` (given without the hardened bit, below 2^31).
    pub fn child(&self, index: u32) -> Self {
        let ser = (index | HARDENED).to_be_bytes();
        Self::split(hmac_sha512(
            self.chain_code.as_ref(),
            &[&[0u8], self.private.as_ref(), &ser],
        ))
    }

    /// The key at `path` below the master key of `seed`.
    pub fn derive(seed: &[u8], path: &DerivationPath) -> Result<Self, SeedLengthError> {
        let mut key = Self::master(seed)?;
        for &index in path.indices() {
            key = key.child(index);
        }
        Ok(key)
    }

    /// The 32-byte Ed25519 private key (the RFC 8032 seed of the signing key).
    pub fn private_key(&self) -> &[u8; 32] {
        &self.private
    }

    pub fn chain_code(&self) -> &[u8; 32] {
        &self.chain_code
    }

    /// The Ed25519 public key of [`Self::private_key`].
    pub fn public_key(&self) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&self.private)
            .verifying_key()
            .to_bytes()
    }

    fn split(mut i: [u8; 64]) -> Self {
        let mut private = Zeroizing::new([0u8; 32]);
        let mut chain_code = Zeroizing::new([0u8; 32]);
        private.copy_from_slice(&i[..32]);
        chain_code.copy_from_slice(&i[32..]);
        i.zeroize();
        Self {
            private,
            chain_code,
        }
    }
}

/// A seed outside SLIP-0010's 128 to 512 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a seed is 16 to 64 bytes, not {0}")]
pub struct SeedLengthError(pub usize);

/// HMAC-SHA512 of the concatenated `parts`. The caller zeroizes the result.
fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> [u8; 64] {
    let mut mac =
        <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    let mut bytes = mac.finalize().into_bytes();
    let mut out = [0u8; 64];
    out.copy_from_slice(&bytes);
    bytes.as_mut_slice().zeroize();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    /// "Test vector 1 for ed25519" and "Test vector 2 for ed25519" of SLIP-0010, checked
    /// in verbatim (source named in the file).
    const VECTORS: &str = include_str!("../tests/data/slip10-ed25519-vectors.txt");

    #[test]
    fn slip10_ed25519_test_vectors_1_and_2() {
        let mut seed: Vec<u8> = Vec::new();
        let mut checked = 0;
        for line in VECTORS.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(s) = line.strip_prefix("seed ") {
                seed = hex::decode(s).expect("seed hex");
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 5, "{line}");
            // the file writes hardened indices as "0H", as the SLIP does
            let path: DerivationPath = fields[0].parse().expect("path");
            let key = ExtendedKey::derive(&seed, &path).expect("derive");
            assert_eq!(
                hex::encode(key.chain_code()),
                fields[2],
                "chain code {line}"
            );
            assert_eq!(hex::encode(key.private_key()), fields[3], "private {line}");
            // SLIP-0010 writes Ed25519 public keys with a leading 00 byte
            assert_eq!(
                format!("00{}", hex::encode(&key.public_key())),
                fields[4],
                "public {line}"
            );
            // (the fingerprint column is HASH160 of the parent key, a BIP32 detail we do
            // not use)
            checked += 1;
        }
        assert_eq!(checked, 12, "both vectors, six chains each");
    }

    #[test]
    fn paths_parse_and_print() {
        let p: DerivationPath = "m/44'/0h/2147483647H".parse().expect("parse");
        assert_eq!(p.indices(), [44, 0, 2147483647]);
        assert_eq!(p.to_string(), "m/44'/0'/2147483647'");
        assert_eq!(
            "m".parse::<DerivationPath>().expect("m").indices(),
            [] as [u32; 0]
        );
        assert_eq!("44'".parse::<DerivationPath>(), Err(PathError::NoMaster));
        assert!(matches!(
            "m/44".parse::<DerivationPath>(),
            Err(PathError::NotHardened(_))
        ));
        for bad in ["m/2147483648'", "m/-1'", "m/'", "m/+1'", "m/1 '", "m//1'"] {
            assert!(bad.parse::<DerivationPath>().is_err(), "{bad}");
        }
        let deep = format!("m{}", "/1'".repeat(MAX_PATH_DEPTH + 1));
        assert_eq!(deep.parse::<DerivationPath>(), Err(PathError::TooDeep));
        assert!(DerivationPath::new(vec![HARDENED]).is_err());
    }

    #[test]
    fn seed_length_is_checked() {
        assert_eq!(
            ExtendedKey::master(&[0; 15]).map(|_| ()),
            Err(SeedLengthError(15))
        );
        assert!(ExtendedKey::master(&[0; 65]).is_err());
        assert!(ExtendedKey::master(&[0; 64]).is_ok());
    }
}
