//! Unwind rules from DWARF call frame information (`.eh_frame`), x86-64.
//!
//! For a code address, [`rule_at`] finds its object with glibc's lock-free
//! `_dl_find_object`, the FDE covering it through the object's
//! `.eh_frame_hdr` search table, and runs the CIE's and FDE's CFA programs
//! up to the address. What it keeps is all a walk up the stack needs on
//! x86-64 when the code follows the ABI:
//! - the CFA (the caller's stack pointer) is `rsp` or `rbp` plus an offset;
//! - the return address lies at CFA − 8;
//! - the caller's `rbp` is this frame's, or saved at a fixed place below the
//!   CFA;
//! - or the return address is undefined: the outermost frame.
//!
//! Anything else (a CFA on another register or given by an expression, a
//! signal frame, a register moved to another, an object without a search
//! table, an address no FDE covers) gives [`Rule::Unknown`], and the capture
//! falls back to a full unwinder: a rule is either exact or absent.
//!
//! Everything here reads only the objects' mapped, read-only unwind
//! sections and takes no lock (`_dl_find_object` is lock-free and
//! async-signal-safe), so it may run on the sampled path.

use core::ffi::c_void;

use crate::os::next_symbol::NextSymbol;

/// How to step from a frame at a given code address to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// CFA = (`rbp` if `cfa_rbp`, else `rsp`) + `cfa_off`; the return
    /// address at CFA − 8; the caller's `rbp` saved at CFA − `rbp_at`
    /// (`rbp_at` > 0), or unchanged (`rbp_at` = 0).
    Step {
        cfa_rbp: bool,
        cfa_off: u32,
        rbp_at: u32,
    },
    /// The return address is undefined: no caller (thread start, `_start`).
    Last,
    /// No rule this form can express, or no unwind information.
    Unknown,
}

/// glibc's `struct dl_find_object` (2.35).
#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: *mut c_void,
    map_end: *mut c_void,
    link_map: *mut c_void,
    eh_frame: *mut c_void,
    reserved: [u64; 7],
}

type FindObject = unsafe extern "C" fn(*mut c_void, *mut DlFindObject) -> i32;
/// glibc's, in libc: after heapprof's own object in the search order.
static FIND_OBJECT: NextSymbol = NextSymbol::new(c"_dl_find_object");

/// Looks up glibc's `_dl_find_object` (2.35 and later); false if this libc
/// has none, and then no rule is ever known. Call from a constructor or
/// heapprof's own thread (`dlsym` may take the loader's lock).
pub fn load() -> bool {
    !FIND_OBJECT.get().is_null()
}

/// Whether [`load`] found `_dl_find_object`.
pub fn loaded() -> bool {
    !FIND_OBJECT.peek().is_null()
}

/// The rule for the instruction at `pc` (for a return address, pass the
/// address before it: the call, which may be a function's last
/// instruction).
pub fn rule_at(pc: u64) -> Rule {
    eh_frame_hdr(pc)
        .and_then(|hdr| fde_for(hdr, pc))
        .and_then(|fde| run_programs(fde, pc))
        .unwrap_or(Rule::Unknown)
}

/// The address of the `.eh_frame_hdr` of the object holding `pc`.
fn eh_frame_hdr(pc: u64) -> Option<usize> {
    let f = FIND_OBJECT.peek();
    if f.is_null() {
        return None;
    }
    // SAFETY: FIND_OBJECT only ever holds glibc's `_dl_find_object`.
    let f: FindObject = unsafe { core::mem::transmute::<*mut c_void, FindObject>(f) };
    // SAFETY: `_dl_find_object` fills the struct it is given (all-zero is a
    // valid value of it) and reads nothing else of ours.
    let found = unsafe {
        let mut o: DlFindObject = core::mem::zeroed();
        (f(pc as *mut c_void, &mut o) == 0).then_some(o.eh_frame as usize)
    };
    found.filter(|&hdr| hdr != 0)
}

