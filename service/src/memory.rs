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
//!
//! Large buffers (a reply to `GetManagedObjects` of ten thousand services
//! is 13 MB, and the private bus holds a copy of it on its way) are mapped
//! on their own and unmapped when freed ([`map_large_allocations`]):
//! glibc's default raises its mapping threshold to the size of each such
//! buffer freed, after which buffers of that size come from its arenas and
//! stay there once freed, until a trim.

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

/// Allocations from this size up are mapped on their own, and unmapped
/// when freed.
pub const LARGE_ALLOCATION: usize = 256 * 1024;

/// Makes the allocator map every allocation of [`LARGE_ALLOCATION`] or
/// more on its own, whatever was freed before: such memory goes back to
/// the kernel as soon as it is freed. Call it before any thread starts.
pub fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's parameters; a fixed
    // mapping threshold also turns its adjustment off.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_ALLOCATION as libc::c_int);
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

    #[cfg(target_env = "gnu")]
    #[test]
    fn a_large_buffer_is_mapped_even_after_a_larger_one_was_freed() {
        fn mapped_blocks() -> usize {
            // SAFETY: mallinfo2 only reads the allocator's statistics.
            unsafe { libc::mallinfo2() }.hblks
        }
        // Freed, a mapped buffer of 8 MiB would raise glibc's threshold
        // past the buffer below, which would then come from an arena.
        drop(std::hint::black_box(Vec::<u8>::with_capacity(8 << 20)));
        map_large_allocations();
        let before = mapped_blocks();
        let buffer = std::hint::black_box(Vec::<u8>::with_capacity(2 * LARGE_ALLOCATION));
        assert!(
            mapped_blocks() > before,
            "{} mapped blocks",
            mapped_blocks()
        );
        drop(buffer);
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
