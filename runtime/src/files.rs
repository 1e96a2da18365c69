//! Serving files from one directory and never from outside it, for the handlers that do
//! (`hq-interop`, and the `[http] static_root` route of the HTTP front end).
//!
//! A request path is first reduced to plain components ([`relative_path`]: no `..`, no
//! absolute path, no NUL); then the file is opened with `openat2(RESOLVE_BENEATH)` relative
//! to the directory's descriptor ([`ConfinedDir::open_file`]), so a symlink leading out of
//! the directory is refused by the kernel (symlinks staying inside it are followed). Files
//! are read one chunk at a time with monoio's `read_at` (an io_uring read on the io_uring
//! driver) by [`ChunkedFile`]: the caller asks for the next chunk only once it has handed
//! the previous one on, so a large file never sits in memory whole.

use std::ffi::CString;
use std::fs::File as StdFile;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

/// Why a request path was refused before any file system access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path or forbidden byte")]
    Forbidden,
    #[error("path leaves the root")]
    LeavesRoot,
}

/// The relative path a request names (`path` without its leading `/`), made of plain
/// components only. Sans-IO.
pub fn relative_path(path: &[u8]) -> Result<PathBuf, PathError> {
    if path.is_empty() || path.contains(&0) || path.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(PathError::Forbidden);
    }
    let path = Path::new(std::ffi::OsStr::from_bytes(path));
    let mut clean = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => return Err(PathError::LeavesRoot),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(PathError::Forbidden);
    }
    Ok(clean)
}

/// A directory whose files are served, held open by descriptor (a renamed directory stays
/// served; nothing is resolved by its path again).
#[derive(Debug)]
pub struct ConfinedDir {
    dir: StdFile,
    path: PathBuf,
}

impl ConfinedDir {
    pub fn open(path: &Path) -> io::Result<Self> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)?;
        Ok(Self {
            dir,
            path: path.to_path_buf(),
        })
    }

    /// The path it was opened with (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle on the same directory (the descriptor is duplicated).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            dir: self.dir.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Opens the regular file at `relative` inside the directory without leaving it
    /// (kernel-checked). A directory is `IsADirectory`, any other non-regular file
    /// `NotFound`.
    pub fn open_file(&self, relative: &Path) -> io::Result<StdFile> {
        let c = CString::new(relative.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: open_how is plain integers; all-zero is its documented empty value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: `c` is a valid NUL-terminated path and `how` a valid open_how of the
        // size passed; the returned fd (if any) is owned by nothing else.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::Other))?;
        // SAFETY: openat2 returned a new descriptor we now own.
        let file = StdFile::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let meta = file.metadata()?;
        if meta.is_dir() {
            // the HTTP front end redirects `dir` to `dir/` (its index page)
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        }
        if !meta.is_file() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(file)
    }
}

/// A file read front to back in chunks of a fixed size, on the worker's monoio runtime.
pub struct ChunkedFile {
    file: monoio::fs::File,
    pos: u64,
    /// Where reading stops: the end of the span asked for, or `u64::MAX` for the file's
    /// end whenever that is.
    end: u64,
    chunk: usize,
}

impl ChunkedFile {
    /// The whole file, to its end whenever that is. Must be called on a worker (inside its
    /// monoio runtime). `chunk` must be > 0.
    pub fn new(file: StdFile, chunk: usize) -> io::Result<Self> {
        Self::span(file, chunk, 0, u64::MAX)
    }

    /// `len` bytes from `start` (an HTTP range, or a whole file whose length was
    /// announced): a file that ends before them is an error (`UnexpectedEof`), so a
    /// response never ends short of the length it announced. As [`Self::new`] otherwise.
    pub fn span(file: StdFile, chunk: usize, start: u64, len: u64) -> io::Result<Self> {
        Ok(Self {
            file: monoio::fs::File::from_std(file)?,
            pos: start,
            end: start.saturating_add(len),
            chunk: chunk.max(1),
        })
    }

    /// Goes on with `len` bytes from `start` of the same file, as [`Self::span`] would
    /// (the next part of a response of several ranges).
    pub fn seek_span(&mut self, start: u64, len: u64) {
        self.pos = start;
        self.end = start.saturating_add(len);
    }

