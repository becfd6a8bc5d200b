//! End to end, as separate processes: `att-token exec` gives PROGRAM the token in its environment, restarts or
//! signals it when the token rotates, passes its exit status back, and fails before PROGRAM starts on bad usage.

use std::process::{Command, Stdio};

use testbed::{PATIENCE, Proc};

use crate::support::{World, bins, describe, exit, fast_main, wait_until};

const DEVICE: &str = "ExecDevice00000000000001";
const DEVICE_TOKEN: &str = "maker:4ExecDeviceToken";

fn exec_command(world: &World, args: &[&str]) -> Command {
    let mut command = Command::new(&bins().token);
    command.arg("--bus").arg(&world.bus.address).arg("exec").args(args).stdin(Stdio::null());
    command
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

fn world_with_device() -> World {
    let device_arg = format!("{DEVICE_TOKEN}={DEVICE}");
    let mut world = World::new("exec", &["--access-lifetime", "8s", "--device-token", &device_arg]);
    let file = world.secret_file("device.token", DEVICE_TOKEN);
    world.start_daemon(&fast_main().device("sensor", DEVICE, &file), "debug");
    world
}

#[test]
fn the_child_is_restarted_with_each_new_token_and_its_status_comes_back() {
    let world = world_with_device();
    world.login_ok("main");
    let log = world.scratch.path().join("restarts.log");
    // Each start records its token; SIGTERM ends it with status 7 (a restart ignores it; att-token's own exit
    // passes it on).
    let script =
        format!("echo \"start $ATT_TOKEN\" >> {}; trap 'exit 7' TERM; while :; do sleep 0.1; done", log.display());
    let mut exec = Proc::spawn(
        "att-token-exec",
        exec_command(&world, &["main", "--stop-timeout", "5", "--", "sh", "-c", &script]),
        world.scratch.path(),
    )
    .unwrap();
    let tokens = wait_until("three starts, each with a new token", PATIENCE, || {
        let starts: Vec<String> =
            lines(&log).iter().filter_map(|l| l.strip_prefix("start ").map(str::to_owned)).collect();
        if let Some(status) = exec.try_status() {
            panic!("att-token exec ended early with {status}: {}", exec.stderr());
        }
        if starts.len() >= 3 { Ok(starts) } else { Err(format!("{} starts so far", starts.len())) }
    });
    for pair in tokens.windows(2) {
        assert_ne!(pair[0], pair[1], "each restart brings a new token");
    }
    let latest = tokens.last().expect("three tokens");
    assert!(!latest.is_empty(), "the child sees the token in ATT_TOKEN");
    assert!(exec.stderr().contains("restarting"), "att-token says why it restarts: {}", exec.stderr());
    assert!(!exec.stderr().contains(latest.as_str()), "no token in att-token's messages");
    // A SIGTERM for att-token goes to the child, whose status comes back.
    let status = exec.stop().unwrap();
    assert_eq!(status.code(), Some(7), "the child's status: {}", exec.stderr());
}

#[test]
fn signal_mode_signals_the_child_and_a_static_token_never_restarts_it() {
    let world = world_with_device();
    world.login_ok("main");
    let log = world.scratch.path().join("signals.log");
    let script = format!(
        "echo start >> {log}; trap 'echo usr1 >> {log}' USR1; trap 'exit 0' TERM; while :; do sleep 0.1; done",
        log = log.display()
    );
    let mut exec = Proc::spawn(
        "att-token-exec-signal",
        exec_command(&world, &["main", "--on-change", "signal:USR1", "--", "sh", "-c", &script]),
        world.scratch.path(),
    )
    .unwrap();
    wait_until("two USR1 for two rotations", PATIENCE, || {
        let seen = lines(&log);
        let usr1 = seen.iter().filter(|l| *l == "usr1").count();
        if usr1 >= 2 { Ok(()) } else { Err(format!("{seen:?}")) }
    });
    assert_eq!(lines(&log).iter().filter(|l| *l == "start").count(), 1, "signalled, never restarted");
    assert_eq!(exec.stop().unwrap().code(), Some(0));

    // A device token in a variable of our choosing; the child's own status is att-token's.
    let out = exec_command(
        &world,
        &[
            "sensor",
            "--env",
            "MQTT_USERNAME",
            "--",
            "sh",
            "-c",
            &format!("test \"$MQTT_USERNAME\" = '{DEVICE_TOKEN}' && exit 5"),
        ],
    )
    .output()
    .expect("run att-token exec");
    assert_eq!(
        out.status.code(),
        Some(5),
        "the child saw the device token and its status came back: {}",
        describe(&out)
    );
    // Killed by a signal: 128 + N, as shells report it.
    let out =
        exec_command(&world, &["sensor", "--", "sh", "-c", "kill -KILL $$"]).output().expect("run att-token exec");
    assert_eq!(out.status.code(), Some(137), "{}", describe(&out));
}

#[test]
fn bad_usage_and_unknown_tokens_fail_before_the_program_starts() {
    let world = world_with_device();
    let marker = world.scratch.path().join("started");
    let touch = format!("touch {}", marker.display());
    let cases: [(&[&str], i32); 4] = [
        (&["nope"], 3),
        (&["main"], exit::NEEDS_LOGIN),
        (&["sensor", "--env", "1BAD"], exit::USAGE),
        (&["sensor", "--on-change", "signal:NOPE"], exit::USAGE),
    ];
    for (args, code) in cases {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--", "sh", "-c", &touch]);
        let out = exec_command(&world, &all).output().expect("run att-token exec");
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", describe(&out));
        assert!(!marker.exists(), "{args:?}: the program must not start");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?}: a message says what is wrong");
    }
    let out = exec_command(&world, &["sensor"]).output().expect("run att-token exec");
    assert_eq!(out.status.code(), Some(exit::USAGE), "PROGRAM is required: {}", describe(&out));
    let out = exec_command(&world, &["sensor", "--", "/nonexistent/program"]).output().expect("run att-token exec");
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out));
}

