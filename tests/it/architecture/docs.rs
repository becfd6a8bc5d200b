//! ARCHITECTURE.md stays true: every path it names in backticks exists, and every source file of the project's
//! own code falls under one of its entries.
//!
//! A code span is a path when it contains `/` or ends in `.rs`, `.md` or `.toml`, and is not an absolute path,
//! a URL, a placeholder (`<target>`) or a setting. A path is read within its section: a `###` heading that names
//! a path in backticks is the base of the names below it (`secret.rs` under `crates/token-model` is any
//! `secret.rs` below that directory, `dbus/args.rs` under `daemon/` any `dbus/args.rs` below it); elsewhere a
//! name is looked for in the whole repository. `*` in a name matches any characters. An entry covers the files
//! it names and, when it is a directory, the files below it.

use std::collections::BTreeSet;

use super::{own_sources, workspace_root};

/// A path ARCHITECTURE.md names: where, the directory it is read in (`""` for the root) and the name.
#[derive(Debug, PartialEq, Eq)]
struct Named {
    /// Line number in the document.
    line: usize,
    /// The section's base directory.
    base: String,
    /// The path as written, without a trailing `/`.
    path: String,
}

/// Whether a code span reads as a path in the repository.
fn looks_like_path(span: &str) -> bool {
    let path_like = span.contains('/') || [".rs", ".md", ".toml"].iter().any(|ext| span.ends_with(ext));
    let not_a_path = span.starts_with('/')
        || span.contains("://")
        || span.contains(['<', '>', ' ', '=', ':', '|', '(', '{'])
        || (span.starts_with('.') && !span.starts_with(".cargo/") && !span.starts_with(".ci/"));
    path_like && !not_a_path
}

/// Every path named in backticks outside fenced code blocks, with the base its section gives it.
fn named_paths(markdown: &str) -> Vec<Named> {
    let mut named = Vec::new();
    let (mut base, mut fenced) = (String::new(), false);
    for (number, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let spans: Vec<&str> = line.split('`').skip(1).step_by(2).collect();
        if line.starts_with("## ") {
            base.clear();
        } else if line.starts_with("### ") {
            base = spans.first().filter(|s| looks_like_path(s)).map_or("", |s| s.trim_end_matches('/')).to_owned();
        }
        for span in spans.into_iter().filter(|s| looks_like_path(s)) {
            named.push(Named { line: number + 1, base: base.clone(), path: span.trim_end_matches('/').to_owned() });
        }
    }
    named
}

/// Whether the path components `name` (with `*` matching any characters within one component) end `path`.
fn ends_with(path: &str, name: &str) -> bool {
    let (path, name): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), name.split('/').collect());
    name.len() <= path.len() && path[path.len() - name.len()..].iter().zip(&name).all(|(p, n)| component_matches(p, n))
}

/// Whether one path component matches a pattern with at most one `*`.
fn component_matches(component: &str, pattern: &str) -> bool {
    match pattern.split_once('*') {
        Some((head, tail)) => {
            component.len() >= head.len() + tail.len() && component.starts_with(head) && component.ends_with(tail)
        }
        None => component == pattern,
    }
}

/// The files and directories (each directory of a file) of `files`, which are paths relative to the root.
fn files_and_dirs(files: &[String]) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for file in files {
        let mut path = file.as_str();
        all.insert(path.to_owned());
        while let Some((dir, _)) = path.rsplit_once('/') {
            all.insert(dir.to_owned());
            path = dir;
        }
    }
    all
}

/// The existing paths that `named` names: the path itself from the root, or any path below its base ending in it.
fn resolve<'a>(named: &Named, existing: &'a BTreeSet<String>) -> Vec<&'a str> {
    existing
        .iter()
        .filter(|path| {
            *path == &named.path
                || (named.base.is_empty() || path.starts_with(&format!("{}/", named.base)))
                    && ends_with(path, &named.path)
        })
        .map(String::as_str)
        .collect()
}

