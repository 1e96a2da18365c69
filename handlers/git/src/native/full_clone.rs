//! The full-clone fast path: a fetch with no haves and no shallow boundary, in a
//! repository whose pack has a reachability bitmap ([`super::bitmap`]). The object set is
//! the OR of the bitmaps of the commits the wants reach, plus a walk of what lies outside
//! them (the commits pushed since the last repack, usually a handful, often loose);
//! nothing walks the history. When that set is the whole pack (a repository repacked
//! with `git gc` / `git repack -adb`, cloned whole), the pack's bytes are sent as they are
//! stored, deltas included, with the objects outside it appended; otherwise the set goes
//! to the ordinary pack writer, still without a walk.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use gix::hash::{oid, ObjectId};
use gix::objs::{Find, Kind};
use gix_pack::data::output;

use super::bitmap::{BitmappedPack, Bits};
use super::objects::{
    commit_links, for_each_tree_entry, need, pack_entries, tag_target, Db, ObjectSet,
};
use super::ErrorChain;

/// Bytes of stored pack data handed to the writer at once (the interrupt flag is checked
/// between pieces).
pub const COPY_PIECE: usize = 1 << 20;

/// What a full clone sends.
pub enum FullClone {
    /// Every object of `pack`, copied as stored, then `extra` (objects outside it).
    WholePack {
        pack: Box<BitmappedPack>,
        extra: Vec<ObjectId>,
    },
    /// These objects, for the ordinary pack writer (the pack holds objects the wants do
    /// not reach).
    Objects(Vec<ObjectId>),
}

impl FullClone {
    pub fn len(&self) -> usize {
        match self {
            FullClone::WholePack { pack, extra } => pack.num_objects() + extra.len(),
            FullClone::Objects(ids) => ids.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The objects marked so far: pack positions in `bits`, the others listed.
struct Marks<'a> {
    pack: &'a BitmappedPack,
    bits: Bits,
    extra: Vec<ObjectId>,
    extra_seen: ObjectSet,
}

impl Marks<'_> {
    /// Marks `id`; whether it was new.
    fn mark(&mut self, id: &oid) -> bool {
        match self.pack.position(id) {
            Some(p) => self.bits.set(p),
            None => {
                let new = self.extra_seen.insert(id.to_owned());
                if new {
                    self.extra.push(id.to_owned());
                }
                new
            }
        }
    }

    fn contains(&self, id: &oid) -> bool {
        match self.pack.position(id) {
            Some(p) => self.bits.get(p),
            None => self.extra_seen.contains(id),
        }
    }
}

/// What a clone of `wants` (with `tags`, annotated tag ids, for `include-tag`) sends,
/// from the bitmap of the repository at `git_dir`; `Ok(None)` when there is no usable
/// bitmap or more than `limit` commits lie outside the bitmaps (the caller walks then).
pub fn select(
    db: &dyn Find,
    git_dir: &std::path::Path,
    wants: &[ObjectId],
    tags: &[ObjectId],
    limit: usize,
) -> Result<Option<FullClone>, String> {
    let pack = match BitmappedPack::find(git_dir) {
        Ok(Some(pack)) => pack,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::debug!("upload-pack: bitmap not used: {e}");
            return Ok(None);
        }
    };
    let n = pack.num_objects();
    let mut marks = Marks {
        pack: &pack,
        bits: Bits::zeros(n),
        extra: Vec::new(),
        extra_seen: ObjectSet::default(),
    };
    let mut commits: Vec<ObjectId> = Vec::new();
    let mut trees: Vec<ObjectId> = Vec::new();
    for want in wants {
        let mut id = *want;
        // bounded: a tag chain longer than this is not followed
        for _ in 0..32 {
            let (kind, data) = need(db, &id)?;
            match kind {
                Kind::Tag => {
                    marks.mark(&id);
                    id = tag_target(&data)?;
                }
                Kind::Commit => {
                    commits.push(id);
                    break;
                }
                Kind::Tree => {
                    trees.push(id);
                    break;
                }
                Kind::Blob => {
                    marks.mark(&id);
                    break;
                }
            }
        }
    }
    // commits: a bitmap ends the walk there; the others are marked, their trees walked
    // below (after every bitmap is in, so the walk stops at what they cover)
    let mut walked = 0usize;
    let mut buf = Vec::new();
    while let Some(id) = commits.pop() {
        if let Some(p) = pack.position(&id) {
            if marks.bits.get(p) {
                continue;
            }
            match pack.reach(p) {
                Ok(Some(reach)) => {
                    marks.bits.or(&reach);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!("upload-pack: bitmap not used: {e}");
                    return Ok(None);
                }
            }
        }
        if !marks.mark(&id) {
            continue;
        }
        walked += 1;
        if walked > limit {
            return Ok(None);
        }
        let (tree, parents) = match db.try_find(&id, &mut buf) {
            Ok(Some(data)) => commit_links(data.data)?,
            Ok(None) => return Err(format!("object {id} is missing")),
            Err(e) => return Err(format!("reading object {id}: {}", ErrorChain(&e))),
        };
        trees.push(tree);
        commits.extend(parents);
    }
    for tree in trees {
        mark_tree(db, &mut marks, tree)?;
    }
    for tag in tags {
        if marks.contains(tag) {
            continue;
        }
        let (_, data) = need(db, tag)?;
        if marks.contains(&tag_target(&data)?) {
            marks.mark(tag);
        }
    }
    let Marks { bits, extra, .. } = marks;
    tracing::debug!(
        pack_objects = n,
        reached_in_pack = bits.count_ones(),
        outside_pack = extra.len(),
        commits_walked = walked,
        "upload-pack: full clone from the bitmap"
    );
    if bits.count_ones() == n {
        return Ok(Some(FullClone::WholePack {
            pack: Box::new(pack),
            extra,
        }));
    }
    let mut ids: Vec<ObjectId> = bits.ones().map(|p| pack.id_at(p)).collect();
    ids.extend(extra);
    Ok(Some(FullClone::Objects(ids)))
}

