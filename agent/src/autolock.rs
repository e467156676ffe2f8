//! Autolock on a manager (swarm `--autolock`): which key opens this node's
//! Raft store and TLS key, and moving between the two ways of keeping them.
//!
//! - Unlocked: `store.key` (the store's key-encryption key) and `key.pem`
//!   (the TLS key) sit in the state directory, so a restart needs no one.
//! - Locked: neither is on disk. The KEK is the cluster's unlock key, which
//!   only the operator keeps; the TLS key is sealed under it in
//!   `key.sealed`. A restarted manager stays locked until `swarm unlock`.
//!
//! The unlock key lives in the replicated Cluster object; every manager
//! follows it ([`follow`]) and rewraps its own store's data key when it
//! changes, so each keeps its own data key under the one shared key.
//!
//! Each move writes the new form before it deletes the old, so that a crash
//! at any point leaves a state directory that still opens with the key the
//! store is wrapped with (see [`KeyFiles::lock`] and [`KeyFiles::unlock`]).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use shoal_ca::NodeKey;
use shoal_controlplane::{
    StoreKey,
    manager::Manager,
    model::ClusterState,
    store::{CryptoError, UnlockKey, UnlockKeyError},
};
use tokio::sync::Mutex;

use crate::swarm::{SwarmError, io, read, write};

/// docker's words, with our binary's name.
pub const LOCKED_MESSAGE: &str = "Swarm is encrypted and needs to be unlocked before it can be \
                                  used. Please use \"shoal swarm unlock\" to unlock it.";

const STORE_KEY: &str = "store.key";
const TLS_KEY: &str = "key.pem";
const SEALED_TLS_KEY: &str = "key.sealed";
/// The TLS key sealed under a new unlock key, written before the store is
/// rewrapped and renamed over `key.sealed` after: whichever key the store
/// opens with, one of the two files opens with it too.
const PENDING_TLS_KEY: &str = "key.sealed.new";
/// Associated data of the sealed TLS key: it cannot pass for another record.
const TLS_RECORD: &str = "swarm/key.pem";

/// How often a manager compares its key with the replicated one.
const FOLLOW_PERIOD: Duration = Duration::from_secs(1);

/// Whose data key can be rewrapped: the running manager's store, or a bare
/// store in tests.
pub trait Rewrap {
    fn rewrap(&self, kek: &StoreKey) -> Result<(), SwarmError>;
}

impl Rewrap for Manager {
    fn rewrap(&self, kek: &StoreKey) -> Result<(), SwarmError> {
        Ok(self.rotate_store_key(kek)?)
    }
}

/// The key files of one node's swarm directory.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    dir: PathBuf,
}

