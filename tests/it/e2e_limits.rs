//! End to end: the figures the unit's `MemoryMax=`, `TasksMax=` and `LimitNOFILE=` are sized from. The daemon
//! serves 1,000 tokens to callers on 16 connections at once; the test prints its resident memory, threads and
//! open files (figures, not timed or sized assertions) and checks that every call was answered.

use std::time::Duration;

use testbed::ConfigText;

use crate::support::World;

/// A field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:` in KiB, `Threads:`).
fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the daemon's status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count() as u64)
}

#[test]
fn a_thousand_tokens_under_load_print_the_figures_the_unit_limits_come_from() {
    const TOKENS: usize = 1000;
    const CONNECTIONS: usize = 16;
    const CALLS: usize = 200;
    let mut world = World::new("limits", &["--access-lifetime", "3600s"]);
    let mut config = ConfigText::new().user("main");
    for n in 1..TOKENS {
        let file = world.secret_file(&format!("d{n}.token"), &format!("maker:4LimitsDeviceToken{n:06}"));
        config = config.device(&format!("device-{n}"), &format!("limitsdevice{n:012}"), &file);
    }
    let config = config.maintenance_off();
    world.start_daemon(&config, "info");
    world.login_ok("main");
    let pid = world.daemon.as_ref().expect("the daemon runs").proc.pid();
    let idle_rss = status_field(pid, "VmRSS:");

    let address = world.bus.address.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut threads, mut files) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                threads = threads.max(status_field(pid, "Threads:"));
                files = files.max(fds(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            (threads, files)
        })
    };
    let callers: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let address = address.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                runtime.block_on(async {
                    let connection =
                        zbus::connection::Builder::address(address.as_str()).build().await.expect("connect to the bus");
                    let proxy = token_agent::TokenAgentProxy::new(&connection).await.expect("a proxy");
                    let mut answered = 0;
                    for n in 0..CALLS {
                        let name = match (c + n) % 10 {
                            0 => "main".to_owned(),
                            k => format!("device-{}", 1 + (c * CALLS + n * 7 + k) % (TOKENS - 1)),
                        };
                        if proxy.get_token(&name).await.is_ok() {
                            answered += 1;
                        }
                    }
                    if c == 0 {
                        answered += usize::from(proxy.list_tokens().await.is_ok_and(|l| l.len() == TOKENS));
                    }
                    answered
                })
            })
        })
        .collect();
    let answered: usize = callers.into_iter().map(|t| t.join().expect("a caller thread")).sum();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (threads, files) = sampler.join().expect("the sampler");
    let loaded_rss = status_field(pid, "VmRSS:");
    let peak_rss = status_field(pid, "VmHWM:");
    println!(
        "att-tokend with {TOKENS} tokens: RSS {:.1} MiB idle, {:.1} MiB after {} calls on {CONNECTIONS} connections, \
         peak {:.1} MiB; at most {threads} threads and {files} open files under load",
        idle_rss as f64 / 1024.0,
        loaded_rss as f64 / 1024.0,
        CONNECTIONS * CALLS,
        peak_rss as f64 / 1024.0,
    );
    assert_eq!(answered, CONNECTIONS * CALLS + 1, "every call was answered, and ListTokens lists all {TOKENS}");
}
