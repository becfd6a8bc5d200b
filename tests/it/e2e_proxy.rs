//! End to end, as separate processes: `curl` through `att-token proxy` reaches the fake cloud with the current
//! token across rotations, the client's Authorization is dropped, open-proxy requests are refused, a non-reader
//! gets 403 from the proxy, and a unix socket is private and removed on exit.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::process::{Command, Output, Stdio};

use testbed::{ConfigText, PATIENCE, Proc};

use crate::support::{World, bins, describe, fast_main, wait_until};

const DEVICE: &str = "ProxyDevice0000000000001";
const DEVICE_TOKEN: &str = "maker:4ProxyDeviceTokenE2e";
const STRANGER: &str = "daemon";

/// Starts `att-token proxy NAME --listen ADDRESS` (as `user` when given) and returns it with its address.
fn start_proxy(world: &World, name: &str, listen: &str, user: Option<&str>) -> (Proc, String) {
    let mut command = match user {
        Some(user) => testbed::as_user(user, &bins().token).unwrap(),
        None => Command::new(&bins().token),
    };
    command.arg("--bus").arg(&world.bus.address).args(["proxy", name, "--listen", listen]);
    let (proc, line) = Proc::spawn_first_line("att-token-proxy", command, world.scratch.path(), PATIENCE).unwrap();
    let address = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("printed {line:?}")).to_owned();
    (proc, address)
}

fn curl(args: &[&str]) -> Output {
    let mut command = Command::new("curl");
    // Only the proxy under test: none from the environment.
    for name in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        command.env_remove(name);
    }
    command.args(["-sS", "--max-time", "20"]).args(args).stdin(Stdio::null());
    command.output().expect("run curl (apt-get install curl)")
}

