//! The part of the desired set that must survive a restart: the cameras the API asked for (with their full
//! spec), kept in `<data_dir>/cameras.json`.
//!
//! Only cameras started or registered through the API are kept here; the configuration file's cameras are
//! persistent already. The file is read once, at start; after that the [`Gateway`](super::Gateway) owns the
//! truth (its desired set) and hands this store a snapshot after every change. Each save rewrites the whole
//! (small) file through a temporary file, `fsync`, `rename` and an `fsync` of the directory, so a crash or
//! power cut leaves either the old or the new file, never a torn one. Saves are numbered: one that arrives
//! after a newer one was written is skipped, so the file never goes back in time. The file has mode 0600
//! because specs carry camera passwords.
//!
//! A file that cannot be read or parsed is never overwritten: it is renamed aside to
//! `cameras.json.corrupt-<unix seconds>` and the problem is reported ([`StateFile::problem`]), so the
//! operator can repair it by hand. If even the rename fails, the store refuses all writes rather than
//! destroy what may be the only copy of the operator's cameras.
//!
//! Saving blocks on the disk: call [`StateFile::save`] from a blocking thread, never from an async task.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::{CameraId, StreamSpec};

/// The state file's name inside the data directory.
pub const STATE_FILE: &str = "cameras.json";

/// The format version written; a file with another version is treated as unreadable (kept aside).
const VERSION: u32 = 1;

/// A change to the desired state could not be saved.
#[derive(Debug, Error)]
pub enum StateError {
    /// Writing the file (or its temporary file, or the directory) failed.
    #[error("cannot save the desired state to {path}: {source}")]
    Write {
        /// The state file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The existing file could not be moved aside, so it is not overwritten.
    #[error("not saving the desired state: {0}")]
    ReadOnly(String),
}

/// One camera the API asked for, as the file keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedCamera {
    /// The full spec, credentials included (hence the file's mode).
    pub spec: StreamSpec,
    /// Started on demand by viewers (SRS hooks) instead of running all the time: `false`, `true` or `"warm"`
    /// (files written before warm cameras existed hold a plain bool, which still reads).
    #[serde(default)]
    pub on_demand: super::desired::OnDemand,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    version: u32,
    cameras: Vec<SavedCamera>,
}

/// The state file: read once by [`open`](Self::open), rewritten whole by [`save`](Self::save).
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// Why the file found at start could not be used, if it could not; shown by `/readyz`.
    problem: Option<String>,
    /// `Some` when the file could not be moved aside: then nothing is written.
    read_only: Option<String>,
    /// The number of the newest snapshot written; held while writing, so saves never interleave.
    written: Mutex<u64>,
}

impl StateFile {
    /// Opens (or starts) the store in `data_dir`, creating the directory if needed, and returns the cameras
    /// it holds. A missing file is an empty state; an unreadable or corrupt one is moved aside and reported
    /// through [`problem`](Self::problem). Fails only when the directory itself cannot be created.
    pub fn open(data_dir: &Path) -> io::Result<(StateFile, Vec<SavedCamera>)> {
        fs::create_dir_all(data_dir)?;
        let path = data_dir.join(STATE_FILE);
        let mut store = StateFile { path, problem: None, read_only: None, written: Mutex::new(0) };
        let cameras = match load(&store.path) {
            Ok(cameras) => cameras.into_values().collect(),
            Err(reason) => {
                let aside = aside_path(&store.path);
                match fs::rename(&store.path, &aside) {
                    Ok(()) => {
                        store.problem = Some(format!(
                            "{} was unusable ({reason}); kept as {}",
                            store.path.display(),
                            aside.display()
                        ))
                    }
                    Err(e) => {
                        let why = format!(
                            "{} is unusable ({reason}) and cannot be moved aside ({e}); fix it by hand",
                            store.path.display()
                        );
                        store.problem = Some(why.clone());
                        store.read_only = Some(why);
                    }
                }
                Vec::new()
            }
        };
        Ok((store, cameras))
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the file found at start was not used, if it was not.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// Writes snapshot number `seq` of the saved cameras, unless a newer one was written already. Blocks on
    /// the disk.
    pub fn save(&self, seq: u64, cameras: &[SavedCamera]) -> Result<(), StateError> {
        if let Some(why) = &self.read_only {
            return Err(StateError::ReadOnly(why.clone()));
        }
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if seq <= *written {
            return Ok(());
        }
        let contents = FileContents { version: VERSION, cameras: cameras.to_vec() };
        let mut text = serde_json::to_vec_pretty(&contents).expect("specs always serialize");
        text.push(b'\n');
        let err = |source| StateError::Write { path: self.path.clone(), source };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{STATE_FILE}.tmp-{}", std::process::id()));
        let result = (|| {
            let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            // The rename is only durable once the directory entry is.
            File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        } else {
            *written = seq;
        }
        result.map_err(err)
    }
}

/// Reads the file: `Ok` (empty when missing) or why it cannot be used.
fn load(path: &Path) -> Result<BTreeMap<CameraId, SavedCamera>, String> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let contents: FileContents = serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    if contents.version != VERSION {
        return Err(format!("format version {} is not {VERSION}", contents.version));
    }
    let mut cameras = BTreeMap::new();
    for camera in contents.cameras {
        camera.spec.validate().map_err(|e| format!("camera {}: {e}", camera.spec.id))?;
        cameras.insert(camera.spec.id.clone(), camera);
    }
    Ok(cameras)
}

/// `cameras.json.corrupt-<unix seconds>`, with a counter if that name is taken (two bad starts in a second).
fn aside_path(path: &Path) -> PathBuf {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let base = format!("{}.corrupt-{secs}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn camera(id: &str, on_demand: bool) -> SavedCamera {
        let spec = StreamSpec::new(id, "rtsp://admin:pw@cam/s", &format!("rtmp://srs/live/{id}")).unwrap();
        let on_demand =
            if on_demand { super::super::desired::OnDemand::Cold } else { super::super::desired::OnDemand::Off };
        SavedCamera { spec, on_demand }
    }

    #[test]
    fn survives_a_reopen_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (store, cameras) = StateFile::open(dir.path()).unwrap();
        assert!(cameras.is_empty());
        store.save(1, &[camera("a", false), camera("b", true)]).unwrap();
        store.save(2, &[camera("b", true)]).unwrap();
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "specs carry camera passwords");

