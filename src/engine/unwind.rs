//! heapprof's own stack walk on x86-64: DWARF rules cached per address.
//!
//! A step from a frame to its caller needs the rule of one code address
//! ([`crate::engine::cfi`]), and a program allocates from a few thousand
//! distinct places: each rule is derived once and kept in [`CACHE`], a
//! two-way table of single words (an entry is written and read in one
//! atomic access, so a race only ever costs a recomputation), and a walk
//! is then a load, a compare and a few additions a frame.
//!
//! ```text
//! entry (u64):  63 ..... 47 | 46 ............ 13 | 12 ...... 3 | 2       | 1    | 0
//!               cfa_off     | key's bits 13..46  | rbp_at / 8  | unknown | last | cfa_rbp
//! set = key mod 2^13; its ways: CACHE[set], CACHE[set + 2^13]
//! ```
//! `key` is the address looked up (a return address minus one), below
//! 2^47 (user space; the walk gives up on any other). Its bits 13..46 sit
//! in the entry where they sit in the key, so a match is one exclusive-or
//! and one test, and with the set they give the whole key back: a match
//! is exact. An empty entry (0) matches no key at or above 2^13. Such keys,
//! and rules whose offsets do not fit, are not cached (looked up each
//! time). A rule derived goes to the first way and moves the first way's
//! rule to the second: two hot addresses in one set (heapprof's own
//! frames, walked on every capture, against a program's) both stay.
//!
//! The two rules that end a walk (the outermost frame, once a capture; no
//! rule) are entries with a CFA offset of 0, which no step has: the hot
//! loop's own check that a frame's CFA lies above its stack pointer stops
//! at them, so a frame's step tests no flag.
//!
//! A walk gives up (`None`) at the first frame without a rule
//! ([`crate::engine::cfi::Rule::Unknown`]: a signal frame, code without
//! unwind information, an unusual CFA), and the capture takes libunwind's
//! full unwind instead; so every walk that returns equals a full unwind
//! frame for frame (`HEAPPROF_UNWIND=check`, in `tests/unwind.rs`,
//! compares the two on real programs).
//!
//! Rules describe the objects loaded when they were derived: when one is
//! unloaded, other code may later sit at its addresses, so the table is
//! emptied ([`forget_rules_if_unloaded`]) when the loader's count of
//! unloads has moved: after each `dlclose` under the preload library, and
//! on the dumper thread's turns (the Rust way in, within its next turn).
//! A derivation under way while the table is emptied is not stored
//! ([`EPOCH`]).

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::engine::cfi::{self, Rule};

const SETS_LOG: u32 = 13;
const SETS: usize = 1 << SETS_LOG;
const MASK: u64 = SETS as u64 - 1;

/// Way one of every set, then way two of every set.
static CACHE: [AtomicU64; 2 * SETS] = [const { AtomicU64::new(0) }; 2 * SETS];

const CFA_RBP: u64 = 1 << 0;
const LAST: u64 = 1 << 1;
const UNKNOWN: u64 = 1 << 2;
/// `rbp_at` (a multiple of 8, below 2^13) as it is: bits 3..12.
const RBP_AT_MASK: u64 = ((1 << 13) - 1) & !7;
/// The key's bits kept in an entry, in place.
const KEY_BITS: u64 = ((1 << 47) - 1) & !MASK;
const CFA_OFF_SHIFT: u32 = 47;
/// Keys at or above this are not looked up: one past user space, less one
/// (a return address of 0, which ends a stack, wraps to above it too).
const KEY_LIMIT: u64 = (1 << 47) - 1;

/// Largest frame (CFA − stack pointer) a walk accepts: a larger step means
/// a wrong rule, and the walk gives up rather than read far away.
const MAX_FRAME: u64 = 1 << 30;

/// The set of `key` (the index of its first way).
#[inline(always)]
fn set(key: u64) -> usize {
    (key & MASK) as usize
}

/// A rule's bits of a cache word; `None` if its offsets do not fit.
fn bits(rule: Rule) -> Option<u64> {
    let b = match rule {
        Rule::Unknown => UNKNOWN,
        Rule::Last => LAST,
        Rule::Step {
            cfa_rbp,
            cfa_off,
            rbp_at,
        } => {
            if u64::from(cfa_off) >> (64 - CFA_OFF_SHIFT) != 0
                || u64::from(rbp_at) & !RBP_AT_MASK != 0
            {
                return None;
            }
            (if cfa_rbp { CFA_RBP } else { 0 })
                | u64::from(cfa_off) << CFA_OFF_SHIFT
                | u64::from(rbp_at)
        }
    };
    Some(b)
}

