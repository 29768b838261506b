//! `heapprof::tower::LabelLayer` (cargo feature `tower`): everything a
//! request does is labelled with its route, what the service's `call` does
//! before the handler (axum's extractors) included, exactly at rate 1.
//! Runs `examples/tower_labels.rs`, built with the feature.

use std::process::Command;

#[test]
fn the_layer_labels_the_extractors_and_the_handler_exactly() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--features",
            "tower",
            "--example",
            "tower_labels",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("HEAPPROF_RATE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "extract_body route=/download 300\n\
         extract_body route=/upload 2000\n\
         handle_request route=/download 600\n\
         handle_request route=/upload 4000\n"
    );
}
