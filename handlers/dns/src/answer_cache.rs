//! Encoded answers by the exact bytes of their query, so a name asked again skips
//! decoding, the zone lookup and encoding (a packet cache, as PowerDNS's authoritative
//! server keeps; NSD precompiles its answers for the same reason).
//!
//! An answer from a zone is a function of the query's bytes after its ID (flags, question
//! with its letter case, EDNS options) and of the catalog it was looked up in, so:
//! - the key is the query without its 2-byte ID; a hit is the cached answer with the
//!   query's ID put in front;
//! - the cache belongs to one catalog: when the live catalog is another (a zone reloaded),
//!   it empties (it holds the old catalog until then, so the identity check cannot be
//!   fooled by a new catalog at a freed one's address);
//! - only answers from local zones are put in (see [`crate::responder::cacheable`]): pkarr
//!   names change without a catalog swap, forwarded answers age by TTL;
//! - one cache per transport context, since the size an answer may take depends on the
//!   transport too: each classic UDP socket has its own, and each thread (worker) two for
//!   the stream transports, which all allow [`crate::MAX_MESSAGE_SIZE`]: one for the
//!   encrypted ones (DoQ, `alknet/dns`, DoT, DoH), one for plaintext TCP, whose answers
//!   are never padded ([`with_stream_answers`]).
//!
//! Memory is bounded by `answer_cache_bytes` (keys + answers + [`ENTRY_OVERHEAD`] each)
//! per cache; entries are evicted by quick_cache's CLOCK-Pro.

use std::cell::RefCell;
use std::sync::Arc;

use quick_cache::unsync::Cache;
use quick_cache::Weighter;

use crate::catalog::Catalog;
use crate::responder::Channel;

/// Bytes counted per entry beyond its key and answer (the boxes and the table slot). An
/// estimate that keeps the bound honest for small entries.
pub const ENTRY_OVERHEAD: usize = 64;

/// Queries longer than this are not cached: real queries are a few dozen bytes (a question
/// of the longest name and an OPT record fit), so a longer one is padded or odd.
pub const MAX_CACHED_QUERY: usize = 512;

/// Answers longer than this are not cached (large RRsets gain little and take room).
pub const MAX_CACHED_ANSWER: usize = 1232;

/// Size of the DNS message ID, the one part of a query a cached answer does not depend on.
const ID: usize = 2;

#[derive(Clone, Copy, Debug)]
struct EntryBytes;

impl Weighter<Box<[u8]>, Box<[u8]>> for EntryBytes {
    fn weight(&self, key: &Box<[u8]>, answer: &Box<[u8]>) -> u64 {
        (key.len() + answer.len() + ENTRY_OVERHEAD) as u64
    }
}

/// One transport context's cache of encoded zone answers.
pub struct AnswerCache {
    /// The catalog the entries were answered from.
    catalog: Option<Arc<Catalog>>,
    entries: Cache<Box<[u8]>, Box<[u8]>, EntryBytes>,
}

impl std::fmt::Debug for AnswerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerCache")
            .field("entries", &self.entries.len())
            .field("bytes", &self.entries.weight())
            .finish()
    }
}

impl AnswerCache {
    /// A cache of at most `bytes` bytes; `None` for 0 (caching off).
    pub fn new(bytes: usize) -> Option<Self> {
        (bytes > 0).then(|| {
            // a typical entry (a 30-byte question, a 50-byte answer) is ~150 bytes
            let estimated_items = (bytes / 150).max(1);
            Self {
                catalog: None,
                entries: Cache::with_weighter(estimated_items, bytes as u64, EntryBytes),
            }
        })
    }

    /// The cached answer to `query` from `catalog`, carrying `query`'s ID.
    pub fn get(&mut self, catalog: &Arc<Catalog>, query: &[u8]) -> Option<Vec<u8>> {
        self.follow(catalog);
        let (id, key) = query.split_at_checked(ID)?;
        let body = self.entries.get(key)?;
        let mut answer = Vec::with_capacity(ID + body.len());
        answer.extend_from_slice(id);
        answer.extend_from_slice(body);
        Some(answer)
    }

