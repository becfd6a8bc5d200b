//! The messages of a config that TOML or the schema refuses: the line of a byte offset, the table that holds it
//! (`[daemon]`, `[[token]] "main"`), and the closest valid key to a misspelt one. This is the code the config
//! fuzz target exercises most: it looks at raw text, which may hold anything (a secret pasted into a multi-line
//! string among them), and shows only keys, table names and valid token names.

use std::path::Path;

use token_model::ids::TokenName;

use super::ConfigError;

/// The refusal of text that is not TOML at all, at its line.
pub(super) fn syntax_error(text: &str, path: &Path, error: &toml::de::Error) -> ConfigError {
    let span = error.span().unwrap_or(0..0);
    ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of(text, span.start),
        message: format!(
            "TOML syntax error: {}; fix the syntax (strings need double quotes, tables are [name], tokens [[token]])",
            error.message().trim()
        ),
    }
}

/// The 1-based line that holds byte `offset` of `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Names the table that holds byte `offset`: `[daemon]`, `[[token]] "main"`, or `the top level`.
fn section_at(text: &str, offset: usize) -> String {
    let end = offset.min(text.len());
    let before = &text[..end];
    let mut header: Option<(usize, &str)> = None;
    let mut pos = 0;
    let mut strings = MultiLineStrings::default();
    for line in before.split_inclusive('\n') {
        let trimmed = line.trim();
        if strings.outside(line) && trimmed.starts_with('[') {
            header = Some((pos, trimmed.split('#').next().unwrap_or(trimmed).trim()));
        }
        pos += line.len();
    }
    let Some((start, header)) = header else { return "the top level".to_owned() };
    if header.starts_with("[[") {
        // Find the table's `name = "..."` (before the next header) to tell tables apart. Lines inside a multi-line
        // string are text, not keys (they may hold a secret), and only a valid token name is shown.
        let body = &text[start..];
        let mut strings = MultiLineStrings::default();
        for line in body.lines().skip(1) {
            if !strings.outside(line) {
                continue;
            }
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                break;
            }
            if let Some(rest) = trimmed.strip_prefix("name")
                && let Some(value) = rest.trim_start().strip_prefix('=')
            {
                let value = value.split('#').next().unwrap_or("").trim();
                let unquoted = value.trim_matches(|c| c == '"' || c == '\'');
                if TokenName::check(unquoted).is_ok() {
                    return format!("{header} \"{unquoted}\"");
                }
                break;
            }
        }
    }
    header.to_owned()
}

/// Follows TOML's multi-line strings (`"""` and `\'\'\'`) line by line, to tell text inside one from keys and
/// headers.
#[derive(Default)]
struct MultiLineStrings {
    open: Option<&'static str>,
}

impl MultiLineStrings {
    /// Whether `line` starts outside a multi-line string (then it may be a key or a header); updates the state
    /// with the delimiters it holds.
    fn outside(&mut self, line: &str) -> bool {
        let was_outside = self.open.is_none();
        let mut rest = line;
        loop {
            match self.open {
                Some(delimiter) => match rest.find(delimiter) {
                    Some(at) => {
                        rest = &rest[at + 3..];
                        self.open = None;
                    }
                    None => break,
                },
                None => {
                    let next = ["\"\"\"", "\'\'\'"].into_iter().filter_map(|d| rest.find(d).map(|at| (at, d))).min();
                    match next {
                        Some((at, delimiter)) if !rest[..at].contains('#') => {
                            rest = &rest[at + 3..];
                            self.open = Some(delimiter);
                        }
                        _ => break,
                    }
                }
            }
        }
        was_outside
    }
}

/// The refusal of TOML that does not fit the schema (an unknown or missing key, a wrong value), at its line and
/// naming its table.
pub(super) fn toml_error(text: &str, path: &Path, error: &toml::de::Error) -> ConfigError {
    let span = error.span().unwrap_or(0..0);
    let section = section_at(text, span.start);
    let raw = error.message().trim();
    let message = if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid = expected
            .replace("` or `", "`, `")
            .trim_start_matches([',', ' '])
            .trim_start_matches("expected one of ")
            .trim_start_matches("expected ")
            .replace('`', "");
        let hint = match closest(key, &valid) {
            Some(close) => format!(" (did you mean \"{close}\"?)"),
            None => String::new(),
        };
        format!("unknown key \"{key}\" in {section}{hint}; valid keys are {valid}")
    } else if let Some(rest) = raw.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or(rest);
        format!("{section} has no \"{key}\"; add {key} = ...")
    } else if raw.contains("expected a sequence") && text.get(span.start..).is_some_and(|t| t.starts_with("[token]")) {
        "write token tables as [[token]] (double brackets), one per token".to_owned()
    } else if span.is_empty() && error.span().is_none() {
        format!("{raw}; fix the TOML syntax")
    } else {
        format!("in {section}: {raw}")
    };
    ConfigError::Invalid { path: path.to_owned(), line: line_of(text, span.start), message }
}

/// The valid key closest to a misspelt one, if any is close.
fn closest(key: &str, valid: &str) -> Option<String> {
    valid
        .split(',')
        .map(str::trim)
        .filter(|candidate| !candidate.is_empty())
        .map(|candidate| (edit_distance(key, candidate), candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, candidate)| candidate.to_owned())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb { previous } else { 1 + previous.min(current).min(row[j]) };
            previous = current;
        }
    }
    row[b.len()]
}
