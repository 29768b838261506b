//! The process's executable mappings with their GNU build IDs, so a profile
//! names the objects its addresses fall in and `go tool pprof` can symbolize
//! offline (raw mode) or check binaries against the profile.
//!
//! Paths come from `/proc/self/maps`; build IDs from the loaded objects'
//! `PT_NOTE` segments, found with `dl_iterate_phdr`. A mapping's range and
//! offset are narrowed to the executable `PT_LOAD` segment inside it: the
//! kernel maps whole pages, so the mapping's offset is the segment's file
//! offset rounded down, and readers that derive the load address from the
//! offset (as `go tool pprof` does when symbolizing) would otherwise be off
//! by the rounding — a page of code — in binaries whose executable segment
//! does not start on a page boundary of the file.

/// One executable mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: String,
    /// Lower-case hex GNU build ID, or empty.
    pub build_id: String,
}

/// Executable, file-backed mappings of this process, ordered by address.
pub fn current() -> Vec<Mapping> {
    let text = crate::os::fds::read_to_string("/proc/self/maps").unwrap_or_default();
    let objects = loaded_objects();
    let mut out: Vec<Mapping> = text
        .lines()
        .filter_map(parse_line)
        .map(|mut m| {
            if let Some(o) = objects.iter().find(|o| m.start >= o.lo && m.start < o.hi) {
                m.build_id = o.build_id.clone();
                let seg = o
                    .exec_segments
                    .iter()
                    .find(|s| s.start < m.end && s.end > m.start);
                if let Some(seg) = seg {
                    let start = m.start.max(seg.start);
                    m.offset = seg.offset + (start - seg.start);
                    m.start = start;
                    m.end = m.end.min(seg.end);
                }
            }
            m
        })
        .collect();
    out.sort_by_key(|m| m.start);
    out
}

/// Mappings as bytes (for the black box, [`crate::engine::blackbox`]):
/// per mapping `start, end, offset` (u64), the path's and the build ID's
/// lengths (u32), then both, padded to 8 bytes. At most `max` bytes: the
/// mappings that do not fit are left out.
pub fn encode(maps: &[Mapping], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for m in maps {
        let n = (32 + m.path.len() + m.build_id.len()).next_multiple_of(8);
        if out.len() + n > max {
            break;
        }
        for v in [m.start, m.end, m.offset] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out.extend_from_slice(&(m.path.len() as u32).to_ne_bytes());
        out.extend_from_slice(&(m.build_id.len() as u32).to_ne_bytes());
        out.extend_from_slice(m.path.as_bytes());
        out.extend_from_slice(m.build_id.as_bytes());
        out.resize(out.len().next_multiple_of(8), 0);
    }
    out
}

/// The mappings [`encode`] wrote (as many as are whole).
pub fn decode(mut bytes: &[u8]) -> Vec<Mapping> {
    let mut out = Vec::new();
    let u64_at = |b: &[u8], i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap());
    let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap()) as usize;
    while bytes.len() >= 32 {
        let (pl, bl) = (u32_at(bytes, 24), u32_at(bytes, 28));
        let n = (32 + pl + bl).next_multiple_of(8);
        if n > bytes.len() {
            break;
        }
        out.push(Mapping {
            start: u64_at(bytes, 0),
            end: u64_at(bytes, 8),
            offset: u64_at(bytes, 16),
            path: String::from_utf8_lossy(&bytes[32..32 + pl]).into_owned(),
            build_id: String::from_utf8_lossy(&bytes[32 + pl..32 + pl + bl]).into_owned(),
        });
        bytes = &bytes[n..];
    }
    out
}

/// Parses an executable, file-backed line of `/proc/PID/maps`.
pub fn parse_line(line: &str) -> Option<Mapping> {
    let mut it = line.split_whitespace();
    let range = it.next()?;
    let perms = it.next()?;
    let offset = it.next()?;
    let _dev = it.next()?;
    let _inode = it.next()?;
    let path = it.collect::<Vec<_>>().join(" ");
    if !perms.contains('x') || !path.starts_with('/') {
        return None;
    }
    let (lo, hi) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(lo, 16).ok()?,
        end: u64::from_str_radix(hi, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path,
        build_id: String::new(),
    })
}

