//! Loading a config from disk and checking the secret files it names, on a real file system.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use att_tokend::config::{self, ConfigError, SecretSource, TokenSpec};

const DEV: &str = "abcdefghijklmnopqrstuvwx";

fn write(path: &Path, content: &str, mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn device_config(dir: &Path, source: &str) -> String {
    format!(
        "[daemon]\nstate_dir = \"{}\"\n\n[[token]]\nname = \"sensor-7\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\n{source}\n",
        dir.join("state").display()
    )
}

#[test]
fn load_reads_the_file_and_reports_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.toml");
    let message = config::load(&path).unwrap_err().to_string();
    assert!(message.contains(&path.display().to_string()) && message.contains("--config"), "{message}");

    fs::write(&path, "[daemon]\nbus = \"session\"\nbogus = 1\n").unwrap();
    let message = config::load(&path).unwrap_err().to_string();
    assert!(message.starts_with(&format!("{}:3: unknown key \"bogus\"", path.display())), "{message}");
}

#[test]
fn check_files_accepts_private_files_and_rejects_loose_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("sensor-7.token");
    write(&token, "maker:4AbCdEf\n", 0o600);
    let path = tmp.path().join("config.toml");
    fs::write(&path, device_config(tmp.path(), &format!("token_file = \"{}\"", token.display()))).unwrap();
    let loaded = config::load(&path).unwrap();
    loaded.check_files_in(None).unwrap();

    fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
    let message = loaded.check_files_in(None).unwrap_err().to_string();
    assert!(message.starts_with(&format!("{}:8: ", path.display())), "{message}");
    assert!(message.contains(&format!("chmod 600 {}", token.display())), "{message}");
    assert!(message.contains("mode 644"), "{message}");

    fs::set_permissions(&token, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(loaded.check_files_in(None).unwrap_err().to_string().contains("chmod 600"));

    write(&token, "\n", 0o600);
    let message = loaded.check_files_in(None).unwrap_err().to_string();
    assert!(message.contains("is empty"), "{message}");

    fs::remove_file(&token).unwrap();
    let message = loaded.check_files_in(None).unwrap_err().to_string();
    assert!(message.contains("does not exist") && message.contains("create it"), "{message}");

    fs::create_dir(&token).unwrap();
    let message = loaded.check_files_in(None).unwrap_err().to_string();
    assert!(message.contains("not a regular file"), "{message}");
}

#[test]
fn credentials_are_read_from_the_credentials_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds");
    fs::create_dir(&creds).unwrap();
    write(&creds.join("sensor-7"), "maker:xyz", 0o400);
    let loaded = config::parse(&device_config(tmp.path(), "credential = \"sensor-7\""), Path::new("/c.toml")).unwrap();
    let TokenSpec::Device { secret, .. } = &loaded.tokens[0].spec else { panic!("device expected") };
    assert_eq!(secret, &SecretSource::Credential("sensor-7".into()));
    loaded.check_files_in(Some(&creds)).unwrap();

    let error = loaded.check_files_in(None).unwrap_err();
    assert!(matches!(error, ConfigError::Reference { line: 8, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("LoadCredential=sensor-7") && message.contains("token_file"), "{message}");
}

#[test]
fn user_secret_files_are_checked_too() {
    let tmp = tempfile::tempdir().unwrap();
    let password = tmp.path().join("pw");
    let seed = tmp.path().join("seed");
    write(&password, "p@ss word\n", 0o600);
    write(&seed, "JBSWY3DPEHPK3PXP\n", 0o604);
    let text = format!(
        "[[token]]\nname = \"main\"\nkind = \"user\"\nusername = \"a@b.c\"\npassword_file = \"{}\"\ntotp_secret_file = \"{}\"\n",
        password.display(),
        seed.display()
    );
    let loaded = config::parse(&text, Path::new("/c.toml")).unwrap();
    let message = loaded.check_files_in(None).unwrap_err().to_string();
    assert!(message.contains(&format!("chmod 600 {}", seed.display())), "{message}");
    assert!(message.starts_with("/c.toml:6: [[token]] \"main\": "), "{message}");
    fs::set_permissions(&seed, fs::Permissions::from_mode(0o600)).unwrap();
    loaded.check_files_in(None).unwrap();
    write(&seed, "not base32!\n", 0o600);
    let message = loaded.check_files_in(None).unwrap_err().to_string();
    assert!(message.contains("base32") && !message.contains("not base32!"), "{message}");
}

/// Counts how often each of some files is opened, as the kernel reports it (inotify `IN_OPEN`; closes are watched
/// too, since the kernel merges an event with an identical one still unread).
struct OpenCounter {
    inotify: std::os::fd::OwnedFd,
    watches: Vec<(i32, std::path::PathBuf)>,
}

impl OpenCounter {
    fn watch(paths: &[&Path]) -> Self {
        use rustix::fs::inotify;
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
        let watches = paths
            .iter()
            .map(|path| {
                (
                    inotify::add_watch(&fd, *path, inotify::WatchFlags::OPEN | inotify::WatchFlags::CLOSE).unwrap(),
                    path.to_path_buf(),
                )
            })
            .collect();
        Self { inotify: fd, watches }
    }

    /// How often each watched file was opened since [`OpenCounter::watch`], in the order given there.
    fn opens(&self) -> Vec<(std::path::PathBuf, usize)> {
        let mut buffer = [std::mem::MaybeUninit::uninit(); 4096];
        let mut reader = rustix::fs::inotify::Reader::new(&self.inotify, &mut buffer);
        let mut counts = vec![0; self.watches.len()];
        while let Ok(event) = reader.next() {
            let opened = event.events().contains(rustix::fs::inotify::ReadFlags::OPEN);
            if let Some(at) = self.watches.iter().position(|(wd, _)| *wd == event.wd() && opened) {
                counts[at] += 1;
            }
        }
        self.watches.iter().map(|(_, path)| path.clone()).zip(counts).collect()
    }
}

#[test]
fn the_preparation_opens_each_secret_file_and_the_state_key_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (token, password, seed, key) =
        (tmp.path().join("d.token"), tmp.path().join("pw"), tmp.path().join("seed"), tmp.path().join("state.key"));
    write(&token, "maker:4AbCdEf\n", 0o600);
    write(&password, "p@ss word\n", 0o600);
    write(&seed, "JBSWY3DPEHPK3PXP\n", 0o600);
    fs::write(&key, [7_u8; 32]).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "[daemon]\nstate_dir = \"{}\"\nstate_key_file = \"{}\"\n\n[[token]]\nname = \"main\"\nkind = \"user\"\n\
         username = \"a@b.c\"\npassword_file = \"{}\"\ntotp_secret_file = \"{}\"\n\n[[token]]\nname = \"d\"\n\
         kind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"{}\"\n",
        tmp.path().join("state").display(),
        key.display(),
        password.display(),
        seed.display(),
        token.display()
    );
    let loaded = config::parse(&text, Path::new("/c.toml")).unwrap();
    let counter = OpenCounter::watch(&[&token, &password, &seed, &key]);
    let prepared = att_tokend::prepare::prepare(loaded).unwrap();
    assert!(prepared.state_key.is_some() && prepared.engine.tokens.len() == 2, "the key and both tokens read");
    for (path, opens) in counter.opens() {
        assert_eq!(opens, 1, "{} was opened {opens} times", path.display());
    }
}
