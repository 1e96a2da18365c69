//! What a received datagram takes from its `recvmmsg` slot, and the reuse of slot buffers
//! once their data has been consumed.

use std::collections::VecDeque;

use bytes::BytesMut;

/// A received datagram (or GRO batch) that fills at least this share of its `recvmmsg` slot
/// (1/`ADOPT_SLOT_DIVISOR`) keeps the slot's buffer, which another one replaces; a smaller
/// one is copied out. Why: a 64 KiB loopback datagram copied out of the slot was a third of
/// `alknet connect`'s CPU in an sftp get (the copy writes memory that is no longer in cache,
/// since up to a receive window of such buffers wait in the stream). Adopting holds at most
/// twice the datagram's bytes while its data waits; a small datagram copied keeps what a
/// waiting byte holds down to itself.
pub const ADOPT_SLOT_DIVISOR: usize = 2;

/// Slot buffers a datagram took that a server worker remembers for reuse (see
/// [`SlotRecycler`]). Their storage outlives its last user by at most this many adoptions:
/// at most this many slots (64 KiB each on loopback) per worker beyond what the data
/// waiting in streams holds, 2 MiB. A bulk receive keeps a few dozen slots' worth waiting
/// in its stream or in file writes (an sftp put: the server's stream window,
/// `DEFAULT_STREAM_RECEIVE_WINDOW`, is 19 such slots), and their storage comes back in the
/// order it was taken.
pub const RECYCLED_SLOTS: usize = 32;

/// The same for a client endpoint (`alknet connect`, `git-remote-alknet`, the load-test
/// harness). A download through `alknet connect` keeps up to its stream window
/// ([`crate::limits::CONNECT_STREAM_RECEIVE_WINDOW`], 4 MiB: 64 full loopback slots, up to
/// 128 half-full ones) waiting while `sftp` or `git` falls behind; with only
/// [`RECYCLED_SLOTS`] remembered, every slot taken beyond them was refilled with a fresh
/// zeroed 64 KiB (6 % of `alknet connect`'s CPU in a 1 GiB sftp get, 2026-12-08). A client
/// process is one user's, so holding up to 8 MiB of free slots after a transfer is the
/// price.
pub const CLIENT_RECYCLED_SLOTS: usize = 128;

/// Hands out what a receive put into a slot and refills the slot, reusing the storage of
/// earlier adopted slot buffers once every user of it has dropped its share.
///
/// An adopted buffer is split: the datagram's bytes go to quinn-proto (its packets, and the
/// stream data sliced from them, share the storage), and the empty tail stays here as a
/// handle on the storage. When that handle is the last one (`BytesMut::try_reclaim`), the
/// whole storage becomes the slot's new buffer: no allocation and, unlike a fresh buffer,
/// no 64 KiB of zeroing per datagram (2.5 % of a worker's CPU in a bulk upload, 7 % of
/// `alknet connect`'s in an sftp get). The oldest free storage is taken; when none is
/// free, the refill is a fresh zeroed buffer.
pub(crate) struct SlotRecycler {
    /// Empty tails of adopted slot buffers, oldest first, each with the start of its
    /// storage (every byte of which was initialised when the buffer was made).
    retired: VecDeque<(BytesMut, *const u8)>,
    /// How many tails are remembered ([`RECYCLED_SLOTS`] or [`CLIENT_RECYCLED_SLOTS`]).
    capacity: usize,
}

impl SlotRecycler {
    /// A recycler that remembers up to `capacity` slot buffers (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            retired: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// The first `len` bytes received into `slot`: the slot's own buffer when they fill at
    /// least 1/[`ADOPT_SLOT_DIVISOR`] of it (a reclaimed or fresh buffer of the same size
    /// takes its place), else a copy.
    pub fn take(&mut self, slot: &mut BytesMut, len: usize) -> BytesMut {
        let size = slot.len();
        if len * ADOPT_SLOT_DIVISOR < size {
            return BytesMut::from(&slot[..len]);
        }
        let refill = self.reclaim(size).unwrap_or_else(|| BytesMut::zeroed(size));
        let mut taken = std::mem::replace(slot, refill);
        let start = taken.as_ptr();
        let tail = taken.split_off(len);
        if self.retired.len() == self.capacity {
            self.retired.pop_front();
        }
        self.retired.push_back((tail, start));
        taken
    }

    /// The oldest retired storage that nothing else holds any more, as a slot buffer of
    /// `size` bytes. Every entry is looked at (an atomic load each): storages are not
    /// always freed in the order they were taken, since a datagram that carried only
    /// acknowledgements is done with at once while an older one's stream data still waits.
    fn reclaim(&mut self, size: usize) -> Option<BytesMut> {
        let i = self.retired.iter_mut().position(|(tail, start)| {
            tail.clear();
            // `size` exceeds the tail's spare capacity, so this succeeds only by taking
            // the whole storage back, and only when the tail is its last handle
            tail.try_reclaim(size) && tail.as_ptr() == *start && tail.capacity() >= size
        })?;
        let (mut buf, _) = self.retired.remove(i)?;
        // SAFETY: `buf` now begins at the start of the storage made by `BytesMut::zeroed`
        // for a slot of `size` bytes (checked above: same start, capacity for `size`), so
        // its first `size` bytes were initialised then; since then they have only been
        // written (by the kernel's receives), never de-initialised.
        unsafe { buf.set_len(size) };
        Some(buf)
    }

