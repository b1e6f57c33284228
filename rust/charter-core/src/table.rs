//! An append-only table of fixed-size chunks: readers index it without a
//! lock (one `OnceLock` load per chunk), the single writer allocates chunks
//! as it grows. Items never move, so a reference stays valid for the
//! table's lifetime.

use std::sync::OnceLock;

/// A table of `T` addressed by dense `usize` ids.
#[derive(Debug)]
pub struct Chunked<T> {
    chunks: Box<[OnceLock<Box<[T]>>]>,
    bits: u32,
}

impl<T: Default> Chunked<T> {
    /// A table of up to `max_chunks` chunks of `2^chunk_bits` items.
    pub fn new(chunk_bits: u32, max_chunks: usize) -> Self {
        Chunked {
            chunks: (0..max_chunks).map(|_| OnceLock::new()).collect(),
            bits: chunk_bits,
        }
    }

    /// How many ids the table can ever hold.
    pub fn capacity(&self) -> usize {
        self.chunks.len() << self.bits
    }

    /// The item at `i`, if its chunk exists.
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks
            .get(i >> self.bits)?
            .get()?
            .get(i & ((1 << self.bits) - 1))
    }

    /// The item at `i`, allocating its chunk (default items) if needed.
    pub fn get_or_alloc(&self, i: usize) -> Option<&T> {
        let chunk = self.chunks.get(i >> self.bits)?;
        chunk
            .get_or_init(|| (0..1usize << self.bits).map(|_| T::default()).collect())
            .get(i & ((1 << self.bits) - 1))
    }

    /// Bytes allocated (outer array and chunks).
    pub fn allocated_bytes(&self) -> usize {
        let outer = self.chunks.len() * std::mem::size_of::<OnceLock<Box<[T]>>>();
        let inner = self.chunks.iter().filter(|c| c.get().is_some()).count()
            * (std::mem::size_of::<T>() << self.bits);
        outer + inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn grows_by_chunks_and_bounds_ids() {
        let t: Chunked<AtomicU64> = Chunked::new(2, 3);
        assert_eq!(t.capacity(), 12);
        assert!(t.get(0).is_none());
        t.get_or_alloc(5).unwrap().store(7, Ordering::Relaxed);
        assert_eq!(t.get(5).unwrap().load(Ordering::Relaxed), 7);
        assert!(t.get(4).is_some());
        assert!(t.get(0).is_none());
        assert!(t.get_or_alloc(12).is_none());
        assert!(t.get(100).is_none());
    }
}
