//! A configuration file read again when it changes, as sshd reads `authorized_keys` and
//! `RevokedKeys` at every login: an administrator edits it and the next login sees it,
//! without a reload. One implementation for the `authorized_keys` file and the revoked
//! keys list.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What identifies a version of the file: its modification time and size.
type Stamp = (SystemTime, u64);

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified()?, meta.len()))
}

/// Errors reading a watched file: the IO, or what its parser says.
#[derive(Debug, thiserror::Error)]
pub enum WatchedFileError<E: std::error::Error + 'static> {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(E),
}

/// A file parsed by `parse` (its bytes and its path for messages), kept parsed, and
/// parsed again whenever its modification time or size changes. A version that no
/// longer reads or parses keeps the previous one (and says so in the log, once per
/// version).
pub struct WatchedFile<T, E> {
    path: PathBuf,
    /// What the file is, for the log (`authorized keys`, `revoked keys`).
    what: &'static str,
    parse: fn(&[u8], &str) -> Result<T, E>,
    state: Mutex<(Option<Stamp>, Arc<T>)>,
}

impl<T, E: std::error::Error + 'static> WatchedFile<T, E> {
    /// Reads and parses `path` now; an error here is the caller's to report.
    pub fn load(
        path: impl Into<PathBuf>,
        what: &'static str,
        parse: fn(&[u8], &str) -> Result<T, E>,
    ) -> Result<Self, WatchedFileError<E>> {
        let path = path.into();
        let (value, st) = read(&path, parse)?;
        Ok(Self {
            path,
            what,
            parse,
            state: Mutex::new((Some(st), Arc::new(value))),
        })
    }

    /// The file as it is now: parsed again first if it changed.
    pub fn current(&self) -> Option<Arc<T>> {
        let mut state = self.state.lock().ok()?;
        let now = stamp(&self.path).ok();
        if now != state.0 {
            match read(&self.path, self.parse) {
                Ok((value, st)) => {
                    tracing::info!(path = %self.path.display(), "{} reloaded", self.what);
                    *state = (Some(st), Arc::new(value));
                }
                Err(e) => {
                    tracing::warn!("{e}; keeping the previous {}", self.what);
                    // not again on every lookup: only when the file changes again
                    state.0 = now;
                }
            }
        }
        Some(state.1.clone())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read<T, E: std::error::Error + 'static>(
    path: &Path,
    parse: fn(&[u8], &str) -> Result<T, E>,
) -> Result<(T, Stamp), WatchedFileError<E>> {
    let read_err = |source| WatchedFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let st = stamp(path).map_err(read_err)?;
    let bytes = std::fs::read(path).map_err(read_err)?;
    let value = parse(&bytes, &path.display().to_string()).map_err(WatchedFileError::Parse)?;
    Ok((value, st))
}
