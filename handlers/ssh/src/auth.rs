//! Public keys to identities: the SHA-256 fingerprint of a key (what OpenSSH prints as
//! `SHA256:<base64>`, and what our config and peer store hold as 64 hex digits) is
//! resolved through the engine's `IdentityProvider`; an `authorized_keys`-style file is
//! one more provider.

use std::collections::HashMap;
use std::path::PathBuf;

use alknet_runtime::{Fingerprint, Identity, IdentityProvider};
use russh::keys::{HashAlg, PublicKey};

use crate::certificate::CertAuthority;
use crate::restrictions::KeyRestrictions;
use crate::watched::{WatchedFile, WatchedFileError};

/// The SHA-256 of a public key's wire encoding: the digest OpenSSH shows, base64-encoded,
/// as `SHA256:…` (`ssh-keygen -lf KEY`).
pub fn key_fingerprint(key: &PublicKey) -> Fingerprint {
    sha256_fingerprint(&key.fingerprint(HashAlg::Sha256))
}

/// An ssh-key SHA-256 fingerprint as ours (the same 32 bytes).
pub(crate) fn sha256_fingerprint(fp: &russh::keys::ssh_key::Fingerprint) -> Fingerprint {
    let mut out = [0u8; 32];
    // a SHA-256 fingerprint is always 32 bytes; copy defensively all the same
    let bytes = fp.as_bytes();
    let n = bytes.len().min(32);
    out[..n].copy_from_slice(&bytes[..n]);
    Fingerprint(out)
}

/// The OpenSSH rendering of a key's fingerprint (`SHA256:…`), for logs and messages.
pub fn openssh_fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Errors loading an `authorized_keys` file.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizedKeysError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin} line {line}: {reason}")]
    Line {
        origin: String,
        line: usize,
        reason: String,
    },
}

/// An `IdentityProvider` reading an OpenSSH `authorized_keys`-style file:
///
/// ```text
/// # comments and blank lines are skipped
/// scopes="ssh:exec,ssh:shell" ssh-ed25519 AAAAC3Nza… alice
/// ssh-ed25519 AAAAC3Nza… bob          # no scopes: authenticates, may do nothing
/// ```
///
/// The trailing comment names the identity (the key's `SHA256:…` fingerprint when there is
/// none). A line with `cert-authority` lists a certificate authority instead of a key
/// that logs in: OpenSSH user certificates it signs are trusted (see
/// `certificate.rs`), their sessions run as `PRINCIPAL@NAME` with the line's scopes,
/// and `principals="a,b"` names the principals it may vouch for (without it the user
/// name logged in as must be a principal of the certificate), as sshd's own
/// `cert-authority` and `principals=` options do:
///
/// ```text
/// cert-authority,scopes="ssh:exec,ssh:sftp,sftp:read" ssh-ed25519 AAAAC3Nza… ops-ca
/// ```
///
/// sshd's own restricting options (`restrict`, `no-pty`, `no-port-forwarding`,
/// `command="…"`, `from="…"`, see `restrictions.rs`) apply as sshd applies them; any
/// other (`environment=`, `permitopen=`, …) is an error rather than a restriction
/// silently ignored. The file is read at start and again whenever its modification time
/// or size changes; a file that no longer parses keeps the previous keys (and says so in
/// the log).
pub struct AuthorizedKeysProvider {
    file: WatchedFile<AuthorizedKeys, AuthorizedKeysError>,
}

/// What an `authorized_keys` file lists, by key fingerprint.
#[derive(Debug, Default)]
pub struct AuthorizedKeys {
    /// Keys that log in, and their identities.
    pub keys: HashMap<Fingerprint, Identity>,
    /// `cert-authority` lines: keys that sign the user certificates that log in.
    pub authorities: HashMap<Fingerprint, CertAuthority>,
    /// The sshd options of key lines that have any.
    pub restrictions: HashMap<Fingerprint, KeyRestrictions>,
}

impl std::fmt::Debug for AuthorizedKeysProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizedKeysProvider")
            .field("path", &self.file.path())
            .finish()
    }
}

