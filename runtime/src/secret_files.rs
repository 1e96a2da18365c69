//! Files a server generates into its data directory on first start (the TLS identity, the
//! SSH host key): private modes, atomic appearance, and one generator at a time.
//!
//! Two processes may start on one data directory at once: `alknet serve` and
//! `alknet fingerprint` in a set-up script, two servers by mistake, a service manager's
//! restart racing the old process. Without care each finds no key, generates its own and
//! writes it, and one of them then serves a certificate whose fingerprint is not the one on
//! disk (a client pinning the file's fingerprint is refused for good), or reads a file the
//! other is half-way through writing. So generation happens under an exclusive lock on a
//! file in the directory (`GenerationLock`), rechecking under it whether another process
//! got there first, and every file appears by `rename` from a complete temporary file
//! ([`write_atomically`]): a reader that takes no lock sees the old state or the whole new
//! file, never part of one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the lock file generation takes in the data directory.
pub const GENERATION_LOCK_FILE: &str = ".generate.lock";

/// Creates `dir` (and its parents) with mode 0700 if missing.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// An exclusive lock on `dir`'s [`GENERATION_LOCK_FILE`], held until dropped (`flock`: it
/// ends with the process, so a crash leaves nothing to clean up).
struct GenerationLock {
    _file: File,
}

impl GenerationLock {
    /// Creates `dir` (mode 0700) if needed and waits for the lock.
    fn acquire(dir: &Path) -> io::Result<Self> {
        create_private_dir(dir)?;
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(GENERATION_LOCK_FILE))?;
        file.lock()?;
        Ok(Self { _file: file })
    }
}

/// What is kept at `files` in `dir`, read by `load`; or, when any of them is missing, made
/// by `generate` (which writes them, with [`write_atomically`]) under `dir`'s
/// `GenerationLock`, after checking again under the lock that no other process made them
/// meanwhile. Also whether it was generated now. `lock_error` turns a failure to create
/// `dir` or take the lock into the caller's error.
pub fn load_or_generate<T, E>(
    dir: &Path,
    files: &[&Path],
    load: impl Fn() -> Result<T, E>,
    generate: impl FnOnce() -> Result<T, E>,
    lock_error: impl FnOnce(io::Error) -> E,
) -> Result<(T, bool), E> {
    let present = || files.iter().all(|f| f.exists());
    if present() {
        return load().map(|kept| (kept, false));
    }
    let _lock = GenerationLock::acquire(dir).map_err(lock_error)?;
    if present() {
        // another process generated them while this one waited for the lock
        return load().map(|kept| (kept, false));
    }
    generate().map(|made| (made, true))
}

/// Writes `data` to `path` with `mode`: into a temporary file beside it, synced, then
/// renamed over `path`, so `path` is absent, old or complete, whoever looks.
pub fn write_atomically(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temporary_name(path);
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// `path` with `.tmp.<pid>` appended: unique among processes, and one process writes a
/// given file from one place at a time (under the generation lock).
fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    PathBuf::from(name)
}

/// Permission bits that let users other than a file's owner and group at it.
const OTHERS: u32 = 0o007;

/// `path`'s permission bits when users other than its owner and group may read or write it
/// (a secret anyone on the machine can copy); `None` when they may not, or when it cannot
/// be looked at (reading it reports that). Others reach a file only through directories
/// they may search, so one without `o+x` on the way (the data directory is made 0700)
/// closes it whatever its own mode. A group-readable key (`0640` with a group such as
/// Debian's `ssl-cert`) is an administrator's deliberate choice, not flagged.
pub fn open_to_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let path = fs::canonicalize(path).ok()?;
    let mode = fs::metadata(&path).ok()?.permissions().mode() & 0o7777;
    let searchable =
        |dir: &Path| fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    (mode & OTHERS != 0 && path.ancestors().skip(1).all(searchable)).then_some(mode)
}

/// Warns (once per load) that `path`, a secret (`what` says which), is open to every user
/// on the machine. sshd refuses such host keys; this server serves with them and says so,
/// so that a key copied with the wrong mode (to share it between nodes, say) is noticed.
pub fn warn_if_open_to_others(path: &Path, what: &str) {
    if let Some(mode) = open_to_others(path) {
        tracing::warn!(
            "{}: the {what} is open to every user on this machine (mode {mode:04o}); `chmod 600` it",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_open_to_others_are_flagged_and_group_readable_ones_are_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let path = dir.path().join("secret");
        write_atomically(&path, b"x", 0o600).expect("write");
        assert_eq!(open_to_others(&path), None);
        for (mode, flagged) in [(0o640, false), (0o644, true), (0o602, true), (0o601, true)] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            assert_eq!(open_to_others(&path), flagged.then_some(mode), "{mode:o}");
        }
        // a directory others may not search closes what is inside it
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod dir");
        assert_eq!(open_to_others(&path), None);
        assert_eq!(open_to_others(&dir.path().join("missing")), None);
    }

    #[test]
    fn written_files_appear_whole_with_their_mode_and_leave_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("data");
        create_private_dir(&sub).expect("dir");
        assert_eq!(
            fs::metadata(&sub).expect("dir").permissions().mode() & 0o777,
            0o700
        );
        let path = sub.join("secret");
        write_atomically(&path, b"one", 0o600).expect("write");
        write_atomically(&path, b"two", 0o600).expect("overwrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(
            fs::metadata(&path).expect("file").permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(&sub)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
    }

    #[test]
    fn one_of_many_generators_at_once_generates_and_the_others_load_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("data");
        let path = sub.join("secret");
        let starts = std::sync::Barrier::new(8);
        let results: Vec<(Vec<u8>, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let (path, sub, starts) = (&path, &sub, &starts);
                    s.spawn(move || {
                        starts.wait();
                        load_or_generate(
                            sub,
                            &[path],
                            || fs::read(path),
                            || {
                                // slow enough that the others reach the lock meanwhile
                                std::thread::sleep(std::time::Duration::from_millis(20));
                                write_atomically(path, &[i], 0o600).map(|()| vec![i])
                            },
                            |e| e,
                        )
                        .expect("load or generate")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let on_disk = fs::read(&path).expect("kept");
        assert_eq!(
            results.iter().filter(|(_, generated)| *generated).count(),
            1
        );
        assert!(results.iter().all(|(kept, _)| *kept == on_disk));
    }

    #[test]
    fn the_generation_lock_excludes_other_holders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = GenerationLock::acquire(dir.path()).expect("lock");
        // another open file description of the lock file, as another process would have
        let other = fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(GENERATION_LOCK_FILE))
            .expect("open");
        assert!(matches!(
            other.try_lock(),
            Err(fs::TryLockError::WouldBlock)
        ));
        drop(held);
        other.try_lock().expect("free once the holder is gone");
    }
}
