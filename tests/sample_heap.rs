//! The Rust way in serves sampled objects from heapprof's sample heap: every
//! `Layout` alignment, zeroing of reused memory, `realloc` into and out of
//! the sample heap with contents kept, and exact accounting throughout.
//! (The preload library's side is in tests/preload.rs.)

use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout, System};

use heapprof::engine::owns;
use heapprof::Profiler;

#[global_allocator]
static GLOBAL: Profiler<System> = Profiler::new(System);

/// The tests change the process-wide rate: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fill(p: *mut u8, n: usize, seed: u8) {
    for i in 0..n {
        // SAFETY: the caller passes a live block of at least `n` bytes.
        unsafe { *p.add(i) = seed.wrapping_add((i % 251) as u8) };
    }
}

fn holds(p: *const u8, n: usize, seed: u8) -> bool {
    // SAFETY: as in fill.
    (0..n).all(|i| unsafe { *p.add(i) } == seed.wrapping_add((i % 251) as u8))
}

#[test]
fn every_layout_alignment_is_served_by_the_sample_heap_zeroed_when_asked() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    heapprof::set_rate(1);
    let mut live = Vec::new();
    for shift in 0..=21 {
        let align = 1usize << shift;
        for size in [1, 7, 100, 4096, 20_000, 100_000] {
            let layout = Layout::from_size_align(size, align).unwrap();
            for round in 0..2 {
                // SAFETY: nonzero size.
                let p = unsafe { alloc_zeroed(layout) };
                assert!(!p.is_null());
                assert!(owns(p), "align {align} size {size}: not a sample");
                assert_eq!(p as usize % align, 0, "align {align} size {size}");
                // SAFETY: `size` bytes just allocated.
                let zero = unsafe { std::slice::from_raw_parts(p, size) };
                assert!(zero.iter().all(|&b| b == 0), "align {align} size {size}");
                fill(p, size, 0xC3);
                if round == 0 {
                    // Dirty memory goes back for the next round to reuse.
                    // SAFETY: allocated above with `layout`.
                    unsafe { dealloc(p, layout) };
                } else {
                    live.push((p, layout));
                }
            }
        }
    }
    for (p, layout) in live {
        assert!(holds(p, layout.size(), 0xC3));
        // SAFETY: allocated above with `layout`.
        unsafe { dealloc(p, layout) };
    }
    heapprof::set_rate(heapprof::control::config::DEFAULT_RATE);
}

#[test]
fn realloc_moves_into_and_out_of_the_sample_heap_keeping_contents() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let layout = |n| Layout::from_size_align(n, 8).unwrap();
    heapprof::set_rate(0);
    // SAFETY: nonzero sizes; each block is used only while live, with the
    // layout it has, and freed once.
    unsafe {
        let p = alloc(layout(300));
        assert!(!owns(p), "sampling is off");
        fill(p, 300, 1);
        // In: an unsampled block reallocated while every allocation is
        // sampled becomes a sample.
        heapprof::set_rate(1);
        let q = realloc(p, layout(300), 50_000);
        assert!(owns(q));
        assert!(holds(q, 300, 1));
        fill(q, 50_000, 2);
        // Within: shrinking a large sample to a small one moves it.
        let r = realloc(q, layout(50_000), 40);
        assert!(owns(r) && r != q);
        assert!(holds(r, 40, 2));
        // In place: a sample that still fits stays.
        let s = realloc(r, layout(40), 44);
        assert_eq!(s, r);
        assert!(holds(s, 40, 2));
        fill(s, 44, 3);
        // Unsampled at its new size, a small former sample goes back to the
        // inner allocator; a large one stays in the sample heap (no copies
        // back and forth), but is no sample any more.
        heapprof::set_rate(0);
        let u = realloc(s, layout(44), 5000);
        assert!(!owns(u));
        assert!(holds(u, 44, 3));
        heapprof::set_rate(1);
        let v = realloc(u, layout(5000), 100_000);
        assert!(owns(v));
        assert!(holds(v, 44, 3));
        heapprof::set_rate(0);
        let t = realloc(v, layout(100_000), 200_000);
        assert!(owns(t));
        assert!(holds(t, 44, 3));
        let inuse = |f: &str| -> u64 {
            heapprof::tallies()
                .iter()
                .filter(|s| s.frames.iter().any(|fr| fr.function.contains(f)))
                .map(|s| s.inuse_objects)
                .sum()
        };
        assert_eq!(inuse("realloc_moves_into_and_out"), 0, "freed as a sample");
        dealloc(t, layout(200_000));
    }
    heapprof::set_rate(heapprof::control::config::DEFAULT_RATE);
}

#[inline(never)]
fn keep_aligned(keep: &mut Vec<Box<Aligned>>) {
    for _ in 0..9 {
        keep.push(Box::new(Aligned([5; 3000])));
    }
}

#[repr(align(65536))]
struct Aligned([u8; 3000]);

#[test]
fn over_aligned_samples_are_exact_at_rate_1() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    heapprof::set_rate(1);
    let mut keep = Vec::with_capacity(16);
    keep_aligned(&mut keep);
    for b in &keep {
        assert_eq!(b.0[2999], 5);
        assert!(owns(&**b as *const Aligned as *const u8));
        assert_eq!(&**b as *const Aligned as usize % 65536, 0);
    }
    let t = heapprof::tallies();
    let mine: Vec<_> = t
        .iter()
        .filter(|s| {
            s.frames
                .first()
                .is_some_and(|f| f.function.contains("keep_aligned"))
        })
        .collect();
    let size = std::mem::size_of::<Aligned>() as u64;
    let objects: u64 = mine.iter().map(|s| s.inuse_objects).sum();
    let bytes: u64 = mine.iter().map(|s| s.inuse_space).sum();
    assert_eq!((objects, bytes), (9, 9 * size));
    drop(keep);
    heapprof::set_rate(heapprof::control::config::DEFAULT_RATE);
}
