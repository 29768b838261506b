//! "Any inner allocator": the rate-1 exactness holds over mimalloc too,
//! including over-aligned layouts and reallocs that move.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: heapprof::Profiler<MiMalloc> = heapprof::Profiler::new(MiMalloc);

fn leaf(function: &str) -> [u64; 4] {
    let mut t = [0; 4];
    for s in heapprof::tallies().iter().filter(|s| {
        s.frames
            .first()
            .is_some_and(|f| f.function.contains(function))
    }) {
        t = [
            t[0] + s.alloc_objects,
            t[1] + s.alloc_space,
            t[2] + s.inuse_objects,
            t[3] + s.inuse_space,
        ];
    }
    t
}

#[repr(align(64))]
struct Line(#[allow(dead_code)] [u8; 192]);

#[repr(align(8192))]
struct Huge(#[allow(dead_code)] [u8; 10_000]);

#[inline(never)]
fn leak_aligned() -> (usize, usize) {
    let a = Box::leak(Box::new(Line([1; 192])));
    let b = Box::leak(Box::new(Huge([2; 10_000])));
    (a as *mut Line as usize, b as *mut Huge as usize)
}

#[inline(never)]
fn moving_realloc() -> Vec<u64> {
    let mut v: Vec<u64> = Vec::with_capacity(4);
    for i in 0..100_000 {
        v.push(i);
    }
    v
}

#[inline(never)]
fn raw_realloc_keeps_contents() {
    // SAFETY: a valid layout; the block is written, reallocated (moving, as
    // it is sampled and grows past a page) and freed with matching layouts.
    unsafe {
        let l = Layout::from_size_align(100, 16).unwrap();
        let p = GLOBAL.alloc(l);
        for i in 0..100 {
            *p.add(i) = i as u8;
        }
        let q = GLOBAL.realloc(p, l, 50_000);
        for i in 0..100 {
            assert_eq!(*q.add(i), i as u8);
        }
        GLOBAL.dealloc(q, Layout::from_size_align(50_000, 16).unwrap());
    }
}

#[test]
fn exact_over_mimalloc_with_alignment_and_realloc() {
    heapprof::set_rate(1);
    let (a, b) = leak_aligned();
    assert_eq!(a % 64, 0);
    assert_eq!(b % 8192, 0);
    // Huge is 10_000 bytes rounded up to its alignment: 16_384.
    assert_eq!(leaf("leak_aligned"), [2, 16_576, 2, 16_576]);

    let v = moving_realloc();
    let [allocs, bytes, live, live_bytes] = leaf("moving_realloc");
    assert_eq!((live, live_bytes), (1, 131_072 * 8));
    // Capacity doubles from 4 to 131072 elements: 16 allocations.
    assert_eq!(allocs, 16);
    assert_eq!(bytes, (2..=17).map(|k| 8u64 << k).sum::<u64>());
    assert_eq!(v.iter().sum::<u64>(), 99_999 * 100_000 / 2);
    drop(black_box(v));
    assert_eq!(leaf("moving_realloc")[2..], [0, 0]);

    raw_realloc_keeps_contents();
    assert_eq!(leaf("raw_realloc_keeps_contents"), [2, 50_100, 0, 0]);
}
