//! OpenSSH user certificates (`ssh-keygen -s CA -I ID -n PRINCIPALS key.pub`), trusted
//! through `cert-authority` lines of the `authorized_keys` file, as sshd's own
//! `cert-authority` option and `TrustedUserCAKeys` do. russh has checked the
//! certificate's validity window and that its signature matches the key it names; what
//! makes it trusted is decided here, without IO: the signing key is a listed authority,
//! the certificate is a user certificate valid now, the user name (or the line's
//! `principals=`) is among its principals, and every critical option is one we enforce
//! (`source-address`, `force-command`).

use std::net::IpAddr;

use alknet_runtime::{Fingerprint, Identity};

use crate::restrictions::{
    cidr_contains, grant, Grant, KeyRestrictions, Permits, RestrictionRefusal,
};
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::{Certificate, HashAlg};

/// A `cert-authority` line of the `authorized_keys` file: the CA's identity (the line's
/// comment and `scopes=`), which the certificates it signs get, and the line's
/// `principals=` if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertAuthority {
    pub identity: Identity,
    /// At least one of these must be a principal of the certificate; without the
    /// option, the user name the client logs in as must be.
    pub principals: Option<Vec<String>>,
    /// The line's other sshd options, which apply to the certificates' sessions too.
    pub restrictions: KeyRestrictions,
}

/// Why a certificate was refused (logged with the key id; the client only learns that
/// authentication failed, as with sshd).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateRefusal {
    #[error("revoked ([ssh] revoked_keys)")]
    Revoked,
    #[error("a host certificate, not a user certificate")]
    NotUserCertificate,
    #[error("signed by {0}, which no cert-authority line lists")]
    UnknownAuthority(String),
    #[error("not valid now (or its signature does not verify)")]
    Invalid,
    #[error("names no principal")]
    NoPrincipals,
    #[error("principal {0:?} is not among its principals")]
    PrincipalNotListed(String),
    #[error("none of the cert-authority line's principals is among its principals")]
    NoListedPrincipal,
    #[error("source-address {list:?} does not include {remote}")]
    SourceAddress { list: String, remote: IpAddr },
    #[error("source-address {0:?} does not parse")]
    BadSourceAddress(String),
    #[error("critical option {0:?} is not understood, so the certificate is refused")]
    UnsupportedCriticalOption(String),
    #[error(transparent)]
    Restricted(#[from] RestrictionRefusal),
}

/// Decides whether `cert`, presented by a client at `remote` logging in as `user` at
/// `unix_now`, is trusted; `authority` finds the `cert-authority` line of a CA key's
/// SHA-256 fingerprint.
pub fn check_certificate(
    cert: &Certificate,
    user: &str,
    remote: IpAddr,
    unix_now: u64,
    authority: impl Fn(&Fingerprint) -> Option<CertAuthority>,
) -> Result<Grant, CertificateRefusal> {
    if cert.cert_type() != CertType::User {
        return Err(CertificateRefusal::NotUserCertificate);
    }
    let ca_fp = cert.signature_key().fingerprint(HashAlg::Sha256);
    let ca = authority(&crate::auth::sha256_fingerprint(&ca_fp))
        .ok_or_else(|| CertificateRefusal::UnknownAuthority(ca_fp.to_string()))?;
    cert.validate_at(unix_now, [&ca_fp])
        .map_err(|_| CertificateRefusal::Invalid)?;
    let principals = cert.valid_principals();
    // an empty list would mean "any principal" to ssh-key; sshd refuses it for users
    if principals.is_empty() {
        return Err(CertificateRefusal::NoPrincipals);
    }
    let principal = match &ca.principals {
        None => principals
            .iter()
            .find(|p| *p == user)
            .ok_or_else(|| CertificateRefusal::PrincipalNotListed(user.to_string()))?,
        Some(allowed) => principals
            .iter()
            .find(|p| allowed.contains(p))
            .ok_or(CertificateRefusal::NoListedPrincipal)?,
    };
    let mut force_command = None;
    for (name, value) in cert.critical_options().iter() {
        match name.as_str() {
            "source-address" => check_source_address(value, remote)?,
            "force-command" => force_command = Some(value.clone()),
            other => {
                return Err(CertificateRefusal::UnsupportedCriticalOption(
                    other.to_string(),
                ))
            }
        }
    }
    let extensions = cert.extensions();
    let identity = Identity {
        name: format!("{principal}@{}", ca.identity.name),
        scopes: ca.identity.scopes.clone(),
    };
    Ok(grant(
        identity,
        &ca.restrictions,
        remote,
        Permits {
            pty: extensions.contains_key("permit-pty"),
            port_forwarding: extensions.contains_key("permit-port-forwarding"),
            agent_forwarding: extensions.contains_key("permit-agent-forwarding"),
            x11_forwarding: extensions.contains_key("permit-X11-forwarding"),
        },
        force_command,
    )?)
}

