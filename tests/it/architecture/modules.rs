//! The arrows inside `att-tokend`: the graph of its top-level modules (a directory module such as `engine/` or
//! `dbus/` counts as one, its submodules included), read from the `crate::…` and `super::…` paths in
//! `daemon/src`, has no cycle, and the engine never imports the D-Bus side.
//!
//! The graph is built by [`module_graph`] from the files' text and checked by [`check_modules`], both pure and
//! tested on small fixtures; the real check reads `daemon/src`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{rust_files, strip_comments, workspace_root};

/// Arrows that must never exist, whatever else the graph holds: (from, to, why).
const FORBIDDEN_MODULE_EDGES: &[(&str, &str, &str)] = &[
    (
        "engine",
        "dbus",
        "the engine decides and the D-Bus side serves it: rules both need live in a module of their own",
    ),
    ("engine", "client", "the engine never knows the client side of the D-Bus contract"),
];

/// Arrows the checks ignore while a change that removes them is under way (each with why it goes): none. A listed
/// arrow that no longer exists fails the test, so the list only shrinks.
const KNOWN_EDGES_BEING_REMOVED: &[(&str, &str, &str)] = &[];

/// The rules applied to a module graph.
struct ModuleRules<'a> {
    /// Arrows that fail the check: (from, to, why).
    forbidden: &'a [(&'a str, &'a str, &'a str)],
    /// Arrows the check ignores (and that must still exist): (from, to, why).
    ignored: &'a [(&'a str, &'a str, &'a str)],
}

/// The arrows between top-level modules: for each (from, to), where one reference is, as `file:line`.
type ModuleGraph = BTreeMap<(String, String), String>;

/// The top-level module a file of `daemon/src` belongs to (`engine/session.rs` → `engine`), or `None` for the
/// crate root and the binaries, which are not modules of the library.
fn top_module(file: &str) -> Option<String> {
    let first = file.split('/').next()?;
    if first == "lib.rs" || first == "bin" || first == "main.rs" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_owned())
}

/// The module path of a file of `daemon/src` below the crate root (`engine/session.rs` → `engine::session`,
/// `engine/mod.rs` → `engine`).
fn module_path(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file.trim_end_matches(".rs").split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Whether `c` may be part of an identifier.
fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The first path segment of each item `text` names right after a `crate::` or `super::` prefix: one name, or
/// every first-level name of a `{…}` group.
fn first_segments(text: &str) -> Vec<String> {
    if let Some(group) = text.strip_prefix('{') {
        let mut names = Vec::new();
        let (mut depth, mut at_item_start) = (1, true);
        let mut chars = group.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => at_item_start = true,
                c if at_item_start && depth == 1 && is_ident(c) => {
                    let name: String = group[at..].chars().take_while(|c| is_ident(*c)).collect();
                    for _ in 1..name.chars().count() {
                        chars.next();
                    }
                    names.push(name);
                    at_item_start = false;
                }
                _ => {}
            }
        }
        names
    } else {
        let name: String = text.chars().take_while(|c| is_ident(*c)).collect();
        if name.is_empty() { Vec::new() } else { vec![name] }
    }
}

/// The arrows between the top-level modules of the files given as (path below `daemon/src`, text): every
/// `crate::x` path (in `use` or inline) and every `super::` path resolved from the file's own module, to a
/// module other than the file's own. Comments are left out; `$crate` (in macros) is not a path of the file.
fn module_graph(files: &[(String, String)]) -> ModuleGraph {
    let modules: BTreeSet<String> = files.iter().filter_map(|(file, _)| top_module(file)).collect();
    let mut graph = ModuleGraph::new();
    for (file, text) in files {
        let Some(from) = top_module(file) else { continue };
        let here = module_path(file);
        let mut in_block = false;
        let code_lines: Vec<String> = text.lines().map(|line| strip_comments(line, &mut in_block)).collect();
        for (number, code) in code_lines.iter().enumerate() {
            for (at, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
                let before = code[..at].chars().next_back();
                if before.is_some_and(|c| is_ident(c) || c == '$' || c == ':') {
                    continue;
                }
                // The module path the reference starts from, and the path segments that follow.
                let (base, mut tail) = if code[at..].starts_with("crate::") {
                    (Vec::new(), &code[at + "crate::".len()..])
                } else {
                    let mut base = here.clone();
                    let mut tail = &code[at..];
                    while let Some(next) = tail.strip_prefix("super::") {
                        base.pop();
                        tail = next;
                    }
                    (base, tail)
                };
                // A group that does not close on this line goes on in the following ones.
                let joined;
                if tail.starts_with('{') && !tail.contains('}') {
                    joined = format!("{tail}\n{}", code_lines[number + 1..].join("\n"));
                    tail = &joined;
                }
                let targets: Vec<String> = match base.first() {
                    Some(top) => vec![top.clone()],
                    None => first_segments(tail),
                };
                for to in targets {
                    if to != from && modules.contains(&to) {
                        graph.entry((from.clone(), to)).or_insert_with(|| format!("daemon/src/{file}:{}", number + 1));
                    }
                }
            }
        }
    }
    graph
}