// DW_EH_PE encodings.
const PE_OMIT: u8 = 0xff;
const PE_ABSPTR: u8 = 0x00;
const PE_ULEB128: u8 = 0x01;
const PE_UDATA2: u8 = 0x02;
const PE_UDATA4: u8 = 0x03;
const PE_UDATA8: u8 = 0x04;
const PE_SLEB128: u8 = 0x09;
const PE_SDATA2: u8 = 0x0a;
const PE_SDATA4: u8 = 0x0b;
const PE_SDATA8: u8 = 0x0c;
const PE_PCREL: u8 = 0x10;
const PE_DATAREL: u8 = 0x30;

/// Bytes at `addr` in a loaded object's unwind sections.
///
/// # Safety
/// `addr..addr + len` lies in a mapped, readable part of an object that
/// stays loaded while the slice is used.
unsafe fn bytes<'a>(addr: usize, len: usize) -> &'a [u8] {
    // SAFETY: as the caller guarantees.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

/// The FDE covering `pc` in the object whose `.eh_frame_hdr` is at `hdr`:
/// its address.
fn fde_for(hdr: usize, pc: u64) -> Option<usize> {
    // SAFETY: `_dl_find_object` gave `hdr`, the object's PT_GNU_EH_FRAME
    // segment, loaded while `pc` (an address on this thread's stack, in code
    // that is running) is in it; the header is 4 bytes and two 4-byte fields
    // in the only form read here (checked below).
    let head = unsafe { bytes(hdr, 12) };
    let &[version, ptr_enc, count_enc, table_enc, _, _, _, _, c0, c1, c2, c3] = head else {
        return None;
    };
    if version != 1
        || ptr_enc & 0x0f != PE_SDATA4
        || count_enc != PE_UDATA4
        || table_enc != (PE_DATAREL | PE_SDATA4)
    {
        return None;
    }
    let count = u32::from_le_bytes([c0, c1, c2, c3]) as usize;
    // SAFETY: the table follows the header: `count` pairs of 4-byte values.
    let table = unsafe { bytes(hdr.checked_add(12)?, count.checked_mul(8)?) };
    // Entry i: (initial location, FDE address), both relative to `hdr`.
    let entry = |i: usize| -> Option<(u64, u64)> {
        let pair = table.get(i.checked_mul(8)?..)?;
        let at = |j: usize| -> Option<u64> {
            let v = i32::from_le_bytes(pair.get(j..j.checked_add(4)?)?.try_into().ok()?);
            Some((hdr as i64).wrapping_add(i64::from(v)) as u64)
        };
        Some((at(0)?, at(4)?))
    };
    // The last entry starting at or before pc.
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        // lo < hi ≤ count, so neither wraps.
        let mid = lo.wrapping_add(hi.wrapping_sub(lo) / 2);
        if entry(mid)?.0 <= pc {
            lo = mid.checked_add(1)?;
        } else {
            hi = mid;
        }
    }
    let (start, fde) = entry(lo.checked_sub(1)?)?;
    (start <= pc).then_some(fde as usize)
}

/// A reader over one CIE or FDE.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    /// The address of `data[0]`, for pc-relative pointers.
    base: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.data.get(self.at)?;
        self.at = self.at.checked_add(1)?;
        Some(b)
    }

    fn fixed<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.at.checked_add(N)?;
        let b = self.data.get(self.at..end)?.try_into().ok()?;
        self.at = end;
        Some(b)
    }

    /// A LEB128 number: its low 64 bits, how many bits it had and whether
    /// its last byte's sign bit was set.
    fn leb(&mut self) -> Option<(u64, u32, bool)> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= u64::from(b & 0x7f) << shift;
            }
            shift = shift.saturating_add(7);
            if b & 0x80 == 0 {
                return Some((v, shift, b & 0x40 != 0));
            }
        }
    }

    fn uleb(&mut self) -> Option<u64> {
        self.leb().map(|(v, _, _)| v)
    }

    fn sleb(&mut self) -> Option<i64> {
        let (v, bits, negative) = self.leb()?;
        Some(if negative && bits < 64 {
            (v | u64::MAX << bits) as i64
        } else {
            v as i64
        })
    }

    /// A pointer encoded as `enc` (pc-relative or absolute; no indirection).
    fn pointer(&mut self, enc: u8) -> Option<u64> {
        let field = self.base.wrapping_add(self.at) as u64;
        let v = match enc & 0x0f {
            PE_ABSPTR | PE_UDATA8 => u64::from_le_bytes(self.fixed()?),
            PE_ULEB128 => self.uleb()?,
            PE_UDATA2 => u64::from(u16::from_le_bytes(self.fixed()?)),
            PE_UDATA4 => u64::from(u32::from_le_bytes(self.fixed()?)),
            PE_SLEB128 => self.sleb()? as u64,
            PE_SDATA2 => i64::from(i16::from_le_bytes(self.fixed()?)) as u64,
            PE_SDATA4 => i64::from(i32::from_le_bytes(self.fixed()?)) as u64,
            PE_SDATA8 => i64::from_le_bytes(self.fixed()?) as u64,
            _ => return None,
        };
        match enc & 0x70 {
            0 => Some(v),
            PE_PCREL => Some(field.wrapping_add(v)),
            _ => None,
        }
    }
}