impl AuthorizedKeysProvider {
    /// Loads `path`; errors name the file and, for syntax, the line.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, AuthorizedKeysError> {
        let file = WatchedFile::load(path, "authorized keys", parse_authorized_keys_file).map_err(
            |e| match e {
                WatchedFileError::Read { path, source } => {
                    AuthorizedKeysError::Read { path, source }
                }
                WatchedFileError::Parse(e) => e,
            },
        )?;
        Ok(Self { file })
    }

    /// Number of keys currently known (certificate authorities not counted).
    pub fn len(&self) -> usize {
        self.current(|k| k.keys.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `cert-authority` line of a CA key, if the file (as it is now) lists it.
    pub fn authority(&self, fingerprint: &Fingerprint) -> Option<CertAuthority> {
        self.current(|k| k.authorities.get(fingerprint).cloned())
            .flatten()
    }

    /// A key line's identity and sshd options, as the file is now.
    pub fn key_entry(&self, fingerprint: &Fingerprint) -> Option<(Identity, KeyRestrictions)> {
        self.current(|k| {
            let identity = k.keys.get(fingerprint)?.clone();
            let restrictions = k.restrictions.get(fingerprint).cloned().unwrap_or_default();
            Some((identity, restrictions))
        })
        .flatten()
    }

    /// Whether the file (as it is now) lists any certificate authority.
    pub fn has_authorities(&self) -> bool {
        self.current(|k| !k.authorities.is_empty()).unwrap_or(false)
    }

    /// Runs `f` on the file's current contents, read again first if it changed.
    fn current<R>(&self, f: impl FnOnce(&AuthorizedKeys) -> R) -> Option<R> {
        self.file.current().map(|k| f(&k))
    }
}

impl IdentityProvider for AuthorizedKeysProvider {
    fn resolve_from_fingerprint(&self, fingerprint: &Fingerprint) -> Option<Identity> {
        self.current(|k| k.keys.get(fingerprint).cloned()).flatten()
    }

    fn resolve_from_token(&self, _token: &str) -> Option<Identity> {
        None
    }
}

/// [`parse_authorized_keys`] on a file's bytes, which must be UTF-8.
fn parse_authorized_keys_file(
    bytes: &[u8],
    origin: &str,
) -> Result<AuthorizedKeys, AuthorizedKeysError> {
    let text = std::str::from_utf8(bytes).map_err(|e| AuthorizedKeysError::Line {
        origin: origin.to_string(),
        line: bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1,
        reason: "not UTF-8".into(),
    })?;
    parse_authorized_keys(text, origin)
}

/// Parses `authorized_keys` text; `origin` names it in errors.
pub fn parse_authorized_keys(
    text: &str,
    origin: &str,
) -> Result<AuthorizedKeys, AuthorizedKeysError> {
    let mut parsed = AuthorizedKeys::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| AuthorizedKeysError::Line {
            origin: origin.to_string(),
            line: i + 1,
            reason,
        };
        let (options, key_text) = split_options(line).map_err(err)?;
        let options = match options {
            None => LineOptions::default(),
            Some(opts) => parse_options(opts).map_err(err)?,
        };
        let key = PublicKey::from_openssh(key_text).map_err(|e| err(format!("bad key: {e}")))?;
        let fp = key_fingerprint(&key);
        let comment = key.comment().as_str_lossy().trim().to_string();
        let name = if comment.is_empty() {
            openssh_fingerprint(&key)
        } else {
            comment
        };
        if parsed.keys.contains_key(&fp) || parsed.authorities.contains_key(&fp) {
            return Err(err(format!(
                "key {} is listed twice",
                openssh_fingerprint(&key)
            )));
        }
        let identity = Identity {
            name,
            scopes: options.scopes,
        };
        if options.cert_authority {
            parsed.authorities.insert(
                fp,
                CertAuthority {
                    identity,
                    principals: options.principals,
                    restrictions: options.restrictions,
                },
            );
        } else if options.principals.is_some() {
            return Err(err("principals= is only for cert-authority lines".into()));
        } else {
            if options.restrictions != KeyRestrictions::default() {
                parsed.restrictions.insert(fp, options.restrictions);
            }
            parsed.keys.insert(fp, identity);
        }
    }
    Ok(parsed)
}

/// The options field of a line.
#[derive(Debug, Default)]
struct LineOptions {
    scopes: Vec<String>,
    cert_authority: bool,
    principals: Option<Vec<String>>,
    restrictions: KeyRestrictions,
}

/// Whether `word` is a key type rather than an options field.
fn is_key_type(word: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-", "rsa-"]
        .iter()
        .any(|p| word.starts_with(p))
}

