//! The component's global allocator: the heap of [`crate::arena`] (a bump
//! arena inside the initial memory, then the standard dlmalloc) behind a
//! small cache of recently freed blocks of up to [`SMALL_BYTES_MAX`] bytes.
//!
//! Every call allocates and frees a few small blocks (the command bytes the
//! host copies in through `cabi_realloc`, the response, decoded strings,
//! encoded keys and values) and
//! inside a component every instruction of the allocator is metered fuel.
//! Reusing a cached block is a pointer pop; the cache is bounded
//! ([`CACHED_PER_CLASS_MAX`] blocks per size class, at most 68 KiB in all),
//! so a plugin that frees many small blocks gives them back to dlmalloc as
//! before and the memory cap sees the same heap. Components are
//! single-threaded, which is what lets the cache live in a plain cell.

#![allow(unsafe_code)] // A global allocator is unsafe by definition.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

use crate::arena::{Heap, move_block};

/// Size classes are multiples of this many bytes (and blocks are aligned to it).
const GRANULE: usize = 16;
/// Number of size classes: blocks of 16, 32, …, 256 bytes.
const CLASSES: usize = 16;
/// Largest allocation served from the cache, in bytes.
pub(crate) const SMALL_BYTES_MAX: usize = GRANULE * CLASSES;
/// Most freed blocks kept per size class.
pub(crate) const CACHED_PER_CLASS_MAX: u32 = 32;
// The bound the module documentation states.
const _: () =
    assert!(CACHED_PER_CLASS_MAX as usize * GRANULE * CLASSES * (CLASSES + 1) / 2 <= 68 << 10);

/// Freed blocks of one size class, linked through their first word.
#[derive(Clone, Copy)]
struct FreeList {
    head: *mut u8,
    len: u32,
}

/// The allocator: the [`Heap`] plus per-class free lists.
pub(crate) struct CachingAlloc {
    lists: UnsafeCell<[FreeList; CLASSES]>,
    heap: Heap,
}

// SAFETY: components run on one thread (this type is only the global
// allocator of targets without the `atomics` feature), so the cell is never
// accessed concurrently.
unsafe impl Sync for CachingAlloc {}

impl CachingAlloc {
    /// An empty cache.
    pub(crate) const fn new() -> Self {
        Self {
            lists: UnsafeCell::new(
                [FreeList {
                    head: ptr::null_mut(),
                    len: 0,
                }; CLASSES],
            ),
            heap: Heap::new(),
        }
    }
}

/// The size class serving `layout`, if it is small.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() == 0 || layout.size() > SMALL_BYTES_MAX || layout.align() > GRANULE {
        return None;
    }
    Some((layout.size() - 1) / GRANULE)
}

/// The layout every block of `class` is allocated from the [`Heap`] with.
fn class_layout(class: usize) -> Layout {
    // SAFETY: non-zero size, a power-of-two alignment, no overflow.
    unsafe { Layout::from_size_align_unchecked((class + 1) * GRANULE, GRANULE) }
}