/// An executable `PT_LOAD` segment: loaded range and file offset.
struct Segment {
    start: u64,
    end: u64,
    offset: u64,
}

/// A loaded object: its address range, build ID and executable segments.
struct Object {
    lo: u64,
    hi: u64,
    build_id: String,
    exec_segments: Vec<Segment>,
}

fn loaded_objects() -> Vec<Object> {
    let mut out: Vec<Object> = Vec::new();
    let _inside = crate::engine::loader_fence::enter();
    // SAFETY: the callback only reads the phdr info handed to it, and `data`
    // is our `out` vector, live for the whole call.
    unsafe {
        libc::dl_iterate_phdr(Some(each_object), (&mut out as *mut Vec<Object>).cast());
    }
    out
}

unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes valid info and our `data` pointer.
    let (info, out) = unsafe { (&*info, &mut *(data as *mut Vec<Object>)) };
    let base = info.dlpi_addr;
    // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
    let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let mut o = Object {
        lo: u64::MAX,
        hi: 0,
        build_id: String::new(),
        exec_segments: Vec::new(),
    };
    for ph in phdrs {
        if ph.p_type == libc::PT_LOAD {
            let (start, end) = (base + ph.p_vaddr, base + ph.p_vaddr + ph.p_memsz);
            o.lo = o.lo.min(start);
            o.hi = o.hi.max(end);
            if ph.p_flags & libc::PF_X != 0 {
                o.exec_segments.push(Segment {
                    start,
                    end,
                    offset: ph.p_offset,
                });
            }
        } else if ph.p_type == libc::PT_NOTE && o.build_id.is_empty() {
            // SAFETY: a PT_NOTE segment of a loaded object is mapped readable.
            let notes = unsafe {
                core::slice::from_raw_parts((base + ph.p_vaddr) as *const u8, ph.p_memsz as usize)
            };
            o.build_id = find_gnu_build_id(notes).unwrap_or_default();
        }
    }
    if o.lo < o.hi {
        out.push(o);
    }
    0
}

/// Finds `NT_GNU_BUILD_ID` in a run of ELF notes.
pub fn find_gnu_build_id(mut notes: &[u8]) -> Option<String> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let align4 = |n: usize| (n + 3) & !3;
    while notes.len() >= 12 {
        let namesz = word(notes, 0)? as usize;
        let descsz = word(notes, 4)? as usize;
        let kind = word(notes, 8)?;
        let name_at = 12;
        let desc_at = name_at + align4(namesz);
        let end = desc_at + align4(descsz);
        let name = notes.get(name_at..name_at + namesz)?;
        let desc = notes.get(desc_at..desc_at + descsz)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
        }
        notes = notes.get(end..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_mappings_come_back_whole() {
        let maps = vec![
            Mapping {
                start: 0x1000,
                end: 0x2000,
                offset: 0x10,
                path: "/usr/bin/a prog".into(),
                build_id: "abcd".into(),
            },
            Mapping {
                start: 0x5000,
                end: 0x9000,
                offset: 0,
                path: "/lib/libc.so.6".into(),
                build_id: String::new(),
            },
        ];
        let bytes = encode(&maps, 4096);
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(decode(&bytes), maps);
        // What does not fit is left out, never cut.
        assert_eq!(decode(&encode(&maps, 60)), maps[..1]);
    }

    #[test]
    fn parses_maps_lines() {
        let m = parse_line("55d4c5a00000-55d4c5a21000 r-xp 00002000 fd:01 1234  /usr/bin/my prog")
            .unwrap();
        assert_eq!(m.start, 0x55d4c5a00000);
        assert_eq!(m.offset, 0x2000);
        assert_eq!(m.path, "/usr/bin/my prog");
        assert!(parse_line("7ff0-8000 rw-p 00000000 00:00 0 [heap]").is_none());
    }

    #[test]
    fn this_executable_has_a_build_id() {
        let exe = std::fs::read_link("/proc/self/exe")
            .unwrap()
            .display()
            .to_string();
        let maps = current();
        let me = maps.iter().find(|m| m.path == exe).expect("own mapping");
        assert!(me.build_id.len() >= 16, "{me:?}");
    }
}
