//! Every `HEAPPROF_*` name the sources read is a known setting: a variable
//! missing from `heapprof::control::config::VARIABLES` would be called a misspelling
//! on stderr while it works.

use std::path::Path;

fn names_in(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            names_in(&path, out);
            continue;
        }
        if path.extension().map_or(true, |e| e != "rs" && e != "c") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for part in text.split("\"HEAPPROF_").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            if part[name.len()..].starts_with('"') && !name.is_empty() {
                out.push((format!("HEAPPROF_{name}"), path.display().to_string()));
            }
        }
    }
}

#[test]
fn every_variable_the_sources_read_is_a_known_setting() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    names_in(&root.join("src"), &mut found);
    names_in(&root.join("ffi/src"), &mut found);
    assert!(
        found.len() > 10,
        "the sources name their variables: {found:?}"
    );
    let unknown: Vec<_> = found
        .iter()
        .filter(|(name, _)| !heapprof::control::config::VARIABLES.contains(&name.as_str()))
        .collect();
    assert!(unknown.is_empty(), "not in config::VARIABLES: {unknown:?}");
}
