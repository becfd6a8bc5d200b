//! Writes the man pages and shell completions of `att-tokend` and `att-token` into a directory.
//!
//! `cargo run -p gen-assets -- OUTDIR` writes `att-tokend.8`, `att-token.1` (and a page per subcommand),
//! and for each program `<name>.bash`, `_<name>` (zsh) and `<name>.fish`. `cargo xtask dist` runs it
//! and installs the files where Debian looks for them.
//!
//! A package of its own, above both programs' packages: it reads their command-line definitions
//! (`att_tokend::cli`, `att_token::cli`), so neither program depends on the other.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

/// Where users report problems.
const ISSUES: &str = "https://github.com/allthingstalk-tools/att-tokend/issues";

/// Extra sections of a man page, after what clap knows: (heading, paragraphs).
type Sections = &'static [(&'static str, &'static [&'static str])];

const TOKEND_SECTIONS: Sections = &[
    (
        "FILES",
        &[
            "/etc/att-tokend/config.toml: the configuration (TOML). Check it with att-tokend --check-config.",
            "/var/lib/att-tokend/: state (sessions and refresh tokens), mode 0700, files 0600, owned by the att-tokend user. The running daemon holds a lock on .lock there (the file holds its pid), so a second att-tokend on the same directory exits at start. Set-aside session files (NAME.json.corrupt-SECONDS, NAME.json.other-instance-SECONDS) are kept until removed by hand.",
            "/run/att-tokend/: token files (files = [\"/run/att-tokend/NAME.token\"] in a [[token]] table), mode 0711 so that readers reach a file whose name they know. Each file holds exactly the token, no newline, while it is served; it is owned by att-tokend, mode 0600 plus a POSIX ACL entry per reader of the token, replaced atomically on every change and removed when the token stops being served. What the daemon wrote is listed in /var/lib/att-tokend/token-files.manifest, so files no longer configured are deleted, also across restarts; a file someone else put in place is never deleted. Elsewhere a file needs ReadWritePaths= in a drop-in.",
            "$CREDENTIALS_DIRECTORY/NAME: a secret passed by systemd (LoadCredential= or LoadCredentialEncrypted=), named by credential = \"NAME\" in the configuration.",
            "/usr/share/dbus-1/system.d/io.allthingstalk.TokenAgent1.conf: who may own and call the bus name; local additions go in /etc/dbus-1/system.d/.",
        ],
    ),
    (
        "ENVIRONMENT",
        &[
            "RUST_LOG: log level and per-target directives, for example RUST_LOG=debug or RUST_LOG=att_tokend=trace,info. Default info. No level prints a token, password, MFA code or seed.",
            "CREDENTIALS_DIRECTORY: set by systemd; where credentials named in the configuration are read from.",
        ],
    ),
    (
        "SIGNALS",
        &[
            "SIGHUP reloads the configuration (systemctl reload att-tokend). SIGTERM and SIGINT stop the daemon cleanly.",
        ],
    ),
    ("SEE ALSO", &["att-token(1), systemd-creds(1), systemd.exec(5), dbus-daemon(1)"]),
];

const SUBCOMMAND_SECTIONS: Sections =
    &[("EXIT STATUS", &["As listed in att-token(1)."]), ("SEE ALSO", &["att-token(1), att-tokend(8)"])];

const TOKEN_SECTIONS: Sections = &[
    (
        "ACCESS",
        &[
            "The system bus lets root and members of the group att-tokens talk to the agent. The daemon then decides which tokens each caller may read (readers in config.toml) and who may log in, refresh and log out (admins).",
        ],
    ),
    ("SEE ALSO", &["att-tokend(8), busctl(1)"]),
];

