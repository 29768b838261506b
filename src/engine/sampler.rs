//! Poisson sampling over the stream of allocated bytes.
//!
//! # Model
//! Think of every byte a thread allocates as a point on a line, and pick
//! sample points on that line as a Poisson process with mean spacing `rate`
//! bytes. An allocation is sampled when at least one sample point falls inside
//! its bytes, so an allocation of `s` bytes is sampled with probability
//!
//! ```text
//! p(s) = 1 - exp(-s / rate)
//! ```
//!
//! independently of the allocations around it (the process is memoryless).
//! Each thread implements this with a countdown: the number of bytes until the
//! next sample point, drawn from an exponential distribution with mean `rate`
//! (`-ln(U) * rate`, `U` uniform in (0, 1]). An allocation of `s` bytes
//! subtracts `s`; if the countdown would reach zero the allocation is sampled
//! and a fresh countdown is drawn. Because of memorylessness the part of the
//! countdown left over inside a sampled allocation is thrown away, not carried.
//!
//! The hot path is therefore one thread-local compare and subtract; only a
//! sampled allocation reaches this module's arithmetic.
//!
//! A sample of size `s` stands for `1/p(s)` allocations and `s/p(s)` bytes:
//! see [`crate::profile::scale`] for how the estimate is made unbiased at write time.
//!
//! `rate == 1` samples every allocation and nothing is scaled (exact
//! profiles); `rate == 0` turns sampling off.

/// Default mean bytes between samples, as in Go and tcmalloc.
pub const DEFAULT_RATE: u64 = 512 * 1024;

/// A small, fast generator (xorshift64*): statistical quality is ample for
/// drawing exponential intervals, and it needs no allocation or locking.
#[derive(Clone, Copy, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed; any seed (even 0) gives a usable stream.
    pub fn new(seed: u64) -> Rng {
        // splitmix64 finalizer, so nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    /// The raw state, to keep it in a `Cell<u64>`.
    pub fn state(self) -> u64 {
        self.0
    }

    /// Rebuilds a generator from [`Rng::state`].
    pub fn from_state(state: u64) -> Rng {
        Rng(if state == 0 {
            0x2545_F491_4F6C_DD1D
        } else {
            state
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1]: never 0, so `ln` is finite.
    pub fn next_open01(&mut self) -> f64 {
        // 53 random bits, shifted by one so the range is (0, 1].
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Bytes until the next sample: exponential with mean `rate`, at least 1.
pub fn next_interval(rng: &mut Rng, rate: u64) -> usize {
    let x = -rng.next_open01().ln() * rate as f64;
    // Saturate: an absurdly large draw simply means "no sample for a while".
    if x >= usize::MAX as f64 {
        usize::MAX
    } else {
        (x as usize).max(1)
    }
}

/// The probability that an allocation of `size` bytes is sampled at `rate`
/// (what the tests hold the sampler to).
#[cfg(test)]
fn sample_probability(size: u64, rate: u64) -> f64 {
    match rate {
        0 => 0.0,
        1 => 1.0,
        r => -(-(size as f64) / r as f64).exp_m1(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_have_the_requested_mean() {
        let mut rng = Rng::new(42);
        let n = 200_000;
        let rate = 524_288u64;
        let sum: f64 = (0..n).map(|_| next_interval(&mut rng, rate) as f64).sum();
        let mean = sum / n as f64;
        // Standard error of the mean is rate/sqrt(n) ~ 0.22%; allow 1%.
        assert!((mean / rate as f64 - 1.0).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn open_unit_interval_excludes_zero() {
        let mut rng = Rng::new(0);
        for _ in 0..100_000 {
            let u = rng.next_open01();
            assert!(u > 0.0 && u <= 1.0);
        }
    }

    #[test]
    fn sampling_probability_matches_the_countdown() {
        // Simulate the countdown for one size and compare the hit fraction
        // with 1 - exp(-s/rate).
        let mut rng = Rng::new(7);
        let (rate, size) = (4096u64, 1000usize);
        let mut countdown = next_interval(&mut rng, rate);
        let (mut hits, n) = (0u64, 400_000u64);
        for _ in 0..n {
            if countdown > size {
                countdown -= size;
            } else {
                hits += 1;
                countdown = next_interval(&mut rng, rate);
            }
        }
        let want = sample_probability(size as u64, rate);
        let got = hits as f64 / n as f64;
        assert!((got - want).abs() < 0.005, "got {got}, want {want}");
    }
}
