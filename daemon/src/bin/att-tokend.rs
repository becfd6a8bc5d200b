//! `att-tokend`: keeps AllThingsTalk tokens alive and hands them to local processes over D-Bus.
//!
//! Arguments → logging → `event_loop::run(config)` (which prepares the config off the runtime thread first) → the
//! error printed once → exit status (0 clean stop, 1 failure, 2 wrong usage from clap). `--check-config` (the same
//! preparation as the start) and `--rekey` do their one job and exit.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use att_tokend::cli::TokendArgs;
use att_tokend::{config, event_loop, logging, prepare, rekey};
use clap::Parser;

fn main() -> ExitCode {
    // First: no core dump ever holds the tokens, the state key or the refresh tokens, and no process of the same
    // user reads this one's memory.
    let undumpable = att_tokend::memory::keep_out_of_core_dumps(true);
    // Before any other thread: freed large buffers (a hostile caller's message) go back to the system, and the
    // blocking pool's threads keep no heaps of their own.
    att_tokend::memory::tune_allocator();
    let args = TokendArgs::parse();
    if args.check_config {
        return finish(check_config(&args.config, args.skip_secrets));
    }
    if let Some(new_key) = &args.rekey {
        let rekeyed = config::load(&args.config)
            .map_err(anyhow::Error::from)
            .and_then(|config| rekey::rekey(&config, new_key, args.old_key_file.as_deref()));
        return finish(rekeyed);
    }
    logging::init();
    if let Err(e) = undumpable {
        tracing::warn!(
            "{e}; a crash could write the tokens in memory to a core dump (the unit's LimitCORE=0 still applies)"
        );
    }
    finish(serve(&args.config).map(|()| String::new()))
}

/// Prints a one-shot command's summary (if any) on stdout, or its error once on stderr, and gives the exit status.
fn finish(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(summary) => {
            if !summary.is_empty() {
                println!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("att-tokend: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Validates the config, its secret files and its users and groups, as the daemon would at start (the same
/// preparation); with `skip_secrets`, all but the secret files.
fn check_config(path: &Path, skip_secrets: bool) -> anyhow::Result<String> {
    let tls = login_flow::tls::in_background();
    let config = config::load(path)?;
    let (config, advice) = if skip_secrets {
        prepare::check_without_secrets(&config)?;
        let advice = config.advice();
        (config, advice)
    } else {
        let prepared = prepare::prepare(config)?;
        (prepared.config, prepared.advice)
    };
    prepare::cloud(&config.api, tls)?;
    for advice in advice {
        eprintln!("att-tokend: warning: {advice}");
    }
    let mut summary = format!(
        "{}: the configuration is valid ({} tokens, bus {}, state in {})\nMFA step names a login tries, in order \
         (the next only when the cloud did not process the step; pin them in [api.mfa]):",
        path.display(),
        config.tokens.len(),
        config.daemon.bus,
        config.daemon.state_dir.display()
    );
    for (number, variant) in login_flow::variants::mfa_variants(&config.api.mfa, None).iter().enumerate() {
        summary.push_str(&format!("\n  {}. {}", number + 1, variant.as_setting()));
    }
    Ok(summary)
}

fn serve(path: &Path) -> anyhow::Result<()> {
    // The system's CA roots are read and parsed on a thread of their own while the config is parsed and checked.
    let tls = login_flow::tls::in_background();
    let config = config::load(path)?; // One runtime thread: the daemon mostly waits, and each call it serves is short. File writes with fsync and
    // DNS lookups run on tokio's blocking pool, whose threads exit when idle. (The multi-threaded scheduler would
    // add a worker per core, and link libm for its statistics: about half a MiB more resident memory.)
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("att-tokend")
        // Well under the unit's TasksMax=64: a thread that cannot be started would stop the runtime.
        .max_blocking_threads(32)
        .build()
        .context("could not start the async runtime; check the process limits (ulimit -u)")?;
    let result = runtime.block_on(event_loop::run(config, tls));
    // Sessions are saved by now. The process ends without waiting for the blocking pool: a task still there (a
    // DNS lookup, a reload stuck on a file or on NSS) must not hold up the exit, and the kernel reclaims the rest.
    std::mem::forget(runtime);
    result
}
