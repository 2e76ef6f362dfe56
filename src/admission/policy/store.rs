//! The current policy as the webhook and the controllers read it, swapped
//! atomically on reload; a failed reload keeps the last good policy.
//!
//! Each snapshot also carries the process's user-namespace fact
//! ([`UserNamespaces`], found out at start): a reload keeps it, and setting
//! it swaps in a snapshot that has it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tracing::{info, warn};

use super::super::user_namespaces::UserNamespaces;
use super::{Policy, PolicyError};

/// The current policy, shared by the webhook and whoever reloads it.
///
/// Clones share the same policy. Readers take a snapshot with
/// [`PolicyStore::current`] (lock-free) and use it for a whole review.
#[derive(Clone, Debug)]
pub struct PolicyStore {
    current: Arc<ArcSwap<Policy>>,
    /// The user-namespace fact every snapshot carries. Writers (a reload,
    /// a replace, the fact found out) hold the lock while they read the
    /// current value and store the next, so none of them undoes another.
    user_namespaces: Arc<Mutex<UserNamespaces>>,
}

impl Default for PolicyStore {
    fn default() -> Self {
        PolicyStore::new(Policy::default())
    }
}

impl PolicyStore {
    /// A store holding `policy`, with its user-namespace fact.
    pub fn new(policy: Policy) -> Self {
        PolicyStore {
            user_namespaces: Arc::new(Mutex::new(policy.user_namespaces)),
            current: Arc::new(ArcSwap::from_pointee(policy)),
        }
    }

    /// A store holding the policy in `path`.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        Ok(PolicyStore::new(Policy::from_file(path)?))
    }

    /// A snapshot of the current policy.
    pub fn current(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Replaces the policy, keeping the store's user-namespace fact. The
    /// caller is responsible for having checked it.
    pub fn replace(&self, policy: Policy) {
        self.install(policy);
    }

    /// Loads `path` and makes it the current policy (with the store's
    /// user-namespace fact).
    ///
    /// On any error (unreadable file, bad YAML, a policy that breaks a rule)
    /// the current policy stays in place and the error is returned, so a bad
    /// edit of a ConfigMap never leaves the webhook without a policy. A file
    /// of zero bytes is such an error here ([`PolicyError::EmptyFile`]),
    /// though at start it is the built-in policy: a poll may catch the file
    /// between its truncation and its rewrite, and the built-in policy is
    /// looser than most files. `{}` (or a comment) reloads the built-in
    /// policy on purpose.
    pub fn reload_from_file(&self, path: &Path) -> Result<Arc<Policy>, PolicyError> {
        let text = super::read_policy_file(path)?;
        if text.is_empty() {
            return Err(PolicyError::EmptyFile {
                path: path.to_owned(),
            });
        }
        Ok(self.install(Policy::from_yaml(&text)?))
    }

    /// The user-namespace fact the snapshots carry.
    pub fn user_namespaces(&self) -> UserNamespaces {
        *self.lock_user_namespaces()
    }

    /// Sets the user-namespace fact: the current policy is swapped for a
    /// copy that carries it (readers holding the old snapshot finish with
    /// it), and every later reload keeps it.
    pub fn set_user_namespaces(&self, fact: UserNamespaces) {
        let mut held = self.lock_user_namespaces();
        *held = fact;
        let mut policy = Policy::clone(&self.current.load());
        policy.user_namespaces = fact;
        self.current.store(Arc::new(policy));
    }

    /// Stores `policy` with the store's fact, under the fact's lock.
    fn install(&self, mut policy: Policy) -> Arc<Policy> {
        let held = self.lock_user_namespaces();
        policy.user_namespaces = *held;
        let policy = Arc::new(policy);
        self.current.store(Arc::clone(&policy));
        policy
    }

    fn lock_user_namespaces(&self) -> std::sync::MutexGuard<'_, UserNamespaces> {
        // The value is a plain enum: a panic elsewhere cannot leave it torn.
        self.user_namespaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows `path`: every `interval`, reloads it when its modification
    /// time or size changed, logging the outcome and telling `observe`
    /// whether it was taken. Runs until dropped; spawn it after the initial
    /// load.
    ///
    /// Polling (rather than inotify) works the same for a plain file and for
    /// a mounted ConfigMap, whose kubelet updates swap a symlink.
    pub async fn watch_file(
        self,
        path: PathBuf,
        interval: Duration,
        observe: impl Fn(bool) + Send + 'static,
    ) {
        let mut seen = file_stamp(&path).await;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let stamp = file_stamp(&path).await;
            if stamp == seen {
                continue;
            }
            seen = stamp;
            if seen.is_none() {
                warn!(path = %path.display(), "admission policy file is gone; keeping the current policy");
                continue;
            }
            match self.reload_from_file(&path) {
                Ok(policy) => {
                    info!(
                        path = %path.display(),
                        profile = ?policy.profile,
                        "admission policy reloaded"
                    );
                    policy.network.warn_unless_metadata_denied();
                    observe(true);
                }
                Err(error) => {
                    warn!(
                        path = %path.display(),
                        error = %error,
                        kind = error.label(),
                        "admission policy not reloaded; keeping the previous policy"
                    );
                    observe(false);
                }
            }
        }
    }
}

