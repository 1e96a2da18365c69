//! upload-pack (clone, fetch, ls-remote), gix-native: protocol v2 (`ls-refs`, `fetch`)
//! and v0 (ref advertisement, want/have/done), packs built by [`super::objects`].
//!
//! Negotiation is stateless in v2, as the protocol intends: every `fetch` round carries
//! all wants and the haves the client wants considered; the server acknowledges those it
//! has and says `ready` as soon as one is common, then sends the pack. v0 acknowledges as
//! the client asked (plain, `multi_ack`, `multi_ack_detailed` with `no-done`: see
//! [`super::negotiate`]) and sends the pack after `done` or, with `no-done`, as soon as it
//! said `ready`. Shallow requests (`shallow`, `deepen`,
//! `deepen-relative`, `deepen-since`, `deepen-not`) are served by [`super::shallow`]:
//! v2 says the boundary in a `shallow-info` section before the pack, v0 right after the
//! wants (drawn from the wants alone, as git does).

use std::io::{Read, Write};
use std::sync::atomic::AtomicBool;

use gix::hash::ObjectId;

use super::filter::ObjectFilter;
use super::full_clone;
use super::negotiate::{AckMode, AfterFlush, V0Negotiation};
use super::objects::{self, Db};
use super::pkt::{self, Pkt, PktError, PktReader, SideBand};
use super::shallow::{DeepenRequest, ShallowPlan};
use super::ErrorChain;
use super::{agent, parse_oid, NativeLimits};

/// A reference as advertised.
#[derive(Debug, Clone)]
pub struct AdvertisedRef {
    pub name: String,
    pub id: ObjectId,
    /// The object an annotated tag finally names.
    pub peeled: Option<ObjectId>,
    /// For `HEAD`: the branch it points at.
    pub symref: Option<String>,
}

/// The repository's references, `HEAD` first (if it points at something), and the branch
/// `HEAD` names even when that branch does not exist yet (an unborn `HEAD`).
pub fn list_refs(
    repo: &gix::Repository,
    db: &Db,
) -> Result<(Vec<AdvertisedRef>, Option<String>), String> {
    use gix::refs::Target;
    let mut out = Vec::new();
    let advertised = |name: String, id: ObjectId, symref: Option<String>| {
        let peeled = match objects::peel(db, id) {
            Ok((p, _)) if p != id => Some(p),
            _ => None,
        };
        AdvertisedRef {
            name,
            id,
            peeled,
            symref,
        }
    };
    let head = repo
        .refs
        .try_find("HEAD")
        .map_err(|e| format!("reading HEAD: {}", ErrorChain(&e)))?;
    let mut head_target = None;
    if let Some(head) = head {
        match head.target {
            Target::Object(id) => out.push(advertised("HEAD".into(), id, None)),
            Target::Symbolic(name) => {
                let name = name.as_bstr().to_string();
                let resolved = repo
                    .refs
                    .try_find(name.as_str())
                    .map_err(|e| format!("reading {name}: {}", ErrorChain(&e)))?;
                if let Some(gix::refs::Reference {
                    target: Target::Object(id),
                    ..
                }) = resolved
                {
                    out.push(advertised("HEAD".into(), id, Some(name.clone())));
                }
                head_target = Some(name);
            }
        }
    }
    let platform = repo
        .refs
        .iter()
        .map_err(|e| format!("listing references: {}", ErrorChain(&e)))?;
    for r in platform
        .all()
        .map_err(|e| format!("listing references: {}", ErrorChain(&e)))?
    {
        let r = r.map_err(|e| format!("listing references: {}", ErrorChain(&e)))?;
        if let Target::Object(id) = r.target {
            out.push(advertised(r.name.as_bstr().to_string(), id, None));
        }
    }
    Ok((out, head_target))
}

/// The annotated tags among `refs` (their tag objects), for `include-tag`.
fn tag_objects(refs: &[AdvertisedRef]) -> Vec<ObjectId> {
    refs.iter()
        .filter(|r| r.name.starts_with("refs/tags/") && r.peeled.is_some())
        .map(|r| r.id)
        .collect()
}

