//! Taking the hooks out of an inert process's calls.
//!
//! A process the library stays inert in (a child not asked for, see
//! [`crate::lineage`]) never samples, so its hooks would only forward, a
//! cost a program that churns small blocks would see. Instead, once in the
//! constructor, this rewrites
//! the slots through which every loaded object calls the malloc family —
//! its GOT entries, `R_*_JUMP_SLOT` (PLT calls) and `R_*_GLOB_DAT` (calls
//! and address-takes through the GOT) — from our hook to the function the
//! hook forwards to ([`crate::real::forwards`]): what the loader would have
//! bound them to without this library. The process then calls its allocator
//! directly and pays nothing per call.
//!
//! A slot is rewritten only if it holds our hook, or is a lazily bound PLT
//! slot not resolved yet (it still points into its own object) whose name
//! the loader would bind to our hook: `wins` checks that nobody earlier in
//! the global scope defines it (a non-PIE executable that takes `malloc`'s
//! address "defines" it by a PLT stub, which the loader skips for calls; so
//! do we). Our hooks' addresses come from `dlsym` on this library's own
//! handle (`hooks_by_name`). Slots in RELRO (read-only after relocation)
//! are made writable for the store and read-only again. Each store is one
//! aligned word, and both the old and the new function are valid targets
//! at every moment, so another thread calling meanwhile (one an earlier
//! constructor started) is fine.
//!
//! Not rewritten, and still forwarded by the hooks (correct, just not free):
//! objects loaded later with `dlopen`, function pointers already copied into
//! data, the loader's own `__rtld_malloc` pointers, and `reallocarray`
//! (never forwarded, see [`crate::hooks`]). Nothing is rewritten at all if
//! the bootstrap arena ever handed out a block: such a block must reach our
//! `free`, which recognises it.
//!
//! Cost, once: a walk over each object's relocations (two for a non-PIE
//! executable). Figures: README, "The figures behind the design".

use core::ffi::{c_int, c_void, CStr};

use crate::{bootstrap, real};

#[cfg(target_arch = "x86_64")]
const R_GLOB_DAT: u32 = 6;
#[cfg(target_arch = "x86_64")]
const R_JUMP_SLOT: u32 = 7;
#[cfg(target_arch = "aarch64")]
const R_GLOB_DAT: u32 = 1025;
#[cfg(target_arch = "aarch64")]
const R_JUMP_SLOT: u32 = 1026;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const R_GLOB_DAT: u32 = u32::MAX;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const R_JUMP_SLOT: u32 = u32::MAX;

const DT_NULL: i64 = 0;
const DT_PLTRELSZ: i64 = 2;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_PLTREL: i64 = 20;
const DT_JMPREL: i64 = 23;
const PT_DYNAMIC: u32 = 2;
const PT_GNU_RELRO: u32 = 0x6474_e552;

#[repr(C)]
struct Dyn {
    tag: i64,
    val: u64,
}

#[repr(C)]
struct Rela {
    offset: u64,
    info: u64,
    _addend: i64,
}

#[repr(C)]
struct Sym {
    name: u32,
    _info: u8,
    _other: u8,
    shndx: u16,
    _value: u64,
    _size: u64,
}

/// One interposed name: our hook and where it forwards.
#[derive(Clone, Copy)]
struct Target {
    name: &'static CStr,
    hook: usize,
    real: usize,
}

struct Work {
    own: usize,
    /// The main executable (as [`real::object_of`] names objects).
    exe: usize,
    /// Per target: the executable refers to the name without defining it.
    imported: [bool; 10],
    /// False on the first walk (finding `imported`), true on the rewrite.
    patching: bool,
    /// The system's page size (what mprotect works in).
    page: usize,
    targets: [Target; 10],
    patched: usize,
}

/// Our own definition of each name [`real::forwards`] lists, by `dlsym` on
/// this library's handle (which searches this library first). Not
/// `hooks::malloc as usize`: the library's own references to an exported
/// function go through its GOT, so they give the global definition, which
/// is the executable's PLT stub in a non-PIE executable that takes
/// `malloc`'s address (CPython).
fn hooks_by_name(names: &[&CStr]) -> [usize; 10] {
    let mut out = [0usize; 10];
    // SAFETY: dladdr of a function of this library fills `info` with the
    // loader's name for it; dlopen with RTLD_NOLOAD only takes a reference
    // to an object already loaded (never released: the library stays).
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        let here = hooks_by_name as fn(&[&CStr]) -> [usize; 10] as *const c_void;
        if libc::dladdr(here, &mut info) == 0 || info.dli_fname.is_null() {
            return out;
        }
        let handle = libc::dlopen(info.dli_fname, libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return out;
        }
        for (o, name) in out.iter_mut().zip(names) {
            let p = libc::dlsym(handle, name.as_ptr()) as usize;
            // Only a definition in this very library counts.
            if real::object_of(p) == real::object_of(here as usize) {
                *o = p;
            }
        }
    }
    out
}