/// Every module cycle, each as its modules in order, found among `edges` (depth-first, each cycle once, from its
/// smallest module).
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges {
        next.entry(from).or_default().push(to);
    }
    let mut found = Vec::new();
    for start in next.keys() {
        // Paths from `start` through modules greater than it, back to `start`.
        let mut stack: Vec<(Vec<&str>, usize)> = vec![(vec![start], 0)];
        while let Some((path, index)) = stack.pop() {
            let last = *path.last().expect("a path is never empty");
            let Some(&to) = next.get(last).and_then(|n| n.get(index)) else { continue };
            stack.push((path.clone(), index + 1));
            if to == *start {
                found.push(path.iter().map(|m| (*m).to_owned()).collect());
            } else if to > *start && !path.contains(&to) {
                let mut longer = path.clone();
                longer.push(to);
                stack.push((longer, 0));
            }
        }
    }
    found
}

/// What is wrong with `graph` under `rules`: forbidden arrows, cycles (ignored arrows aside) and ignored arrows
/// that no longer exist. Each problem says where and what to do.
fn check_modules(graph: &ModuleGraph, rules: &ModuleRules<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    let ignored = |from: &str, to: &str| rules.ignored.iter().any(|(f, t, _)| *f == from && *t == to);
    for (from, to, why) in rules.forbidden {
        if let Some(at) = graph.get(&((*from).to_owned(), (*to).to_owned()))
            && !ignored(from, to)
        {
            problems.push(format!("`{from}` imports `{to}` ({at}), which is forbidden: {why}"));
        }
    }
    for (from, to, _) in rules.ignored {
        if !graph.contains_key(&((*from).to_owned(), (*to).to_owned())) {
            problems
                .push(format!("`{from}` no longer imports `{to}`: delete that arrow from KNOWN_EDGES_BEING_REMOVED"));
        }
    }
    let edges: BTreeSet<(String, String)> = graph.keys().filter(|(f, t)| !ignored(f, t)).cloned().collect();
    for cycle in cycles(&edges) {
        let mut text = String::new();
        for (i, from) in cycle.iter().enumerate() {
            let to = &cycle[(i + 1) % cycle.len()];
            let _ = write!(text, "`{from}` → `{to}` ({}); ", graph[&(from.clone(), to.clone())]);
        }
        problems.push(format!(
            "a module cycle: {text}turn one arrow around, or move what both need into a module of its own"
        ));
    }
    problems
}

/// `daemon/src`'s files as (path below `daemon/src`, text).
fn daemon_files() -> Vec<(String, String)> {
    let src = workspace_root().join("daemon/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            (file.strip_prefix(&src).expect("under daemon/src").display().to_string(), text)
        })
        .collect()
}

#[test]
fn the_daemon_modules_form_no_cycle_and_the_engine_never_imports_the_d_bus_side() {
    let graph = module_graph(&daemon_files());
    assert!(graph.keys().any(|(from, _)| from == "engine"), "no arrow from `engine` found: {graph:#?}");
    let rules = ModuleRules { forbidden: FORBIDDEN_MODULE_EDGES, ignored: KNOWN_EDGES_BEING_REMOVED };
    let problems = check_modules(&graph, &rules);
    assert!(problems.is_empty(), "the modules of att-tokend break their rules:\n- {}", problems.join("\n- "));
}

