//! The report's ratios, JSON fields and printed tables, from fixed observations.
use super::*;
use std::time::Duration;

fn observations(ms: &[u64]) -> Vec<Observation> {
    let t0 = Instant::now();
    ms.iter()
        .enumerate()
        .map(|(i, ms)| Observation {
            name: format!("c-{i}"),
            start: t0,
            ready: t0 + Duration::from_millis(*ms),
            warm: true,
            launch: Some(LaunchType::Warm),
        })
        .collect()
}

fn report() -> Report {
    Report {
        pool: 20,
        floor: floor::Summary {
            rtt_p50_ms: 10.0,
            rtt_p99_ms: 25.0,
            rtt_samples: 300,
            throughput_per_s: 200.0,
            throughput_runs: 6,
            throughput_patches: 16,
            throughput_pool_sized_per_s: 50.0,
            throughput_pool_sized_patches: 2,
        },
        warm: WarmCost {
            operator_writes: 8.0,
            ..WarmCost::default()
        },
        scenarios: vec![
            Scenario::from_observations("warm-sequential", &observations(&[20, 30, 40, 70])),
            Scenario::from_observations("cold-sequential", &observations(&[2000])),
            Scenario::from_observations("warm-burst", &observations(&[100, 1200])),
        ],
        ..Report::default()
    }
}

#[test]
fn warm_sequential_is_divided_by_the_write_rtt_p50() {
    let mut r = report();
    r.apply_floor();
    let warm = &r.scenarios[0];
    assert_eq!(warm.p50_over_write_rtt, Some(3.0));
    assert_eq!(warm.p99_over_write_rtt, Some(7.0));
    assert_eq!(warm.all_ready_over_floor, None);
    assert_eq!(r.scenarios[1].all_ready_over_floor, None);
}

#[test]
fn a_burst_is_divided_by_the_time_its_writes_need_at_the_measured_throughput() {
    let mut r = report();
    r.apply_floor();
    let burst = &r.scenarios[2];
    // 2 claims x 8 writes = 16 writes at 200/s = 80 ms; all Ready after 1200 ms.
    assert_eq!(burst.writes_needed, Some(16.0));
    assert_eq!(burst.all_ready_over_floor, Some(15.0));
    // The pool-sized bursts made 50 writes/s: 16 writes take 320 ms.
    assert_eq!(burst.all_ready_over_floor_pool_sized, Some(3.75));
    // Three sequential writes at the write_rtt p50 of 10 ms: 30 ms.
    assert_eq!(burst.all_ready_over_rounds, Some(40.0));
}

#[test]
fn a_burst_s_fixed_latency_is_paid_once_by_the_writes_sized_floor() {
    // The API server answers a burst in a fixed 20 ms plus 1 ms per write
    // (1,000 writes/s once started). A claim burst of 20 claims x 8 writes
    // = 160 writes that goes as fast as the API server allows is all Ready
    // after 20 + 160 = 180 ms: its ratio to a right floor is 1.
    let burst_ms = |writes: f64| 20.0 + writes;
    let writes = 160.0;
    let sized = writes / (burst_ms(writes) / 1000.0);
    let pool_sized = 20.0 / (burst_ms(20.0) / 1000.0);
    let right = over_throughput(burst_ms(writes), writes, sized).unwrap();
    assert!((right - 1.0).abs() < 1e-9, "{right}");
    // The pool-sized floor pays the 20 ms eight times: 8 x 40 = 320 ms.
    let flattering = over_throughput(burst_ms(writes), writes, pool_sized).unwrap();
    assert!((flattering - 180.0 / 320.0).abs() < 1e-9, "{flattering}");
    assert!(
        flattering < 1.0,
        "a floor the claims beat cannot be the floor"
    );
    assert_eq!(over_throughput(180.0, 160.0, 0.0), None);
    assert_eq!(over_rounds(180.0, 0.0), None);
    assert_eq!(over_rounds(180.0, 6.0), Some(10.0));
}

#[test]
fn no_floor_means_no_ratio() {
    let mut r = report();
    r.floor = floor::Summary::default();
    r.apply_floor();
    assert!(
        r.scenarios
            .iter()
            .all(|s| s.p50_over_write_rtt.is_none() && s.all_ready_over_floor.is_none())
    );
    assert!(r.table().contains("n/a"));
}

