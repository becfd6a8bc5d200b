//! `cargo xtask`: the project's only script. One module per subcommand; processes run with argument lists.

use std::process::ExitCode;

mod bench;
mod ci;
mod cross;
mod deb;
mod demo;
mod dist;
mod fuzz;
mod install_test;
mod procs;
mod release;
mod sys;
mod system_test;
mod util;
mod vm;

const HELP: &str = "\
cargo xtask <command>

Commands:
  ci            format check, clippy with warnings denied, then the whole test suite
  dist          release build, then tarball, Debian package, build info and SHA256SUMS in
                <target>/dist, for this machine or an ARM gateway (--target
                aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf, --lintian;
                see `cargo xtask dist --help`)
  cross-test    the unit and property tests built for arm64 and armhf, run under qemu in a
                cached Debian 12 build root (--arch arm64|armhf; see `cargo xtask cross-test --help`)
  release       X.Y.Z: bump the workspace version, commit \"Release X.Y.Z\", tag vX.Y.Z, then
                dist for x86_64, arm64 and armhf
  install-test  as root on Debian: install the .deb, run the daemon on a private bus, check
                who may call it, purge, check what is left
  system-test   as root: boot a minimal Debian 12 under its real systemd (systemd-nspawn), install
                the .deb with apt and prove it end to end: credentials, bus policy, sandbox,
                reload, kill -9, watchdog, D-Bus activation, journal, purge (--deb PATH)
  demo          run the daemon against the fake cloud on a private bus and watch tokens
                refresh (--duration SECS, default 60)
  bench         release-build figures: GetToken vs Ping latency, idle RSS, idle wakeups,
                time to READY (also with 10 and 1,000 tokens), the cost of saving a session
                sealed and clear (--save-cost, --startup: those figures alone)
  vm-check      as root: boot Debian 12 for arm64 or armhf in qemu-system (image built once,
                cached) and check what the system test needs there (--arch arm64|armhf)
  fuzz          run the fuzz targets on nightly (--seconds N, default 60; --cmin; TARGET...);
                needs cargo-fuzz, installs nothing
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(&args[1..]),
        Some("dist") => dist::run(&args[1..]),
        Some("cross-test") => cross::run_tests(&args[1..]),
        // Internal: what cross-test and dist run inside `unshare --mount` to enter the ARM build root.
        Some(cross::ENTER) => cross::enter(&args[1..]),
        Some("release") => release::run(&args[1..]),
        Some("install-test") => install_test::run(&args[1..]),
        Some("system-test") => system_test::run(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("vm-check") => vm::run(&args[1..]),
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
