//! The preload library reaches the crate only through
//! `heapprof::ffi_surface`: its interface is declared in one place, and
//! nothing else of the crate becomes its API by accident.

use std::path::Path;

#[test]
fn the_preload_library_names_the_crate_only_through_its_surface() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ffi/src");
    let mut looked = 0;
    let mut outside = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        looked += 1;
        for (i, line) in std::fs::read_to_string(&path).unwrap().lines().enumerate() {
            // Code only: comments may point at where an item is defined.
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(at) = rest.find("heapprof::") {
                rest = &rest[at + "heapprof::".len()..];
                if !rest.starts_with("ffi_surface::") {
                    outside.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(looked >= 5, "read {looked} files of {}", dir.display());
    assert!(
        outside.is_empty(),
        "ffi/ names heapprof outside heapprof::ffi_surface (add the item there):\n{}",
        outside.join("\n")
    );
}
