//! receive-pack (push), gix-native, protocol v0 (git does not push over v2 through
//! helpers).
//!
//! The pack goes into a quarantine directory inside the repository's `objects/`
//! (`tmp_objdir-incoming-alknet-…`, as git names its own), where `gix-pack` indexes it
//! (thin packs completed from the repository). Then every new tip is checked to be
//! connected (all it reaches is in the quarantine or the repository), fast-forwards are
//! checked, and only if something will be updated does the pack move into
//! `objects/pack` (pack first, index last, so no reader sees an index without its pack).
//! References change through `gix-ref` transactions that lock each ref and compare its
//! value with the old value the client saw (`PreviousValue::MustExistAndMatch`), so of two
//! concurrent pushes to one ref exactly one wins. `atomic`: one transaction for all, or
//! nothing. Any failure, or the client going away, before that point removes the
//! quarantine and leaves the repository as it was.

use std::collections::HashSet;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use gix::hash::ObjectId;
use gix::objs::{Exists, Find, Kind};
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::{FullName, Target};

use super::objects::{self, commit_links, tag_target};
use super::pkt::{self, Pkt, PktError, PktReader, SideBand};
use super::upload::list_refs;
use super::ErrorChain;
use super::{agent, parse_oid, NativeLimits};

/// One `old new ref` line.
#[derive(Debug)]
struct Command {
    old: ObjectId,
    new: ObjectId,
    name: String,
    /// `None` while it may go ahead, else why it was refused.
    refused: Option<String>,
}

/// The quarantine directory; removed when dropped unless its pack moved out.
struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    fn create(objects: &Path) -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = objects.join(format!(
            "tmp_objdir-incoming-alknet-{}-{:?}-{nanos}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(dir.join("pack"))?;
        Ok(Self { dir })
    }
}

impl Drop for Quarantine {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), "git: removing a push quarantine: {e}");
            }
        }
    }
}

/// Looks objects up in the quarantine first, then the repository.
struct Both<'a> {
    quarantine: Option<&'a gix::odb::Handle>,
    repo: &'a objects::Db,
}

impl Both<'_> {
    fn in_quarantine(&self, id: &gix::hash::oid) -> bool {
        self.quarantine.is_some_and(|q| q.exists(id))
    }

    fn lookup(&self, id: &gix::hash::oid) -> Result<Option<(Kind, Vec<u8>)>, String> {
        if let Some(q) = self.quarantine {
            if let Some(found) = objects::lookup(q as &dyn Find, id)? {
                return Ok(Some(found));
            }
        }
        objects::lookup(self.repo as &dyn Find, id)
    }

    fn exists(&self, id: &gix::hash::oid) -> bool {
        self.in_quarantine(id) || self.repo.exists(id)
    }
}

/// Checks that everything `tip` reaches is present. Objects already in the repository are
/// taken as connected (the repository is), so only what the push brought is walked.
fn connected(both: &Both<'_>, tip: ObjectId, limit: usize) -> Result<(), String> {
    let mut seen = HashSet::new();
    let mut stack = vec![tip];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if seen.len() > limit {
            return Err("too many new objects to check".into());
        }
        if !both.in_quarantine(&id) {
            if both.repo.exists(&id) {
                continue;
            }
            return Err(format!("missing necessary objects ({id})"));
        }
        let (kind, data) = both
            .lookup(&id)?
            .ok_or_else(|| format!("missing necessary objects ({id})"))?;
        match kind {
            Kind::Commit => {
                let (tree, parents) = commit_links(&data)?;
                stack.push(tree);
                stack.extend(parents);
            }
            Kind::Tag => stack.push(tag_target(&data)?),
            Kind::Tree => {
                for entry in gix::objs::TreeRefIter::from_bytes(&data, gix::hash::Kind::Sha1) {
                    let entry = entry.map_err(|e| format!("bad tree {id}: {e}"))?;
                    if !entry.mode.is_commit() {
                        stack.push(entry.oid.to_owned());
                    }
                }
            }
            Kind::Blob => {}
        }
    }
    Ok(())
}