    /// Where the next read starts (the bytes read so far, for a whole file).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next chunk, or `None` at the end of the file or span.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let left = self.end - self.pos;
        if left == 0 {
            return Ok(None);
        }
        let want = usize::try_from(left).map_or(self.chunk, |l| l.min(self.chunk));
        let (res, mut buf) = self.file.read_at(Vec::with_capacity(want), self.pos).await;
        match res? {
            0 if self.end != u64::MAX => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ends at {}, before {}", self.pos, self.end),
            )),
            0 => Ok(None),
            n => {
                buf.truncate(n);
                self.pos += n as u64;
                Ok(Some(Bytes::from(buf)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_are_plain() {
        assert_eq!(relative_path(b"abc"), Ok("abc".into()));
        assert_eq!(relative_path(b"a/b.txt"), Ok("a/b.txt".into()));
        assert_eq!(relative_path(b"./a"), Ok("a".into()));
        assert_eq!(relative_path(b"../etc/passwd"), Err(PathError::LeavesRoot));
        assert_eq!(relative_path(b"a/../../x"), Err(PathError::LeavesRoot));
        assert_eq!(relative_path(b"/etc/passwd"), Err(PathError::LeavesRoot));
        assert_eq!(relative_path(b""), Err(PathError::Forbidden));
        assert_eq!(relative_path(b"."), Err(PathError::Forbidden));
        assert_eq!(relative_path(b"a\0b"), Err(PathError::Forbidden));
        assert_eq!(relative_path(b"a b"), Err(PathError::Forbidden));
    }

    #[test]
    fn opens_only_regular_files_beneath_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("www");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::write(root.join("f"), b"inside").expect("write");
        std::fs::create_dir(root.join("sub")).expect("mkdir");
        std::fs::write(outside.path().join("secret"), b"outside").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("out"))
            .expect("symlink");
        std::os::unix::fs::symlink("/etc", root.join("etc")).expect("symlink");
        std::os::unix::fs::symlink("f", root.join("in")).expect("symlink");
        let d = ConfinedDir::open(&root).expect("open root");
        let read = |p: &str| {
            d.open_file(Path::new(p)).map(|mut f| {
                let mut s = String::new();
                io::Read::read_to_string(&mut f, &mut s).expect("read");
                s
            })
        };
        assert_eq!(read("f").expect("f"), "inside");
        assert_eq!(read("in").expect("symlink inside"), "inside");
        assert!(read("out").is_err(), "symlink out of the root");
        assert!(
            read("etc/passwd").is_err(),
            "directory symlink out of the root"
        );
        assert_eq!(
            read("sub").map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::IsADirectory),
            "directory"
        );
        assert!(read("missing").is_err());
        assert!(
            read("../www/f").is_err(),
            "dot-dot is refused by the kernel too"
        );
        assert!(ConfinedDir::open(&dir.path().join("nope")).is_err());
    }

    /// Everything `f` yields and the chunk sizes, or how many bytes came before the error.
    async fn read_all(mut f: ChunkedFile) -> Result<(Vec<u8>, Vec<usize>), (usize, io::ErrorKind)> {
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        loop {
            match f.next_chunk().await {
                Ok(Some(c)) => {
                    sizes.push(c.len());
                    out.extend_from_slice(&c);
                }
                Ok(None) => return Ok((out, sizes)),
                Err(e) => return Err((out.len(), e.kind())),
            }
        }
    }

    /// A 10 000-byte file "f" in a confined directory, and its bytes.
    fn ten_thousand_bytes() -> (tempfile::TempDir, ConfinedDir, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("f"), &data).expect("write");
        let d = ConfinedDir::open(dir.path()).expect("open");
        (dir, d, data)
    }

    #[test]
    fn reads_a_file_in_chunks() {
        let (_dir, d, data) = ten_thousand_bytes();
        let file = d.open_file(Path::new("f")).expect("file");
        let got = crate::rt::run_local(|_| async move {
            read_all(ChunkedFile::new(file, 4096).expect("register")).await
        })
        .expect("runtime");
        assert_eq!(got, Ok((data, vec![4096, 4096, 1808])));
    }

    #[test]
    fn reads_a_span_and_a_file_shorter_than_its_span_is_an_error() {
        let (_dir, d, data) = ten_thousand_bytes();
        let open = || d.open_file(Path::new("f")).expect("file");
        let (a, b) = (open(), open());
        let (span, short) = crate::rt::run_local(|_| async move {
            let span = read_all(ChunkedFile::span(a, 4096, 1000, 5000).expect("span")).await;
            // the span runs past the file's 10 000 bytes
            let short = read_all(ChunkedFile::span(b, 4096, 9000, 2000).expect("span")).await;
            (span, short)
        })
        .expect("runtime");
        assert_eq!(span, Ok((data[1000..6000].to_vec(), vec![4096, 904])));
        assert_eq!(short, Err((1000, io::ErrorKind::UnexpectedEof)));
    }
}