/// The pids that the pidfds open in process `pid` name (from `/proc/PID/fdinfo`).
fn pidfd_targets(pid: u32) -> Vec<i64> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("list att-token's descriptors");
    fds.flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.to_string_lossy() == "anon_inode:[pidfd]"))
        .filter_map(|fd| {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy())).ok()?;
            info.lines().find_map(|line| line.strip_prefix("Pid:")).and_then(|p| p.trim().parse().ok())
        })
        .collect()
}

#[test]
fn signals_reach_the_program_through_a_pidfd_never_a_pid_that_could_be_reused() {
    let world = world_with_device();
    let dir = world.scratch.path();
    let (pid_file, log) = (dir.join("child.pid"), dir.join("signals.log"));
    let script = format!(
        "echo $$ > {}; trap 'echo usr1 >> {}' USR1; while :; do sleep 0.1; done",
        pid_file.display(),
        log.display()
    );
    let mut exec =
        Proc::spawn("att-token-exec", exec_command(&world, &["sensor", "--", "sh", "-c", &script]), dir).unwrap();
    let child: i64 = wait_until("PROGRAM to start", PATIENCE, || {
        std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse().ok()).ok_or_else(|| "not yet".to_owned())
    });
    // att-token holds a pidfd of its program, opened before anything could reap it, and signals through it.
    assert_eq!(pidfd_targets(exec.pid()), [child], "one pidfd, naming PROGRAM");
    exec.signal(nix::sys::signal::Signal::SIGUSR1).unwrap();
    wait_until("SIGUSR1 to reach PROGRAM", PATIENCE, || {
        if lines(&log).contains(&"usr1".to_owned()) { Ok(()) } else { Err("not yet".to_owned()) }
    });
    let status = exec.stop().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "SIGTERM forwarded ended PROGRAM, and its status came back");
}