/// What a `fetch` (either version) asked for.
#[derive(Debug, Default)]
struct FetchRequest {
    wants: Vec<ObjectId>,
    haves: Vec<ObjectId>,
    done: bool,
    no_progress: bool,
    include_tag: bool,
    side_band: bool,
    /// The client takes a thin pack (deltas against objects it has).
    thin_pack: bool,
    deepen: DeepenRequest,
    /// Partial clone: what to leave out.
    filter: Option<ObjectFilter>,
    /// v2 `want-ref`: the references asked for by name and what they point at.
    wanted_refs: Vec<(String, ObjectId)>,
}

impl FetchRequest {
    fn push_bounded(
        list: &mut Vec<ObjectId>,
        id: ObjectId,
        limits: &NativeLimits,
    ) -> Result<(), String> {
        if list.len() >= limits.max_negotiation_lines {
            return Err(format!(
                "more than {} want or have lines",
                limits.max_negotiation_lines
            ));
        }
        list.push(id);
        Ok(())
    }

    /// Takes a `want-ref <name>` argument (v2): the reference, by its full name, must
    /// exist; what it points at becomes a want. `Ok(false)` if `arg` is not one.
    fn want_ref_arg(
        &mut self,
        repo: &gix::Repository,
        arg: &[u8],
        limits: &NativeLimits,
    ) -> Result<bool, String> {
        let Some(name) = arg.strip_prefix(b"want-ref ") else {
            return Ok(false);
        };
        if !limits.allow_want_ref {
            return Err("want-ref is not allowed on this server".into());
        }
        let name = std::str::from_utf8(name)
            .map_err(|_| "want-ref: the reference name is not UTF-8".to_string())?;
        let id = resolve_full_ref(repo, name)?.ok_or_else(|| format!("unknown ref {name}"))?;
        if self.wanted_refs.len() >= limits.max_negotiation_lines {
            return Err(format!(
                "more than {} want-ref lines",
                limits.max_negotiation_lines
            ));
        }
        self.wanted_refs.push((name.to_string(), id));
        Self::push_bounded(&mut self.wants, id, limits)?;
        Ok(true)
    }

    /// Takes a `filter <spec>` argument, reading the pattern blobs of its `sparse:oid=`
    /// filters from the repository; `Ok(false)` if `arg` is not one.
    fn filter_arg(
        &mut self,
        repo: &gix::Repository,
        db: &Db,
        arg: &[u8],
        limits: &NativeLimits,
    ) -> Result<bool, String> {
        let Some(spec) = arg.strip_prefix(b"filter ") else {
            return Ok(false);
        };
        if !limits.allow_filter {
            return Err("filter: partial clone is not allowed on this server".into());
        }
        if self.filter.is_some() {
            return Err("filter: only one filter per request".into());
        }
        let mut filter = ObjectFilter::parse(spec).map_err(|e| format!("filter: {e}"))?;
        filter.load_sparse(&mut |name| {
            let err = |e: String| format!("filter: sparse:oid={name}: {e}");
            let id = super::sparse::resolve_blob(repo, db, name).map_err(err)?;
            let (_, data) = objects::need(db, &id).map_err(err)?;
            super::sparse::SparsePatterns::parse(
                &data,
                limits.max_sparse_file_bytes,
                limits.max_sparse_patterns,
            )
            .map_err(|e| err(e.to_string()))
        })?;
        self.filter = Some(filter);
        Ok(true)
    }

