//! Command line of the end-to-end bench: which mode runs (full, `--quick`,
//! `--demo`, `--scale N`), how large each scenario is, and how densely the
//! API write floor is sampled between the scenarios.
//!
//! Parsing is a pure function of the argument list, so a typo fails the bench
//! at once with the flag named instead of being ignored.

/// Which set of scenarios runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// warm-sequential, cold-sequential, warm-burst, overflow-burst.
    Full,
    /// warm-sequential and cold-sequential only, with a per-claim table (`make demo`).
    Demo,
    /// A pool of this many idle Pods, then a short warm-sequential (not in CI).
    Scale(usize),
}

/// Everything the bench was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub mode: Mode,
    /// Idle Pods in the warm pool (the burst of warm claims has this size).
    pub pool: usize,
    /// Simulated cold start of every Pod (KWOK), milliseconds.
    pub delay_ms: u64,
    pub warm_sequential: usize,
    pub cold_sequential: usize,
    /// Floor samples (write round trips) between two consecutive warm-sequential claims.
    pub floor_per_gap: usize,
    /// Floor samples in each block before and after the other scenarios.
    pub floor_block: usize,
    /// Timed parallel bursts of bare patches, on each side of the claim bursts.
    pub throughput_runs: usize,
    /// Value passed to the operator's `--claim-network-policy`, only when given.
    pub network_policy: Option<String>,
    /// Upper bound for filling the `--scale` pool, seconds.
    pub scale_timeout_s: u64,
    /// `--operator-as-admin`: the operator keeps the admin identity, so its
    /// Sandbox creates go through the webhooks (for comparison).
    pub operator_as_admin: bool,
    /// Apply the ownership guard for the run, as the chart installs it
    /// (`--no-ownership-guard` turns it off; see `guard`).
    pub ownership_guard: bool,
}

/// Default pool size of `--scale` when the flag has no value.
pub const DEFAULT_SCALE: usize = 5000;
/// Warm claims of the short warm-sequential after a `--scale` pool is full.
pub const SCALE_WARM_CLAIMS: usize = 50;

const NETWORK_POLICY_VALUES: [&str; 2] = ["per-claim", "per-template"];
const VALUE_FLAGS: [&str; 7] = [
    "--pool",
    "--delay-ms",
    "--warm",
    "--cold",
    "--network-policy",
    "--scale-timeout-s",
    "--floor-per-gap",
];

/// Parses the bench's own arguments (cargo's `--bench` is ignored).
pub fn parse(args: &[String]) -> Result<Settings, String> {
    let mut values = std::collections::HashMap::new();
    let (mut quick, mut demo, mut scale) = (false, false, None);
    let mut operator_as_admin = false;
    let mut ownership_guard = true;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        match arg {
            "--quick" => quick = true,
            "--demo" => demo = true,
            "--operator-as-admin" => operator_as_admin = true,
            "--no-ownership-guard" => ownership_guard = false,
            "--bench" => {}
            "--scale" => match args.get(i + 1).and_then(|v| v.parse::<usize>().ok()) {
                Some(n) => {
                    scale = Some(n);
                    i += 1;
                }
                None => scale = Some(DEFAULT_SCALE),
            },
            flag if VALUE_FLAGS.contains(&flag) => {
                let value = args
                    .get(i + 1)
                    .ok_or_else(|| format!("{flag}: a value is required"))?;
                values.insert(flag, value.clone());
                i += 1;
            }
            other => return Err(format!("{other}: unknown argument")),
        }
        i += 1;
    }
    let number = |flag: &str| -> Result<Option<u64>, String> {
        values
            .get(flag)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{flag}: {v:?} is not a whole number"))
            })
            .transpose()
    };
    let mode = match (scale, demo) {
        (Some(_), true) => return Err("--scale and --demo cannot be combined".into()),
        (Some(0), _) => return Err("--scale: the pool must hold at least one Pod".into()),
        (Some(n), false) => Mode::Scale(n),
        (None, true) => Mode::Demo,
        (None, false) => Mode::Full,
    };
    let defaults = Defaults::of(mode, quick);
    let network_policy = values.get("--network-policy").cloned();
    if let Some(v) = &network_policy
        && !NETWORK_POLICY_VALUES.contains(&v.as_str())
    {
        return Err(format!(
            "--network-policy: {v:?} is not one of {NETWORK_POLICY_VALUES:?}"
        ));
    }
    Ok(Settings {
        mode,
        pool: number("--pool")?.map_or(defaults.pool, |v| v as usize),
        delay_ms: number("--delay-ms")?.unwrap_or(2000),
        warm_sequential: number("--warm")?.map_or(defaults.warm, |v| v as usize),
        cold_sequential: number("--cold")?.map_or(defaults.cold, |v| v as usize),
        floor_per_gap: number("--floor-per-gap")?.map_or(defaults.floor_per_gap, |v| v as usize),
        floor_block: defaults.floor_block,
        throughput_runs: defaults.throughput_runs,
        network_policy,
        scale_timeout_s: number("--scale-timeout-s")?.unwrap_or(900),
        operator_as_admin,
        ownership_guard,
    })
}