/// `source-address`: a comma-separated list of addresses and CIDR blocks, one of which
/// must hold the client's address (an IPv4 client on a dual-stack socket is compared as
/// IPv4).
fn check_source_address(list: &str, remote: IpAddr) -> Result<(), CertificateRefusal> {
    let bad = || CertificateRefusal::BadSourceAddress(list.to_string());
    for entry in list.split(',').map(str::trim) {
        let block = match entry.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => format!("{entry}/32"),
            Ok(IpAddr::V6(_)) => format!("{entry}/128"),
            Err(_) => entry.to_string(),
        };
        if cidr_contains(&block, remote).ok_or_else(bad)? {
            return Ok(());
        }
    }
    Err(CertificateRefusal::SourceAddress {
        list: list.to_string(),
        remote: remote.to_canonical(),
    })
}

#[cfg(test)]
mod tests {
    use russh::keys::ssh_key::certificate::Builder;
    use russh::keys::ssh_key::private::Ed25519Keypair;
    use russh::keys::PrivateKey;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    /// A user certificate for key 1 signed by `ca`, valid an hour around [`NOW`];
    /// `fill` sets principals and options.
    fn cert(ca: &PrivateKey, fill: impl FnOnce(&mut Builder)) -> Certificate {
        let mut b = Builder::new(
            vec![7u8; 16],
            key(1).public_key().key_data().clone(),
            NOW - 60,
            NOW + 3600,
        )
        .expect("builder");
        b.key_id("test").expect("key id");
        fill(&mut b);
        b.sign(ca).expect("sign")
    }

    fn ops(principals: Option<&[&str]>) -> CertAuthority {
        CertAuthority {
            identity: Identity {
                name: "ops".into(),
                scopes: ["ssh:exec", "ssh:shell", "ssh:forward-local", "ssh:socks"]
                    .map(String::from)
                    .to_vec(),
            },
            principals: principals.map(|p| p.iter().map(|s| s.to_string()).collect()),
            restrictions: KeyRestrictions::default(),
        }
    }

    /// Checks `cert` against the one authority, key 9 ("ops"), with `principals=`.
    fn check_with(
        cert: &Certificate,
        user: &str,
        remote: &str,
        now: u64,
        principals: Option<&[&str]>,
    ) -> Result<Grant, CertificateRefusal> {
        let ca_fp = crate::auth::key_fingerprint(key(9).public_key());
        check_certificate(cert, user, remote.parse().expect("ip"), now, |fp| {
            (*fp == ca_fp).then(|| ops(principals))
        })
    }

    fn check(cert: &Certificate, user: &str) -> Result<Grant, CertificateRefusal> {
        check_with(cert, user, "127.0.0.1", NOW, None)
    }

    fn alice(b: &mut Builder) {
        b.valid_principal("alice").expect("principal");
    }

    #[test]
    fn a_certificate_from_a_listed_authority_for_the_user_is_trusted() {
        let c = cert(&key(9), alice);
        let grant = check(&c, "alice").expect("trusted");
        assert_eq!(grant.identity.name, "alice@ops");
        // no permit-port-forwarding, no permit-pty: forwarding scopes and the pty withheld
        assert_eq!(grant.identity.scopes, ["ssh:exec", "ssh:shell"]);
        assert!(!grant.pty);

        let c = cert(&key(9), |b| {
            alice(b);
            b.extension("permit-pty", "").expect("ext");
            b.extension("permit-port-forwarding", "").expect("ext");
        });
        let grant = check(&c, "alice").expect("trusted");
        assert_eq!(grant.identity.scopes, ops(None).identity.scopes);
        assert!(grant.pty);
    }

