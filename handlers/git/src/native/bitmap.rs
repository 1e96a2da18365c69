//! git's reachability bitmaps (`pack-*.bitmap`, which `git repack -a` writes by default
//! in bare repositories, and `git gc` with `repack.writeBitmaps`): for a commit the
//! bitmap names every object of the pack it reaches, so a full clone's object set is a
//! few bitmap ORs instead of a walk of every commit and tree of the history. This is
//! what lets `git upload-pack` start sending a clone's pack at once.
//!
//! Format (git's `Documentation/technical/bitmap-format.adoc`, version 1): `BITM`, u16
//! version, u16 options, u32 entry count, the pack's checksum; four EWAH bitmaps (the
//! commits, trees, blobs and tags of the pack); then per selected commit its position in
//! the `.idx` (u32), an XOR offset (u8: the bitmap is stored XORed with the one that many
//! entries before), flags (u8) and an EWAH bitmap. Bit `i` is the `i`-th object of the
//! pack in pack (offset) order. Everything here is read from a file on the server, but
//! still bounds-checked: a damaged file is "no bitmap", never a panic or a wrong set.

use std::path::Path;

use gix::hash::{oid, ObjectId};

/// Options bit: every bitmap is closed under reachability (required: without it a
/// bitmap may name a tree but not its contents).
const OPT_FULL_DAG: u16 = 0x1;

/// Entries whose XOR chain is longer than this make the file unusable (git writes at
/// most 160).
const MAX_XOR_CHAIN: usize = 1024;

/// Why a bitmap file is not used (the caller falls back to walking).
#[derive(Debug, thiserror::Error)]
pub enum BitmapError {
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    #[error("cannot open the pack or its index: {0}")]
    Pack(String),
    #[error("bitmap file is damaged: {0}")]
    Damaged(&'static str),
    #[error("bitmap file does not match its pack")]
    Stale,
    #[error("bitmap format not supported: {0}")]
    Unsupported(&'static str),
}

/// A set of pack positions (bit `i`: the `i`-th object in pack order), one bit per
/// object of the pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bits {
    words: Vec<u64>,
}

impl Bits {
    pub fn zeros(bits: usize) -> Self {
        Self {
            words: vec![0; bits.div_ceil(64)],
        }
    }

    pub fn get(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// Sets bit `i`; returns whether it was clear.
    pub fn set(&mut self, i: usize) -> bool {
        let Some(w) = self.words.get_mut(i / 64) else {
            return false;
        };
        let was_clear = *w & (1u64 << (i % 64)) == 0;
        *w |= 1u64 << (i % 64);
        was_clear
    }

    pub fn or(&mut self, other: &Bits) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    fn xor(&mut self, other: &Bits) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a ^= b;
        }
    }

    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The set positions, ascending.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(n, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(n * 64 + bit)
            })
        })
    }
}

/// A bounds-checked big-endian reader over the file.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BitmapError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or(BitmapError::Damaged("truncated"))?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, BitmapError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, BitmapError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, BitmapError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Skips one serialized EWAH bitmap, returning its bytes.
    fn ewah(&mut self) -> Result<&'a [u8], BitmapError> {
        let start = self.pos;
        self.u32()?; // bits
        let words = self.u32()? as usize;
        self.take(words.checked_mul(8).ok_or(BitmapError::Damaged("size"))?)?;
        self.u32()?; // position of the last run-length word
        Ok(&self.data[start..self.pos])
    }
}

/// Decodes one serialized EWAH bitmap (git's `ewah_io.c`: u32 bit count, u32 word
/// count, the words, u32 position of the last run-length word) over `bits` objects.
/// Run-length words: bit 0 the running bit, bits 1..=32 the run length in words, bits
/// 33..=63 the count of literal words that follow. git rounds a bitmap up to whole
/// words and may carry zero words past the last object; a set bit past it is damage.
pub fn decode_ewah(data: &[u8], bits: usize) -> Result<Bits, BitmapError> {
    let mut c = Cursor { data, pos: 0 };
    c.u32()?; // bit count: a multiple of 64 as git writes it, checked by the words
    let n = c.u32()? as usize;
    let raw = c.take(n.checked_mul(8).ok_or(BitmapError::Damaged("size"))?)?;
    let word = |i: usize| {
        let b = &raw[i * 8..i * 8 + 8];
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    };
    let mut out = Bits::zeros(bits);
    let total = out.words.len();
    // the bits of the last word past the last object
    let tail_mask = match bits % 64 {
        0 => 0,
        r => !0u64 << r,
    };
    let mut put = |at: usize, w: u64| -> Result<(), BitmapError> {
        if at < total {
            if at + 1 == total && w & tail_mask != 0 {
                return Err(BitmapError::Damaged("bit past the last object"));
            }
            out.words[at] = w;
            Ok(())
        } else if w == 0 {
            Ok(())
        } else {
            Err(BitmapError::Damaged("bit past the last object"))
        }
    };
    let mut at = 0usize; // next output word
    let mut i = 0usize;
    while i < n {
        let rlw = word(i);
        i += 1;
        let running = rlw & 1 != 0;
        let run = ((rlw >> 1) & 0xffff_ffff) as usize;
        let literals = (rlw >> 33) as usize;
        if running {
            // ones: every word must be an object's
            if at.checked_add(run).is_none_or(|end| end > total) {
                return Err(BitmapError::Damaged("run past the end"));
            }
            for k in 0..run {
                put(at + k, u64::MAX)?;
            }
        }
        at = at.saturating_add(run);
        if i.checked_add(literals).is_none_or(|end| end > n) {
            return Err(BitmapError::Damaged("literals past the end"));
        }
        for k in 0..literals {
            put(at.saturating_add(k), word(i + k))?;
        }
        i += literals;
        at = at.saturating_add(literals);
    }
    Ok(out)
}

