//! git's delta encoding (the pack format's `OBJ_REF_DELTA` payload), computed here:
//! `gix-pack` copies the deltas stored in packs but does not compute new ones, so a fetch
//! of freshly pushed (loose) objects would otherwise send every changed file whole.
//!
//! The encoder indexes the base in `BLOCK`-byte blocks and walks the target, extending
//! every block hit forward (and backward over pending literals), as git's `diff-delta.c`
//! does with its Rabin windows; what no block covers goes as literals. Linear in the sizes
//! (plus the bucket chains, capped at `MAX_CHAIN`). Memory: one `u32` per base block.
//!
//! Format (git's `Documentation/gitformat-pack.adoc`, "Deltified representation"): the
//! base size and the result size as little-endian base-128 varints, then instructions:
//! `1xxxxxxx` copy (offset and size bytes present per bit; size 0 means 0x10000),
//! `0nnnnnnn` insert the next `n` (1..=127) bytes.

use std::collections::HashMap;

/// Bytes per indexed base block (git uses 16-byte windows).
const BLOCK: usize = 16;

/// Base positions kept per block hash: bounds the work on repetitive data.
const MAX_CHAIN: usize = 16;

/// Largest copy one instruction carries (git's encoder keeps to 0x10000 as well).
const MAX_COPY: usize = 0x10000;

/// Largest literal run one instruction carries.
const MAX_INSERT: usize = 127;

fn varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn block_hash(block: &[u8]) -> u64 {
    // FNV-1a: fast and good enough to pick candidates, every hit is verified
    block.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn flush_literals(out: &mut Vec<u8>, literals: &[u8]) {
    for chunk in literals.chunks(MAX_INSERT) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
}

fn copy(out: &mut Vec<u8>, mut offset: usize, mut len: usize) {
    while len > 0 {
        let n = len.min(MAX_COPY);
        let mut op = 0x80u8;
        let mut args = Vec::with_capacity(7);
        for i in 0..4 {
            let byte = (offset >> (8 * i)) as u8;
            if byte != 0 {
                op |= 1 << i;
                args.push(byte);
            }
        }
        // n == 0x10000 is encoded as size 0 (no size bytes)
        let size = if n == MAX_COPY { 0 } else { n };
        for i in 0..3 {
            let byte = (size >> (8 * i)) as u8;
            if byte != 0 {
                op |= 0x10 << i;
                args.push(byte);
            }
        }
        out.push(op);
        out.extend_from_slice(&args);
        offset += n;
        len -= n;
    }
}

/// The delta that turns `base` into `target`, or `None` when it would not be smaller
/// than `limit` bytes (the caller's cost of sending `target` otherwise) or `base` is too
/// large to address (4 GiB).
pub fn encode(base: &[u8], target: &[u8], limit: usize) -> Option<Vec<u8>> {
    if u32::try_from(base.len()).is_err() {
        return None;
    }
    let mut index: HashMap<u64, Vec<u32>> = HashMap::with_capacity(base.len() / BLOCK + 1);
    for (i, block) in base.chunks_exact(BLOCK).enumerate() {
        let chain = index.entry(block_hash(block)).or_default();
        if chain.len() < MAX_CHAIN {
            chain.push((i * BLOCK) as u32);
        }
    }
    let mut out = Vec::with_capacity(64);
    varint(&mut out, base.len());
    varint(&mut out, target.len());
    let mut literal_start = 0;
    let mut pos = 0;
    while pos + BLOCK <= target.len() {
        let candidates = index.get(&block_hash(&target[pos..pos + BLOCK]));
        let mut best: Option<(usize, usize)> = None; // (base offset, length)
        for &start in candidates.into_iter().flatten() {
            let start = start as usize;
            let len = base[start..]
                .iter()
                .zip(&target[pos..])
                .take_while(|(a, b)| a == b)
                .count();
            if len >= BLOCK && best.is_none_or(|(_, l)| len > l) {
                best = Some((start, len));
            }
        }
        let Some((mut start, mut len)) = best else {
            pos += 1;
            continue;
        };
        // extend backwards over literals not yet written
        let mut from = pos;
        while from > literal_start && start > 0 && base[start - 1] == target[from - 1] {
            from -= 1;
            start -= 1;
            len += 1;
        }
        flush_literals(&mut out, &target[literal_start..from]);
        copy(&mut out, start, len);
        pos = from + len;
        literal_start = pos;
        if out.len() >= limit {
            return None;
        }
    }
    flush_literals(&mut out, &target[literal_start..]);
    (out.len() < limit).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A straightforward decoder of the same format, to check the encoder against.
    fn apply(base: &[u8], delta: &[u8]) -> Vec<u8> {
        let mut d = delta;
        let read_varint = |d: &mut &[u8]| {
            let (mut n, mut shift) = (0usize, 0);
            loop {
                let b = d[0];
                *d = &d[1..];
                n |= usize::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    return n;
                }
            }
        };
        assert_eq!(read_varint(&mut d), base.len());
        let size = read_varint(&mut d);
        let mut out = Vec::new();
        while let Some((&op, rest)) = d.split_first() {
            d = rest;
            if op & 0x80 != 0 {
                let (mut offset, mut len) = (0usize, 0usize);
                for i in 0..4 {
                    if op & (1 << i) != 0 {
                        offset |= usize::from(d[0]) << (8 * i);
                        d = &d[1..];
                    }
                }
                for i in 0..3 {
                    if op & (0x10 << i) != 0 {
                        len |= usize::from(d[0]) << (8 * i);
                        d = &d[1..];
                    }
                }
                if len == 0 {
                    len = 0x10000;
                }
                out.extend_from_slice(&base[offset..offset + len]);
            } else {
                assert!(op > 0, "reserved opcode");
                let n = usize::from(op);
                out.extend_from_slice(&d[..n]);
                d = &d[n..];
            }
        }
        assert_eq!(out.len(), size);
        out
    }

    fn pseudo_random(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn round_trips_edits_of_a_text() {
        let base: Vec<u8> = (0..400)
            .flat_map(|i| format!("line {i} of a file\n").into_bytes())
            .collect();
        let mut target = base.clone();
        target.splice(100..110, b"inserted text".iter().copied());
        target.extend_from_slice(b"appended\n");
        target.drain(3000..3500);
        let delta = encode(&base, &target, usize::MAX).expect("a delta");
        assert_eq!(apply(&base, &delta), target);
        assert!(delta.len() < 100, "{} bytes", delta.len());
    }

    #[test]
    fn round_trips_unrelated_empty_and_large_inputs() {
        let a = pseudo_random(1, 5000);
        let b = pseudo_random(2, 3000);
        for (base, target) in [
            (&a[..], &b[..]),
            (&a[..], &a[..]),
            (&[][..], &b[..]),
            (&a[..], &[][..]),
            (&a[..10], &a[..9]),
        ] {
            let delta = encode(base, target, usize::MAX).expect("unlimited");
            assert_eq!(apply(base, &delta), target);
        }
        // copies longer than one instruction carries
        let big = pseudo_random(3, 3 * MAX_COPY + 17);
        let mut target = big.clone();
        target[MAX_COPY + 5] ^= 0xff;
        let delta = encode(&big, &target, usize::MAX).expect("a delta");
        assert_eq!(apply(&big, &delta), target);
        assert!(delta.len() < 64, "{} bytes", delta.len());
    }

    #[test]
    fn gives_up_past_the_limit() {
        let a = pseudo_random(1, 5000);
        let b = pseudo_random(2, 5000);
        assert!(encode(&a, &b, 1000).is_none());
        assert!(encode(&a, &a, 1000).is_some());
    }
}
