//! The desired state that must survive a restart: which cameras the API asked to run (with their full spec),
//! kept in `<data_dir>/cameras.json`.
//!
//! Only cameras started or registered through the API are kept here; boot cameras come from the configuration
//! file, which is already persistent. Every change rewrites the whole (small) file through a temporary file,
//! `fsync`, `rename` and an `fsync` of the directory, so a crash or power cut leaves either the old or the new
//! file, never a torn one. The file has mode 0600 because specs carry camera passwords.
//!
//! A file that cannot be read or parsed is never overwritten: it is renamed aside to
//! `cameras.json.corrupt-<unix seconds>` and the problem is reported ([`DesiredState::problem`]), so the
//! operator can repair it by hand. If even the rename fails, the store refuses all writes rather than
//! destroy what may be the only copy of the operator's cameras.
//!
//! Nothing here knows about HTTP; the API handlers and the binary call it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::spec::{CameraId, StreamSpec};

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

/// One camera the API asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredCamera {
    /// The full spec, credentials included (hence the file's mode).
    pub spec: StreamSpec,
    /// Started on demand by viewers (SRS hooks) instead of running all the time.
    #[serde(default)]
    pub on_demand: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    version: u32,
    cameras: Vec<DesiredCamera>,
}

/// The desired-state store: the cameras loaded at start, kept current by [`put`](Self::put) and
/// [`remove`](Self::remove), each of which saves the file before returning.
#[derive(Debug)]
pub struct DesiredState {
    path: PathBuf,
    /// Why the file found at start could not be used, if it could not; shown by `/readyz`.
    problem: Option<String>,
    /// `Some` when the file could not be moved aside: then nothing is written.
    read_only: Option<String>,
    cameras: Mutex<BTreeMap<CameraId, DesiredCamera>>,
}

impl DesiredState {
    /// Opens (or starts) the store in `data_dir`, creating the directory if needed. A missing file is an empty
    /// state; an unreadable or corrupt one is moved aside and reported through [`problem`](Self::problem).
    /// Fails only when the directory itself cannot be created.
    pub fn open(data_dir: &Path) -> io::Result<DesiredState> {
        fs::create_dir_all(data_dir)?;
        let path = data_dir.join(STATE_FILE);
        let mut store = DesiredState { path, problem: None, read_only: None, cameras: Mutex::new(BTreeMap::new()) };
        match load(&store.path) {
            Ok(cameras) => *store.cameras.get_mut().unwrap_or_else(|e| e.into_inner()) = cameras,
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
            }
        }
        Ok(store)
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the file found at start was not used, if it was not.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// Every camera in the desired state, by id.
    pub fn cameras(&self) -> Vec<DesiredCamera> {
        self.lock().values().cloned().collect()
    }

    /// Whether camera `id` is in the desired state.
    pub fn contains(&self, id: &CameraId) -> bool {
        self.lock().contains_key(id)
    }

    /// Adds or replaces a camera and saves. On failure the state in memory is unchanged.
    pub fn put(&self, camera: DesiredCamera) -> Result<(), StateError> {
        let mut cameras = self.lock();
        let mut next = cameras.clone();
        next.insert(camera.spec.id.clone(), camera);
        self.save(&next)?;
        *cameras = next;
        Ok(())
    }

    /// Removes a camera and saves; returns whether it was there. Removing an absent camera writes nothing.
    pub fn remove(&self, id: &CameraId) -> Result<bool, StateError> {
        let mut cameras = self.lock();
        if !cameras.contains_key(id) {
            return Ok(false);
        }
        let mut next = cameras.clone();
        next.remove(id);
        self.save(&next)?;
        *cameras = next;
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<CameraId, DesiredCamera>> {
        self.cameras.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `cameras` atomically: temp file (0600) → fsync → rename → fsync of the directory.
    fn save(&self, cameras: &BTreeMap<CameraId, DesiredCamera>) -> Result<(), StateError> {
        if let Some(why) = &self.read_only {
            return Err(StateError::ReadOnly(why.clone()));
        }
        let contents = FileContents { version: VERSION, cameras: cameras.values().cloned().collect() };
        let mut text = serde_json::to_vec_pretty(&contents).expect("specs always serialize");
        text.push(b'\n');
        let err = |source| StateError::Write { path: self.path.clone(), source };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{STATE_FILE}.tmp-{}", std::process::id()));
        let written = (|| {
            let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            // The rename is only durable once the directory entry is.
            File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(err)
    }
}

/// Reads the file: `Ok` (empty when missing) or why it cannot be used.
fn load(path: &Path) -> Result<BTreeMap<CameraId, DesiredCamera>, String> {
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

    fn camera(id: &str, on_demand: bool) -> DesiredCamera {
        let spec = StreamSpec::new(id, "rtsp://admin:pw@cam/s", &format!("rtmp://srs/live/{id}")).unwrap();
        DesiredCamera { spec, on_demand }
    }

    #[test]
    fn survives_a_reopen_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let store = DesiredState::open(dir.path()).unwrap();
        assert!(store.cameras().is_empty());
        store.put(camera("a", false)).unwrap();
        store.put(camera("b", true)).unwrap();
        assert!(store.remove(&"a".parse().unwrap()).unwrap());
        assert!(!store.remove(&"zz".parse().unwrap()).unwrap());
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "specs carry camera passwords");

        let reopened = DesiredState::open(dir.path()).unwrap();
        assert_eq!(reopened.problem(), None);
        assert_eq!(reopened.cameras(), vec![camera("b", true)]);
        assert_eq!(reopened.cameras()[0].spec.input.expose(), "rtsp://admin:pw@cam/s", "full spec kept");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(STATE_FILE)], "no temporary files left");
    }

    #[test]
    fn a_corrupt_file_is_kept_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        fs::write(&path, b"{\"version\":1,\"cameras\":[{\"spec\":").unwrap();
        let store = DesiredState::open(dir.path()).unwrap();
        let problem = store.problem().expect("reported");
        assert!(problem.contains("invalid JSON") && problem.contains(".corrupt-"), "{problem}");
        assert!(store.cameras().is_empty());
        let aside: Vec<PathBuf> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(fs::read(&aside[0]).unwrap(), b"{\"version\":1,\"cameras\":[{\"spec\":", "kept byte for byte");
        // New changes go to a fresh file; the corrupt one stays as it was.
        store.put(camera("a", false)).unwrap();
        assert_eq!(DesiredState::open(dir.path()).unwrap().cameras().len(), 1);
        assert!(aside[0].exists());
    }

    #[test]
    fn invalid_specs_and_unknown_versions_count_as_corrupt() {
        for text in [
            r#"{"version":2,"cameras":[]}"#,
            r#"{"version":1,"cameras":[{"spec":{"id":"a","input":"file:///etc/passwd","output":"x.flv"}}]}"#,
        ] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(STATE_FILE), text).unwrap();
            let store = DesiredState::open(dir.path()).unwrap();
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
        let store = DesiredState::open(dir.path()).unwrap();
        assert!(store.problem().unwrap().contains("cannot read it"), "{:?}", store.problem());
        store.put(camera("a", false)).unwrap();
        let kept = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).any(|p| p.join("precious").exists());
        assert!(kept, "the unreadable entry is kept aside");
    }
}