/// What identifies a version of a file for polling: modification time and size.
async fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watching_follows_edits_and_keeps_the_last_good_policy() {
        let directory = std::env::temp_dir().join(format!(
            "sandbox-operator-policy-watch-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("policy.yaml");
        std::fs::write(&path, "maxPoolReplicas: 1\n").unwrap();
        let store = PolicyStore::from_file(&path).unwrap();
        let outcomes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&outcomes);
        let watcher = tokio::spawn(store.clone().watch_file(
            path.clone(),
            Duration::from_millis(10),
            move |taken| seen.lock().unwrap().push(taken),
        ));
        let settle = |expected: i32| {
            let store = store.clone();
            async move {
                for _ in 0..200 {
                    if store.current().max_pool_replicas == expected {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        std::fs::write(&path, "maxPoolReplicas: 22222\n").unwrap();
        assert!(settle(22222).await);
        std::fs::write(&path, "maxPoolReplicas: lots\n").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.current().max_pool_replicas, 22222);
        std::fs::write(&path, "maxPoolReplicas: 3\n").unwrap();
        assert!(settle(3).await);
        watcher.abort();
        // The observer (the metrics) heard of the refused edit, and of the
        // good one after it.
        let outcomes = outcomes.lock().unwrap().clone();
        assert!(outcomes.contains(&false), "{outcomes:?}");
        assert_eq!(outcomes.last(), Some(&true), "{outcomes:?}");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn the_user_namespace_fact_is_in_every_snapshot_and_survives_reloads() {
        let store = PolicyStore::default();
        assert_eq!(store.current().user_namespaces, UserNamespaces::Unknown);
        let before = store.current();
        store.set_user_namespaces(UserNamespaces::Supported);
        assert_eq!(store.current().user_namespaces, UserNamespaces::Supported);
        // A new snapshot: caches keyed on the snapshot see the change.
        assert!(!Arc::ptr_eq(&before, &store.current()));
        assert_eq!(before.user_namespaces, UserNamespaces::Unknown);
        store.replace(Policy::from_yaml("maxPoolReplicas: 3").unwrap());
        assert_eq!(store.current().max_pool_replicas, 3);
        assert_eq!(store.current().user_namespaces, UserNamespaces::Supported);
        assert_eq!(store.clone().user_namespaces(), UserNamespaces::Supported);
    }

    /// A reload that catches the file mid-rewrite (`>` truncates it first)
    /// reads zero bytes: that is refused, naming the file, and the policy in
    /// force stays; at start an empty file is still the built-in policy, and
    /// a reload to `{}` (or a comment) still takes it on purpose.
    #[test]
    fn a_zero_byte_file_on_reload_keeps_the_previous_policy() {
        let directory = std::env::temp_dir().join(format!(
            "sandbox-operator-policy-empty-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("policy.yaml");

        std::fs::write(&path, "").unwrap();
        assert_eq!(
            *PolicyStore::from_file(&path).unwrap().current(),
            Policy::default()
        );

        std::fs::write(
            &path,
            "maxPoolReplicas: 7\nallowedVolumeTypes: [emptyDir]\n",
        )
        .unwrap();
        let store = PolicyStore::from_file(&path).unwrap();
        std::fs::write(&path, "").unwrap();
        let error = store.reload_from_file(&path).unwrap_err();
        assert_eq!(error.label(), "empty_file");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "policy file {} is empty (0 bytes)",
                path.display()
            )),
            "{message}"
        );
        assert_eq!(store.current().max_pool_replicas, 7);
        assert_eq!(store.current().allowed_volume_types, ["emptyDir"]);

        std::fs::write(&path, "{}\n").unwrap();
        assert_eq!(*store.reload_from_file(&path).unwrap(), Policy::default());
        std::fs::write(&path, "maxPoolReplicas: 7\n").unwrap();
        store.reload_from_file(&path).unwrap();
        std::fs::write(&path, "# the built-in policy\n").unwrap();
        assert_eq!(
            store.reload_from_file(&path).unwrap().max_pool_replicas,
            1000
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn a_failed_reload_keeps_the_last_good_policy() {
        let directory = std::env::temp_dir().join(format!(
            "sandbox-operator-policy-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("policy.yaml");

        std::fs::write(&path, "maxPoolReplicas: 7\n").unwrap();
        let store = PolicyStore::from_file(&path).unwrap();
        assert_eq!(store.current().max_pool_replicas, 7);

        std::fs::write(&path, "maxPoolReplicas: 9\nceilings: {memory: 64Qi}\n").unwrap();
        let error = store.reload_from_file(&path).unwrap_err();
        assert_eq!(error.label(), "syntax");
        assert_eq!(store.current().max_pool_replicas, 7);

        std::fs::remove_file(&path).unwrap();
        assert_eq!(store.reload_from_file(&path).unwrap_err().label(), "read");
        assert_eq!(store.current().max_pool_replicas, 7);

        std::fs::write(&path, "maxPoolReplicas: 9\n").unwrap();
        assert_eq!(store.reload_from_file(&path).unwrap().max_pool_replicas, 9);
        assert_eq!(store.clone().current().max_pool_replicas, 9);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
