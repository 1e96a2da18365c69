//! What a fetch sends, and how the pack is written: the object graph walked over gix's
//! object database, packs built with `gix-pack` reusing the deltas already stored.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use gix::hash::{oid, ObjectId};
use gix::objs::{CommitRefIter, Find, Kind, TagRefIter, TreeRefIter};
use gix_pack::data::output;

use super::filter::{ObjectFilter, Place, Verdict};
use super::shallow::{DeepenRequest, ShallowPlan};
use super::ErrorChain;

/// A set of object ids, hashed by their first bytes (they are SHA-1 digests already:
/// SipHash over them would be most of a clone's walk).
pub type ObjectSet = gix::hashtable::HashSet<ObjectId>;

/// The object database handle the backend works with: shareable across threads, as the
/// pack entry generator wants.
pub type Db = gix::odb::Cache<gix::odb::store::Handle<Arc<gix::odb::Store>>>;

/// Opens `dir` (a bare repository) without reading anything but its own configuration
/// (no environment, no user or system config), with `delta_base_cache_bytes` for decoded
/// delta bases (without it, every object read decodes its whole delta chain again).
pub fn open(
    dir: &std::path::Path,
    delta_base_cache_bytes: usize,
) -> Result<(gix::Repository, Db), String> {
    let repo = gix::open_opts(dir, gix::open::Options::isolated())
        .map_err(|e| format!("cannot open the repository: {}", ErrorChain(&e)))?;
    let mut db = repo
        .objects
        .clone()
        .into_inner()
        .into_arc()
        .map_err(|e| format!("cannot open the object database: {}", ErrorChain(&e)))?;
    // pack entries are copied by location: the packs must stay mapped meanwhile
    db.prevent_pack_unload();
    if delta_base_cache_bytes > 0 {
        db.set_pack_cache(move || {
            Box::new(gix_pack::cache::lru::MemoryCappedHashmap::new(
                delta_base_cache_bytes,
            ))
        });
    }
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
        Err(e) => Err(format!("reading object {id}: {}", ErrorChain(&e))),
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

/// A commit's committer time and parents.
pub(super) fn commit_time_and_parents(
    db: &dyn Find,
    id: &ObjectId,
) -> Result<(i64, Vec<ObjectId>), String> {
    let (_, data) = need(db, id)?;
    commit_time_and_parents_of(&data)
}

/// The committer time and parents of a commit's bytes.
pub(super) fn commit_time_and_parents_of(data: &[u8]) -> Result<(i64, Vec<ObjectId>), String> {
    let (_, parents) = commit_links(data)?;
    let time = CommitRefIter::from_bytes(data, gix::hash::Kind::Sha1)
        .committer()
        .map(|c| c.seconds())
        .unwrap_or(0);
    Ok((time, parents))
}

/// Commits popped after every queued one is known to the client, against clock skew
/// (git's `limit_list` uses the same slop).
const WALK_SLOP: usize = 5;

/// The commits the client holds among those the wants reach: a walk of `wants` and
/// `common` together, newest first, marking what `common` reaches, that stops as soon as
/// nothing queued is new to the client (so a fetch costs what it sends, not the
/// repository's history). Not looking behind `parentless` (a shallow client's
/// boundary). A commit reachable from both that a skewed clock hides is taken as new:
/// sent again, never missing.
fn have_commits_near(
    db: &dyn Find,
    wants: &[ObjectId],
    common: &[ObjectId],
    parentless: &HashSet<ObjectId>,
) -> Result<HashSet<ObjectId>, String> {
    use std::collections::BinaryHeap;
    /// known to the client, queued
    type State = (bool, bool);
    let mut state: HashMap<ObjectId, State> = HashMap::new();
    let mut heap: BinaryHeap<(i64, ObjectId)> = BinaryHeap::new();
    let mut new_queued = 0usize;
    let mut info: HashMap<ObjectId, (i64, Vec<ObjectId>)> = HashMap::new();
    let time_of = |info: &mut HashMap<ObjectId, (i64, Vec<ObjectId>)>,
                   id: &ObjectId|
     -> Result<i64, String> {
        if let Some((t, _)) = info.get(id) {
            return Ok(*t);
        }
        let ti = commit_time_and_parents(db, id)?;
        let t = ti.0;
        info.insert(*id, ti);
        Ok(t)
    };
    for tip in common {
        if let Ok((id, Kind::Commit)) = peel(db, *tip) {
            if state.insert(id, (true, true)).is_none() {
                heap.push((time_of(&mut info, &id)?, id));
            }
        }
    }
    if state.is_empty() {
        return Ok(HashSet::new());
    }
    for id in wants {
        if let std::collections::hash_map::Entry::Vacant(e) = state.entry(*id) {
            e.insert((false, true));
            new_queued += 1;
            heap.push((time_of(&mut info, id)?, *id));
        }
    }
    let mut slop = WALK_SLOP;
    while let Some((_, id)) = heap.pop() {
        if new_queued == 0 {
            if slop == 0 {
                break;
            }
            slop -= 1;
        }
        let Some(entry) = state.get_mut(&id) else {
            continue;
        };
        if !entry.1 {
            continue; // a stale duplicate
        }
        entry.1 = false;
        let known = entry.0;
        if !known {
            new_queued -= 1;
        }
        if known && parentless.contains(&id) {
            continue;
        }
        time_of(&mut info, &id)?;
        let parents = info.get(&id).map(|(_, p)| p.clone()).unwrap_or_default();
        for p in parents {
            match state.get_mut(&p) {
                None => {
                    state.insert(p, (known, true));
                    if !known {
                        new_queued += 1;
                    }
                    heap.push((time_of(&mut info, &p)?, p));
                }
                Some(s) if known && !s.0 => {
                    s.0 = true;
                    if s.1 {
                        new_queued -= 1;
                    } else {
                        // walked as new already: carry the mark to its parents too
                        s.1 = true;
                        heap.push((time_of(&mut info, &p)?, p));
                    }
                }
                Some(_) => {}
            }
        }
    }
    Ok(state
        .into_iter()
        .filter(|(_, (known, _))| *known)
        .map(|(id, _)| id)
        .collect())
}

/// A filter as [`walk_tree`] applies it over the trees of one fetch. A filter whose
/// verdicts depend on paths (`sparse:oid`) sends each tree once but walks it again
/// wherever it is met at another path (its blobs may be in there and out here), as
/// git's `list-objects-filter` does: such a walk remembers the trees it sent and the
/// (tree, path) pairs it walked, and keeps trees out of `seen` (which then holds the
/// blobs sent and what the client has).
pub(super) struct FilterWalk<'a> {
    filter: &'a ObjectFilter,
    by_path: bool,
    shown_trees: ObjectSet,
    walked: HashSet<(ObjectId, Vec<u8>)>,
}