    /// Takes a shallow-related argument (`shallow`, `deepen`, `deepen-since`,
    /// `deepen-not`, `deepen-relative`); `Ok(false)` if `arg` is none of them.
    fn shallow_arg(
        &mut self,
        repo: &gix::Repository,
        db: &Db,
        arg: &[u8],
        limits: &NativeLimits,
    ) -> Result<bool, String> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
        if let Some(hex) = arg.strip_prefix(b"shallow ") {
            let id = parse_oid(hex).ok_or("bad shallow")?;
            Self::push_bounded(&mut self.deepen.client_shallow, id, limits)?;
        } else if let Some(n) = arg.strip_prefix(b"deepen ") {
            let depth = text(n)
                .parse::<u32>()
                .ok()
                .filter(|d| *d > 0)
                .ok_or_else(|| format!("invalid deepen: {}", text(n)))?;
            self.deepen.depth = Some(depth);
        } else if let Some(t) = arg.strip_prefix(b"deepen-since ") {
            let since = text(t)
                .parse::<i64>()
                .map_err(|_| format!("invalid deepen-since: {}", text(t)))?;
            self.deepen.since = Some(since);
        } else if let Some(name) = arg.strip_prefix(b"deepen-not ") {
            let name = text(name);
            let found = repo
                .refs
                .try_find(name.as_str())
                .map_err(|e| format!("deepen-not {name}: {e}"))?;
            let Some(gix::refs::Reference {
                target: gix::refs::Target::Object(id),
                ..
            }) = found
            else {
                return Err(format!("deepen-not: {name} is not a reference"));
            };
            let (id, _) = objects::peel(db, id)?;
            if self.deepen.not.len() >= limits.max_negotiation_lines {
                return Err("too many deepen-not lines".into());
            }
            self.deepen.not.push(id);
        } else if arg == b"deepen-relative" {
            self.deepen.relative = true;
        } else {
            return Ok(false);
        }
        if self.deepen.depth.is_some()
            && (self.deepen.since.is_some() || !self.deepen.not.is_empty())
        {
            return Err("deepen and deepen-since (or deepen-not) cannot be used together".into());
        }
        Ok(true)
    }
}

/// What the reference named exactly `name` (`HEAD` or `refs/…`, no abbreviation) points
/// at, symbolic references followed; `None` if there is no such reference.
fn resolve_full_ref(repo: &gix::Repository, name: &str) -> Result<Option<ObjectId>, String> {
    use gix::refs::Target;
    if name != "HEAD" && !name.starts_with("refs/") {
        return Ok(None);
    }
    let mut name = name.to_string();
    // bounded: a longer chain of symbolic references is not followed
    for _ in 0..5 {
        let found = match repo.refs.try_find(name.as_str()) {
            Ok(f) => f,
            // not a valid reference name: no such reference
            Err(_) => return Ok(None),
        };
        let Some(r) = found else { return Ok(None) };
        if r.name.as_bstr() != name.as_str() {
            return Ok(None);
        }
        match r.target {
            Target::Object(id) => return Ok(Some(id)),
            Target::Symbolic(t) => name = t.as_bstr().to_string(),
        }
    }
    Err(format!(
        "want-ref: symbolic reference chain at {name} is too long"
    ))
}

/// The objects among `haves` that the repository has.
fn common(db: &Db, haves: &[ObjectId]) -> Vec<ObjectId> {
    use gix::objs::Exists;
    haves.iter().copied().filter(|h| db.exists(h)).collect()
}

fn check_wants(db: &Db, wants: &[ObjectId]) -> Result<(), String> {
    use gix::objs::Exists;
    for w in wants {
        if !db.exists(w) {
            return Err(format!("upload-pack: not our ref {w}"));
        }
    }
    Ok(())
}

/// What a fetch sends: objects a walk selected, or a full clone answered from a bitmap.
enum Outgoing {
    Walked(Box<objects::Selection>),
    FullClone(full_clone::FullClone),
}

impl Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Walked(s) => s.ids.len(),
            Outgoing::FullClone(c) => c.len(),
        }
    }

    fn shallow(&self) -> Option<&ShallowPlan> {
        match self {
            Outgoing::Walked(s) => Some(&s.shallow),
            Outgoing::FullClone(_) => None,
        }
    }
}