/// The cache word for `rule` at `key`; `None` if it cannot be cached.
fn encode(key: u64, rule: Rule) -> Option<u64> {
    if key >= KEY_LIMIT || key & KEY_BITS == 0 {
        return None;
    }
    Some(key & KEY_BITS | bits(rule)?)
}

/// The rule for `key` (below [`KEY_LIMIT`]), from the cache or derived
/// (and cached).
#[inline(always)]
fn rule_word(key: u64) -> u64 {
    let s = set(key);
    // `s` is below SETS, so `s | SETS` is `s + SETS`, below 2 * SETS: the
    // bounds checks fold away.
    for way in [s, s | SETS] {
        if let Some(e) = CACHE.get(way).map(|c| c.load(Ordering::Relaxed)) {
            if (e ^ key) & KEY_BITS == 0 {
                return e;
            }
        }
    }
    derive(key)
}

#[cold]
#[inline(never)]
fn derive(key: u64) -> u64 {
    let epoch = EPOCH.load(Ordering::Acquire);
    let rule = cfi::rule_at(key);
    let s = set(key);
    if let (Some(e), Some(first), Some(second)) =
        (encode(key, rule), CACHE.get(s), CACHE.get(s | SETS))
    {
        // Derived from objects an unload may have replaced meanwhile: kept
        // only if the table was not emptied since (a tiny window remains
        // between this check and the store; the next unload closes it).
        if EPOCH.load(Ordering::Acquire) == epoch {
            second.store(first.load(Ordering::Relaxed), Ordering::Relaxed);
            first.store(e, Ordering::Relaxed);
        }
    }
    bits(rule).unwrap_or(UNKNOWN)
}

/// Times the table was emptied because an object was unloaded.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Empties the rule table: call after an object is unloaded.
fn forget_rules() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
    for c in &CACHE {
        c.store(0, Ordering::Relaxed);
    }
}

/// How many times the rule table was emptied.
pub fn rules_forgotten() -> u64 {
    EPOCH.load(Ordering::Relaxed)
}

/// The loader's count of objects unloaded, as last seen.
static UNLOADS_SEEN: AtomicU64 = AtomicU64::new(0);

/// Empties the rule table if an object was unloaded since the last call
/// (the loader's `dlpi_subs`). Takes the loader's lock (inside
/// [`crate::engine::loader_fence`]): for heapprof's own threads and the
/// `dlclose` wrapper, never an allocation hook.
pub fn forget_rules_if_unloaded() {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid entry; `data` is the u64 below.
        unsafe { *data.cast::<u64>() = (*info).dlpi_subs };
        1 // the count is the same in every entry: stop at the first
    }
    let _inside = crate::engine::loader_fence::enter();
    let mut subs = 0u64;
    // SAFETY: the callback only reads its entry and writes `subs`.
    unsafe { libc::dl_iterate_phdr(Some(first), (&mut subs as *mut u64).cast()) };
    if UNLOADS_SEEN.swap(subs, Ordering::Relaxed) != subs {
        forget_rules();
    }
}

/// Whether walks can run (glibc has `_dl_find_object`; x86-64).
pub fn available() -> bool {
    cfg!(target_arch = "x86_64") && cfi::loaded()
}

/// Walks the stack from the caller's frame (this is inlined into it): its
/// code addresses are the caller's own (where this was inlined), then
/// return addresses outward. Leaves out the first `skip`, writes up to
/// `out.len()` of the rest (never a null one) and returns how many; `None`
/// if a frame has no rule (a full unwinder must do it).
#[inline(always)]
#[cfg(target_arch = "x86_64")]
pub fn walk(out: &mut [MaybeUninit<u64>], skip: usize) -> Option<usize> {
    let (pc, sp, bp): (u64, u64, u64);
    // SAFETY: reads the instruction pointer and two registers; no memory,
    // no stack use, flags untouched.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    walk_from(out, skip, pc, sp, bp)
}

