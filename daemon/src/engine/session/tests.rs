//! The session task on a runtime: which thread reads the state directory.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use token_model::ids::TokenName;
use token_model::plan::Policy;
use token_model::time::WallTime;
use zeroize::Zeroizing;

use super::SessionSettings;
use crate::engine::{Engine, EngineConfig, Provision, State, StateStore, TokenSpec};
use crate::state_dir::StateDir;
use crate::state_file;
use crate::state_file::tests::{logged_in_at, origin};

/// The file of a session saved a moment ago, its access token valid for an hour.
fn saved_just_now(name: &str) -> Zeroizing<Vec<u8>> {
    state_file::encode(&logged_in_at(name, WallTime::from_system_time(SystemTime::now()))).unwrap()
}

/// Starts an engine with the one user token `main`, its sessions kept in `dir`.
fn start(dir: StateDir) -> Engine {
    let token = TokenSpec {
        name: TokenName::new("main").unwrap(),
        readers: Default::default(),
        provision: Provision::User(None),
        files: Vec::new(),
    };
    let clock = crate::clock::ClockPolicy::new(true);
    clock.set_synchronised(true);
    let settings = SessionSettings {
        cloud: None,
        store: Some(Arc::new(StateStore::new(dir, origin()))),
        policy: Policy::default(),
        clock,
        startup: token_model::fleet::Spread::new(token_model::fleet::MachineKey::fallback(), Duration::ZERO),
    };
    Engine::start(EngineConfig { admins: Default::default(), tokens: vec![token] }, settings)
}

/// The daemon has one runtime thread: were the session file read on it, a read that waits (a slow disk, a hung
/// network file system; here a FIFO that nobody writes yet) would stop everything else the daemon does. The runtime
/// thread itself writes into the FIFO once the read waits, which it can only do while it is free. Should it be held
/// by the read, another thread writes after a while, so that the test fails rather than hangs.
#[tokio::test(flavor = "current_thread")]
async fn the_saved_session_is_read_off_the_runtime_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(&tmp.path().join("state")).unwrap();
    let name = TokenName::new("main").unwrap();
    let fifo = dir.file_of(&name);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR).unwrap();
    let bytes = saved_just_now("main");

    let (done, wait) = std::sync::mpsc::channel::<()>();
    let rescued = Arc::new(AtomicBool::new(false));
    let rescuer = {
        let (fifo, bytes, rescued) = (fifo.clone(), bytes.clone(), rescued.clone());
        std::thread::spawn(move || {
            if wait.recv_timeout(Duration::from_secs(10)).is_err() {
                rescued.store(true, Ordering::SeqCst);
                // Opening for writing waits for the reader, which is there: it holds the runtime thread.
                OpenOptions::new().write(true).open(&fifo).unwrap().write_all(&bytes).unwrap();
            }
        })
    };

    let engine = start(dir);
    // Without waiting: opening a FIFO for writing fails with ENXIO until a reader has it open.
    let nonblocking = nix::fcntl::OFlag::O_NONBLOCK.bits();
    while !rescued.load(Ordering::SeqCst) {
        match OpenOptions::new().write(true).custom_flags(nonblocking).open(&fifo) {
            Ok(mut writer) => {
                writer.write_all(&bytes).unwrap();
                break;
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("cannot open the FIFO: {e}"),
        }
    }
    let _ = done.send(());
    engine.restored().await;
    rescuer.join().unwrap();

    assert!(!rescued.load(Ordering::SeqCst), "the read of the session file held up the runtime thread");
    let (_, status) = engine.status(&name).unwrap();
    assert_eq!(status.state, State::Valid, "the saved session was taken up: {status:?}");
    assert!(status.expires_at > 0, "{status:?}");
}
