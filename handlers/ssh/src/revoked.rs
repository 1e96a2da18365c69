//! Revoked keys and certificates (`[ssh] revoked_keys`), as sshd's `RevokedKeys`: either
//! an OpenSSH Key Revocation List (`ssh-keygen -k`, format in OpenSSH's PROTOCOL.krl) or
//! a text file of public keys, one per line. Parsed without IO; what a file holds is
//! bounded by its size (the administrator's, not a peer's).

use std::collections::HashSet;

use russh::keys::{Certificate, PublicKey};

/// A KRL starts with these 8 bytes ("SSHKRL\n\0").
const KRL_MAGIC: &[u8; 8] = b"SSHKRL\n\0";
const KRL_FORMAT_VERSION: u32 = 1;

const SECTION_CERTIFICATES: u8 = 1;
const SECTION_EXPLICIT_KEY: u8 = 2;
const SECTION_FINGERPRINT_SHA1: u8 = 3;
const SECTION_SIGNATURE: u8 = 4;
const SECTION_FINGERPRINT_SHA256: u8 = 5;

const CERT_SERIAL_LIST: u8 = 0x20;
const CERT_SERIAL_RANGE: u8 = 0x21;
const CERT_SERIAL_BITMAP: u8 = 0x22;
const CERT_KEY_ID: u8 = 0x23;

/// Certificates revoked under one CA (or any CA: `ca` empty, which only key ids may use).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct CertRevocations {
    /// The CA's key blob; empty for any CA.
    ca: Vec<u8>,
    /// Inclusive serial ranges (single serials and bitmap bits become ranges of one).
    serials: Vec<(u64, u64)>,
    key_ids: HashSet<String>,
}

/// What a revoked keys file revokes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevokedKeys {
    /// Key blobs (the SSH wire encoding of a public key).
    keys: HashSet<Vec<u8>>,
    sha1: HashSet<Vec<u8>>,
    sha256: HashSet<Vec<u8>>,
    certs: Vec<CertRevocations>,
}

/// Why a revoked keys file does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct RevokedKeysError {
    origin: String,
    reason: String,
}

impl RevokedKeys {
    /// Parses a KRL (by its magic) or a text list of public keys; `origin` names the file
    /// in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, RevokedKeysError> {
        let err = |reason: String| RevokedKeysError {
            origin: origin.to_string(),
            reason,
        };
        if bytes.starts_with(KRL_MAGIC) {
            parse_krl(&bytes[KRL_MAGIC.len()..]).map_err(|r| err(format!("KRL: {r}")))
        } else {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| err("neither a KRL nor UTF-8 text".into()))?;
            parse_key_list(text).map_err(err)
        }
    }

    /// Whether `key` (a plain key, or a certificate's key) is revoked.
    pub fn key_revoked(&self, key: &PublicKey) -> bool {
        match key.to_bytes() {
            Ok(blob) => self.blob_revoked(&blob),
            // a key we cannot encode cannot be compared: treat it as revoked
            Err(_) => true,
        }
    }

    fn blob_revoked(&self, blob: &[u8]) -> bool {
        if self.keys.contains(blob) {
            return true;
        }
        if !self.sha1.is_empty() {
            let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, blob);
            if self.sha1.contains(d.as_ref()) {
                return true;
            }
        }
        if !self.sha256.is_empty() {
            let d = ring::digest::digest(&ring::digest::SHA256, blob);
            if self.sha256.contains(d.as_ref()) {
                return true;
            }
        }
        false
    }

    /// Whether `cert` is revoked: its key, its CA's key, its serial under its CA, or its
    /// key id under its CA or any CA (as sshd checks a certificate against a KRL).
    pub fn certificate_revoked(&self, cert: &Certificate) -> bool {
        let (Ok(key), Ok(ca)) = (
            PublicKey::new(cert.public_key().clone(), "").to_bytes(),
            PublicKey::new(cert.signature_key().clone(), "").to_bytes(),
        ) else {
            return true;
        };
        if self.blob_revoked(&key) || self.blob_revoked(&ca) {
            return true;
        }
        self.certs.iter().any(|r| {
            let any_ca = r.ca.is_empty();
            if !any_ca && r.ca != ca {
                return false;
            }
            let by_serial = !any_ca
                && r.serials
                    .iter()
                    .any(|&(lo, hi)| (lo..=hi).contains(&cert.serial()));
            by_serial || r.key_ids.contains(cert.key_id())
        })
    }

    /// Whether it revokes nothing (an empty file, a KRL without sections).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many keys, fingerprints and certificate rules it holds, for the log.
    pub fn len(&self) -> usize {
        self.keys.len()
            + self.sha1.len()
            + self.sha256.len()
            + self
                .certs
                .iter()
                .map(|c| c.serials.len() + c.key_ids.len())
                .sum::<usize>()
    }
}

