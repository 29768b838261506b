//! A rate set in code stays across `Config::from_env()….install()` (its own
//! test binary: the rate is process-wide).

use std::alloc::System;

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

#[test]
fn set_rate_survives_config_from_env_install() {
    assert!(std::env::var_os("HEAPPROF_RATE").is_none());
    heapprof::set_rate(1);
    let dir = std::env::temp_dir().join(format!("heapprof-rate-{}", std::process::id()));
    let config = heapprof::Config::from_env().out(dir.join("p"));
    assert_eq!(config.rate, 1);
    config.install();
    assert_eq!(heapprof::engine::rate(), 1);
    // A rate the caller sets still wins.
    heapprof::Config::from_env().rate(4096).install();
    assert_eq!(heapprof::engine::rate(), 4096);
    assert_eq!(heapprof::Config::from_env().rate, 4096);
}
