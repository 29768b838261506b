//! Unbiasing: what a sample stands for.
//!
//! An allocation of `s` bytes is sampled with probability
//! `p = 1 - exp(-s/rate)` (see [`crate::engine::sampler`]), so each sample stands for
//! `1/p` allocations and `s/p` bytes; the sum over samples is then an
//! unbiased estimate of the true totals. Following Go's `scaleHeapSample`,
//! the factor is applied when a profile is written, to the counts of a bucket
//! of samples of one stack *and one size*: keying buckets on size keeps the
//! estimate unbiased when one stack allocates many sizes (an average size
//! would not be). Values are truncated toward zero, as Go does. At
//! `rate <= 1` nothing is scaled, so rate-1 profiles are exact.

/// Scales `count` samples totalling `bytes` taken at `rate` to the estimated
/// (objects, bytes) they stand for.
pub fn scale_heap_sample(count: u64, bytes: u64, rate: u64) -> (u64, u64) {
    if count == 0 || bytes == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count, bytes);
    }
    let avg = bytes as f64 / count as f64;
    // Exactly Go's arithmetic, so truncation agrees with its profiles.
    let scale = 1.0 / (1.0 - (-avg / rate as f64).exp());
    ((count as f64 * scale) as u64, (bytes as f64 * scale) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_test_vectors() {
        // From Go's runtime/pprof heap profile tests at rate 524288.
        assert_eq!(scale_heap_sample(4, 4096, 524288), (2050, 2099200));
        assert_eq!(scale_heap_sample(3, 3072, 524288), (1537, 1574400));
        assert_eq!(scale_heap_sample(1, 524288, 524288), (1, 829411));
    }

    #[test]
    fn rate_one_is_exact_and_empty_is_zero() {
        assert_eq!(scale_heap_sample(7, 700, 1), (7, 700));
        assert_eq!(scale_heap_sample(0, 0, 524288), (0, 0));
    }
}
