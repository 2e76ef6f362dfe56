//! Per-pool member bookkeeping, kept up to date on every Pod watch event (by
//! [`crate::controller::index::PodIndex`]), so a pool reconcile reads its
//! counts in O(1) instead of passing over every member Pod.
//!
//! A member is a Pod whose controller ownerReference is the pool's uid AND
//! that carries the pool's label, in the pool's namespace (the same rule as
//! [`super::plan::is_member`]): members are grouped by exactly that triple,
//! so a group never holds a Pod someone merely labelled.
//!
//! Guarantees:
//! - the counts of a group are the sums of its members' contributions, added
//!   and removed in one place ([`Groups::put`], [`Groups::take`]);
//! - [`Groups::put`] says whether the change can alter the pool's decision
//!   (membership, readiness, terminating, ended, template label, template
//!   hash, schedulability); a change of the resourceVersion alone does not wake
//!   the pool (a victim chosen from an older one costs a benign 409);
//! - a member is current only when both its template label and its
//!   template hash are the pool's ([`current_key`]): a claim takes only a
//!   Pod whose template label names the claim's template, so a Pod of a
//!   pool pointed at another template with the same pod template (same
//!   hash) is outdated, and replaced by the rollout;
//! - a member's not-Ready -> Ready transition is queued as a refill for the
//!   pool to drain ([`Groups::take_refills`]), bounded per pool.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use k8s_openapi::api::core::v1::Pod;
use kube::{Resource, ResourceExt};

use super::super::{controller_uid, is_terminating, pod_has_ended, pod_is_ready};
use crate::api::{CREATED_AT_ANNOTATION, POOL_LABEL, TEMPLATE_HASH_LABEL, TEMPLATE_LABEL};

/// (namespace, pool name, pool uid): the pool a member belongs to.
pub type GroupKey = (String, String, String);

/// Refills queued per pool before the oldest are dropped (a pool that is
/// not reconciled for long loses refill samples, never memory).
const MAX_QUEUED_REFILLS: usize = 1024;

/// What a pool needs to know about one member Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Pod uid.
    pub uid: String,
    /// resourceVersion of the last event seen.
    pub resource_version: String,
    /// Running and Ready.
    pub ready: bool,
    /// Has a deletionTimestamp.
    pub terminating: bool,
    /// Succeeded or Failed.
    pub ended: bool,
    /// Its template label (the template it was made from).
    pub template: Option<String>,
    /// Its template hash label.
    pub hash: Option<String>,
    /// Creation time.
    pub created: Option<jiff::Timestamp>,
    /// The scheduler's message when it reports the Pod Unschedulable.
    pub unschedulable: Option<String>,
    /// The pool's `created-at` stamp.
    pub created_at: Option<jiff::Timestamp>,
    /// Was Running and Ready at some event seen (kept by [`Groups::put`]
    /// across events): only its first turn to Ready is a refill.
    pub ever_ready: bool,
}

impl Member {
    /// The group and summary of a Pod, if it is some pool's member. Pure.
    pub fn of(pod: &Pod) -> Option<(GroupKey, Member)> {
        let pool = pod.labels().get(POOL_LABEL)?;
        let owner = controller_uid(&pod.metadata)?;
        let key = (
            pod.namespace().unwrap_or_default(),
            pool.clone(),
            owner.to_string(),
        );
        let member = Member {
            uid: pod.uid().unwrap_or_default(),
            resource_version: pod.resource_version().unwrap_or_default(),
            ready: pod_is_ready(pod),
            terminating: is_terminating(pod),
            ended: pod_has_ended(pod),
            template: pod.labels().get(TEMPLATE_LABEL).cloned(),
            hash: pod.labels().get(TEMPLATE_HASH_LABEL).cloned(),
            created: pod.meta().creation_timestamp.as_ref().map(|t| t.0),
            unschedulable: unschedulable_message(pod),
            created_at: created_at(pod),
            ever_ready: false,
        };
        Some((key, member))
    }

    /// The part of a member that a pool's decision reads.
    fn decision(&self) -> (bool, bool, bool, Option<&str>, Option<&str>, bool) {
        (
            self.ready,
            self.terminating,
            self.ended,
            self.template.as_deref(),
            self.hash.as_deref(),
            self.unschedulable.is_some(),
        )
    }

    /// What it was made from, as [`current_key`] spells it: `None` without
    /// a template label or a template hash label (never current).
    pub fn current_key(&self) -> Option<String> {
        Some(current_key(
            self.template.as_deref()?,
            self.hash.as_deref()?,
        ))
    }

