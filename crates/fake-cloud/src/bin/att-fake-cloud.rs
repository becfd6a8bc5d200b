//! `att-fake-cloud`: runs the fake AllThingsTalk cloud as its own process, for end-to-end tests and the demo.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use fake_cloud::{DeviceToken, FakeCloud, FakeConfig, FakeUser, GroundToken, MfaFields, MfaShape, Rotation};
use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const AFTER_HELP: &str = r#"Example:
  att-fake-cloud --user alice@example.com:s3cret:JBSWY3DPEHPK3PXP \
    --device-token maker:4AbCdEf=5f3e8a9b2c1d4e6f7a8b9c0d --access-lifetime 30s

A --config file holds the same settings, every key optional:
  listen = "127.0.0.1:8080"
  client_ids = ["web", "mobile"]
  access_lifetime = "1h"        # also refresh_lifetime, challenge_lifetime
  clock_offset = "-5m"
  rotation = "sliding"          # or "fixed", "omit"
  mfa_shape = 1                 # or 2, 3
  [mfa]                         # the MFA step's names
  grant_type = "mfa"            # also uid_field, user_field, code_field
  [[user]]
  username = "alice@example.com"
  password = "s3cret"
  totp_seed = "JBSWY3DPEHPK3PXP"   # optional
  [[device_token]]
  token = "maker:4AbCdEf"
  device_id = "5f3e8a9b2c1d4e6f7a8b9c0d"
  [[ground_token]]
  token = "maker:9XyZ"
  ground_id = "8c6b1d2e5f4a7b92a3b4c5d6"
  device_ids = ["5f3e8a9b2c1d4e6f7a8b9c0d"]"#;

/// A fake AllThingsTalk cloud on loopback: `POST /login` (password grant, MFA step, refresh), the
/// token-check endpoints and a JSON control API under `/_control/`.
#[derive(Debug, Parser)]
#[command(
    name = "att-fake-cloud",
    version,
    about = "Run a fake AllThingsTalk cloud for tests and demos",
    long_about = "Run a fake AllThingsTalk cloud for tests and demos.\n\n\
        It answers POST /login (password grant, MFA step, refresh) and the token checks GET /me/grounds, \
        GET /device/{id} and GET /ground/{id}/devices, like the real cloud. Tests steer it (faults, \
        revocation, clock, counters) with JSON requests under /_control/.\n\n\
        On start it prints exactly one line to stdout, `listening on http://127.0.0.1:PORT`, then logs \
        one line per request (method, path, status; never bodies or tokens) to stderr. It stops on \
        SIGTERM or Ctrl-C.\n\n\
        Durations are written like 90s, 45m, 36h or 60d (a bare number is seconds).",
    after_help = AFTER_HELP
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// A TOML file with the same settings (flags add users and tokens to it and override the rest).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// An account; with a TOTP seed (base32) it asks for an MFA code. Repeat for more users. The password
    /// cannot contain ':' here; use --config for such a password.
    #[arg(long = "user", value_name = "USERNAME:PASSWORD[:TOTPSEED]")]
    users: Vec<String>,

    /// A device token and the device it may access. Repeatable.
    #[arg(long = "device-token", value_name = "TOKEN=DEVICEID")]
    device_tokens: Vec<String>,

    /// A ground token, its ground and the devices in it. Repeatable.
    #[arg(long = "ground-token", value_name = "TOKEN=GROUNDID:DEV1,DEV2")]
    ground_tokens: Vec<String>,

    /// An accepted client_id (repeatable); default web, mobile, postman, maker.
    #[arg(long = "client-id", value_name = "ID")]
    client_ids: Vec<String>,

    /// Access token lifetime; `expires_in` is one second less. Default 1h.
    #[arg(long, value_name = "DURATION")]
    access_lifetime: Option<String>,

    /// Refresh token lifetime. Default 60d.
    #[arg(long, value_name = "DURATION")]
    refresh_lifetime: Option<String>,

    /// How long an MFA challenge may be completed. Default 5m.
    #[arg(long, value_name = "DURATION")]
    challenge_lifetime: Option<String>,

    /// What a refresh does with the refresh token: sliding (a new one each time), fixed (the old one is
    /// repeated) or omit (no refresh_token in the reply). Default sliding.
    #[arg(long, value_name = "MODE")]
    rotation: Option<Rotation>,

    /// How MFA is announced: 1 = HTTP 200 {"MfaUid","UserId"}; 2 = HTTP 400 error "mfa_required" with the
    /// object inside error_description; 3 = HTTP 400 {"MfaUid","UserId"}. Default 1.
    #[arg(long, value_name = "1|2|3", value_parser = clap::value_parser!(u8).range(1..=3))]
    mfa_shape: Option<u8>,

    /// How far the server's clock runs ahead of this machine's, e.g. 90s or -5m (write --clock-offset=-5m).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    clock_offset: Option<String>,

    /// The MFA step's grant_type value. Default mfa.
    #[arg(long, value_name = "NAME")]
    mfa_grant_type: Option<String>,

    /// The MFA step's field carrying MfaUid. Default mfa_uid.
    #[arg(long, value_name = "NAME")]
    mfa_uid_field: Option<String>,

    /// The MFA step's field carrying UserId. Default user_id.
    #[arg(long, value_name = "NAME")]
    mfa_user_field: Option<String>,

    /// The MFA step's field carrying the code. Default code.
    #[arg(long, value_name = "NAME")]
    mfa_code_field: Option<String>,
}

