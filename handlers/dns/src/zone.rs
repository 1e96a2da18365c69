//! One authoritative zone, loaded from an RFC 1035 zone file, and the lookup inside it
//! (RFC 1034 §4.3.2: delegations, exact matches, CNAME chains, wildcards, NXDOMAIN/NODATA).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;

use crate::limits::MAX_CNAME_CHAIN;

/// Why a zone could not be loaded. The old zone (if any) stays in service.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("reading zone file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("zone {origin} ({path}), line {line}: {message}")]
    Syntax {
        origin: String,
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("zone {origin} ({path}): {message}")]
    Invalid {
        origin: String,
        path: PathBuf,
        message: String,
    },
    #[error("zone origin {0:?} is not a domain name")]
    Origin(String),
}

/// The RRsets at one owner name, keyed by numeric type so that iteration is in type order.
#[derive(Debug, Default, Clone)]
struct Node {
    rrsets: BTreeMap<u16, Vec<Record>>,
}

impl Node {
    fn get(&self, rtype: RecordType) -> Option<&[Record]> {
        self.rrsets.get(&u16::from(rtype)).map(Vec::as_slice)
    }
}

/// Where a lookup in a zone ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Data for the name and type (possibly after CNAMEs), or a chain that left the zone.
    Answer,
    /// The name exists but has no data of the type: NOERROR with the SOA in authority.
    NoData,
    /// The name does not exist: NXDOMAIN with the SOA in authority.
    NxDomain,
    /// The name is below a zone cut: NS in authority, glue in additional, not authoritative.
    Referral,
}

/// The sections a lookup fills in.
#[derive(Debug, Clone)]
pub struct ZoneAnswer {
    pub outcome: Outcome,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// An authoritative zone in memory.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: LowerName,
    origin_name: Name,
    soa: Record,
    nodes: HashMap<LowerName, Node>,
    /// Names with no records of their own but with names below them (RFC 4592's empty
    /// non-terminals): they exist, so they get NODATA, never NXDOMAIN or a wildcard.
    empty_non_terminals: HashSet<LowerName>,
    /// Names below the apex holding NS records: delegations to other servers.
    cuts: HashSet<LowerName>,
    records: usize,
}

impl Zone {
    /// Reads and parses `file` as the zone `origin`.
    pub fn load(origin: &str, file: &Path) -> Result<Self, ZoneError> {
        let text = std::fs::read_to_string(file).map_err(|source| ZoneError::Read {
            path: file.to_path_buf(),
            source,
        })?;
        Self::parse(origin, &text, file)
    }

    /// Parses zone file text; `path` names it in errors and anchors relative `$INCLUDE`s.
    pub fn parse(origin: &str, text: &str, path: &Path) -> Result<Self, ZoneError> {
        let origin_name = parse_origin(origin)?;
        let parsed = Parser::new(text, Some(path.to_path_buf()), Some(origin_name.clone()))
            .parse()
            .map_err(|e| ZoneError::Syntax {
                origin: origin_name.to_string(),
                path: path.to_path_buf(),
                line: locate_error(text, path, &origin_name),
                message: e.to_string(),
            })?;
        let invalid = |message: String| ZoneError::Invalid {
            origin: origin_name.to_string(),
            path: path.to_path_buf(),
            message,
        };
        let origin = LowerName::new(&origin_name);
        let mut nodes: HashMap<LowerName, Node> = HashMap::new();
        let mut records = 0;
        for (key, rrset) in parsed.1 {
            let owner = key.name().clone();
            if !origin.zone_of(&owner) {
                return Err(invalid(format!("{owner} is outside the zone")));
            }
            let list: Vec<Record> = rrset.records_without_rrsigs().cloned().collect();
            records += list.len();
            nodes
                .entry(owner)
                .or_default()
                .rrsets
                .entry(u16::from(key.record_type))
                .or_default()
                .extend(list);
        }
        let soa = nodes
            .get(&origin)
            .and_then(|n| n.get(RecordType::SOA))
            .and_then(|s| s.first())
            .cloned()
            .ok_or_else(|| invalid("no SOA record at the zone apex".into()))?;
        let mut cuts = HashSet::new();
        let mut empty_non_terminals = HashSet::new();
        for (name, node) in &nodes {
            if name != &origin && node.get(RecordType::SOA).is_some() {
                return Err(invalid(format!("SOA record at {name}, below the apex")));
            }
            if node.get(RecordType::CNAME).is_some() && node.rrsets.len() > 1 {
                return Err(invalid(format!(
                    "{name} has a CNAME and other data (RFC 1034 §3.6.2)"
                )));
            }
            if name == &origin && node.get(RecordType::CNAME).is_some() {
                return Err(invalid("CNAME at the zone apex".into()));
            }
            if name != &origin && node.get(RecordType::NS).is_some() {
                cuts.insert(name.clone());
            }
            let mut parent = name.base_name();
            while origin.zone_of(&parent) && parent != origin {
                if !nodes.contains_key(&parent) {
                    empty_non_terminals.insert(parent.clone());
                }
                parent = parent.base_name();
            }
        }
        Ok(Self {
            origin,
            origin_name,
            soa,
            nodes,
            empty_non_terminals,
            cuts,
            records,
        })
    }

