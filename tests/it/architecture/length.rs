//! No file of the project's own code is over 800 lines unless its opening comment says why, in a sentence that
//! starts with [`MARKER`]. ARCHITECTURE.md's Testing section states the rule.

use super::{own_sources, workspace_root};

/// The most lines a source file has without a reason given.
const MAX_LINES: usize = 800;

/// The words that start the reason, in the opening comment (`//!` or `//` lines at the top), of a longer file.
const MARKER: &str = "Over 800 lines because";

/// Files over the limit that a change under way splits into modules: none. The rule ignores a listed file; one that
/// is no longer over the limit fails the test, so the list only shrinks.
const BEING_SPLIT: &[&str] = &[];

/// The comment lines (`//!` or `//`) at the very top of `text`, joined.
fn opening_comment(text: &str) -> String {
    text.lines()
        .map(str::trim_start)
        .take_while(|line| line.starts_with("//"))
        .map(|line| line.trim_start_matches('/').trim_start_matches('!').trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What breaks the rule among `files` (name, text), with `being_split` ignored (and checked to be still long).
fn check_lengths(files: &[(String, String)], being_split: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, text) in files {
        let lines = text.lines().count();
        if lines > MAX_LINES && !being_split.contains(&name.as_str()) && !opening_comment(text).contains(MARKER) {
            problems.push(format!(
                "{name} has {lines} lines: split it into modules along its seams, or say why not in its opening \
                 comment with a sentence starting \"{MARKER}\""
            ));
        }
    }
    for name in being_split {
        match files.iter().find(|(file, _)| file == name) {
            Some((_, text)) if text.lines().count() > MAX_LINES => {}
            _ => problems.push(format!("{name} is no longer over {MAX_LINES} lines: delete it from BEING_SPLIT")),
        }
    }
    problems
}

#[test]
fn no_source_file_is_over_800_lines_without_a_reason() {
    let root = workspace_root();
    let files: Vec<(String, String)> = own_sources(&root)
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(root.join(&name)).unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
            (name, text)
        })
        .collect();
    assert!(files.iter().any(|(name, _)| name == "daemon/src/lib.rs"), "the daemon's sources were not found");
    let problems = check_lengths(&files, BEING_SPLIT);
    assert!(problems.is_empty(), "long files:\n- {}", problems.join("\n- "));
}

#[test]
fn a_long_file_needs_the_reason_at_its_top() {
    let body = "fn f() {}\n".repeat(MAX_LINES);
    let short = ("short.rs".to_owned(), body.clone());
    let long = ("long.rs".to_owned(), format!("//! A module.\n{body}"));
    let explained = ("explained.rs".to_owned(), format!("//! A module.\n//! {MARKER} it is one table.\n{body}"));
    let below = ("below.rs".to_owned(), format!("//! A module.\n{body}// {MARKER} it is one table.\n"));
    let problems = check_lengths(&[short, long, explained, below], &[]);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].starts_with("long.rs has 801 lines: split it"), "{problems:#?}");
    assert!(problems[1].starts_with("below.rs has 802 lines"), "a reason below the top does not count");
}

#[test]
fn a_file_being_split_is_ignored_until_it_is_short() {
    let long = ("big.rs".to_owned(), "x\n".repeat(MAX_LINES + 1));
    assert!(check_lengths(std::slice::from_ref(&long), &["big.rs"]).is_empty());
    let short = ("big.rs".to_owned(), "x\n".repeat(MAX_LINES));
    assert_eq!(
        check_lengths(&[short], &["big.rs"]),
        ["big.rs is no longer over 800 lines: delete it from BEING_SPLIT"]
    );
    assert_eq!(check_lengths(&[], &["gone.rs"]), ["gone.rs is no longer over 800 lines: delete it from BEING_SPLIT"]);
}
