//! The `network` section of the policy: address ranges sandboxes may never
//! reach (by default the cloud instance metadata addresses, where clouds
//! serve credentials: IPv4 link-local `169.254.0.0/16`, EC2's IPv6
//! `fd00:ec2::254` and Alibaba Cloud's `100.100.100.200`), and what that
//! means for a NetworkPolicy's egress rules.
//!
//! Guarantees: every CIDR in the section is checked when the policy is
//! loaded (canonical form, prefix in range, not the whole address family,
//! not an IPv4-mapped IPv6 range: the template rule [`Cidr::parse_canonical`]);
//! [`restrict_egress`] never widens the rules it is given (an `ipBlock` it
//! cannot read is dropped, not kept), and with an empty list it returns them
//! unchanged (no egress section when there was none).

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyEgressRule, NetworkPolicyPeer};
use serde::{Deserialize, Serialize};

/// What the policy file says about sandbox networking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct NetworkRules {
    /// Address ranges (CIDR, IPv4 or IPv6) no sandbox may send to; every
    /// NetworkPolicy the operator makes for sandboxes excepts them from its
    /// egress. Empty: egress is left as the template says.
    #[serde(rename = "denyEgressCIDRs")]
    pub deny_egress_cidrs: Vec<String>,
    /// The NetworkPolicy of a Sandbox made without a claim (see
    /// [`StandalonePolicy`]); claimed and idle Pods have theirs whatever
    /// this says.
    pub standalone_policy: StandalonePolicy,
}

/// What the operator's NetworkPolicy for a standalone Sandbox (one no claim
/// made) does. A NetworkPolicy can only deny a range by allowing the rest,
/// and policies add up: in a namespace that denies egress by default, the
/// deny list's policy opens egress to everything else, so such a cluster
/// wants `none` (or `isolated` with an empty deny list, which says nothing
/// about egress).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StandalonePolicy {
    /// Egress everywhere but the denied ranges; ingress left as the cluster
    /// has it (a standalone Sandbox has no template saying what may reach
    /// it, and its user reaches it through its Service, like the seed's AIO
    /// workbench). With an empty deny list: no policy.
    #[default]
    Egress,
    /// As `egress`, and all ingress denied, as for an idle Pod whose
    /// template allows none. With an empty deny list: ingress only.
    Isolated,
    /// No policy: a standalone Sandbox's network is left to the namespace's
    /// own policies, and the deny list does not reach it.
    None,
}

/// The default denied ranges: IPv4 link-local (the metadata address
/// 169.254.169.254 of most clouds, and of EC2, GCE, Azure, OpenStack), EC2's
/// IPv6 metadata address and Alibaba Cloud's metadata address. Each lands in
/// the `except` of the block of its own family.
pub const DEFAULT_DENY_EGRESS: [&str; 3] =
    ["169.254.0.0/16", "fd00:ec2::254/128", "100.100.100.200/32"];

/// The cloud instance metadata addresses the deny list is checked against
/// (see [`NetworkRules::open_metadata_addresses`]).
pub const INSTANCE_METADATA_ADDRESSES: [&str; 3] =
    ["169.254.169.254", "fd00:ec2::254", "100.100.100.200"];

impl Default for NetworkRules {
    fn default() -> Self {
        NetworkRules {
            deny_egress_cidrs: DEFAULT_DENY_EGRESS.map(str::to_owned).to_vec(),
            standalone_policy: StandalonePolicy::Egress,
        }
    }
}

impl NetworkRules {
    /// Checks every CIDR; the error is `(field, rule)`, e.g.
    /// `("network.denyEgressCIDRs[1]", "\"10.0.0.1/8\" has host bits set ...")`.
    pub fn check(&self) -> Result<(), (String, String)> {
        for (index, text) in self.deny_egress_cidrs.iter().enumerate() {
            Cidr::parse(text)
                .map_err(|rule| (format!("network.denyEgressCIDRs[{index}]"), rule))?;
        }
        Ok(())
    }