/// Splits a line into its options field (if any) and the `type base64 [comment]` rest.
fn split_options(line: &str) -> Result<(Option<&str>, &str), String> {
    let first = line.split_whitespace().next().unwrap_or("");
    if is_key_type(first) {
        return Ok((None, line));
    }
    // the options field ends at the first whitespace outside double quotes
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                return Ok((Some(&line[..i]), line[i..].trim_start()));
            }
            _ => {}
        }
    }
    Err(if quoted {
        "unterminated quote in options".into()
    } else {
        "no key after the options".into()
    })
}

/// Parses an options field: ours (`scopes="a,b"`, `cert-authority`, `principals="a,b"`)
/// and sshd's restrictions (`restrict`, `no-pty`/`pty`, `no-port-forwarding`/
/// `port-forwarding`, `no-agent-forwarding`/`agent-forwarding`,
/// `no-x11-forwarding`/`x11-forwarding`, `command="…"`, `from="…"`; the user-rc flags are
/// accepted and change nothing, since `~/.ssh/rc` is never run). Anything else is an
/// error, not a restriction silently dropped.
fn parse_options(options: &str) -> Result<LineOptions, String> {
    let mut parsed = LineOptions::default();
    let mut scopes = None;
    let (mut restrict, mut pty, mut forwarding, mut agent, mut x11) =
        (false, None, None, None, None);
    let mut seen = std::collections::HashSet::new();
    for opt in split_top_level_commas(options) {
        let name = opt.split('=').next().unwrap_or(opt);
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(format!("{name} is given twice"));
        }
        let flag = opt.to_ascii_lowercase();
        match flag.as_str() {
            "cert-authority" => parsed.cert_authority = true,
            "restrict" => restrict = true,
            "no-pty" | "pty" => pty = Some(flag == "pty"),
            "no-port-forwarding" | "port-forwarding" => {
                forwarding = Some(flag == "port-forwarding")
            }
            "no-agent-forwarding" | "agent-forwarding" => agent = Some(flag == "agent-forwarding"),
            "no-x11-forwarding" | "x11-forwarding" => x11 = Some(flag == "x11-forwarding"),
            "no-user-rc" | "user-rc" => {}
            _ => parse_valued_option(opt, &name.to_ascii_lowercase(), &mut parsed, &mut scopes)?,
        }
    }
    parsed.scopes = scopes.unwrap_or_default();
    // restrict first, whatever its place; an explicit pty or port-forwarding wins
    parsed.restrictions.pty = pty.unwrap_or(!restrict);
    parsed.restrictions.port_forwarding = forwarding.unwrap_or(!restrict);
    parsed.restrictions.agent_forwarding = agent.unwrap_or(!restrict);
    parsed.restrictions.x11_forwarding = x11.unwrap_or(!restrict);
    Ok(parsed)
}

/// One `name="value"` option of a line into `parsed` (`scopes=` into `scopes`).
fn parse_valued_option(
    opt: &str,
    name: &str,
    parsed: &mut LineOptions,
    scopes: &mut Option<Vec<String>>,
) -> Result<(), String> {
    let Some((_, value)) = opt.split_once('=') else {
        return Err(unsupported(name));
    };
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or_else(|| format!("{name} must be double-quoted"))?;
    match name {
        "command" => parsed.restrictions.command = Some(inner.replace("\\\"", "\"")),
        "from" => parsed.restrictions.from = Some(inner.to_string()),
        "scopes" | "principals" => {
            let list: Vec<String> = inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if let Some(bad) = list
                .iter()
                .find(|s| s.chars().any(|c| c.is_whitespace() || c == '"'))
            {
                return Err(format!("bad {name} entry {bad:?}"));
            }
            if name == "scopes" {
                *scopes = Some(list);
            } else {
                parsed.principals = Some(list);
            }
        }
        _ => return Err(unsupported(name)),
    }
    Ok(())
}

fn unsupported(name: &str) -> String {
    format!(
        "unsupported option {name:?} (understood: scopes=, cert-authority, principals=, \
         restrict, no-pty, pty, no-port-forwarding, port-forwarding, command=, from=, and \
         the agent, X11 and user-rc flags)"
    )
}

