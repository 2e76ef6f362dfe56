//! Integration tests against a real kube-apiserver (etcd, controller-manager,
//! scheduler, KWOK) started by `tests/controlplane/cluster.sh`.
//! One binary, so the control plane and the CRDs are set up once.

mod chart;
mod churn;
mod claim_cli;
mod claims;
mod common;
mod controlplane;
mod crds;
mod faults;
mod fixtures;
mod guard;
mod leader;
mod metrics;
mod network;
mod network_standalone;
mod own_admission;
mod pool_rename;
mod pool_sizing;
mod pss;
mod quickstart;
mod resources;
mod sandbox;
mod trust;
mod webhook;
