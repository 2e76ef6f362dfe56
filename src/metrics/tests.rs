//! The exposition, the dropping of gone objects' series and the sampled gauges.

use super::*;

#[test]
fn exposition_has_prefix_and_build_info() {
    let m = Metrics::new();
    m.claim_ready_seconds
        .with_label_values(&["ns", "warm", "t"])
        .observe(0.01);
    let text = m.encode();
    assert!(text.contains("sandbox_operator_build_info{version="));
    assert!(text.contains("sandbox_operator_claim_ready_duration_seconds_bucket"));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("sandbox_operator_"), "{line}");
    }
}

#[test]
fn the_policy_file_gauge_is_exported_only_while_a_file_is_followed() {
    // Exported as 0 without a file, it fired SandboxPolicyFileRefused on
    // every operator started without one (the image's default command).
    let m = Metrics::new();
    assert!(!m.encode().contains("policy_file_current"));
    m.follow_policy_file();
    m.follow_policy_file();
    assert!(
        m.encode()
            .contains("\nsandbox_operator_policy_file_current 1\n")
    );
    m.policy_file_current.set(0);
    assert!(
        m.encode()
            .contains("\nsandbox_operator_policy_file_current 0\n")
    );
}

#[test]
fn series_of_deleted_pools_and_templates_are_dropped() {
    let m = Metrics::new();
    m.pool_desired.with_label_values(&["ns", "kept"]).set(1.0);
    m.pool_desired.with_label_values(&["ns", "gone"]).set(1.0);
    m.pool_desired
        .with_label_values(&["other", "kept"])
        .set(1.0);
    m.steal_attempts.with_label_values(&["ns", "kept"]).inc();
    m.steal_attempts.with_label_values(&["ns", "gone"]).inc();
    m.pool_exhausted
        .with_label_values(&["ns", "old-template"])
        .inc();
    m.claim_ready_seconds
        .with_label_values(&["ns", "warm", "t"])
        .observe(0.01);
    // The same template name in another namespace, deleted there.
    m.claim_ready_seconds
        .with_label_values(&["elsewhere", "warm", "t"])
        .observe(0.01);
    m.claims.with_label_values(&["warm"]).inc();
    assert_eq!(m.object_series(), 8);
    let live = LiveObjects {
        pools: [("ns".to_string(), "kept".to_string())].into(),
        templates: [("ns".to_string(), "t".to_string())].into(),
    };
    assert_eq!(m.drop_series_of_gone(&live), 5);
    assert_eq!(m.object_series(), 3);
    let text = m.encode();
    assert!(!text.contains("gone") && !text.contains("old-template") && !text.contains("other"));
    assert!(text.contains("sandbox_operator_claims_total{result=\"warm\"} 1"));
    assert_eq!(m.drop_series_of_gone(&live), 0);
}

#[test]
fn tracked_entries_are_sampled_at_scrape_time() {
    let m = Metrics::new();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(3));
    let read = n.clone();
    m.register_tracked_entries(Box::new(move || {
        vec![("backoff", read.load(std::sync::atomic::Ordering::Relaxed))]
    }))
    .unwrap();
    assert!(
        m.encode()
            .contains("sandbox_operator_tracked_entries{table=\"backoff\"} 3")
    );
    n.store(0, std::sync::atomic::Ordering::Relaxed);
    assert!(
        m.encode()
            .contains("sandbox_operator_tracked_entries{table=\"backoff\"} 0")
    );
}
