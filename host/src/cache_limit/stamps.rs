//! When each entry was last used, in a table the hot path updates without a
//! lock: a cache hit finds its entry's slot by a hash of the entry's name
//! and stores the time there (at most once a millisecond per entry, so a
//! hot entry does not bounce its cache line between cores). Only the
//! eviction thread adds slots; a table that fills up is replaced by a
//! larger one, which readers pick up at their next hit.

use std::sync::atomic::{AtomicU64, Ordering};

/// Open addressing with linear probing over power-of-two slots. A tag is a
/// non-zero hash of an entry's name (0 marks a free slot); tags are never
/// removed, an evicted entry's slot waits for the next table.
pub struct Stamps {
    slots: Box<[Slot]>,
    mask: usize,
}

#[derive(Default)]
struct Slot {
    tag: AtomicU64,
    /// Milliseconds since the Unix epoch.
    stamp: AtomicU64,
}

/// The tag of a hash (never 0).
pub fn tag(hash: u64) -> u64 {
    hash | 1
}

impl Stamps {
    /// A table for `entries` with room for as many again (so that adding
    /// entries one by one replaces it only as often as a `Vec` grows), at
    /// most half full, 1024 slots at least.
    pub fn with_room_for(entries: usize) -> Self {
        let len = entries.saturating_mul(4).max(1024).next_power_of_two();
        Self {
            slots: (0..len).map(|_| Slot::default()).collect(),
            mask: len - 1,
        }
    }

    /// How many tags the table takes before it should be replaced.
    pub fn room(&self) -> usize {
        self.slots.len() / 2
    }

    fn find(&self, tag: u64) -> Option<&Slot> {
        let mut i = tag as usize & self.mask;
        for _ in 0..self.slots.len() {
            let slot = &self.slots[i];
            match slot.tag.load(Ordering::Acquire) {
                t if t == tag => return Some(slot),
                0 => return None,
                _ => i = (i + 1) & self.mask,
            }
        }
        None
    }

    /// The hot path: the entry `tag` was used at `now`. Unknown entries
    /// (stored by hand since the last scan) are left to the next scan.
    pub fn touch(&self, tag: u64, now: u64) {
        if let Some(slot) = self.find(tag) {
            if slot.stamp.load(Ordering::Relaxed) < now {
                slot.stamp.store(now, Ordering::Relaxed);
            }
        }
    }

    /// When `tag` was last used, if the table knows it.
    pub fn get(&self, tag: u64) -> Option<u64> {
        self.find(tag)
            .map(|slot| slot.stamp.load(Ordering::Relaxed))
    }

    /// Records that `tag` was used at `stamp` (or later), adding its slot if
    /// needed: `Some(true)` when a slot was taken, `None` when none is free.
    /// Only one thread (the eviction thread) may call this.
    pub fn set(&self, tag: u64, stamp: u64) -> Option<bool> {
        let mut i = tag as usize & self.mask;
        for _ in 0..self.slots.len() {
            let slot = &self.slots[i];
            match slot.tag.load(Ordering::Acquire) {
                t if t == tag => {
                    slot.stamp.fetch_max(stamp, Ordering::Relaxed);
                    return Some(false);
                }
                0 => {
                    slot.stamp.store(stamp, Ordering::Relaxed);
                    // Release: a reader that sees the tag sees the stamp.
                    slot.tag.store(tag, Ordering::Release);
                    return Some(true);
                }
                _ => i = (i + 1) & self.mask,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touches_raise_known_stamps_and_ignore_unknown_entries() {
        let stamps = Stamps::with_room_for(4);
        assert_eq!(stamps.room(), 512);
        assert_eq!(Stamps::with_room_for(512).room(), 1024);
        assert_eq!(Stamps::with_room_for(1000).room(), 2048);
        assert_eq!(stamps.set(tag(7), 100), Some(true));
        assert_eq!(stamps.set(tag(7), 50), Some(false), "already there");
        assert_eq!(stamps.get(tag(7)), Some(100), "a stamp never goes back");
        stamps.touch(tag(7), 200);
        stamps.touch(tag(7), 150);
        assert_eq!(stamps.get(tag(7)), Some(200));
        stamps.touch(tag(9), 300);
        assert_eq!(stamps.get(tag(9)), None);
    }

    #[test]
    fn colliding_tags_probe_to_their_own_slots_until_the_table_is_full() {
        let stamps = Stamps::with_room_for(0);
        let len = stamps.room() as u64 * 2;
        // Same start slot for all: each probes past the others.
        let tags: Vec<u64> = (0..len).map(|n| tag((n * len) << 1)).collect();
        for (n, &t) in tags.iter().enumerate() {
            assert_eq!(stamps.set(t, n as u64), Some(true));
        }
        assert_eq!(stamps.set(tag(12345 << 20), 1), None, "full");
        for (n, &t) in tags.iter().enumerate() {
            assert_eq!(stamps.get(t), Some(n as u64));
        }
    }
}
