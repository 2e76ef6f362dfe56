use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn timings(args: &[&str]) -> Result<(), String> {
    let cli = Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied())).unwrap();
    cli.run.check_cert_timings()
}

fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied())).map(|cli| cli.run)
}

fn check(args: &[&str]) -> Result<(), String> {
    parse(args).unwrap().check()
}

#[test]
fn certificate_hours_beyond_the_ca_lifetime_are_refused_by_the_parser() {
    for flag in ["--cert-validity-hours", "--cert-rotate-before-hours"] {
        for value in ["99999999999999999", "87601", "18446744073709551615"] {
            let error = parse(&[flag, value]).unwrap_err().to_string();
            assert!(error.contains(flag), "{error}");
            assert!(error.contains("87600"), "{error}");
        }
    }
    let args = parse(&[
        "--cert-validity-hours",
        "87600",
        "--cert-rotate-before-hours",
        "87600",
    ])
    .unwrap();
    assert_eq!(args.cert_validity(), Duration::from_secs(87_600 * 3600));
    assert_eq!(
        args.cert_rotate_before(),
        Duration::from_secs(87_600 * 3600)
    );
    assert_eq!(args.check(), Ok(()));
    // The bound is the CA's lifetime: a serving certificate it signs
    // never outlives it.
    assert_eq!(
        hours(MAX_CERT_HOURS),
        sandbox_certs::PkiSettings::for_service("svc", "ns").ca_validity
    );
}

#[test]
fn the_defaults_and_the_values_of_the_chart_tests_and_scripts_pass() {
    assert_eq!(check(&[]), Ok(()));
    // charts/sandbox-operator/templates/deployment.yaml as the chart
    // tests render it, plus its webhook.url variants.
    assert_eq!(
        check(&[
            "--lease-namespace=sandbox-system",
            "--lease-name=rel-sandbox-operator-leader",
            "--cluster-domain=cluster.local",
            "--namespace=team-a",
            "--webhook-config-name=rel-sandbox-operator",
            "--webhook-service=rel-sandbox-operator-webhook",
            "--cert-secret=rel-sandbox-operator-webhook-tls",
            "--webhook-cert-hosts=127.0.0.1",
            "--operator-namespace=sandbox-system",
        ]),
        Ok(())
    );
    for hosts in [
        "hook.example.com",
        "fd00::1",
        "[fd00::1]",
        "a.example,10.0.0.5,",
        "*.example.com",
    ] {
        assert_eq!(check(&["--webhook-cert-hosts", hosts]), Ok(()), "{hosts}");
    }
    // tests/integration, benches/ and scripts/run-local.sh.
    assert_eq!(
        check(&[
            "--leader-elect=true",
            "--lease-namespace",
            "fault-webhook-x1y2z",
            "--lease-name",
            "operator-leader",
            "--operator-namespace",
            "wh-owner-abc12",
            "--register-webhook-url",
            "https://127.0.0.1:40123",
            "--webhook-config-name",
            "sandbox-operator-wh-owner-abc12",
        ]),
        Ok(())
    );
    for url in [
        "https://127.0.0.1:9443",
        "https://127.0.0.1:9443/",
        "https://hook.example.com:8443",
        "https://[fd00::1]:9443",
        "https://[fd00::1]",
        "HTTPS://localhost/prefix",
    ] {
        assert_eq!(check_webhook_url(url), Ok(()), "{url}");
    }
    // With --cert-dir the self-managed certificate's flags are unused.
    assert_eq!(
        check(&["--cert-dir=/etc/tls", "--cert-rotate-before-hours=0"]),
        Ok(())
    );
    assert_eq!(
        check(&["--webhook=false", "--cert-rotate-before-hours=0"]),
        Ok(())
    );
}

#[test]
fn bad_names_are_refused_naming_the_flag_and_the_rule() {
    for (args, start) in [
        (
            &["--lease-name=Bad_Name"][..],
            "--lease-name (\"Bad_Name\") must be a Lease name, a DNS-1123 subdomain",
        ),
        (
            &["--namespace="],
            "--namespace (\"\") must be a namespace name, a DNS-1123 label",
        ),
        (
            &["--operator-namespace=UPPER"],
            "--operator-namespace (\"UPPER\") must be a namespace name",
        ),
        (
            &["--lease-namespace=a.b"],
            "--lease-namespace (\"a.b\") must be a namespace name",
        ),
        (
            &["--cluster-domain=bad..domain"],
            "--cluster-domain (\"bad..domain\") must be a DNS domain such as cluster.local, a DNS-1123 subdomain",
        ),
        (&["--cluster-domain=cluster.local."], "--cluster-domain"),
        (
            &["--webhook-config-name="],
            "--webhook-config-name (\"\") must be a webhook configuration name",
        ),
        (
            &["--cert-secret=tls_secret"],
            "--cert-secret (\"tls_secret\") must be a Secret name",
        ),
        (
            &["--webhook-service=svc-"],
            "--webhook-service (\"svc-\") must be a Service name, a DNS-1123 label",
        ),
    ] {
        let error = check(args).unwrap_err();
        assert!(error.starts_with(start), "{args:?}: {error}");
    }
    let long = "a".repeat(64);
    assert!(check(&["--operator-namespace", &long]).is_err());
    assert!(is_dns1123_subdomain(&format!("{long}.b")));
    assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    for bad in ["-a", "a-", "a.-b", ".a", "a.", "A"] {
        assert!(!is_dns1123_subdomain(bad), "{bad}");
    }
    // A flag whose object is not used is not judged.
    assert_eq!(
        check(&["--leader-elect=false", "--lease-name=Bad_Name"]),
        Ok(())
    );
    assert_eq!(
        check(&["--webhook=false", "--webhook-config-name="]),
        Ok(())
    );
    assert_eq!(check(&["--cert-dir=/tls", "--cert-secret=_"]), Ok(()));
}

