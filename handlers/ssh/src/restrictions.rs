//! What an `authorized_keys` line's sshd options (`restrict`, `no-pty`,
//! `no-port-forwarding`, `no-agent-forwarding`, `no-x11-forwarding`, `command="…"`,
//! `from="…"`) and a user
//! certificate's critical options and extensions leave a session: one [`Grant`], decided
//! without IO.

use std::net::IpAddr;

use alknet_runtime::Identity;

/// Scopes a session without port forwarding does not get (`no-port-forwarding`,
/// `restrict`, a certificate without `permit-port-forwarding`).
const FORWARDING_SCOPES: &[&str] = &["ssh:forward-local", "ssh:forward-remote", "ssh:socks"];

/// The scope a session without agent forwarding does not get (`no-agent-forwarding`,
/// `restrict`, a certificate without `permit-agent-forwarding`).
const AGENT_SCOPE: &str = crate::policy::SCOPE_FORWARD_AGENT;

/// The scope a session without X11 forwarding does not get (`no-x11-forwarding`,
/// `restrict`, a certificate without `permit-X11-forwarding`).
const X11_SCOPE: &str = crate::policy::SCOPE_FORWARD_X11;

/// The sshd options of one `authorized_keys` line. The default restricts nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRestrictions {
    /// `pty-req` may be granted (`no-pty` and `restrict` clear it, `pty` sets it again).
    pub pty: bool,
    /// Forwarding scopes are kept (`no-port-forwarding`, `restrict`; `port-forwarding`).
    pub port_forwarding: bool,
    /// `ssh:forward-agent` is kept (`no-agent-forwarding`, `restrict`;
    /// `agent-forwarding`).
    pub agent_forwarding: bool,
    /// `ssh:forward-x11` is kept (`no-x11-forwarding`, `restrict`; `x11-forwarding`).
    pub x11_forwarding: bool,
    /// `command="…"`: runs in place of every `exec` and `shell`.
    pub command: Option<String>,
    /// `from="…"`: patterns the client's address must match (see [`from_matches`]).
    pub from: Option<String>,
}

impl Default for KeyRestrictions {
    fn default() -> Self {
        Self {
            pty: true,
            port_forwarding: true,
            agent_forwarding: true,
            x11_forwarding: true,
            command: None,
            from: None,
        }
    }
}

/// What a session may do once authenticated: its identity (scopes less those withheld),
/// whether it may have a pty, and the command it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub identity: Identity,
    pub pty: bool,
    /// Runs in place of whatever `exec` or `shell` asks for, which it finds in
    /// `SSH_ORIGINAL_COMMAND`, as sshd runs it.
    pub force_command: Option<String>,
}

/// Why restrictions refuse a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestrictionRefusal {
    #[error("from={list:?} does not match {remote}")]
    From { list: String, remote: IpAddr },
    #[error("the certificate's force-command and the line's command= differ")]
    ConflictingCommands,
}

/// What a user certificate's extensions permit (`permit-pty`, `permit-port-forwarding`,
/// `permit-agent-forwarding`, `permit-X11-forwarding`); a plain key is [`Permits::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permits {
    pub pty: bool,
    pub port_forwarding: bool,
    pub agent_forwarding: bool,
    pub x11_forwarding: bool,
}

impl Permits {
    /// A plain key: only its `authorized_keys` line restricts it.
    pub const ALL: Permits = Permits {
        pty: true,
        port_forwarding: true,
        agent_forwarding: true,
        x11_forwarding: true,
    };
}