        let (reopened, cameras) = StateFile::open(dir.path()).unwrap();
        assert_eq!(reopened.problem(), None);
        assert_eq!(cameras, vec![camera("b", true)]);
        assert_eq!(cameras[0].spec.input.expose(), "rtsp://admin:pw@cam/s", "full spec kept");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(STATE_FILE)], "no temporary files left");
    }

    #[test]
    fn an_older_snapshot_never_overwrites_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = StateFile::open(dir.path()).unwrap();
        store.save(5, &[camera("new", false)]).unwrap();
        store.save(4, &[camera("old", false)]).unwrap();
        assert_eq!(StateFile::open(dir.path()).unwrap().1, vec![camera("new", false)]);
    }

    #[test]
    fn a_corrupt_file_is_kept_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        fs::write(&path, b"{\"version\":1,\"cameras\":[{\"spec\":").unwrap();
        let (store, cameras) = StateFile::open(dir.path()).unwrap();
        let problem = store.problem().expect("reported");
        assert!(problem.contains("invalid JSON") && problem.contains(".corrupt-"), "{problem}");
        assert!(cameras.is_empty());
        let aside: Vec<PathBuf> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(fs::read(&aside[0]).unwrap(), b"{\"version\":1,\"cameras\":[{\"spec\":", "kept byte for byte");
        // New changes go to a fresh file; the corrupt one stays as it was.
        store.save(1, &[camera("a", false)]).unwrap();
        assert_eq!(StateFile::open(dir.path()).unwrap().1.len(), 1);
        assert!(aside[0].exists());
    }

    #[test]
    fn invalid_specs_and_unknown_versions_count_as_corrupt() {
        for text in [
            r#"{"version":2,"cameras":[]}"#,
            r#"{"version":1,"cameras":[{"spec":{"id":"a","input":"file:///etc/passwd","output":"x.flv"}}]}"#,
            r#"{"version":1,"cameras":[{"spec":{"id":"a","input":"rtsp://h/a\r\nX: 1","output":"x.flv"}}]}"#,
        ] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(STATE_FILE), text).unwrap();
            let (store, _) = StateFile::open(dir.path()).unwrap();
            assert!(store.problem().is_some(), "{text}");
            assert!(!dir.path().join(STATE_FILE).exists(), "moved aside: {text}");
        }
    }

    #[test]
    fn an_unreadable_state_path_is_moved_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be cannot be read as a file (this works as root too, which
        // ignores permission bits).
        let path = dir.path().join(STATE_FILE);
        fs::create_dir(&path).unwrap();
        fs::write(path.join("precious"), b"x").unwrap();
        let (store, _) = StateFile::open(dir.path()).unwrap();
        assert!(store.problem().unwrap().contains("cannot read it"), "{:?}", store.problem());
        store.save(1, &[camera("a", false)]).unwrap();
        let kept = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).any(|p| p.join("precious").exists());
        assert!(kept, "the unreadable entry is kept aside");
    }
}