#[test]
fn certificate_hosts_must_be_addresses_or_dns_names() {
    for hosts in [
        "not_a_host!!",
        "ok.example,bad host",
        "hook.example.com:8443",
        "a..b",
        "-a.example",
        "x.example.",
    ] {
        let error = check(&[&format!("--webhook-cert-hosts={hosts}")]).unwrap_err();
        assert!(
            error.starts_with("--webhook-cert-hosts (")
                && error.contains("must be IP addresses or DNS names"),
            "{hosts}: {error}"
        );
    }
    assert!(
        check(&["--webhook-cert-hosts=ok.example,not_a_host!!"])
            .unwrap_err()
            .starts_with("--webhook-cert-hosts (\"not_a_host!!\")")
    );
}

#[test]
fn the_webhook_url_must_be_https_with_a_host() {
    for (url, reason) in [
        ("notaurl", "HTTPS only"),
        ("ftp://x", "HTTPS only"),
        ("http://127.0.0.1:9443", "HTTPS only"),
        ("https://", "does not parse"),
        ("https://user@127.0.0.1:9443", "user information"),
        ("https://127.0.0.1:9443/?x=1", "query or fragment"),
        ("https://127.0.0.1:9443/#top", "query or fragment"),
        ("https://127.0.0.1:99999", "port must be"),
        ("https://127.0.0.1:0", "port must be"),
        ("https://[fd00::1]:99999", "port must be"),
        ("https://127.0.0.1:", "port must be"),
        ("https://not_a_host:9443", "IP address or a DNS name"),
        ("", "does not parse"),
    ] {
        let error = check(&[&format!("--register-webhook-url={url}")]).expect_err(url);
        assert!(
            error.starts_with(&format!(
                "--register-webhook-url ({url:?}) must be an https:// URL with a host"
            )),
            "{url}: {error}"
        );
        assert!(error.contains(reason), "{url}: {error}");
    }
}

#[test]
fn the_certificate_timings_are_checked_with_the_other_flags() {
    let error = check(&["--cert-rotate-before-hours", "0"]).unwrap_err();
    assert!(
        error.starts_with("--cert-rotate-before-hours (0 h) must be at least twice"),
        "{error}"
    );
}

#[test]
fn a_blank_identity_is_refused() {
    for identity in ["", " ", "\t"] {
        let error = check_identity(identity).unwrap_err();
        assert!(
            error.starts_with("--identity (POD_NAME) must not be empty or only whitespace"),
            "{error}"
        );
        assert!(error.contains("released Lease"), "{error}");
    }
    assert_eq!(check_identity("sandbox-operator-7d9f-abcde"), Ok(()));
}

#[test]
fn user_namespaces_are_found_out_unless_set() {
    let parse = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .map(|cli| cli.run.user_namespaces)
    };
    assert_eq!(parse(&[]).unwrap(), UserNamespacesSetting::Auto);
    assert_eq!(
        parse(&["--user-namespaces", "enabled"]).unwrap(),
        UserNamespacesSetting::Enabled
    );
    assert_eq!(
        parse(&["--user-namespaces=disabled"]).unwrap(),
        UserNamespacesSetting::Disabled
    );
    assert!(parse(&["--user-namespaces", "yes"]).is_err());
}

#[test]
fn the_default_certificate_timings_are_valid() {
    assert_eq!(timings(&[]), Ok(()));
    // What the integration tests and the chart's tests pass.
    assert_eq!(timings(&["--cert-check-seconds", "1"]), Ok(()));
}

#[test]
fn a_renewal_window_shorter_than_two_checks_is_refused() {
    let error = timings(&["--cert-rotate-before-hours", "0"]).unwrap_err();
    assert!(
        error.starts_with(
            "--cert-rotate-before-hours (0 h) must be at least twice --cert-check-seconds (60 s)"
        ),
        "{error}"
    );
    let error = timings(&[
        "--cert-rotate-before-hours",
        "1",
        "--cert-check-seconds",
        "1801",
    ])
    .unwrap_err();
    assert!(
        error.contains("at least twice --cert-check-seconds (1801 s)"),
        "{error}"
    );
    assert_eq!(
        timings(&[
            "--cert-rotate-before-hours",
            "1",
            "--cert-check-seconds",
            "1800"
        ]),
        Ok(())
    );
    // The cap at half the validity counts.
    let error = timings(&[
        "--cert-validity-hours",
        "2",
        "--cert-rotate-before-hours",
        "1",
        "--cert-check-seconds",
        "1801",
    ])
    .unwrap_err();
    assert!(error.contains("at least twice"), "{error}");
    let error = timings(&[
        "--cert-validity-hours",
        "3",
        "--cert-rotate-before-hours",
        "2",
        "--cert-check-seconds",
        "3000",
    ])
    .unwrap_err();
    assert!(
        error.contains("capped at half of --cert-validity-hours (3 h) to 5400 s"),
        "{error}"
    );
}

#[test]
fn a_short_validity_alone_is_valid_its_window_capped_at_half() {
    // The default window (720 h) is longer than the validity: the cap
    // at half the validity applies, as it always did.
    assert_eq!(timings(&["--cert-validity-hours", "24"]), Ok(()));
    assert_eq!(
        timings(&[
            "--cert-validity-hours",
            "24",
            "--cert-rotate-before-hours",
            "24"
        ]),
        Ok(())
    );
}
