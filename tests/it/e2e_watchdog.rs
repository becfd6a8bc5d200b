//! End to end: the daemon keeps feeding systemd's watchdog whatever it waits for. A fake notify socket records
//! every `WATCHDOG=1`; the bus is replaced by a socket that accepts connections and never answers, and a reload
//! reads a config file that blocks (a FIFO, standing in for NSS behind an LDAP server that does not answer).

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use testbed::{ConfigText, PATIENCE, Proc};

use crate::support::{World, bins, describe, wait_until};

/// `WatchdogSec=` for the test: the daemon pings every half of it.
const WATCHDOG: Duration = Duration::from_secs(4);

/// A notify socket like systemd's: records when each `WATCHDOG=1` arrived, and every message.
struct NotifySocket {
    pings: Arc<Mutex<Vec<Instant>>>,
    messages: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        let (pings, messages) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (p, m) = (pings.clone(), messages.clone());
        std::thread::spawn(move || {
            let mut buffer = [0_u8; 4096];
            while let Ok(n) = socket.recv(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                if text.lines().any(|line| line == "WATCHDOG=1") {
                    p.lock().unwrap().push(Instant::now());
                }
                m.lock().unwrap().push(text);
            }
        });
        NotifySocket { pings, messages }
    }

    /// The longest time without a `WATCHDOG=1` between `from` and now (the gap still open at the end included).
    fn longest_gap_since(&self, from: Instant) -> Duration {
        let pings = self.pings.lock().unwrap();
        let mut last = from;
        let mut longest = Duration::ZERO;
        for &ping in pings.iter().filter(|&&p| p >= from) {
            longest = longest.max(ping - last);
            last = ping;
        }
        longest.max(last.elapsed())
    }

    fn said(&self, line: &str) -> bool {
        self.messages.lock().unwrap().iter().any(|m| m.lines().any(|l| l == line))
    }
}

/// The daemon with a watchdog and the notify socket, as systemd would start it with `WatchdogSec=4s`.
fn start_watched(world: &mut World, config: &str) -> (Proc, NotifySocket) {
    world.write_config(config);
    let notify_path = world.scratch.path().join("notify.sock");
    let notify = NotifySocket::bind(&notify_path);
    let config = world.config.clone().expect("a config");
    let mut command = testbed::Daemon::command(bins(), &config, &[("RUST_LOG", "debug")]);
    command.env("NOTIFY_SOCKET", &notify_path).env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string());
    let mut daemon = Proc::spawn("att-tokend", command, world.scratch.path()).unwrap();
    testbed::wait_served(&bins().token, &world.bus.address, &mut daemon).unwrap();
    wait_until("READY=1", PATIENCE, || if notify.said("READY=1") { Ok(()) } else { Err("not yet".to_owned()) });
    (daemon, notify)
}

const DEVICE: &str = "WatchDevice0000000000001";

fn device_config(world: &World) -> ConfigText {
    let file = world.secret_file("device.token", "maker:4WatchDeviceToken");
    ConfigText::new().device("sensor", DEVICE, &file)
}

/// `att-token get NAME`, which must answer within `patience` (a daemon whose loop is blocked never answers).
fn get_within(world: &World, name: &str, patience: Duration) -> String {
    let mut command = bins().att_token(&world.bus.address);
    command.args(["get", name]);
    let mut get = Proc::spawn("att-token-get", command, world.scratch.path()).unwrap();
    let status = wait_until(&format!("att-token get {name} to answer"), patience, || {
        get.try_status().ok_or_else(|| "no answer yet".to_owned())
    });
    assert!(status.success(), "att-token get {name}: {status}, {}", get.stderr_tail());
    get.stdout().trim_end().to_owned()
}

#[test]
fn a_bus_that_accepts_and_never_answers_does_not_starve_the_watchdog() {
    let mut world = World::new("watchdog-bus", &[]);
    let config = device_config(&world);
    let (mut daemon, notify) = start_watched(&mut world, &config);

    // The bus dies; in its place, a socket that accepts every connection and never says a word.
    world.bus.proc.kill9().unwrap();
    let socket = world.scratch.path().join("bus.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).expect("bind the silent bus socket");
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    let lost = Instant::now();
    wait_until("a reconnection attempt to reach the silent bus", PATIENCE, || {
        if held.lock().unwrap().is_empty() { Err("no connection yet".to_owned()) } else { Ok(()) }
    });
    // Well into the attempt, which can last up to 30 s: the watchdog must have been fed all along.
    std::thread::sleep(Duration::from_secs(12));
    let gap = notify.longest_gap_since(lost);
    eprintln!("silent bus: longest time without WATCHDOG=1 over {:?}: {gap:?}", lost.elapsed());
    assert!(daemon.try_status().is_none(), "the daemon is still running: {}", daemon.stderr_tail());
    assert!(
        gap <= WATCHDOG / 2 + Duration::from_secs(1),
        "the watchdog went unfed for {gap:?} (WatchdogSec {WATCHDOG:?})"
    );
}

#[test]
fn a_reload_that_blocks_on_its_files_does_not_stop_the_daemon_serving_or_the_watchdog() {
    let mut world = World::new("watchdog-reload", &[]);
    let config = device_config(&world);
    let (mut daemon, notify) = start_watched(&mut world, &config);
    let path = world.config.clone().expect("a config");

    // The config file becomes a FIFO: reading it blocks until someone writes, as NSS behind a dead LDAP does.
    let fifo = world.scratch.path().join("config.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    std::fs::rename(&fifo, &path).expect("put the FIFO in the config's place");
    let reload = Instant::now();
    daemon.signal(Signal::SIGHUP).unwrap();
    wait_until("RELOADING=1", PATIENCE, || if notify.said("RELOADING=1") { Ok(()) } else { Err("not yet".to_owned()) });
    for _ in 0..6 {
        assert_eq!(get_within(&world, "sensor", Duration::from_secs(5)), "maker:4WatchDeviceToken");
        std::thread::sleep(Duration::from_secs(1));
    }
    let gap = notify.longest_gap_since(reload);
    eprintln!("blocked reload: longest time without WATCHDOG=1 over {:?}: {gap:?}", reload.elapsed());
    assert!(gap <= WATCHDOG / 2 + Duration::from_secs(1), "the watchdog went unfed for {gap:?} during the reload");

    // The file arrives: the reload completes and applies it.
    let with_second = config.device("other", DEVICE, &world.scratch.path().join("device.token"));
    let text = world.config_text(&with_second);
    std::fs::write(&path, text).expect("write the config into the FIFO");
    wait_until("the reloaded token", PATIENCE, || world.get("other").map_err(|out| describe(&out)));
    assert!(daemon.try_status().is_none(), "the daemon is still running");
}
