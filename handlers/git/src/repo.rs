//! Repositories under `[git] root`: turning a requested path into a bare repository that
//! is certainly inside the root, and creating new ones.
//!
//! A request names a repository by path (`/team/app.git`). The path is checked as text
//! first ([`normalize`]): relative to the root, no `..` or `.` segments, no segment
//! starting with `.` or `-`, no empty segments, no control characters or backslashes, a
//! bounded length. Then the candidate is canonicalized and must still be inside the
//! canonical root, so a symlink leading out of the root is refused wherever it sits.
//! (A symlink swapped in between that check and git opening the directory is not
//! guarded against: whoever can write the root can serve what they like anyway.)

use std::io;
use std::path::{Path, PathBuf};

/// Longest repository path accepted, in bytes.
pub const MAX_REPO_PATH: usize = 1024;

/// Most path segments (directory depth) accepted.
pub const MAX_REPO_DEPTH: usize = 16;

/// Why a path does not name a repository we serve. The display text goes to the client.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("invalid repository path: {0}")]
    InvalidPath(&'static str),
    #[error("repository not found")]
    NotFound,
    #[error("invalid repository path: it leads outside the repository root")]
    Escapes,
    #[error("not a bare git repository")]
    NotARepository,
    #[error("a new repository's name must end in .git")]
    NeedsGitSuffix,
    #[error("the repository already exists")]
    AlreadyExists,
    #[error("invalid default branch name {0:?}")]
    InvalidBranch(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A repository found under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Its path relative to the root, as resolved (`team/app.git`): what scopes match.
    pub name: String,
    /// Its canonical directory.
    pub dir: PathBuf,
}

/// The requested path as a normalized path relative to the root (`/team/app.git` →
/// `team/app.git`), or why it is refused.
pub fn normalize(requested: &str) -> Result<String, RepoError> {
    if requested.len() > MAX_REPO_PATH {
        return Err(RepoError::InvalidPath("too long"));
    }
    // git-daemon paths start with one '/'; `ext::…%G` sends what the user wrote after it
    let rel = requested.strip_prefix('/').unwrap_or(requested);
    if rel.starts_with('/') {
        return Err(RepoError::InvalidPath("absolute paths are not served"));
    }
    if rel.starts_with('~') {
        return Err(RepoError::InvalidPath("user directories are not served"));
    }
    let rel = rel.strip_suffix('/').unwrap_or(rel);
    if rel.is_empty() {
        return Err(RepoError::InvalidPath("empty"));
    }
    if rel
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == '\0')
    {
        return Err(RepoError::InvalidPath(
            "control characters and backslashes are not allowed",
        ));
    }
    let mut depth = 0;
    for segment in rel.split('/') {
        depth += 1;
        match segment {
            "" => return Err(RepoError::InvalidPath("empty path segment")),
            ".." => return Err(RepoError::InvalidPath("'..' is not allowed")),
            s if s.starts_with('.') => {
                return Err(RepoError::InvalidPath("segments may not start with '.'"))
            }
            s if s.starts_with('-') => {
                return Err(RepoError::InvalidPath("segments may not start with '-'"))
            }
            _ => {}
        }
    }
    if depth > MAX_REPO_DEPTH {
        return Err(RepoError::InvalidPath("too deep"));
    }
    Ok(rel.to_string())
}

/// Whether `dir` looks like a bare repository (`HEAD`, `objects/`, `refs/`).
pub fn is_bare_repository(dir: &Path) -> bool {
    dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir()
}

/// Finds the bare repository `name` (already [`normalize`]d) under `root`: `name`
/// itself, else `name.git`.
pub fn resolve(root: &Path, name: &str) -> Result<Repository, RepoError> {
    let root = match root.canonicalize() {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(RepoError::NotFound),
        Err(e) => return Err(e.into()),
    };
    let mut candidates = vec![name.to_string()];
    if !name.ends_with(".git") {
        candidates.push(format!("{name}.git"));
    }
    let mut found_dir = false;
    for candidate in candidates {
        let dir = match root.join(&candidate).canonicalize() {
            Ok(d) => d,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.into()),
        };
        if !dir.starts_with(&root) || dir == root {
            return Err(RepoError::Escapes);
        }
        if is_bare_repository(&dir) {
            return Ok(Repository {
                name: candidate,
                dir,
            });
        }
        found_dir = true;
    }
    Err(if found_dir {
        RepoError::NotARepository
    } else {
        RepoError::NotFound
    })
}

/// Checks that `branch` is a plain branch name accepted for a new repository's `HEAD`.
pub fn create_bare_branch_ok(branch: &str) -> Result<(), RepoError> {
    if valid_branch(branch) {
        Ok(())
    } else {
        Err(RepoError::InvalidBranch(branch.to_string()))
    }
}

