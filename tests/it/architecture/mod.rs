//! Architecture rules that CI checks, one module per kind of rule: dependency arrows between crates point one
//! way ([`crates`]), token-model stays pure and the daemon keeps clear of what would silently vanish from, or
//! bloat, the shipped binary ([`sources`]), the modules inside `att-tokend` form no cycle ([`modules`]),
//! ARCHITECTURE.md names only paths that exist and covers every source file ([`docs`]), and no source file
//! grows past 800 lines without saying why ([`length`]). Each checker is a pure function, tested on fixtures,
//! then applied to the real workspace.

mod crates;
mod docs;
mod length;
mod modules;
mod sources;

use std::path::{Path, PathBuf};

/// The workspace's root directory (the parent of `tests/`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate lives inside the workspace").to_owned()
}

/// Every `.rs` file under `dir`, recursively, appended to `files`.
fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Removes `//` comments (doc comments included) and `/* */` comments from one line; `in_block` carries an
/// open block comment over to the next line. String literals are not parsed, so text after a `//` inside a
/// string is skipped too; that can only hide code, never invent a violation.
fn strip_comments(line: &str, in_block: &mut bool) -> String {
    let mut code = String::new();
    let mut rest = line;
    loop {
        if *in_block {
            match rest.find("*/") {
                Some(end) => {
                    *in_block = false;
                    rest = &rest[end + 2..];
                }
                None => return code,
            }
        }
        let line_comment = rest.find("//");
        let block_comment = rest.find("/*");
        match (line_comment, block_comment) {
            (Some(l), Some(b)) if b < l => {
                code.push_str(&rest[..b]);
                *in_block = true;
                rest = &rest[b + 2..];
            }
            (None, Some(b)) => {
                code.push_str(&rest[..b]);
                *in_block = true;
                rest = &rest[b + 2..];
            }
            (Some(l), _) => {
                code.push_str(&rest[..l]);
                return code;
            }
            (None, None) => {
                code.push_str(rest);
                return code;
            }
        }
    }
}

/// The `.rs` files of the project's own code, relative to the workspace root and sorted: every crate's `src`,
/// `tests`, `examples` and `benches`, the daemon's, `xtask/src`, the `tests` package and the fuzz targets.
fn own_sources(root: &Path) -> Vec<String> {
    let mut dirs = vec![root.join("xtask/src"), root.join("tests"), root.join("fuzz/fuzz_targets")];
    let mut packages = vec![root.join("daemon")];
    let crates = std::fs::read_dir(root.join("crates")).unwrap_or_else(|e| panic!("cannot list crates/: {e}"));
    packages.extend(crates.map(|entry| entry.expect("list crates/").path()));
    for package in packages {
        dirs.extend(["src", "tests", "examples", "benches"].map(|dir| package.join(dir)));
    }
    let mut files = Vec::new();
    for dir in dirs.iter().filter(|dir| dir.is_dir()) {
        rust_files(dir, &mut files);
    }
    let mut names: Vec<String> =
        files.iter().map(|file| file.strip_prefix(root).expect("under the root").display().to_string()).collect();
    names.sort();
    names.dedup();
    names
}