/// Splits at commas outside double quotes (a `\"` inside quotes does not end them).
fn split_top_level_commas(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // ssh-keygen -t ed25519 (test keys, no private half anywhere)
    const ALICE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";
    const BOB: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKIMVm76XcC8S8vhRjsQm2Npe8cpTUHPveKkeXtnGFx4";

    fn fp_of(key: &str) -> Fingerprint {
        key_fingerprint(&PublicKey::from_openssh(key).expect("key"))
    }

    #[test]
    fn fingerprint_is_the_openssh_sha256() {
        let key = PublicKey::from_openssh(ALICE).expect("key");
        let fp = key_fingerprint(&key);
        // the same digest, two spellings: OpenSSH's base64 and our hex
        let shown = openssh_fingerprint(&key);
        let b64 = shown.strip_prefix("SHA256:").expect("prefix");
        let mut digest = [0u8; 32];
        let raw = ring::digest::digest(&ring::digest::SHA256, &key.to_bytes().expect("blob"));
        digest.copy_from_slice(raw.as_ref());
        assert_eq!(fp.0, digest, "sha256 of the key blob");
        assert_eq!(b64.len(), 43, "unpadded base64 of 32 bytes");
        // as `ssh-keygen -lf` prints it for BOB
        assert_eq!(
            openssh_fingerprint(&PublicKey::from_openssh(BOB).expect("key")),
            "SHA256:qPehlU+Axcd28eIHyNpgRGlKkxC9D2XDlp+EzyT9k40"
        );
        assert_eq!(fp.to_string().len(), 64);
        assert_eq!(fp.to_string().parse::<Fingerprint>(), Ok(fp));
    }

    #[test]
    fn parses_scopes_comments_and_names() {
        let text = format!(
            "# team keys\n\n scopes=\"ssh:exec, ssh:shell\" {ALICE} alice@laptop \n{BOB}\n"
        );
        let keys = parse_authorized_keys(&text, "ak").expect("parses").keys;
        assert_eq!(keys.len(), 2);
        let alice = &keys[&fp_of(ALICE)];
        assert_eq!(alice.name, "alice@laptop");
        assert_eq!(alice.scopes, ["ssh:exec", "ssh:shell"]);
        let bob = &keys[&fp_of(BOB)];
        assert!(bob.name.starts_with("SHA256:"), "{}", bob.name);
        assert!(bob.scopes.is_empty(), "no scopes: default deny");
    }

    #[test]
    fn cert_authority_lines_list_authorities_not_keys() {
        let text = format!(
            "cert-authority,scopes=\"ssh:exec\" {ALICE} ops-ca\n\
             principals=\"admins, root\",cert-authority {BOB} root-ca\n"
        );
        let parsed = parse_authorized_keys(&text, "ak").expect("parses");
        assert!(parsed.keys.is_empty(), "a CA key does not log in itself");
        let ops = &parsed.authorities[&fp_of(ALICE)];
        assert_eq!(ops.identity.name, "ops-ca");
        assert_eq!(ops.identity.scopes, ["ssh:exec"]);
        assert_eq!(ops.principals, None);
        let root = &parsed.authorities[&fp_of(BOB)];
        assert_eq!(
            root.principals,
            Some(vec!["admins".to_string(), "root".to_string()])
        );
        assert!(root.identity.scopes.is_empty());
    }

    #[test]
    fn sshd_restrictions_are_read_and_kept_per_key() {
        let text = format!(
            "restrict,pty,command=\"echo \\\"a,b\\\" $SSH_ORIGINAL_COMMAND\",scopes=\"ssh:exec\" {ALICE} alice\n\
             from=\"10.0.0.0/8,!10.0.0.1\",no-port-forwarding,no-agent-forwarding,no-X11-forwarding {BOB} bob\n"
        );
        let parsed = parse_authorized_keys(&text, "ak").expect("parses");
        assert_eq!(parsed.keys[&fp_of(ALICE)].scopes, ["ssh:exec"]);
        assert_eq!(
            parsed.restrictions[&fp_of(ALICE)],
            KeyRestrictions {
                pty: true,
                port_forwarding: false,
                agent_forwarding: false,
                x11_forwarding: false,
                command: Some("echo \"a,b\" $SSH_ORIGINAL_COMMAND".into()),
                from: None,
            }
        );
        assert_eq!(
            parsed.restrictions[&fp_of(BOB)],
            KeyRestrictions {
                pty: true,
                port_forwarding: false,
                agent_forwarding: false,
                x11_forwarding: false,
                command: None,
                from: Some("10.0.0.0/8,!10.0.0.1".into()),
            }
        );
        // a line without options has no entry: it restricts nothing
        let plain = parse_authorized_keys(&format!("{ALICE}\n"), "ak").expect("parses");
        assert!(plain.restrictions.is_empty());
        // restrict alone takes the pty and forwarding
        let r = parse_authorized_keys(&format!("restrict {ALICE}\n"), "ak").expect("parses");
        assert_eq!(
            r.restrictions[&fp_of(ALICE)],
            KeyRestrictions {
                pty: false,
                port_forwarding: false,
                agent_forwarding: false,
                x11_forwarding: false,
                command: None,
                from: None,
            }
        );
        // restrict, then agent-forwarding, gives the agent back and nothing else
        let r = parse_authorized_keys(&format!("restrict,agent-forwarding {ALICE}\n"), "ak")
            .expect("parses");
        let line = &r.restrictions[&fp_of(ALICE)];
        assert!(line.agent_forwarding && !line.port_forwarding && !line.pty);
        assert!(!line.x11_forwarding);
        // and x11-forwarding gives X11 back alone
        let r = parse_authorized_keys(&format!("restrict,x11-forwarding {ALICE}\n"), "ak")
            .expect("parses");
        let line = &r.restrictions[&fp_of(ALICE)];
        assert!(line.x11_forwarding && !line.agent_forwarding && !line.port_forwarding);
        // and a cert-authority line keeps its restrictions for the certificates
        let ca = parse_authorized_keys(&format!("cert-authority,no-pty {BOB} ca\n"), "ak")
            .expect("parses");
        assert!(!ca.authorities[&fp_of(BOB)].restrictions.pty);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (format!("{ALICE}\nnot-a-key AAAA\n"), 2, "option"),
            (format!("environment=\"A=b\" {ALICE}"), 1, "environment"),
            (format!("scopes=ssh:exec {ALICE}"), 1, "double-quoted"),
            (format!("scopes=\"ssh:exec {ALICE}"), 1, "quote"),
            ("ssh-ed25519 AAAAnotbase64!!".to_string(), 1, "bad key"),
            (format!("{ALICE} a\n#\n{ALICE} b"), 3, "twice"),
            (format!("scopes=\"a\",scopes=\"b\" {ALICE}"), 1, "twice"),
            (
                format!("principals=\"a\" {ALICE}"),
                1,
                "only for cert-authority",
            ),
            (format!("cert-authority,cert-authority {ALICE}"), 1, "twice"),
            (format!("no-pty,no-pty {ALICE}"), 1, "twice"),
            (format!("permitopen=\"x:1\" {ALICE}"), 1, "permitopen"),
            (format!("command=ls {ALICE}"), 1, "double-quoted"),
            (
                format!("cert-authority,principals=a {ALICE}"),
                1,
                "double-quoted",
            ),
            (format!("{ALICE} a\ncert-authority {ALICE} b"), 2, "twice"),
        ];
        for (text, line, needle) in cases {
            let e = parse_authorized_keys(&text, "keys.txt").expect_err(&text);
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("keys.txt line {line}:")), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn provider_reloads_when_the_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("authorized_keys");
        std::fs::write(&path, format!("scopes=\"ssh:exec\" {ALICE} alice\n")).expect("write");
        let p = AuthorizedKeysProvider::load(&path).expect("load");
        assert_eq!(p.len(), 1);
        assert_eq!(
            p.resolve_from_fingerprint(&fp_of(ALICE)).map(|i| i.name),
            Some("alice".into())
        );
        assert_eq!(p.resolve_from_fingerprint(&fp_of(BOB)), None);
        assert_eq!(p.resolve_from_token("anything"), None);
        // a longer file: the size changes even within the mtime granularity
        std::fs::write(&path, format!("{ALICE} alice\nscopes=\"x\" {BOB} bob\n")).expect("write");
        assert_eq!(
            p.resolve_from_fingerprint(&fp_of(BOB)).map(|i| i.scopes),
            Some(vec!["x".to_string()])
        );
        // a broken file keeps the last good keys
        std::fs::write(&path, "garbage garbage garbage garbage garbage\n").expect("write");
        assert!(p.resolve_from_fingerprint(&fp_of(BOB)).is_some());
        assert!(AuthorizedKeysProvider::load(dir.path().join("missing")).is_err());
    }
}
