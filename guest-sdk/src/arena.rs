//! The heap under the allocator's cache: a bump arena in `.bss` first,
//! then [`System`] (dlmalloc, which grows linear memory).
//!
//! Why: the host runs every call on a fresh instance made from the
//! component's initial memory image. dlmalloc gets its pages with
//! `memory.grow`, and the initial memory ends where the heap begins, so
//! every call that allocated anything grew memory by a page — and growing a
//! pooled wasmtime memory is an `mprotect` (a TLB shootdown on every core),
//! and resetting it for the next call is another. The arena lies inside the
//! initial memory (zero pages, copy-on-write, free until touched), so a
//! call whose allocations fit in it never grows memory.
//!
//! Blocks are bumped off the arena; freeing the newest block rolls the bump
//! back (calls free in roughly LIFO order), any other arena block is simply
//! not reused until the instance is replaced — which is every call under
//! the host's default policy. A plugin kept on one instance (`[runtime]
//! reuse_instances`) uses up the arena once and then lives on [`System`].

#![allow(unsafe_code)] // A global allocator is unsafe by definition.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Bytes of the arena.
pub(crate) const ARENA_BYTES: usize = 256 << 10;

#[repr(C, align(16))]
struct Bytes([u8; ARENA_BYTES]);

/// The arena and its bump offset.
pub(crate) struct Heap {
    bytes: UnsafeCell<Bytes>,
    /// Offset of the first free byte.
    next: UnsafeCell<usize>,
    /// Offset where the newest block starts (for the LIFO roll-back).
    newest: UnsafeCell<usize>,
}

// SAFETY: components run on one thread (the heap is only used by the
// global allocator of single-threaded targets and by tests that do not
// share it), so the cells are never accessed concurrently.
unsafe impl Sync for Heap {}

impl Heap {
    /// An unused arena.
    pub(crate) const fn new() -> Self {
        Self {
            bytes: UnsafeCell::new(Bytes([0; ARENA_BYTES])),
            next: UnsafeCell::new(0),
            newest: UnsafeCell::new(usize::MAX),
        }
    }

    fn base(&self) -> *mut u8 {
        self.bytes.get().cast::<u8>()
    }

    /// Whether `block` was bumped off the arena.
    fn owns(&self, block: *mut u8) -> bool {
        let start = self.base() as usize;
        (start..start + ARENA_BYTES).contains(&(block as usize))
    }

    /// A block off the arena, or null if it does not fit.
    unsafe fn bump(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded (see `Sync`).
        let next = unsafe { &mut *self.next.get() };
        let base = self.base() as usize;
        let start = (base + *next).next_multiple_of(layout.align()) - base;
        match start.checked_add(layout.size()) {
            Some(end) if end <= ARENA_BYTES && layout.size() > 0 => {
                *next = end;
                unsafe { *self.newest.get() = start };
                // SAFETY: `start..end` lies inside the arena.
                unsafe { self.base().add(start) }
            }
            _ => ptr::null_mut(),
        }
    }
}

unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { self.bump(layout) };
        if block.is_null() {
            unsafe { System.alloc(layout) }
        } else {
            block
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { self.bump(layout) };
        if block.is_null() {
            return unsafe { System.alloc_zeroed(layout) };
        }
        // A rolled-back block may have been written.
        unsafe { block.write_bytes(0, layout.size()) };
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if !self.owns(block) {
            return unsafe { System.dealloc(block, layout) };
        }
        // SAFETY: single-threaded (see `Sync`).
        let newest = unsafe { &mut *self.newest.get() };
        let offset = block as usize - self.base() as usize;
        if offset == *newest {
            unsafe { *self.next.get() = offset };
            *newest = usize::MAX;
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(block) {
            return unsafe { System.realloc(block, layout, new_size) };
        }
        let offset = block as usize - self.base() as usize;
        // SAFETY: single-threaded (see `Sync`).
        if offset == unsafe { *self.newest.get() } && offset + new_size <= ARENA_BYTES {
            // The newest block grows or shrinks in place.
            unsafe { *self.next.get() = offset + new_size };
            return block;
        }
        // SAFETY: the caller guarantees `new_size` is valid for the alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        unsafe { move_block(self, block, layout, new_layout) }
    }
}

/// A realloc by moving: a new block from `heap`, the contents copied, the
/// old block freed. Returns null (the old block kept) if `heap` has none.
///
/// # Safety
/// `block` was allocated by `heap` with `layout`; `new_layout` is valid.
pub(crate) unsafe fn move_block(
    heap: &impl GlobalAlloc,
    block: *mut u8,
    layout: Layout,
    new_layout: Layout,
) -> *mut u8 {
    let moved = unsafe { heap.alloc(new_layout) };
    if !moved.is_null() {
        unsafe {
            ptr::copy_nonoverlapping(block, moved, layout.size().min(new_layout.size()));
            heap.dealloc(block, layout);
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_come_off_the_arena_aligned_and_the_newest_rolls_back() {
        let heap = Box::leak(Box::new(Heap::new()));
        unsafe {
            let a = heap.alloc(layout(10, 1));
            let b = heap.alloc(layout(8, 8));
            assert!(heap.owns(a) && heap.owns(b));
            assert_eq!(b as usize % 8, 0);
            heap.dealloc(b, layout(8, 8));
            let c = heap.alloc(layout(8, 8));
            assert_eq!(b, c, "the newest block is rolled back and reused");
            // Realloc of the newest grows in place and keeps the bytes.
            c.write_bytes(7, 8);
            let d = heap.realloc(c, layout(8, 8), 64);
            assert_eq!(c, d);
            assert_eq!(*d.add(7), 7);
            // An older block moves, and keeps its bytes.
            a.write_bytes(3, 10);
            let e = heap.realloc(a, layout(10, 1), 20);
            assert_ne!(a, e);
            assert_eq!(*e.add(9), 3);
        }
    }

    #[test]
    fn what_does_not_fit_goes_to_the_system_heap() {
        let heap = Box::leak(Box::new(Heap::new()));
        unsafe {
            let big = heap.alloc(layout(ARENA_BYTES + 1, 8));
            assert!(!big.is_null() && !heap.owns(big));
            let zeroed = heap.alloc_zeroed(layout(64, 16));
            assert!(heap.owns(zeroed));
            assert!((0..64).all(|i| *zeroed.add(i) == 0));
            // Reuse of rolled-back bytes is zeroed again.
            zeroed.write_bytes(9, 64);
            heap.dealloc(zeroed, layout(64, 16));
            let again = heap.alloc_zeroed(layout(64, 16));
            assert_eq!(again, zeroed);
            assert!((0..64).all(|i| *again.add(i) == 0));
            let moved = heap.realloc(big, layout(ARENA_BYTES + 1, 8), ARENA_BYTES + 100);
            assert!(!moved.is_null() && !heap.owns(moved));
            heap.dealloc(moved, layout(ARENA_BYTES + 100, 8));
        }
    }
}