/// Sizes of each mode before the explicit flags apply.
struct Defaults {
    pool: usize,
    warm: usize,
    cold: usize,
    floor_per_gap: usize,
    floor_block: usize,
    throughput_runs: usize,
}

impl Defaults {
    fn of(mode: Mode, quick: bool) -> Self {
        let (pool, warm, cold) = match (mode, quick) {
            (Mode::Demo, _) => (3, 3, 2),
            (Mode::Scale(n), _) => (n, SCALE_WARM_CLAIMS, 0),
            (Mode::Full, true) => (20, 200, 20),
            (Mode::Full, false) => (100, 300, 30),
        };
        // The demo is a tour, not a measurement: no floor samples.
        let demo = mode == Mode::Demo;
        Defaults {
            pool,
            warm,
            cold,
            floor_per_gap: if demo { 0 } else { 1 },
            floor_block: if demo { 0 } else { 25 },
            throughput_runs: if demo { 0 } else { 3 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn quick_mode_samples_the_floor_at_least_200_times() {
        let s = parse(&args("--bench --quick")).unwrap();
        assert_eq!((s.mode, s.pool, s.warm_sequential), (Mode::Full, 20, 200));
        assert!(s.warm_sequential * s.floor_per_gap >= 200);
        assert_eq!(s.network_policy, None);
    }

    #[test]
    fn demo_takes_no_floor_samples() {
        let s = parse(&args("--demo")).unwrap();
        assert_eq!(
            (s.mode, s.pool, s.floor_per_gap, s.floor_block),
            (Mode::Demo, 3, 0, 0)
        );
    }

    #[test]
    fn scale_takes_an_optional_pool_size() {
        assert_eq!(
            parse(&args("--scale")).unwrap().mode,
            Mode::Scale(DEFAULT_SCALE)
        );
        let s = parse(&args("--scale 700 --delay-ms 0")).unwrap();
        assert_eq!(
            (s.mode, s.pool, s.warm_sequential, s.delay_ms),
            (Mode::Scale(700), 700, 50, 0)
        );
        assert!(parse(&args("--scale 0")).is_err());
        assert!(parse(&args("--scale --demo")).is_err());
    }

    #[test]
    fn the_operator_runs_as_a_service_account_unless_asked_otherwise() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!parse(&args(&["--quick"])).unwrap().operator_as_admin);
        assert!(
            parse(&args(&["--quick", "--operator-as-admin"]))
                .unwrap()
                .operator_as_admin
        );
    }

    #[test]
    fn the_ownership_guard_is_on_unless_turned_off() {
        assert!(parse(&args("--quick")).unwrap().ownership_guard);
        assert!(
            !parse(&args("--quick --no-ownership-guard"))
                .unwrap()
                .ownership_guard
        );
    }

    #[test]
    fn network_policy_is_passed_through_only_when_valid() {
        let s = parse(&args("--quick --network-policy per-template")).unwrap();
        assert_eq!(s.network_policy.as_deref(), Some("per-template"));
        let err = parse(&args("--network-policy shared")).unwrap_err();
        assert!(err.starts_with("--network-policy: \"shared\""), "{err}");
    }

    #[test]
    fn bad_flags_are_named() {
        assert_eq!(
            parse(&args("--pools 3")).unwrap_err(),
            "--pools: unknown argument"
        );
        assert_eq!(
            parse(&args("--pool")).unwrap_err(),
            "--pool: a value is required"
        );
        assert_eq!(
            parse(&args("--pool x")).unwrap_err(),
            "--pool: \"x\" is not a whole number"
        );
    }
}
