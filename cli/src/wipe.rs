//! A global allocator for the `keyserver` binary that wipes every heap
//! block when it is freed or moved by a reallocation.
//!
//! The crate wipes the buffers it owns that hold keys or plaintext
//! (`Zeroizing`, `Kek`, `Dek`, `Plaintext`, request and response bodies).
//! Libraries under it keep their own buffers: hyper's connection read
//! buffer, the XML serializer's growing string, serde_json's unescaping
//! scratch space. When they free them, the bytes would stay in the heap
//! until reused. This allocator closes that gap for the whole process,
//! whatever library allocated the block, at the cost of one `memset` per
//! free (measured in BENCHMARKS.md). Live buffers (a keep-alive
//! connection's read buffer between requests) are not freed, so not wiped:
//! SECURITY.md says so.

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, wiping each block before it is given back.
pub(crate) struct WipeOnFree;

/// Zeroes `size` bytes at `ptr`, in a way the optimizer cannot drop as a
/// dead store before `free`.
///
/// # Safety
/// `ptr` must be valid for writes of `size` bytes.
#[allow(unsafe_code)]
unsafe fn wipe(ptr: *mut u8, size: usize) {
    // SAFETY: the caller's promise.
    unsafe { std::ptr::write_bytes(ptr, 0, size) };
    // The block is about to be freed: tell the optimizer it may still be
    // read, so the write above stays.
    std::hint::black_box(ptr);
}

// SAFETY: every method forwards to `System` with the same layouts; the only
// addition is writing zeroes into a block the caller still owns.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for WipeOnFree {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as given.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout` (the caller's promise).
        unsafe {
            wipe(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Always move to a new block, so that the old one is wiped (the
        // system's realloc may move it and free it unwiped).
        // SAFETY: `layout.align()` is valid and `new_size` is non-zero and
        // fits (the caller's promise for realloc).
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = System.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn blocks_are_usable_and_reallocation_keeps_contents() {
        let mut v: Vec<u8> = Vec::with_capacity(4);
        for i in 0..10_000u32 {
            v.push((i % 251) as u8);
        }
        assert!(v.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        let s: String = "key".repeat(1000);
        assert_eq!(s.len(), 3000);
    }
}