    /// Whether it was made from `current` (a [`current_key`]) and has not
    /// ended.
    pub fn is_current(&self, current: &str) -> bool {
        !self.ended
            && self
                .template
                .as_deref()
                .and_then(|t| current.strip_prefix(t)?.strip_prefix('/'))
                .is_some_and(|h| self.hash.as_deref() == Some(h))
    }

    /// Live: not terminating (pending deletes are left out by the caller).
    pub fn live(&self) -> bool {
        !self.terminating
    }

    /// Live, made from `current` (a [`current_key`]) and never Ready:
    /// still starting, or ended or failing without ever serving (a
    /// rollout replacement holds its place in the batch while this holds,
    /// see `plan::Rollout`).
    pub fn never_served(&self, current: &str) -> bool {
        self.live()
            && self.current_key().as_deref() == Some(current)
            && !self.ready
            && !self.ever_ready
    }
}

/// The key a pool counts its current members by: the template's name (the
/// Pod's template label, which a claim matches) and the template hash,
/// `<template>/<hash>`. A template name never contains `/`, so two pairs
/// never share a key. Pure.
pub fn current_key(template: &str, hash: &str) -> String {
    format!("{template}/{hash}")
}

/// The pool's `created-at` stamp of a Pod, when it parses. Pure.
pub fn created_at(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.annotations()
        .get(CREATED_AT_ANNOTATION)
        .and_then(|v| v.parse().ok())
}

/// The scheduler's message when it reports the Pod Unschedulable. Pure.
pub fn unschedulable_message(pod: &Pod) -> Option<String> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    (condition.reason.as_deref() == Some("Unschedulable"))
        .then(|| condition.message.clone().unwrap_or_default())
}

/// Counts of live members by [`current_key`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct HashCounts {
    /// Live and not ended.
    usable: usize,
    /// Live, not ended and Ready.
    ready: usize,
}

/// One pool's members and their running counts.
#[derive(Debug, Default)]
struct Group {
    members: HashMap<String, Member>,
    live: usize,
    by_version: HashMap<String, HashCounts>,
    unschedulable: BTreeMap<String, String>,
}

impl Group {
    /// Adds (`add`) or removes a member's contribution to the counts.
    fn count(&mut self, name: &str, m: &Member, add: bool) {
        let step = |n: &mut usize| {
            *n = if add { *n + 1 } else { n.saturating_sub(1) };
        };
        if m.live() {
            step(&mut self.live);
            if let (false, Some(current)) = (m.ended, m.current_key()) {
                let counts = self.by_version.entry(current.clone()).or_default();
                step(&mut counts.usable);
                if m.ready {
                    step(&mut counts.ready);
                }
                if *counts == HashCounts::default() {
                    self.by_version.remove(&current);
                }
            }
        }
        match (&m.unschedulable, add) {
            (Some(message), true) => {
                self.unschedulable.insert(name.to_string(), message.clone());
            }
            (Some(_), false) => {
                self.unschedulable.remove(name);
            }
            (None, _) => {}
        }
    }
}

/// A refill: a member that turned Ready since the pool last looked.
#[derive(Clone, Debug, PartialEq)]
pub struct Refill {
    /// Pod uid.
    pub uid: String,
    /// The pool's `created-at` stamp of the Pod.
    pub created_at: Option<jiff::Timestamp>,
}

/// What a pool reconcile reads: counts over its live members, pending
/// deletes left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolCounts {
    /// Live members (not terminating, no delete pending).
    pub idle: usize,
    /// Of those, made from the current template (its name and hash, see
    /// [`current_key`]) and not ended.
    pub current: usize,
    /// Of those, Ready.
    pub ready: usize,
    /// Every member, terminating ones included.
    pub members: usize,
    /// Members the scheduler reports Unschedulable, and one of them (name,
    /// message).
    pub unschedulable: usize,
    /// An example of an unschedulable member (name, message).
    pub unschedulable_example: Option<(String, String)>,
}

/// Every pool's members (see the module docs).
#[derive(Debug, Default)]
pub struct Groups {
    groups: HashMap<GroupKey, Group>,
    refills: HashMap<(String, String), VecDeque<Refill>>,
}

