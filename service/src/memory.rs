//! Giving memory back after a storm.
//!
//! A fork storm fills adoptd's tables (tracked processes, pidfds, a
//! source's lineage) with thousands of entries that are gone a moment
//! later; a `HashMap` keeps its room and glibc keeps freed chunks in its
//! arenas. adoptd may run for years as PID 1, so after each moment the
//! tables that became sparse are shrunk, and when any was, the allocator
//! is asked to return its free pages. A table is sparse when it has room
//! for more than four times its entries (and for more than a small
//! minimum): the hysteresis keeps a table that breathes around one size
//! from being rebuilt at every moment.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, Hash},
};

/// Below this much room a table is never shrunk.
const SMALL: usize = 64;

/// A collection that can give back the room it no longer uses.
pub trait Shrink {
    /// Shrinks the collection if it is sparse; says whether it did.
    fn shrink_if_sparse(&mut self) -> bool;
}

fn sparse(capacity: usize, len: usize) -> bool {
    capacity > SMALL && capacity / 4 > len
}

impl<K: Eq + Hash, V, S: BuildHasher> Shrink for HashMap<K, V, S> {
    fn shrink_if_sparse(&mut self) -> bool {
        let shrink = sparse(self.capacity(), self.len());
        if shrink {
            self.shrink_to_fit();
        }
        shrink
    }
}

impl<T: Eq + Hash, S: BuildHasher> Shrink for HashSet<T, S> {
    fn shrink_if_sparse(&mut self) -> bool {
        let shrink = sparse(self.capacity(), self.len());
        if shrink {
            self.shrink_to_fit();
        }
        shrink
    }
}

impl<T> Shrink for Vec<T> {
    fn shrink_if_sparse(&mut self) -> bool {
        let shrink = sparse(self.capacity(), self.len());
        if shrink {
            self.shrink_to_fit();
        }
        shrink
    }
}

/// Asks the allocator to return the free pages it holds to the kernel.
pub fn return_free_pages() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds free;
    // it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_emptied_after_a_storm_gives_its_room_back() {
        let mut table: HashMap<u32, u64> = (0..10_000).map(|pid| (pid, 0)).collect();
        table.retain(|&pid, _| pid < 10);
        assert!(table.shrink_if_sparse());
        assert!(table.capacity() < 64, "{}", table.capacity());
        assert_eq!(table.len(), 10);
    }

    #[test]
    fn a_table_in_use_or_small_is_left_alone() {
        let mut table: HashSet<u32> = (0..1000).collect();
        assert!(!table.shrink_if_sparse());
        let mut small: Vec<u32> = Vec::with_capacity(SMALL);
        assert!(!small.shrink_if_sparse());
        assert_eq!(small.capacity(), SMALL);
    }
}