/// A text list: one OpenSSH public key per line (`TYPE BASE64 [comment]`), blank lines
/// and `#` comments skipped, as sshd takes for `RevokedKeys`.
fn parse_key_list(text: &str) -> Result<RevokedKeys, String> {
    let mut revoked = RevokedKeys::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key =
            PublicKey::from_openssh(line).map_err(|e| format!("line {}: bad key: {e}", i + 1))?;
        let blob = key
            .to_bytes()
            .map_err(|e| format!("line {}: bad key: {e}", i + 1))?;
        revoked.keys.insert(blob);
    }
    Ok(revoked)
}

/// A reader of SSH wire types over a byte slice; every read is bounds-checked.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The KRL after its magic (PROTOCOL.krl): the header, then sections up to an optional
/// signature section, which ends it (signatures are not checked: sshd does not either).
fn parse_krl(body: &[u8]) -> Result<RevokedKeys, String> {
    let mut w = Wire(body);
    let version = w.u32()?;
    if version != KRL_FORMAT_VERSION {
        return Err(format!("format version {version} is not 1"));
    }
    let _krl_version = w.u64()?;
    let _generated = w.u64()?;
    let _flags = w.u64()?;
    let _reserved = w.string()?;
    let _comment = w.string()?;
    let mut revoked = RevokedKeys::default();
    while !w.is_empty() {
        let kind = w.u8()?;
        let data = w.string()?;
        match kind {
            SECTION_CERTIFICATES => revoked.certs.push(parse_cert_section(data)?),
            SECTION_EXPLICIT_KEY => each_string(data, |k| {
                revoked.keys.insert(k.to_vec());
            })?,
            SECTION_FINGERPRINT_SHA1 => each_string(data, |h| {
                revoked.sha1.insert(h.to_vec());
            })?,
            SECTION_FINGERPRINT_SHA256 => each_string(data, |h| {
                revoked.sha256.insert(h.to_vec());
            })?,
            SECTION_SIGNATURE => break,
            other => return Err(format!("unknown section type {other}")),
        }
    }
    Ok(revoked)
}

fn each_string(data: &[u8], mut f: impl FnMut(&[u8])) -> Result<(), String> {
    let mut w = Wire(data);
    while !w.is_empty() {
        f(w.string()?);
    }
    Ok(())
}

fn parse_cert_section(data: &[u8]) -> Result<CertRevocations, String> {
    let mut w = Wire(data);
    let mut rev = CertRevocations {
        ca: w.string()?.to_vec(),
        ..Default::default()
    };
    let _reserved = w.string()?;
    while !w.is_empty() {
        let kind = w.u8()?;
        let mut sub = Wire(w.string()?);
        match kind {
            CERT_SERIAL_LIST => {
                while !sub.is_empty() {
                    let s = sub.u64()?;
                    rev.serials.push((s, s));
                }
            }
            CERT_SERIAL_RANGE => {
                let (lo, hi) = (sub.u64()?, sub.u64()?);
                if lo > hi {
                    return Err(format!("serial range {lo}-{hi} is reversed"));
                }
                rev.serials.push((lo, hi));
            }
            CERT_SERIAL_BITMAP => {
                let offset = sub.u64()?;
                // an mpint: big-endian, bit i from the least significant end is serial
                // offset + i
                let bits = sub.string()?;
                for (i, byte) in bits.iter().rev().enumerate() {
                    for bit in 0..8 {
                        if byte & (1 << bit) != 0 {
                            let s = offset
                                .checked_add((i * 8 + bit) as u64)
                                .ok_or("serial bitmap overflows")?;
                            rev.serials.push((s, s));
                        }
                    }
                }
            }
            CERT_KEY_ID => {
                while !sub.is_empty() {
                    let id = std::str::from_utf8(sub.string()?)
                        .map_err(|_| "a key id is not UTF-8".to_string())?;
                    rev.key_ids.insert(id.to_string());
                }
            }
            other => return Err(format!("unknown certificate section type {other:#x}")),
        }
        if !sub.is_empty() {
            return Err(format!("trailing bytes in certificate section {kind:#x}"));
        }
    }
    if rev.ca.is_empty() && !rev.serials.is_empty() {
        return Err("serials revoked without a CA".into());
    }
    Ok(rev)
}