impl<'a> FilterWalk<'a> {
    pub(super) fn new(filter: &'a ObjectFilter) -> Self {
        FilterWalk {
            filter,
            by_path: filter.needs_paths(),
            shown_trees: ObjectSet::default(),
            walked: HashSet::new(),
        }
    }
}

/// Marks `tree` and everything below it in `seen`, calling `visit(id, path, is_tree)`
/// for each object not seen before (trees before their contents; the root's path is
/// empty). Paths are only built with `with_paths` or a filter that needs them
/// (otherwise `visit` gets an empty one). Every tree is read into one reused buffer: a
/// clone walks every tree of the history. What `filter` omits is neither visited nor
/// marked (nor, for a tree, descended into; a tree it omits but walks is marked and
/// descended into, not visited); the root itself is kept when `root_wanted` (a tree the
/// client asked for by id).
fn walk_tree(
    db: &dyn Find,
    tree: ObjectId,
    seen: &mut ObjectSet,
    with_paths: bool,
    mut filter: Option<&mut FilterWalk<'_>>,
    root_wanted: bool,
    visit: &mut dyn FnMut(ObjectId, &[u8], bool),
) -> Result<(), String> {
    let by_path = filter.as_ref().is_some_and(|f| f.by_path);
    let with_paths = with_paths || by_path;
    if seen.contains(&tree) {
        return Ok(());
    }
    let root = Place::ROOT;
    let root_verdict = match &filter {
        Some(f) if !root_wanted => f.filter.verdict(db, &tree, true, &root)?,
        _ => Verdict::Keep,
    };
    if root_verdict == Verdict::Omit {
        return Ok(());
    }
    let first_show = match filter.as_mut() {
        Some(f) if f.by_path => {
            if !f.walked.insert((tree, Vec::new())) {
                return Ok(());
            }
            f.shown_trees.insert(tree)
        }
        _ => seen.insert(tree),
    };
    if root_verdict == Verdict::Keep && first_show {
        visit(tree, b"", true);
    }
    let root_marks = filter.as_ref().map_or(0, |f| f.filter.marks_of_dir(&root));
    let mut stack = vec![(tree, Vec::new(), 0u64, root_marks)];
    let mut buf = Vec::new();
    // blobs left out wherever they are (by size or type): not looked at again
    let cache_omitted_blobs = filter
        .as_ref()
        .is_some_and(|f| !f.filter.depends_on_place());
    let mut omitted_blobs = ObjectSet::default();
    let mut failure = None;
    while let Some((id, dir, depth, marks)) = stack.pop() {
        for_each_tree_entry(db, &id, &mut buf, |entry| {
            let child = entry.oid.to_owned();
            if failure.is_some() || seen.contains(&child) || omitted_blobs.contains(&child) {
                return;
            }
            let is_tree = entry.mode.is_tree();
            let path = if with_paths {
                let mut p = Vec::with_capacity(dir.len() + 1 + entry.filename.len());
                p.extend_from_slice(&dir);
                if !dir.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(entry.filename);
                p
            } else {
                Vec::new()
            };
            let place = Place {
                depth: depth + 1,
                path: &path,
                marks,
            };
            let verdict = match filter
                .as_ref()
                .map(|f| f.filter.verdict(db, &child, is_tree, &place))
            {
                None => Verdict::Keep,
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    failure = Some(e);
                    return;
                }
            };
            if verdict == Verdict::Omit {
                if !is_tree && cache_omitted_blobs {
                    omitted_blobs.insert(child);
                }
                return;
            }
            let first_show = match filter.as_mut() {
                Some(f) if f.by_path && is_tree => {
                    let key = (child, path);
                    if f.walked.contains(&key) {
                        return;
                    }
                    f.walked.insert(key.clone());
                    let path = key.1;
                    let shown = f.shown_trees.insert(child);
                    if verdict == Verdict::Keep && shown {
                        visit(child, &path, true);
                    }
                    let marks = f.filter.marks_of_dir(&Place {
                        depth: depth + 1,
                        path: &path,
                        marks,
                    });
                    stack.push((child, path, depth + 1, marks));
                    return;
                }
                _ => seen.insert(child),
            };
            if verdict == Verdict::Keep && first_show {
                visit(child, &path, is_tree);
            }
            if is_tree {
                stack.push((child, path, depth + 1, marks));
            }
        })?;
        if let Some(e) = failure.take() {
            return Err(e);
        }
    }
    Ok(())
}