/// Marks `tree` and what it holds, not descending into trees marked already (a tree in
/// a bitmap comes with everything below it).
fn mark_tree(db: &dyn Find, marks: &mut Marks<'_>, tree: ObjectId) -> Result<(), String> {
    if !marks.mark(&tree) {
        return Ok(());
    }
    let mut stack = vec![tree];
    let mut buf = Vec::new();
    while let Some(id) = stack.pop() {
        for_each_tree_entry(db, &id, &mut buf, |entry| {
            if marks.mark(entry.oid) && entry.mode.is_tree() {
                stack.push(entry.oid.to_owned());
            }
        })?;
    }
    Ok(())
}

/// Writes the whole stored pack, then `extra`, as one pack. Without extras the file goes
/// out as it is (its trailer is the checksum already); with them the header's count
/// changes and the checksum is computed while writing. The extras are written as
/// `gix-pack` prepares them: a stored delta copied when its base is among them, else the
/// object whole (the pack stays self-contained, never thin). Returns the objects written.
pub fn write_whole_pack(
    db: &Db,
    pack: &BitmappedPack,
    extra: &[ObjectId],
    out: &mut dyn Write,
    interrupt: &AtomicBool,
) -> Result<usize, String> {
    use gix_pack::data::Version;
    let io = |e: std::io::Error| format!("writing the pack: {e}");
    let total = pack.num_objects() + extra.len();
    let count = u32::try_from(total).map_err(|_| "too many objects for one pack".to_string())?;
    let data = pack
        .pack
        .entry_slice(0..pack.pack.data_len() as u64)
        .ok_or("the pack is shorter than it says")?;
    let copy = |out: &mut dyn Write, bytes: &[u8]| -> Result<(), String> {
        for piece in bytes.chunks(COPY_PIECE) {
            if interrupt.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            out.write_all(piece).map_err(io)?;
        }
        Ok(())
    };
    if extra.is_empty() {
        copy(out, data)?;
        return Ok(total);
    }
    let mut hashed = gix::hash::io::Write::new(out, gix::hash::Kind::Sha1);
    hashed
        .write_all(&gix_pack::data::header::encode(Version::V2, count))
        .map_err(io)?;
    let pack_end = pack.pack.pack_end();
    copy(&mut hashed, &data[gix_pack::data::header::SIZE..pack_end])?;
    let entries = pack_entries(db, extra.to_vec(), false)?;
    // where each extra entry starts in the pack written, for its deltas' base distances
    let mut offsets: Vec<u64> = Vec::with_capacity(extra.len());
    let mut written = pack_end as u64;
    for chunk in entries {
        let chunk = chunk.map_err(|e| format!("preparing the pack: {}", ErrorChain(&e)))?;
        for entry in chunk {
            if entry.is_invalid() {
                return Err("an object named by a tree or commit is missing".into());
            }
            if let output::entry::Kind::DeltaRef { object_index } = entry.kind {
                if object_index >= offsets.len() {
                    return Err("a delta's base comes after it".into());
                }
            }
            let start = written;
            offsets.push(start);
            let header = entry.to_entry_header(Version::V2, |i| start - offsets[i]);
            written += header
                .write_to(entry.decompressed_size as u64, &mut hashed)
                .map_err(io)? as u64;
            hashed.write_all(&entry.compressed_data).map_err(io)?;
            written += entry.compressed_data.len() as u64;
        }
    }
    if offsets.len() != extra.len() {
        return Err("the pack writer lost objects".into());
    }
    let digest = hashed
        .hash
        .try_finalize()
        .map_err(|e| format!("pack checksum: {e}"))?;
    hashed.inner.write_all(digest.as_slice()).map_err(io)?;
    Ok(total)
}
