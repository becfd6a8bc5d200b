//! `cargo xtask demo [--duration SECS]`: the whole system on this machine, with no cloud account and no root.
//!
//! Builds the programs, starts a private `dbus-daemon`, the fake cloud (a user with MFA, a device token and a ground
//! token; 30-second access tokens) and `att-tokend` with a generated config, logs in through `att-token login` with
//! the current TOTP code, then shows the tokens refreshing live: `att-token list` every few seconds and the events of
//! `att-token watch`. Tokens are shown as short prefixes only. Everything it started is stopped at the end.

use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procs::{self, Bus, Running, Scratch};

const USERNAME: &str = "demo@example.com";
const PASSWORD: &str = "correct horse & battery = staple";
/// The demo account's TOTP seed (base32), as an authenticator app would hold it.
const TOTP_SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const DEVICE_ID: &str = "DemoSensor7aaaaaaaaaaaaa";
const DEVICE_TOKEN: &str = "maker:4DemoDeviceTokenSensor7";
const GROUND_ID: &str = "DemoGroundAaaaaaaaaaaaaa";
const GROUND_DEVICE: &str = "DemoPumpAaaaaaaaaaaaaaaa";
const GROUND_TOKEN: &str = "maker:4DemoGroundTokenSiteA";

/// Runs the demo. Arguments: `[--duration SECS]` (default 60).
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let duration = parse_duration(args)?;
    let bins = procs::build(false, &[])?;
    let scratch = Scratch::new("demo")?;
    println!("demo: scratch directory {}", scratch.path().display());

    let bus = Bus::start(&scratch)?;
    println!("demo: private bus at {}", bus.address);

    let fake_args = vec![
        "--user".to_owned(),
        format!("{USERNAME}:{PASSWORD}:{TOTP_SEED}"),
        "--device-token".to_owned(),
        format!("{DEVICE_TOKEN}={DEVICE_ID}"),
        "--ground-token".to_owned(),
        format!("{GROUND_TOKEN}={GROUND_ID}:{GROUND_DEVICE},{DEVICE_ID}"),
        "--access-lifetime".to_owned(),
        "30s".to_owned(),
    ];
    let (mut fake, url) = procs::start_fake(&bins.fake, &scratch, &fake_args)?;
    println!("demo: fake cloud at {url} (user {USERNAME} with MFA, access tokens live 30 s)");

    let config = write_config(&scratch, &bus, &url)?;
    let mut daemon = procs::start_daemon(&bins, &scratch, &bus, &config, &[("RUST_LOG", "info")])?;
    println!("demo: att-tokend running (pid {}), config {}", daemon.pid(), config.display());

    let (_watch, events) = start_watch(&bins, &bus, &scratch)?;
    show_list(&bins, &bus, "before login")?;

    login(&bins, &bus, &url)?;
    println!("demo: logged in as {USERNAME}; `att-token get main` now prints {}", short_token(&bins, &bus, "main")?);
    for name in ["sensor-7", "site-a"] {
        println!("demo: `att-token get {name}` prints {}", short_token(&bins, &bus, name)?);
    }
    let for_device = procs::att_token(&bins, &bus).args(["for-device", GROUND_DEVICE]).output()?;
    if for_device.status.success() {
        println!("demo: `att-token for-device {GROUND_DEVICE}` picks the ground token (least privilege)");
    }

    println!("demo: watching for {} s; access tokens refresh before they lapse", duration.as_secs());
    let started = Instant::now();
    let mut next_list = Instant::now();
    let mut last_token = String::new();
    while started.elapsed() < duration {
        if let Some(status) = daemon.try_status() {
            bail!("att-tokend stopped ({status}); {}", daemon.stderr_tail());
        }
        if let Some(status) = fake.try_status() {
            bail!("the fake cloud stopped ({status}); {}", fake.stderr_tail());
        }
        while let Ok(line) = events.try_recv() {
            println!("  watch │ {line}");
        }
        if Instant::now() >= next_list {
            let token = short_token(&bins, &bus, "main")?;
            let both_tokens = !token.starts_with('(') && !last_token.is_empty() && !last_token.starts_with('(');
            let changed = if both_tokens && token != last_token { "  (new access token)" } else { "" };
            println!("[{:>3} s] main = {token}{changed}", started.elapsed().as_secs());
            last_token = token;
            show_list(&bins, &bus, "")?;
            next_list = Instant::now() + Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    while let Ok(line) = events.try_recv() {
        println!("  watch │ {line}");
    }
    drop(daemon);
    println!("demo: done; stopped att-tokend, the fake cloud and the bus");
    Ok(())
}

fn parse_duration(args: &[String]) -> anyhow::Result<Duration> {
    match args {
        [] => Ok(Duration::from_secs(60)),
        [flag, secs] if flag == "--duration" => {
            let secs: u64 = secs.parse().with_context(|| format!("--duration takes whole seconds, not {secs:?}"))?;
            Ok(Duration::from_secs(secs))
        }
        _ => bail!("usage: cargo xtask demo [--duration SECS]"),
    }
}

/// Writes the token files and the daemon's config; returns the config's path.
fn write_config(scratch: &Scratch, bus: &Bus, url: &str) -> anyhow::Result<std::path::PathBuf> {
    let device = scratch.write("sensor-7.token", DEVICE_TOKEN, 0o600)?;
    let ground = scratch.write("site-a.token", GROUND_TOKEN, 0o600)?;
    let state = scratch.path().join("state");
    // The sessions are sealed with a state key, as under systemd; here a 0600 file of 32 random bytes.
    let key = scratch.path().join("state.key");
    let mut bytes = [0_u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)
        .context("could not read 32 random bytes from /dev/urandom for the state key")?;
    std::fs::write(&key, bytes).with_context(|| format!("could not write {}", key.display()))?;
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let config = format!(
        r#"# Generated by `cargo xtask demo`.
[api]
url = "{url}"

[daemon]
bus = "{bus}"
state_dir = "{state}"
state_key_file = "{key}"

[refresh]
safety_margin = "10s"

[[token]]
name = "main"
kind = "user"

[[token]]
name = "sensor-7"
kind = "device"
device_id = "{DEVICE_ID}"
token_file = "{device}"

[[token]]
name = "site-a"
kind = "ground"
ground_id = "{GROUND_ID}"
token_file = "{ground}"
"#,
        bus = bus.address,
        state = state.display(),
        key = key.display(),
        device = device.display(),
        ground = ground.display(),
    );
    scratch.write("config.toml", &config, 0o600)
}

/// `att-token watch`, its lines coming through the returned channel.
fn start_watch(bins: &procs::Bins, bus: &Bus, scratch: &Scratch) -> anyhow::Result<(Running, mpsc::Receiver<String>)> {
    let mut command = procs::att_token(bins, bus);
    command.arg("watch");
    Running::spawn_lines("att-token-watch", command, scratch)
}

/// Logs `main` in with the password on stdin and the authenticator's current code.
fn login(bins: &procs::Bins, bus: &Bus, url: &str) -> anyhow::Result<()> {
    let code = procs::fake_totp(url, USERNAME)?;
    println!("demo: att-token login main --username {USERNAME} --password-stdin --code {code}");
    let mut command = procs::att_token(bins, bus);
    command.args(["login", "main", "--username", USERNAME, "--password-stdin", "--code", &code]);
    let out = procs::output_with_stdin(command, &format!("{PASSWORD}\n"))?;
    if !out.status.success() {
        bail!("att-token login failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The first characters of a token followed by an ellipsis, or the error `att-token get` printed.
fn short_token(bins: &procs::Bins, bus: &Bus, name: &str) -> anyhow::Result<String> {
    let out = procs::att_token(bins, bus).args(["get", name]).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Ok(format!("(no token: {})", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let token = String::from_utf8(out.stdout)?;
    Ok(format!("{}…", token.trim().chars().take(6).collect::<String>()))
}

/// Prints `att-token list`, indented.
fn show_list(bins: &procs::Bins, bus: &Bus, title: &str) -> anyhow::Result<()> {
    let out = procs::att_token(bins, bus).arg("list").stdin(Stdio::null()).output()?;
    if !title.is_empty() {
        println!("demo: att-token list ({title}):");
    }
    let text = if out.status.success() { out.stdout } else { out.stderr };
    for line in String::from_utf8_lossy(&text).lines() {
        println!("    {line}");
    }
    Ok(())
}
