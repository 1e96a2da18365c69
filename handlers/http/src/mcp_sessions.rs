//! The MCP Streamable HTTP sessions of `POST /mcp`: an id issued at `initialize`
//! (`Mcp-Session-Id`), required on every later request, ended by `DELETE /mcp` or after
//! `mcp_session_idle_timeout_ms` unused. A session belongs to the identity that opened it
//! (another identity presenting its id gets 404, as for an unknown id).
//!
//! The table holds at most `mcp_max_sessions`. When it is full, `initialize` first drops
//! expired sessions and then the least recently used one: anyone may initialize (MCP has
//! no cost to it), so refusing new sessions at the bound would let one client lock
//! everyone out, while evicting costs the evicted client one 404 and a new `initialize`,
//! which MCP clients do on a 404. Shared by every worker behind one mutex, which only MCP
//! requests take (never the packet path).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The header carrying the session id.
pub const SESSION_HEADER: &str = "mcp-session-id";

struct Session {
    /// The identity that opened it (`None`: anonymous).
    owner: Option<String>,
    last_used: Instant,
}

/// What [`McpSessions::touch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Known, not expired, same owner: its idle clock restarted.
    Live,
    /// Unknown, expired, ended, or opened by another identity.
    Unknown,
}

#[derive(Default)]
pub struct McpSessions {
    table: Mutex<HashMap<String, Session>>,
}

impl McpSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // every update is a single map operation: a panic cannot leave it half done
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for `owner`; returns its id and how many sessions were dropped to
    /// make room (expired ones, then the least recently used) under `max`.
    pub fn open(
        &self,
        owner: Option<&str>,
        now: Instant,
        max: usize,
        idle: Duration,
    ) -> (String, usize) {
        let id = format!("{:032x}", rand::random::<u128>());
        let mut table = self.lock();
        let mut dropped = 0;
        if table.len() >= max {
            let before = table.len();
            table.retain(|_, s| now.saturating_duration_since(s.last_used) < idle);
            dropped += before - table.len();
        }
        while table.len() >= max.max(1) {
            let oldest = table
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    table.remove(&k);
                    dropped += 1;
                }
                None => break,
            }
        }
        table.insert(
            id.clone(),
            Session {
                owner: owner.map(str::to_string),
                last_used: now,
            },
        );
        (id, dropped)
    }

    /// Checks `id` for a request of `owner` and restarts its idle clock; an expired
    /// session is removed.
    pub fn touch(&self, id: &str, owner: Option<&str>, now: Instant, idle: Duration) -> Lookup {
        let mut table = self.lock();
        let Some(s) = table.get_mut(id) else {
            return Lookup::Unknown;
        };
        if now.saturating_duration_since(s.last_used) >= idle {
            table.remove(id);
            return Lookup::Unknown;
        }
        if s.owner.as_deref() != owner {
            return Lookup::Unknown;
        }
        s.last_used = now;
        Lookup::Live
    }

    /// Ends `id` if `owner` opened it; false when there was no such session of theirs.
    pub fn end(&self, id: &str, owner: Option<&str>) -> bool {
        let mut table = self.lock();
        if table.get(id).is_some_and(|s| s.owner.as_deref() == owner) {
            table.remove(id);
            return true;
        }
        false
    }

    /// Sessions held now (expired ones included until something drops them).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn a_session_lives_until_ended_or_idle() {
        let t = McpSessions::default();
        let t0 = Instant::now();
        let (a, dropped) = t.open(Some("alice"), t0, 8, IDLE);
        assert_eq!((a.len(), dropped), (32, 0));
        assert_eq!(
            t.touch(&a, Some("alice"), t0 + IDLE / 2, IDLE),
            Lookup::Live
        );
        // the idle clock restarted at IDLE/2
        assert_eq!(t.touch(&a, Some("alice"), t0 + IDLE, IDLE), Lookup::Live);
        // another identity, or none, cannot use it
        assert_eq!(t.touch(&a, Some("bob"), t0 + IDLE, IDLE), Lookup::Unknown);
        assert_eq!(t.touch(&a, None, t0 + IDLE, IDLE), Lookup::Unknown);
        assert!(!t.end(&a, Some("bob")));
        assert!(t.end(&a, Some("alice")));
        assert_eq!(t.touch(&a, Some("alice"), t0 + IDLE, IDLE), Lookup::Unknown);
        assert!(!t.end(&a, Some("alice")));

        let (b, _) = t.open(None, t0, 8, IDLE);
        assert_eq!(t.touch(&b, None, t0 + IDLE * 2, IDLE), Lookup::Unknown);
        assert!(t.is_empty(), "the expired session was removed");
    }

    #[test]
    fn a_full_table_drops_expired_then_least_recently_used() {
        let t = McpSessions::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let (old, _) = t.open(None, t0, 3, IDLE);
        let (mid, _) = t.open(None, t0 + s, 3, IDLE);
        let (new, _) = t.open(None, t0 + 2 * s, 3, IDLE);
        // `old` was used last: `mid` is now the least recently used
        assert_eq!(t.touch(&old, None, t0 + 3 * s, IDLE), Lookup::Live);
        let (fourth, dropped) = t.open(None, t0 + 4 * s, 3, IDLE);
        assert_eq!((dropped, t.len()), (1, 3));
        assert_eq!(t.touch(&mid, None, t0 + 4 * s, IDLE), Lookup::Unknown);
        for id in [&old, &new, &fourth] {
            assert_eq!(t.touch(id, None, t0 + 4 * s, IDLE), Lookup::Live);
        }
        // all three idle past the timeout: all dropped for the next one
        let (_, dropped) = t.open(None, t0 + 4 * s + IDLE, 3, IDLE);
        assert_eq!((dropped, t.len()), (3, 1));
    }
}