/// What to send for `request` (tags for `include-tag` from `refs`; a shallow boundary
/// already drawn in `plan`, else drawn here). A full clone (no haves, not shallow) is
/// answered from the repository's reachability bitmap when it has one.
fn select(
    repo: &gix::Repository,
    db: &Db,
    refs: &[AdvertisedRef],
    request: &FetchRequest,
    common: &[ObjectId],
    plan: Option<ShallowPlan>,
    limits: &NativeLimits,
) -> Result<Outgoing, String> {
    let started = std::time::Instant::now();
    let tags = if request.include_tag {
        tag_objects(refs)
    } else {
        Vec::new()
    };
    // a filtered clone walks: the bitmap's object set is everything the wants reach
    if limits.use_bitmaps
        && common.is_empty()
        && !request.deepen.is_shallow()
        && plan.is_none()
        && request.filter.is_none()
    {
        if let Some(clone) = full_clone::select(
            db,
            repo.path(),
            &request.wants,
            &tags,
            limits.max_check_objects,
        )? {
            tracing::debug!(
                objects = clone.len(),
                whole_pack = matches!(clone, full_clone::FullClone::WholePack { .. }),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "upload-pack: objects selected from the bitmap"
            );
            return Ok(Outgoing::FullClone(clone));
        }
    }
    let selection = objects::objects_to_send(
        db,
        objects::SendAsk {
            wants: &request.wants,
            common,
            tags: &tags,
            thin: request.thin_pack,
            deepen: &request.deepen,
            filter: request.filter.as_ref(),
        },
        plan,
        limits.max_check_objects,
    )?;
    tracing::debug!(
        objects = selection.ids.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "upload-pack: objects walked"
    );
    Ok(Outgoing::Walked(Box::new(selection)))
}

/// Writes the pack of `outgoing` to `out`.
fn write_outgoing(
    db: &Db,
    outgoing: Outgoing,
    thin: bool,
    limits: &NativeLimits,
    out: &mut dyn Write,
    interrupt: &AtomicBool,
) -> Result<usize, String> {
    use full_clone::FullClone;
    match outgoing {
        Outgoing::Walked(selection) => {
            objects::write_pack(db, *selection, thin, limits.max_delta_bytes, out, interrupt)
        }
        Outgoing::FullClone(FullClone::WholePack { pack, extra }) => {
            full_clone::write_whole_pack(db, &pack, &extra, out, interrupt)
        }
        Outgoing::FullClone(FullClone::Objects(ids)) => objects::write_pack(
            db,
            objects::Selection {
                ids,
                ..Default::default()
            },
            false,
            limits.max_delta_bytes,
            out,
            interrupt,
        ),
    }
}

/// v2's `shallow-info` section (for a shallow request), up to its delimiter.
fn write_shallow_info(out: &mut dyn Write, plan: &ShallowPlan) -> std::io::Result<()> {
    pkt::write_text(out, "shallow-info")?;
    write_shallow_lines(out, plan)?;
    pkt::write_delim(out)
}

/// `shallow X` for the new boundary, `unshallow X` for the client's deepened commits.
fn write_shallow_lines(out: &mut dyn Write, plan: &ShallowPlan) -> std::io::Result<()> {
    for id in &plan.shallow {
        pkt::write_text(out, &format!("shallow {id}"))?;
    }
    for id in &plan.unshallow {
        pkt::write_text(out, &format!("unshallow {id}"))?;
    }
    Ok(())
}

