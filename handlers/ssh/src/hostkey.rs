//! The server's SSH host keys: by default an ed25519 key and an ECDSA P-256 key, generated
//! on first start into the data directory in OpenSSH's private key format (mode 0600), and
//! reused after — as `ssh-keygen -A` prepares sshd, less RSA (slow to generate, and only
//! clients older than OpenSSH 5.7 lack ECDSA; an operator who needs it lists an RSA key in
//! `[ssh] host_keys`). ECDSA is what clients get that cannot use ed25519: OpenSSH in FIPS
//! mode (RHEL's), and SSH libraries without ed25519.

use std::path::{Path, PathBuf};

use russh::keys::ssh_key::private::{EcdsaKeypair, Ed25519Keypair};
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

use alknet_runtime::secret_files::{load_or_generate, write_atomically};

/// File name of the generated ed25519 host key in the data directory (OpenSSH's name).
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
/// File name of the generated ECDSA P-256 host key in the data directory (OpenSSH's name).
pub const ECDSA_HOST_KEY_FILE: &str = "ssh_host_ecdsa_key";

/// Errors loading or creating the host key.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("host key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("host key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("generating a host key: {0}")]
    Random(String),
}

/// Reads an OpenSSH private key file (unencrypted).
pub fn load_host_key(path: &Path) -> Result<PrivateKey, HostKeyError> {
    alknet_runtime::secret_files::warn_if_open_to_others(path, "SSH host key");
    let text = std::fs::read_to_string(path).map_err(|source| HostKeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let key = PrivateKey::from_openssh(text.as_bytes()).map_err(|e| HostKeyError::Key {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if key.is_encrypted() {
        return Err(HostKeyError::Key {
            path: path.to_path_buf(),
            reason: "the key is passphrase-protected; the server cannot use it".into(),
        });
    }
    Ok(key)
}

/// The ed25519 host key in `dir` ([`HOST_KEY_FILE`]), generated if missing; also whether
/// it was generated now.
pub fn load_or_generate_host_key(dir: &Path) -> Result<(PrivateKey, bool), HostKeyError> {
    load_or_generate_key(dir, HOST_KEY_FILE, generate_ed25519)
}

/// The default host keys in `dir`, ed25519 ([`HOST_KEY_FILE`]) then ECDSA P-256
/// ([`ECDSA_HOST_KEY_FILE`]), each generated if missing; also whether any was generated now.
pub fn load_or_generate_host_keys(dir: &Path) -> Result<(Vec<PrivateKey>, bool), HostKeyError> {
    let (ed25519, a) = load_or_generate_key(dir, HOST_KEY_FILE, generate_ed25519)?;
    let (ecdsa, b) = load_or_generate_key(dir, ECDSA_HOST_KEY_FILE, generate_ecdsa_p256)?;
    Ok((vec![ed25519, ecdsa], a || b))
}

/// The key in `dir`'s `file`, made by `generate` and written there (with its `.pub` beside
/// it) if missing; also whether it was generated now.
fn load_or_generate_key(
    dir: &Path,
    file: &str,
    generate: fn() -> Result<PrivateKey, HostKeyError>,
) -> Result<(PrivateKey, bool), HostKeyError> {
    let path = dir.join(file);
    let io = |source| HostKeyError::Io {
        path: path.clone(),
        source,
    };
    // two servers starting at once must end with one key (secret_files says why)
    load_or_generate(
        dir,
        &[&path],
        || load_host_key(&path),
        || {
            let key = generate()?;
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| HostKeyError::Key {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            write_atomically(&path, text.as_bytes(), 0o600).map_err(io)?;
            // the public half beside it, as OpenSSH does, for known_hosts entries
            if let Ok(public) = key.public_key().to_openssh() {
                let _ = write_atomically(
                    &path.with_extension("pub"),
                    format!("{public}\n").as_bytes(),
                    0o644,
                );
            }
            Ok(key)
        },
        io,
    )
}

/// A fresh ed25519 key from the system's CSPRNG.
pub fn generate_ed25519() -> Result<PrivateKey, HostKeyError> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| HostKeyError::Random("the system random source failed".into()))?;
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    seed.fill(0);
    Ok(key)
}

/// A fresh ECDSA P-256 key from the system's CSPRNG.
pub fn generate_ecdsa_p256() -> Result<PrivateKey, HostKeyError> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut scalar = [0u8; 32];
    // a uniformly random 32-byte string is a valid scalar (in 1..n) but for about 2^-32
    // of them; draw again then, as the curve crates' own generation does
    for _ in 0..16 {
        rng.fill(&mut scalar)
            .map_err(|_| HostKeyError::Random("the system random source failed".into()))?;
        let secret = p256::SecretKey::from_slice(&scalar);
        scalar.fill(0);
        if let Ok(private) = secret {
            let public = private.public_key();
            return Ok(PrivateKey::from(EcdsaKeypair::NistP256 {
                public: public.into(),
                private: private.into(),
            }));
        }
    }
    Err(HostKeyError::Random(
        "no valid P-256 scalar in 16 draws".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_keys_are_ed25519_and_ecdsa_made_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (keys, generated) = load_or_generate_host_keys(dir.path()).expect("generate");
        assert!(generated);
        let algorithms: Vec<String> = keys.iter().map(|k| k.algorithm().to_string()).collect();
        assert_eq!(algorithms, ["ssh-ed25519", "ecdsa-sha2-nistp256"]);
        let public =
            std::fs::read_to_string(dir.path().join("ssh_host_ecdsa_key.pub")).expect("ecdsa .pub");
        assert!(public.starts_with("ecdsa-sha2-nistp256 "), "{public}");
        let (again, generated) = load_or_generate_host_keys(dir.path()).expect("reuse");
        assert!(!generated);
        let pk = |k: &Vec<PrivateKey>| k.iter().map(|k| k.public_key().clone()).collect::<Vec<_>>();
        assert_eq!(pk(&again), pk(&keys));
        // an ECDSA key signs and its signature verifies (what a client checks)
        use russh::keys::ssh_key::{HashAlg, SshSig};
        let sig =
            SshSig::sign(&keys[1], "alknet-test", HashAlg::Sha256, b"exchange hash").expect("sign");
        keys[1]
            .public_key()
            .verify("alknet-test", b"exchange hash", &sig)
            .expect("verify");
        // two fresh keys differ
        let a = generate_ecdsa_p256().expect("a");
        let b = generate_ecdsa_p256().expect("b");
        assert_ne!(a.public_key(), b.public_key());
    }

    #[test]
    fn generated_once_then_reused_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let (key, generated) = load_or_generate_host_key(&data).expect("generate");
        assert!(generated);
        let path = data.join(HOST_KEY_FILE);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let (again, generated) = load_or_generate_host_key(&data).expect("reuse");
        assert!(!generated);
        assert_eq!(again.public_key(), key.public_key());
        let public = std::fs::read_to_string(path.with_extension("pub")).expect("pub");
        assert!(public.starts_with("ssh-ed25519 "));
        assert!(crate::auth::openssh_fingerprint(key.public_key()).starts_with("SHA256:"));
    }

    #[test]
    fn servers_starting_at_once_end_with_one_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let starts = std::sync::Barrier::new(8);
        let keys: Vec<(PrivateKey, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        starts.wait();
                        load_or_generate_host_key(&data).expect("load or generate")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let on_disk = load_host_key(&data.join(HOST_KEY_FILE)).expect("reload");
        assert_eq!(keys.iter().filter(|(_, generated)| *generated).count(), 1);
        assert!(keys
            .iter()
            .all(|(k, _)| k.public_key() == on_disk.public_key()));
    }

    #[test]
    fn bad_key_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        std::fs::write(&path, "not a key").expect("write");
        let e = load_host_key(&path).expect_err("garbage");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(load_host_key(&dir.path().join("missing")).is_err());
    }
}
