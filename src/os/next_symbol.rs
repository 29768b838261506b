//! A function interposed over: the next definition of it in the loader's
//! search order (`dlsym(RTLD_NEXT, name)`), looked up once, on first use.
//!
//! `RTLD_NEXT` searches the objects after the one whose code calls
//! `dlsym`: this module's code is compiled into whichever object heapprof
//! is part of (the program's executable, or the preload library), so the
//! lookup always skips heapprof's own definitions. A lookup may allocate
//! (glibc's `dlsym` keeps error state): call it where an allocation may be
//! made, as the way in's constructor does for the functions it forwards.

use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicPtr, Ordering};

/// The next definition of one function, found on first use and kept.
pub struct NextSymbol {
    name: &'static CStr,
    ptr: AtomicPtr<c_void>,
}

impl NextSymbol {
    /// The function called `name`, not looked up yet.
    pub const fn new(name: &'static CStr) -> NextSymbol {
        NextSymbol {
            name,
            ptr: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Its address (null if no later object defines it).
    pub fn get(&self) -> *mut c_void {
        let p = self.ptr.load(Ordering::Acquire);
        if !p.is_null() {
            return p;
        }
        // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT skips the
        // object this code is part of (see the module doc).
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        self.ptr.store(p, Ordering::Release);
        p
    }

    /// Its address if [`get`](Self::get) found it already, else null:
    /// never looks up (for code that may not allocate or lock).
    pub fn peek(&self) -> *mut c_void {
        self.ptr.load(Ordering::Acquire)
    }
}