/// A fixture file.
fn file(path: &str, text: &str) -> (String, String) {
    (path.to_owned(), text.to_owned())
}

/// An arrow of a fixture graph.
fn arrow(from: &str, to: &str) -> (String, String) {
    (from.to_owned(), to.to_owned())
}

const NO_RULES: ModuleRules<'static> = ModuleRules { forbidden: &[], ignored: &[] };

#[test]
fn a_cycle_is_found_with_where_each_arrow_is() {
    let graph = module_graph(&[
        file("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        file("a.rs", "use crate::b::Thing;\n"),
        file("b.rs", "fn f() { crate::c::g() }\n"),
        file("c.rs", "// use crate::b;\nuse crate::{a::X, b};\n"),
    ]);
    assert_eq!(graph.get(&arrow("a", "b")).map(String::as_str), Some("daemon/src/a.rs:1"));
    assert_eq!(graph.get(&arrow("c", "a")).map(String::as_str), Some("daemon/src/c.rs:2"), "{graph:#?}");
    let problems = check_modules(&graph, &NO_RULES);
    assert_eq!(problems.len(), 2, "a → b → c → a and b → c → b: {problems:#?}");
    assert!(problems[0].contains("`a` → `b` (daemon/src/a.rs:1); `b` → `c` (daemon/src/b.rs:1); `c` → `a`"));
    assert!(problems[1].contains("`b` → `c`") && problems[1].contains("`c` → `b` (daemon/src/c.rs:2)"));

    let straight = module_graph(&[file("a.rs", "use crate::b;\n"), file("b.rs", "use crate::c;\n"), file("c.rs", "")]);
    assert!(check_modules(&straight, &NO_RULES).is_empty());
}

#[test]
fn an_ignored_arrow_breaks_no_cycle_and_must_still_exist() {
    let graph = module_graph(&[file("a.rs", "use crate::b;\n"), file("b.rs", "use crate::a;\n")]);
    assert_eq!(check_modules(&graph, &NO_RULES).len(), 1);
    let rules = ModuleRules { forbidden: &[], ignored: &[("b", "a", "going away")] };
    assert!(check_modules(&graph, &rules).is_empty());
    let stale = ModuleRules { forbidden: &[], ignored: &[("b", "a", "going away"), ("a", "c", "gone")] };
    let problems = check_modules(&graph, &stale);
    assert_eq!(problems, ["`a` no longer imports `c`: delete that arrow from KNOWN_EDGES_BEING_REMOVED"]);
}

#[test]
fn a_forbidden_arrow_is_named_even_without_a_cycle() {
    let graph = module_graph(&[
        file("engine/mod.rs", "mod session;\n"),
        file("engine/session.rs", "use crate::dbus::access::Caller;\n"),
        file("dbus/mod.rs", "pub mod access;\n"),
        file("dbus/access.rs", ""),
    ]);
    let rules = ModuleRules { forbidden: FORBIDDEN_MODULE_EDGES, ignored: &[] };
    let problems = check_modules(&graph, &rules);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with("`engine` imports `dbus` (daemon/src/engine/session.rs:1), which is forbidden"));
}

#[test]
fn super_paths_resolve_from_the_files_own_module() {
    let graph = module_graph(&[
        // engine::session → super::store is engine's own; super::super::state is the top-level `state`.
        file("engine/session.rs", "use super::store::Store;\nuse super::super::state::Record;\n"),
        file("engine/store.rs", ""),
        // engine (mod.rs) → super::clock is the top-level `clock`.
        file("engine/mod.rs", "use super::clock::Sleeper;\n"),
        // A top-level file's `super::` is the crate root: its `tests` module's `use super::*` names itself.
        file("state.rs", "mod tests {\n    use super::*;\n    use crate::{\n        seal::Key,\n    };\n}\n"),
        file("clock.rs", "macro_rules! m { () => { $crate::state::f() } }\n"),
        file("seal.rs", ""),
        file("bin/att-tokend.rs", "use att_tokend::engine;\nuse crate::x;\n"),
    ]);
    let arrows: Vec<_> = graph.keys().cloned().collect();
    assert_eq!(arrows, [arrow("engine", "clock"), arrow("engine", "state"), arrow("state", "seal")], "{graph:#?}");
}
