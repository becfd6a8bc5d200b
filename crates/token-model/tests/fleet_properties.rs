//! Properties of fleet behaviour: per-machine offsets (stable, within the window, even across machines), the
//! start-up spread (never past the moment a token stops being served) and the request budget (never exceeded in
//! any interval, every request granted).

use std::time::Duration;

use proptest::prelude::*;
use token_model::fleet::{Budget, MachineKey, STARTUP_JOB, Spread, startup_at};
use token_model::plan::{Action, CallerAction, Grant, Policy, RefreshTokenChange, Session};
use token_model::time::{ClockPair, MonoTime, WallTime};

fn mono_ms(ms: u64) -> MonoTime {
    MonoTime::from_origin(Duration::from_millis(ms))
}

/// splitmix64: many machine ids from one seed, cheaply.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A machine id as `/etc/machine-id` holds it: 32 lower-case hex digits and a newline.
fn machine_id(state: &mut u64) -> String {
    format!("{:016x}{:016x}\n", splitmix(state), splitmix(state))
}

fn arb_window() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..3_600_000).prop_map(Duration::from_millis),
        Just(Duration::from_secs(900)),
        (1u64..1_000).prop_map(Duration::from_nanos),
        (1u64..400 * 86_400).prop_map(Duration::from_secs),
    ]
}

fn arb_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,24}"
}