#[inline(always)]
#[cfg(target_arch = "x86_64")]
fn walk_from(
    out: &mut [MaybeUninit<u64>],
    skip: usize,
    pc: u64,
    sp: u64,
    bp: u64,
) -> Option<usize> {
    // The first frame's address is exact; a return address's call is the
    // instruction before it.
    let mut f = Frame { ip: pc, sp, bp, key: pc };
    // The frames left out: walked, not written.
    for _ in 0..skip {
        match f.step() {
            Step::Caller => {}
            Step::End => return Some(0),
            Step::Unknown => return None,
        }
    }
    let range = out.as_mut_ptr_range();
    let (start, end) = (range.start.cast::<u64>(), range.end.cast::<u64>());
    let mut p = start;
    let written = |p: *mut u64| {
        // SAFETY: `p` only moves forward from `start` within `out`.
        unsafe { p.offset_from(start) as usize }
    };
    while p != end {
        match f.cached_steps(&mut p, end) {
            Exit::Full => break,
            Exit::NoCaller if f.ip == 0 => return Some(written(p)),
            Exit::NoCaller => return None,
            // The frame is written; `step` finds or derives its rule.
            Exit::Missed | Exit::Stopped => match f.step() {
                Step::Caller => {}
                Step::End => return Some(written(p)),
                Step::Unknown => return None,
            },
        }
    }
    Some(written(p))
}

/// Why [`Frame::cached_steps`] stopped.
#[cfg(target_arch = "x86_64")]
enum Exit {
    /// The output is full.
    Full,
    /// The return address just read is 0 (the stack ends) or outside user
    /// space (no caller to follow).
    NoCaller,
    /// No rule is cached for this frame's key (written, not stepped).
    Missed,
    /// The frame's rule ends the walk, or gives a CFA no caller can have
    /// (written, not stepped).
    Stopped,
}

// The constants written into the loop below.
const _: () = assert!(
    MASK == 0x1fff
        && SETS * 8 == 0x10000
        && CFA_RBP == 1
        && CFA_OFF_SHIFT == 47
        && RBP_AT_MASK == 0x1ff8
        && MAX_FRAME == 0x4000_0000
        && KEY_LIMIT == (1 << 47) - 1
);

/// Where a walk is: a frame's code address, the registers it was entered
/// with, and the address its rule is looked up by.
#[cfg(target_arch = "x86_64")]
struct Frame {
    ip: u64,
    sp: u64,
    bp: u64,
    key: u64,
}

/// What a step found.
#[cfg(target_arch = "x86_64")]
enum Step {
    /// The frame is now its caller.
    Caller,
    /// The stack ends here.
    End,
    /// No rule: a full unwinder must do this stack.
    Unknown,
}

#[cfg(target_arch = "x86_64")]
impl Frame {
    /// Writes this frame's address at `*p` and steps to its caller, again
    /// and again while a step is cached for the frame and `*p` has not
    /// reached `end` (which it must not be at on entry), as
    /// [`step`](Self::step) would, which takes any frame this stops at.
    /// The loop is written out by hand: the compiler's version kept two
    /// counters and reloaded two constants a frame (the README's figures).
    /// A frame whose CFA is `sp` plus a cached offset (below 2^17) needs no
    /// bounds check but a nonzero offset, and that check also stops at the
    /// rules that end a walk (offset 0): no flag is tested.
    #[inline(always)]
    fn cached_steps(&mut self, p: &mut *mut u64, end: *mut u64) -> Exit {
        let code: u64;
        // SAFETY: writes go to `*p ..end` only, one word a frame, and `*p`
        // is below `end` at each write (checked on entry by the caller and
        // before each further write). Reads: the rule table (in bounds: a
        // set is below 2^13, a way-2 index below 2^14), and the return
        // address and saved rbp at CFA − 8 and CFA − rbp_at of the frame's
        // CFI, in this thread's stack just above the frame: a CFA is `sp`
        // plus a nonzero offset below 2^17, or from `rbp` and checked to lie
        // within 2^30 above `sp` — the same reads and checks as `step`.
        // No stack use; flags clobbered.
        unsafe {
            core::arch::asm!(
                "2:",
                "mov qword ptr [{p}], {ip}",
                "add {p}, 8",
                // The first way: a step if the key's bits match.
                "mov {t:e}, {key:e}",
                "and {t:e}, 0x1fff",
                "mov {e}, qword ptr [{cache} + {t}*8]",
                "mov {cfa}, {e}",
                "xor {cfa}, {key}",
                "test {cfa}, {kb}",
                "jnz 5f",
                "3:",
                "test {e:l}, 1",
                "jnz 6f",
                // CFA = sp + offset.
                "mov {cfa}, {e}",
                "shr {cfa}, 47",
                "jz 8f",
                "add {cfa}, {sp}",
                "4:",
                "mov {ip}, qword ptr [{cfa} - 8]",
                "and {e:e}, 0x1ff8",
                "jz 7f",
                "neg {e}",
                "mov {bp}, qword ptr [{cfa} + {e}]",
                "7:",
                "mov {sp}, {cfa}",
                "lea {key}, [{ip} - 1]",
                "cmp {key}, {limit}",
                "jae 9f",
                "cmp {p}, {end}",
                "jne 2b",
                "xor {end:e}, {end:e}",
                "jmp 22f",
                // The second way.
                "5:",
                "mov {e}, qword ptr [{cache} + {t}*8 + 0x10000]",
                "mov {cfa}, {e}",
                "xor {cfa}, {key}",
                "test {cfa}, {kb}",
                "jz 3b",
                "mov {end:e}, 2",
                "jmp 22f",
                // CFA = rbp + offset, within MAX_FRAME above sp.
                "6:",
                "mov {cfa}, {e}",
                "shr {cfa}, 47",
                "add {cfa}, {bp}",
                "lea {t}, [{cfa} - 1]",
                "sub {t}, {sp}",
                "cmp {t}, 0x40000000",
                "jb 4b",
                "8:",
                "mov {end:e}, 3",
                "jmp 22f",
                "9:",
                "mov {end:e}, 1",
                "22:",
                p = inout(reg) *p,
                ip = inout(reg) self.ip,
                sp = inout(reg) self.sp,
                bp = inout(reg) self.bp,
                key = inout(reg) self.key,
                end = inout(reg) end => code,
                cache = in(reg) CACHE.as_ptr(),
                kb = in(reg) KEY_BITS,
                limit = in(reg) KEY_LIMIT,
                e = out(reg) _,
                t = out(reg) _,
                cfa = out(reg) _,
                options(nostack),
            );
        }
        match code {
            0 => Exit::Full,
            1 => Exit::NoCaller,
            2 => Exit::Missed,
            _ => Exit::Stopped,
        }
    }

