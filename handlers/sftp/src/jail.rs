//! Confinement: every path a client names is resolved by the kernel beneath the
//! identity's directory (`openat2` with `RESOLVE_IN_ROOT`: `..`, absolute paths and
//! absolute symlinks stop at that directory as at `/`), never by string checks that race
//! with symlink changes. Operations on a name (mkdir, unlink, rename, link, symlink) act on
//! the last component inside a parent directory opened that way, and do not follow it.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};

/// Resolution for every client path: inside the root; no `/proc` magic links.
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// An identity's directory, opened once; what the client sees as `/`.
#[derive(Debug)]
pub struct Jail {
    root: OwnedFd,
    /// The directory's canonical host path, to turn `/proc/self/fd` links back into
    /// client paths (realpath).
    host_path: PathBuf,
}

/// Whether `name` can be an identity's directory name: one plain path component.
pub fn valid_identity_dir(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains('/')
        && !name.contains('\0')
}

impl Jail {
    /// Opens (creating, mode 0700, on first use) `base/<identity>`.
    pub fn for_identity(base: &Path, identity: &str) -> io::Result<Jail> {
        if !valid_identity_dir(identity) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("identity name {identity:?} cannot name a directory"),
            ));
        }
        std::fs::create_dir_all(base)?;
        let dir = base.join(identity);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        Self::open(&dir)
    }

    /// A jail at an existing directory (not following a symlink at `dir` itself).
    pub fn open(dir: &Path) -> io::Result<Jail> {
        let root = rustix::fs::open(
            dir,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )?;
        let host_path = std::fs::canonicalize(dir)?;
        Ok(Jail { root, host_path })
    }

    /// Opens `path` inside the jail.
    pub fn open_at(&self, path: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        Ok(openat2(
            &self.root,
            client_path(path),
            flags | OFlags::CLOEXEC,
            mode,
            RESOLVE,
        )?)
    }

    /// The directory holding `path`'s last component, opened inside the jail, and that
    /// component. `None` for the root itself (and paths that end in `.` or `..`, which
    /// name no entry that can be created, removed or renamed).
    pub fn parent(&self, path: &str) -> io::Result<(OwnedFd, Vec<u8>)> {
        let (dir, name) = split_last(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the path names no directory entry",
            )
        })?;
        let fd = self.open_at(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok((fd, name.to_vec()))
    }

    /// The client's view (`/…`) of an open file: its host path from `/proc/self/fd`
    /// with the jail's prefix removed.
    pub fn client_view(&self, fd: impl AsFd) -> io::Result<String> {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))?;
        let rest = link.strip_prefix(&self.host_path).map_err(|_| {
            // a file moved out from under the jail since it was opened
            io::Error::new(io::ErrorKind::PermissionDenied, "outside the root")
        })?;
        let mut out = String::from("/");
        out.push_str(&rest.to_string_lossy());
        Ok(out)
    }

    pub fn root(&self) -> &OwnedFd {
        &self.root
    }
}

/// `path` as the kernel should see it: empty is the root.
fn client_path(path: &str) -> &OsStr {
    if path.is_empty() {
        OsStr::new(".")
    } else {
        OsStr::from_bytes(path.as_bytes())
    }
}

/// Splits `path` into its directory and last component, ignoring trailing slashes.
/// `None` when there is no last component that names an entry (`/`, `.`, `..`, `a/..`).
pub fn split_last(path: &str) -> Option<(&str, &[u8])> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    let (dir, name) = match trimmed.rfind('/') {
        Some(0) => ("/", &trimmed[1..]),
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (".", trimmed),
    };
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some((dir, name.as_bytes()))
}

/// Opens a file by a `/proc/self/fd` path for the calls that have no fd form usable on
/// an `O_PATH` descriptor (chmod, utimes). The link is the already-resolved file: nothing
/// is resolved by name again.
pub fn proc_fd_path(fd: impl AsFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// The kernel's `CWD` for absolute `/proc` paths.
pub fn cwd() -> impl AsFd {
    CWD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_last_component() {
        assert_eq!(split_last("/a/b"), Some(("/a", &b"b"[..])));
        assert_eq!(split_last("/a/b//"), Some(("/a", &b"b"[..])));
        assert_eq!(split_last("/a"), Some(("/", &b"a"[..])));
        assert_eq!(split_last("a"), Some((".", &b"a"[..])));
        assert_eq!(split_last("/"), None);
        assert_eq!(split_last(""), None);
        assert_eq!(split_last("/a/.."), None);
        assert_eq!(split_last("."), None);
    }

    #[test]
    fn identity_names_must_be_one_component() {
        assert!(valid_identity_dir("alice"));
        for bad in ["", ".", "..", "a/b", "/", "x\0"] {
            assert!(!valid_identity_dir(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let outer = tempfile::tempdir().unwrap();
        std::fs::write(outer.path().join("secret"), b"s").unwrap();
        let jail = Jail::for_identity(outer.path(), "alice").unwrap();
        let inside = outer.path().join("alice");
        std::fs::write(inside.join("mine"), b"m").unwrap();
        std::os::unix::fs::symlink("/", inside.join("up")).unwrap();
        std::os::unix::fs::symlink("../../secret", inside.join("rel")).unwrap();
        let read = |p: &str| -> io::Result<Vec<u8>> {
            let fd = jail.open_at(p, OFlags::RDONLY, Mode::empty())?;
            let mut v = Vec::new();
            io::Read::read_to_end(&mut std::fs::File::from(fd), &mut v)?;
            Ok(v)
        };
        assert_eq!(read("/mine").unwrap(), b"m");
        assert_eq!(read("../../mine").unwrap(), b"m");
        assert_eq!(read("/up/mine").unwrap(), b"m"); // "/" is the root
        assert!(read("../secret").is_err());
        assert!(read("rel").is_err()); // ../../secret stops at the root: no such file
        let fd = jail
            .open_at("/up/up/.", OFlags::PATH, Mode::empty())
            .unwrap();
        assert_eq!(jail.client_view(fd).unwrap(), "/");
        let (dir, name) = jail.parent("/up/../new").unwrap();
        assert_eq!(name, b"new");
        assert_eq!(jail.client_view(dir).unwrap(), "/");
    }
}