impl Groups {
    /// Records `member` as `name` in `key`'s group; returns whether the
    /// pool's decision may change (new member or a decision field changed).
    pub fn put(&mut self, key: &GroupKey, name: &str, mut member: Member) -> bool {
        let group = self.groups.entry(key.clone()).or_default();
        let old = group.members.remove(name);
        if let Some(old) = &old {
            group.count(name, old, false);
        }
        group.count(name, &member, true);
        let ready_now = member.ready && !member.terminating;
        // A refill is a member's first turn to Ready after it was seen not
        // Ready: a Pod that was Ready before and turns Ready again (a
        // container restart, a failed probe) is no refill, and counted as
        // one it took the Pod's whole age (hours) as its refill time, which
        // swelled the pool's sizing until 256 newer samples pushed it out
        // (found by review). A member first seen already Ready (a restart
        // of the operator) is none either: when it turned Ready is unknown.
        let refill = (old.as_ref().is_some_and(|o| !o.ever_ready) && ready_now).then(|| Refill {
            uid: member.uid.clone(),
            created_at: member.created_at,
        });
        member.ever_ready = ready_now || old.as_ref().is_some_and(|o| o.ever_ready);
        let changed = old.as_ref().map(Member::decision) != Some(member.decision());
        group.members.insert(name.to_string(), member);
        if let Some(refill) = refill {
            self.queue_refill(&key.0, &key.1, refill);
        }
        changed
    }

    /// Queues a refill (a Pod of pool `name` turned Ready) for the pool to
    /// drain; bounded per pool.
    pub fn queue_refill(&mut self, namespace: &str, name: &str, refill: Refill) {
        let queue = self
            .refills
            .entry((namespace.to_string(), name.to_string()))
            .or_default();
        if queue.len() >= MAX_QUEUED_REFILLS {
            queue.pop_front();
        }
        queue.push_back(refill);
    }

    /// Removes `name` from `key`'s group; returns whether it was a member.
    pub fn take(&mut self, key: &GroupKey, name: &str) -> bool {
        let Some(group) = self.groups.get_mut(key) else {
            return false;
        };
        let Some(old) = group.members.remove(name) else {
            return false;
        };
        group.count(name, &old, false);
        if group.members.is_empty() {
            self.groups.remove(key);
        }
        true
    }

    /// Whether `name` is a member of the pool that [`Member::never_served`].
    pub fn is_starting(&self, key: &GroupKey, name: &str, current: &str) -> bool {
        self.groups
            .get(key)
            .and_then(|g| g.members.get(name))
            .is_some_and(|m| m.never_served(current))
    }

    /// Whether `name` is a live member (not terminating) of the pool.
    pub fn is_live(&self, key: &GroupKey, name: &str) -> bool {
        self.groups
            .get(key)
            .and_then(|g| g.members.get(name))
            .is_some_and(Member::live)
    }

    /// The pool's counts for `current` (a [`current_key`]: the template's
    /// name and hash), leaving out the members named in `excluded` (deletes
    /// pending). O(1 + excluded).
    pub fn counts(&self, key: &GroupKey, current: &str, excluded: &HashSet<String>) -> PoolCounts {
        let Some(group) = self.groups.get(key) else {
            return PoolCounts::default();
        };
        let wanted = current;
        let current = group.by_version.get(wanted).copied().unwrap_or_default();
        let mut counts = PoolCounts {
            idle: group.live,
            current: current.usable,
            ready: current.ready,
            members: group.members.len(),
            unschedulable: group.unschedulable.len(),
            unschedulable_example: group
                .unschedulable
                .iter()
                .next()
                .map(|(n, m)| (n.clone(), m.clone())),
        };
        for m in excluded
            .iter()
            .filter_map(|n| group.members.get(n))
            .filter(|m| m.live())
        {
            counts.idle -= 1;
            if m.is_current(wanted) {
                counts.current -= 1;
                counts.ready -= usize::from(m.ready);
            }
        }
        counts
    }

    /// The live members (name, summary) not named in `excluded`. O(members):
    /// only for decisions that pick Pods (scale-down, rollout).
    pub fn live_members(
        &self,
        key: &GroupKey,
        excluded: &HashSet<String>,
    ) -> Vec<(String, Member)> {
        self.groups
            .get(key)
            .map(|g| {
                g.members
                    .iter()
                    .filter(|(n, m)| m.live() && !excluded.contains(*n))
                    .map(|(n, m)| (n.clone(), m.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drains the refills queued for the pool `namespace/name`.
    pub fn take_refills(&mut self, namespace: &str, name: &str) -> Vec<Refill> {
        self.refills
            .remove(&(namespace.to_string(), name.to_string()))
            .map(Vec::from)
            .unwrap_or_default()
    }

    /// Drops the queued refills of pools `keep` rejects (gone pools).
    pub fn retain_refills(&mut self, keep: impl Fn(&str, &str) -> bool) -> usize {
        let before = self.refills.len();
        self.refills.retain(|(ns, name), _| keep(ns, name));
        before - self.refills.len()
    }

    /// Number of groups and of queued refill lists.
    pub fn sizes(&self) -> (usize, usize) {
        (self.groups.len(), self.refills.len())
    }
}

#[cfg(test)]
mod tests;
