//! `cargo xtask`: the project's only script. One module per subcommand; processes run with argument lists.

use std::process::ExitCode;

mod ci;
mod util;

const HELP: &str = "\
cargo xtask <command>

Commands:
  ci        format check, clippy with warnings denied, then the whole test suite
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}; run `cargo xtask --help` for the list")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}