/// Whether `branch` is a plain branch name (no ref syntax tricks).
fn valid_branch(branch: &str) -> bool {
    !branch.is_empty()
        && branch.len() <= 255
        && !branch.starts_with(['-', '.', '/'])
        && !branch.ends_with(['/', '.'])
        && !branch.ends_with(".lock")
        && !branch.contains("..")
        && !branch.contains("//")
        && branch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// Creates the bare repository `name` (already [`normalize`]d; must end in `.git`) under
/// `root`, with `HEAD` on `refs/heads/<default_branch>`. Parent directories are created
/// as needed (the root too). The repository is assembled in a hidden directory beside
/// its final place and renamed into it, so nobody ever sees half of one.
pub fn create_bare(root: &Path, name: &str, default_branch: &str) -> Result<Repository, RepoError> {
    if !name.ends_with(".git") || name == ".git" {
        return Err(RepoError::NeedsGitSuffix);
    }
    create_bare_branch_ok(default_branch)?;
    std::fs::create_dir_all(root)?;
    let root = root.canonicalize()?;
    let target = root.join(name);
    let parent = target.parent().ok_or(RepoError::Escapes)?;
    std::fs::create_dir_all(parent)?;
    let parent = parent.canonicalize()?;
    if !parent.starts_with(&root) {
        return Err(RepoError::Escapes);
    }
    let file_name = target.file_name().ok_or(RepoError::Escapes)?;
    let target = parent.join(file_name);
    if target.symlink_metadata().is_ok() {
        return Err(RepoError::AlreadyExists);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // a leading '.' makes it unreachable by request paths (see `normalize`)
    let tmp = parent.join(format!(
        ".{}.tmp-{}-{nanos}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let built = (|| -> io::Result<()> {
        std::fs::create_dir(&tmp)?;
        for d in [
            "objects/info",
            "objects/pack",
            "refs/heads",
            "refs/tags",
            "info",
        ] {
            std::fs::create_dir_all(tmp.join(d))?;
        }
        std::fs::write(
            tmp.join("HEAD"),
            format!("ref: refs/heads/{default_branch}\n"),
        )?;
        std::fs::write(
            tmp.join("config"),
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n",
        )?;
        std::fs::write(
            tmp.join("description"),
            "Unnamed repository; edit this file 'description' to name the repository.\n",
        )?;
        Ok(())
    })();
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.into());
    }
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_dir_all(&tmp);
        // another creator won the race
        if matches!(
            e.kind(),
            io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
        ) {
            return Err(RepoError::AlreadyExists);
        }
        return Err(e.into());
    }
    Ok(Repository {
        name: name.to_string(),
        dir: target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_daemon_paths_and_refuses_tricks() {
        assert_eq!(normalize("/team/app.git").expect("ok"), "team/app.git");
        assert_eq!(normalize("app.git/").expect("ok"), "app.git");
        assert_eq!(
            normalize("/a-b_c/d+e@f.git").expect("ok"),
            "a-b_c/d+e@f.git"
        );
        for bad in [
            "",
            "/",
            "//etc/passwd",
            "/../x.git",
            "/a/../../x",
            "/a/./b",
            "/a//b",
            "/.ssh",
            "/a/.git",
            "/-uploadpack=evil",
            "/~root/x.git",
            "/a\\b",
            "/a\nb",
            "/a\u{7f}b",
        ] {
            assert!(
                matches!(normalize(bad), Err(RepoError::InvalidPath(_))),
                "{bad:?} accepted"
            );
        }
        assert!(normalize(&format!("/{}", "a".repeat(MAX_REPO_PATH))).is_err());
        assert!(normalize(&"/a".repeat(MAX_REPO_DEPTH + 1)).is_err());
        assert!(normalize(&"/a".repeat(MAX_REPO_DEPTH)).is_ok());
    }

    #[test]
    fn creates_and_resolves_with_or_without_the_suffix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("git");
        assert!(matches!(resolve(&root, "x.git"), Err(RepoError::NotFound)));
        let repo = create_bare(&root, "team/app.git", "main").expect("create");
        assert!(is_bare_repository(&repo.dir));
        assert_eq!(
            std::fs::read_to_string(repo.dir.join("HEAD")).expect("HEAD"),
            "ref: refs/heads/main\n"
        );
        assert_eq!(resolve(&root, "team/app.git").expect("found"), repo);
        assert_eq!(
            resolve(&root, "team/app").expect("found").name,
            "team/app.git"
        );
        assert!(matches!(
            resolve(&root, "team"),
            Err(RepoError::NotARepository)
        ));
        assert!(matches!(
            resolve(&root, "team/none"),
            Err(RepoError::NotFound)
        ));
        assert!(matches!(
            resolve(&root, "team/app.git/objects"),
            Err(RepoError::NotARepository)
        ));
        assert!(matches!(
            create_bare(&root, "team/app.git", "main"),
            Err(RepoError::AlreadyExists)
        ));
        assert!(matches!(
            create_bare(&root, "team/app", "main"),
            Err(RepoError::NeedsGitSuffix)
        ));
        assert!(matches!(
            create_bare(&root, "b.git", "../x"),
            Err(RepoError::InvalidBranch(_))
        ));
        // no temporary directory left behind
        let names: Vec<_> = std::fs::read_dir(root.join("team"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["app.git"]);
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("git");
        let outside =
            create_bare(&dir.path().join("elsewhere"), "secret.git", "main").expect("outside repo");
        std::fs::create_dir_all(&root).expect("root");
        std::os::unix::fs::symlink(&outside.dir, root.join("link.git")).expect("symlink");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join("dir"))
            .expect("symlink");
        assert!(matches!(
            resolve(&root, "link.git"),
            Err(RepoError::Escapes)
        ));
        assert!(matches!(resolve(&root, "link"), Err(RepoError::Escapes)));
        assert!(matches!(
            resolve(&root, "dir/secret.git"),
            Err(RepoError::Escapes)
        ));
        assert!(matches!(
            create_bare(&root, "dir/new.git", "main"),
            Err(RepoError::Escapes)
        ));
        assert!(!dir.path().join("elsewhere/new.git").exists());
        // a symlink that stays inside the root is fine
        let inside = create_bare(&root, "real.git", "main").expect("inside");
        std::os::unix::fs::symlink(&inside.dir, root.join("alias.git")).expect("symlink");
        assert_eq!(resolve(&root, "alias.git").expect("inside").dir, inside.dir);
    }
}