/// Writes the pack of `selection` through side-band (progress on band 2 unless asked
/// not to).
fn send_pack(
    db: &Db,
    request: &FetchRequest,
    outgoing: Outgoing,
    out: &mut dyn Write,
    interrupt: &AtomicBool,
    limits: &NativeLimits,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut band = SideBand::new(out, request.no_progress);
    let io = |e: std::io::Error| e.to_string();
    band.progress(&format!("Enumerating objects: {}, done.\n", outgoing.len()))
        .map_err(io)?;
    let reused = match &outgoing {
        Outgoing::FullClone(full_clone::FullClone::WholePack { pack, .. }) => {
            Some(pack.num_objects())
        }
        _ => None,
    };
    // whole side-band packets, not one per pack entry header
    let mut buffered = std::io::BufWriter::with_capacity(pkt::MAX_BAND_PAYLOAD, &mut band);
    let written = write_outgoing(
        db,
        outgoing,
        request.thin_pack,
        limits,
        &mut buffered,
        interrupt,
    )
    .and_then(|n| buffered.flush().map(|_| n).map_err(io));
    drop(buffered);
    let total = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = band.fatal(&format!("upload-pack: {e}"));
            return Err(e);
        }
    };
    tracing::debug!(
        objects = total,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "upload-pack: pack sent"
    );
    let summary = match reused {
        // git's wording for stored pack data sent as it is
        Some(reused) => format!("Total {total}, pack-reused {reused} (alknet, gix backend)\n"),
        None => format!("Total {total} (alknet, gix backend)\n"),
    };
    band.progress(&summary).map_err(io)?;
    Ok(())
}

/// Protocol v2.
pub fn serve_v2(
    dir: &std::path::Path,
    input: &mut dyn Read,
    output: &mut dyn Write,
    interrupt: &AtomicBool,
    limits: &NativeLimits,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let (repo, db) = match objects::open(dir, limits.delta_base_cache_bytes) {
        Ok(r) => r,
        Err(e) => {
            let _ = pkt::write_text(output, &format!("ERR {e}"));
            return Err(e);
        }
    };
    let mut fetch = "fetch=shallow".to_string();
    if limits.allow_filter {
        fetch.push_str(" filter");
    }
    if limits.allow_want_ref {
        fetch.push_str(" ref-in-want");
    }
    for line in [
        "version 2",
        &format!("agent={}", agent()),
        "ls-refs=unborn",
        &fetch,
        "server-option",
        "object-format=sha1",
    ] {
        pkt::write_text(output, line).map_err(io)?;
    }
    pkt::write_flush(output).map_err(io)?;
    output.flush().map_err(io)?;
    let mut reader = PktReader::new(input);
    loop {
        let command = match reader.read() {
            Err(PktError::Eof) => return Ok(()),
            Err(e) => return Err(e.to_string()),
            // a lone flush: the client is done
            Ok(Pkt::Flush) => return Ok(()),
            Ok(Pkt::Data(line)) => match line.strip_prefix(b"command=") {
                Some(c) => c.to_vec(),
                None => return refuse(output, "expected a command"),
            },
            Ok(_) => return refuse(output, "expected a command"),
        };
        // capabilities up to the delimiter (agent, object-format, server-option: noted
        // and ignored), then arguments up to the flush
        let mut args: Vec<Vec<u8>> = Vec::new();
        let mut in_args = false;
        loop {
            match reader.read().map_err(|e| e.to_string())? {
                Pkt::Flush => break,
                Pkt::Delim if !in_args => in_args = true,
                Pkt::Data(line) if in_args => {
                    if args.len() >= limits.max_negotiation_lines {
                        return refuse(output, "too many arguments");
                    }
                    args.push(line.to_vec());
                }
                Pkt::Data(line) => {
                    if line.starts_with(b"object-format=") && line != b"object-format=sha1" {
                        return refuse(output, "only sha1 repositories are served");
                    }
                }
                _ => return refuse(output, "unexpected special packet"),
            }
        }
        match command.as_slice() {
            b"ls-refs" => ls_refs(&repo, &db, &args, output)?,
            b"fetch" => {
                let mut request = FetchRequest {
                    side_band: true,
                    ..Default::default()
                };
                for arg in &args {
                    let arg = arg.as_slice();
                    if let Some(hex) = arg.strip_prefix(b"want ") {
                        let id = parse_oid(hex).ok_or("bad want")?;
                        FetchRequest::push_bounded(&mut request.wants, id, limits)?;
                    } else if let Some(hex) = arg.strip_prefix(b"have ") {
                        let id = parse_oid(hex).ok_or("bad have")?;
                        FetchRequest::push_bounded(&mut request.haves, id, limits)?;
                    } else {
                        match request.shallow_arg(&repo, &db, arg, limits) {
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(e) => return refuse(output, &e),
                        }
                        match request.filter_arg(&repo, &db, arg, limits) {
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(e) => return refuse(output, &e),
                        }
                        match request.want_ref_arg(&repo, arg, limits) {
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(e) => return refuse(output, &e),
                        }
                        match arg {
                            b"done" => request.done = true,
                            b"no-progress" => request.no_progress = true,
                            b"include-tag" => request.include_tag = true,
                            b"thin-pack" => request.thin_pack = true,
                            b"ofs-delta" | b"sideband-all" => {}
                            other => {
                                let word = String::from_utf8_lossy(
                                    other.split(|b| *b == b' ').next().unwrap_or(other),
                                );
                                return refuse(
                                    output,
                                    &format!("fetch: {word} is not supported by this server"),
                                );
                            }
                        }
                    }
                }
                if let Err(e) = check_wants(&db, &request.wants) {
                    return refuse(output, &e);
                }
                let common = common(&db, &request.haves);
                let (refs, _) = list_refs(&repo, &db)?;
                if !request.done {
                    pkt::write_text(output, "acknowledgments").map_err(io)?;
                    if common.is_empty() {
                        pkt::write_text(output, "NAK").map_err(io)?;
                    }
                    for c in &common {
                        pkt::write_text(output, &format!("ACK {c}")).map_err(io)?;
                    }
                    if common.is_empty() {
                        pkt::write_flush(output).map_err(io)?;
                        output.flush().map_err(io)?;
                        continue;
                    }
                    pkt::write_text(output, "ready").map_err(io)?;
                    pkt::write_delim(output).map_err(io)?;
                }
                let outgoing = match select(&repo, &db, &refs, &request, &common, None, limits) {
                    Ok(s) => s,
                    Err(e) => return refuse(output, &format!("upload-pack: {e}")),
                };
                if request.deepen.is_shallow() {
                    if let Some(plan) = outgoing.shallow() {
                        write_shallow_info(output, plan).map_err(io)?;
                    }
                }
                if !request.wanted_refs.is_empty() {
                    pkt::write_text(output, "wanted-refs").map_err(io)?;
                    for (name, id) in &request.wanted_refs {
                        pkt::write_text(output, &format!("{id} {name}")).map_err(io)?;
                    }
                    pkt::write_delim(output).map_err(io)?;
                }
                pkt::write_text(output, "packfile").map_err(io)?;
                send_pack(&db, &request, outgoing, output, interrupt, limits)?;
                pkt::write_flush(output).map_err(io)?;
                output.flush().map_err(io)?;
            }
            other => {
                let name = String::from_utf8_lossy(other).to_string();
                return refuse(output, &format!("unknown command {name:?}"));
            }
        }
    }
}

