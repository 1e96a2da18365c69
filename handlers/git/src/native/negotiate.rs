//! Protocol v0's negotiation on upload-pack's side, as git's `upload-pack.c` runs it: the
//! client sends `have` lines in flushed batches; the server acknowledges them in one of
//! three modes the client picks from the advertisement:
//!
//! * plain (no capability): `ACK X` for the first common object only, `NAK` at each flush
//!   until then;
//! * `multi_ack`: `ACK X continue` for every common object (and for an unknown one once
//!   the server could send a pack), `NAK` at every flush, the last common one acknowledged
//!   plainly after `done`;
//! * `multi_ack_detailed`: `ACK X common` for every common object, `ACK X ready` once every
//!   want reaches something the client has (the server can make a good pack, the client
//!   may stop), `NAK` at every flush, `ACK X` after `done`. With `no-done` too, the server
//!   ends the negotiation itself at the flush of the batch where it said `ready`: the
//!   final `ACK X` and then the pack, without waiting for `done`.
//!
//! Sans-IO: the caller feeds lines and writes back what [`V0Negotiation`] answers, so the
//! state machine is tested here without sockets.

use std::collections::{HashMap, HashSet};

use gix::hash::ObjectId;
use gix::objs::{Exists, Find, Kind};

use super::objects::{commit_time_and_parents, commit_time_and_parents_of, need, peel};

/// How the client asked to be acknowledged (its capabilities on the first `want`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// One `ACK` for the first common object.
    #[default]
    Single,
    /// `multi_ack`: `ACK X continue`.
    MultiAck,
    /// `multi_ack_detailed`: `ACK X common` / `ACK X ready`.
    Detailed,
}

impl AckMode {
    /// The mode the client's capability words ask for (`multi_ack_detailed` wins).
    pub fn from_capabilities<'a>(caps: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut mode = AckMode::Single;
        for cap in caps {
            match cap {
                b"multi_ack_detailed" => mode = AckMode::Detailed,
                b"multi_ack" if mode == AckMode::Single => mode = AckMode::MultiAck,
                _ => {}
            }
        }
        mode
    }
}

/// What the server says after a flush.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterFlush {
    /// Keep reading haves.
    Continue,
    /// `no-done`: the negotiation is over, the pack follows now.
    SendPack,
}

/// One v0 negotiation's state (git's `THEY_HAVE` marks, `have_obj`, `oldest_have`).
pub struct V0Negotiation {
    mode: AckMode,
    no_done: bool,
    /// The wanted commits (tags peeled; wanted trees and blobs need no ancestry).
    wants: Vec<ObjectId>,
    /// Wants known to reach something the client has (they stay so: the client's set
    /// only grows).
    wants_ok: Vec<bool>,
    /// Commits the client has: its common haves and their parents.
    they_have: HashSet<ObjectId>,
    /// Common objects acknowledged so far (git's `have_obj.nr`).
    common: usize,
    /// The oldest committer time among the common haves: the walk deciding `ready`
    /// looks no further back.
    oldest_have: Option<i64>,
    /// In the current batch: a common have, an unknown have.
    got_common: bool,
    got_other: bool,
    sent_ready: bool,
    /// The last common object (what the final `ACK` names).
    last: Option<ObjectId>,
    /// Commit times and parents read so far.
    commits: HashMap<ObjectId, (i64, Vec<ObjectId>)>,
    /// Commits read at most in the whole negotiation (`[git] max_check_objects`): past
    /// it the server just never says `ready` (the client's `done` ends it).
    walk_limit: usize,
}

impl V0Negotiation {
    /// A negotiation for `wants` (checked present already).
    pub fn new(
        db: &dyn Find,
        wants: &[ObjectId],
        mode: AckMode,
        no_done: bool,
        walk_limit: usize,
    ) -> Result<Self, String> {
        let mut commits = Vec::new();
        for want in wants {
            if let (id, Kind::Commit) = peel(db, *want)? {
                if !commits.contains(&id) {
                    commits.push(id);
                }
            }
        }
        Ok(Self {
            mode,
            no_done: no_done && mode == AckMode::Detailed,
            wants_ok: vec![false; commits.len()],
            wants: commits,
            they_have: HashSet::new(),
            common: 0,
            oldest_have: None,
            got_common: false,
            got_other: false,
            sent_ready: false,
            last: None,
            commits: HashMap::new(),
            walk_limit,
        })
    }

    /// Common objects seen so far.
    pub fn common_count(&self) -> usize {
        self.common
    }

