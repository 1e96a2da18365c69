//! The SSH service's counters for `/metrics`: sessions, channels by type, requests and
//! refusals. Relaxed atomics shared by every session of the adapter, touched once per
//! session, channel or request (never per byte). A handler rebuilt by a reload of `[ssh]`
//! starts from zero, which Prometheus reads as a counter reset.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use alknet_runtime::HandlerMetric;

/// Channel types a client may open or the server opens (`forwarded-tcpip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    Session,
    DirectTcpip,
    ForwardedTcpip,
    /// `auth-agent@openssh.com`, opened towards the client for a forwarded agent.
    AuthAgent,
    /// `direct-streamlocal@openssh.com` (ssh -L to a Unix socket).
    DirectStreamlocal,
    /// `forwarded-streamlocal@openssh.com` (a connection to an ssh -R Unix socket).
    ForwardedStreamlocal,
    /// `x11`, opened towards the client for a connection to a forwarded X display.
    X11,
}

impl ChannelKind {
    const ALL: [ChannelKind; 7] = [
        Self::Session,
        Self::DirectTcpip,
        Self::ForwardedTcpip,
        Self::AuthAgent,
        Self::DirectStreamlocal,
        Self::ForwardedStreamlocal,
        Self::X11,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::DirectTcpip => "direct-tcpip",
            Self::ForwardedTcpip => "forwarded-tcpip",
            Self::AuthAgent => "auth-agent",
            Self::DirectStreamlocal => "direct-streamlocal",
            Self::ForwardedStreamlocal => "forwarded-streamlocal",
            Self::X11 => "x11",
        }
    }
}

/// Why a channel was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelRefusal {
    /// The identity lacks the scope.
    Denied,
    /// `max_channels_per_session` reached.
    Limit,
    /// The forward target did not answer (or the client refused a forwarded channel).
    ConnectFailed,
}

impl ChannelRefusal {
    const ALL: [ChannelRefusal; 3] = [Self::Denied, Self::Limit, Self::ConnectFailed];

    fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Limit => "limit",
            Self::ConnectFailed => "connect_failed",
        }
    }
}

/// Requests on a session channel (and the session-wide `tcpip-forward`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    Exec,
    Shell,
    Subsystem,
    TcpipForward,
    /// `auth-agent-req@openssh.com`.
    AgentForward,
    /// `streamlocal-forward@openssh.com`.
    StreamlocalForward,
    /// `x11-req`.
    X11Forward,
}

impl RequestKind {
    const ALL: [RequestKind; 7] = [
        Self::Exec,
        Self::Shell,
        Self::Subsystem,
        Self::TcpipForward,
        Self::AgentForward,
        Self::StreamlocalForward,
        Self::X11Forward,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Shell => "shell",
            Self::Subsystem => "subsystem",
            Self::TcpipForward => "tcpip-forward",
            Self::AgentForward => "auth-agent-req",
            Self::StreamlocalForward => "streamlocal-forward",
            Self::X11Forward => "x11-req",
        }
    }
}

/// Why authentication failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthRefusal {
    /// A key that resolves to no identity.
    UnknownKey,
    /// `auth_timeout_ms` passed before the session authenticated.
    Timeout,
    /// A user certificate that is not trusted (see `crate::certificate`).
    Certificate,
    /// A key or certificate that `[ssh] revoked_keys` revokes.
    Revoked,
    /// A known key whose `authorized_keys` options refuse the session (`from=`).
    Restricted,
}

#[derive(Debug, Default)]
pub(crate) struct SshMetrics {
    sessions_started: AtomicU64,
    sessions_closed: AtomicU64,
    sessions_authenticated: AtomicU64,
    auth_unknown_key: AtomicU64,
    auth_timeout: AtomicU64,
    auth_certificate: AtomicU64,
    auth_revoked: AtomicU64,
    auth_restricted: AtomicU64,
    channels_opened: [AtomicU64; ChannelKind::ALL.len()],
    /// By channel kind × refusal.
    channels_refused: [[AtomicU64; ChannelRefusal::ALL.len()]; ChannelKind::ALL.len()],
    requests: [AtomicU64; RequestKind::ALL.len()],
    requests_refused: [AtomicU64; RequestKind::ALL.len()],
}

impl SshMetrics {
    pub fn session_started(&self) {
        self.sessions_started.fetch_add(1, Relaxed);
    }

    pub fn session_closed(&self) {
        self.sessions_closed.fetch_add(1, Relaxed);
    }

    pub fn authenticated(&self) {
        self.sessions_authenticated.fetch_add(1, Relaxed);
    }

