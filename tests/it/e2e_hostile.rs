//! End to end, as separate processes: hostile callers. Oversized arguments to every method are refused with a short
//! `InvalidArgs` while the daemon stays on the bus, keeps serving and keeps its memory; a token object's properties
//! are for its readers only.

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use testbed::ConfigText;
use token_agent::TokenAgentProxy;
use zbus::DBusError as _;

use crate::support::{World, describe};

/// The reader and the stranger are real accounts: the bus refuses a uid the user database does not know.
const READER: &str = "nobody";
const STRANGER: &str = "daemon";
const DEVICE: &str = "SensorSevenDevice0000001";
const TOKEN: &str = "maker:4SensorSevenDeviceToken";

/// Each hostile argument: 8 MiB.
const HUGE: usize = 8 << 20;
/// Rounds of hostile calls (each round calls every method with both payloads).
const ROUNDS: usize = 10;
/// The longest refusal accepted: a short message, whatever the input.
const MAX_MESSAGE: usize = 400;

/// A device token readable by [`READER`], and a user token.
fn config(world: &World) -> ConfigText {
    let file = world.secret_file("sensor-7.token", TOKEN);
    ConfigText::new()
        .device("sensor-7", DEVICE, &file)
        .line(&format!("readers = {{ users = [\"{READER}\"] }}"))
        .user("main")
}

