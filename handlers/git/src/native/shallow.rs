//! Shallow clones and fetches: the client's `shallow` lines (commits it holds without
//! their parents) and `deepen N`, `deepen-relative`, `deepen-since T`, `deepen-not REF`,
//! as git's upload-pack serves them (`gitprotocol-pack.adoc`, "Shallow"; v2's
//! `shallow-info` section).
//!
//! A deepen request draws a new boundary: the commits sent whose parents are not (`shallow`
//! lines back to the client), and the client's shallow commits whose parents now come
//! (`unshallow`). The object walk ([`super::objects`]) then treats the client's shallow
//! commits as parentless on the client's side, and the new boundary as parentless on the
//! sending side.

use std::collections::{HashMap, HashSet, VecDeque};

use gix::hash::ObjectId;
use gix::objs::{CommitRefIter, Find};

use super::objects::{commit_links, lookup, need, peel};

/// What the client said about shallowness.
#[derive(Debug, Default, Clone)]
pub struct DeepenRequest {
    /// `shallow <oid>`: commits the client has without their parents.
    pub client_shallow: Vec<ObjectId>,
    /// `deepen <n>`: at most this many commits from each want (or, with `relative`, this
    /// many more behind the client's shallow commits).
    pub depth: Option<u32>,
    pub relative: bool,
    /// `deepen-since <seconds>`: no commits older than this.
    pub since: Option<i64>,
    /// `deepen-not <ref>` (resolved): no commits reachable from these.
    pub not: Vec<ObjectId>,
}

impl DeepenRequest {
    /// A new boundary is asked for.
    pub fn deepens(&self) -> bool {
        self.depth.is_some() || self.since.is_some() || !self.not.is_empty()
    }

    /// Anything shallow in this fetch (the response then has a `shallow-info` section).
    pub fn is_shallow(&self) -> bool {
        self.deepens() || !self.client_shallow.is_empty()
    }
}

/// The boundary a fetch uses.
#[derive(Debug, Default)]
pub struct ShallowPlan {
    /// The client's shallow commits that the repository has.
    pub client_shallow: HashSet<ObjectId>,
    /// Sent commits whose parents are not sent: `shallow` lines (those the client does
    /// not already hold as shallow).
    pub shallow: Vec<ObjectId>,
    /// Every commit whose parents are not sent (the new boundary and the client's shallow
    /// commits that stay so).
    pub cut: HashSet<ObjectId>,
    /// Client shallow commits whose parents are sent now: `unshallow` lines.
    pub unshallow: Vec<ObjectId>,
}

fn parents(db: &dyn Find, id: &ObjectId) -> Result<Vec<ObjectId>, String> {
    let (_, data) = need(db, id)?;
    Ok(commit_links(&data)?.1)
}

fn commit_time(db: &dyn Find, id: &ObjectId) -> Result<i64, String> {
    let (_, data) = need(db, id)?;
    let committer = CommitRefIter::from_bytes(&data, gix::hash::Kind::Sha1)
        .committer()
        .map_err(|e| format!("bad commit {id}: {e}"))?;
    Ok(committer.seconds())
}

/// The commits reachable from `tips` (for `deepen-not`), at most `limit`.
fn reachable(db: &dyn Find, tips: &[ObjectId], limit: usize) -> Result<HashSet<ObjectId>, String> {
    let mut seen = HashSet::new();
    let mut queue: VecDeque<ObjectId> = tips.iter().copied().collect();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        if seen.len() > limit {
            return Err(format!("deepen-not: more than {limit} commits"));
        }
        queue.extend(parents(db, &id)?);
    }
    Ok(seen)
}

/// Draws the boundary for `request`: `wants` are the wanted commits (tags peeled), and
/// `have_commits` what the client holds (its shallow commits' parents excluded). At most
/// `limit` commits are walked.
pub fn plan(
    db: &dyn Find,
    wants: &[ObjectId],
    have_commits: &HashSet<ObjectId>,
    request: &DeepenRequest,
    limit: usize,
) -> Result<ShallowPlan, String> {
    let mut plan = ShallowPlan::default();
    for id in &request.client_shallow {
        if lookup(db, id)?.is_some() {
            plan.client_shallow.insert(*id);
        }
    }
    if !request.deepens() {
        // a shallow client fetching normally: its boundary stays where it is
        plan.cut = plan.client_shallow.clone();
        return Ok(plan);
    }
    let excluded = reachable(db, &request.not, limit)?;
    // depth of each commit from the roots (1 = a root); None = no depth limit
    let (roots, max_depth): (Vec<ObjectId>, Option<u32>) = match request.depth {
        Some(depth) if request.relative => (
            plan.client_shallow.iter().copied().collect(),
            Some(depth.saturating_add(1)),
        ),
        Some(depth) => (wants.to_vec(), Some(depth.max(1))),
        None => (wants.to_vec(), None),
    };
    let included = |id: &ObjectId| -> Result<bool, String> {
        if excluded.contains(id) {
            return Ok(false);
        }
        match request.since {
            Some(since) => Ok(commit_time(db, id)? >= since),
            None => Ok(true),
        }
    };
    let mut depth_of: HashMap<ObjectId, u32> = HashMap::new();
    let mut queue: VecDeque<ObjectId> = VecDeque::new();
    for root in roots {
        if let Ok((id, gix::objs::Kind::Commit)) = peel(db, root) {
            if !included(&id)? {
                return Err("no commits selected for shallow requests".into());
            }
            if depth_of.insert(id, 1).is_none() {
                queue.push_back(id);
            }
        }
    }
    while let Some(id) = queue.pop_front() {
        if depth_of.len() > limit {
            return Err(format!("shallow: more than {limit} commits"));
        }
        let depth = depth_of[&id];
        let is_client_shallow = plan.client_shallow.contains(&id);
        if have_commits.contains(&id) && !is_client_shallow {
            continue; // the client has it and all behind it
        }
        let parents = parents(db, &id)?;
        let at_limit = max_depth.is_some_and(|m| depth >= m);
        let mut cut = at_limit;
        if !cut {
            for p in &parents {
                if !included(p)? {
                    cut = true;
                    break;
                }
            }
        }
        if cut {
            plan.cut.insert(id);
            if !parents.is_empty() && !is_client_shallow {
                plan.shallow.push(id);
            }
            continue;
        }
        if is_client_shallow && !parents.is_empty() {
            plan.unshallow.push(id);
        }
        for p in parents {
            if let std::collections::hash_map::Entry::Vacant(e) = depth_of.entry(p) {
                e.insert(depth + 1);
                queue.push_back(p);
            }
        }
    }
    // the client's shallow commits this walk did not reach stay shallow
    for id in &plan.client_shallow {
        if !plan.unshallow.contains(id) {
            plan.cut.insert(*id);
        }
    }
    Ok(plan)
}