/// Sends `ERR message` and fails the command.
fn refuse(output: &mut dyn Write, message: &str) -> Result<(), String> {
    let _ = pkt::write_text(output, &format!("ERR {message}"));
    let _ = output.flush();
    Err(message.to_string())
}

fn ls_refs(
    repo: &gix::Repository,
    db: &Db,
    args: &[Vec<u8>],
    output: &mut dyn Write,
) -> Result<(), String> {
    let (mut peel, mut symrefs, mut unborn) = (false, false, false);
    let mut prefixes: Vec<String> = Vec::new();
    for arg in args {
        match arg.as_slice() {
            b"peel" => peel = true,
            b"symrefs" => symrefs = true,
            b"unborn" => unborn = true,
            a => {
                if let Some(p) = a.strip_prefix(b"ref-prefix ") {
                    prefixes.push(String::from_utf8_lossy(p).to_string());
                }
                // unknown arguments are ignored, as git does
            }
        }
    }
    let wanted = |name: &str| prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p));
    let (refs, head_target) = list_refs(repo, db)?;
    let io = |e: std::io::Error| e.to_string();
    let head_listed = refs.iter().any(|r| r.name == "HEAD");
    if unborn && !head_listed && wanted("HEAD") {
        if let Some(target) = &head_target {
            let line = if symrefs {
                format!("unborn HEAD symref-target:{target}")
            } else {
                "unborn HEAD".to_string()
            };
            pkt::write_text(output, &line).map_err(io)?;
        }
    }
    for r in refs.iter().filter(|r| wanted(&r.name)) {
        let mut line = format!("{} {}", r.id, r.name);
        if symrefs {
            if let Some(t) = &r.symref {
                line.push_str(&format!(" symref-target:{t}"));
            }
        }
        if peel {
            if let Some(p) = r.peeled {
                line.push_str(&format!(" peeled:{p}"));
            }
        }
        pkt::write_text(output, &line).map_err(io)?;
    }
    pkt::write_flush(output).map_err(io)?;
    output.flush().map_err(io)
}