/// The grant of `identity` under `line`'s options and, for a certificate, what it permits
/// itself (`cert`, `cert_command`: pass [`Permits::ALL`], `None` for a plain key). Both
/// must allow a pty or a kind of forwarding for the session to have it; two different
/// forced commands refuse it, as sshd does.
pub fn grant(
    identity: Identity,
    line: &KeyRestrictions,
    remote: IpAddr,
    cert: Permits,
    cert_command: Option<String>,
) -> Result<Grant, RestrictionRefusal> {
    if let Some(list) = &line.from {
        if !from_matches(list, remote) {
            return Err(RestrictionRefusal::From {
                list: list.clone(),
                remote: remote.to_canonical(),
            });
        }
    }
    let force_command = match (cert_command, &line.command) {
        (Some(a), Some(b)) if a != *b => return Err(RestrictionRefusal::ConflictingCommands),
        (Some(a), _) => Some(a),
        (None, b) => b.clone(),
    };
    let forwarding = cert.port_forwarding && line.port_forwarding;
    let agent = cert.agent_forwarding && line.agent_forwarding;
    let x11 = cert.x11_forwarding && line.x11_forwarding;
    let scopes = identity
        .scopes
        .into_iter()
        .filter(|s| forwarding || !FORWARDING_SCOPES.contains(&s.as_str()))
        .filter(|s| agent || s != AGENT_SCOPE)
        .filter(|s| x11 || s != X11_SCOPE)
        .collect();
    Ok(Grant {
        identity: Identity {
            name: identity.name,
            scopes,
        },
        pty: cert.pty && line.pty,
        force_command,
    })
}

/// sshd's `from="pattern-list"` on addresses: comma-separated patterns, each an address
/// with `*` and `?` wildcards or a CIDR block, `!` negating one; the address must match
/// a pattern and no negated one. Host names never match: the client's name is not looked
/// up (sshd's `UseDNS no`, its default).
pub fn from_matches(list: &str, remote: IpAddr) -> bool {
    let remote = remote.to_canonical();
    let text = remote.to_string();
    let mut matched = false;
    for pattern in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        let hit = match pattern.split_once('/') {
            Some(_) => cidr_contains(pattern, remote).unwrap_or(false),
            None => wildcard_match(pattern.as_bytes(), text.as_bytes()),
        };
        if hit && negated {
            return false;
        }
        matched |= hit;
    }
    matched
}

/// Whether the CIDR block `net/prefix` holds `ip`; `None` when it does not parse.
pub fn cidr_contains(block: &str, ip: IpAddr) -> Option<bool> {
    let (net, prefix) = block.split_once('/')?;
    let net: IpAddr = net.parse().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    let ip = ip.to_canonical();
    let (bits, a, n) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (32, u128::from(u32::from(a)), u128::from(u32::from(n))),
        (IpAddr::V6(a), IpAddr::V6(n)) => (128, u128::from(a), u128::from(n)),
        // a valid block of the other family
        _ => return (prefix <= if net.is_ipv4() { 32 } else { 128 }).then_some(false),
    };
    if prefix > bits {
        return None;
    }
    let ones = if prefix == 0 {
        0
    } else {
        u128::MAX << (bits - prefix)
    };
    let mask = ones & (u128::MAX >> (128 - bits));
    Some(a & mask == n & mask)
}