    /// The cloud instance metadata addresses ([`INSTANCE_METADATA_ADDRESSES`])
    /// the deny list leaves open, in that order. Setting the list replaces
    /// the default rather than adding to it.
    pub fn open_metadata_addresses(&self) -> Vec<&'static str> {
        let deny = self.deny_egress();
        INSTANCE_METADATA_ADDRESSES
            .into_iter()
            .filter(|address| {
                let address: IpAddr = address.parse().expect("a fixed address");
                let host = Cidr {
                    addr: address,
                    prefix: if address.is_ipv4() { 32 } else { 128 },
                };
                !deny.iter().any(|denied| denied.contains(&host))
            })
            .collect()
    }

    /// Whether the deny list covers every cloud instance metadata address
    /// (see [`NetworkRules::open_metadata_addresses`]).
    pub fn denies_instance_metadata(&self) -> bool {
        self.open_metadata_addresses().is_empty()
    }

    /// Logs a warning naming the instance metadata addresses the deny list
    /// leaves open, if any (see [`NetworkRules::open_metadata_addresses`]).
    pub fn warn_unless_metadata_denied(&self) {
        let open = self.open_metadata_addresses();
        if !open.is_empty() {
            tracing::warn!(
                deny_egress_cidrs = ?self.deny_egress_cidrs,
                open = ?open,
                "network.denyEgressCIDRs does not cover the cloud instance metadata address(es) {}: sandboxes can reach them (the list replaces the default {} rather than adding to it; add them back unless that is meant)",
                open.join(", "),
                DEFAULT_DENY_EGRESS.join(", "),
            );
        }
    }

    /// The denied ranges, parsed (the policy was checked when loaded, so
    /// nothing is dropped in practice).
    pub fn deny_egress(&self) -> Vec<Cidr> {
        self.deny_egress_cidrs
            .iter()
            .filter_map(|text| Cidr::parse(text).ok())
            .collect()
    }
}

/// An address range: a network address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses a deny-list range, `a.b.c.d/n` or `x::y/n`, as the webhook
    /// requires a template's ranges ([`Cidr::parse_canonical`]: no
    /// IPv4-mapped IPv6 range, no host bits, written as the operator writes
    /// it, since Kubernetes keeps CIDRs in canonical form and the range goes
    /// into every sandbox NetworkPolicy's `except`), and refuses prefix 0 (a
    /// NetworkPolicy cannot except a whole family from itself; deny all
    /// egress with the template instead).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let cidr = Cidr::parse_block(text)?;
        if cidr.prefix == 0 {
            return Err(format!(
                "{text:?} covers the whole address family; a prefix of at least 1 is required"
            ));
        }
        cidr.require_canonical(text)?;
        Ok(cidr)
    }

    /// Parses a template's `ipBlock` range as the operator reads it: prefix 0
    /// and host bits allowed (the API server masks them), but not an
    /// IPv4-mapped IPv6 range (`::ffff:a.b.c.d`), which a network plugin may
    /// match as the IPv4 address, where no IPv6 `except` applies.
    pub(crate) fn parse_block(text: &str) -> Result<Cidr, String> {
        let cidr = Cidr::parse_any(text)?;
        let mapped = Cidr {
            addr: IpAddr::V6(std::net::Ipv4Addr::UNSPECIFIED.to_ipv6_mapped()),
            prefix: 96,
        };
        if mapped.contains(&cidr) {
            return Err(format!(
                "{text:?} is an IPv4-mapped IPv6 range; write the IPv4 range instead"
            ));
        }
        Ok(cidr)
    }

    /// Parses a template's `ipBlock` range as the webhook requires it: as
    /// [`Cidr::parse_block`], with no host bits and written as the operator
    /// writes it (no leading zeros, lower-case IPv6 in its shortest form), so
    /// the API server and every network plugin read the range the operator
    /// narrowed.
    pub(crate) fn parse_canonical(text: &str) -> Result<Cidr, String> {
        let cidr = Cidr::parse_block(text)?;
        cidr.require_canonical(text)?;
        Ok(cidr)
    }

    /// That `text`, which parsed as this range, has no host bits and is
    /// written as the operator writes it (no leading zeros or sign,
    /// lower-case IPv6 in its shortest form).
    fn require_canonical(&self, text: &str) -> Result<(), String> {
        let network = Cidr {
            addr: self.address_of(self.network()),
            prefix: self.prefix,
        };
        if network != *self {
            return Err(format!(
                "{text:?} has host bits set; write the network address, e.g. {network}"
            ));
        }
        if self.to_string() != text {
            return Err(format!(
                "{text:?} is not in canonical form; write it as {self}"
            ));
        }
        Ok(())
    }

    /// Whether `other` is a smaller range within this one, as an `except`
    /// entry must be of its block's `cidr`.
    pub(crate) fn strictly_contains(&self, other: &Cidr) -> bool {
        self.contains(other) && other.prefix > self.prefix
    }

    /// Parses any syntactically valid CIDR, prefix 0 and host bits included
    /// (as a template's `ipBlock` may hold).
    fn parse_any(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR (address/prefix)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not a CIDR: {addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{text:?} is not a CIDR: prefix must be 0 to {max}"))?;
        Ok(Cidr { addr, prefix })
    }

    /// Whether this is an IPv4 range.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    fn bits(&self) -> u128 {
        match self.addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    fn width(&self) -> u8 {
        if self.is_ipv4() { 32 } else { 128 }
    }

    fn network(&self) -> u128 {
        let host = u32::from(self.width() - self.prefix);
        if host >= 128 {
            0
        } else {
            self.bits() >> host << host
        }
    }

    fn address_of(&self, bits: u128) -> IpAddr {
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(
                u32::try_from(bits).unwrap_or_default(),
            )),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(bits)),
        }
    }

    /// Whether `other` lies within this range (same family, at least as long
    /// a prefix, same leading bits).
    pub fn contains(&self, other: &Cidr) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && other.prefix >= self.prefix
            && Cidr {
                addr: other.addr,
                prefix: self.prefix,
            }
            .network()
                == self.network()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The whole IPv4 and IPv6 space as peers, each family excepting its own
