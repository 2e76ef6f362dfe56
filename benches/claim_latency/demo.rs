//! `make demo`'s verdict on launch types. The tour names its claims after
//! what each is meant to show: `ws-<i>` (warm-sequential) is created once an
//! idle pool Pod is Ready, so it must be served Warm; `cs-<i>`
//! (cold-sequential) asks for `warmpool: none`, so it must be served Cold.
//! A demo whose table shows anything else fails, naming the claims, rather
//! than printing a tour that contradicts itself.

use sandbox_operator::api::LaunchType;

/// The launch type a demo claim is meant to get, read from its name; `None`
/// for a claim of another scenario (bursts), which the verdict leaves alone.
pub fn intended_launch(claim: &str) -> Option<LaunchType> {
    if claim.starts_with("ws-") {
        Some(LaunchType::Warm)
    } else if claim.starts_with("cs-") {
        Some(LaunchType::Cold)
    } else {
        None
    }
}

/// Each claim served otherwise than its name means (`served`: claim name
/// and the launch type its status said when it was first seen Ready), as
/// one line naming the claim; empty when every claim got what it was meant
/// to get.
pub fn wrong_launches<'a>(
    served: impl IntoIterator<Item = (&'a str, Option<LaunchType>)>,
) -> Vec<String> {
    let served: Vec<(&str, Option<LaunchType>)> = served.into_iter().collect();
    // A tour that judged no warm or no cold claim shows nothing: it fails
    // too (found by the second read: zero claims passed).
    let mut wrong: Vec<String> = [("ws-", LaunchType::Warm), ("cs-", LaunchType::Cold)]
        .into_iter()
        .filter(|(prefix, _)| !served.iter().any(|(claim, _)| claim.starts_with(prefix)))
        .map(|(prefix, meant)| format!("no {prefix} claim was served (meant {})", meant.as_str()))
        .collect();
    wrong.extend(served.into_iter().filter_map(|(claim, launch)| {
        let meant = intended_launch(claim)?;
        match launch {
            Some(got) if got == meant => None,
            Some(got) => Some(format!(
                "{claim} was served {} (meant {})",
                got.as_str(),
                meant.as_str()
            )),
            None => Some(format!(
                "{claim} was Ready without a launch type (meant {})",
                meant.as_str()
            )),
        }
    }));
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;
    use LaunchType::{Cold, Warm};

    #[test]
    fn a_tour_served_as_meant_passes() {
        let served = [
            ("ws-0", Some(Warm)),
            ("ws-1", Some(Warm)),
            ("cs-0", Some(Cold)),
        ];
        assert_eq!(wrong_launches(served), Vec::<String>::new());
    }

    #[test]
    fn a_warm_claim_served_cold_is_named() {
        let served = [
            ("ws-0", Some(Warm)),
            ("ws-1", Some(Cold)),
            ("cs-0", Some(Cold)),
        ];
        assert_eq!(
            wrong_launches(served),
            ["ws-1 was served cold (meant warm)"]
        );
    }

    #[test]
    fn a_cold_claim_served_warm_is_named() {
        let served = [("ws-0", Some(Warm)), ("cs-1", Some(Warm))];
        assert_eq!(
            wrong_launches(served),
            ["cs-1 was served warm (meant cold)"]
        );
    }

    #[test]
    fn a_claim_without_a_launch_type_fails() {
        let served = [("ws-2", None), ("cs-0", None)];
        assert_eq!(
            wrong_launches(served),
            [
                "ws-2 was Ready without a launch type (meant warm)",
                "cs-0 was Ready without a launch type (meant cold)",
            ]
        );
    }

    #[test]
    fn claims_of_other_scenarios_are_not_judged() {
        // Burst claims may go either way (overflow goes cold by design).
        let served = [
            ("ws-0", Some(Warm)),
            ("cs-0", Some(Cold)),
            ("wb-0", Some(Cold)),
            ("ob-3", None),
        ];
        assert!(wrong_launches(served).is_empty());
        assert_eq!(intended_launch("wsx"), None);
    }

    #[test]
    fn a_tour_without_warm_or_cold_claims_fails() {
        assert_eq!(
            wrong_launches([]),
            [
                "no ws- claim was served (meant warm)",
                "no cs- claim was served (meant cold)"
            ]
        );
        assert_eq!(
            wrong_launches([("ws-0", Some(Warm))]),
            ["no cs- claim was served (meant cold)"]
        );
    }
}
