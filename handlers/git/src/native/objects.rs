//! What a fetch sends, and how the pack is written: the object graph walked over gix's
//! object database, packs built with `gix-pack` reusing the deltas already stored.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use gix::hash::{oid, ObjectId};
use gix::objs::{CommitRefIter, Find, Kind, TagRefIter, TreeRefIter};
use gix_pack::data::output;

/// The object database handle the backend works with: shareable across threads, as the
/// pack entry generator wants.
pub type Db = gix::odb::Cache<gix::odb::store::Handle<Arc<gix::odb::Store>>>;

/// Opens `dir` (a bare repository) without reading anything but its own configuration
/// (no environment, no user or system config).
pub fn open(dir: &std::path::Path) -> Result<(gix::Repository, Db), String> {
    let repo = gix::open_opts(dir, gix::open::Options::isolated())
        .map_err(|e| format!("cannot open the repository: {e}"))?;
    let mut db = repo
        .objects
        .clone()
        .into_inner()
        .into_arc()
        .map_err(|e| format!("cannot open the object database: {e}"))?;
    // pack entries are copied by location: the packs must stay mapped meanwhile
    db.prevent_pack_unload();
    Ok((repo, db))
}

/// An object's kind and bytes, `None` if it is not in `db`.
pub fn lookup(db: &dyn Find, id: &oid) -> Result<Option<(Kind, Vec<u8>)>, String> {
    let mut buf = Vec::new();
    match db.try_find(id, &mut buf) {
        Ok(Some(data)) => {
            let kind = data.kind;
            Ok(Some((kind, buf)))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(format!("reading object {id}: {e}")),
    }
}

/// An object that must be there.
pub fn need(db: &dyn Find, id: &oid) -> Result<(Kind, Vec<u8>), String> {
    lookup(db, id)?.ok_or_else(|| format!("object {id} is missing"))
}

/// A commit's tree and parents.
pub fn commit_links(data: &[u8]) -> Result<(ObjectId, Vec<ObjectId>), String> {
    let mut iter = CommitRefIter::from_bytes(data, gix::hash::Kind::Sha1);
    let tree = iter.tree_id().map_err(|e| format!("bad commit: {e}"))?;
    let parents = iter.parent_ids().collect();
    Ok((tree, parents))
}

/// A tag's target.
pub fn tag_target(data: &[u8]) -> Result<ObjectId, String> {
    TagRefIter::from_bytes(data, gix::hash::Kind::Sha1)
        .target_id()
        .map_err(|e| format!("bad tag: {e}"))
}

/// Follows tags to the object they finally name.
pub fn peel(db: &dyn Find, id: ObjectId) -> Result<(ObjectId, Kind), String> {
    let mut id = id;
    // bounded: a tag chain longer than this is not worth following
    for _ in 0..32 {
        let (kind, data) = need(db, &id)?;
        if kind != Kind::Tag {
            return Ok((id, kind));
        }
        id = tag_target(&data)?;
    }
    Err(format!("tag chain at {id} is too long"))
}

/// Every commit reachable from `tips` (tags peeled; other kinds skipped).
fn reachable_commits(db: &dyn Find, tips: &[ObjectId]) -> Result<HashSet<ObjectId>, String> {
    let mut seen = HashSet::new();
    let mut queue: VecDeque<ObjectId> = VecDeque::new();
    for tip in tips {
        if let Ok((id, Kind::Commit)) = peel(db, *tip) {
            queue.push_back(id);
        }
    }
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        let (_, data) = need(db, &id)?;
        let (_, parents) = commit_links(&data)?;
        queue.extend(parents.into_iter().filter(|p| !seen.contains(p)));
    }
    Ok(seen)
}

/// Marks `tree` and everything below it in `seen`; with `out`, also lists what was not
/// seen before (trees before their contents).
fn walk_tree(
    db: &dyn Find,
    tree: ObjectId,
    seen: &mut HashSet<ObjectId>,
    mut out: Option<&mut Vec<ObjectId>>,
) -> Result<(), String> {
    if !seen.insert(tree) {
        return Ok(());
    }
    let mut stack = vec![tree];
    if let Some(out) = out.as_deref_mut() {
        out.push(tree);
    }
    while let Some(id) = stack.pop() {
        let (_, data) = need(db, &id)?;
        for entry in TreeRefIter::from_bytes(&data, gix::hash::Kind::Sha1) {
            let entry = entry.map_err(|e| format!("bad tree {id}: {e}"))?;
            // submodule commits live in other repositories
            if entry.mode.is_commit() {
                continue;
            }
            let child = entry.oid.to_owned();
            if !seen.insert(child) {
                continue;
            }
            if let Some(out) = out.as_deref_mut() {
                out.push(child);
            }
            if entry.mode.is_tree() {
                stack.push(child);
            }
        }
    }
    Ok(())
}

