//! Named volumes on this node, as docker's `local` driver keeps them: a
//! directory `<state>/volumes/<name>/_data` made on first use and kept
//! across task restarts until `shoal volume rm`, which is refused while a
//! task here mounts it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use shoal_api::node::v1::VolumeDetail;

use crate::local::lock;

/// Longest volume name.
const MAX_NAME: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Docker's rule and words.
    #[error(
        "{name:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
    )]
    InvalidName { name: String },
    #[error("get {name}: no such volume")]
    NotFound { name: String },
    #[error(
        "remove {name}: volume is in use by {tasks} task(s) on this node; remove their services first"
    )]
    InUse { name: String, tasks: usize },
    #[error("volume {name}: {path}")]
    Io {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<VolumeError> for tonic::Status {
    fn from(e: VolumeError) -> Self {
        let msg = crate::swarm::chain(&e);
        match e {
            VolumeError::InvalidName { .. } => tonic::Status::invalid_argument(msg),
            VolumeError::NotFound { .. } => tonic::Status::not_found(msg),
            VolumeError::InUse { .. } => tonic::Status::failed_precondition(msg),
            VolumeError::Io { .. } => tonic::Status::internal(msg),
        }
    }
}

/// Docker's volume name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, which also
/// keeps a name from leaving the volumes directory.
pub fn check_name(name: &str) -> Result<(), VolumeError> {
    let mut bytes = name.bytes();
    let ok = name.len() <= MAX_NAME
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(VolumeError::InvalidName {
            name: name.to_owned(),
        })
    }
}

#[derive(Debug)]
pub struct Volumes {
    root: PathBuf,
    users: Mutex<HashMap<String, usize>>,
}

/// Held while a task mounts the volume.
#[derive(Debug)]
pub struct Mounted {
    volumes: Arc<Volumes>,
    name: String,
    pub path: PathBuf,
}

impl Mounted {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let mut users = lock(&self.volumes.users);
        if let Some(n) = users.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                users.remove(&self.name);
            }
        }
    }
}

impl Volumes {
    pub fn new(root: &Path) -> Volumes {
        Volumes {
            root: root.to_owned(),
            users: Mutex::default(),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn io(name: &str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
        let (name, path) = (name.to_owned(), path.to_owned());
        move |source| VolumeError::Io { name, path, source }
    }

    /// Makes the volume if it does not exist; its data directory.
    pub fn create(&self, name: &str) -> Result<PathBuf, VolumeError> {
        check_name(name)?;
        let data = self.dir(name).join("_data");
        std::fs::create_dir_all(&data).map_err(Self::io(name, &data))?;
        Ok(data)
    }

    /// Creates the volume if needed and marks it mounted by one more task.
    pub fn mount(self: &Arc<Self>, name: &str) -> Result<Mounted, VolumeError> {
        let path = self.create(name)?;
        *lock(&self.users).entry(name.to_owned()).or_default() += 1;
        Ok(Mounted {
            volumes: self.clone(),
            name: name.to_owned(),
            path,
        })
    }

    pub fn inspect(&self, name: &str) -> Result<VolumeDetail, VolumeError> {
        check_name(name)?;
        let dir = self.dir(name);
        let meta = match std::fs::metadata(dir.join("_data")) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound {
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(Self::io(name, &dir)(e)),
        };
        let created = meta.created().or_else(|_| meta.modified()).ok();
        Ok(VolumeDetail {
            name: name.to_owned(),
            driver: "local".into(),
            mountpoint: dir.join("_data").display().to_string(),
            created_at: created.map(rfc3339).unwrap_or_default(),
            in_use: lock(&self.users)
                .get(name)
                .map_or(0, |&n| u32::try_from(n).unwrap_or(u32::MAX)),
        })
    }

    pub fn list(&self) -> Result<Vec<VolumeDetail>, VolumeError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io("*", &self.root)(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_name(&name).is_ok()
                && let Ok(v) = self.inspect(&name)
            {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.inspect(name)?;
        // Checked under the lock a new mount takes, so none starts meanwhile.
        let users = lock(&self.users);
        if let Some(&tasks) = users.get(name) {
            return Err(VolumeError::InUse {
                name: name.to_owned(),
                tasks,
            });
        }
        let dir = self.dir(name);
        std::fs::remove_dir_all(&dir).map_err(Self::io(name, &dir))
    }
}

fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_docker_allows_them() {
        for ok in ["data", "a", "db_1.x-y", "0abc"] {
            check_name(ok).expect(ok);
        }
        for bad in ["", "-a", ".a", "_a", "a/b", "..", "a b", &"x".repeat(256)] {
            let e = check_name(bad).expect_err(bad).to_string();
            assert!(e.contains("[a-zA-Z0-9][a-zA-Z0-9_.-]"), "{e}");
        }
    }

    #[test]
    fn a_volume_keeps_its_data_and_is_not_removed_while_mounted() {
        let dir = tempfile::tempdir().expect("test");
        let volumes = Arc::new(Volumes::new(dir.path()));
        let m = volumes.mount("data").expect("test");
        std::fs::write(m.path.join("f"), b"kept").expect("test");
        drop(m);
        let again = volumes.mount("data").expect("test");
        assert_eq!(std::fs::read(again.path.join("f")).expect("test"), b"kept");
        assert_eq!(volumes.inspect("data").expect("test").in_use, 1);
        let e = volumes.remove("data").expect_err("test");
        assert!(matches!(e, VolumeError::InUse { tasks: 1, .. }), "{e}");
        drop(again);
        assert_eq!(volumes.list().expect("test").len(), 1);
        volumes.remove("data").expect("test");
        assert!(matches!(
            volumes.inspect("data"),
            Err(VolumeError::NotFound { .. })
        ));
        assert!(volumes.list().expect("test").is_empty());
    }
}
