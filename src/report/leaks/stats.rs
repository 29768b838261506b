//! The few exact small-count statistics the leak verdicts need: binomial
//! tails, exact Poisson intervals, and a one-sided Mann–Kendall trend test.
//! All work in log space where terms could underflow, and never panic on
//! odd input (NaN in, a p-value of 1 out).

/// The standard normal upper tail `P(Z > z)`, from the complementary error
/// function (Numerical Recipes' Chebyshev fit, error < 1.2e-7).
pub fn normal_upper_tail(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// `P(X >= k)` for `X ~ Binomial(n, p)`, exact (summed in log space).
pub fn binomial_upper_tail(n: u64, k: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n || !(0.0..=1.0).contains(&p) {
        return if k > n { 0.0 } else { 1.0 };
    }
    if p == 0.0 {
        return 0.0;
    }
    if p == 1.0 {
        return 1.0;
    }
    if n > 20_000 {
        // Normal approximation with continuity correction: exact sums would
        // take O(n), and hostile profiles can claim 2^63 samples.
        let (nf, kf) = (n as f64, k as f64);
        let sd = (nf * p * (1.0 - p)).sqrt();
        return normal_upper_tail((kf - 0.5 - nf * p) / sd);
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    // ln C(n, j), built up from j = 0.
    let mut ln_choose = 0.0;
    let mut total = 0.0;
    for j in 0..=n {
        if j > 0 {
            ln_choose += ((n - j + 1) as f64).ln() - (j as f64).ln();
        }
        if j >= k {
            total += (ln_choose + j as f64 * lp + (n - j) as f64 * lq).exp();
        }
    }
    total.min(1.0)
}

/// `P(X <= k)` for `X ~ Poisson(mean)`, exact (summed in log space).
pub fn poisson_cdf(k: u64, mean: f64) -> f64 {
    if mean.is_nan() || mean <= 0.0 {
        return 1.0;
    }
    let ln_mean = mean.ln();
    let mut ln_term = -mean; // ln P(X = 0)
    let mut total = ln_term.exp();
    for j in 1..=k {
        ln_term += ln_mean - (j as f64).ln();
        total += ln_term.exp();
    }
    total.min(1.0)
}

/// The exact (Garwood) two-sided interval for a Poisson mean at confidence
/// `1 - alpha`, given `k` events: the means under which seeing `k` or more
/// (for the lower end) or `k` or fewer (the upper end) has probability
/// `alpha / 2`. Large counts use the normal approximation.
pub fn poisson_interval(k: u64, alpha: f64) -> (f64, f64) {
    let half = alpha / 2.0;
    if k > 2000 {
        let z = normal_quantile_upper(half);
        let kf = k as f64;
        return ((kf - z * kf.sqrt()).max(0.0), kf + z * kf.sqrt() + 1.0);
    }
    let solve = |target: &dyn Fn(f64) -> f64, mut lo: f64, mut hi: f64| {
        // `target` is increasing in the mean; find where it crosses 0.
        for _ in 0..50 {
            let mid = 0.5 * (lo + hi);
            if target(mid) < 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    };
    let kf = k as f64;
    let top = kf + 20.0 * (kf + 1.0).sqrt() + 20.0;
    let lower = if k == 0 {
        0.0
    } else {
        // P(X >= k | m) = 1 - P(X <= k - 1 | m) increases with m.
        solve(&|m| (1.0 - poisson_cdf(k - 1, m)) - half, 0.0, top)
    };
    // P(X <= k | m) decreases with m: solve half - P(X <= k | m) = 0.
    let upper = solve(&|m| half - poisson_cdf(k, m), 0.0, top);
    (lower, upper)
}

/// `z` with `P(Z > z) = tail`, by bisection on [`normal_upper_tail`].
fn normal_quantile_upper(tail: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if normal_upper_tail(mid) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// One-sided Mann–Kendall test for an upward trend in `xs` (in time order):
/// the p-value of `S = Σ_{i<j} sign(x_j − x_i)` under "no trend" (any order
/// of the values equally likely), by the normal approximation with the tie
/// correction and a continuity correction. Valid for counts, which tie a
/// lot; it uses only their order, never their scale. Fewer than three
/// values give 1.
pub fn mann_kendall_upward(xs: &[u64]) -> f64 {
    let n = xs.len();
    if n < 3 {
        return 1.0;
    }
    let mut s: i64 = 0;
    for i in 0..n {
        for j in i + 1..n {
            s += match xs[j].cmp(&xs[i]) {
                std::cmp::Ordering::Greater => 1,
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Equal => 0,
            };
        }
    }
    let mut sorted = xs.to_vec();
    sorted.sort_unstable();
    let tie_term: f64 = sorted
        .chunk_by(|a, b| a == b)
        .map(|g| {
            let t = g.len() as f64;
            t * (t - 1.0) * (2.0 * t + 5.0)
        })
        .sum();
    let nf = n as f64;
    let var = (nf * (nf - 1.0) * (2.0 * nf + 5.0) - tie_term) / 18.0;
    if var <= 0.0 || s <= 0 {
        return 1.0;
    }
    normal_upper_tail((s as f64 - 1.0) / var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn binomial_tails() {
        assert_eq!(binomial_upper_tail(6, 0, 0.2), 1.0);
        assert!(close(binomial_upper_tail(6, 6, 0.5), 1.0 / 64.0, 1e-12));
        // P(Bin(6, 0.2) >= 3) = 0.09888
        assert!(close(binomial_upper_tail(6, 3, 0.2), 0.098_88, 1e-5));
        assert_eq!(binomial_upper_tail(3, 4, 0.5), 0.0);
        assert!(binomial_upper_tail(100_000, 50_000, 0.2) < 1e-300);
        assert!(binomial_upper_tail(u64::MAX, 1, 0.2) > 0.99);
        let p = binomial_upper_tail(1 << 40, 1 << 39, 0.5);
        assert!((p - 0.5).abs() < 0.01, "{p}");
    }

    #[test]
    fn poisson_intervals_match_tables() {
        // Garwood 95% intervals: k = 0: (0, 3.689); k = 6: (2.202, 13.06).
        let (lo, hi) = poisson_interval(0, 0.05);
        assert!(lo == 0.0 && close(hi, 3.689, 1e-3), "{lo} {hi}");
        let (lo, hi) = poisson_interval(6, 0.05);
        assert!(
            close(lo, 2.202, 1e-3) && close(hi, 13.06, 1e-2),
            "{lo} {hi}"
        );
        let (lo, hi) = poisson_interval(1_000_000, 0.05);
        assert!(lo < 1e6 && hi > 1e6 && hi - lo < 5000.0);
        assert!(close(normal_upper_tail(1.959_964), 0.025, 1e-6));
    }

    #[test]
    fn mann_kendall() {
        assert!(mann_kendall_upward(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]) < 1e-4);
        assert_eq!(mann_kendall_upward(&[5, 4, 3, 2]), 1.0);
        assert_eq!(mann_kendall_upward(&[3, 3, 3, 3]), 1.0);
        let p = mann_kendall_upward(&[2, 0, 3, 1, 2, 0, 3, 1, 2, 1]);
        assert!(p > 0.2, "{p}");
        // Two steps among many ties is still a clear upward order.
        assert!(mann_kendall_upward(&[0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]) < 0.001);
    }
}