/// Reads tree `id` into `buf` and calls `f` for each of its entries, submodule commits
/// left out (they live in other repositories). The one tree reader of both walks.
pub(super) fn for_each_tree_entry(
    db: &dyn Find,
    id: &oid,
    buf: &mut Vec<u8>,
    mut f: impl FnMut(gix::objs::tree::EntryRef<'_>),
) -> Result<(), String> {
    let data = match db.try_find(id, buf) {
        Ok(Some(data)) => data.data,
        Ok(None) => return Err(format!("object {id} is missing")),
        Err(e) => return Err(format!("reading object {id}: {}", ErrorChain(&e))),
    };
    for entry in TreeRefIter::from_bytes(data, gix::hash::Kind::Sha1) {
        let entry = entry.map_err(|e| format!("bad tree {id}: {e}"))?;
        if !entry.mode.is_commit() {
            f(entry);
        }
    }
    Ok(())
}

/// The shallow boundary for `wants` alone (protocol v0 draws it before the haves are
/// known); at most `limit` commits walked.
pub fn draw_shallow(
    db: &dyn Find,
    wants: &[ObjectId],
    deepen: &DeepenRequest,
    limit: usize,
) -> Result<ShallowPlan, String> {
    let want_commits: Vec<ObjectId> = wants
        .iter()
        .filter_map(|w| match peel(db, *w) {
            Ok((id, Kind::Commit)) => Some(id),
            _ => None,
        })
        .collect();
    super::shallow::plan(db, &want_commits, &HashSet::new(), deepen, limit)
}

/// What a fetch sends: the objects, and for a thin pack what the client is known to hold.
#[derive(Debug, Default)]
pub struct Selection {
    /// Objects to send, commits first, then trees before their contents.
    pub ids: Vec<ObjectId>,
    /// Objects the client holds (the trees, blobs and commits of its boundary commits):
    /// the only bases a thin pack may refer to. Empty unless a thin pack was asked for.
    pub client_has: ObjectSet,
    /// For a sent tree or blob, the object at the same path in a boundary commit (same
    /// kind, held by the client): the base to compute a new delta against.
    pub delta_bases: HashMap<ObjectId, ObjectId>,
    /// The shallow boundary (empty unless the fetch is shallow).
    pub shallow: ShallowPlan,
}

/// What a client asked for, as [`objects_to_send`] takes it.
pub struct SendAsk<'a> {
    pub wants: &'a [ObjectId],
    /// Objects both sides have.
    pub common: &'a [ObjectId],
    /// Tag object ids that may come along (`include-tag`).
    pub tags: &'a [ObjectId],
    /// `thin-pack`.
    pub thin: bool,
    pub deepen: &'a DeepenRequest,
    /// Partial clone's filter: trees and blobs left out (those wanted by id are sent).
    pub filter: Option<&'a ObjectFilter>,
}

