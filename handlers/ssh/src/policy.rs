//! What an SSH identity may do: each channel type and request maps to one scope, checked
//! with the engine's default-deny `AccessControl`.

use alknet_runtime::{AccessControl, AccessDenied, Identity, Requirement};

/// Run commands (`exec` requests).
pub const SCOPE_EXEC: &str = "ssh:exec";
/// Interactive shells (`shell` requests).
pub const SCOPE_SHELL: &str = "ssh:shell";
/// `direct-tcpip` channels (ssh -L, and ssh -D's connections).
pub const SCOPE_FORWARD_LOCAL: &str = "ssh:forward-local";
/// `tcpip-forward` listeners and their `forwarded-tcpip` channels (ssh -R).
pub const SCOPE_FORWARD_REMOTE: &str = "ssh:forward-remote";
/// SOCKS5 through `alknet socks`: `direct-tcpip` channels, like `ssh:forward-local`.
pub const SCOPE_SOCKS: &str = "ssh:socks";
/// Agent forwarding (`ssh -A`): a socket in the session's `SSH_AUTH_SOCK` whose
/// connections go back to the client's agent as `auth-agent@openssh.com` channels.
pub const SCOPE_FORWARD_AGENT: &str = "ssh:forward-agent";
/// X11 forwarding (`ssh -X`): a display on this host whose connections go back to the
/// client's X server as `x11` channels.
pub const SCOPE_FORWARD_X11: &str = "ssh:forward-x11";
/// The `sftp` subsystem (served when the binary registers it; then `sftp:read` /
/// `sftp:write` per request).
pub const SCOPE_SFTP: &str = "ssh:sftp";

/// Something a session asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshAction {
    /// Open a `session` channel: any authenticated identity (what runs in it is checked
    /// per request).
    OpenSession,
    Exec,
    Shell,
    ForwardLocal,
    ForwardRemote,
    ForwardAgent,
    ForwardX11,
}

impl SshAction {
    /// The resource named in denials and logs.
    pub fn resource(self) -> &'static str {
        match self {
            SshAction::OpenSession => "ssh session channel",
            SshAction::Exec => "ssh exec",
            SshAction::Shell => "ssh shell",
            SshAction::ForwardLocal => "ssh direct-tcpip",
            SshAction::ForwardRemote => "ssh tcpip-forward",
            SshAction::ForwardAgent => "ssh agent forwarding",
            SshAction::ForwardX11 => "ssh X11 forwarding",
        }
    }

    /// The scope the action needs; `None` for "authenticated is enough".
    pub fn scope(self) -> Option<&'static str> {
        match self {
            SshAction::OpenSession => None,
            SshAction::Exec => Some(SCOPE_EXEC),
            SshAction::Shell => Some(SCOPE_SHELL),
            SshAction::ForwardLocal => Some(SCOPE_FORWARD_LOCAL),
            SshAction::ForwardRemote => Some(SCOPE_FORWARD_REMOTE),
            SshAction::ForwardAgent => Some(SCOPE_FORWARD_AGENT),
            SshAction::ForwardX11 => Some(SCOPE_FORWARD_X11),
        }
    }
}

/// Grants `action` to `identity`, or says why not. Anonymous sessions get nothing.
///
/// `direct-tcpip` is granted by `ssh:socks` as well as `ssh:forward-local`: a SOCKS proxy
/// (`alknet socks`, `ssh -D`) is a client-side front for exactly those channels, and the
/// server cannot tell them apart on the wire.
pub fn authorize(identity: Option<&Identity>, action: SshAction) -> Result<(), AccessDenied> {
    if action == SshAction::ForwardLocal && identity.is_some_and(|i| i.has_scope(SCOPE_SOCKS)) {
        return Ok(());
    }
    let Some(scope) = action.scope() else {
        return match identity {
            Some(_) => Ok(()),
            None => Err(AccessDenied::Anonymous {
                resource: action.resource().to_string(),
                missing: "(authentication)".to_string(),
            }),
        };
    };
    AccessControl::check(
        identity,
        action.resource(),
        &Requirement::Scopes(vec![scope.to_string()]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(scopes: &[&str]) -> Identity {
        Identity {
            name: "alice".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn each_action_needs_its_own_scope() {
        let all = [
            SshAction::Exec,
            SshAction::Shell,
            SshAction::ForwardLocal,
            SshAction::ForwardRemote,
        ];
        for action in all {
            let scope = action.scope().expect("scoped");
            assert!(authorize(Some(&id(&[scope])), action).is_ok(), "{action:?}");
            // every other scope, but not this one: denied (ssh:socks aside, which also
            // grants direct-tcpip; see socks_scope_grants_direct_tcpip_only)
            let others: Vec<&str> = all
                .iter()
                .filter_map(|a| a.scope())
                .filter(|s| *s != scope)
                .chain([SCOPE_SFTP])
                .chain((action != SshAction::ForwardLocal).then_some(SCOPE_SOCKS))
                .collect();
            let e = authorize(Some(&id(&others)), action).expect_err("missing scope");
            assert!(e.to_string().contains(scope), "{e}");
            assert!(authorize(None, action).is_err());
        }
    }

    #[test]
    fn sessions_need_only_authentication() {
        assert!(authorize(Some(&id(&[])), SshAction::OpenSession).is_ok());
        assert!(matches!(
            authorize(None, SshAction::OpenSession),
            Err(AccessDenied::Anonymous { .. })
        ));
        // no wildcards
        assert!(authorize(Some(&id(&["ssh:*"])), SshAction::Exec).is_err());
        assert!(authorize(Some(&id(&["ssh"])), SshAction::Shell).is_err());
    }

    #[test]
    fn socks_scope_grants_direct_tcpip_only() {
        let socks = id(&[SCOPE_SOCKS]);
        assert!(authorize(Some(&socks), SshAction::ForwardLocal).is_ok());
        assert!(authorize(Some(&socks), SshAction::ForwardRemote).is_err());
        assert!(authorize(Some(&socks), SshAction::Exec).is_err());
        assert!(authorize(None, SshAction::ForwardLocal).is_err());
    }
}