/// What to send a client that wants `wants` and has `common` (objects both sides have):
/// the commits reachable from the wants but not from `common`, their trees and blobs
/// except those the client's commits at the boundary already hold, and the wanted tags.
/// With `include_tags`, annotated tags (from `tags`: tag object ids) pointing at a sent
/// object come along.
pub fn objects_to_send(
    db: &dyn Find,
    wants: &[ObjectId],
    common: &[ObjectId],
    tags: &[ObjectId],
) -> Result<Vec<ObjectId>, String> {
    let have_commits = reachable_commits(db, common)?;
    let mut out = Vec::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    // wanted tags and non-commits; commits to walk
    let mut queue: VecDeque<ObjectId> = VecDeque::new();
    let mut loose_ends = Vec::new();
    for want in wants {
        let mut id = *want;
        loop {
            let (kind, data) = need(db, &id)?;
            match kind {
                Kind::Tag => {
                    if seen.insert(id) {
                        out.push(id);
                    }
                    id = tag_target(&data)?;
                }
                Kind::Commit => {
                    queue.push_back(id);
                    break;
                }
                Kind::Tree | Kind::Blob => {
                    loose_ends.push(id);
                    break;
                }
            }
        }
    }
    // the commits to send, newest first
    let mut commits = Vec::new();
    let mut queued: HashSet<ObjectId> = queue.iter().copied().collect();
    let mut boundary = HashSet::new();
    while let Some(id) = queue.pop_front() {
        if have_commits.contains(&id) {
            continue;
        }
        let (_, data) = need(db, &id)?;
        let (tree, parents) = commit_links(&data)?;
        commits.push((id, tree));
        for p in parents {
            if have_commits.contains(&p) {
                boundary.insert(p);
            } else if queued.insert(p) {
                queue.push_back(p);
            }
        }
    }
    // what the client's boundary commits hold is not sent again
    for id in &boundary {
        let (_, data) = need(db, id)?;
        let (tree, _) = commit_links(&data)?;
        walk_tree(db, tree, &mut seen, None)?;
    }
    for (id, _) in &commits {
        seen.insert(*id);
        out.push(*id);
    }
    for (_, tree) in &commits {
        walk_tree(db, *tree, &mut seen, Some(&mut out))?;
    }
    for id in loose_ends {
        let (kind, _) = need(db, &id)?;
        if kind == Kind::Tree {
            walk_tree(db, id, &mut seen, Some(&mut out))?;
        } else if seen.insert(id) {
            out.push(id);
        }
    }
    let sent_commits: HashSet<ObjectId> = commits.iter().map(|(id, _)| *id).collect();
    for tag in tags {
        if seen.contains(tag) {
            continue;
        }
        let (_, data) = need(db, tag)?;
        if sent_commits.contains(&tag_target(&data)?) {
            seen.insert(*tag);
            out.push(*tag);
        }
    }
    Ok(out)
}

/// Writes a pack of `ids` to `out`: deltas already stored in the repository's packs are
/// copied as they are (never against a base the pack does not hold, so the pack is
/// complete), every other object goes whole. Returns the objects written.
pub fn write_pack(
    db: &Db,
    ids: Vec<ObjectId>,
    out: &mut dyn Write,
    interrupt: &AtomicBool,
) -> Result<usize, String> {
    let mut input = ids.into_iter().map(Ok);
    let (counts, _) = output::count::objects_unthreaded(
        db,
        &mut input,
        &gix::progress::Discard,
        interrupt,
        output::count::objects::ObjectExpansion::AsIs,
    )
    .map_err(|e| format!("counting objects: {e}"))?;
    let num_entries = counts.len();
    let entries = output::entry::iter_from_counts(
        counts,
        db.clone(),
        Box::new(gix::progress::Discard),
        output::entry::iter_from_counts::Options {
            thread_limit: Some(1),
            mode: output::entry::iter_from_counts::Mode::PackCopyAndBaseObjects,
            allow_thin_pack: false,
            chunk_size: 64,
            version: gix_pack::data::Version::V2,
            compression: Default::default(),
        },
    )
    .map_err(|e| format!("preparing the pack: {e}"))?;
    let entries = gix::parallel::InOrderIter::from(entries);
    let n = u32::try_from(num_entries).map_err(|_| "too many objects for one pack".to_string())?;
    let mut bytes = output::bytes::FromEntriesIter::new(
        entries,
        out,
        n,
        gix_pack::data::Version::V2,
        gix::hash::Kind::Sha1,
    );
    for written in &mut bytes {
        written.map_err(|e| format!("writing the pack: {e}"))?;
    }
    Ok(num_entries)
}