    pub fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// The apex SOA serial.
    pub fn serial(&self) -> u32 {
        match &self.soa.data {
            RData::SOA(soa) => soa.serial,
            _ => 0,
        }
    }

    /// Records in the zone (for logs).
    pub fn record_count(&self) -> usize {
        self.records
    }

    /// The SOA for negative answers, its TTL capped by the SOA minimum (RFC 2308 §3).
    fn negative_soa(&self) -> Record {
        let mut soa = self.soa.clone();
        if let RData::SOA(data) = &self.soa.data {
            soa.ttl = soa.ttl.min(data.minimum);
        }
        soa
    }

    /// The zone cut at or above `name` (closest to the apex first), if any.
    fn cut_above(&self, name: &Name) -> Option<LowerName> {
        if self.cuts.is_empty() {
            return None;
        }
        let apex = usize::from(self.origin_name.num_labels());
        for labels in apex + 1..=usize::from(name.num_labels()) {
            let candidate = LowerName::new(&name.trim_to(labels));
            if self.cuts.contains(&candidate) {
                return Some(candidate);
            }
        }
        None
    }

    /// The name exists in the zone (with records, or as an empty non-terminal).
    fn exists(&self, name: &LowerName) -> bool {
        self.nodes.contains_key(name) || self.empty_non_terminals.contains(name)
    }

    /// The wildcard node that would synthesize `name`, if any (RFC 4592 §3.3.1: the
    /// source of synthesis is `*` under the closest encloser).
    fn wildcard_for(&self, name: &LowerName) -> Option<&Node> {
        let mut encloser = name.base_name();
        while !self.exists(&encloser) && encloser != self.origin {
            if !self.origin.zone_of(&encloser) {
                return None;
            }
            encloser = encloser.base_name();
        }
        let wildcard = Name::from(&encloser).prepend_label("*").ok()?;
        self.nodes.get(&LowerName::new(&wildcard))
    }