/// denied ranges.
pub fn everywhere_except(deny: &[Cidr]) -> Vec<NetworkPolicyPeer> {
    [("0.0.0.0/0", true), ("::/0", false)]
        .into_iter()
        .map(|(cidr, v4)| {
            let except: Vec<String> = deny
                .iter()
                .filter(|d| d.is_ipv4() == v4)
                .map(ToString::to_string)
                .collect();
            NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.to_owned(),
                    except: (!except.is_empty()).then_some(except),
                }),
                ..Default::default()
            }
        })
        .collect()
}

/// Egress rules that allow what `rules` allow minus the `deny` ranges.
///
/// - no rules (`None`) with a non-empty `deny`: one rule to everywhere
///   except the denied ranges (a sandbox keeps its normal egress, DNS
///   included);
/// - a rule without `to` (any destination): its destinations become
///   everywhere except the denied ranges, ports kept;
/// - an `ipBlock` peer: the denied ranges inside it join its `except`; a
///   peer lying wholly inside a denied range is dropped, and a rule left
///   without peers is dropped (an empty `to` would mean any destination);
/// - an `ipBlock` peer whose `cidr` the operator cannot read (see
///   [`Cidr::parse_block`]) is dropped, with a warning: an API server may
///   read `0169.254.169.254/32` as `169.254.169.254/32`, so keeping it as
///   written could open a denied range. The webhook refuses such ranges in
///   new templates; this covers templates stored before or without it;
/// - pod and namespace selector peers are kept: they name Pods, whose
///   addresses come from the Pod network, not from the denied ranges.
///
/// With an empty `deny` the rules come back unchanged. Pure but for the
/// warning.
pub fn restrict_egress(
    rules: Option<Vec<NetworkPolicyEgressRule>>,
    deny: &[Cidr],
) -> Option<Vec<NetworkPolicyEgressRule>> {
    if deny.is_empty() {
        return rules;
    }
    let Some(rules) = rules else {
        return Some(vec![NetworkPolicyEgressRule {
            to: Some(everywhere_except(deny)),
            ports: None,
        }]);
    };
    let restricted = rules
        .into_iter()
        .filter_map(|mut rule| {
            match rule.to.take().filter(|to| !to.is_empty()) {
                None => rule.to = Some(everywhere_except(deny)),
                Some(peers) => {
                    let peers: Vec<NetworkPolicyPeer> = peers
                        .into_iter()
                        .filter_map(|peer| restrict_peer(peer, deny))
                        .collect();
                    if peers.is_empty() {
                        return None;
                    }
                    rule.to = Some(peers);
                }
            }
            Some(rule)
        })
        .collect();
    Some(restricted)
}

/// One peer minus the denied ranges; `None` when nothing of it is left.
fn restrict_peer(mut peer: NetworkPolicyPeer, deny: &[Cidr]) -> Option<NetworkPolicyPeer> {
    let Some(block) = peer.ip_block.as_mut() else {
        return Some(peer);
    };
    // A template's network rules are a field of the SandboxTemplate, whose
    // schema does not check addresses: a range the operator cannot read may
    // be read otherwise downstream and cover a denied range, so it goes.
    let range = match Cidr::parse_block(&block.cidr) {
        Ok(range) => range,
        Err(rule) => {
            tracing::warn!(
                cidr = %block.cidr,
                "a template egress ipBlock the operator cannot narrow by network.denyEgressCIDRs is left out of the sandbox NetworkPolicy: {rule}"
            );
            return None;
        }
    };
    if deny.iter().any(|d| d.contains(&range)) {
        return None;
    }
    let mut except = block.except.take().unwrap_or_default();
    for denied in deny.iter().filter(|d| range.contains(d)) {
        let text = denied.to_string();
        if !except.contains(&text) {
            except.push(text);
        }
    }
    block.except = (!except.is_empty()).then_some(except);
    Some(peer)
}

#[cfg(test)]
mod tests;
