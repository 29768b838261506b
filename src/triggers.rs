//! Dump triggers (placeholder until the dumper thread lands).
use crate::config::Config;
/// Starts the triggers.
pub fn start() {}
/// Applies a configuration.
pub fn configure(_c: Config) {}
/// The configured dump prefix.
pub fn out_prefix() -> std::path::PathBuf {
    Config::from_env().out
}
