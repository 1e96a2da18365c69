//! `alknet vault …` and `alknet keygen`: the key vault (crate `alknet-vault`) on the
//! command line, and the conversions of its Ed25519 keys into what the rest of alknet
//! and other tools take: TLS certificates (rustls, `alknet connect --cert/--key`) and
//! OpenSSH keys (`ssh -i`, host keys).
//!
//! Secrets go only where asked: the mnemonic to stdout once at `init` and on
//! `show-mnemonic`, private keys to the files `export-*` and `keygen` are given (mode
//! 0600) or to stdout when `export-ssh` has no `--out`. Nothing secret is logged.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alknet_runtime::tls::TlsIdentity;
use alknet_ssh::russh::keys::ssh_key::private::Ed25519Keypair;
use alknet_ssh::russh::keys::ssh_key::LineEnding;
use alknet_ssh::russh::keys::PrivateKey;
use alknet_vault::{
    hex, DerivationPath, Ed25519Key, KdfParams, KeyPurpose, Vault, WordCount, RESERVED_NAMES,
};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

/// Environment variable holding the vault password (after `--password-file`).
pub const PASSWORD_ENV: &str = "ALKNET_VAULT_PASSWORD";
/// Environment variable holding the BIP39 passphrase for `--bip39-passphrase`.
pub const BIP39_PASSPHRASE_ENV: &str = "ALKNET_BIP39_PASSPHRASE";
/// File name of the vault in the data directory.
pub const DEFAULT_VAULT_FILE: &str = "vault";
/// Largest password file read (a password, not a document).
const MAX_PASSWORD_FILE_LEN: u64 = 4096;
/// Largest mnemonic accepted on stdin by `restore` (24 words fit many times over).
const MAX_MNEMONIC_INPUT: u64 = 4096;
/// Largest message `sign`/`verify` read: they hold it in memory.
const MAX_MESSAGE_LEN: u64 = 64 << 20;