// SAFETY: small blocks always come from the heap with their class layout and
// go back to it with that layout; a cached block is handed out once (popped
// before it is returned) and is at least as large and as aligned as any
// layout of its class. Everything else is passed through to the heap.
unsafe impl GlobalAlloc for CachingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            return unsafe { self.heap.alloc(layout) };
        };
        // SAFETY: single-threaded (see `Sync`); no reference outlives this call.
        let list = unsafe { &mut (*self.lists.get())[class] };
        if list.head.is_null() {
            return unsafe { self.heap.alloc(class_layout(class)) };
        }
        let block = list.head;
        // SAFETY: a cached block holds the next block's address in its first
        // word (written by `dealloc`, aligned to GRANULE).
        list.head = unsafe { block.cast::<*mut u8>().read() };
        list.len -= 1;
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class_of(layout).is_none() {
            // Fresh pages from dlmalloc need no clearing.
            return unsafe { self.heap.alloc_zeroed(layout) };
        }
        let block = unsafe { self.alloc(layout) };
        if !block.is_null() {
            unsafe { block.write_bytes(0, layout.size()) };
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            return unsafe { self.heap.dealloc(block, layout) };
        };
        // SAFETY: single-threaded (see `Sync`).
        let list = unsafe { &mut (*self.lists.get())[class] };
        if list.len >= CACHED_PER_CLASS_MAX {
            return unsafe { self.heap.dealloc(block, class_layout(class)) };
        }
        // SAFETY: the block is ours again, at least GRANULE bytes and aligned.
        unsafe { block.cast::<*mut u8>().write(list.head) };
        list.head = block;
        list.len += 1;
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` is valid for `layout.align()`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            (None, None) => unsafe { self.heap.realloc(block, layout, new_size) },
            (Some(old), Some(new)) if old == new => block,
            _ => unsafe { move_block(self, block, layout, new_layout) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn small_blocks_are_reused_and_the_cache_is_bounded() {
        let a = Box::leak(Box::new(CachingAlloc::new()));
        unsafe {
            let x = a.alloc(layout(24, 8));
            assert!(!x.is_null());
            assert_eq!(x as usize % GRANULE, 0);
            x.write_bytes(0xAB, 24);
            a.dealloc(x, layout(24, 8));
            // Same class (17..=32 bytes): the freed block comes back.
            let y = a.alloc(layout(32, 1));
            assert_eq!(y, x);
            a.dealloc(y, layout(32, 1));

            // Free more blocks than the cache keeps: the rest go to the heap.
            let n = CACHED_PER_CLASS_MAX as usize + 10;
            let blocks: Vec<_> = (0..n).map(|_| a.alloc(layout(100, 4))).collect();
            for &b in &blocks {
                a.dealloc(b, layout(100, 4));
            }
            assert_eq!((*a.lists.get())[class_of(layout(100, 4)).unwrap()].len, {
                CACHED_PER_CLASS_MAX
            });
            // Drain the cache back to the heap so the test leaks nothing.
            for _ in 0..CACHED_PER_CLASS_MAX {
                let b = a.alloc(layout(100, 4));
                a.heap
                    .dealloc(b, class_layout(class_of(layout(100, 4)).unwrap()));
            }
            let x = a.alloc(layout(24, 8));
            a.heap
                .dealloc(x, class_layout(class_of(layout(24, 8)).unwrap()));
        }
    }

    #[test]
    fn large_or_overaligned_blocks_bypass_the_cache() {
        assert_eq!(class_of(layout(SMALL_BYTES_MAX + 1, 1)), None);
        assert_eq!(class_of(layout(8, 32)), None);
        assert_eq!(class_of(layout(1, 1)), Some(0));
        assert_eq!(class_of(layout(SMALL_BYTES_MAX, 16)), Some(CLASSES - 1));
    }

    #[test]
    fn realloc_keeps_contents_across_classes() {
        let a = Box::leak(Box::new(CachingAlloc::new()));
        unsafe {
            let x = a.alloc(layout(10, 1));
            for i in 0..10 {
                x.add(i).write(i as u8);
            }
            // Same class: the block stays.
            let y = a.realloc(x, layout(10, 1), 16);
            assert_eq!(y, x);
            // Small to small of another class, then small to large, then back.
            let z = a.realloc(y, layout(16, 1), 100);
            let big = a.realloc(z, layout(100, 1), 4096);
            let back = a.realloc(big, layout(4096, 1), 12);
            for i in 0..10 {
                assert_eq!(back.add(i).read(), i as u8);
            }
            a.dealloc(back, layout(12, 1));
            // Drain what the cache holds back to the heap.
            for class in 0..CLASSES {
                loop {
                    let list = &mut (*a.lists.get())[class];
                    if list.head.is_null() {
                        break;
                    }
                    let b = a.alloc(class_layout(class));
                    a.heap.dealloc(b, class_layout(class));
                }
            }
        }
    }
}
