//! A stand-in for systemd's timedated on the test's private bus: `org.freedesktop.timedate1` with the one property
//! the daemon reads, `NTPSynchronized`, which a test sets. The daemon asks the same name, object and property on
//! the system bus in production; this is the only way the tests make its clock "synchronised".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The served object.
struct Timedate {
    synchronised: Arc<AtomicBool>,
}

#[zbus::interface(name = "org.freedesktop.timedate1")]
impl Timedate {
    /// What `timedatectl` shows as "System clock synchronized".
    #[zbus(property(emits_changed_signal = "false"), name = "NTPSynchronized")]
    fn ntp_synchronized(&self) -> bool {
        self.synchronised.load(Ordering::Acquire)
    }
}

/// timedated on a private bus, answering until dropped.
pub(crate) struct FakeTimedated {
    synchronised: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeTimedated {
    /// Owns `org.freedesktop.timedate1` on the bus at `address`, saying `synchronised`; returns once it does.
    pub(crate) fn start(address: &str, synchronised: bool) -> FakeTimedated {
        let flag = Arc::new(AtomicBool::new(synchronised));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (address, served) = (address.to_owned(), flag.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
            runtime.block_on(async move {
                let connection = async {
                    zbus::connection::Builder::address(address.as_str())
                        .name("org.freedesktop.timedate1")
                        .serve_at("/org/freedesktop/timedate1", Timedate { synchronised: served })
                        .build()
                        .await
                }
                .await;
                let failed = connection.as_ref().err().map(ToString::to_string);
                let _ = ready_tx.send(failed);
                let _keep = connection;
                let _ = stopped.await;
            });
        });
        match ready_rx.recv() {
            Ok(None) => {}
            Ok(Some(e)) => panic!("the fake timedated could not own its name on the test bus: {e}"),
            Err(_) => panic!("the fake timedated's thread ended before it served"),
        }
        FakeTimedated { synchronised: flag, stop: Some(stop), thread: Some(thread) }
    }

    /// Says from now on whether the clock is synchronised.
    pub(crate) fn set(&self, synchronised: bool) {
        self.synchronised.store(synchronised, Ordering::Release);
    }
}

impl Drop for FakeTimedated {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