    /// Looks `qname`/`qtype` up in this zone. `qname` must be in the zone.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> ZoneAnswer {
        let mut out = ZoneAnswer {
            outcome: Outcome::Answer,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        };
        let mut name = qname.clone();
        for _ in 0..=MAX_CNAME_CHAIN {
            let lower = LowerName::new(&name);
            if !self.origin.zone_of(&lower) {
                // the chain left the zone: the resolver follows it from here
                return out;
            }
            if let Some(cut) = self.cut_above(&name) {
                // DS lives on the parent side of the cut
                if !(qtype == RecordType::DS && cut == lower) {
                    self.referral(&cut, &mut out);
                    return out;
                }
            }
            let synthesized;
            let node = match self.nodes.get(&lower) {
                Some(node) => node,
                None if self.empty_non_terminals.contains(&lower) => {
                    return self.negative(Outcome::NoData, out);
                }
                None => match self.wildcard_for(&lower) {
                    Some(node) => {
                        synthesized = rename(node, &name);
                        &synthesized
                    }
                    None => return self.negative(Outcome::NxDomain, out),
                },
            };
            if qtype == RecordType::ANY {
                // RFC 8482 §4.2: one RRset of those present, not all of them
                if let Some(first) = node.rrsets.values().next() {
                    out.answers.extend(first.iter().cloned());
                }
                return out;
            }
            if let Some(rrset) = node.get(qtype) {
                out.answers.extend(rrset.iter().cloned());
                self.add_additionals(rrset, &mut out.additionals);
                return out;
            }
            match node.get(RecordType::CNAME).and_then(|c| c.first()) {
                Some(cname) => {
                    out.answers.push(cname.clone());
                    let RData::CNAME(target) = &cname.data else {
                        return out;
                    };
                    name = target.0.clone();
                }
                None => return self.negative(Outcome::NoData, out),
            }
        }
        // a chain longer than MAX_CNAME_CHAIN (or a loop): what was found so far
        out
    }

    fn negative(&self, outcome: Outcome, mut out: ZoneAnswer) -> ZoneAnswer {
        out.outcome = outcome;
        out.authorities.push(self.negative_soa());
        out
    }

    fn referral(&self, cut: &LowerName, out: &mut ZoneAnswer) {
        out.outcome = Outcome::Referral;
        let Some(ns) = self.nodes.get(cut).and_then(|n| n.get(RecordType::NS)) else {
            return;
        };
        out.authorities.extend(ns.iter().cloned());
        for record in ns {
            if let RData::NS(target) = &record.data {
                self.add_addresses(&target.0, &mut out.additionals);
            }
        }
    }

    /// A/AAAA records for the names that NS, MX and SRV answers point at (RFC 1035 §3.3,
    /// RFC 2782), when those names are in this zone — glue below cuts included.
    fn add_additionals(&self, rrset: &[Record], additionals: &mut Vec<Record>) {
        for record in rrset {
            let target = match &record.data {
                RData::NS(ns) => &ns.0,
                RData::MX(mx) => &mx.exchange,
                RData::SRV(srv) => &srv.target,
                _ => continue,
            };
            self.add_addresses(target, additionals);
        }
    }

    fn add_addresses(&self, target: &Name, additionals: &mut Vec<Record>) {
        let Some(node) = self.nodes.get(&LowerName::new(target)) else {
            return;
        };
        for rtype in [RecordType::A, RecordType::AAAA] {
            if let Some(rrset) = node.get(rtype) {
                for r in rrset {
                    if !additionals.contains(r) {
                        additionals.push(r.clone());
                    }
                }
            }
        }
    }
}

/// A wildcard node's records with `owner` as their name (RFC 4592 §3.3.1 synthesis).
fn rename(node: &Node, owner: &Name) -> Node {
    let mut out = node.clone();
    for rrset in out.rrsets.values_mut() {
        for record in rrset {
            record.name = owner.clone();
        }
    }
    out
}

fn parse_origin(origin: &str) -> Result<Name, ZoneError> {
    let mut name = Name::from_ascii(origin).map_err(|_| ZoneError::Origin(origin.into()))?;
    name.set_fqdn(true);
    Ok(name)
}