/// What to send a client that wants `wants` and has `common` (objects both sides have):
/// the commits reachable from the wants but not from `common`, their trees and blobs
/// except those the client's commits at the boundary already hold, and the wanted tags.
/// With `include_tags`, annotated tags (from `tags`: tag object ids) pointing at a sent
/// object come along. With `thin`, also what a thin pack may use as delta bases. A
/// shallow `deepen` request (commits walked: at most `limit`) cuts the history sent,
/// along `plan` if it was drawn already.
pub fn objects_to_send(
    db: &dyn Find,
    ask: SendAsk<'_>,
    plan: Option<ShallowPlan>,
    limit: usize,
) -> Result<Selection, String> {
    let SendAsk {
        wants,
        common,
        tags,
        thin,
        deepen,
        filter,
    } = ask;
    let client_shallow: HashSet<ObjectId> = deepen.client_shallow.iter().copied().collect();
    let mut out = Vec::new();
    let mut seen = ObjectSet::default();
    // wanted tags and non-commits; commits to walk
    let mut queue: VecDeque<ObjectId> = VecDeque::new();
    let mut queued = ObjectSet::default();
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
                    if queued.insert(id) {
                        queue.push_back(id);
                    }
                    break;
                }
                Kind::Tree | Kind::Blob => {
                    loose_ends.push(id);
                    break;
                }
            }
        }
    }
    let want_commits: Vec<ObjectId> = queue.iter().copied().collect();
    let have_commits = have_commits_near(db, &want_commits, common, &client_shallow)?;
    let shallow = if let Some(plan) = plan {
        plan
    } else if deepen.is_shallow() {
        super::shallow::plan(db, &want_commits, &have_commits, deepen, limit)?
    } else {
        ShallowPlan::default()
    };
    // the commits to send, newest first
    let mut commits = Vec::new();
    let mut boundary = Vec::new();
    let mut in_boundary = HashSet::new();
    // the client's shallow commits deepened now: it has them (and their trees), not
    // their parents
    for id in &shallow.unshallow {
        if in_boundary.insert(*id) {
            boundary.push(*id);
        }
        let (_, data) = need(db, id)?;
        for p in commit_links(&data)?.1 {
            if !have_commits.contains(&p) && queued.insert(p) {
                queue.push_back(p);
            }
        }
    }
    let mut buf = Vec::new();
    while let Some(id) = queue.pop_front() {
        if have_commits.contains(&id) {
            continue;
        }
        let (tree, parents) = match db.try_find(&id, &mut buf) {
            Ok(Some(data)) => commit_links(data.data)?,
            Ok(None) => return Err(format!("object {id} is missing")),
            Err(e) => return Err(format!("reading object {id}: {}", ErrorChain(&e))),
        };
        commits.push((id, tree));
        if shallow.cut.contains(&id) {
            continue;
        }
        for p in parents {
            if have_commits.contains(&p) {
                if in_boundary.insert(p) {
                    boundary.push(p);
                }
            } else if queued.insert(p) {
                queue.push_back(p);
            }
        }
    }
    // what the client's boundary commits hold is not sent again; by path, it is what
    // new trees and blobs are deltified against (the first boundary commit's, as git's
    // pack-objects prefers the same path)
    let mut old_at_path: HashMap<Vec<u8>, (ObjectId, bool)> = HashMap::new();
    for id in &boundary {
        let (_, data) = need(db, id)?;
        let (tree, _) = commit_links(&data)?;
        walk_tree(
            db,
            tree,
            &mut seen,
            thin,
            None,
            false,
            &mut |id, path, is_tree| {
                if thin {
                    old_at_path.entry(path.to_vec()).or_insert((id, is_tree));
                }
            },
        )?;
    }
    let mut selection = Selection::default();
    if thin {
        selection.client_has = seen.clone();
        selection.client_has.extend(boundary.iter().copied());
    }
    // `object:type=` of another type: only the commits asked for by id (or by a wanted
    // tag) go, as git's upload-pack does; their trees are walked all the same
    let only_wanted_commits: Option<HashSet<ObjectId>> = filter
        .filter(|f| f.omits_unwanted(Kind::Commit))
        .map(|_| want_commits.iter().copied().collect());
    for (id, _) in &commits {
        if only_wanted_commits
            .as_ref()
            .is_some_and(|w| !w.contains(id))
        {
            continue;
        }
        // two wants may name one commit
        if seen.insert(*id) {
            out.push(*id);
        }
    }
    let with_paths = !old_at_path.is_empty();
    let mut filter = filter.map(FilterWalk::new);
    for (_, tree) in &commits {
        walk_tree(
            db,
            *tree,
            &mut seen,
            with_paths,
            filter.as_mut(),
            false,
            &mut |id, path, is_tree| {
                out.push(id);
                if let Some((base, base_is_tree)) = old_at_path.get(path) {
                    if *base_is_tree == is_tree {
                        selection.delta_bases.insert(id, *base);
                    }
                }
            },
        )?;
    }
    for id in loose_ends {
        let (kind, _) = need(db, &id)?;
        if kind == Kind::Tree {
            walk_tree(
                db,
                id,
                &mut seen,
                false,
                filter.as_mut(),
                true,
                &mut |id, _, _| out.push(id),
            )?;
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
    selection.ids = out;
    selection.shallow = shallow;
    Ok(selection)
}

/// The pack entries of `ids`, in their order, in chunks, as `gix-pack` prepares them: a
/// delta stored in the repository's packs is copied when its base is among `ids` (or,
/// with `thin`, anywhere: the caller then checks the client has it), else the object goes
/// whole. The walk found every object already, so there is no second pass over the object
/// database to count them (gix's `count::objects` would decode each one, every blob
/// included); `iter_from_counts` only looks up where each one is stored. The one place
/// both pack writers (the walked fetch's and the full clone's appended objects) get
/// their entries from.
pub(super) fn pack_entries(
    db: &Db,
    ids: Vec<ObjectId>,
    thin: bool,
) -> Result<impl Iterator<Item = Result<Vec<output::Entry>, gix::Error>>, String> {
    let counts: Vec<output::Count> = ids
        .into_iter()
        .map(|id| output::Count {
            id,
            entry_pack_location: output::count::PackLocation::NotLookedUp,
        })
        .collect();
    let entries = output::entry::iter_from_counts(
        counts,
        db.clone(),
        Box::new(gix::progress::Discard),
        output::entry::iter_from_counts::Options {
            thread_limit: Some(1),
            mode: output::entry::iter_from_counts::Mode::PackCopyAndBaseObjects,
            allow_thin_pack: thin,
            chunk_size: PACK_ENTRY_CHUNK,
            version: gix_pack::data::Version::V2,
            compression: output::entry::iter_from_counts::Options::default().compression,
        },
    )
    .map_err(|e| format!("preparing the pack: {}", ErrorChain(&e)))?;
    Ok(gix::parallel::InOrderIter::from(entries))
}

/// Pack entries prepared (compressed) at once ahead of the writer.
const PACK_ENTRY_CHUNK: usize = 64;

/// Writes a pack of `selection` to `out`: deltas already stored in the repository's
/// packs are copied as they are; with `thin`, a stored delta may keep a base the pack
/// does not hold if the client has it (else that object goes whole), and a tree or blob
/// with a base in `selection.delta_bases` goes as a delta computed here
/// ([`super::delta`]) when that is smaller (objects up to `max_delta_bytes`). Without `thin` the pack is complete.
/// Returns the objects written.
pub fn write_pack(
    db: &Db,
    selection: Selection,
    thin: bool,
    max_delta_bytes: usize,
    out: &mut dyn Write,
    interrupt: &AtomicBool,
) -> Result<usize, String> {
    let Selection {
        ids,
        client_has,
        delta_bases,
        shallow: _,
    } = selection;
    let num_entries = ids.len();
    let compression = output::entry::iter_from_counts::Options::default().compression;
    let entries = pack_entries(db, ids, thin)?;
    let mut failure: Option<String> = None;
    let mut thinned = ThinEntries {
        db,
        client_has: &client_has,
        delta_bases: &delta_bases,
        compression,
        max_delta_bytes,
    };
    // after a failure the pack ends short (the client's index-pack refuses it) and the
    // error is reported
    let entries = entries.map_while(|chunk| {
        if failure.is_some() {
            return None;
        }
        if interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            failure = Some("interrupted".into());
            return None;
        }
        Some(chunk.map(|mut entries| {
            for entry in &mut entries {
                // an object the walk named but the database lacks (a corrupt repository)
                if entry.is_invalid() {
                    failure = Some("an object named by a tree or commit is missing".into());
                } else if thin {
                    if let Err(e) = thinned.rework(entry) {
                        failure = Some(e);
                    }
                }
            }
            entries
        }))
    });
    let n = u32::try_from(num_entries).map_err(|_| "too many objects for one pack".to_string())?;
    let mut bytes = output::bytes::FromEntriesIter::new(
        entries,
        out,
        n,
        gix_pack::data::Version::V2,
        gix::hash::Kind::Sha1,
    );
    for written in &mut bytes {
        written.map_err(|e| format!("writing the pack: {}", ErrorChain(&e)))?;
    }
    drop(bytes);
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(num_entries)
}

