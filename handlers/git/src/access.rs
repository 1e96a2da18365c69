//! Who may read, push to and create which repository. Default deny.
//!
//! | scope | grants |
//! | --- | --- |
//! | `git:read` | clone and fetch every repository |
//! | `git:write` | push to (and so also read) every repository |
//! | `git:read:<path>` | clone and fetch `<path>` (`<path>/*`: everything below it) |
//! | `git:write:<path>` | push to and read `<path>` (or the subtree) |
//! | `git:create` | create any repository by pushing to a path that does not exist |
//! | `git:create:<path>` | the same, for `<path>` or a subtree (`team/*`) |
//!
//! Paths are relative to `[git] root`, written with or without a leading `/` and with or
//! without the `.git` suffix (`git:read:team/app` covers `team/app.git`). A lone `*`
//! covers everything. `[git] public_read` lists the same patterns, readable by anyone,
//! anonymous peers included.

use alknet_runtime::{AccessDenied, Identity};

pub const SCOPE_READ: &str = "git:read";
pub const SCOPE_WRITE: &str = "git:write";
pub const SCOPE_CREATE: &str = "git:create";

/// What a request wants to do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitAction {
    /// upload-pack: clone, fetch.
    Read,
    /// receive-pack: push.
    Write,
    /// receive-pack to a path with no repository yet.
    Create,
}

impl GitAction {
    fn scope(self) -> &'static str {
        match self {
            GitAction::Read => SCOPE_READ,
            GitAction::Write => SCOPE_WRITE,
            GitAction::Create => SCOPE_CREATE,
        }
    }
}

fn strip_git(p: &str) -> &str {
    p.strip_suffix(".git").unwrap_or(p)
}

/// Whether `pattern` (a path, `prefix/*`, or `*`) covers the repository `repo` (a
/// normalized path relative to the root).
pub fn pattern_matches(pattern: &str, repo: &str) -> bool {
    let pattern = pattern.trim_start_matches('/');
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix("/*") {
        let prefix = prefix.trim_end_matches('/');
        return !prefix.is_empty()
            && repo.len() > prefix.len()
            && repo.starts_with(prefix)
            && repo.as_bytes()[prefix.len()] == b'/';
    }
    !pattern.is_empty() && strip_git(pattern.trim_end_matches('/')) == strip_git(repo)
}

/// Whether `identity` holds `scope` for `repo`: `scope` itself, or `scope:<pattern>`
/// with a pattern covering it.
fn holds(identity: &Identity, scope: &str, repo: &str) -> bool {
    identity.scopes.iter().any(|s| {
        s == scope
            || s.strip_prefix(scope)
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|pattern| pattern_matches(pattern, repo))
    })
}

/// Grants `action` on `repo` to `identity`, or says why not. Write implies read; create
/// is its own scope.
pub fn authorize(
    identity: Option<&Identity>,
    repo: &str,
    action: GitAction,
    public_read: &[String],
) -> Result<(), AccessDenied> {
    if action == GitAction::Read && public_read.iter().any(|p| pattern_matches(p, repo)) {
        return Ok(());
    }
    let granted = identity.is_some_and(|id| match action {
        GitAction::Read => holds(id, SCOPE_READ, repo) || holds(id, SCOPE_WRITE, repo),
        GitAction::Write => holds(id, SCOPE_WRITE, repo),
        GitAction::Create => holds(id, SCOPE_CREATE, repo),
    });
    if granted {
        return Ok(());
    }
    let resource = format!("git repository {repo}");
    let missing = format!("{}:{repo}", action.scope());
    Err(match identity {
        None => AccessDenied::Anonymous { resource, missing },
        Some(id) => AccessDenied::MissingScope {
            resource,
            identity: id.name.clone(),
            missing,
        },
    })
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
    fn patterns() {
        assert!(pattern_matches("team/app", "team/app.git"));
        assert!(pattern_matches("/team/app.git", "team/app.git"));
        assert!(pattern_matches("team/app.git", "team/app"));
        assert!(!pattern_matches("team/ap", "team/app.git"));
        assert!(!pattern_matches("team", "team/app.git"));
        assert!(pattern_matches("team/*", "team/app.git"));
        assert!(pattern_matches("team/*", "team/sub/app.git"));
        assert!(!pattern_matches("team/*", "teamx/app.git"));
        assert!(!pattern_matches("team/*", "team"));
        assert!(pattern_matches("/*", "team.git"), "the whole root");
        assert!(pattern_matches("*", "anything.git"));
        assert!(!pattern_matches("", "x.git"));
    }

    #[test]
    fn default_deny_and_scopes() {
        let none: &[String] = &[];
        let repo = "team/app.git";
        for action in [GitAction::Read, GitAction::Write, GitAction::Create] {
            assert!(matches!(
                authorize(None, repo, action, none),
                Err(AccessDenied::Anonymous { .. })
            ));
            assert!(authorize(Some(&id(&[])), repo, action, none).is_err());
        }
        let reader = id(&["git:read"]);
        assert!(authorize(Some(&reader), repo, GitAction::Read, none).is_ok());
        let e = authorize(Some(&reader), repo, GitAction::Write, none).expect_err("ro");
        assert!(e.to_string().contains("git:write:team/app.git"), "{e}");
        let writer = id(&["git:write:team/*"]);
        assert!(authorize(Some(&writer), repo, GitAction::Write, none).is_ok());
        assert!(authorize(Some(&writer), repo, GitAction::Read, none).is_ok());
        assert!(authorize(Some(&writer), "other.git", GitAction::Read, none).is_err());
        assert!(authorize(Some(&writer), repo, GitAction::Create, none).is_err());
        let one = id(&["git:read:team/app"]);
        assert!(authorize(Some(&one), repo, GitAction::Read, none).is_ok());
        assert!(authorize(Some(&one), "team/app2.git", GitAction::Read, none).is_err());
        // no prefix tricks: "git:reader" is not "git:read"
        let odd = id(&["git:reader", "git:readx:team/app", "git:*", "git"]);
        for action in [GitAction::Read, GitAction::Write, GitAction::Create] {
            assert!(authorize(Some(&odd), repo, action, none).is_err());
        }
        let creator = id(&["git:create:new/*"]);
        assert!(authorize(Some(&creator), "new/x.git", GitAction::Create, none).is_ok());
        assert!(authorize(Some(&creator), "x.git", GitAction::Create, none).is_err());
        assert!(authorize(Some(&id(&["git:create"])), "x.git", GitAction::Create, none).is_ok());
    }

    #[test]
    fn public_read_is_read_only() {
        let public = vec!["pub/*".to_string(), "readme.git".to_string()];
        assert!(authorize(None, "pub/a.git", GitAction::Read, &public).is_ok());
        assert!(authorize(None, "readme", GitAction::Read, &public).is_ok());
        assert!(authorize(None, "priv.git", GitAction::Read, &public).is_err());
        assert!(authorize(None, "pub/a.git", GitAction::Write, &public).is_err());
        assert!(authorize(None, "pub/b.git", GitAction::Create, &public).is_err());
    }
}