/// Whether the loader binds calls to `name` to our `hook`: the global
/// definition is ours, or a PLT stub of the executable — an undefined
/// symbol with an address (`imported`: the executable refers to `name` but
/// does not define it), which call binding passes over, and behind which,
/// this library being preloaded, we come next.
fn wins(name: &CStr, hook: usize, exe: usize, imported: bool) -> bool {
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the global scope.
    let d = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
    d == hook || (d != 0 && imported && real::object_of(d) == exe)
}

/// Rewrites the malloc family's slots in every loaded object but this
/// library (see the module docs); returns how many were rewritten.
pub fn unhook() -> usize {
    if bootstrap::used() {
        return 0;
    }
    let mut targets = [Target {
        name: c"",
        hook: 0,
        real: 0,
    }; 10];
    let forwards = real::forwards();
    let hooks = hooks_by_name(&forwards.map(|(name, _)| name));
    for ((t, (name, to)), hook) in targets.iter_mut().zip(forwards).zip(hooks) {
        if !to.is_null() {
            *t = Target {
                name,
                hook,
                real: to as usize,
            };
        }
    }
    let mut work = Work {
        own: real::object_of(hooks_by_name as fn(&[&CStr]) -> [usize; 10] as usize),
        // SAFETY: getauxval only reads the auxiliary vector.
        exe: real::object_of(unsafe { libc::getauxval(libc::AT_PHDR) } as usize),
        // SAFETY: sysconf only reads a constant.
        page: match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 && (p as usize).is_power_of_two() => p as usize,
            _ => 4096,
        },
        targets,
        imported: [false; 10],
        patching: false,
        patched: 0,
    };
    // Which names the executable imports, if that matters (a global
    // definition that is not ours: a PLT stub of a non-PIE executable, or
    // someone else's); then the rewrite.
    let stub = |t: &Target| {
        // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the global scope.
        let d = unsafe { libc::dlsym(libc::RTLD_DEFAULT, t.name.as_ptr()) } as usize;
        t.hook != 0 && d != t.hook && real::object_of(d) == work.exe
    };
    if work.targets.iter().any(stub) {
        // SAFETY: `each` reads the loader's data for each object and writes
        // only GOT slots (see its comments) and `work`.
        unsafe { libc::dl_iterate_phdr(Some(each), (&mut work as *mut Work).cast()) };
    }
    for (t, imported) in work.targets.iter_mut().zip(work.imported) {
        if t.hook != 0 && !wins(t.name, t.hook, work.exe, imported) {
            t.hook = 0;
        }
    }
    work.patching = true;
    // SAFETY: as above.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut work as *mut Work).cast()) };
    work.patched
}

/// Whether the NUL-terminated symbol name at `p` is `want`, reading no
/// further than the first difference (most names differ in the first byte).
///
/// # Safety
/// `p` points at a NUL-terminated string.
#[inline]
unsafe fn same_name(p: *const u8, want: &CStr) -> bool {
    for (i, &b) in want.to_bytes_with_nul().iter().enumerate() {
        // SAFETY: every byte up to and including the first NUL is readable,
        // and we stop at the first difference (at the latest at a NUL).
        if unsafe { *p.add(i) } != b {
            return false;
        }
    }
    true
}

unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
    // SAFETY: the loader passes one object's valid info, its headers and
    // dynamic section mapped for as long as it stays loaded (it cannot be
    // unloaded during the walk), and `data` is the `Work` of `unhook`.
    unsafe {
        let work = &mut *data.cast::<Work>();
        let info = &*info;
        let id = info.dlpi_phdr as usize;
        if id == work.own || (!work.patching && id != work.exe) {
            return 0;
        }
        let base = info.dlpi_addr as usize;
        let page = work.page;
        let mut dynamic = 0usize;
        let mut relro = (0usize, 0usize);
        let (mut lo, mut hi) = (usize::MAX, 0usize);
        for i in 0..usize::from(info.dlpi_phnum) {
            let ph = &*info.dlpi_phdr.add(i);
            let start = base.wrapping_add(ph.p_vaddr as usize);
            match ph.p_type {
                PT_DYNAMIC => dynamic = start,
                // The loader protects whole pages: start rounded down, end
                // rounded down.
                PT_GNU_RELRO => {
                    relro = (
                        start & !(page - 1),
                        (start + ph.p_memsz as usize) & !(page - 1),
                    )
                }
                libc::PT_LOAD => {
                    lo = lo.min(start);
                    hi = hi.max(start + ph.p_memsz as usize);
                }
                _ => {}
            }
        }
        if dynamic == 0 || lo >= hi {
            return 0;
        }
        // The loader relocates most address entries of a dynamic section in
        // place (not the vDSO's): an address below the load base is still
        // an offset from it.
        let addr = |v: u64| {
            let v = v as usize;
            if v < base {
                base + v
            } else {
                v
            }
        };
        let (mut strtab, mut symtab) = (0, 0);
        let (mut rela, mut relasz, mut jmprel, mut pltrelsz) = (0, 0, 0, 0);
        let mut pltrel = DT_RELA as u64;
        let mut d = dynamic as *const Dyn;
        while (*d).tag != DT_NULL {
            match (*d).tag {
                DT_STRTAB => strtab = addr((*d).val),
                DT_SYMTAB => symtab = addr((*d).val),
                DT_RELA => rela = addr((*d).val),
                DT_RELASZ => relasz = (*d).val as usize,
                DT_JMPREL => jmprel = addr((*d).val),
                DT_PLTRELSZ => pltrelsz = (*d).val as usize,
                DT_PLTREL => pltrel = (*d).val,
                _ => {}
            }
            d = d.add(1);
        }
        if strtab == 0 || symtab == 0 {
            return 0;
        }
        let mut tables = [(rela, relasz), (0, 0)];
        if pltrel == DT_RELA as u64 {
            tables[1] = (jmprel, pltrelsz);
        }
        for (table, bytes) in tables {
            if table == 0 {
                continue;
            }
            let n = bytes / core::mem::size_of::<Rela>();
            for i in 0..n {
                let r = &*(table as *const Rela).add(i);
                let kind = r.info as u32;
                let index = (r.info >> 32) as usize;
                if (kind != R_JUMP_SLOT && kind != R_GLOB_DAT) || index == 0 {
                    continue;
                }
                let sym = &*(symtab as *const Sym).add(index);
                let name = (strtab + sym.name as usize) as *const u8;
                let Some(at) = work
                    .targets
                    .iter()
                    .position(|t| t.hook != 0 && same_name(name, t.name))
                else {
                    continue;
                };
                if !work.patching {
                    work.imported[at] |= sym.shndx == 0;
                    continue;
                }
                let t = work.targets[at];
                let slot = base.wrapping_add(r.offset as usize) as *mut usize;
                let value = core::ptr::read_volatile(slot);
                let unresolved = kind == R_JUMP_SLOT && value.wrapping_sub(lo) < hi - lo;
                if value != t.hook && !unresolved {
                    continue;
                }
                if store(slot, t.real, relro, page) {
                    work.patched += 1;
                }
            }
        }
        0
    }
}

/// Stores `value` in the GOT slot, lifting RELRO protection around the
/// store if the slot is in `relro`. False if the page cannot be made
/// writable (the slot then keeps our hook, which forwards).
///
/// # Safety
/// `slot` is a GOT entry of a loaded object, and `value` a function with the
/// same signature as the one it holds.
unsafe fn store(slot: *mut usize, value: usize, relro: (usize, usize), size: usize) -> bool {
    let page = slot as usize & !(size - 1);
    let protected = page >= relro.0 && page < relro.1;
    // SAFETY: the page is part of the object's mapping; making it writable
    // and then read-only again is what the loader itself does with RELRO.
    unsafe {
        if protected
            && libc::mprotect(
                page as *mut c_void,
                size,
                libc::PROT_READ | libc::PROT_WRITE,
            ) != 0
        {
            return false;
        }
        core::ptr::write_volatile(slot, value);
        if protected {
            libc::mprotect(page as *mut c_void, size, libc::PROT_READ);
        }
    }
    true
}