/// `curl` printing the body and then the status on a last line; returns both.
fn status_and_body(args: &[&str]) -> (u16, String) {
    let mut all = vec!["-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = curl(&all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn curl_through_the_proxy_works_across_rotations_with_the_daemons_token_only() {
    let device_arg = format!("{DEVICE_TOKEN}={DEVICE}");
    let mut world = World::new("proxy", &["--access-lifetime", "8s", "--device-token", &device_arg]);
    world.start_daemon(&fast_main(), "debug");
    world.login_ok("main");
    let (mut proxy, address) = start_proxy(&world, "main", "127.0.0.1:0", None);
    assert!(address.starts_with("http://127.0.0.1:"), "{address}");

    let mut seen = Vec::new();
    let mut requests = 0;
    wait_until("three rotations while curl goes through the proxy", std::time::Duration::from_secs(90), || {
        // Half of the requests carry the client's own (device) token: it must be dropped, or /me/grounds is 403.
        let own = format!("Authorization: Bearer {DEVICE_TOKEN}");
        let args: Vec<&str> = if requests % 2 == 0 { vec![] } else { vec!["-H", own.as_str()] };
        let mut full = args.clone();
        let url = format!("{address}/me/grounds");
        full.push(&url);
        let (status, body) = status_and_body(&full);
        requests += 1;
        assert_eq!(status, 200, "request {requests} through the proxy failed: {body}\n{}", proxy.stderr());
        assert!(body.contains("\"items\""), "the fake's answer: {body}");
        let token = world.get("main").map_err(|out| describe(&out))?;
        if seen.last() != Some(&token) {
            seen.push(token);
        }
        if seen.len() >= 4 { Ok(()) } else { Err(format!("{} tokens seen after {requests} requests", seen.len())) }
    });
    let log = proxy.stderr();
    assert!(log.contains("GET /me/grounds 200"), "one line per request: {log}");
    for token in &seen {
        assert!(!log.contains(token.as_str()), "no token in the proxy's log");
    }

    // What an open proxy would do is refused, with a reason in the body.
    let port = address.rsplit(':').next().expect("a port");
    let (status, body) = status_and_body(&["-x", &address, "http://example.com/me/grounds"]);
    assert_eq!(status, 400, "absolute-form: {body}");
    assert!(body.contains("not an open proxy"), "{body}");
    let out = curl(&["-p", "-x", &address, "-w", "%{http_connect}", "-o", "/dev/null", "http://example.com/"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "405", "CONNECT: {}", describe(&out));
    let (status, body) =
        status_and_body(&["-H", &format!("Host: rebind.example:{port}"), &format!("{address}/me/grounds")]);
    assert_eq!(status, 421, "another host: {body}");
    assert!(body.contains("Host header"), "{body}");

    // Graceful stop on SIGTERM.
    assert!(proxy.stop().unwrap().success(), "{}", proxy.stderr());
}

#[test]
fn a_non_reader_gets_403_from_the_proxy_and_a_unix_socket_is_private() {
    assert!(nix::unistd::geteuid().is_root(), "this test runs the proxy as another user: run the tests as root");
    let device_arg = format!("{DEVICE_TOKEN}={DEVICE}");
    let mut world = World::new("proxy-access", &["--device-token", &device_arg]);
    let file = world.secret_file("device.token", DEVICE_TOKEN);
    world.start_daemon(&ConfigText::new().device("sensor", DEVICE, &file), "debug");

    let (_stranger, address) = start_proxy(&world, "sensor", "127.0.0.1:0", Some(STRANGER));
    let (status, body) = status_and_body(&[&format!("{address}/device/{DEVICE}")]);
    assert_eq!(status, 403, "a non-reader's proxy answers 403: {body}");
    assert!(body.contains("att-token proxy") && body.contains("att-tokend"), "the daemon's reason: {body}");
    assert!(!body.contains(DEVICE_TOKEN), "no token");

    let socket = world.scratch.path().join("sensor.sock");
    let (mut proxy, address) = start_proxy(&world, "sensor", &format!("unix:{}", socket.display()), None);
    assert_eq!(address, format!("unix:{}", socket.display()));
    let meta = std::fs::symlink_metadata(&socket).expect("the socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "only the proxy's user may connect");
    let socket_text = socket.display().to_string();
    let (status, body) =
        status_and_body(&["--unix-socket", &socket_text, &format!("http://localhost/device/{DEVICE}")]);
    assert_eq!(status, 200, "a reader's request over the socket: {body}");
    assert!(proxy.stop().unwrap().success(), "{}", proxy.stderr());
    assert!(!socket.exists(), "the socket is removed on exit");

    // A stale socket (left by a crash) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&socket).expect("bind a socket");
    drop(stale);
    let (_again, _) = start_proxy(&world, "sensor", &format!("unix:{}", socket.display()), None);
    let (status, _) = status_and_body(&["--unix-socket", &socket_text, &format!("http://localhost/device/{DEVICE}")]);
    assert_eq!(status, 200);
}

#[test]
fn the_environment_alone_sets_a_unix_socket_and_its_mode() {
    // What att-token-proxy@.service does: the listen address and the socket's mode come from its environment file.
    let device_arg = format!("{DEVICE_TOKEN}={DEVICE}");
    let mut world = World::new("proxy-env", &["--device-token", &device_arg]);
    let file = world.secret_file("device.token", DEVICE_TOKEN);
    world.start_daemon(&ConfigText::new().device("sensor", DEVICE, &file), "debug");
    let socket = world.scratch.path().join("http.sock");
    let mut command = Command::new(&bins().token);
    command
        .arg("--bus")
        .arg(&world.bus.address)
        .args(["proxy", "sensor"])
        .env("ATT_TOKEN_PROXY_LISTEN", format!("unix:{}", socket.display()))
        .env("ATT_TOKEN_PROXY_SOCKET_MODE", "660");
    let (mut proxy, line) = Proc::spawn_first_line("att-token-proxy", command, world.scratch.path(), PATIENCE).unwrap();
    assert_eq!(line.trim(), format!("listening on unix:{}", socket.display()));
    let meta = std::fs::symlink_metadata(&socket).expect("the socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "ATT_TOKEN_PROXY_SOCKET_MODE sets the mode");
    let socket_text = socket.display().to_string();
    let (status, body) =
        status_and_body(&["--unix-socket", &socket_text, &format!("http://localhost/device/{DEVICE}")]);
    assert_eq!(status, 200, "{body}");
    // A browser's request is refused on a unix socket too.
    let (status, body) = status_and_body(&[
        "--unix-socket",
        &socket_text,
        "-H",
        "Origin: http://attacker.example",
        &format!("http://localhost/device/{DEVICE}"),
    ]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Origin"), "{body}");
    assert!(proxy.stop().unwrap().success(), "{}", proxy.stderr());
}
