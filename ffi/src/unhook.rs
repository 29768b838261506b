//! Taking the hooks out of an inert process's calls.
//!
//! A process the library stays inert in (a child not asked for, see
//! [`crate::lineage`]) never samples, so its hooks would only forward —
//! about fifteen instructions per malloc/free pair, 8 % of a C program
//! that churns small blocks. Instead, once in the constructor, this rewrites
//! the slots through which every loaded object calls the malloc family —
//! its GOT entries, `R_*_JUMP_SLOT` (PLT calls) and `R_*_GLOB_DAT` (calls
//! and address-takes through the GOT) — from our hook to the function the
//! hook forwards to ([`crate::real::forwards`]): what the loader would have
//! bound them to without this library. The process then calls its allocator
//! directly and pays nothing per call.
//!
//! A slot is rewritten only if it holds our hook, or is a lazily bound PLT
//! slot not resolved yet (it still points into its own object) whose name
//! the loader would bind to our hook: [`wins`] checks that nobody earlier in
//! the global scope defines it (a non-PIE executable that takes `malloc`'s
//! address "defines" it by a PLT stub, which the loader skips for calls; so
//! do we). Slots in RELRO (read-only after relocation) are made writable for
//! the store and read-only again. Each store is one aligned word, and both
//! the old and the new function are valid targets at every moment, so
//! another thread calling meanwhile (one an earlier constructor started) is
//! fine.
//!
//! Not rewritten, and still forwarded by the hooks (correct, just not free):
//! objects loaded later with `dlopen`, function pointers already copied into
//! data, the loader's own `__rtld_malloc` pointers, and `reallocarray`
//! (never forwarded, see [`crate::hooks`]). Nothing is rewritten at all if
//! the bootstrap arena ever handed out a block: such a block must reach our
//! `free`, which recognises it.

use core::ffi::{c_char, c_int, c_void, CStr};

use crate::{bootstrap, hooks, real};

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
/// glibc's `dladdr1` flag asking for the symbol table entry.
const RTLD_DL_SYMENT: c_int = 1;
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
    _shndx: u16,
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
    /// The system's page size (what mprotect works in).
    page: usize,
    targets: [Target; 10],
    patched: usize,
}

/// Our hook for each name [`real::forwards`] lists.
fn hook_of(name: &CStr) -> usize {
    match name.to_bytes() {
        b"malloc" => hooks::malloc as *const () as usize,
        b"free" => hooks::free as *const () as usize,
        b"calloc" => hooks::calloc as *const () as usize,
        b"realloc" => hooks::realloc as *const () as usize,
        b"posix_memalign" => hooks::posix_memalign as *const () as usize,
        b"memalign" => hooks::memalign as *const () as usize,
        b"aligned_alloc" => hooks::aligned_alloc as *const () as usize,
        b"valloc" => hooks::valloc as *const () as usize,
        b"pvalloc" => hooks::pvalloc as *const () as usize,
        b"malloc_usable_size" => hooks::malloc_usable_size as *const () as usize,
        _ => 0,
    }
}

/// Whether the loader binds calls to `name` to our `hook`: the global
/// definition is ours, or a PLT stub of the executable (an undefined symbol
/// with an address, which call binding passes over, and behind which, this
/// library being preloaded, we come next).
fn wins(name: &CStr, hook: usize) -> bool {
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the global scope.
    let d = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
    if d == hook {
        return true;
    }
    // SAFETY: getauxval only reads the auxiliary vector.
    let exe = real::object_of(unsafe { libc::getauxval(libc::AT_PHDR) } as usize);
    if d == 0 || real::object_of(d) != exe {
        return false;
    }
    // SAFETY: dladdr1 fills `info` and points `sym` at the loader's symbol
    // entry for `d`, both valid while the executable is loaded (always).
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        let mut sym: *const Sym = core::ptr::null();
        let found = libc::dladdr1(
            d as *const c_void,
            &mut info,
            (&mut sym as *mut *const Sym).cast(),
            RTLD_DL_SYMENT,
        );
        found != 0
            && !sym.is_null()
            && (*sym)._shndx == 0
            && !info.dli_sname.is_null()
            && CStr::from_ptr(info.dli_sname) == name
    }
}

/// Rewrites the malloc family's slots in every loaded object but this
/// library (see the module docs); returns how many were rewritten.
pub fn unhook() -> usize {
    if bootstrap::used() {
        return 0;
    }
    let forwards = real::forwards();
    let mut targets = [Target {
        name: c"",
        hook: 0,
        real: 0,
    }; 10];
    for (t, (name, to)) in targets.iter_mut().zip(forwards) {
        let hook = hook_of(name);
        if !to.is_null() && hook != 0 && wins(name, hook) {
            *t = Target {
                name,
                hook,
                real: to as usize,
            };
        }
    }
    let mut work = Work {
        own: real::object_of(hook_of(c"malloc")),
        // SAFETY: sysconf only reads a constant.
        page: match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 && (p as usize).is_power_of_two() => p as usize,
            _ => 4096,
        },
        targets,
        patched: 0,
    };
    // SAFETY: `each` reads the loader's data for each object and writes
    // only GOT slots (see its comments) and `work`.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut work as *mut Work).cast()) };
    work.patched
}

unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
    // SAFETY: the loader passes one object's valid info, its headers and
    // dynamic section mapped for as long as it stays loaded (it cannot be
    // unloaded during the walk), and `data` is the `Work` of `unhook`.
    unsafe {
        let work = &mut *data.cast::<Work>();
        let info = &*info;
        if info.dlpi_phdr as usize == work.own {
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
                let name = CStr::from_ptr((strtab + sym.name as usize) as *const c_char);
                let Some(t) = work.targets.iter().find(|t| t.hook != 0 && t.name == name) else {
                    continue;
                };
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