/// A CIE or FDE record at `addr`: its contents after the length field, and
/// their address.
fn record(addr: usize) -> Option<(&'static [u8], usize)> {
    // SAFETY: `addr` is an FDE the object's search table points at, or the
    // CIE that FDE points at, in the loaded object's `.eh_frame`; each
    // starts with a 4-byte length (0xffffffff, the 64-bit form, refused).
    let len = u32::from_le_bytes(unsafe { bytes(addr, 4) }.try_into().ok()?);
    if len == 0 || len == u32::MAX {
        return None;
    }
    let start = addr.checked_add(4)?;
    // SAFETY: the record's `len` bytes follow its length field.
    Some((unsafe { bytes(start, len as usize) }, start))
}

/// What the CIE says.
struct Cie {
    code_align: u64,
    data_align: i64,
    fde_enc: u8,
    augmented: bool,
    /// Its initial instructions.
    program: &'static [u8],
    program_base: usize,
}

fn cie(addr: usize) -> Option<Cie> {
    let (data, base) = record(addr)?;
    let mut r = Reader { data, at: 0, base };
    if u32::from_le_bytes(r.fixed()?) != 0 {
        return None; // not a CIE
    }
    let version = r.u8()?;
    let aug_start = r.at;
    while r.u8()? != 0 {}
    let aug = data.get(aug_start..r.at.checked_sub(1)?)?;
    if aug.first().is_some_and(|&c| c != b'z') || aug.contains(&b'S') {
        // "eh" (obsolete) or a signal frame: unknown.
        return None;
    }
    let code_align = r.uleb()?;
    let data_align = r.sleb()?;
    let ra = if version == 1 {
        u64::from(r.u8()?)
    } else {
        r.uleb()?
    };
    if ra != RA {
        return None;
    }
    let mut fde_enc = PE_ABSPTR;
    let augmented = aug.first() == Some(&b'z');
    if augmented {
        let len = r.uleb()? as usize;
        let end = r.at.checked_add(len)?;
        for &c in aug.get(1..)? {
            match c {
                b'R' => fde_enc = r.u8()?,
                b'L' => {
                    r.u8()?;
                }
                b'P' => {
                    let enc = r.u8()?;
                    if enc != PE_OMIT {
                        r.pointer(enc & 0x7f)?;
                    }
                }
                _ => break, // unknown letters: the length skips the rest
            }
        }
        r.at = end;
    }
    Some(Cie {
        code_align,
        data_align,
        fde_enc,
        augmented,
        program: data.get(r.at..)?,
        program_base: base.checked_add(r.at)?,
    })
}

/// DWARF register numbers on x86-64.
const RBP: u64 = 6;
const RSP: u64 = 7;
const RA: u64 = 16;

/// A register's rule, for the two registers the walk restores.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reg {
    Same,
    Undefined,
    /// Saved at CFA + offset.
    At(i64),
    Other,
}

#[derive(Clone, Copy)]
struct State {
    cfa_reg: u64,
    cfa_off: i64,
    cfa_other: bool,
    rbp: Reg,
    ra: Reg,
}

/// Remembered states an FDE may nest (`DW_CFA_remember_state`).
const STATES: usize = 8;