#[cfg(test)]
mod tests {
    use russh::keys::ssh_key::certificate::Builder;
    use russh::keys::ssh_key::private::Ed25519Keypair;
    use russh::keys::PrivateKey;

    use super::*;

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn blob(k: &PrivateKey) -> Vec<u8> {
        k.public_key().to_bytes().expect("blob")
    }

    fn cert(ca: &PrivateKey, subject: u8, serial: u64, id: &str) -> Certificate {
        let mut b = Builder::new(
            vec![1u8; 16],
            key(subject).public_key().key_data().clone(),
            0,
            u64::MAX,
        )
        .expect("builder");
        b.serial(serial).expect("serial");
        b.key_id(id).expect("id");
        b.valid_principal("alice").expect("principal");
        b.sign(ca).expect("sign")
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s);
    }

    fn section(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
        out.push(kind);
        string(out, data);
    }

    /// A KRL as PROTOCOL.krl lays it out, with `sections` after the header.
    fn krl(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = KRL_MAGIC.to_vec();
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(&7u64.to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        string(&mut out, b"");
        string(&mut out, b"test");
        for (kind, data) in sections {
            section(&mut out, *kind, data);
        }
        out
    }

    fn cert_section(ca: &[u8], subs: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, ca);
        string(&mut out, b"");
        for (kind, data) in subs {
            section(&mut out, *kind, data);
        }
        out
    }

    #[test]
    fn a_text_list_revokes_keys_and_their_certificates() {
        let text = format!(
            "# revoked\n\n{}\n",
            key(1).public_key().to_openssh().expect("openssh")
        );
        let r = RevokedKeys::parse(text.as_bytes(), "list").expect("parses");
        assert!(r.key_revoked(key(1).public_key()));
        assert!(!r.key_revoked(key(2).public_key()));
        // a certificate of the revoked key, and one signed by a revoked CA
        assert!(r.certificate_revoked(&cert(&key(9), 1, 5, "a")));
        assert!(!r.certificate_revoked(&cert(&key(9), 2, 5, "a")));
        assert!(r.certificate_revoked(&cert(&key(1), 2, 5, "a")));
        let e = RevokedKeys::parse(b"# x\nssh-ed25519 AAAA!!\n", "list").expect_err("bad");
        assert!(e.to_string().starts_with("list: line 2: bad key"), "{e}");
    }

    #[test]
    fn a_krl_revokes_by_key_fingerprint_serial_and_key_id() {
        let ca = key(9);
        let mut serials = Vec::new();
        for s in [3u64, 10] {
            serials.extend_from_slice(&s.to_be_bytes());
        }
        let mut range = 100u64.to_be_bytes().to_vec();
        range.extend_from_slice(&200u64.to_be_bytes());
        // bitmap from 1000: bits 0 and 9 → serials 1000 and 1009
        let mut bitmap = 1000u64.to_be_bytes().to_vec();
        string(&mut bitmap, &[0x02, 0x01]);
        let mut ids = Vec::new();
        string(&mut ids, b"lost-laptop");
        let mut any_ids = Vec::new();
        string(&mut any_ids, b"everywhere");
        let mut explicit = Vec::new();
        string(&mut explicit, &blob(&key(4)));
        let mut sha256 = Vec::new();
        string(
            &mut sha256,
            ring::digest::digest(&ring::digest::SHA256, &blob(&key(5))).as_ref(),
        );
        let mut sha1 = Vec::new();
        string(
            &mut sha1,
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &blob(&key(6))).as_ref(),
        );
        let bytes = krl(&[
            (
                SECTION_CERTIFICATES,
                cert_section(
                    &blob(&ca),
                    &[
                        (CERT_SERIAL_LIST, serials),
                        (CERT_SERIAL_RANGE, range),
                        (CERT_SERIAL_BITMAP, bitmap),
                        (CERT_KEY_ID, ids),
                    ],
                ),
            ),
            (
                SECTION_CERTIFICATES,
                cert_section(b"", &[(CERT_KEY_ID, any_ids)]),
            ),
            (SECTION_EXPLICIT_KEY, explicit),
            (SECTION_FINGERPRINT_SHA256, sha256),
            (SECTION_FINGERPRINT_SHA1, sha1),
            (SECTION_SIGNATURE, Vec::new()),
        ]);
        let r = RevokedKeys::parse(&bytes, "krl").expect("parses");
        for serial in [3, 10, 100, 150, 200, 1000, 1009] {
            assert!(
                r.certificate_revoked(&cert(&ca, 1, serial, "x")),
                "{serial}"
            );
        }
        for serial in [0, 4, 99, 201, 1001, 1008, 1010] {
            assert!(
                !r.certificate_revoked(&cert(&ca, 1, serial, "x")),
                "{serial}"
            );
        }
        // serials belong to their CA; key ids to theirs or, in a wildcard section, any
        assert!(!r.certificate_revoked(&cert(&key(8), 1, 3, "x")));
        assert!(r.certificate_revoked(&cert(&ca, 1, 1, "lost-laptop")));
        assert!(!r.certificate_revoked(&cert(&key(8), 1, 1, "lost-laptop")));
        assert!(r.certificate_revoked(&cert(&key(8), 1, 1, "everywhere")));
        // keys: explicit, by SHA-256 and by SHA-1
        for k in [4, 5, 6] {
            assert!(r.key_revoked(key(k).public_key()), "{k}");
            assert!(r.certificate_revoked(&cert(&ca, k, 1, "x")), "{k}");
        }
        assert!(!r.key_revoked(key(7).public_key()));
    }

    #[test]
    fn malformed_krls_are_errors_not_partial_lists() {
        let good = krl(&[(SECTION_EXPLICIT_KEY, Vec::new())]);
        assert!(RevokedKeys::parse(&good, "k").is_ok());
        // every cut inside the header or the section fails; at the section's start it
        // is a whole KRL with no sections
        let header = good.len() - 5;
        for cut in (KRL_MAGIC.len()..good.len()).filter(|&c| c != header) {
            assert!(RevokedKeys::parse(&good[..cut], "k").is_err(), "{cut}");
        }
        assert!(RevokedKeys::parse(&good[..header], "k").is_ok_and(|r| r.is_empty()));
        let mut v2 = good.clone();
        v2[KRL_MAGIC.len() + 3] = 2;
        assert!(RevokedKeys::parse(&v2, "k").is_err());
        let unknown = krl(&[(9, Vec::new())]);
        assert!(RevokedKeys::parse(&unknown, "k").is_err());
        let mut reversed = 5u64.to_be_bytes().to_vec();
        reversed.extend_from_slice(&4u64.to_be_bytes());
        let bad_range = krl(&[(
            SECTION_CERTIFICATES,
            cert_section(&blob(&key(9)), &[(CERT_SERIAL_RANGE, reversed)]),
        )]);
        assert!(RevokedKeys::parse(&bad_range, "k").is_err());
        let wildcard_serial = krl(&[(
            SECTION_CERTIFICATES,
            cert_section(b"", &[(CERT_SERIAL_LIST, 1u64.to_be_bytes().to_vec())]),
        )]);
        assert!(RevokedKeys::parse(&wildcard_serial, "k").is_err());
        assert!(RevokedKeys::parse(&[0xff, 0xfe], "k").is_err());
    }
}