    #[cfg(test)]
    fn retired(&self) -> usize {
        self.retired.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 65_535;

    #[test]
    fn a_large_datagram_keeps_its_slot_buffer_and_a_small_one_is_copied() {
        let mut slots = SlotRecycler::new(RECYCLED_SLOTS);
        let mut slot = BytesMut::zeroed(SIZE);
        slot[..3].copy_from_slice(b"abc");
        let before = slot.as_ptr();
        // under half the slot: copied, the slot keeps its buffer
        let small = slots.take(&mut slot, 3);
        assert_eq!(&small[..], b"abc");
        assert_ne!(small.as_ptr(), before);
        assert_eq!(slot.as_ptr(), before);
        assert_eq!(slots.retired(), 0);
        // half the slot or more: the slot's buffer itself, a fresh zeroed one in its place
        // (the first one is still held)
        slot[..4].copy_from_slice(b"wxyz");
        let large = slots.take(&mut slot, SIZE / 2 + 1);
        assert_eq!(large.as_ptr(), before, "no copy");
        assert_eq!(large.len(), SIZE / 2 + 1);
        assert_eq!(&large[..4], b"wxyz");
        assert_ne!(slot.as_ptr(), before);
        assert_eq!(slot.len(), SIZE);
        assert!(slot.iter().all(|&b| b == 0));
        // a full slot is taken whole
        let full = slots.take(&mut slot, SIZE);
        assert_eq!(full.len(), SIZE);
        assert_eq!(slot.len(), SIZE);
    }

    #[test]
    fn a_slot_buffer_comes_back_once_its_data_is_dropped() {
        let mut slots = SlotRecycler::new(RECYCLED_SLOTS);
        let mut slot = BytesMut::zeroed(SIZE);
        let first = slot.as_ptr();
        slot[..5].copy_from_slice(b"hello");
        let mut taken = slots.take(&mut slot, SIZE);
        // what quinn-proto does with it: packets split off, stream data frozen
        let packet = taken.split_to(1200).freeze();
        let data = packet.slice(0..5);
        drop(packet);
        drop(taken);
        let second = slot.as_ptr();
        // the first storage is still held by `data`: the refill is fresh
        let again = slots.take(&mut slot, SIZE);
        assert_eq!(again.as_ptr(), second);
        assert_ne!(slot.as_ptr(), first);
        assert_eq!(&data[..], b"hello");
        drop(data);
        drop(again);
        // now every user of the first storage is gone: it is the next refill, whole
        let third = slots.take(&mut slot, SIZE);
        assert_eq!(slot.as_ptr(), first, "the first storage came back");
        assert_eq!(slot.len(), SIZE);
        assert_eq!(&slot[..5], b"hello", "reused as it was, not zeroed");
        drop(third);
        // and the second one after it
        let _fourth = slots.take(&mut slot, SIZE);
        assert_eq!(slot.as_ptr(), second);
    }

    #[test]
    fn a_later_storage_freed_first_is_reused_first() {
        let mut slots = SlotRecycler::new(RECYCLED_SLOTS);
        let mut slot = BytesMut::zeroed(SIZE);
        let older = slots.take(&mut slot, SIZE);
        let newer_ptr = slot.as_ptr();
        let newer = slots.take(&mut slot, SIZE);
        assert_eq!(newer.as_ptr(), newer_ptr);
        // the older one's data still waits, the newer one (acknowledgements only) is done
        drop(newer);
        let _next = slots.take(&mut slot, SIZE);
        assert_eq!(
            slot.as_ptr(),
            newer_ptr,
            "the free storage behind a held one"
        );
        drop(older);
    }

    #[test]
    fn at_most_capacity_slots_are_remembered() {
        for capacity in [RECYCLED_SLOTS, CLIENT_RECYCLED_SLOTS] {
            let mut slots = SlotRecycler::new(capacity);
            let mut slot = BytesMut::zeroed(SIZE);
            let mut held = Vec::new();
            for _ in 0..capacity * 2 {
                held.push(slots.take(&mut slot, SIZE));
                assert!(slots.retired() <= capacity);
            }
            assert_eq!(slots.retired(), capacity);
            // the storages forgotten are freed with their last user; the remembered ones
            // come back in order once free
            let remembered: Vec<*const u8> = held[capacity..].iter().map(|b| b.as_ptr()).collect();
            held.clear();
            for want in remembered {
                let _ = slots.take(&mut slot, SIZE);
                assert_eq!(slot.as_ptr(), want);
            }
        }
    }
}
