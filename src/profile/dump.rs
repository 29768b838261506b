//! Taking a profile on demand: snapshot, symbolize, encode, write.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::{mappings, output, pprof, proto, snapshot, symbolize, thread_state};

/// The current heap profile as a pprof message.
pub fn profile() -> proto::Profile {
    let _busy = thread_state::current().enter();
    let snap = snapshot::take();
    let maps = mappings::current();
    if crate::triggers::symbolize_enabled() {
        symbolize::with(|sym| pprof::build(&snap, Some(sym), &maps))
    } else {
        pprof::build(&snap, None, &maps)
    }
}

/// The current heap profile, gzipped (a `.pb.gz` file's contents).
pub fn profile_gz() -> Vec<u8> {
    let _busy = thread_state::current().enter();
    output::encode_gz(&profile())
}

/// Writes the gzipped profile to `w`.
pub fn write_profile<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    let bytes = profile_gz();
    w.write_all(&bytes)
}

/// Writes the gzipped profile to `path`, atomically.
pub fn dump_to(path: impl AsRef<Path>) -> io::Result<()> {
    let _busy = thread_state::current().enter();
    output::write_atomic(path.as_ref(), &profile_gz())
}

/// Writes the next `PREFIX.PID.SEQ.pb.gz`; returns its path.
pub fn dump_numbered(prefix: &Path) -> io::Result<PathBuf> {
    let _busy = thread_state::current().enter();
    output::write_numbered(prefix, &profile_gz())
}
