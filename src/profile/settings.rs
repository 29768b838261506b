//! What a profile takes from the configuration: whether to symbolize, and
//! the process-wide labels. The control layer owns the configuration and
//! pushes these down ([`set`]) whenever it loads or changes it; it also
//! registers a loader ([`set_loader`]) that a profile taken before any
//! configuration was read calls first, and the source of the memory limit
//! recorded in each profile ([`set_memory_limit_source`]). Profile writing
//! never names control.

use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Mutex;

struct Values {
    symbolize: bool,
    labels: Vec<(String, String)>,
}

static VALUES: Mutex<Values> = Mutex::new(Values {
    symbolize: true,
    labels: Vec::new(),
});
static SET: AtomicBool = AtomicBool::new(false);
static LOADER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static LIMIT: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Sets what profiles take from the configuration (control calls this).
pub fn set(symbolize: bool, labels: Vec<(String, String)>) {
    let mut v = crate::engine::arena_in_copy::lock(&VALUES);
    v.symbolize = symbolize;
    v.labels = labels;
    SET.store(true, Ordering::Release);
}

/// Registers the function that reads the configuration and calls [`set`].
pub fn set_loader(load: fn()) {
    LOADER.store(load as *mut (), Ordering::Release);
}

/// Registers the function that reads the process's memory limit (its
/// cgroup's), recorded in each profile.
pub fn set_memory_limit_source(read: fn() -> Option<u64>) {
    LIMIT.store(read as *mut (), Ordering::Release);
}

/// The process's memory limit, if a source is registered and finds one.
pub fn memory_limit() -> Option<u64> {
    let read = LIMIT.load(Ordering::Acquire);
    if read.is_null() {
        return None;
    }
    // SAFETY: LIMIT only ever holds a `fn() -> Option<u64>` stored by
    // set_memory_limit_source.
    let read: fn() -> Option<u64> =
        unsafe { core::mem::transmute::<*mut (), fn() -> Option<u64>>(read) };
    read()
}

fn values() -> std::sync::MutexGuard<'static, Values> {
    if !SET.load(Ordering::Acquire) {
        let load = LOADER.load(Ordering::Acquire);
        if !load.is_null() {
            // SAFETY: LOADER only ever holds a `fn()` stored by set_loader.
            let load: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(load) };
            load();
        }
    }
    crate::engine::arena_in_copy::lock(&VALUES)
}

/// Held by the `pthread_atfork` prepare handler, so the child never
/// inherits it held (the values are the child's too).
pub fn lock() -> std::sync::MutexGuard<'static, impl Sized> {
    crate::engine::arena_in_copy::lock(&VALUES)
}

/// Whether dumps resolve symbols in-process (`HEAPPROF_SYMBOLIZE`).
pub fn symbolize_enabled() -> bool {
    values().symbolize
}

/// Labels on every sample (`HEAPPROF_LABELS`, `Config::labels`).
pub fn process_labels() -> Vec<(String, String)> {
    values().labels.clone()
}