/// Whether `old` is an ancestor of (or equal to) `new`.
fn is_ancestor(
    both: &Both<'_>,
    old: ObjectId,
    new: ObjectId,
    limit: usize,
) -> Result<bool, String> {
    let mut seen = HashSet::new();
    let mut queue = std::collections::VecDeque::from([new]);
    while let Some(id) = queue.pop_front() {
        if id == old {
            return Ok(true);
        }
        if !seen.insert(id) {
            continue;
        }
        if seen.len() > limit {
            return Err("history too long to check for a fast-forward".into());
        }
        match both.lookup(&id)? {
            Some((Kind::Commit, data)) => queue.extend(commit_links(&data)?.1),
            // a tag or anything else: not a commit chain
            _ => return Ok(false),
        }
    }
    Ok(false)
}

pub struct ReceiveOptions {
    pub allow_force_push: bool,
}

pub fn serve(
    dir: &Path,
    input: &mut dyn Read,
    output: &mut dyn Write,
    interrupt: &AtomicBool,
    limits: &NativeLimits,
    options: &ReceiveOptions,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let (repo, db) = match objects::open(dir, limits.delta_base_cache_bytes) {
        Ok(r) => r,
        Err(e) => {
            let _ = pkt::write_text(output, &format!("ERR {e}"));
            return Err(e);
        }
    };
    let (refs, _) = list_refs(&repo, &db)?;
    let caps = format!(
        "report-status delete-refs side-band-64k quiet atomic ofs-delta push-options agent={} object-format=sha1",
        agent()
    );
    let mut advertised = 0;
    for r in refs.iter().filter(|r| r.name != "HEAD") {
        let line = if advertised == 0 {
            format!("{} {}\0{caps}", r.id, r.name)
        } else {
            format!("{} {}", r.id, r.name)
        };
        pkt::write_text(output, &line).map_err(io)?;
        advertised += 1;
    }
    if advertised == 0 {
        let line = format!(
            "{} capabilities^{{}}\0{caps}",
            ObjectId::null(gix::hash::Kind::Sha1)
        );
        pkt::write_text(output, &line).map_err(io)?;
    }
    pkt::write_flush(output).map_err(io)?;
    output.flush().map_err(io)?;

    let mut reader = PktReader::new(input);
    let mut commands: Vec<Command> = Vec::new();
    let mut client_caps: Vec<String> = Vec::new();
    loop {
        match reader.read() {
            Err(PktError::Eof) | Ok(Pkt::Flush) if commands.is_empty() => return Ok(()),
            Ok(Pkt::Flush) => break,
            Ok(Pkt::Data(line)) => {
                if commands.len() >= limits.max_negotiation_lines {
                    return Err("too many ref updates".into());
                }
                let (line, caps) = match line.iter().position(|b| *b == 0) {
                    Some(nul) => (&line[..nul], &line[nul + 1..]),
                    None => (line, &b""[..]),
                };
                if commands.is_empty() {
                    client_caps = String::from_utf8_lossy(caps)
                        .split(' ')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect();
                }
                let mut parts = line.splitn(3, |b| *b == b' ');
                let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err("malformed ref update".into());
                };
                let old = parse_oid(old).ok_or("malformed ref update")?;
                let new = parse_oid(new).ok_or("malformed ref update")?;
                let name = String::from_utf8_lossy(name).to_string();
                commands.push(Command {
                    old,
                    new,
                    name,
                    refused: None,
                });
            }
            Ok(_) => return Err("unexpected special packet".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let has = |c: &str| client_caps.iter().any(|x| x == c);
    let (report, side_band, quiet, atomic) = (
        has("report-status"),
        has("side-band-64k"),
        has("quiet"),
        has("atomic"),
    );
    if has("push-options") {
        let mut n = 0;
        loop {
            match reader.read().map_err(|e| e.to_string())? {
                Pkt::Flush => break,
                Pkt::Data(opt) => {
                    n += 1;
                    if n > limits.max_negotiation_lines {
                        return Err("too many push options".into());
                    }
                    tracing::debug!(option = %String::from_utf8_lossy(opt), "git: push option");
                }
                _ => return Err("unexpected special packet".into()),
            }
        }
    }

    // the pack (absent when every command is a deletion)
    let mut unpack: Result<(), String> = Ok(());
    let mut quarantine = None;
    let mut quarantine_odb = None;
    let mut written = None;
    if commands.iter().any(|c| !c.new.is_null()) {
        let objects_dir = dir.join("objects");
        match Quarantine::create(&objects_dir) {
            Err(e) => unpack = Err(format!("cannot create the quarantine: {e}")),
            Ok(q) => {
                let mut pack = BufReader::with_capacity(64 * 1024, reader.inner_mut());
                let outcome = gix_pack::Bundle::write_to_directory(
                    &mut pack,
                    Some(&q.dir.join("pack")),
                    &mut gix::progress::Discard,
                    interrupt,
                    Some(db.clone()),
                    gix::hash::Kind::Sha1,
                    gix_pack::bundle::write::Options {
                        thread_limit: Some(1),
                        iteration_mode: gix_pack::data::input::Mode::Verify,
                        index_version: gix_pack::index::Version::V2,
                        alloc_limit_bytes: Some(limits.max_object_bytes),
                        ..Default::default()
                    },
                );
                match outcome {
                    Ok(o) => {
                        written = Some(o);
                        match gix::odb::at(&q.dir, gix::hash::Kind::Sha1) {
                            Ok(h) => quarantine_odb = Some(h),
                            Err(e) => {
                                unpack = Err(format!("reading the quarantine: {}", ErrorChain(&e)))
                            }
                        }
                    }
                    Err(e) => unpack = Err(format!("unpacking: {}", ErrorChain(&e))),
                }
                quarantine = Some(q);
            }
        }
    }
    if interrupt.load(Ordering::Acquire) {
        return Err("interrupted".into());
    }
    if let Err(e) = &unpack {
        // the operator's side of "remote unpack failed": a full disk, a quota, a bad pack
        tracing::warn!(dir = %dir.display(), "git: a pushed pack was not stored: {e}");
    }

    let both = Both {
        quarantine: quarantine_odb.as_ref(),
        repo: &db,
    };
    let current = |name: &str| refs.iter().find(|r| r.name == name).map(|r| r.id);
    for c in &mut commands {
        c.refused = check(c, &both, &unpack, current(&c.name), options, limits);
    }
    if atomic && commands.iter().any(|c| c.refused.is_some()) {
        for c in &mut commands {
            if c.refused.is_none() {
                c.refused = Some("atomic push failed".into());
            }
        }
    }
    if interrupt.load(Ordering::Acquire) {
        return Err("interrupted".into());
    }
    // move the pack in only if some update goes ahead
    let updating = commands.iter().any(|c| c.refused.is_none());
    if updating {
        if let Some(out) = &written {
            if let Err(e) = migrate(out, &dir.join("objects/pack")) {
                tracing::warn!("git: moving a pushed pack into place: {e}");
                for c in &mut commands {
                    c.refused
                        .get_or_insert_with(|| "cannot store the objects".into());
                }
            }
        }
    }
    drop(quarantine_odb);
    drop(quarantine);
    update_refs(&repo, &mut commands, atomic);

    // the report; the pusher sees paths inside the repository as git shows them
    // (`objects/…`), not where the server keeps it
    let for_pusher = |why: &str| {
        why.replace(&format!("{}/", dir.display()), "")
            .replace('\n', " ")
    };
    let mut lines = vec![match &unpack {
        Ok(()) => "unpack ok".to_string(),
        Err(e) => format!("unpack {}", for_pusher(e)),
    }];
    for c in &commands {
        lines.push(match &c.refused {
            None => format!("ok {}", c.name),
            Some(why) => format!("ng {} {}", c.name, for_pusher(why)),
        });
    }
    for c in commands.iter().filter(|c| c.refused.is_some()) {
        tracing::info!(reference = %c.name, reason = ?c.refused, "git: ref update refused");
    }
    if report {
        if side_band {
            let mut band = SideBand::new(&mut *output, quiet);
            let mut inner = Vec::new();
            for l in &lines {
                pkt::write_text(&mut inner, l).map_err(io)?;
            }
            pkt::write_flush(&mut inner).map_err(io)?;
            band.write_all(&inner).map_err(io)?;
            pkt::write_flush(output).map_err(io)?;
        } else {
            for l in &lines {
                pkt::write_text(output, l).map_err(io)?;
            }
            pkt::write_flush(output).map_err(io)?;
        }
    } else if side_band {
        pkt::write_flush(output).map_err(io)?;
    }
    output.flush().map_err(io)?;
    Ok(())
}

/// Why `c` may not go ahead, if it may not.
fn check(
    c: &Command,
    both: &Both<'_>,
    unpack: &Result<(), String>,
    current: Option<ObjectId>,
    options: &ReceiveOptions,
    limits: &NativeLimits,
) -> Option<String> {
    if unpack.is_err() {
        return Some("unpacker error".into());
    }
    if !c.name.starts_with("refs/") || FullName::try_from(c.name.as_str()).is_err() {
        return Some("funny refname".into());
    }
    let expected = if c.old.is_null() { None } else { Some(c.old) };
    if current != expected {
        // the client saw another value: someone pushed meanwhile
        return Some(if current.is_some() && expected.is_none() {
            "reference already exists".into()
        } else {
            "stale info".into()
        });
    }
    if c.new.is_null() {
        return None;
    }
    if !both.exists(&c.new) {
        return Some("missing necessary objects".into());
    }
    if let Err(e) = connected(both, c.new, limits.max_check_objects) {
        return Some(e);
    }
    if c.name.starts_with("refs/heads/") {
        match both.lookup(&c.new) {
            Ok(Some((Kind::Commit, _))) => {}
            Ok(_) => return Some("branches must point at commits".into()),
            Err(e) => return Some(e),
        }
        if !c.old.is_null() && !options.allow_force_push {
            match is_ancestor(both, c.old, c.new, limits.max_check_objects) {
                Ok(true) => {}
                Ok(false) => return Some("non-fast-forward".into()),
                Err(e) => return Some(e),
            }
        }
    }
    None
}

/// Moves the indexed pack from the quarantine into `pack_dir`: pack first, index last.
fn migrate(outcome: &gix_pack::bundle::write::Outcome, pack_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(pack_dir)?;
    let (Some(data), Some(index)) = (&outcome.data_path, &outcome.index_path) else {
        return Ok(());
    };
    for file in [data, index] {
        let name = file
            .file_name()
            .ok_or_else(|| std::io::Error::other("pack without a name"))?;
        let target = pack_dir.join(name);
        // the same pack already stored (an identical push): keep that one
        if target.exists() {
            continue;
        }
        std::fs::rename(file, &target)?;
    }
    Ok(())
}

/// Applies the updates not refused, as compare-and-swap transactions: all in one with
/// `atomic`, else one per ref.
fn update_refs(repo: &gix::Repository, commands: &mut [Command], atomic: bool) {
    let edit = |c: &Command| -> Result<RefEdit, String> {
        let name = FullName::try_from(c.name.as_str()).map_err(|_| "funny refname".to_string())?;
        let expected = if c.old.is_null() {
            PreviousValue::MustNotExist
        } else {
            PreviousValue::MustExistAndMatch(Target::Object(c.old))
        };
        let change = if c.new.is_null() {
            Change::Delete {
                expected,
                log: RefLog::AndReference,
            }
        } else {
            Change::Update {
                log: LogChange {
                    mode: RefLog::AndReference,
                    force_create_reflog: false,
                    message: "push".into(),
                },
                expected,
                new: Target::Object(c.new),
            }
        };
        Ok(RefEdit {
            change,
            name,
            deref: false,
        })
    };
    let apply = |edits: Vec<RefEdit>| -> Result<(), String> {
        let lock = gix::lock::acquire::Fail::AfterDurationWithBackoff(
            std::time::Duration::from_millis(REF_LOCK_TIMEOUT_MS),
        );
        repo.refs
            .transaction()
            .prepare(edits, lock, lock)
            .map_err(|e| format!("failed to lock: {}", ErrorChain(&e)))?
            .commit(None)
            .map_err(|e| format!("failed to update ref: {}", ErrorChain(&e)))?;
        Ok(())
    };
    if atomic {
        let pending: Vec<usize> = (0..commands.len())
            .filter(|i| commands[*i].refused.is_none())
            .collect();
        if pending.is_empty() {
            return;
        }
        let edits: Result<Vec<_>, _> = pending.iter().map(|i| edit(&commands[*i])).collect();
        let result = edits.and_then(apply);
        if let Err(e) = result {
            for i in pending {
                commands[i].refused = Some(e.clone());
            }
        }
    } else {
        for c in commands.iter_mut().filter(|c| c.refused.is_none()) {
            if let Err(e) = edit(c).and_then(|e| apply(vec![e])) {
                c.refused = Some(e);
            }
        }
    }
}

/// How long a ref update waits for another update's lock on the same ref before it
/// fails (git's `core.filesRefLockTimeout` default).
pub const REF_LOCK_TIMEOUT_MS: u64 = 100;