    pub fn auth_refused(&self, why: AuthRefusal) {
        match why {
            AuthRefusal::UnknownKey => &self.auth_unknown_key,
            AuthRefusal::Timeout => &self.auth_timeout,
            AuthRefusal::Certificate => &self.auth_certificate,
            AuthRefusal::Revoked => &self.auth_revoked,
            AuthRefusal::Restricted => &self.auth_restricted,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn channel_opened(&self, kind: ChannelKind) {
        self.channels_opened[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn channel_refused(&self, kind: ChannelKind, why: ChannelRefusal) {
        self.channels_refused[kind as usize][why as usize].fetch_add(1, Relaxed);
    }

    /// A request served (`true`) or refused.
    pub fn request(&self, kind: RequestKind, served: bool) {
        if served {
            &self.requests[kind as usize]
        } else {
            &self.requests_refused[kind as usize]
        }
        .fetch_add(1, Relaxed);
    }

    /// The snapshot a scrape exports.
    pub fn snapshot(&self) -> Vec<HandlerMetric> {
        let started = self.sessions_started.load(Relaxed);
        let closed = self.sessions_closed.load(Relaxed);
        let mut out = vec![
            HandlerMetric::counter(
                "ssh_sessions_started",
                "SSH sessions started (one per alknet/ssh stream)",
                started,
            ),
            HandlerMetric::gauge(
                "ssh_sessions_open",
                "SSH sessions running now",
                started.saturating_sub(closed),
            ),
            HandlerMetric::counter(
                "ssh_sessions_authenticated",
                "SSH sessions whose public-key authentication succeeded",
                self.sessions_authenticated.load(Relaxed),
            ),
        ];
        for (reason, n) in [
            ("unknown_key", &self.auth_unknown_key),
            ("timeout", &self.auth_timeout),
            ("certificate", &self.auth_certificate),
            ("revoked", &self.auth_revoked),
            ("restricted", &self.auth_restricted),
        ] {
            out.push(
                HandlerMetric::counter(
                    "ssh_auth_refusals",
                    "SSH authentication refusals, by reason",
                    n.load(Relaxed),
                )
                .with_label("reason", reason),
            );
        }
        for kind in ChannelKind::ALL {
            out.push(
                HandlerMetric::counter(
                    "ssh_channels_opened",
                    "SSH channels opened, by channel type",
                    self.channels_opened[kind as usize].load(Relaxed),
                )
                .with_label("type", kind.as_str()),
            );
            for why in ChannelRefusal::ALL {
                out.push(
                    HandlerMetric::counter(
                        "ssh_channels_refused",
                        "SSH channel opens refused, by channel type and reason",
                        self.channels_refused[kind as usize][why as usize].load(Relaxed),
                    )
                    .with_label("type", kind.as_str())
                    .with_label("reason", why.as_str()),
                );
            }
        }
        for kind in RequestKind::ALL {
            out.push(
                HandlerMetric::counter(
                    "ssh_requests",
                    "SSH requests served, by kind",
                    self.requests[kind as usize].load(Relaxed),
                )
                .with_label("kind", kind.as_str()),
            );
            out.push(
                HandlerMetric::counter(
                    "ssh_requests_refused",
                    "SSH requests refused (scope, limits, bad arguments), by kind",
                    self.requests_refused[kind as usize].load(Relaxed),
                )
                .with_label("kind", kind.as_str()),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(snapshot: &[HandlerMetric], name: &str, labels: &[(&str, &str)]) -> u64 {
        snapshot
            .iter()
            .find(|m| {
                m.name == name
                    && m.labels.len() == labels.len()
                    && labels.iter().all(|l| m.labels.contains(l))
            })
            .map(|m| m.value)
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
    }

    #[test]
    fn the_snapshot_reports_what_was_counted_under_its_labels() {
        let m = SshMetrics::default();
        m.session_started();
        m.session_started();
        m.session_closed();
        m.auth_refused(AuthRefusal::UnknownKey);
        m.channel_opened(ChannelKind::DirectTcpip);
        m.channel_refused(ChannelKind::Session, ChannelRefusal::Limit);
        m.request(RequestKind::Exec, true);
        m.request(RequestKind::Subsystem, false);
        let s = m.snapshot();
        assert_eq!(value(&s, "ssh_sessions_started", &[]), 2);
        assert_eq!(value(&s, "ssh_sessions_open", &[]), 1);
        assert_eq!(
            value(&s, "ssh_auth_refusals", &[("reason", "unknown_key")]),
            1
        );
        assert_eq!(value(&s, "ssh_auth_refusals", &[("reason", "timeout")]), 0);
        assert_eq!(
            value(&s, "ssh_channels_opened", &[("type", "direct-tcpip")]),
            1
        );
        assert_eq!(
            value(
                &s,
                "ssh_channels_refused",
                &[("type", "session"), ("reason", "limit")]
            ),
            1
        );
        assert_eq!(value(&s, "ssh_requests", &[("kind", "exec")]), 1);
        assert_eq!(
            value(&s, "ssh_requests_refused", &[("kind", "subsystem")]),
            1
        );
        // every family agrees on its help text and kind
        for a in &s {
            for b in s.iter().filter(|b| b.name == a.name) {
                assert_eq!((a.help, a.kind), (b.help, b.kind));
            }
        }
    }
}
