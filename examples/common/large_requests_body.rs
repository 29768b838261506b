// The body of `large_requests` and `large_requests_bare` (included).

use std::mem::MaybeUninit;

/// Grows `v` to `len` bytes the way pushes would (doubling), writing one
/// byte in 512 of what is added.
fn grow(v: &mut Vec<MaybeUninit<u8>>, len: usize) -> u64 {
    let mut sum = 0;
    while v.len() < len {
        let to = (v.capacity().max(64 << 10) * 2).min(len);
        v.reserve(to - v.len());
        let from = v.len();
        for i in (from..to).step_by(512) {
            v.spare_capacity_mut()[i - from].write(MaybeUninit::new(i as u8));
            sum += (i as u8) as u64;
        }
        // SAFETY: capacity for `to` elements was reserved, and a
        // `MaybeUninit` needs no initialisation.
        unsafe { v.set_len(to) };
    }
    sum
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let mut x: u64 = 88172645463325252;
    let mut sum = 0u64;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = (256 << 10) + (x as usize) % ((2 << 20) - (256 << 10));
        let mut v: Vec<MaybeUninit<u8>> = Vec::new();
        sum += grow(&mut v, size);
        sum += grow(&mut v, 2 * size);
        std::hint::black_box(&v);
    }
    println!("requests {n} checksum {sum}");
}
