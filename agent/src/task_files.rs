//! What the agent knows of its tasks' secrets and configs: which secrets
//! this node was ever sent and which its live tasks hold (ids only, for
//! `shoal info`), and whether the managers are in reach, without which no
//! task with files starts (swarm's rule: a cut-off worker keeps its running
//! tasks' secrets, and starts nothing new with them).
//!
//! The data itself is never kept here: it travels in the task's assignment
//! to the runtime, which puts it on the task's own tmpfs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use shoal_api::cluster::v1::{AssignmentSet, TaskFile, TaskFileKind};
use tokio::sync::watch;

use crate::local::lock;

/// Secret ids this node received and holds. In memory only: a restarted
/// shoald starts counting again.
#[derive(Debug, Default)]
pub struct SecretLedger {
    received: Mutex<BTreeSet<String>>,
    /// Task id → the secrets it holds.
    held: Mutex<HashMap<String, BTreeSet<String>>>,
}

fn secret_ids(files: &[TaskFile]) -> impl Iterator<Item = &str> {
    files
        .iter()
        .filter(|f| f.kind() == TaskFileKind::Secret)
        .map(|f| f.id.as_str())
}

impl SecretLedger {
    /// Records the secrets an assignment set carries.
    pub fn received(&self, set: &AssignmentSet) {
        let mut received = lock(&self.received);
        for t in &set.tasks {
            received.extend(secret_ids(&t.files).map(str::to_owned));
        }
    }

    /// Task `task` holds these files from now until [`release`](Self::release).
    pub fn hold(&self, task: &str, files: &[TaskFile]) {
        let ids: BTreeSet<String> = secret_ids(files).map(str::to_owned).collect();
        if !ids.is_empty() {
            lock(&self.held).insert(task.to_owned(), ids);
        }
    }

    pub fn release(&self, task: &str) {
        lock(&self.held).remove(task);
    }

    /// Every secret id this node was sent, sorted.
    pub fn received_ids(&self) -> Vec<String> {
        lock(&self.received).iter().cloned().collect()
    }

    /// The secret ids its live tasks hold now, sorted.
    pub fn held_ids(&self) -> Vec<String> {
        let held = lock(&self.held);
        let ids: BTreeSet<&String> = held.values().flatten().collect();
        ids.into_iter().cloned().collect()
    }
}

/// Whether this node is in touch with the managers: its assignment stream
/// is open and its last heartbeat was taken. Either failing first is
/// enough: a cut link fails the heartbeat within seconds, while the stream
/// waits for its keepalive.
#[derive(Debug, Clone)]
pub struct Contact {
    state: watch::Sender<Links>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Links {
    stream: bool,
    heartbeat: bool,
}

impl Default for Contact {
    fn default() -> Self {
        // No stream yet; a heartbeat is assumed until one is missed (a
        // manager's executor has only its stream to go by).
        let (state, _) = watch::channel(Links {
            stream: false,
            heartbeat: true,
        });
        Contact { state }
    }
}

impl Contact {
    /// The assignment stream delivers (true) or ended (false).
    pub fn set_stream(&self, up: bool) {
        self.state
            .send_if_modified(|l| std::mem::replace(&mut l.stream, up) != up);
    }

    /// A manager took this node's heartbeat (true) or none did (false).
    pub fn set_heartbeat(&self, up: bool) {
        self.state
            .send_if_modified(|l| std::mem::replace(&mut l.heartbeat, up) != up);
    }

    pub fn is_up(&self) -> bool {
        let l = *self.state.borrow();
        l.stream && l.heartbeat
    }

    /// Returns once the managers are in reach.
    pub async fn until_up(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives in `self`: the wait cannot fail.
        let _ = rx.wait_for(|l| l.stream && l.heartbeat).await;
    }
}

/// The runtime's view of a task's files. The control plane resolves every
/// target to an absolute path; a relative one (an older manager) is taken
/// as docker does, under `/run/secrets` for a secret and `/` for a config.
pub fn runtime_files(files: &[TaskFile]) -> Vec<shoal_runtime::TaskFile> {
    files
        .iter()
        .map(|f| {
            let target = match (f.target.starts_with('/'), f.kind()) {
                (true, _) => f.target.clone(),
                (false, TaskFileKind::Secret) => {
                    let name = if f.target.is_empty() {
                        &f.name
                    } else {
                        &f.target
                    };
                    format!("{}/{name}", shoal_runtime::SECRETS_DIR)
                }
                (false, TaskFileKind::Config) => {
                    let name = if f.target.is_empty() {
                        &f.name
                    } else {
                        &f.target
                    };
                    format!("/{name}")
                }
            };
            shoal_runtime::TaskFile {
                target,
                uid: f.uid,
                gid: f.gid,
                mode: f.mode,
                data: f.data.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::cluster::v1::TaskAssignment;

    fn secret(id: &str) -> TaskFile {
        TaskFile {
            kind: TaskFileKind::Secret.into(),
            id: id.into(),
            name: format!("{id}-name"),
            target: format!("/run/secrets/{id}"),
            data: b"hunter2".to_vec(),
            ..TaskFile::default()
        }
    }

    #[test]
    fn the_ledger_counts_secrets_by_id_and_forgets_what_ended() {
        let ledger = SecretLedger::default();
        let config = TaskFile {
            kind: TaskFileKind::Config.into(),
            id: "c1".into(),
            ..TaskFile::default()
        };
        let set = AssignmentSet {
            tasks: vec![
                TaskAssignment {
                    id: "t1".into(),
                    files: vec![secret("s1"), config.clone()],
                    ..TaskAssignment::default()
                },
                TaskAssignment {
                    id: "t2".into(),
                    files: vec![secret("s1"), secret("s2")],
                    ..TaskAssignment::default()
                },
            ],
            ..AssignmentSet::default()
        };
        ledger.received(&set);
        assert_eq!(ledger.received_ids(), ["s1", "s2"]);
        assert!(ledger.held_ids().is_empty());
        ledger.hold("t1", &set.tasks[0].files);
        ledger.hold("t2", &set.tasks[1].files);
        assert_eq!(ledger.held_ids(), ["s1", "s2"]);
        ledger.release("t2");
        assert_eq!(ledger.held_ids(), ["s1"]);
        ledger.release("t1");
        assert!(ledger.held_ids().is_empty());
        // Received stays received.
        ledger.received(&AssignmentSet::default());
        assert_eq!(ledger.received_ids(), ["s1", "s2"]);
    }

    #[tokio::test]
    async fn contact_needs_both_the_stream_and_the_heartbeat() {
        let contact = Contact::default();
        assert!(!contact.is_up(), "no stream yet");
        contact.set_stream(true);
        assert!(contact.is_up());
        contact.set_heartbeat(false);
        assert!(!contact.is_up());
        let waiter = tokio::spawn({
            let contact = contact.clone();
            async move { contact.until_up().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        contact.set_heartbeat(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("up again")
            .expect("the waiter");
    }

    #[test]
    fn targets_default_as_docker_places_them() {
        let relative = TaskFile {
            target: String::new(),
            ..secret("s1")
        };
        let config = TaskFile {
            kind: TaskFileKind::Config.into(),
            name: "app.conf".into(),
            ..TaskFile::default()
        };
        let files = runtime_files(&[secret("a"), relative, config]);
        let targets: Vec<&str> = files.iter().map(|f| f.target.as_str()).collect();
        assert_eq!(
            targets,
            ["/run/secrets/a", "/run/secrets/s1-name", "/app.conf"]
        );
        assert_eq!(files[0].data, b"hunter2");
    }
}