/// The daemon's resident memory in KiB (`VmRSS` of `/proc/PID/status`), and its peak (`VmHWM`).
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the daemon's /proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A runtime and a connection to the world's bus, as this process (root).
fn connect(runtime: &tokio::runtime::Runtime, world: &World) -> zbus::Connection {
    runtime.block_on(async {
        zbus::connection::Builder::address(world.bus.address.as_str()).build().await.expect("connect to the test bus")
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// The D-Bus error name and message of a failed call.
fn refusal(result: zbus::Result<impl Sized>) -> Result<(String, String), String> {
    match result {
        Ok(_) => Err("the call succeeded".to_owned()),
        Err(zbus::Error::MethodError(name, message, _)) => Ok((name.to_string(), message.unwrap_or_default())),
        Err(zbus::Error::FDO(e)) => Ok((e.name().to_string(), e.description().unwrap_or_default().to_owned())),
        Err(other) => Err(format!("the call failed without a D-Bus error: {other}")),
    }
}

#[test]
fn oversized_arguments_are_refused_and_the_daemon_stays_on_the_bus() {
    let mut world = World::new("hostile-args", &[]);
    let config = config(&world);
    world.start_daemon(&config, "info");
    let pid = world.daemon.as_ref().expect("the daemon runs").proc.pid();

    // A reader that keeps calling GetToken throughout, on its own connection.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let address = world.bus.address.clone();
        std::thread::spawn(move || {
            let runtime = runtime();
            runtime.block_on(async move {
                let connection = zbus::connection::Builder::address(address.as_str())
                    .build()
                    .await
                    .expect("connect to the test bus");
                let proxy = TokenAgentProxy::new(&connection).await.expect("a proxy");
                let (mut served, mut failures) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match proxy.get_token("sensor-7").await {
                        Ok((token, _)) if token == TOKEN => served += 1,
                        Ok(_) => failures.push("GetToken served another token".to_owned()),
                        Err(e) => failures.push(token_agent::error_message(&e)),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                (served, failures)
            })
        })
    };

    let runtime = runtime();
    let connection = connect(&runtime, &world);
    let proxy = runtime.block_on(TokenAgentProxy::new(&connection)).expect("a proxy");
    // Warm up: one call of each kind with small arguments, so that the idle figure includes what a call costs.
    runtime.block_on(async {
        let _ = proxy.get_token("nope").await;
        let _ = proxy.get_token_for_device("nope").await;
        let _ = proxy.refresh("nope").await;
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (idle, _) = rss_kib(pid);

    let controls: String = (0..HUGE).map(|i| char::from(1 + (i % 31) as u8)).collect();
    let letters = "a".repeat(HUGE);
    let started = Instant::now();
    let mut calls = 0;
    for round in 0..ROUNDS {
        for (what, big) in [("control bytes", controls.as_str()), ("letters", letters.as_str())] {
            let results = runtime.block_on(async {
                vec![
                    ("GetToken", refusal(proxy.get_token(big).await)),
                    ("GetTokenValidFor", refusal(proxy.get_token_valid_for(big, 60).await)),
                    ("GetTokenForDevice", refusal(proxy.get_token_for_device(big).await)),
                    ("Login(name)", refusal(proxy.login(big, "user@example.com", "password", "").await)),
                    ("Login(username)", refusal(proxy.login("main", big, "password", "").await)),
                    ("Login(password)", refusal(proxy.login("main", "user@example.com", big, "").await)),
                    ("Login(code)", refusal(proxy.login("main", "user@example.com", "password", big).await)),
                    ("Refresh", refusal(proxy.refresh(big).await)),
                    ("Logout", refusal(proxy.logout(big).await)),
                ]
            });
            for (method, result) in results {
                calls += 1;
                let (name, message) = result.unwrap_or_else(|e| {
                    panic!("round {round}, {method} with 8 MiB of {what}: {e}; daemon stderr:\n{}", world.daemon_logs())
                });
                assert_eq!(
                    name, "org.freedesktop.DBus.Error.InvalidArgs",
                    "round {round}, {method} with 8 MiB of {what}: refused as InvalidArgs"
                );
                assert!(
                    message.len() < MAX_MESSAGE,
                    "round {round}, {method} with 8 MiB of {what}: a refusal of {} bytes, starting {:?}",
                    message.len(),
                    &message[..message.len().min(200)]
                );
                assert!(!message.contains("password\""), "no password quoted: {message}");
                if method.ends_with("(password)") || method.ends_with("(code)") {
                    assert!(!message.contains("aaaa") && !message.contains("\\u{1}"), "never quoted: {message}");
                }
            }
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (served, failures) = reader.join().expect("the reader thread");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (after, peak) = rss_kib(pid);
    eprintln!(
        "{calls} calls with 8 MiB arguments in {:.1} s; daemon VmRSS idle {idle} KiB, after {after} KiB (peak VmHWM \
         {peak} KiB); the other reader was served {served} times",
        elapsed.as_secs_f64()
    );

    assert!(failures.is_empty(), "the other reader was refused meanwhile: {:?}", &failures[..failures.len().min(3)]);
    assert!(served > 0, "the other reader was served");
    let daemon = &mut world.daemon.as_mut().expect("the daemon runs").proc;
    assert!(daemon.try_status().is_none(), "the daemon exited; stderr:\n{}", daemon.stderr());
    assert_eq!(daemon.pid(), pid, "the same daemon");
    assert_eq!(world.get("sensor-7").expect("the daemon still answers"), TOKEN);
    assert!(after <= idle + 4 * 1024, "VmRSS grew from {idle} KiB to {after} KiB: more than 4 MiB");
}

/// `dbus-send` on the world's bus as `user` (its uid and primary gid, no supplementary groups), printing the reply.
fn dbus_send_as(world: &World, user: &str, args: &[&str]) -> Output {
    testbed::as_user(user, "dbus-send")
        .unwrap()
        .arg(format!("--bus={}", world.bus.address))
        .arg("--dest=io.allthingstalk.TokenAgent1")
        .arg("--print-reply")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv (util-linux) and dbus-send")
}

#[test]
fn token_properties_are_for_readers_only() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs dbus-send as other users with setpriv: run the test suite as root (CI does)"
    );
    let mut world = World::new("hostile-props", &[]);
    let config = config(&world);
    world.start_daemon(&config, "info");
    let path = token_agent::token_object_path("sensor-7");
    let get_all = ["org.freedesktop.DBus.Properties.GetAll", "string:io.allthingstalk.TokenAgent1.Token"];
    let get = ["org.freedesktop.DBus.Properties.Get", "string:io.allthingstalk.TokenAgent1.Token", "string:LastError"];

    // A reader of sensor-7 sees its properties.
    let mut args = vec![path.as_str()];
    args.extend(get_all);
    let out = dbus_send_as(&world, READER, &args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "a reader reads the properties: {}", describe(&out));
    for property in ["\"State\"", "\"LastError\"", "\"NextRefreshAt\"", "\"ExpiresAt\""] {
        assert!(text.contains(property), "GetAll gives a reader {property}: {text}");
    }

    // Someone else: refused, both GetAll and Get, and nothing of the token's state in the answer.
    for call in [&get_all[..], &get[..]] {
        let mut args = vec![path.as_str()];
        args.extend(call);
        let out = dbus_send_as(&world, STRANGER, &args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} is refused to a non-reader: {}", call[0], describe(&out));
        assert!(
            said.contains("org.freedesktop.DBus.Error.AccessDenied"),
            "{} is AccessDenied for a non-reader: {}",
            call[0],
            describe(&out)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("valid"), "no state: {}", describe(&out));
    }

    // Root reads every token's properties.
    let out = Command::new("dbus-send")
        .arg(format!("--bus={}", world.bus.address))
        .arg("--dest=io.allthingstalk.TokenAgent1")
        .arg("--print-reply")
        .arg(token_agent::token_object_path("main"))
        .args(get_all)
        .output()
        .expect("run dbus-send");
    assert!(out.status.success(), "root reads the properties: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("needs-login"), "{}", describe(&out));
}