/// The 1-based line of a zone file where parsing first fails. hickory's parser reports no
/// position, so this parses ever longer prefixes (cut only where no parenthesis or quote is
/// open), by bisection: a prefix that fails keeps failing as lines are added.
fn locate_error(text: &str, path: &Path, origin: &Name) -> usize {
    let mut ends = Vec::new(); // byte offset after each line that closes all groups
    let (mut depth, mut quoted, mut escaped, mut comment) = (0i32, false, false, false);
    for (i, c) in text.char_indices() {
        if comment {
            if c == '\n' {
                comment = false;
            } else {
                continue;
            }
        }
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => comment = true,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            '\n' if !quoted && depth <= 0 => ends.push(i + 1),
            _ => {}
        }
    }
    ends.push(text.len());
    let fails = |end: usize| {
        Parser::new(&text[..end], Some(path.to_path_buf()), Some(origin.clone()))
            .parse()
            .is_err()
    };
    let (mut lo, mut hi) = (0usize, ends.len() - 1);
    if !fails(ends[hi]) {
        return text.lines().count().max(1);
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(ends[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    // the failing prefix ends after this line
    text[..ends[lo]]
        .trim_end_matches('\n')
        .lines()
        .count()
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    pub(crate) const EXAMPLE: &str = r#"$TTL 3600
@       IN SOA  ns1.example.com. hostmaster.example.com. ( 2024010101 7200 900 1209600 300 )
        IN NS   ns1
        IN NS   ns2.example.net.
        IN MX   10 mail
        IN A    192.0.2.1
        IN AAAA 2001:db8::1
        IN TXT  "v=spf1 -all"
        IN CAA  0 issue "letsencrypt.org"
        IN HTTPS 1 . alpn=h3
ns1     IN A    192.0.2.53
mail    IN A    192.0.2.25
www     IN CNAME web
web     IN CNAME host
host    IN A    192.0.2.80
        IN AAAA 2001:db8::80
out     IN CNAME elsewhere.example.org.
*.wild  IN A    192.0.2.99
*.cn    IN CNAME host
_sip._tcp IN SRV 10 60 5060 host
svc     IN SVCB 1 host alpn=doq port=853
a.b.c   IN TXT  "deep"
sub     IN NS   ns.sub
ns.sub  IN A    192.0.2.200
loop1   IN CNAME loop2
loop2   IN CNAME loop1
"#;

    pub(crate) fn example() -> Zone {
        Zone::parse("example.com.", EXAMPLE, Path::new("example.com.zone")).expect("zone")
    }

    fn name(s: &str) -> Name {
        Name::from_str(s).expect("name")
    }

    fn types(records: &[Record]) -> Vec<RecordType> {
        records.iter().map(Record::record_type).collect()
    }

    #[test]
    fn exact_answers_for_each_type() {
        let z = example();
        for (qname, qtype, n) in [
            ("example.com.", RecordType::SOA, 1),
            ("example.com.", RecordType::NS, 2),
            ("example.com.", RecordType::MX, 1),
            ("example.com.", RecordType::A, 1),
            ("example.com.", RecordType::AAAA, 1),
            ("example.com.", RecordType::TXT, 1),
            ("example.com.", RecordType::CAA, 1),
            ("example.com.", RecordType::HTTPS, 1),
            ("_sip._tcp.example.com.", RecordType::SRV, 1),
            ("svc.example.com.", RecordType::SVCB, 1),
            ("a.b.c.example.com.", RecordType::TXT, 1),
        ] {
            let a = z.lookup(&name(qname), qtype);
            assert_eq!(a.outcome, Outcome::Answer, "{qname} {qtype}");
            assert_eq!(a.answers.len(), n, "{qname} {qtype}");
            assert!(a.answers.iter().all(|r| r.record_type() == qtype));
            assert!(a.authorities.is_empty());
        }
    }

    #[test]
    fn names_are_case_insensitive() {
        let z = example();
        let a = z.lookup(&name("HoSt.ExAmPlE.CoM."), RecordType::A);
        assert_eq!(a.outcome, Outcome::Answer);
        assert_eq!(a.answers.len(), 1);
    }

    #[test]
    fn additional_section_carries_in_zone_addresses() {
        let z = example();
        let mx = z.lookup(&name("example.com."), RecordType::MX);
        assert_eq!(types(&mx.additionals), vec![RecordType::A]);
        let srv = z.lookup(&name("_sip._tcp.example.com."), RecordType::SRV);
        assert_eq!(
            types(&srv.additionals),
            vec![RecordType::A, RecordType::AAAA]
        );
        // ns2 is out of zone: only ns1's address
        let ns = z.lookup(&name("example.com."), RecordType::NS);
        assert_eq!(ns.additionals.len(), 1);
    }

    #[test]
    fn cname_chains_are_followed_inside_the_zone() {
        let z = example();
        let a = z.lookup(&name("www.example.com."), RecordType::A);
        assert_eq!(a.outcome, Outcome::Answer);
        assert_eq!(
            types(&a.answers),
            vec![RecordType::CNAME, RecordType::CNAME, RecordType::A]
        );
        // asking for the CNAME itself does not follow it
        let c = z.lookup(&name("www.example.com."), RecordType::CNAME);
        assert_eq!(types(&c.answers), vec![RecordType::CNAME]);
        // a chain that leaves the zone stops there
        let out = z.lookup(&name("out.example.com."), RecordType::A);
        assert_eq!(out.outcome, Outcome::Answer);
        assert_eq!(types(&out.answers), vec![RecordType::CNAME]);
        // a chain ending at a missing type is NODATA with the chain kept
        let nodata = z.lookup(&name("www.example.com."), RecordType::MX);
        assert_eq!(nodata.outcome, Outcome::NoData);
        assert_eq!(nodata.answers.len(), 2);
        assert_eq!(types(&nodata.authorities), vec![RecordType::SOA]);
    }

    #[test]
    fn cname_loops_end() {
        let z = example();
        let a = z.lookup(&name("loop1.example.com."), RecordType::A);
        assert_eq!(a.answers.len(), MAX_CNAME_CHAIN + 1);
    }

    #[test]
    fn nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl() {
        let z = example();
        let nx = z.lookup(&name("nope.example.com."), RecordType::A);
        assert_eq!(nx.outcome, Outcome::NxDomain);
        assert!(nx.answers.is_empty());
        assert_eq!(types(&nx.authorities), vec![RecordType::SOA]);
        assert_eq!(nx.authorities[0].ttl, 300, "min(SOA TTL, SOA minimum)");
        let nodata = z.lookup(&name("host.example.com."), RecordType::MX);
        assert_eq!(nodata.outcome, Outcome::NoData);
        assert_eq!(types(&nodata.authorities), vec![RecordType::SOA]);
        // empty non-terminals exist
        for ent in ["b.c.example.com.", "c.example.com.", "_tcp.example.com."] {
            let a = z.lookup(&name(ent), RecordType::A);
            assert_eq!(a.outcome, Outcome::NoData, "{ent}");
        }
    }

    #[test]
    fn wildcards_synthesize_under_the_closest_encloser() {
        let z = example();
        let a = z.lookup(&name("anything.wild.example.com."), RecordType::A);
        assert_eq!(a.outcome, Outcome::Answer);
        assert_eq!(a.answers[0].name, name("anything.wild.example.com."));
        let deeper = z.lookup(&name("x.y.wild.example.com."), RecordType::A);
        assert_eq!(deeper.outcome, Outcome::Answer);
        let nodata = z.lookup(&name("anything.wild.example.com."), RecordType::TXT);
        assert_eq!(nodata.outcome, Outcome::NoData);
        // the wildcard's parent itself is an empty non-terminal, not synthesized
        let parent = z.lookup(&name("wild.example.com."), RecordType::A);
        assert_eq!(parent.outcome, Outcome::NoData);
        // a wildcard CNAME is followed
        let cn = z.lookup(&name("q.cn.example.com."), RecordType::AAAA);
        assert_eq!(
            types(&cn.answers),
            vec![RecordType::CNAME, RecordType::AAAA]
        );
        assert_eq!(cn.answers[0].name, name("q.cn.example.com."));
        // no wildcard above an existing name's children
        let nx = z.lookup(&name("x.host.example.com."), RecordType::A);
        assert_eq!(nx.outcome, Outcome::NxDomain);
    }

    #[test]
    fn delegations_refer_with_glue() {
        let z = example();
        for q in [
            "sub.example.com.",
            "deep.sub.example.com.",
            "ns.sub.example.com.",
        ] {
            let r = z.lookup(&name(q), RecordType::A);
            assert_eq!(r.outcome, Outcome::Referral, "{q}");
            assert!(r.answers.is_empty());
            assert_eq!(types(&r.authorities), vec![RecordType::NS]);
            assert_eq!(types(&r.additionals), vec![RecordType::A], "glue");
        }
        let ds = z.lookup(&name("sub.example.com."), RecordType::DS);
        assert_eq!(ds.outcome, Outcome::NoData, "DS is answered by the parent");
    }

    #[test]
    fn any_returns_one_rrset() {
        let z = example();
        let a = z.lookup(&name("example.com."), RecordType::ANY);
        assert_eq!(a.outcome, Outcome::Answer);
        assert_eq!(types(&a.answers), vec![RecordType::A]);
        let nx = z.lookup(&name("nope.example.com."), RecordType::ANY);
        assert_eq!(nx.outcome, Outcome::NxDomain);
    }

    #[test]
    fn bad_zones_are_refused_with_the_line() {
        let path = Path::new("bad.zone");
        let text = "$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\nok IN A 192.0.2.1\nbad IN A 999.1.1.1\nz IN A 192.0.2.2\n";
        let e = Zone::parse("example.com.", text, path).expect_err("bad address");
        match e {
            ZoneError::Syntax { line, .. } => assert_eq!(line, 4, "{e}"),
            other => panic!("{other}"),
        }
        let multi = "$TTL 60\n@ IN SOA ns hm (\n 1 2\n 3 4 5 )\nbad IN MX x\n";
        let e = Zone::parse("example.com.", multi, path).expect_err("bad MX");
        assert!(matches!(e, ZoneError::Syntax { line: 5, .. }), "{e}");
        let e =
            Zone::parse("example.com.", "$TTL 60\nwww IN A 192.0.2.1\n", path).expect_err("no SOA");
        assert!(e.to_string().contains("no SOA"), "{e}");
        let e = Zone::parse(
            "example.com.",
            "$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\nx IN CNAME y\nx IN A 192.0.2.1\n",
            path,
        )
        .expect_err("cname and other data");
        assert!(e.to_string().contains("CNAME and other data"), "{e}");
        let e = Zone::parse(
            "example.com.",
            "$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\nx.example.org. IN A 192.0.2.1\n",
            path,
        )
        .expect_err("out of zone");
        assert!(e.to_string().contains("outside the zone"), "{e}");
    }
}