    /// Steps to the caller.
    #[inline(always)]
    fn step(&mut self) -> Step {
        let e = rule_word(self.key);
        if e & (UNKNOWN | LAST) != 0 {
            return if e & LAST != 0 { Step::End } else { Step::Unknown };
        }
        let base = if e & CFA_RBP != 0 { self.bp } else { self.sp };
        let cfa = base.wrapping_add(e >> CFA_OFF_SHIFT);
        // The stack grows down: a caller's frame is above, and near;
        // anything else is a rule that does not hold here.
        if cfa.wrapping_sub(self.sp).wrapping_sub(1) >= MAX_FRAME {
            return Step::Unknown;
        }
        let rbp_at = e & RBP_AT_MASK;
        // SAFETY: by the frame's CFI (exact, see the module doc), CFA − 8
        // holds its return address and CFA − rbp_at the caller's rbp, both in
        // this thread's stack, above the current frame (checked: cfa > sp).
        unsafe {
            self.ip = (cfa.wrapping_sub(8) as *const u64).read_unaligned();
            if rbp_at != 0 {
                self.bp = (cfa.wrapping_sub(rbp_at) as *const u64).read_unaligned();
            }
        }
        self.sp = cfa;
        self.key = self.ip.wrapping_sub(1);
        // One compare for both: a return address of 0 ends the stack; one
        // outside user space is no rule's to follow.
        if self.key >= KEY_LIMIT {
            if self.ip == 0 {
                Step::End
            } else {
                Step::Unknown
            }
        } else {
            Step::Caller
        }
    }
}

/// Not on this architecture: every capture takes the full unwinders.
#[inline(always)]
#[cfg(not(target_arch = "x86_64"))]
pub fn walk(_out: &mut [MaybeUninit<u64>], _skip: usize) -> Option<usize> {
    None
}