fn main() -> ExitCode {
    let Some(out_dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("gen-assets: missing OUTDIR; run `cargo run -p gen-assets -- OUTDIR`");
        return ExitCode::FAILURE;
    };
    match generate(&out_dir) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("gen-assets: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes every asset into `out_dir` (created if missing) and returns the paths written.
fn generate(out_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}; pass a writable directory", out_dir.display()))?;
    let programs = [
        (att_tokend::cli::tokend_command(), "8", "System Manager's Manual", TOKEND_SECTIONS),
        (att_token::cli::token_command(), "1", "User Commands", TOKEN_SECTIONS),
    ];
    let mut written = Vec::new();
    for (command, section, manual, extra) in programs {
        let mut command = command.disable_help_subcommand(true);
        command.build();
        written.push(write_man_page(command.clone(), section, manual, extra, out_dir)?);
        // One page per subcommand (`att-token-get(1)`), as the SUBCOMMANDS section names them.
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            written.push(write_man_page(sub.clone(), section, manual, SUBCOMMAND_SECTIONS, out_dir)?);
        }
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut command = command.clone();
            let name = command.get_name().to_owned();
            let path = clap_complete::generate_to(shell, &mut command, name, out_dir)
                .with_context(|| format!("cannot write {shell} completions into {}", out_dir.display()))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Renders the long description: blank lines separate paragraphs; a paragraph whose first line
/// ends with ':' (like "Examples:") keeps its other lines as they are, indented, one per line.
fn render_description(roff: &mut Roff, text: &str) {
    for block in text.split("\n\n").map(str::trim).filter(|block| !block.is_empty()) {
        roff.control("PP", [] as [&str; 0]);
        let mut lines = block.lines();
        let first = lines.next().unwrap_or_default();
        roff.text([roman(first)]);
        if first.ends_with(':') {
            roff.control("RS", [] as [&str; 0]);
            roff.control("nf", [] as [&str; 0]);
            for line in lines {
                roff.text([roman(line.trim())]);
            }
            roff.control("fi", [] as [&str; 0]);
            roff.control("RE", [] as [&str; 0]);
        } else {
            for line in lines {
                roff.text([roman(line)]);
            }
        }
    }
}

/// One paragraph of a man page section.
enum Entry {
    /// A term and its explanation (`.TP`), like an exit code or a file.
    Tagged(String, String),
    /// Running text (`.PP`).
    Text(String),
}

/// Splits clap's after-help text into sections: a line like `EXIT STATUS:` starts one, and each
/// indented line `  TERM  explanation` below it becomes a tagged paragraph.
fn after_help_sections(text: &str) -> Vec<(String, Vec<Entry>)> {
    let mut sections: Vec<(String, Vec<Entry>)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let is_heading = !line.starts_with(' ')
            && trimmed.ends_with(':')
            && trimmed.chars().any(|c| c.is_ascii_uppercase())
            && !trimmed.chars().any(|c| c.is_ascii_lowercase());
        if is_heading {
            sections.push((trimmed.trim_end_matches(':').to_owned(), Vec::new()));
            continue;
        }
        if sections.is_empty() {
            sections.push(("NOTES".to_owned(), Vec::new()));
        }
        let entries = &mut sections.last_mut().expect("a section was pushed").1;
        match trimmed.split_once("  ") {
            Some((term, rest)) if line.starts_with(' ') => {
                entries.push(Entry::Tagged(term.to_owned(), rest.trim().to_owned()));
            }
            _ => entries.push(Entry::Text(trimmed.to_owned())),
        }
    }
    sections
}

/// The hand-written sections as entries: `term: explanation` when the term is one word.
fn extra_sections(extra: Sections) -> Vec<(String, Vec<Entry>)> {
    extra
        .iter()
        .map(|(heading, texts)| {
            let entries = texts
                .iter()
                .map(|text| match text.split_once(": ") {
                    Some((term, rest)) if !term.contains(' ') => Entry::Tagged(term.to_owned(), rest.to_owned()),
                    _ => Entry::Text((*text).to_owned()),
                })
                .collect();
            ((*heading).to_owned(), entries)
        })
        .collect()
}

/// Renders one man page: what clap knows (name, synopsis, description, options, subcommands), the
/// sections of the after-help text (exit status), then the hand-written ones, merged by heading.
/// No date, so a rebuild gives the same bytes.
fn write_man_page(
    command: clap::Command,
    section: &str,
    manual: &str,
    extra: Sections,
    out_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let mut sections = command
        .get_after_long_help()
        .or_else(|| command.get_after_help())
        .map(|text| after_help_sections(&text.to_string()))
        .unwrap_or_default();
    for (heading, entries) in extra_sections(extra) {
        match sections.iter_mut().find(|(existing, _)| *existing == heading) {
            Some((_, existing)) => existing.extend(entries),
            None => sections.push((heading, entries)),
        }
    }
    let has_subcommands = command.get_subcommands().next().is_some();
    let description = command.get_long_about().or_else(|| command.get_about()).map(|text| text.to_string());
    let name = command.get_display_name().unwrap_or_else(|| command.get_name()).to_owned();
    let man = Man::new(command)
        .title(name.to_uppercase())
        .section(section)
        .manual(manual)
        .source(format!("att-tokend {}", env!("CARGO_PKG_VERSION")));
    let path = out_dir.join(man.get_filename());

    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    if let Some(text) = description {
        // clap_mangen would fill the examples into one paragraph: render the description here.
        let mut roff = Roff::new();
        roff.control("SH", ["DESCRIPTION"]);
        render_description(&mut roff, &text);
        roff.to_writer(&mut page)?;
    }
    man.render_options_section(&mut page)?;
    if has_subcommands {
        man.render_subcommands_section(&mut page)?;
    }
    let mut roff = Roff::new();
    for (heading, entries) in &sections {
        roff.control("SH", [heading.as_str()]);
        for entry in entries {
            match entry {
                Entry::Tagged(term, text) => {
                    roff.control("TP", [] as [&str; 0]);
                    roff.text([bold(term.as_str())]);
                    roff.text([roman(text.as_str())]);
                }
                Entry::Text(text) => {
                    roff.control("PP", [] as [&str; 0]);
                    roff.text([roman(text.as_str())]);
                }
            }
        }
    }
    roff.control("SH", ["REPORTING BUGS"]);
    roff.text([roman("Report problems at "), italic(ISSUES), roman(".")]);
    roff.to_writer(&mut page)?;

    let mut file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(&page).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