/// Protocol v0 (and v1, which only adds a `version 1` line first).
pub fn serve_v0(
    dir: &std::path::Path,
    version1: bool,
    input: &mut dyn Read,
    output: &mut dyn Write,
    interrupt: &AtomicBool,
    limits: &NativeLimits,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let (repo, db) = match objects::open(dir, limits.delta_base_cache_bytes) {
        Ok(r) => r,
        Err(e) => return refuse(output, &e),
    };
    let (refs, head_target) = list_refs(&repo, &db)?;
    if version1 {
        pkt::write_text(output, "version 1").map_err(io)?;
    }
    let mut caps = format!(
        "multi_ack thin-pack side-band-64k ofs-delta shallow deepen-since deepen-not deepen-relative no-progress include-tag multi_ack_detailed no-done agent={} object-format=sha1",
        agent()
    );
    if limits.allow_filter {
        // a partial clone fetches missing objects by id later (git's v0 client asks only
        // when these are advertised); wants are checked for existence, not reachability
        // (as git's uploadpack.allowAnySHA1InWant, which advertises the same two)
        caps.push_str(" filter allow-tip-sha1-in-want allow-reachable-sha1-in-want");
    }
    if let Some(t) = &head_target {
        caps = format!("symref=HEAD:{t} {caps}");
    }
    if refs.is_empty() {
        let line = format!(
            "{} capabilities^{{}}\0{caps}",
            ObjectId::null(gix::hash::Kind::Sha1)
        );
        pkt::write_text(output, &line).map_err(io)?;
    }
    for (i, r) in refs.iter().enumerate() {
        let line = if i == 0 {
            format!("{} {}\0{caps}", r.id, r.name)
        } else {
            format!("{} {}", r.id, r.name)
        };
        pkt::write_text(output, &line).map_err(io)?;
        if let Some(p) = r.peeled {
            pkt::write_text(output, &format!("{p} {}^{{}}", r.name)).map_err(io)?;
        }
    }
    pkt::write_flush(output).map_err(io)?;
    output.flush().map_err(io)?;

    let mut reader = PktReader::new(input);
    let mut request = FetchRequest::default();
    let (mut ack_mode, mut no_done) = (AckMode::Single, false);
    // wants (the first carries the client's capabilities), up to a flush
    loop {
        match reader.read() {
            // nothing wanted (ls-remote, an up-to-date fetch)
            Err(PktError::Eof) | Ok(Pkt::Flush) if request.wants.is_empty() => return Ok(()),
            Ok(Pkt::Flush) => break,
            Ok(Pkt::Data(line)) => {
                if !line.starts_with(b"want ") {
                    match request.shallow_arg(&repo, &db, line, limits) {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(e) => return refuse(output, &e),
                    }
                    match request.filter_arg(&repo, &db, line, limits) {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(e) => return refuse(output, &e),
                    }
                }
                let Some(rest) = line.strip_prefix(b"want ") else {
                    let word =
                        String::from_utf8_lossy(line.split(|b| *b == b' ').next().unwrap_or(line))
                            .to_string();
                    return refuse(output, &format!("{word} is not supported by this server"));
                };
                let (hex, caps) = match rest.iter().position(|b| *b == b' ') {
                    Some(sp) => (&rest[..sp], &rest[sp + 1..]),
                    None => (rest, &b""[..]),
                };
                let id = parse_oid(hex).ok_or("bad want")?;
                if request.wants.is_empty() {
                    ack_mode = AckMode::from_capabilities(caps.split(|b| *b == b' '));
                    for cap in caps.split(|b| *b == b' ') {
                        match cap {
                            b"side-band-64k" => request.side_band = true,
                            b"no-progress" => request.no_progress = true,
                            b"include-tag" => request.include_tag = true,
                            b"thin-pack" => request.thin_pack = true,
                            b"deepen-relative" => request.deepen.relative = true,
                            b"no-done" => no_done = true,
                            _ => {}
                        }
                    }
                }
                FetchRequest::push_bounded(&mut request.wants, id, limits)?;
            }
            Ok(_) => return refuse(output, "unexpected special packet"),
            Err(e) => return Err(e.to_string()),
        }
    }
    if let Err(e) = check_wants(&db, &request.wants) {
        return refuse(output, &e);
    }
    // v0 draws the shallow boundary from the wants alone, before negotiating (as git
    // does), and says it right away
    let mut plan = None;
    if request.deepen.is_shallow() {
        let drawn = match objects::draw_shallow(
            &db,
            &request.wants,
            &request.deepen,
            limits.max_check_objects,
        ) {
            Ok(p) => p,
            Err(e) => return refuse(output, &format!("upload-pack: {e}")),
        };
        write_shallow_lines(output, &drawn).map_err(io)?;
        pkt::write_flush(output).map_err(io)?;
        output.flush().map_err(io)?;
        plan = Some(drawn);
    }
    // haves in flushed batches, until done (or, with no-done, until the server is ready)
    let mut negotiation = match V0Negotiation::new(
        &db,
        &request.wants,
        ack_mode,
        no_done,
        limits.max_check_objects,
    ) {
        Ok(n) => n,
        Err(e) => return refuse(output, &format!("upload-pack: {e}")),
    };
    let mut common: Vec<ObjectId> = Vec::new();
    let mut answer = Vec::new();
    let write_lines = |output: &mut dyn Write, lines: &mut Vec<String>| {
        for line in lines.drain(..) {
            pkt::write_text(output, &line).map_err(io)?;
        }
        Ok::<(), String>(())
    };
    loop {
        match reader.read().map_err(|e| e.to_string())? {
            Pkt::Flush => {
                let after = negotiation.flush(&db, &mut answer);
                let after = match after {
                    Ok(a) => a,
                    Err(e) => return refuse(output, &format!("upload-pack: {e}")),
                };
                write_lines(output, &mut answer)?;
                output.flush().map_err(io)?;
                if after == AfterFlush::SendPack {
                    break;
                }
            }
            Pkt::Data(b"done") => {
                negotiation.done(&mut answer);
                write_lines(output, &mut answer)?;
                break;
            }
            Pkt::Data(line) => {
                let Some(id) = line.strip_prefix(b"have ").and_then(parse_oid) else {
                    return refuse(output, "expected have or done");
                };
                if request.haves.len() >= limits.max_negotiation_lines {
                    return refuse(output, "too many have lines");
                }
                request.haves.push(id);
                use gix::objs::Exists;
                if db.exists(&id) {
                    common.push(id);
                }
                if let Err(e) = negotiation.have(&db, id, &mut answer) {
                    return refuse(output, &format!("upload-pack: {e}"));
                }
                write_lines(output, &mut answer)?;
            }
            _ => return refuse(output, "unexpected special packet"),
        }
    }
    let outgoing = select(&repo, &db, &refs, &request, &common, plan, limits)?;
    if request.side_band {
        send_pack(&db, &request, outgoing, output, interrupt, limits)?;
        pkt::write_flush(output).map_err(io)?;
    } else {
        write_outgoing(&db, outgoing, request.thin_pack, limits, output, interrupt)?;
    }
    output.flush().map_err(io)?;
    Ok(())
}