/// What is untrue in `markdown` (ARCHITECTURE.md) of a repository holding `files`: paths that do not exist,
/// and `sources` under no entry.
fn check_docs(markdown: &str, files: &[String], sources: &[String]) -> Vec<String> {
    let existing = files_and_dirs(files);
    let mut problems = Vec::new();
    let mut entries = BTreeSet::new();
    for named in named_paths(markdown) {
        let found = resolve(&named, &existing);
        if found.is_empty() {
            let within = if named.base.is_empty() { String::new() } else { format!(" (read under `{}`)", named.base) };
            problems.push(format!(
                "ARCHITECTURE.md:{} names `{}`{within}, which does not exist: correct the path or the text",
                named.line, named.path
            ));
        }
        entries.extend(found);
    }
    for source in sources {
        let covered = entries.iter().any(|entry| source == entry || source.starts_with(&format!("{entry}/")));
        if !covered {
            problems.push(format!("{source} falls under no entry of ARCHITECTURE.md: name it or its directory"));
        }
    }
    problems
}

/// Every file in the repository (relative to the root), build output and version control aside.
fn repository_files(dir: &std::path::Path, root: &std::path::Path, files: &mut Vec<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if path.is_dir() {
            if name != ".git" && name != "target" {
                repository_files(&path, root, files);
            }
        } else {
            files.push(path.strip_prefix(root).expect("under the root").display().to_string());
        }
    }
}

#[test]
fn architecture_md_names_only_what_exists_and_covers_every_source_file() {
    let root = workspace_root();
    let markdown = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md beside README.md");
    let mut files = Vec::new();
    repository_files(&root, &root, &mut files);
    let sources = own_sources(&root);
    assert!(sources.len() > 50, "too few sources found: {sources:?}");
    let problems = check_docs(&markdown, &files, &sources);
    assert!(problems.is_empty(), "ARCHITECTURE.md is out of date:\n- {}", problems.join("\n- "));
}

/// The repository of the fixtures below.
fn fixture_files() -> Vec<String> {
    ["crates/a/src/lib.rs", "crates/a/src/plan.rs", "crates/a/tests/sim.rs", "daemon/src/dbus/args.rs", "README.md"]
        .map(str::to_owned)
        .to_vec()
}

#[test]
fn a_named_path_must_exist_within_its_section() {
    let markdown = "# A\n\n## Codemap\n\n### `crates/a`: pure\n- `plan.rs`: plans; `tests/sim.rs`; `args.rs`\n\
                    ```\n`gone.rs` in a diagram\n```\n\
                    ### `daemon/`\n- `dbus/args.rs`, `e_*.rs`, `/proc/self/status`, `http://x/y`, `<t>/x/`\n\
                    ## Invariants\n- `README.md`, `plan.rs`, `tracing/level`, `State = x.rs`\n";
    let problems = check_docs(markdown, &fixture_files(), &[]);
    assert_eq!(
        problems,
        [
            "ARCHITECTURE.md:6 names `args.rs` (read under `crates/a`), which does not exist: correct the path or \
             the text",
            "ARCHITECTURE.md:11 names `e_*.rs` (read under `daemon`), which does not exist: correct the path or the \
             text",
            "ARCHITECTURE.md:13 names `tracing/level`, which does not exist: correct the path or the text",
        ]
    );
}

#[test]
fn every_source_falls_under_an_entry() {
    let sources = ["crates/a/src/plan.rs", "crates/a/tests/sim.rs", "daemon/src/dbus/args.rs"].map(str::to_owned);
    let markdown = "### `crates/a/src`\n- `plan.rs`\n\n## Invariants\n- `dbus/args.rs`\n";
    let problems = check_docs(markdown, &fixture_files(), &sources);
    assert_eq!(problems, ["crates/a/tests/sim.rs falls under no entry of ARCHITECTURE.md: name it or its directory"]);
    let whole = "### `crates/a`\n\n### `daemon/`\n";
    assert!(check_docs(whole, &fixture_files(), &sources).is_empty(), "a directory covers what is below it");
    assert!(ends_with("tests/it/e2e_clock.rs", "it/e2e_*.rs") && !ends_with("tests/e2e.rs", "it/e2e*.rs"));
}