fn arb_job() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("token_health"), Just("ground_sync"), Just("lapse_review"), Just(STARTUP_JOB)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// An offset is the same every time for a machine, token and job (the file's newline aside), and falls in
    /// `[0, window)`; a zero window gives zero.
    #[test]
    fn offsets_are_stable_and_within_the_window(
        id in proptest::collection::vec(any::<u8>(), 0..64), token in arb_name(), job in arb_job(),
        window in arb_window(),
    ) {
        let offset = Spread::new(MachineKey::from_machine_id(&id), window).offset(&token, job);
        prop_assert!(offset < window, "{offset:?} not within {window:?}");
        let again = Spread::new(MachineKey::from_machine_id(&id), window).offset(&token, job);
        prop_assert_eq!(offset, again);
        let mut with_newline = id.trim_ascii().to_vec();
        with_newline.push(b'\n');
        prop_assert_eq!(Spread::new(MachineKey::from_machine_id(&with_newline), window).offset(&token, job), offset);
        prop_assert_eq!(Spread::new(MachineKey::from_machine_id(&id), Duration::ZERO).offset(&token, job), Duration::ZERO);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Across many random machines, offsets fill the window evenly: Pearson's chi-square over 20 buckets stays
    /// below 70 (19 degrees of freedom: a uniform spread exceeds 43 once in a thousand, 70 about once in ten
    /// million), and no bucket holds more than a third above its share.
    #[test]
    fn offsets_spread_evenly_across_machines(
        seed in any::<u64>(), token in arb_name(), job in arb_job(), window in arb_window(),
    ) {
        const MACHINES: usize = 4_000;
        const BUCKETS: usize = 20;
        // Windows of a few nanoseconds cannot be split evenly into 20 buckets; configured windows are seconds.
        let window = window.max(Duration::from_millis(1));
        let mut state = seed;
        let mut counts = [0usize; BUCKETS];
        for _ in 0..MACHINES {
            let key = MachineKey::from_machine_id(machine_id(&mut state).as_bytes());
            let offset = Spread::new(key, window).offset(&token, job);
            let bucket = (offset.as_nanos() * BUCKETS as u128 / window.as_nanos()) as usize;
            counts[bucket.min(BUCKETS - 1)] += 1;
        }
        let expected = MACHINES as f64 / BUCKETS as f64;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
        prop_assert!(chi2 < 70.0, "chi-square {chi2:.1} over {counts:?}");
        let most = *counts.iter().max().unwrap();
        prop_assert!((most as f64) < expected * 4.0 / 3.0, "a bucket holds {most} of {MACHINES}: {counts:?}");
    }

    /// One machine's tokens and jobs get offsets of their own: over many tokens of one machine the offsets
    /// spread evenly too (the same bound), so a gateway with many tokens does not send them in one burst.
    #[test]
    fn one_machines_tokens_spread_evenly(seed in any::<u64>(), job in arb_job()) {
        const TOKENS: usize = 4_000;
        const BUCKETS: usize = 20;
        let mut state = seed;
        let spread = Spread::new(MachineKey::from_machine_id(machine_id(&mut state).as_bytes()), Duration::from_secs(900));
        let mut counts = [0usize; BUCKETS];
        for i in 0..TOKENS {
            let offset = spread.offset(&format!("token-{i}"), job);
            counts[(offset.as_secs() * BUCKETS as u64 / 900) as usize] += 1;
        }
        let expected = TOKENS as f64 / BUCKETS as f64;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
        prop_assert!(chi2 < 70.0, "chi-square {chi2:.1} over {counts:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// The start-up request falls in `[start, start + window)`, at `start + offset` when nothing lapses within
    /// the window, and before the lapse (at once when it has passed) otherwise.
    #[test]
    fn the_startup_request_stays_in_the_window_and_before_the_lapse(
        start in 0u64..1_000_000_000, window_ms in 1u64..3_600_000, offset_frac in 0.0f64..1.0,
        lapses in proptest::option::of(0u64..2_000_000_000),
    ) {
        let window = Duration::from_millis(window_ms);
        let offset = window.mul_f64(offset_frac);
        let (start, lapses) = (mono_ms(start), lapses.map(mono_ms));
        let at = startup_at(start, offset, window, lapses);
        prop_assert!(at >= start && at < start + window, "{at:?} outside the window from {start:?}");
        match lapses {
            Some(l) if l < start + window => {
                prop_assert!(at < l || (l <= start && at == start), "{at:?} not before the lapse at {l:?}");
            }
            _ => prop_assert_eq!(at, start + offset),
        }
    }

    /// Through the planner: the start-up spread never moves a request earlier than the plan had it, holds it
    /// back no longer than the window, never past the end of serving of a token served at the start, and no
    /// caller is granted a request before it; a zero window changes nothing.
    #[test]
    fn the_planner_keeps_the_startup_spread(
        obtained in 0u64..3_600_000, life_s in prop_oneof![Just(3599u64), 10u64..100_000],
        start in 0u64..7_200_000, window_ms in prop_oneof![Just(0u64), 1u64..600_000], offset_frac in 0.0f64..1.0,
        jitter in 0.0f64..1.0,
    ) {
        let policy = Policy::default();
        let pair = ClockPair::new(mono_ms(obtained), WallTime::from_unix_millis(1_780_000_000_000 + obtained as i64));
        let grant = Grant::new(pair, Duration::from_secs(life_s), RefreshTokenChange::Rotated);
        let plain = Session::logged_in(&grant, &policy, false, jitter);
        let start = mono_ms(obtained + start);
        let window = Duration::from_millis(window_ms);
        let mut spread = plain.clone();
        spread.spread_start(start, window.mul_f64(offset_frac), window, &policy);
        let (Some(before), Some(after)) = (plain.plan(&policy, start).at(), spread.plan(&policy, start).at()) else {
            return Err(TestCaseError::fail("a logged-in session always plans a request"));
        };
        if window.is_zero() {
            prop_assert_eq!(before, after);
            return Ok(());
        }
        prop_assert!(after >= before, "the spread moved the request earlier: {after:?} < {before:?}");
        prop_assert!(after <= before.max(start + window), "held back past the window: {after:?}");
        if let Some(end) = plain.serve_until(&policy).filter(|end| *end > start && before < *end) {
            prop_assert!(after < end, "the spread let the token lapse: {after:?} >= {end:?}");
        }
        let until = spread.spread_until().unwrap();
        for now in [start, start + window / 3, until.saturating_sub(Duration::from_millis(1))] {
            if now < until && let Action::Refresh { .. } = spread.plan(&policy, now) {
                let asked = spread.for_caller(now, Duration::ZERO, &policy);
                prop_assert!(asked != CallerAction::RefreshNow, "a caller got a request at {now:?} before {until:?}");
            }
        }
    }

    /// The budget is never exceeded: for any schedule of requests, in every interval `[a, b]` between two grants
    /// at most `burst + (b − a) / interval` requests go. Every request is granted, no earlier than asked and no
    /// later than one interval per request booked before it.
    #[test]
    fn the_budget_is_never_exceeded_and_every_request_goes(
        burst in 1u32..20, interval_ms in 1u64..10_000,
        mut asked in proptest::collection::vec(0u64..600_000, 1..200),
    ) {
        asked.sort_unstable();
        let interval = Duration::from_millis(interval_ms);
        let mut budget = Budget::new(burst, interval);
        let mut grants = Vec::with_capacity(asked.len());
        for (k, &ms) in asked.iter().enumerate() {
            let at = budget.reserve(mono_ms(ms));
            prop_assert!(at >= mono_ms(ms), "granted before it was asked");
            prop_assert!(at <= mono_ms(ms) + interval * k as u32, "request {k} waits longer than its turn: {at:?}");
            grants.push(at);
        }
        grants.sort_unstable();
        for i in 0..grants.len() {
            for j in i..grants.len() {
                let span = grants[j].saturating_since(grants[i]).as_nanos() / interval.as_nanos();
                let allowed = u128::from(burst) + span;
                prop_assert!((j - i + 1) as u128 <= allowed, "{} requests in {:?}", j - i + 1, grants[j].saturating_since(grants[i]));
            }
        }
    }
}

#[test]
fn the_hash_is_fixed() {
    // Written out so that a change of the hash, which would move every gateway's offsets, fails here.
    let key = MachineKey::from_machine_id(b"0123456789abcdef0123456789abcdef\n");
    assert_eq!(key, MachineKey::from_machine_id(b"0123456789abcdef0123456789abcdef"));
    assert_eq!(key.hash("main", "token_health"), FIXED_HASH);
    assert_eq!(format!("{key:?}"), "MachineKey([redacted])");
}

/// FNV-1a 64 then fmix64 over the documented bytes, computed apart from this crate.
const FIXED_HASH: u64 = 283_831_924_009_401_658;