/// `*` (any run) and `?` (any one character) against `text`, as sshd's `match_pattern`.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    // iterative with one backtrack point: linear enough for the short patterns here
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn alice() -> Identity {
        Identity {
            name: "alice".into(),
            scopes: [
                "ssh:exec",
                "ssh:shell",
                "ssh:forward-local",
                "ssh:forward-remote",
                "ssh:forward-agent",
                "ssh:forward-x11",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    #[test]
    fn from_patterns_as_sshd_matches_addresses() {
        assert!(from_matches("127.0.0.1", ip("127.0.0.1")));
        assert!(from_matches("10.*,127.0.0.?", ip("127.0.0.7")));
        assert!(!from_matches("127.0.0.?", ip("127.0.0.17")));
        assert!(from_matches("192.0.2.0/24, ::1", ip("::1")));
        assert!(from_matches("127.0.0.0/8", ip("::ffff:127.0.0.1")));
        assert!(!from_matches("*,!127.0.0.1", ip("127.0.0.1")));
        assert!(from_matches("*,!127.0.0.1", ip("127.0.0.2")));
        assert!(
            !from_matches("!10.0.0.0/8", ip("127.0.0.1")),
            "nothing matched"
        );
        assert!(!from_matches("host.example.com", ip("127.0.0.1")));
        assert!(
            !from_matches("10.0.0.0/99", ip("10.0.0.1")),
            "a bad block never matches"
        );
        assert!(!from_matches("", ip("127.0.0.1")));
        assert!(from_matches("*", ip("2001:db8::1")));
    }

    #[test]
    fn cidr_blocks() {
        assert_eq!(cidr_contains("10.0.0.0/8", ip("10.1.2.3")), Some(true));
        assert_eq!(cidr_contains("10.0.0.0/8", ip("11.0.0.1")), Some(false));
        assert_eq!(cidr_contains("0.0.0.0/0", ip("192.0.2.1")), Some(true));
        assert_eq!(
            cidr_contains("2001:db8::/32", ip("2001:db8:5::1")),
            Some(true)
        );
        assert_eq!(cidr_contains("2001:db8::/32", ip("127.0.0.1")), Some(false));
        assert_eq!(cidr_contains("10.0.0.0/33", ip("10.0.0.1")), None);
        assert_eq!(cidr_contains("nonsense/8", ip("10.0.0.1")), None);
    }

    #[test]
    fn a_line_restricts_and_a_certificate_restricts_further() {
        let open = grant(
            alice(),
            &KeyRestrictions::default(),
            ip("127.0.0.1"),
            Permits::ALL,
            None,
        )
        .expect("granted");
        assert_eq!(
            (open.identity.scopes.len(), open.pty, open.force_command),
            (6, true, None)
        );

        let restrict = KeyRestrictions {
            pty: false,
            port_forwarding: false,
            agent_forwarding: false,
            x11_forwarding: false,
            command: Some("backup".into()),
            from: Some("127.0.0.0/8".into()),
        };
        let g = grant(alice(), &restrict, ip("127.0.0.1"), Permits::ALL, None).expect("granted");
        assert_eq!(g.identity.scopes, ["ssh:exec", "ssh:shell"]);
        assert!(!g.pty);
        assert_eq!(g.force_command.as_deref(), Some("backup"));
        assert_eq!(
            grant(alice(), &restrict, ip("192.0.2.1"), Permits::ALL, None),
            Err(RestrictionRefusal::From {
                list: "127.0.0.0/8".into(),
                remote: ip("192.0.2.1")
            })
        );
        // a certificate's own limits and command
        let g = grant(
            alice(),
            &KeyRestrictions::default(),
            ip("::1"),
            Permits {
                pty: false,
                port_forwarding: false,
                agent_forwarding: true,
                x11_forwarding: false,
            },
            Some("x".into()),
        )
        .expect("granted");
        assert_eq!(
            (g.identity.scopes, g.pty, g.force_command.as_deref()),
            (
                vec![
                    "ssh:exec".into(),
                    "ssh:shell".into(),
                    "ssh:forward-agent".into()
                ],
                false,
                Some("x")
            )
        );
        // agent forwarding withheld alone, by the line or by the certificate
        let no_agent = KeyRestrictions {
            agent_forwarding: false,
            ..KeyRestrictions::default()
        };
        let cert_no_agent = Permits {
            agent_forwarding: false,
            ..Permits::ALL
        };
        for (line, cert) in [
            (&no_agent, Permits::ALL),
            (&KeyRestrictions::default(), cert_no_agent),
        ] {
            let g = grant(alice(), line, ip("::1"), cert, None).expect("granted");
            assert!(
                !g.identity.has_scope("ssh:forward-agent"),
                "{line:?} {cert:?}"
            );
            assert!(
                g.identity.has_scope("ssh:forward-remote"),
                "{line:?} {cert:?}"
            );
        }
        // X11 forwarding likewise, by the line or by the certificate
        let no_x11 = KeyRestrictions {
            x11_forwarding: false,
            ..KeyRestrictions::default()
        };
        let cert_no_x11 = Permits {
            x11_forwarding: false,
            ..Permits::ALL
        };
        for (line, cert) in [
            (&no_x11, Permits::ALL),
            (&KeyRestrictions::default(), cert_no_x11),
        ] {
            let g = grant(alice(), line, ip("::1"), cert, None).expect("granted");
            assert!(
                !g.identity.has_scope("ssh:forward-x11"),
                "{line:?} {cert:?}"
            );
            assert!(
                g.identity.has_scope("ssh:forward-agent"),
                "{line:?} {cert:?}"
            );
        }
        assert_eq!(
            grant(
                alice(),
                &restrict,
                ip("127.0.0.1"),
                Permits::ALL,
                Some("other".into())
            ),
            Err(RestrictionRefusal::ConflictingCommands)
        );
        assert!(grant(
            alice(),
            &restrict,
            ip("127.0.0.1"),
            Permits::ALL,
            Some("backup".into())
        )
        .is_ok());
    }
}