/// A pack with its index and bitmap, ready to answer "what does this commit reach".
pub struct BitmappedPack {
    pub index: gix_pack::index::File,
    pub pack: gix_pack::data::File,
    bitmap: Vec<u8>,
    /// Index position → pack position.
    pack_pos: Vec<u32>,
    /// Pack position → index position.
    index_pos: Vec<u32>,
    /// Index position of a selected commit → its entry number.
    selected: std::collections::HashMap<u32, usize>,
    /// Entry number → (xor offset, byte range of its EWAH in `bitmap`).
    entries: Vec<(usize, std::ops::Range<usize>)>,
}

impl BitmappedPack {
    /// The pack under `objects/pack` of the repository at `git_dir` that has a bitmap
    /// (git keeps one; the first by name if there are more), `Ok(None)` if none has one.
    pub fn find(git_dir: &Path) -> Result<Option<Self>, BitmapError> {
        let dir = git_dir.join("objects").join("pack");
        let Ok(read) = std::fs::read_dir(&dir) else {
            return Ok(None);
        };
        let mut names: Vec<_> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            // a pack's own bitmap (`multi-pack-index-*.bitmap` spans packs: not read)
            .filter(|p| {
                p.extension().is_some_and(|e| e == "bitmap")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("pack-"))
            })
            .collect();
        names.sort();
        match names.first() {
            Some(path) => Self::open(path).map(Some),
            None => Ok(None),
        }
    }

    /// Opens `pack-X.bitmap` with its `pack-X.idx` and `pack-X.pack`.
    pub fn open(bitmap_path: &Path) -> Result<Self, BitmapError> {
        let io = |e| BitmapError::Io(bitmap_path.display().to_string(), e);
        let bitmap = std::fs::read(bitmap_path).map_err(io)?;
        let index =
            gix_pack::index::File::at(bitmap_path.with_extension("idx"), gix::hash::Kind::Sha1)
                .map_err(|e| BitmapError::Pack(e.to_string()))?;
        let pack =
            gix_pack::data::File::at(bitmap_path.with_extension("pack"), gix::hash::Kind::Sha1)
                .map_err(|e| BitmapError::Pack(e.to_string()))?;
        let n = index.num_objects() as usize;
        if pack.num_objects() as usize != n || index.pack_checksum() != pack.checksum() {
            return Err(BitmapError::Stale);
        }
        let mut c = Cursor {
            data: &bitmap,
            pos: 0,
        };
        if c.take(4)? != b"BITM" {
            return Err(BitmapError::Damaged("magic"));
        }
        if c.u16()? != 1 {
            return Err(BitmapError::Unsupported("version"));
        }
        if c.u16()? & OPT_FULL_DAG == 0 {
            return Err(BitmapError::Unsupported("not a full-DAG bitmap"));
        }
        let count = c.u32()? as usize;
        if c.take(20)? != pack.checksum().as_slice() {
            return Err(BitmapError::Stale);
        }
        for _ in 0..4 {
            c.ewah()?; // the type bitmaps: not needed here
        }
        let mut selected = std::collections::HashMap::new();
        let mut entries = Vec::new();
        for k in 0..count {
            let pos = c.u32()?;
            let xor_offset = c.u8()? as usize;
            c.u8()?; // flags
            let start = c.pos;
            c.ewah()?;
            if pos as usize >= n || xor_offset > k || xor_offset > MAX_XOR_CHAIN {
                return Err(BitmapError::Damaged("entry"));
            }
            selected.insert(pos, k);
            entries.push((xor_offset, start..c.pos));
        }
        // pack order: the index positions sorted by offset
        let mut index_pos: Vec<u32> = (0..n as u32).collect();
        index_pos.sort_unstable_by_key(|&i| index.pack_offset_at_index(i));
        let mut pack_pos = vec![0u32; n];
        for (p, &i) in index_pos.iter().enumerate() {
            pack_pos[i as usize] = p as u32;
        }
        Ok(Self {
            index,
            pack,
            bitmap,
            pack_pos,
            index_pos,
            selected,
            entries,
        })
    }

    pub fn num_objects(&self) -> usize {
        self.index_pos.len()
    }

    /// The pack position of `id`, if the pack holds it.
    pub fn position(&self, id: &oid) -> Option<usize> {
        self.index
            .lookup(id)
            .map(|i| self.pack_pos[i as usize] as usize)
    }

    /// The object at pack position `p`.
    pub fn id_at(&self, p: usize) -> ObjectId {
        self.index.oid_at_index(self.index_pos[p]).to_owned()
    }

    /// Everything the commit at pack position `p` reaches, if it has a bitmap.
    pub fn reach(&self, p: usize) -> Result<Option<Bits>, BitmapError> {
        let Some(&k) = self.selected.get(&self.index_pos[p]) else {
            return Ok(None);
        };
        // follow the XOR chain back to an entry stored whole, then XOR forward
        let mut chain = vec![k];
        let mut at = k;
        while self.entries[at].0 != 0 {
            at -= self.entries[at].0;
            chain.push(at);
            if chain.len() > MAX_XOR_CHAIN {
                return Err(BitmapError::Damaged("XOR chain too long"));
            }
        }
        let n = self.num_objects();
        let mut bits: Option<Bits> = None;
        for &e in chain.iter().rev() {
            let range = self.entries[e].1.clone();
            let stored = decode_ewah(&self.bitmap[range], n)?;
            bits = Some(match bits {
                None => stored,
                Some(mut prev) => {
                    prev.xor(&stored);
                    prev
                }
            });
        }
        Ok(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ewah(bits: u32, words: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&bits.to_be_bytes());
        out.extend_from_slice(&(words.len() as u32).to_be_bytes());
        for w in words {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.extend_from_slice(&0u32.to_be_bytes());
        out
    }

    fn rlw(running: bool, run: u64, literals: u64) -> u64 {
        running as u64 | (run << 1) | (literals << 33)
    }

    #[test]
    fn runs_and_literals() {
        // 2 words of ones, then one literal word, over 200 bits
        let data = ewah(200, &[rlw(true, 2, 1), 0b101]);
        let bits = decode_ewah(&data, 200).expect("decodes");
        assert_eq!(bits.count_ones(), 128 + 2);
        assert!(bits.get(0) && bits.get(127) && bits.get(128) && !bits.get(129));
        assert!(bits.get(130) && !bits.get(131));
        assert_eq!(bits.ones().take(3).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn zero_words_past_the_last_object_are_accepted() {
        // git rounds up to whole words and may carry zero words beyond
        let data = ewah(256, &[rlw(false, 0, 2), 0b1, 1 << 5, rlw(false, 2, 0)]);
        let bits = decode_ewah(&data, 70).expect("decodes");
        assert_eq!(bits.ones().collect::<Vec<_>>(), vec![0, 69]);
    }

    #[test]
    fn damaged_bitmaps_are_refused() {
        // a run of ones longer than the pack
        assert!(decode_ewah(&ewah(64, &[rlw(true, 5, 0)]), 64).is_err());
        // literals announced but missing
        assert!(decode_ewah(&ewah(128, &[rlw(false, 0, 2), 1]), 128).is_err());
        // a set bit past the last object
        assert!(decode_ewah(&ewah(128, &[rlw(false, 0, 2), 0, 1]), 64).is_err());
        assert!(decode_ewah(&ewah(64, &[rlw(false, 0, 1), 1 << 63]), 63).is_err());
        assert!(decode_ewah(&ewah(128, &[rlw(true, 2, 0)]), 70).is_err());
        // truncated
        assert!(decode_ewah(&ewah(64, &[1])[..10], 64).is_err());
    }

    #[test]
    fn sets_and_ors() {
        let mut a = Bits::zeros(130);
        assert!(a.set(129));
        assert!(!a.set(129));
        assert!(!a.set(500)); // out of range: ignored
        let mut b = Bits::zeros(130);
        b.set(3);
        a.or(&b);
        assert_eq!(a.ones().collect::<Vec<_>>(), vec![3, 129]);
    }
}