#[cfg(all(test, target_arch = "x86_64"))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    /// Tests that empty the rule table or read it back take turns.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn an_unload_empties_the_rule_table() {
        let _turn = SERIAL.lock();
        assert!(cfi::load());
        forget_rules_if_unloaded();
        // A rule cached, so there is something to forget.
        let key = an_unload_empties_the_rule_table as *const () as u64 + 1;
        rule_word(key);
        let before = rules_forgotten();
        // An object this process has not loaded (glibc's, always there),
        // loaded and unloaded: the loader's unload count moves.
        // SAFETY: dlopen/dlclose of a plain library, NUL-terminated name.
        unsafe {
            let h = libc::dlopen(c"libresolv.so.2".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            assert!(!h.is_null());
            assert_eq!(libc::dlclose(h), 0);
        }
        forget_rules_if_unloaded();
        assert!(rules_forgotten() > before);
        for way in [set(key), set(key) + SETS] {
            let e = CACHE[way].load(Ordering::Relaxed);
            assert_ne!(e & KEY_BITS, key & KEY_BITS, "the rule is gone");
        }
    }

    #[test]
    fn two_keys_of_one_set_both_stay() {
        let _turn = SERIAL.lock();
        assert!(cfi::load());
        // Two return addresses in this function's code, one set apart.
        let a = two_keys_of_one_set_both_stay as *const () as u64 + 1;
        let b = a + 2 * SETS as u64;
        assert_eq!(set(a), set(b));
        assert_ne!(a, b);
        rule_word(a);
        rule_word(b);
        let (first, second) = (CACHE[set(a)].load(Ordering::Relaxed), CACHE[set(a) + SETS].load(Ordering::Relaxed));
        assert_eq!(first & KEY_BITS, b & KEY_BITS, "the rule derived last first");
        assert_eq!(second & KEY_BITS, a & KEY_BITS, "the one before second");
    }

    #[test]
    fn a_return_address_outside_user_space_is_no_caller() {
        let _turn = SERIAL.lock();
        // A rule put in the table by hand for an address that is no code:
        // CFA = sp + 16, the return address just below it.
        let key = 0x1234_5678_9000u64;
        let rule = Rule::Step {
            cfa_rbp: false,
            cfa_off: 16,
            rbp_at: 0,
        };
        CACHE[set(key)].store(encode(key, rule).unwrap(), Ordering::Relaxed);
        for (ret, want) in [(1u64 << 47 | 0x10, "unknown"), (0, "end"), (key + 0x41, "caller")] {
            let stack = [0u64, ret];
            let sp = stack.as_ptr() as u64;
            let mut f = Frame { ip: key + 1, sp, bp: 0, key };
            let got = match f.step() {
                Step::Caller => "caller",
                Step::End => "end",
                Step::Unknown => "unknown",
            };
            assert_eq!(got, want, "return address {ret:#x}");
            if want == "caller" {
                assert_eq!((f.ip, f.sp, f.key), (ret, sp + 16, ret - 1));
            }
        }
        forget_rules();
    }

    /// A walk over a stack made by hand, with rules put in the table by
    /// hand for addresses that are no code: every way the hot loop ends,
    /// against what the frames say.
    #[test]
    fn a_walk_over_made_frames_follows_their_rules() {
        let _turn = SERIAL.lock();
        let sp_rule = |cfa_off, rbp_at| Rule::Step {
            cfa_rbp: false,
            cfa_off,
            rbp_at,
        };
        let (a, b, c, d) = (0x1234_5678_9000u64, 0x1234_5679_a010, 0x1234_567a_b020, 0x1234_567b_c030);
        let put = |key: u64, rule: Rule, way: usize| {
            CACHE[set(key) + way * SETS].store(encode(key, rule).unwrap(), Ordering::Relaxed);
        };
        let walk_made = |end_word: u64, d_rule: Option<Rule>, room: usize| {
            forget_rules();
            // a: CFA = sp + 16. b: CFA = sp + 24, rbp saved at CFA − 16,
            // cached in the second way behind another key of its set. c:
            // CFA = rbp + 16, rbp saved at CFA − 16. d: as given.
            put(a, sp_rule(16, 0), 0);
            put(b, sp_rule(24, 16), 1);
            put(b + 2 * SETS as u64, sp_rule(8, 0), 0);
            put(
                c,
                Rule::Step {
                    cfa_rbp: true,
                    cfa_off: 16,
                    rbp_at: 16,
                },
                0,
            );
            if let Some(r) = d_rule {
                put(d, r, 0);
            }
            let mut stack = [0u64; 12];
            let base = stack.as_ptr() as u64;
            let at = move |i: usize| base + 8 * i as u64;
            let frame_c_bp = at(8);
            stack[1] = b + 1;
            stack[3] = frame_c_bp;
            stack[4] = c + 1;
            stack[8] = 0x5eed;
            stack[9] = d + 1;
            stack[10] = end_word;
            // The walk reads the words through their addresses.
            std::hint::black_box(&mut stack);
            let mut out = [MaybeUninit::<u64>::uninit(); 8];
            let n = walk_from(&mut out[..room], 0, a, at(0), 0);
            // SAFETY: the walk initialised the first n.
            let got = n.map(|n| out[..n].iter().map(|w| unsafe { w.assume_init() }).collect::<Vec<_>>());
            forget_rules();
            got
        };
        let full = vec![a, b + 1, c + 1, d + 1];
        // d: CFA = sp + 8, its return address the stack's end.
        assert_eq!(walk_made(0, Some(sp_rule(8, 0)), 8), Some(full.clone()));
        assert_eq!(walk_made(0, Some(sp_rule(8, 0)), 2), Some(full[..2].to_vec()), "out full");
        assert_eq!(walk_made(0, Some(sp_rule(8, 0)), 4), Some(full.clone()), "full at the end");
        assert_eq!(walk_made(1 << 47 | 0x10, Some(sp_rule(8, 0)), 8), None, "kernel address");
        assert_eq!(walk_made(0, Some(Rule::Last), 8), Some(full.clone()), "outermost frame");
        assert_eq!(walk_made(0, Some(Rule::Unknown), 8), None, "no rule");
        // Not cached: derived, and no code is there.
        assert_eq!(walk_made(0, None, 8), None, "no object");
        // CFA = rbp + 16 with rbp far below sp: no caller is there.
        let far = Rule::Step {
            cfa_rbp: true,
            cfa_off: 16,
            rbp_at: 0,
        };
        let (mut out, sp) = ([MaybeUninit::<u64>::uninit(); 4], 1u64 << 40);
        forget_rules();
        put(a, far, 0);
        assert_eq!(walk_from(&mut out, 0, a, sp, 8), None, "rbp below sp");
        forget_rules();
    }

    #[test]
    fn encoding_keeps_every_field_and_the_key() {
        let key = 0x7f12_3456_789a;
        let rule = Rule::Step {
            cfa_rbp: true,
            cfa_off: 0x1_2340,
            rbp_at: 16,
        };
        let e = encode(key, rule).unwrap();
        assert_eq!(e & KEY_BITS, key & KEY_BITS);
        assert_eq!(e >> CFA_OFF_SHIFT, 0x1_2340);
        assert_eq!(e & RBP_AT_MASK, 16);
        assert!(e & CFA_RBP != 0 && e & (UNKNOWN | LAST) == 0);
        // The set and the bits kept give the key back: no other key of the
        // user space matches.
        assert_eq!(set(key) as u64 | (e & KEY_BITS), key);
        assert_eq!(encode(1 << 12, rule), None, "would match an empty entry");
        assert_eq!(encode(1 << 47, rule), None);
        assert_eq!(
            encode(
                key,
                Rule::Step {
                    cfa_rbp: false,
                    cfa_off: 1 << 17,
                    rbp_at: 0
                }
            ),
            None
        );
    }

    /// The walk's frames and libgcc's full unwind, both from this frame.
    #[inline(never)]
    fn own_walk() -> (Vec<u64>, Vec<u64>) {
        let mut out = [MaybeUninit::<u64>::uninit(); 256];
        let n = std::hint::black_box(walk(&mut out, 0)).expect("every frame has a rule");
        // SAFETY: the walk initialised the first n.
        let walked = out[..n]
            .iter()
            .map(|f| unsafe { f.assume_init() })
            .collect();
        let mut full = Vec::new();
        backtrace::trace(|f| {
            full.push(f.ip() as u64);
            // A null return address ends the stack (libgcc reports it).
            f.ip() as u64 != 0
        });
        if full.last() == Some(&0) {
            full.pop();
        }
        (walked, full)
    }

    #[inline(never)]
    fn recurse(depth: usize) -> (Vec<u64>, Vec<u64>) {
        if depth == 0 {
            return own_walk();
        }
        let r = recurse(std::hint::black_box(depth - 1));
        std::hint::black_box(r)
    }

    #[test]
    fn a_walk_equals_a_full_unwind_up_to_the_thread_start() {
        assert!(cfi::load());
        for _ in 0..2 {
            // The second time from the cache.
            let (walked, full) = recurse(40);
            // Past its own frame (an address in own_walk, where the walk
            // was inlined; libgcc's first frames are its own and the
            // backtrace crate's), the walk is the full unwind's tail, up to
            // the thread's start.
            let tail = &walked[1..];
            assert!(tail.len() > 45, "{}", tail.len());
            assert!(full.ends_with(tail), "{walked:x?}\n{full:x?}");
            assert!(full.len() <= tail.len() + 8);
        }
    }
}