impl KeyFiles {
    pub fn new(dir: &Path) -> Self {
        KeyFiles {
            dir: dir.to_owned(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `store.key`, if this node keeps its KEK on disk.
    pub fn store_key(&self) -> Result<Option<StoreKey>, SwarmError> {
        let path = self.path(STORE_KEY);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = read(&path)?;
        let arr: [u8; StoreKey::LEN] = bytes.try_into().map_err(|_| SwarmError::Io {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "store.key has the wrong length",
            ),
        })?;
        Ok(Some(StoreKey::from_bytes(arr)))
    }

    pub fn write_store_key(&self, key: &StoreKey) -> Result<(), SwarmError> {
        write(&self.path(STORE_KEY), key.as_bytes(), 0o600)
    }

    /// Whether the plaintext TLS key is on disk.
    pub fn has_plain_tls_key(&self) -> bool {
        self.path(TLS_KEY).exists()
    }

    /// Writes the TLS key: sealed under `kek` when locked, else as PEM.
    pub fn write_tls_key(&self, key: &NodeKey, kek: Option<&StoreKey>) -> Result<(), SwarmError> {
        match kek {
            Some(kek) => self.write_sealed(SEALED_TLS_KEY, key, kek),
            None => write(&self.path(TLS_KEY), key.to_pem().as_bytes(), 0o600),
        }
    }

    fn write_sealed(&self, name: &str, key: &NodeKey, kek: &StoreKey) -> Result<(), SwarmError> {
        let sealed = kek
            .seal(TLS_RECORD, key.to_pem().as_bytes())
            .map_err(|source| SwarmError::Seal {
                path: self.path(name),
                source,
            })?;
        write(&self.path(name), &sealed, 0o600)
    }

    /// The TLS key. With `kek`, from `key.sealed` or a pending
    /// `key.sealed.new`, whichever opens; [`SwarmError::WrongUnlockKey`]
    /// if either exists and neither does. Without (or before the first
    /// sealing finished), from `key.pem`.
    pub fn tls_key(&self, kek: Option<&StoreKey>) -> Result<NodeKey, SwarmError> {
        if let Some(kek) = kek {
            let mut sealed_seen = false;
            for name in [SEALED_TLS_KEY, PENDING_TLS_KEY] {
                let path = self.path(name);
                if !path.exists() {
                    continue;
                }
                sealed_seen = true;
                match kek.open(TLS_RECORD, &read(&path)?) {
                    Ok(pem) => return pem_key(&path, &pem),
                    Err(CryptoError::Open { .. }) => {}
                    Err(source) => return Err(SwarmError::Seal { path, source }),
                }
            }
            if sealed_seen {
                return Err(SwarmError::WrongUnlockKey);
            }
        }
        let path = self.path(TLS_KEY);
        pem_key(&path, &read(&path)?)
    }

    /// Locks this node under `key`: the store rewrapped, the TLS key sealed,
    /// `store.key` and `key.pem` gone. Idempotent, so it also finishes a
    /// move a crash cut short.
    pub fn lock(
        &self,
        store: &impl Rewrap,
        tls: &NodeKey,
        key: &UnlockKey,
    ) -> Result<(), SwarmError> {
        let kek = key.kek();
        self.write_sealed(PENDING_TLS_KEY, tls, &kek)?;
        store.rewrap(&kek)?;
        let (pending, sealed) = (self.path(PENDING_TLS_KEY), self.path(SEALED_TLS_KEY));
        std::fs::rename(&pending, &sealed).map_err(io(&sealed))?;
        remove(&self.path(TLS_KEY))?;
        remove(&self.path(STORE_KEY))
    }

    /// Undoes [`KeyFiles::lock`] (autolock turned off): `key.pem` and a new
    /// `store.key` written, the store rewrapped under it, the sealed key gone.
    pub fn unlock(&self, store: &impl Rewrap, tls: &NodeKey) -> Result<(), SwarmError> {
        self.write_tls_key(tls, None)?;
        let kek = StoreKey::generate();
        self.write_store_key(&kek)?;
        store.rewrap(&kek)?;
        remove(&self.path(PENDING_TLS_KEY))?;
        remove(&self.path(SEALED_TLS_KEY))
    }

    /// Something a lock cut short left behind.
    fn lock_unfinished(&self) -> bool {
        [STORE_KEY, TLS_KEY, PENDING_TLS_KEY]
            .iter()
            .any(|n| self.path(n).exists())
    }
}

fn pem_key(path: &Path, pem: &[u8]) -> Result<NodeKey, SwarmError> {
    let text = std::str::from_utf8(pem).map_err(|e| SwarmError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    Ok(NodeKey::from_pem(text)?)
}

fn remove(path: &Path) -> Result<(), SwarmError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// A running manager's keys: what wraps its store now, and the TLS key to
/// seal again when that changes. Behind one lock, so that the follower and
/// a local `unlock-key --rotate` never rewrap concurrently.
pub struct Keys {
    files: KeyFiles,
    tls: NodeKey,
    /// `None` while the KEK is `store.key`.
    current: Option<UnlockKey>,
}

pub type SharedKeys = Arc<Mutex<Keys>>;

impl Keys {
    pub fn new(files: KeyFiles, tls: NodeKey, current: Option<UnlockKey>) -> SharedKeys {
        Arc::new(Mutex::new(Keys {
            files,
            tls,
            current,
        }))
    }

    /// Brings the files and the store in line with the cluster's key.
    pub fn reconcile(
        &mut self,
        store: &impl Rewrap,
        want: Option<UnlockKey>,
    ) -> Result<(), SwarmError> {
        match (want, &self.current) {
            (Some(want), Some(current)) if want == *current => {
                if self.files.lock_unfinished() {
                    self.files.lock(store, &self.tls, &want)?;
                }
            }
            (Some(want), _) => {
                self.files.lock(store, &self.tls, &want)?;
                tracing::info!("store rewrapped under the cluster's unlock key");
                self.current = Some(want);
            }
            (None, Some(_)) => {
                self.files.unlock(store, &self.tls)?;
                tracing::info!("autolock is off: the store key is back on disk");
                self.current = None;
            }
            (None, None) => {}
        }
        Ok(())
    }
}

/// The unlock key the cluster wants; `None` (outer) before the cluster
/// object has reached this manager.
pub fn wanted(state: &ClusterState) -> Option<Result<Option<UnlockKey>, UnlockKeyError>> {
    let cluster = state.cluster()?;
    let text = &cluster.unlock_key.0;
    Some(if text.is_empty() {
        Ok(None)
    } else {
        UnlockKey::parse(text).map(Some)
    })
}

/// Brings `keys` in line with the cluster's key as this manager has
/// applied it. The state is read under the keys' lock: applied state only
/// moves forward, so a reader can never undo a newer rewrap.
pub async fn sync(keys: &SharedKeys, manager: &Manager) -> Result<(), SwarmError> {
    let mut keys = keys.lock().await;
    let want = match wanted(&*manager.local_state().await) {
        None => return Ok(()),
        Some(want) => want.map_err(SwarmError::StoredUnlockKey)?,
    };
    keys.reconcile(manager, want)
}

/// On every manager, for as long as it runs: follow the replicated key.
pub async fn follow(keys: SharedKeys, manager: Arc<Manager>) {
    let mut tick = tokio::time::interval(FOLLOW_PERIOD);
    loop {
        tick.tick().await;
        if let Err(e) = sync(&keys, &manager).await {
            tracing::warn!(error = %crate::swarm::chain(&e), "following the cluster's unlock key");
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_controlplane::{Store, StoreError};

    use super::*;

    impl Rewrap for Store {
        fn rewrap(&self, kek: &StoreKey) -> Result<(), SwarmError> {
            self.rotate_kek(kek)
                .map_err(|e| SwarmError::Manager(e.into()))
        }
    }

    struct Node {
        _tmp: tempdir::Dir,
        files: KeyFiles,
    }

    /// A minimal temp dir: the agent has no tempfile dependency.
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new(tag: &str) -> std::io::Result<Dir> {
                let p = std::env::temp_dir().join(format!(
                    "shoald-autolock-{tag}-{}-{}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::create_dir_all(&p)?;
                Ok(Dir(p))
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _best_effort = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn node(tag: &str) -> anyhow::Result<Node> {
        let tmp = tempdir::Dir::new(tag)?;
        let files = KeyFiles::new(&tmp.0);
        Ok(Node { _tmp: tmp, files })
    }

    fn names(files: &KeyFiles) -> anyhow::Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(&files.dir)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        v.retain(|n| n != "raft");
        v.sort();
        Ok(v)
    }

    fn opens(dir: &Path, kek: &StoreKey) -> bool {
        !matches!(
            Store::open(dir.join("raft"), kek),
            Err(StoreError::WrongKey { .. })
        )
    }

    #[test]
    fn lock_rotate_and_unlock_keep_one_way_in() -> anyhow::Result<()> {
        let n = node("cycle")?;
        let raft = n.files.dir.join("raft");
        let tls = NodeKey::generate()?;
        let disk = StoreKey::generate();
        n.files.write_store_key(&disk)?;
        n.files.write_tls_key(&tls, None)?;
        let pem = tls.to_pem().to_string();
        let mut keys = Keys {
            files: n.files.clone(),
            tls: NodeKey::from_pem(&pem)?,
            current: None,
        };

        // Autolock turned on (a manager that joined an autolocked cluster).
        let k1 = UnlockKey::generate();
        {
            let store = Store::open(&raft, &disk)?;
            keys.reconcile(&store, Some(UnlockKey::parse(&k1.format())?))?;
        }
        assert_eq!(names(&n.files)?, ["key.sealed"]);
        assert!(!opens(&n.files.dir, &disk));
        assert!(opens(&n.files.dir, &k1.kek()));
        assert_eq!(*n.files.tls_key(Some(&k1.kek()))?.to_pem(), *pem);
        assert!(matches!(
            n.files.tls_key(Some(&UnlockKey::generate().kek())),
            Err(SwarmError::WrongUnlockKey)
        ));
        // The same key again changes nothing on disk.
        let before = std::fs::read(n.files.path(SEALED_TLS_KEY))?;
        {
            let store = Store::open(&raft, &k1.kek())?;
            keys.reconcile(&store, Some(UnlockKey::parse(&k1.format())?))?;
        }
        assert_eq!(std::fs::read(n.files.path(SEALED_TLS_KEY))?, before);

        // Rotated: only the new key opens either.
        let k2 = UnlockKey::generate();
        {
            let store = Store::open(&raft, &k1.kek())?;
            keys.reconcile(&store, Some(UnlockKey::parse(&k2.format())?))?;
        }
        assert!(!opens(&n.files.dir, &k1.kek()));
        assert!(opens(&n.files.dir, &k2.kek()));
        assert!(n.files.tls_key(Some(&k1.kek())).is_err());
        assert_eq!(*n.files.tls_key(Some(&k2.kek()))?.to_pem(), *pem);

        // Autolock off: keys back on disk, opening without anyone.
        {
            let store = Store::open(&raft, &k2.kek())?;
            keys.reconcile(&store, None)?;
        }
        assert_eq!(names(&n.files)?, ["key.pem", "store.key"]);
        let back = n
            .files
            .store_key()?
            .ok_or(anyhow::anyhow!("no store.key"))?;
        assert!(opens(&n.files.dir, &back));
        assert!(!opens(&n.files.dir, &k2.kek()));
        assert_eq!(*n.files.tls_key(None)?.to_pem(), *pem);
        Ok(())
    }

    #[test]
    fn a_rotation_cut_short_still_opens_with_the_key_the_store_has() -> anyhow::Result<()> {
        let n = node("crash")?;
        let raft = n.files.dir.join("raft");
        let tls = NodeKey::generate()?;
        let (k1, k2) = (UnlockKey::generate(), UnlockKey::generate());
        n.files.write_tls_key(&tls, Some(&k1.kek()))?;
        let store = Store::open(&raft, &k1.kek())?;
        // Crash after the pending file and the rewrap, before the rename.
        n.files.write_sealed(PENDING_TLS_KEY, &tls, &k2.kek())?;
        store.rewrap(&k2.kek())?;
        drop(store);
        assert!(n.files.tls_key(Some(&k2.kek())).is_ok());
        assert!(opens(&n.files.dir, &k2.kek()));
        // Unlocked with k2, the follower finishes the move.
        let mut keys = Keys {
            files: n.files.clone(),
            tls,
            current: Some(UnlockKey::parse(&k2.format())?),
        };
        let store = Store::open(&raft, &k2.kek())?;
        keys.reconcile(&store, Some(UnlockKey::parse(&k2.format())?))?;
        assert_eq!(names(&n.files)?, ["key.sealed"]);
        assert!(n.files.tls_key(Some(&k2.kek())).is_ok());
        Ok(())
    }

    #[test]
    fn wanted_reads_the_cluster_key() -> anyhow::Result<()> {
        let mut state = ClusterState::default();
        assert!(wanted(&state).is_none());
        let mut c = shoal_controlplane::model::Cluster {
            id: "c".into(),
            version: 0,
            name: "default".into(),
            settings: Default::default(),
            join_tokens: Default::default(),
            root_ca: Default::default(),
            removed_nodes: Default::default(),
            unlock_key: Default::default(),
            network_keys: Default::default(),
        };
        state.clusters.insert("c".into(), c.clone());
        assert!(matches!(wanted(&state), Some(Ok(None))));
        let k = UnlockKey::generate();
        c.unlock_key.0 = k.format();
        state.clusters.insert("c".into(), c.clone());
        assert!(matches!(wanted(&state), Some(Ok(Some(w))) if w == k));
        c.unlock_key.0 = "garbage".into();
        state.clusters.insert("c".into(), c);
        assert!(matches!(wanted(&state), Some(Err(UnlockKeyError::Prefix))));
        Ok(())
    }
}