    #[test]
    fn the_user_must_be_a_principal_unless_the_line_names_principals() {
        let c = cert(&key(9), alice);
        assert_eq!(
            check(&c, "bob"),
            Err(CertificateRefusal::PrincipalNotListed("bob".into()))
        );
        let c = cert(&key(9), |b| {
            b.valid_principal("admins").expect("principal");
        });
        let grant =
            check_with(&c, "anyone", "127.0.0.1", NOW, Some(&["admins", "root"])).expect("trusted");
        assert_eq!(grant.identity.name, "admins@ops");
        assert_eq!(
            check_with(&c, "admins", "127.0.0.1", NOW, Some(&["root"])),
            Err(CertificateRefusal::NoListedPrincipal)
        );
        let c = cert(&key(9), |b| {
            b.all_principals_valid().expect("principals");
        });
        assert_eq!(check(&c, "alice"), Err(CertificateRefusal::NoPrincipals));
    }

    #[test]
    fn unknown_authorities_expired_and_host_certificates_are_refused() {
        let c = cert(&key(8), alice);
        assert!(matches!(
            check(&c, "alice"),
            Err(CertificateRefusal::UnknownAuthority(_))
        ));
        let c = cert(&key(9), alice);
        for now in [NOW - 61, NOW + 3600, NOW + 86_400] {
            assert_eq!(
                check_with(&c, "alice", "127.0.0.1", now, None),
                Err(CertificateRefusal::Invalid),
                "{now}"
            );
        }
        let c = cert(&key(9), |b| {
            alice(b);
            b.cert_type(CertType::Host).expect("type");
        });
        assert_eq!(
            check(&c, "alice"),
            Err(CertificateRefusal::NotUserCertificate)
        );
    }

    #[test]
    fn critical_options_are_enforced_or_the_certificate_refused() {
        let c = cert(&key(9), |b| {
            alice(b);
            b.critical_option("source-address", "10.0.0.0/8,127.0.0.1")
                .expect("opt");
        });
        assert!(check(&c, "alice").is_ok());
        assert!(matches!(
            check_with(&c, "alice", "192.0.2.1", NOW, None),
            Err(CertificateRefusal::SourceAddress { .. })
        ));
        let c = cert(&key(9), |b| {
            alice(b);
            b.critical_option("force-command", "/usr/bin/backup --to tape")
                .expect("opt");
        });
        assert_eq!(
            check(&c, "alice").map(|g| g.force_command),
            Ok(Some("/usr/bin/backup --to tape".to_string()))
        );
        assert_eq!(
            check(&cert(&key(9), alice), "alice").map(|g| g.force_command),
            Ok(None)
        );
        for option in ["verify-required", "no-such-option"] {
            let c = cert(&key(9), |b| {
                alice(b);
                b.critical_option(option, "x").expect("opt");
            });
            assert_eq!(
                check(&c, "alice"),
                Err(CertificateRefusal::UnsupportedCriticalOption(option.into()))
            );
        }
    }

    #[test]
    fn source_address_blocks() {
        let v4 = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(check_source_address("127.0.0.1", v4("127.0.0.1")).is_ok());
        assert!(check_source_address("10.0.0.0/8, 127.0.0.0/8", v4("127.1.2.3")).is_ok());
        assert!(check_source_address("::1", v4("::1")).is_ok());
        assert!(check_source_address("2001:db8::/32", v4("2001:db8:1::5")).is_ok());
        assert!(check_source_address("0.0.0.0/0", v4("192.0.2.7")).is_ok());
        // a mapped IPv4 client is IPv4
        assert!(check_source_address("127.0.0.0/8", v4("::ffff:127.0.0.1")).is_ok());
        assert_eq!(
            check_source_address("10.0.0.0/8", v4("127.0.0.1")),
            Err(CertificateRefusal::SourceAddress {
                list: "10.0.0.0/8".into(),
                remote: v4("127.0.0.1")
            })
        );
        assert!(check_source_address("127.0.0.1", v4("::1")).is_err());
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", ""] {
            assert_eq!(
                check_source_address(bad, v4("127.0.0.1")),
                Err(CertificateRefusal::BadSourceAddress(bad.into())),
                "{bad}"
            );
        }
    }
}
