//! The component's core exports, written out by [`crate::export!`] instead
//! of wit-bindgen's export macro, for one reason: `handle` and `query` get no
//! post-return function.
//!
//! A post-return function is how a guest frees a returned list after the host
//! has copied it, and the host calls it as a separate entry into the guest
//! (the third of a call, after `cabi_realloc` for the arguments and the call
//! itself). The canonical ABI makes post-return optional, so `handle` and `query`
//! leave their response allocated and free it at the start of the next
//! export call instead (the response is the only memory carried over, and
//! only until then). `info`, `init` and `migrate` keep their post-return.
//!
//! Every export first frees the deferred response: wit-bindgen's return area
//! is one static per interface, so it must be read (to free what it points
//! to) before any export writes a new result into it. Between a `handle`
//! returning and the next export the host only reads that area and calls
//! `cabi_realloc` (for the next call's arguments), which does not touch it.

#![allow(unsafe_code)] // Raw canonical-ABI exports, forwarded to wit-bindgen's generated glue.

use std::cell::Cell;

/// A post-return function of wit-bindgen's glue and the return area it frees.
type Deferred = (unsafe fn(*mut u8), *mut u8);

thread_local! {
    /// The response of the last `handle`/`query`, not yet freed.
    static DEFERRED: Cell<Option<Deferred>> = const { Cell::new(None) };
}

/// Frees the response of the previous `handle`/`query`, if any. Called first
/// by every export.
#[doc(hidden)]
#[inline]
pub fn release_previous() {
    if let Some((post_return, area)) = DEFERRED.with(Cell::take) {
        // SAFETY: `area` is the return area `post_return`'s export returned;
        // no export ran since (each one calls this first), so the area still
        // describes that response, and it is freed exactly once (taken above).
        unsafe { post_return(area) }
    }
}

/// Remembers that `area` (returned by `handle` or `query`) must be freed by
/// `post_return` before the next export runs.
///
/// # Safety
///
/// `post_return` must be the wit-bindgen post-return glue of the export that
/// returned `area`.
#[doc(hidden)]
#[inline]
pub unsafe fn defer_release(post_return: unsafe fn(*mut u8), area: *mut u8) {
    DEFERRED.with(|d| d.set(Some((post_return, area))));
}

/// Writes the raw exports of the `guest` interface for `$adapter` (see the
/// module documentation). The export names carry the WIT package version
/// (`wit/keel.wit`): bump them with it, or componentizing a plugin fails
/// with a missing export. Their signatures are checked against wit-bindgen's
/// glue by the compiler.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_guest {
    ($adapter:ty) => {
        const _: () = {
            use $crate::bindings::exports::keel::plugin::guest as glue;
            use $crate::export::{defer_release, release_previous};

            #[unsafe(export_name = "keel:plugin/guest@0.1.0#info")]
            unsafe extern "C" fn export_info() -> *mut u8 {
                release_previous();
                $crate::bindings::link_component_type();
                unsafe { glue::_export_info_cabi::<$adapter>() }
            }
            #[unsafe(export_name = "cabi_post_keel:plugin/guest@0.1.0#info")]
            unsafe extern "C" fn post_return_info(area: *mut u8) {
                unsafe { glue::__post_return_info::<$adapter>(area) }
            }

            #[unsafe(export_name = "keel:plugin/guest@0.1.0#init")]
            unsafe extern "C" fn export_init(ptr: *mut u8, len: usize) -> *mut u8 {
                release_previous();
                unsafe { glue::_export_init_cabi::<$adapter>(ptr, len) }
            }
            #[unsafe(export_name = "cabi_post_keel:plugin/guest@0.1.0#init")]
            unsafe extern "C" fn post_return_init(area: *mut u8) {
                unsafe { glue::__post_return_init::<$adapter>(area) }
            }

            #[unsafe(export_name = "keel:plugin/guest@0.1.0#migrate")]
            unsafe extern "C" fn export_migrate(from_schema: i32) -> *mut u8 {
                release_previous();
                unsafe { glue::_export_migrate_cabi::<$adapter>(from_schema) }
            }
            #[unsafe(export_name = "cabi_post_keel:plugin/guest@0.1.0#migrate")]
            unsafe extern "C" fn post_return_migrate(area: *mut u8) {
                unsafe { glue::__post_return_migrate::<$adapter>(area) }
            }

            // No post-return: the response is freed by the next export.
            #[unsafe(export_name = "keel:plugin/guest@0.1.0#handle")]
            unsafe extern "C" fn export_handle(ptr: *mut u8, len: usize) -> *mut u8 {
                release_previous();
                unsafe {
                    let area = glue::_export_handle_cabi::<$adapter>(ptr, len);
                    defer_release(glue::__post_return_handle::<$adapter>, area);
                    area
                }
            }

            #[unsafe(export_name = "keel:plugin/guest@0.1.0#query")]
            unsafe extern "C" fn export_query(ptr: *mut u8, len: usize) -> *mut u8 {
                release_previous();
                unsafe {
                    let area = glue::_export_query_cabi::<$adapter>(ptr, len);
                    defer_release(glue::__post_return_query::<$adapter>, area);
                    area
                }
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static FREED: Cell<Vec<usize>> = const { Cell::new(Vec::new()) };
    }

    unsafe fn record_free(area: *mut u8) {
        FREED.with(|f| {
            let mut v = f.take();
            v.push(area as usize);
            f.set(v);
        });
    }

    fn freed() -> Vec<usize> {
        FREED.with(|f| {
            let v = f.take();
            f.set(v.clone());
            v
        })
    }

    #[test]
    fn a_deferred_response_is_freed_once_by_the_next_export() {
        release_previous(); // nothing deferred: nothing freed
        assert!(freed().is_empty());
        unsafe { defer_release(record_free, 0x10 as *mut u8) };
        assert!(freed().is_empty(), "freed only when the next export starts");
        release_previous();
        assert_eq!(freed(), [0x10]);
        release_previous();
        assert_eq!(freed(), [0x10], "freed exactly once");
        unsafe { defer_release(record_free, 0x20 as *mut u8) };
        release_previous();
        assert_eq!(freed(), [0x10, 0x20]);
    }
}
