//! `dlclose`: the stack walk's cached rules describe the objects loaded
//! when they were derived, and other code may later be loaded where an
//! unloaded one was; so after a `dlclose` that unloaded an object (the
//! loader's count of unloads moved) the rule table is emptied
//! (`heapprof::engine::unwind`, which derives the rules again as walks
//! need them).

use core::ffi::{c_int, c_void};

use heapprof::ffi_surface::engine::unwind;
use heapprof::ffi_surface::os::NextSymbol;

/// The `dlclose` the program would call without this library.
static REAL: NextSymbol = NextSymbol::new(c"dlclose");

type DlcloseFn = unsafe extern "C" fn(*mut c_void) -> c_int;

/// Interposed `dlclose`: forwards, then empties the walk's rule table if
/// an object was unloaded.
///
/// # Safety
/// As C's `dlclose`.
#[no_mangle]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    let p = REAL.get();
    if p.is_null() {
        // No dlclose to forward to (never in a dynamically linked glibc
        // program): the object stays loaded, as a failed dlclose leaves it.
        return -1;
    }
    // SAFETY: REAL resolved `dlclose`, whose type this is.
    let real = unsafe { core::mem::transmute::<*mut c_void, DlcloseFn>(p) };
    // SAFETY: the caller's handle, passed on unchanged.
    let r = unsafe { real(handle) };
    if r == 0 {
        unwind::forget_rules_if_unloaded();
    }
    r
}
