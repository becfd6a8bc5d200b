//! Replays every committed fuzz input (`fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/`) through the
//! same check the fuzz target runs, on stable, so `cargo test` keeps every finding fixed.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file() && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    files
}

#[test]
fn every_committed_input_passes_its_check() {
    let mut failures = Vec::new();
    for &(target, check) in fuzz_checks::TARGETS {
        let corpus = fuzz_dir().join("corpus").join(target);
        let inputs = files_in(&corpus);
        assert!(
            !inputs.is_empty(),
            "the corpus {} is empty or missing: seed it (see fuzz/README.md) so this test has something to replay",
            corpus.display()
        );
        for file in inputs.iter().chain(&files_in(&fuzz_dir().join("artifacts").join(target))) {
            let data = fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            if let Err(panic) = panic::catch_unwind(|| check(&data)) {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                failures.push(format!("{target}: {}: {message}", file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} committed fuzz inputs fail their check:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_fuzz_target_has_a_check_and_a_corpus() {
    let targets = files_in(&fuzz_dir().join("fuzz_targets"));
    let mut names: Vec<String> =
        targets.iter().filter_map(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned()).collect();
    names.sort();
    let mut checked: Vec<String> = fuzz_checks::TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    checked.sort();
    assert_eq!(names, checked, "fuzz/fuzz_targets/ and fuzz_checks::TARGETS name the same targets");
}