/// Runs the CIE's initial program and the FDE's up to `pc`.
fn run_programs(fde: usize, pc: u64) -> Option<Rule> {
    let (data, base) = record(fde)?;
    let mut r = Reader { data, at: 0, base };
    let cie_delta = u32::from_le_bytes(r.fixed()?);
    if cie_delta == 0 {
        return None; // a CIE, not an FDE
    }
    let cie = cie(base.checked_sub(cie_delta as usize)?)?;
    let start = r.pointer(cie.fde_enc)?;
    let range = r.pointer(cie.fde_enc & 0x0f)?;
    if pc < start || pc >= start.wrapping_add(range) {
        return None;
    }
    if cie.augmented {
        let len = r.uleb()? as usize;
        r.at = r.at.checked_add(len)?;
    }
    let mut state = State {
        cfa_reg: RSP,
        cfa_off: 8,
        cfa_other: false,
        rbp: Reg::Same,
        ra: Reg::Same,
    };
    let mut init = Reader {
        data: cie.program,
        at: 0,
        base: cie.program_base,
    };
    execute(&mut init, &cie, &mut state, None, u64::MAX, 0)?;
    let initial = state;
    let mut program = Reader {
        data: data.get(r.at..)?,
        at: 0,
        base: base.checked_add(r.at)?,
    };
    execute(&mut program, &cie, &mut state, Some(&initial), pc, start)?;
    rule_of(&state)
}

fn rule_of(s: &State) -> Option<Rule> {
    if s.ra == Reg::Undefined {
        return Some(Rule::Last);
    }
    if s.cfa_other || s.ra != Reg::At(-8) || !(s.cfa_reg == RSP || s.cfa_reg == RBP) {
        return None;
    }
    let cfa_off = u32::try_from(s.cfa_off).ok().filter(|&o| o >= 8)?;
    let rbp_at = match s.rbp {
        Reg::Same => 0,
        Reg::At(off) if off < 0 => u32::try_from(off.checked_neg()?).ok()?,
        _ => return None,
    };
    Some(Rule::Step {
        cfa_rbp: s.cfa_reg == RBP,
        cfa_off,
        rbp_at,
    })
}

