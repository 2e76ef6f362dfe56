//! The network rules of a SandboxTemplate (`spec.networkPolicy`): every
//! `ipBlock` in its ingress `from` and egress `to` peers must hold ranges
//! the operator reads as the API server and the network plugin do.
//!
//! The operator narrows a template's egress blocks by the policy's
//! `network.denyEgressCIDRs` ([`crate::admission::restrict_egress`]), so it
//! must know which range a block means. The SandboxTemplate schema does not
//! check addresses, and an API server's lenient parser reads
//! `0169.254.169.254/32` as `169.254.169.254/32`, where the operator's
//! stricter one reads nothing. So each `cidr` and `except` entry must be a
//! CIDR in canonical form (no leading zeros, no host bits, lower-case IPv6
//! in its shortest form, not IPv4-mapped), and each `except` a smaller range
//! within its block's `cidr`, of the same family (Kubernetes refuses the
//! NetworkPolicy otherwise). The controllers drop an egress block they
//! cannot read, for templates stored before this rule or without the
//! webhook.

use serde_json::{Map, Value};

use super::super::field::{FieldPath, List, object_items, optional};
use super::super::policy::Cidr;
use super::Validator;

impl Validator<'_> {
    /// Every `ipBlock` of `spec.networkPolicy.ingress[].from[]` and
    /// `spec.networkPolicy.egress[].to[]`.
    pub(super) fn network_policy(&mut self, spec: &Map<String, Value>, spec_path: &FieldPath) {
        let (policy_path, Some(policy)) = self.object_field(spec, "networkPolicy", spec_path)
        else {
            return;
        };
        for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
            for (rule_path, rule) in self
                .ok(object_items(policy, direction, &policy_path))
                .unwrap_or_default()
            {
                for (block_path, block) in self.item_fields(rule, peers, "ipBlock", &rule_path) {
                    self.ip_block(block, &block_path);
                }
            }
        }
    }

    /// One `ipBlock`: a canonical `cidr`, and `except` entries that are
    /// canonical, smaller ranges within it.
    fn ip_block(&mut self, block: &Map<String, Value>, block_path: &FieldPath) {
        let cidr_path = block_path.key("cidr");
        let range = match self.ok(optional::<&str>(block, "cidr", block_path)) {
            Some(Some(text)) => match Cidr::parse_canonical(text) {
                Ok(range) => Some((text, range)),
                Err(rule) => {
                    self.deny(&cidr_path, rule);
                    None
                }
            },
            Some(None) => {
                self.deny(&cidr_path, "is required");
                None
            }
            None => None,
        };
        let Some(Some(excepts)) = self.ok(optional::<List>(block, "except", block_path)) else {
            return;
        };
        let except_path = block_path.key("except");
        for (index, entry) in excepts.iter().enumerate() {
            let entry_path = except_path.index(index);
            let Some(text) = entry.as_str() else {
                self.deny(&entry_path, "must be a string");
                continue;
            };
            let except = match Cidr::parse_canonical(text) {
                Ok(except) => except,
                Err(rule) => {
                    self.deny(&entry_path, rule);
                    continue;
                }
            };
            let Some((cidr, range)) = range else {
                continue;
            };
            if except.is_ipv4() != range.is_ipv4() {
                let family = |ipv4| if ipv4 { "IPv4" } else { "IPv6" };
                self.deny(
                    &entry_path,
                    format!(
                        "{text:?} is an {} range in the {} block {cidr:?}: each except must be of its \
                         block's family (put it in a block of its own family, e.g. {})",
                        family(except.is_ipv4()),
                        family(range.is_ipv4()),
                        if except.is_ipv4() { "0.0.0.0/0" } else { "::/0" },
                    ),
                );
            } else if !range.strictly_contains(&except) {
                self.deny(
                    &entry_path,
                    format!("{text:?} is not a smaller range within the block's cidr {cidr:?}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::core::admission::Operation;
    use serde_json::{Value, json};

    use super::super::validate;
    use crate::admission::tests::object_from_yaml;
    use crate::admission::{Policy, SandboxKind};

    /// The example template with `networkPolicy` set to `network`.
    fn template(network: Value) -> Value {
        let mut template = object_from_yaml(include_str!("../../../examples/template.yaml"));
        template["spec"]["networkPolicy"] = network;
        template
    }

    /// An egress rule to these peers, on port 443.
    fn egress_to(peers: Value) -> Value {
        json!({"egress": [{"ports": [{"port": 443}], "to": peers}]})
    }

    fn denials(operation: Operation, new: &Value, old: Option<&Value>) -> Vec<String> {
        validate(
            SandboxKind::SandboxTemplate,
            &operation,
            new,
            old,
            &Policy::default(),
        )
        .denials
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    fn created(network: Value) -> Vec<String> {
        denials(Operation::Create, &template(network), None)
    }

    #[test]
    fn canonical_blocks_in_both_directions_are_admitted() {
        assert!(created(json!({})).is_empty());
        assert!(
            created(json!({
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}, {"podSelector": {}}]}],
                "egress": [
                    {"to": [
                        {"namespaceSelector": {}},
                        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "10.1.0.0/16"]}},
                        {"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128"]}},
                        {"ipBlock": {"cidr": "2001:db8::/32"}},
                    ]},
                    {"ports": [{"port": 53, "protocol": "UDP"}]},
                ],
            }))
            .is_empty()
        );
    }

    #[test]
    fn a_range_the_operator_cannot_read_as_the_api_server_does_is_refused_by_path() {
        let peers = json!([
            {"podSelector": {}},
            {"ipBlock": {"cidr": "0169.254.169.254/32"}},
            {"ipBlock": {"cidr": "169.254.169.254/032"}},
            {"ipBlock": {"cidr": "10.0.0.1/8"}},
            {"ipBlock": {"cidr": "FD00:EC2::254/128"}},
            {"ipBlock": {"cidr": "::ffff:169.254.169.254/128"}},
            {"ipBlock": {"cidr": "169.254.169.254"}},
            {"ipBlock": {}},
        ]);
        assert_eq!(
            created(egress_to(peers)),
            [
                "spec.networkPolicy.egress[0].to[1].ipBlock.cidr: \"0169.254.169.254/32\" is not a \
                 CIDR: \"0169.254.169.254\" is not an IP address",
                "spec.networkPolicy.egress[0].to[2].ipBlock.cidr: \"169.254.169.254/032\" is not in \
                 canonical form; write it as 169.254.169.254/32",
                "spec.networkPolicy.egress[0].to[3].ipBlock.cidr: \"10.0.0.1/8\" has host bits set; \
                 write the network address, e.g. 10.0.0.0/8",
                "spec.networkPolicy.egress[0].to[4].ipBlock.cidr: \"FD00:EC2::254/128\" is not in \
                 canonical form; write it as fd00:ec2::254/128",
                "spec.networkPolicy.egress[0].to[5].ipBlock.cidr: \"::ffff:169.254.169.254/128\" is an \
                 IPv4-mapped IPv6 range; write the IPv4 range instead",
                "spec.networkPolicy.egress[0].to[6].ipBlock.cidr: \"169.254.169.254\" is not a CIDR \
                 (address/prefix)",
                "spec.networkPolicy.egress[0].to[7].ipBlock.cidr: is required",
            ]
        );
        // Ingress blocks follow the same rule.
        assert_eq!(
            created(json!({"ingress": [{"from": [{"ipBlock": {"cidr": "010.0.0.0/8"}}]}]})),
            [
                "spec.networkPolicy.ingress[0].from[0].ipBlock.cidr: \"010.0.0.0/8\" is not a CIDR: \
              \"010.0.0.0\" is not an IP address"
            ]
        );
    }

    #[test]
    fn excepts_must_be_canonical_smaller_ranges_of_their_block_family() {
        let block = json!({"ipBlock": {"cidr": "0.0.0.0/0", "except": [
            "169.254.0.0/16",
            "fd00:ec2::254/128",
            "0169.254.169.254/32",
            "0.0.0.0/0",
            7,
        ]}});
        let inside = json!({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}});
        let path = "spec.networkPolicy.egress[0].to";
        assert_eq!(
            created(egress_to(json!([block, inside]))),
            [
                format!(
                    "{path}[0].ipBlock.except[1]: \"fd00:ec2::254/128\" is an IPv6 range in the IPv4 \
                     block \"0.0.0.0/0\": each except must be of its block's family (put it in a block \
                     of its own family, e.g. ::/0)"
                ),
                format!(
                    "{path}[0].ipBlock.except[2]: \"0169.254.169.254/32\" is not a CIDR: \
                     \"0169.254.169.254\" is not an IP address"
                ),
                format!(
                    "{path}[0].ipBlock.except[3]: \"0.0.0.0/0\" is not a smaller range within the \
                     block's cidr \"0.0.0.0/0\""
                ),
                format!("{path}[0].ipBlock.except[4]: must be a string"),
                format!(
                    "{path}[1].ipBlock.except[0]: \"11.0.0.0/16\" is not a smaller range within the \
                     block's cidr \"10.0.0.0/8\""
                ),
            ]
        );
    }

    #[test]
    fn wrong_shapes_are_refused_by_path() {
        assert_eq!(
            created(json!("open")),
            ["spec.networkPolicy: must be an object"]
        );
        assert_eq!(
            created(json!({"egress": [{"to": [{"ipBlock": {"cidr": 10}}]}]})),
            ["spec.networkPolicy.egress[0].to[0].ipBlock.cidr: must be a string"]
        );
        assert_eq!(
            created(json!({"egress": [{"to": [{"ipBlock": "0.0.0.0/0"}]}]})),
            ["spec.networkPolicy.egress[0].to[0].ipBlock: must be an object"]
        );
    }

    #[test]
    fn the_rule_ratchets_like_the_others() {
        let bad = template(egress_to(
            json!([{"ipBlock": {"cidr": "0169.254.169.254/32"}}]),
        ));
        // A metadata-only write to a template stored before the rule is
        // admitted (the controllers drop the block they cannot read)...
        let mut labelled = bad.clone();
        labelled["metadata"]["labels"] = json!({"team": "a"});
        assert!(denials(Operation::Update, &labelled, Some(&bad)).is_empty());
        // ...a change to its network rules is checked whole...
        let mut changed = bad.clone();
        changed["spec"]["networkPolicy"]["egress"][0]["ports"][0]["port"] = json!(8443);
        assert_eq!(
            denials(Operation::Update, &changed, Some(&bad)),
            [
                "spec.networkPolicy.egress[0].to[0].ipBlock.cidr: \"0169.254.169.254/32\" is not a \
              CIDR: \"0169.254.169.254\" is not an IP address"
            ]
        );
        // ...and a terminating one is not checked.
        let mut terminating = changed.clone();
        terminating["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        assert!(denials(Operation::Update, &terminating, Some(&bad)).is_empty());
    }
}
