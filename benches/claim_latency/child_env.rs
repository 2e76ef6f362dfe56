//! The operator child's environment: the bench passes every setting it
//! relies on as a flag, and takes out every variable the operator's flags
//! would read instead (clap's `env = "..."`: every `SANDBOX_*`, and
//! `POD_NAME`, `POD_NAMESPACE`), so that a `SANDBOX_CLAIM_NETWORK_POLICY=per-template`
//! or `SANDBOX_EVENTS=false` left in the shell cannot change what the run
//! measures while its table prints the defaults. Only what the bench sets
//! itself (`KUBECONFIG`, `RUST_LOG`) is given on top.

/// Variables the operator's flags read that do not start with `SANDBOX_`.
pub const OTHER_FLAG_VARIABLES: [&str; 2] = ["POD_NAME", "POD_NAMESPACE"];

/// Which of the inherited variable `names` the child must not see.
pub fn to_remove(names: impl IntoIterator<Item = String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| n.starts_with("SANDBOX_") || OTHER_FLAG_VARIABLES.contains(&n.as_str()))
        .collect()
}

/// [`to_remove`] of this process's environment.
pub fn inherited_to_remove() -> Vec<String> {
    to_remove(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_an_operator_flag_reads_is_taken_out() {
        let source = include_str!("../../src/cli/run_args.rs");
        let read: Vec<String> = source
            .split("env = \"")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_string())
            .collect();
        assert!(read.len() > 30, "the flags' variables were found: {read:?}");
        assert!(read.iter().any(|n| n == "SANDBOX_CLAIM_NETWORK_POLICY"));
        assert_eq!(to_remove(read.clone()), read, "each is taken out");
    }

    #[test]
    fn other_variables_are_kept() {
        let names = [
            "PATH",
            "HOME",
            "SANDBOX_EVENTS",
            "POD_NAME",
            "XSANDBOX_Y",
            "TMPDIR",
        ];
        assert_eq!(
            to_remove(names.map(String::from)),
            vec!["SANDBOX_EVENTS", "POD_NAME"]
        );
    }
}