#[derive(Args, Debug)]
pub struct VaultArgs {
    #[command(subcommand)]
    command: VaultCommand,
    /// The vault file (default: `[vault] file` of --config, else `vault` in the data
    /// directory)
    #[arg(long, global = true, value_name = "FILE")]
    vault: Option<PathBuf>,
    /// TOML config file (for `[vault] file` and `data_dir`)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Override `data_dir`
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Read the vault password from this file (else $ALKNET_VAULT_PASSWORD, else a
    /// terminal prompt)
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

/// Options of a new vault (`init`, `restore`).
#[derive(Args, Debug)]
struct NewVaultArgs {
    /// Apply a BIP39 passphrase (the "25th word") to the seed, read from
    /// $ALKNET_BIP39_PASSPHRASE or a prompt. Restoring needs it again
    #[arg(long)]
    bip39_passphrase: bool,
    /// Argon2id memory, MiB
    #[arg(long, default_value_t = KdfParams::DEFAULT.memory_kib / 1024)]
    kdf_memory_mib: u32,
    /// Argon2id passes
    #[arg(long, default_value_t = KdfParams::DEFAULT.iterations)]
    kdf_iterations: u32,
    /// Argon2id lanes
    #[arg(long, default_value_t = KdfParams::DEFAULT.lanes)]
    kdf_lanes: u32,
}

#[derive(Subcommand, Debug)]
enum VaultCommand {
    /// Create a vault from a new mnemonic, printed once on stdout
    Init {
        /// 12 or 24 words
        #[arg(long, default_value_t = 24)]
        words: usize,
        #[command(flatten)]
        new: NewVaultArgs,
    },
    /// Create a vault from a mnemonic read from stdin
    Restore {
        #[command(flatten)]
        new: NewVaultArgs,
    },
    /// List the node keys and the recorded client identities with their fingerprints
    List,
    /// Print a key's public forms: hex, OpenSSH line, SSH and TLS fingerprints. NAME is
    /// node-tls, ssh-host, pkarr, quic-host or a client identity (recorded in the vault)
    Derive {
        #[arg(required_unless_present = "path", conflicts_with = "path")]
        name: Option<String>,
        /// An explicit SLIP-0010 path instead, e.g. "m/44'/0'/0'" (hardened only)
        #[arg(long)]
        path: Option<DerivationPath>,
    },
    /// Write NAME's key as an OpenSSH private key (for `ssh -i`)
    ExportSsh {
        name: String,
        /// Write here (mode 0600, never overwriting) and the public key to FILE.pub;
        /// default stdout
        #[arg(long, short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Write NAME's self-signed Ed25519 certificate and key as PEM (for `alknet connect
    /// --cert/--key`, or tls.cert/tls.key)
    ExportTls {
        name: String,
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Written mode 0600, never overwriting
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Sign stdin (or --input) with NAME's key; prints the signature as hex
    Sign {
        name: String,
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
    },
    /// Check a signature of stdin (or --input) by NAME's key or by --public-key; exit
    /// status 0 if valid, 1 if not
    Verify {
        #[arg(required_unless_present = "public_key", conflicts_with = "public_key")]
        name: Option<String>,
        /// The signer's Ed25519 public key, hex (no vault needed)
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
        /// The signature, hex
        #[arg(long, value_name = "HEX")]
        signature: String,
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
    },
    /// Print the mnemonic (asks for confirmation on a terminal; elsewhere needs --yes)
    ShowMnemonic {
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["ssh", "tls_cert"])))]
pub struct KeygenArgs {
    /// Write a new Ed25519 OpenSSH private key here (mode 0600) and its public key to
    /// FILE.pub
    #[arg(long, value_name = "FILE")]
    ssh: Option<PathBuf>,
    /// Comment of the OpenSSH key
    #[arg(long, default_value = "alknet")]
    comment: String,
    /// Write a new self-signed Ed25519 TLS certificate here (PEM) …
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// … and its private key here (PEM, mode 0600)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// An error for the user: printed after "alknet vault: ", exit status 1.
type CliResult<T> = Result<T, String>;

fn fail(prefix: &str, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("alknet {prefix}: {msg}");
    ExitCode::FAILURE
}

/// Reads a secret: from `file` (one trailing newline removed), else from `env`, else
/// from a prompt on the terminal (twice with `confirm`). Empty secrets are refused.
fn read_secret(
    file: Option<&Path>,
    env: &str,
    what: &str,
    confirm: bool,
) -> CliResult<Zeroizing<String>> {
    let secret = if let Some(path) = file {
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut text = Zeroizing::new(String::new());
        f.take(MAX_PASSWORD_FILE_LEN)
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let trimmed = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        Zeroizing::new(trimmed.to_string())
    } else if let Some(v) = std::env::var_os(env) {
        Zeroizing::new(
            v.into_string()
                .map_err(|_| format!("${env} is not valid UTF-8"))?,
        )
    } else {
        let no_tty = |e: std::io::Error| {
            format!(
                "no {what}: give --password-file FILE or set ${env} (cannot ask on a \
                 terminal: {e})"
            )
        };
        let first =
            Zeroizing::new(rpassword::prompt_password(format!("{what}: ")).map_err(no_tty)?);
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password(format!("{what} (again): ")).map_err(no_tty)?,
            );
            if *again != *first {
                return Err(format!("the two {what}s differ"));
            }
        }
        first
    };
    if secret.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    Ok(secret)
}

/// The vault password for `alknet serve` with `[vault]`: `password_file`, else
/// $ALKNET_VAULT_PASSWORD, else a prompt.
pub fn read_vault_password(password_file: Option<&Path>) -> CliResult<Zeroizing<String>> {
    read_secret(password_file, PASSWORD_ENV, "vault password", false)
}

/// A TLS identity (self-signed, deterministic) for a vault key.
pub fn tls_identity_of(key: &Ed25519Key) -> CliResult<TlsIdentity> {
    TlsIdentity::from_ed25519_private_key(key.private_key(), &[]).map_err(|e| e.to_string())
}

/// The OpenSSH private key of a vault key, with `comment`.
pub fn ssh_key_of(key: &Ed25519Key, comment: &str) -> CliResult<PrivateKey> {
    let mut k = PrivateKey::from(Ed25519Keypair::from_seed(key.private_key()));
    k.set_comment(comment);
    Ok(k)
}

/// The node keys a server takes from its vault.
#[derive(Clone)]
pub struct NodeKeys {
    pub tls: TlsIdentity,
    pub ssh_host: PrivateKey,
    /// The Ed25519 seed of the key the node publishes its pkarr name under
    /// (`m/6384747'/2'/0'`): the same words give the same name on any machine.
    pub pkarr_seed: zeroize::Zeroizing<[u8; 32]>,
    /// The QUIC host key (`m/6384747'/4'/0'`): a node restored from the same words on
    /// another machine answers the old one's clients with resets they accept.
    pub quic_host: alknet_runtime::host_key::QuicHostKey,
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKeys")
            .field("tls", &self.tls.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Unlocks the vault at `path` and derives the node's TLS and SSH host keys.
pub fn node_keys(path: &Path, password_file: Option<&Path>) -> CliResult<NodeKeys> {
    let password = read_vault_password(password_file)?;
    let vault = Vault::open(path, password.as_bytes()).map_err(|e| e.to_string())?;
    Ok(NodeKeys {
        tls: tls_identity_of(&vault.derive(&KeyPurpose::NodeTls))?,
        ssh_host: ssh_key_of(&vault.derive(&KeyPurpose::SshHost), "alknet host key")?,
        pkarr_seed: zeroize::Zeroizing::new(*vault.derive(&KeyPurpose::Pkarr).private_key()),
        quic_host: alknet_runtime::host_key::QuicHostKey::from_bytes(
            *vault.derive(&KeyPurpose::QuicHost).private_key(),
        ),
    })
}

/// Writes `data` to a new file (never overwriting), mode 0600 if `private`.
fn write_new(path: &Path, data: &[u8], private: bool) -> CliResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn read_input(input: Option<&Path>) -> CliResult<Vec<u8>> {
    let mut data = Vec::new();
    let res = match input {
        Some(p) => {
            std::fs::File::open(p).and_then(|f| f.take(MAX_MESSAGE_LEN + 1).read_to_end(&mut data))
        }
        None => std::io::stdin()
            .take(MAX_MESSAGE_LEN + 1)
            .read_to_end(&mut data),
    };
    res.map_err(|e| format!("reading the message: {e}"))?;
    if data.len() as u64 > MAX_MESSAGE_LEN {
        return Err(format!("the message is over {MAX_MESSAGE_LEN} bytes"));
    }
    Ok(data)
}

/// The public forms of a key, one `field: value` per line (what `derive` prints).
fn describe(name: Option<&str>, key: &Ed25519Key) -> CliResult<String> {
    let ssh = ssh_key_of(key, name.unwrap_or("alknet"))?;
    let public_line = ssh.public_key().to_openssh().map_err(|e| e.to_string())?;
    let tls = tls_identity_of(key)?;
    let mut out = String::new();
    if let Some(n) = name {
        out.push_str(&format!("name: {n}\n"));
    }
    out.push_str(&format!("path: {}\n", key.path()));
    out.push_str(&format!("public_key: {}\n", hex::encode(key.public_key())));
    out.push_str(&format!("ssh_public_key: {public_line}\n"));
    out.push_str(&format!(
        "ssh_fingerprint: {}\n",
        alknet_ssh::openssh_fingerprint(ssh.public_key())
    ));
    out.push_str(&format!(
        "ssh_fingerprint_hex: {}\n",
        alknet_ssh::key_fingerprint(ssh.public_key())
    ));
    out.push_str(&format!("tls_fingerprint: {}\n", tls.fingerprint()));
    Ok(out)
}

impl VaultArgs {
    /// `--vault`, else `[vault] file` of the config, else `vault` in the data directory.
    fn vault_path(&self) -> Result<PathBuf, ExitCode> {
        if let Some(v) = &self.vault {
            return Ok(v.clone());
        }
        let cfg = crate::load_config(self.config.clone(), self.data_dir.clone())?;
        Ok(cfg
            .vault
            .file
            .clone()
            .unwrap_or_else(|| cfg.data_dir().join(DEFAULT_VAULT_FILE)))
    }

    fn password(&self, confirm: bool) -> CliResult<Zeroizing<String>> {
        read_secret(
            self.password_file.as_deref(),
            PASSWORD_ENV,
            "vault password",
            confirm,
        )
    }

    fn open(&self, path: &Path) -> CliResult<Vault> {
        let password = self.password(false)?;
        Vault::open(path, password.as_bytes()).map_err(|e| e.to_string())
    }
}

pub fn run(args: VaultArgs) -> ExitCode {
    let path = match args.vault_path() {
        Ok(p) => p,
        Err(code) => return code,
    };
    match run_command(&args, &path) {
        Ok(code) => code,
        Err(msg) => fail("vault", msg),
    }
}

fn create(args: &VaultArgs, path: &Path, new: &NewVaultArgs, words: &str) -> CliResult<Vault> {
    let mnemonic = alknet_vault::parse_mnemonic(words).map_err(|e| e.to_string())?;
    if path.exists() {
        return Err(format!(
            "{} already exists; a vault is never overwritten (move it away first)",
            path.display()
        ));
    }
    let params = KdfParams {
        memory_kib: new.kdf_memory_mib.saturating_mul(1024),
        iterations: new.kdf_iterations,
        lanes: new.kdf_lanes,
    };
    params.validate()?;
    let passphrase = if new.bip39_passphrase {
        read_secret(None, BIP39_PASSPHRASE_ENV, "BIP39 passphrase", true)?
    } else {
        Zeroizing::new(String::new())
    };
    let password = args.password(true)?;
    Vault::create(path, &mnemonic, &passphrase, password.as_bytes(), params)
        .map_err(|e| e.to_string())
}

/// What `init` and `restore` tell on stderr after making a vault.
fn report_created(vault: &Vault) -> CliResult<()> {
    let tls = tls_identity_of(&vault.derive(&KeyPurpose::NodeTls))?;
    let ssh = ssh_key_of(&vault.derive(&KeyPurpose::SshHost), "")?;
    eprintln!("alknet vault: wrote {}", vault.path().display());
    eprintln!("node TLS fingerprint: {}", tls.fingerprint());
    eprintln!(
        "SSH host key fingerprint: {}",
        alknet_ssh::openssh_fingerprint(ssh.public_key())
    );
    Ok(())
}

fn run_command(args: &VaultArgs, path: &Path) -> CliResult<ExitCode> {
    match &args.command {
        VaultCommand::Init { words, new } => {
            let count = WordCount::from_words(*words)
                .ok_or_else(|| format!("--words is 12 or 24, not {words}"))?;
            let mnemonic = alknet_vault::generate_mnemonic(count).map_err(|e| e.to_string())?;
            let phrase = Zeroizing::new(mnemonic.to_string());
            let vault = create(args, path, new, &phrase)?;
            println!("{}", phrase.as_str());
            eprintln!(
                "alknet vault: the {words} words above are the only copy of every key of \
                 this vault outside it: write them down now; they are not shown again \
                 (except by `alknet vault show-mnemonic`)."
            );
            if new.bip39_passphrase {
                eprintln!("alknet vault: restoring also needs the BIP39 passphrase.");
            }
            report_created(&vault)?;
        }
        VaultCommand::Restore { new } => {
            if std::io::stdin().is_terminal() {
                eprintln!("Type the mnemonic words, then Enter and Ctrl-D:");
            }
            let mut words = Zeroizing::new(String::new());
            std::io::stdin()
                .take(MAX_MNEMONIC_INPUT)
                .read_to_string(&mut words)
                .map_err(|e| format!("reading the mnemonic from stdin: {e}"))?;
            let vault = create(args, path, new, &words)?;
            report_created(&vault)?;
        }
        VaultCommand::List => {
            let vault = args.open(path)?;
            println!(
                "{:<24} {:<28} {:<51} TLS FINGERPRINT",
                "NAME", "PATH", "SSH FINGERPRINT"
            );
            let mut purposes: Vec<KeyPurpose> = RESERVED_NAMES
                .iter()
                .filter_map(|n| KeyPurpose::from_name(n).ok())
                .collect();
            purposes.extend(
                vault
                    .identities()
                    .iter()
                    .map(|i| KeyPurpose::Client(i.name.clone())),
            );
            for p in purposes {
                let key = vault.derive(&p);
                let ssh = ssh_key_of(&key, "")?;
                println!(
                    "{:<24} {:<28} {:<51} {}",
                    p.name(),
                    key.path().to_string(),
                    alknet_ssh::openssh_fingerprint(ssh.public_key()),
                    tls_identity_of(&key)?.fingerprint()
                );
            }
        }
        VaultCommand::Derive {
            name,
            path: explicit,
        } => {
            let mut vault = args.open(path)?;
            let text = match (name, explicit) {
                (_, Some(p)) => describe(None, &vault.derive_path(p))?,
                (Some(n), None) => {
                    let purpose = KeyPurpose::from_name(n).map_err(|e| e.to_string())?;
                    if let KeyPurpose::Client(_) = purpose {
                        if vault.add_identity(n).map_err(|e| e.to_string())? {
                            eprintln!("alknet vault: recorded identity {n:?}");
                        }
                    }
                    describe(Some(n), &vault.derive(&purpose))?
                }
                (None, None) => return Err("give NAME or --path".into()),
            };
            print!("{text}");
        }
        VaultCommand::ExportSsh { name, out } => {
            let vault = args.open(path)?;
            let purpose = KeyPurpose::from_name(name).map_err(|e| e.to_string())?;
            let key = ssh_key_of(&vault.derive(&purpose), name)?;
            let text = key.to_openssh(LineEnding::LF).map_err(|e| e.to_string())?;
            match out {
                Some(file) => {
                    write_new(file, text.as_bytes(), true)?;
                    let public = key.public_key().to_openssh().map_err(|e| e.to_string())?;
                    let pub_path = PathBuf::from(format!("{}.pub", file.display()));
                    write_new(&pub_path, format!("{public}\n").as_bytes(), false)?;
                    eprintln!(
                        "alknet vault: wrote {} and {}",
                        file.display(),
                        pub_path.display()
                    );
                }
                None => print!("{}", text.as_str()),
            }
        }
        VaultCommand::ExportTls { name, cert, key } => {
            let vault = args.open(path)?;
            let purpose = KeyPurpose::from_name(name).map_err(|e| e.to_string())?;
            let id = tls_identity_of(&vault.derive(&purpose))?;
            write_new(key, Zeroizing::new(id.key_pem()).as_bytes(), true)?;
            write_new(cert, id.chain_pem().as_bytes(), false)?;
            eprintln!(
                "alknet vault: wrote {} and {}",
                cert.display(),
                key.display()
            );
            println!("{}", id.fingerprint());
        }
        VaultCommand::Sign { name, input } => {
            let message = read_input(input.as_deref())?;
            let vault = args.open(path)?;
            let purpose = KeyPurpose::from_name(name).map_err(|e| e.to_string())?;
            println!("{}", hex::encode(&vault.derive(&purpose).sign(&message)));
        }
        VaultCommand::Verify {
            name,
            public_key,
            signature,
            input,
        } => {
            let signature: [u8; 64] =
                hex::decode_array(signature).ok_or("--signature is 128 hex digits (64 bytes)")?;
            let public: [u8; 32] = match (public_key, name) {
                (Some(hexkey), _) => {
                    hex::decode_array(hexkey).ok_or("--public-key is 64 hex digits (32 bytes)")?
                }
                (None, Some(n)) => {
                    let purpose = KeyPurpose::from_name(n).map_err(|e| e.to_string())?;
                    *args.open(path)?.derive(&purpose).public_key()
                }
                (None, None) => return Err("give NAME or --public-key".into()),
            };
            let message = read_input(input.as_deref())?;
            if alknet_vault::verify(&public, &message, &signature) {
                println!("valid");
            } else {
                println!("invalid");
                return Ok(ExitCode::FAILURE);
            }
        }
        VaultCommand::ShowMnemonic { yes } => {
            if !yes {
                if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
                    return Err("not on a terminal: pass --yes to print the mnemonic anyway".into());
                }
                eprint!("The mnemonic gives every key of this vault. Type \"show\" to print it: ");
                let mut answer = String::new();
                std::io::stdin()
                    .read_line(&mut answer)
                    .map_err(|e| e.to_string())?;
                if answer.trim() != "show" {
                    return Err("not confirmed; nothing printed".into());
                }
            }
            let vault = args.open(path)?;
            let words = vault.mnemonic_words().map_err(|e| e.to_string())?;
            println!("{}", words.as_str());
            if vault.bip39_passphrase_used() {
                eprintln!("alknet vault: this vault's seed also used a BIP39 passphrase.");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `alknet keygen`: a standalone Ed25519 key (OpenSSH and/or TLS), without a vault.
pub fn keygen(args: KeygenArgs) -> ExitCode {
    match keygen_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => fail("keygen", msg),
    }
}

fn keygen_inner(args: &KeygenArgs) -> CliResult<()> {
    if let Some(file) = &args.ssh {
        let mut key = alknet_ssh::generate_ed25519().map_err(|e| e.to_string())?;
        key.set_comment(args.comment.as_str());
        let text = key.to_openssh(LineEnding::LF).map_err(|e| e.to_string())?;
        write_new(file, text.as_bytes(), true)?;
        let public = key.public_key().to_openssh().map_err(|e| e.to_string())?;
        write_new(
            &PathBuf::from(format!("{}.pub", file.display())),
            format!("{public}\n").as_bytes(),
            false,
        )?;
        println!(
            "ssh {} {}",
            alknet_ssh::openssh_fingerprint(key.public_key()),
            alknet_ssh::key_fingerprint(key.public_key())
        );
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let id = TlsIdentity::generate_ed25519(&[]).map_err(|e| e.to_string())?;
        write_new(key, Zeroizing::new(id.key_pem()).as_bytes(), true)?;
        write_new(cert, id.chain_pem().as_bytes(), false)?;
        println!("tls {}", id.fingerprint());
    }
    Ok(())
}
