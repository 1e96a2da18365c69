//! Per-node access control: a flat scope match with default deny.
//!
//! Each node authorizes its *direct* caller only. An identity forwarded inside a request
//! (a hub calling on behalf of a user) is metadata and never reaches this check: the
//! signature takes the authenticated identity and nothing else, so it cannot be misused.

use crate::identity::Identity;

/// Why access was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    /// Nobody authenticated and the resource is not public.
    #[error("{resource}: authentication required (needs scope {missing:?})")]
    Anonymous { resource: String, missing: String },
    /// The identity lacks a required scope.
    #[error("{resource}: identity {identity:?} lacks scope {missing:?}")]
    MissingScope {
        resource: String,
        identity: String,
        missing: String,
    },
}

/// What a resource (an operation, a topic, a channel type) requires of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Anyone, including anonymous peers. Must be chosen explicitly.
    Public,
    /// Every listed scope, each matched exactly. An empty list denies everyone (it is not
    /// a way to say "public"), so forgetting to list scopes fails closed.
    Scopes(Vec<String>),
}

/// The ACL check. Stateless: the scopes come from the identity provider at resolution
/// time (a future delegation graph would compute effective scopes there, not here).
#[derive(Debug, Default, Clone, Copy)]
pub struct AccessControl;

impl AccessControl {
    /// Grants iff the requirement is public or `identity` holds every required scope.
    pub fn check(
        identity: Option<&Identity>,
        resource: &str,
        requirement: &Requirement,
    ) -> Result<(), AccessDenied> {
        let scopes = match requirement {
            Requirement::Public => return Ok(()),
            Requirement::Scopes(s) => s,
        };
        // An empty scope list would grant everyone; treat it as unsatisfiable instead.
        let Some(first_missing) = scopes
            .iter()
            .find(|s| !identity.is_some_and(|id| id.has_scope(s)))
            .or(scopes.is_empty().then_some(&String::new()))
            .cloned()
        else {
            return Ok(());
        };
        Err(match identity {
            None => AccessDenied::Anonymous {
                resource: resource.to_string(),
                missing: first_missing,
            },
            Some(id) => AccessDenied::MissingScope {
                resource: resource.to_string(),
                identity: id.name.clone(),
                missing: first_missing,
            },
        })
    }
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

    fn needs(s: &[&str]) -> Requirement {
        Requirement::Scopes(s.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn default_deny_flat_match() {
        let op = "op";
        assert!(AccessControl::check(None, op, &Requirement::Public).is_ok());
        assert!(matches!(
            AccessControl::check(None, op, &needs(&["a"])),
            Err(AccessDenied::Anonymous { .. })
        ));
        assert!(AccessControl::check(Some(&id(&["a", "b"])), op, &needs(&["a", "b"])).is_ok());
        let e = AccessControl::check(Some(&id(&["a"])), op, &needs(&["a", "b"]))
            .expect_err("b missing");
        assert!(e.to_string().contains("\"b\""), "{e}");
        // no prefix or wildcard semantics
        assert!(AccessControl::check(Some(&id(&["call:*"])), op, &needs(&["call:x"])).is_err());
        assert!(AccessControl::check(Some(&id(&["call"])), op, &needs(&["call:x"])).is_err());
        // an empty requirement denies rather than grants
        assert!(AccessControl::check(Some(&id(&["a"])), op, &needs(&[])).is_err());
    }
}