    /// Keeps `answer` (encoded from `catalog`) for later queries with `query`'s bytes.
    pub fn insert(&mut self, catalog: &Arc<Catalog>, query: &[u8], answer: &[u8]) {
        self.follow(catalog);
        if query.len() > MAX_CACHED_QUERY || answer.len() > MAX_CACHED_ANSWER {
            return;
        }
        if let (Some(key), Some(body)) = (query.get(ID..), answer.get(ID..)) {
            self.entries.insert(key.into(), body.into());
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the cache when `catalog` is not the one its entries came from.
    fn follow(&mut self, catalog: &Arc<Catalog>) {
        if !self
            .catalog
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, catalog))
        {
            self.entries.clear();
            self.catalog = Some(catalog.clone());
        }
    }
}

/// A message's way through a transport: its cached answer, or decoded to be answered.
pub enum Lookup {
    Hit(Vec<u8>),
    Parse(crate::responder::Parsed),
}

thread_local! {
    /// This thread's answers for the stream transports, made at its first query (`None`
    /// inside when `answer_cache_bytes` is 0): one cache for the encrypted ones and one
    /// for plaintext TCP, as the same query bytes get a padded answer on the first and an
    /// unpadded one on the second ([`Channel`]).
    static STREAM_ANSWERS: RefCell<[Option<Option<AnswerCache>>; 2]> =
        const { RefCell::new([None, None]) };
}

/// `f` on this thread's cache of `channel`'s stream-transport answers (sized `bytes` when
/// it is made here), if caching is on.
pub fn with_stream_answers<R>(
    bytes: usize,
    channel: Channel,
    f: impl FnOnce(&mut AnswerCache) -> R,
) -> Option<R> {
    let index = match channel {
        Channel::Encrypted => 0,
        Channel::Plaintext => 1,
    };
    STREAM_ANSWERS.with(|a| {
        a.borrow_mut()[index]
            .get_or_insert_with(|| AnswerCache::new(bytes))
            .as_mut()
            .map(f)
    })
}

/// `message`'s answer from this thread's `channel` stream cache for `catalog`, or
/// `message` decoded.
pub fn stream_lookup(
    bytes: usize,
    channel: Channel,
    catalog: &Arc<Catalog>,
    message: &[u8],
) -> Lookup {
    match with_stream_answers(bytes, channel, |a| a.get(catalog, message)).flatten() {
        Some(reply) => Lookup::Hit(reply),
        None => Lookup::Parse(crate::responder::parse(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Arc<Catalog> {
        Arc::new(Catalog::default())
    }

    #[test]
    fn hit_carries_the_query_id() {
        let c = catalog();
        let mut cache = AnswerCache::new(1 << 20).expect("on");
        let query = [0x12, 0x34, 1, 0, 0, 1, 9, 9];
        assert_eq!(cache.get(&c, &query), None);
        cache.insert(&c, &query, &[0x12, 0x34, 0x81, 0x80, 7, 7]);
        let again = [0xab, 0xcd, 1, 0, 0, 1, 9, 9];
        assert_eq!(
            cache.get(&c, &again),
            Some(vec![0xab, 0xcd, 0x81, 0x80, 7, 7])
        );
        // another flag byte (e.g. RD clear) is another query
        assert_eq!(cache.get(&c, &[0xab, 0xcd, 0, 0, 0, 1, 9, 9]), None);
        assert_eq!(cache.get(&c, &[1]), None);
    }

    #[test]
    fn another_catalog_empties_it() {
        let (a, b) = (catalog(), catalog());
        let mut cache = AnswerCache::new(1 << 20).expect("on");
        let query = [0, 0, 1, 0, 0, 1];
        cache.insert(&a, &query, &[0, 0, 0x81, 0x80]);
        assert!(cache.get(&a, &query).is_some());
        assert_eq!(cache.get(&b, &query), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn bounded_by_bytes_and_sizes() {
        assert!(AnswerCache::new(0).is_none());
        let c = catalog();
        let budget = 10 * (ENTRY_OVERHEAD + 8);
        let mut cache = AnswerCache::new(budget).expect("on");
        for i in 0..1000u32 {
            let mut q = vec![0, 0];
            q.extend_from_slice(&i.to_be_bytes());
            cache.insert(&c, &q, &[0, 0, 1, 2, 3, 4]);
        }
        assert!(cache.len() <= 10, "{} entries", cache.len());
        let long = vec![0; MAX_CACHED_QUERY + 1];
        let mut cache = AnswerCache::new(1 << 20).expect("on");
        cache.insert(&c, &long, &[0, 0, 1]);
        assert!(cache.is_empty());
        cache.insert(&c, &[0, 0, 1], &vec![0; MAX_CACHED_ANSWER + 1]);
        assert!(cache.is_empty());
    }
}