#[test]
fn deletes_by_other_tenants_are_shown_not_hidden() {
    let mut r = report();
    r.warm.writes_by_resource = BTreeMap::from([
        ("pods PATCH".to_string(), 2.0),
        ("pods DELETE".to_string(), 0.1),
        ("namespaces DELETE".to_string(), 0.5),
    ]);
    // warm-sequential has 4 claims: 0.5 per claim = 2 namespaces.
    assert_eq!(r.other_activity(), (0.1, 2.0));
    assert!(r.table().contains("DELETE: 0.10 per claim"));
}

#[test]
fn json_carries_the_floor_fields() {
    let mut r = report();
    r.apply_floor();
    let v = r.json();
    assert_eq!(v["write_rtt_p50_ms"], 10.0);
    assert_eq!(v["write_rtt_p99_ms"], 25.0);
    assert_eq!(v["write_throughput_per_s"], 200.0);
    assert_eq!(v["scenarios"][0]["p50_over_write_rtt"], 3.0);
    assert_eq!(v["scenarios"][2]["all_ready_over_floor"], 15.0);
    assert!(v["scenarios"][0].get("all_ready_over_floor").is_none());
    assert!(v.get("operator_cpu_ms_per_warm_claim").is_some());
    assert!(v.get("operator_rss_mib").is_some());
    assert!(v.get("operator_rss_peak_mib").is_some());
    assert_eq!(v["write_throughput_burst_patches"], 16);
    assert_eq!(v["write_throughput_pool_sized_per_s"], 50.0);
    assert_eq!(v["write_throughput_pool_sized_burst_patches"], 2);
    assert_eq!(v["scenarios"][2]["all_ready_over_floor_pool_sized"], 3.75);
    assert_eq!(v["scenarios"][2]["all_ready_over_rounds"], 40.0);
    assert!(v["scenarios"][0].get("all_ready_over_rounds").is_none());
    let table = r.table();
    assert!(table.contains("(/ pool-sized floor)"), "{table}");
    assert!(
        table.contains("bursts of 16 bare Pod label patches"),
        "{table}"
    );
    assert!(table.contains("operator RSS peak (VmHWM)"), "{table}");
}

#[test]
fn the_tail_is_also_set_against_the_floor_s_own_tail_and_the_api_server_cpu_against_one_write() {
    let mut r = report();
    r.warm.apiserver_cpu_ms = Some(60.0);
    r.warm.apiserver_cpu_ms_per_write = Some(6.0);
    r.apply_floor();
    let v = r.json();
    // p99 70 ms against the floor's p99 of 25 ms; the floor's p99 is 2.5x its p50.
    assert_eq!(v["warm_p99_over_write_rtt_p99"], 2.8);
    assert_eq!(v["apiserver_cpu_ms_per_warm_claim"], 60.0);
    assert_eq!(v["apiserver_cpu_ms_per_floor_write"], 6.0);
    let table = r.table();
    assert!(
        table.contains("warm-sequential p99 / write_rtt p99"),
        "{table}"
    );
    assert!(
        table.contains("one bare write's own p99 is 2.50 x its p50"),
        "{table}"
    );
    assert!(
        table.contains(
            "API server CPU per warm claim: 60.0 ms, 10.0 times a bare floor patch's 6.00 ms"
        ),
        "{table}"
    );
    // An API server that is not a local process: no figure, not a zero.
    let mut remote = report();
    remote.apply_floor();
    assert!(remote.json()["apiserver_cpu_ms_per_warm_claim"].is_null());
    assert!(!remote.table().contains("API server CPU"));
}

#[test]
fn the_critical_path_legs_are_printed_and_set_against_the_floor() {
    let mut r = report();
    assert!(!r.table().contains("critical path"), "no legs, no lines");
    assert!(r.json()["warm_path_legs"].is_null());
    let leg = |p50_ms: f64| crate::timeline::Leg {
        p50_ms,
        p90_ms: 2.0 * p50_ms,
    };
    r.legs = Some(crate::timeline::Legs {
        claims: 4,
        start: leg(7.0),
        round_one: leg(20.0),
        round_two: leg(12.5),
    });
    let text = r.table();
    assert!(text.contains("over 4 warm claims"), "{text}");
    assert!(text.contains("25.0"), "the p90 column: {text}");
    assert!(text.contains("round one (four writes at once)"), "{text}");
    assert!(text.contains("2.00 x"), "{text}");
    assert!(text.contains("1.25 x"), "{text}");
    let legs = &r.json()["warm_path_legs"];
    assert_eq!(legs["round_two_over_write_rtt"], 1.25);
    assert_eq!(legs["reconcile_start_over_write_rtt"], 0.7);
    assert_eq!(legs["round_two_p90_ms"], 25.0);
}