    /// A `have id` line; the lines to answer it with go to `out`.
    pub fn have<D: Find + Exists>(
        &mut self,
        db: &D,
        id: ObjectId,
        out: &mut Vec<String>,
    ) -> Result<(), String> {
        if !db.exists(&id) {
            self.got_other = true;
            if self.mode != AckMode::Single && self.ok_to_give_up(db)? {
                if self.mode == AckMode::Detailed {
                    self.sent_ready = true;
                    out.push(format!("ACK {id} ready"));
                } else {
                    out.push(format!("ACK {id} continue"));
                }
            }
            return Ok(());
        }
        let (kind, data) = need(db, &id)?;
        let new = if kind == Kind::Commit {
            let new = self.they_have.insert(id);
            let (time, parents) = commit_time_and_parents_of(&data)?;
            self.commits.insert(id, (time, parents.clone()));
            self.oldest_have = Some(self.oldest_have.map_or(time, |t| t.min(time)));
            self.they_have.extend(parents);
            new
        } else {
            true
        };
        if new {
            self.common += 1;
        }
        self.got_common = true;
        self.last = Some(id);
        match self.mode {
            AckMode::Detailed => out.push(format!("ACK {id} common")),
            AckMode::MultiAck => out.push(format!("ACK {id} continue")),
            AckMode::Single if new && self.common == 1 => out.push(format!("ACK {id}")),
            AckMode::Single => {}
        }
        Ok(())
    }

    /// A flush ending a batch of haves.
    pub fn flush(&mut self, db: &dyn Find, out: &mut Vec<String>) -> Result<AfterFlush, String> {
        if let Some(last) = self.last {
            if self.mode == AckMode::Detailed
                && self.got_common
                && !self.got_other
                && self.ok_to_give_up(db)?
            {
                self.sent_ready = true;
                out.push(format!("ACK {last} ready"));
            }
        }
        if self.common == 0 || self.mode != AckMode::Single {
            out.push("NAK".into());
        }
        if self.no_done && self.sent_ready {
            if let Some(last) = self.last {
                out.push(format!("ACK {last}"));
                return Ok(AfterFlush::SendPack);
            }
        }
        self.got_common = false;
        self.got_other = false;
        Ok(AfterFlush::Continue)
    }

    /// The client's `done`.
    pub fn done(&self, out: &mut Vec<String>) {
        match self.last {
            Some(last) if self.common > 0 => {
                if self.mode != AckMode::Single {
                    out.push(format!("ACK {last}"));
                }
            }
            _ => out.push("NAK".into()),
        }
    }

    /// A commit's time and parents, read once.
    fn commit(&mut self, db: &dyn Find, id: &ObjectId) -> Result<(i64, Vec<ObjectId>), String> {
        if let Some(c) = self.commits.get(id) {
            return Ok(c.clone());
        }
        if self.commits.len() >= self.walk_limit {
            return Err(format!(
                "negotiation read more than {} commits",
                self.walk_limit
            ));
        }
        let c = commit_time_and_parents(db, id)?;
        self.commits.insert(*id, c.clone());
        Ok(c)
    }