/// The `--config` file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    client_ids: Option<Vec<String>>,
    access_lifetime: Option<String>,
    refresh_lifetime: Option<String>,
    challenge_lifetime: Option<String>,
    clock_offset: Option<String>,
    rotation: Option<Rotation>,
    mfa_shape: Option<MfaShape>,
    mfa: Option<MfaFields>,
    #[serde(default)]
    user: Vec<FakeUser>,
    #[serde(default)]
    device_token: Vec<DeviceToken>,
    #[serde(default)]
    ground_token: Vec<GroundToken>,
}

/// Parses `90s`, `45m`, `36h`, `60d` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 =
        number.parse().with_context(|| format!("{text:?} is not a duration: write it like 90s, 45m, 36h or 60d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{text:?} has an unknown unit: use s, m, h or d, like 90s, 45m, 36h or 60d"),
    };
    Ok(Duration::from_secs(value.saturating_mul(scale)))
}

/// Parses a signed duration into seconds: `-5m`, `+90s`, `30s`.
fn parse_offset(text: &str) -> Result<i64> {
    let text = text.trim();
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let secs = i64::try_from(parse_duration(rest)?.as_secs())
        .context("the clock offset is too large: keep it under a century")?;
    Ok(sign * secs)
}

fn parse_user(text: &str) -> Result<FakeUser> {
    let mut parts = text.splitn(3, ':');
    let (Some(username), Some(password)) = (parts.next(), parts.next()) else {
        bail!("--user needs USERNAME:PASSWORD[:TOTPSEED], like alice@example.com:s3cret");
    };
    if username.is_empty() {
        bail!("--user has an empty username: write USERNAME:PASSWORD[:TOTPSEED]");
    }
    let user = FakeUser::new(username, password);
    Ok(match parts.next() {
        Some(seed) if !seed.is_empty() => user.with_totp_seed(seed),
        _ => user,
    })
}

fn parse_device_token(text: &str) -> Result<DeviceToken> {
    match text.rsplit_once('=') {
        Some((token, device_id)) if !token.is_empty() && !device_id.is_empty() => {
            Ok(DeviceToken { token: token.to_owned(), device_id: device_id.to_owned() })
        }
        _ => bail!("--device-token needs TOKEN=DEVICEID, like maker:4AbCd=5f3e8a9b2c1d4e6f7a8b9c0d"),
    }
}

fn parse_ground_token(text: &str) -> Result<GroundToken> {
    let usage = "--ground-token needs TOKEN=GROUNDID:DEV1,DEV2, like maker:9XyZ=GROUNDID:DEVICE1,DEVICE2";
    let Some((token, rest)) = text.rsplit_once('=') else { bail!(usage) };
    let (ground_id, devices) = rest.split_once(':').unwrap_or((rest, ""));
    if token.is_empty() || ground_id.is_empty() {
        bail!(usage);
    }
    Ok(GroundToken {
        token: token.to_owned(),
        ground_id: ground_id.to_owned(),
        device_ids: devices.split(',').filter(|d| !d.is_empty()).map(str::to_owned).collect(),
    })
}