/// Runs a CFA program while its location is at or before `pc` (`loc` its
/// start); `initial` is the CIE's state for `DW_CFA_restore` (none while
/// running the CIE itself).
fn execute(
    r: &mut Reader<'_>,
    cie: &Cie,
    s: &mut State,
    initial: Option<&State>,
    pc: u64,
    mut loc: u64,
) -> Option<()> {
    let mut stack = [*s; STATES];
    let mut depth = 0usize;
    let set = |s: &mut State, reg: u64, rule: Reg| match reg {
        RBP => s.rbp = rule,
        RA => s.ra = rule,
        _ => {}
    };
    let restore = |s: &mut State, reg: u64| {
        if let Some(i) = initial {
            match reg {
                RBP => s.rbp = i.rbp,
                RA => s.ra = i.ra,
                _ => {}
            }
        }
    };
    while r.at < r.data.len() {
        let op = r.u8()?;
        let advance = match op >> 6 {
            1 => Some(u64::from(op & 0x3f)),
            2 => {
                let off = r.uleb()? as i64;
                set(
                    s,
                    u64::from(op & 0x3f),
                    Reg::At(off.wrapping_mul(cie.data_align)),
                );
                None
            }
            3 => {
                restore(s, u64::from(op & 0x3f));
                None
            }
            _ => match op {
                0x00 => None, // nop
                0x01 => {
                    let to = r.pointer(cie.fde_enc)?;
                    if to > pc {
                        return Some(());
                    }
                    loc = to;
                    None
                }
                0x02 => Some(u64::from(r.u8()?)),
                0x03 => Some(u64::from(u16::from_le_bytes(r.fixed()?))),
                0x04 => Some(u64::from(u32::from_le_bytes(r.fixed()?))),
                0x05 => {
                    let reg = r.uleb()?;
                    let off = r.uleb()? as i64;
                    set(s, reg, Reg::At(off.wrapping_mul(cie.data_align)));
                    None
                }
                0x06 => {
                    restore(s, r.uleb()?);
                    None
                }
                0x07 => {
                    set(s, r.uleb()?, Reg::Undefined);
                    None
                }
                0x08 => {
                    set(s, r.uleb()?, Reg::Same);
                    None
                }
                // register (another register holds it), val_offset (it is
                // CFA + offset, not stored): neither is a form walked here.
                0x09 | 0x14 => {
                    let reg = r.uleb()?;
                    r.uleb()?;
                    set(s, reg, Reg::Other);
                    None
                }
                0x0a => {
                    *stack.get_mut(depth)? = *s;
                    depth = depth.checked_add(1)?;
                    None
                }
                0x0b => {
                    depth = depth.checked_sub(1)?;
                    // The CFA and the registers come back (DWARF 5 6.4.2.4).
                    *s = *stack.get(depth)?;
                    None
                }
                0x0c => {
                    s.cfa_reg = r.uleb()?;
                    s.cfa_off = r.uleb()? as i64;
                    s.cfa_other = false;
                    None
                }
                0x0d => {
                    s.cfa_reg = r.uleb()?;
                    None
                }
                0x0e => {
                    s.cfa_off = r.uleb()? as i64;
                    None
                }
                0x0f => {
                    let len = r.uleb()? as usize;
                    r.at = r.at.checked_add(len)?;
                    s.cfa_other = true;
                    None
                }
                0x10 | 0x16 => {
                    let reg = r.uleb()?;
                    let len = r.uleb()? as usize;
                    r.at = r.at.checked_add(len)?;
                    set(s, reg, Reg::Other);
                    None
                }
                0x11 => {
                    let reg = r.uleb()?;
                    let off = r.sleb()?;
                    set(s, reg, Reg::At(off.wrapping_mul(cie.data_align)));
                    None
                }
                0x12 => {
                    s.cfa_reg = r.uleb()?;
                    s.cfa_off = r.sleb()?.wrapping_mul(cie.data_align);
                    s.cfa_other = false;
                    None
                }
                0x13 => {
                    s.cfa_off = r.sleb()?.wrapping_mul(cie.data_align);
                    None
                }
                0x15 => {
                    let reg = r.uleb()?;
                    r.sleb()?;
                    set(s, reg, Reg::Other);
                    None
                }
                0x2e => {
                    r.uleb()?; // GNU_args_size: no effect on the CFA
                    None
                }
                0x2f => {
                    let reg = r.uleb()?;
                    let off = r.uleb()? as i64;
                    set(
                        s,
                        reg,
                        Reg::At(off.wrapping_mul(cie.data_align).wrapping_neg()),
                    );
                    None
                }
                _ => return None,
            },
        };
        if let Some(delta) = advance {
            loc = loc.wrapping_add(delta.wrapping_mul(cie.code_align));
            if loc > pc {
                return Some(());
            }
        }
    }
    Some(())
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    #[test]
    fn leb128_numbers_decode() {
        let read = |bytes: &[u8]| {
            let mut r = Reader { data: bytes, at: 0, base: 0 };
            (r.clone_at().uleb(), r.sleb())
        };
        assert_eq!(read(&[0xe5, 0x8e, 0x26]), (Some(624_485), Some(624_485)));
        assert_eq!(read(&[0x7f]), (Some(127), Some(-1)));
        assert_eq!(read(&[0x80, 0x7f]), (Some(16_256), Some(-128)));
        assert_eq!(read(&[0x78]).1, Some(-8)); // x86-64's data alignment
        assert_eq!(read(&[0x80]), (None, None)); // cut short
    }

    impl<'a> Reader<'a> {
        fn clone_at(&self) -> Reader<'a> {
            Reader { data: self.data, at: self.at, base: self.base }
        }
    }

    #[test]
    fn functions_of_this_binary_have_rules() {
        assert!(load(), "glibc 2.35+ has _dl_find_object");
        // Inside a Rust function compiled here: a step on rsp (no frame
        // pointers) or rbp.
        let pc = functions_of_this_binary_have_rules as *const () as u64 + 1;
        assert!(
            matches!(rule_at(pc), Rule::Step { .. }),
            "{:?}",
            rule_at(pc)
        );
        // libc's code too.
        let pc = libc::getpid as *const () as u64 + 1;
        assert!(matches!(rule_at(pc), Rule::Step { .. }));
        // Not code.
        assert_eq!(rule_at(8), Rule::Unknown);
    }
}