    /// Whether every want reaches a commit the client has, looking no further back than
    /// the oldest common have (git's `ok_to_give_up`): then a pack built now is as good
    /// as more negotiation would make it.
    fn ok_to_give_up(&mut self, db: &dyn Find) -> Result<bool, String> {
        if self.common == 0 {
            return Ok(false);
        }
        for i in 0..self.wants.len() {
            if self.wants_ok[i] {
                continue;
            }
            match self.reaches_they_have(db, self.wants[i]) {
                Ok(true) => self.wants_ok[i] = true,
                Ok(false) => return Ok(false),
                // past the walk limit: not ready (the client's `done` ends it)
                Err(e) => {
                    tracing::debug!("upload-pack: negotiation: {e}");
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn reaches_they_have(&mut self, db: &dyn Find, start: ObjectId) -> Result<bool, String> {
        let cutoff = self.oldest_have.unwrap_or(i64::MIN);
        let mut stack = vec![start];
        let mut visited = HashSet::from([start]);
        while let Some(id) = stack.pop() {
            if self.they_have.contains(&id) {
                return Ok(true);
            }
            let (_, parents) = self.commit(db, &id)?;
            for p in parents {
                if self.they_have.contains(&p) {
                    return Ok(true);
                }
                if visited.insert(p) && self.commit(db, &p)?.0 >= cutoff {
                    stack.push(p);
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits in memory: `(time, parents)` by id.
    #[derive(Default)]
    struct Graph(HashMap<ObjectId, Vec<u8>>);

    fn oid(n: u8) -> ObjectId {
        ObjectId::from_bytes_or_panic(&[n; 20])
    }

    impl Graph {
        fn commit(&mut self, n: u8, time: i64, parents: &[u8]) {
            let mut data = format!("tree {}\n", ObjectId::empty_tree(gix::hash::Kind::Sha1));
            for p in parents {
                data.push_str(&format!("parent {}\n", oid(*p)));
            }
            data.push_str(&format!(
                "author A <a@b> {time} +0000\ncommitter A <a@b> {time} +0000\n\nc{n}\n"
            ));
            self.0.insert(oid(n), data.into_bytes());
        }
    }

    impl gix::objs::Find for Graph {
        fn try_find<'a>(
            &self,
            id: &gix::hash::oid,
            buffer: &'a mut Vec<u8>,
        ) -> Result<Option<gix::objs::Data<'a>>, gix::Error> {
            Ok(self.0.get(id).map(|d| {
                buffer.clear();
                buffer.extend_from_slice(d);
                gix::objs::Data::new(buffer, Kind::Commit, gix::hash::Kind::Sha1)
            }))
        }
    }

    impl Exists for Graph {
        fn exists(&self, id: &gix::hash::oid) -> bool {
            self.0.contains_key(id)
        }
    }

    /// 1 ← 2 ← 3 ← 4 (the want); the client has 2 and its own 50, 51.
    fn line() -> Graph {
        let mut g = Graph::default();
        g.commit(1, 100, &[]);
        g.commit(2, 200, &[1]);
        g.commit(3, 300, &[2]);
        g.commit(4, 400, &[3]);
        g
    }

    #[test]
    fn detailed_acks_common_then_ready_and_no_done_ends_at_the_flush() {
        let g = line();
        let mut n = V0Negotiation::new(&g, &[oid(4)], AckMode::Detailed, true, 100).expect("new");
        let mut out = Vec::new();
        // a batch of unknown haves: NAK
        n.have(&g, oid(50), &mut out).expect("have");
        n.have(&g, oid(51), &mut out).expect("have");
        assert_eq!(n.flush(&g, &mut out).expect("flush"), AfterFlush::Continue);
        assert_eq!(out, ["NAK"]);
        out.clear();
        // a batch with the common commit: ACK common, then (no unknown in it) ready, NAK,
        // and with no-done the final ACK at once
        n.have(&g, oid(2), &mut out).expect("have");
        assert_eq!(n.flush(&g, &mut out).expect("flush"), AfterFlush::SendPack);
        let c = oid(2);
        assert_eq!(
            out,
            [
                format!("ACK {c} common"),
                format!("ACK {c} ready"),
                "NAK".into(),
                format!("ACK {c}")
            ]
        );
    }

    #[test]
    fn detailed_without_no_done_waits_for_done() {
        let g = line();
        let mut n = V0Negotiation::new(&g, &[oid(4)], AckMode::Detailed, false, 100).expect("new");
        let mut out = Vec::new();
        n.have(&g, oid(3), &mut out).expect("have");
        // an unknown have after the common one, once ready is possible: ACK it ready
        n.have(&g, oid(60), &mut out).expect("have");
        assert_eq!(n.flush(&g, &mut out).expect("flush"), AfterFlush::Continue);
        let (c, u) = (oid(3), oid(60));
        assert_eq!(
            out,
            [
                format!("ACK {c} common"),
                format!("ACK {u} ready"),
                "NAK".into()
            ]
        );
        out.clear();
        n.done(&mut out);
        assert_eq!(out, [format!("ACK {c}")]);
    }

    #[test]
    fn not_ready_while_a_want_reaches_nothing_the_client_has() {
        let mut g = line();
        // a second want on unrelated history
        g.commit(9, 900, &[]);
        let mut n =
            V0Negotiation::new(&g, &[oid(4), oid(9)], AckMode::Detailed, true, 100).expect("new");
        let mut out = Vec::new();
        n.have(&g, oid(2), &mut out).expect("have");
        assert_eq!(n.flush(&g, &mut out).expect("flush"), AfterFlush::Continue);
        assert_eq!(out, [format!("ACK {} common", oid(2)), "NAK".into()]);
    }

    #[test]
    fn plain_and_multi_ack_modes() {
        let g = line();
        let mut n = V0Negotiation::new(&g, &[oid(4)], AckMode::Single, false, 100).expect("new");
        let mut out = Vec::new();
        n.have(&g, oid(70), &mut out).expect("have");
        n.flush(&g, &mut out).expect("flush");
        n.have(&g, oid(3), &mut out).expect("have");
        n.have(&g, oid(2), &mut out).expect("have");
        n.flush(&g, &mut out).expect("flush");
        n.done(&mut out);
        assert_eq!(out, ["NAK".to_string(), format!("ACK {}", oid(3))]);

        let mut n = V0Negotiation::new(&g, &[oid(4)], AckMode::MultiAck, true, 100).expect("new");
        let mut out = Vec::new();
        n.have(&g, oid(2), &mut out).expect("have");
        // no-done needs multi_ack_detailed: ignored here
        assert_eq!(n.flush(&g, &mut out).expect("flush"), AfterFlush::Continue);
        n.done(&mut out);
        let c = oid(2);
        assert_eq!(
            out,
            [
                format!("ACK {c} continue"),
                "NAK".into(),
                format!("ACK {c}")
            ]
        );
        // nothing in common: NAK after done
        let n = V0Negotiation::new(&g, &[oid(4)], AckMode::Detailed, true, 100).expect("new");
        let mut out = Vec::new();
        n.done(&mut out);
        assert_eq!(out, ["NAK"]);
    }

    #[test]
    fn capability_words_pick_the_mode() {
        let words = |s: &'static str| s.split(' ').map(str::as_bytes);
        assert_eq!(
            AckMode::from_capabilities(words("multi_ack side-band-64k multi_ack_detailed")),
            AckMode::Detailed
        );
        assert_eq!(
            AckMode::from_capabilities(words("multi_ack thin-pack")),
            AckMode::MultiAck
        );
        assert_eq!(
            AckMode::from_capabilities(words("thin-pack")),
            AckMode::Single
        );
    }
}