/// Turns pack entries into a thin pack's: deltas only against what the client has, new
/// deltas where a base is known.
struct ThinEntries<'a> {
    db: &'a Db,
    client_has: &'a ObjectSet,
    delta_bases: &'a HashMap<ObjectId, ObjectId>,
    compression: gix::zlib::Compression,
    max_delta_bytes: usize,
}

impl ThinEntries<'_> {
    fn rework(&mut self, entry: &mut output::Entry) -> Result<(), String> {
        use output::entry::Kind as EntryKind;
        if entry.is_invalid() {
            return Ok(());
        }
        if let EntryKind::DeltaOid { id: base } = entry.kind {
            if self.client_has.contains(&base) {
                return Ok(());
            }
            // a stored delta against an object the client may lack: send it whole
            let (kind, data) = need(self.db, &entry.id)?;
            *entry = Self::entry_of(entry.id, kind, &data, self.compression)?;
        }
        let (EntryKind::Base(Kind::Blob | Kind::Tree), Some(base)) =
            (entry.kind, self.delta_bases.get(&entry.id))
        else {
            return Ok(());
        };
        if entry.decompressed_size > self.max_delta_bytes {
            return Ok(());
        }
        let (_, base_data) = need(self.db, base)?;
        if base_data.len() > self.max_delta_bytes {
            return Ok(());
        }
        let (kind, data) = need(self.db, &entry.id)?;
        if let Some(delta) = super::delta::encode(&base_data, &data, entry.compressed_data.len()) {
            let mut delta_entry = Self::entry_of(entry.id, kind, &delta, self.compression)?;
            if delta_entry.compressed_data.len() < entry.compressed_data.len() {
                delta_entry.kind = EntryKind::DeltaOid { id: *base };
                *entry = delta_entry;
            }
        }
        Ok(())
    }

    /// A base entry holding `data` (compressed as the pack's other entries are).
    fn entry_of(
        id: ObjectId,
        kind: Kind,
        data: &[u8],
        compression: gix::zlib::Compression,
    ) -> Result<output::Entry, String> {
        let count = output::Count {
            id,
            entry_pack_location: output::count::PackLocation::LookedUp(None),
        };
        output::Entry::from_data(
            &count,
            &gix::objs::Data::new(data, kind, gix::hash::Kind::Sha1),
            compression,
        )
        .map_err(|e| format!("compressing {id}: {e}"))
    }
}