/// Merges the file and the flags into the listening address and the fake's configuration.
fn build_config(args: &Args) -> Result<(SocketAddr, FakeConfig)> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}: check the path given to --config", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("{} is not a valid fake cloud configuration: fix the TOML", path.display()))?
        }
        None => FileConfig::default(),
    };
    let mut config = FakeConfig::default();
    let listen = if args.listen == SocketAddr::from(([127, 0, 0, 1], 0)) {
        file.listen.unwrap_or(args.listen)
    } else {
        args.listen
    };
    if let Some(ids) = file.client_ids {
        config.client_ids = ids;
    }
    if !args.client_ids.is_empty() {
        config.client_ids.clone_from(&args.client_ids);
    }
    if let Some(text) = args.access_lifetime.as_ref().or(file.access_lifetime.as_ref()) {
        config.access_lifetime = parse_duration(text).context("bad access lifetime")?;
    }
    if let Some(text) = args.refresh_lifetime.as_ref().or(file.refresh_lifetime.as_ref()) {
        config.refresh_lifetime = parse_duration(text).context("bad refresh lifetime")?;
    }
    if let Some(text) = args.challenge_lifetime.as_ref().or(file.challenge_lifetime.as_ref()) {
        config.challenge_lifetime = parse_duration(text).context("bad challenge lifetime")?;
    }
    if let Some(text) = args.clock_offset.as_ref().or(file.clock_offset.as_ref()) {
        config.clock_offset_secs = parse_offset(text).context("bad clock offset")?;
    }
    if let Some(rotation) = args.rotation.or(file.rotation) {
        config.rotation = rotation;
    }
    if let Some(shape) = args.mfa_shape {
        config.mfa_shape = MfaShape::try_from(shape).map_err(anyhow::Error::msg)?;
    } else if let Some(shape) = file.mfa_shape {
        config.mfa_shape = shape;
    }
    if let Some(fields) = file.mfa {
        config.mfa_fields = fields;
    }
    let fields = &mut config.mfa_fields;
    for (flag, field) in [
        (&args.mfa_grant_type, &mut fields.grant_type),
        (&args.mfa_uid_field, &mut fields.uid_field),
        (&args.mfa_user_field, &mut fields.user_field),
        (&args.mfa_code_field, &mut fields.code_field),
    ] {
        if let Some(value) = flag {
            field.clone_from(value);
        }
    }
    config.users = file.user;
    for text in &args.users {
        config.users.push(parse_user(text)?);
    }
    config.device_tokens = file.device_token;
    for text in &args.device_tokens {
        config.device_tokens.push(parse_device_token(text)?);
    }
    config.ground_tokens = file.ground_token;
    for text in &args.ground_tokens {
        config.ground_tokens.push(parse_ground_token(text)?);
    }
    Ok((listen, config))
}

async fn wait_for_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot watch for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    let (listen, config) = build_config(&args)?;
    let cloud = FakeCloud::bind(listen, config).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", cloud.url()).context("cannot write the address to stdout")?;
    stdout.flush().context("cannot write the address to stdout")?;
    drop(stdout);
    wait_for_signal().await?;
    tracing::info!("stopping");
    cloud.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // `RUST_LOG` as `target=level` directives (default info).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .finish()
        .with(filter)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("att-fake-cloud: cannot start the async runtime: {error}; check the process limits");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("att-fake-cloud: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_offsets() {
        assert_eq!(parse_duration("90s").expect("valid"), Duration::from_secs(90));
        assert_eq!(parse_duration("60d").expect("valid"), Duration::from_secs(60 * 86_400));
        assert_eq!(parse_duration("45").expect("valid"), Duration::from_secs(45));
        assert!(parse_duration("5y").is_err());
        assert_eq!(parse_offset("-5m").expect("valid"), -300);
        assert_eq!(parse_offset("+1h").expect("valid"), 3600);
    }

    #[test]
    fn the_config_example_in_help_parses() {
        let (_, example) = AFTER_HELP.split_once("every key optional:\n").expect("the example is in the help");
        let text: String = example.lines().map(|line| format!("{}\n", line.trim_start())).collect();
        let file: FileConfig = toml::from_str(&text).expect("the example is valid");
        assert_eq!(file.user.len(), 1);
        assert_eq!(file.user[0].totp_seed.as_deref(), Some("JBSWY3DPEHPK3PXP"));
        assert_eq!(file.ground_token[0].device_ids.len(), 1);
        assert_eq!(file.rotation, Some(Rotation::Sliding));
        assert_eq!(file.mfa.map(|m| m.grant_type), Some("mfa".to_owned()));
        assert_eq!(parse_offset(file.clock_offset.as_deref().expect("set")).expect("valid"), -300);
    }

    #[test]
    fn tokens_with_colons_parse() {
        let device = parse_device_token("maker:4AbCd=5f3e8a9b2c1d4e6f7a8b9c0d").expect("valid");
        assert_eq!((device.token.as_str(), device.device_id.as_str()), ("maker:4AbCd", "5f3e8a9b2c1d4e6f7a8b9c0d"));
        let ground = parse_ground_token("maker:9XyZ=G1:D1,D2").expect("valid");
        assert_eq!((ground.token.as_str(), ground.ground_id.as_str()), ("maker:9XyZ", "G1"));
        assert_eq!(ground.device_ids, ["D1", "D2"]);
        let user = parse_user("alice@example.com:pw:JBSWY3DPEHPK3PXP").expect("valid");
        assert_eq!(user.totp_seed.as_deref(), Some("JBSWY3DPEHPK3PXP"));
        assert!(parse_user("nobody").is_err());
    }
}
