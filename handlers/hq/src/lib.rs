//! `hq-interop`: HTTP/0.9 over QUIC, the file-serving protocol of the QUIC interop runner
//! (github.com/quic-interop/quic-interop-runner). A client opens a bidirectional stream,
//! sends `GET /path\r\n` (then FIN), and gets the file's bytes followed by FIN.
//!
//! Files come from one directory (`[hq] root`) and never from outside it: the request path
//! may not contain `..` or other non-plain components, and the file is opened with
//! `openat2(RESOLVE_BENEATH)` relative to the root (`alknet_runtime::files`, shared with the
//! HTTP static-file route), so a symlink leading out of the root
//! is refused by the kernel (symlinks staying inside it are followed). Failures reset the
//! stream with one of the [`reset_code`]s. Files are read with monoio (`read_at`: an
//! io_uring read on the io_uring driver) one [`HqConfig::chunk_size`] chunk at a time, so a
//! large file is never held in memory whole: a chunk is read only after the previous one
//! was accepted by the stream (whose buffer is bounded by `limits.send_window`).
//!
//! Off by default: it serves files to anyone who can connect. Enable it with
//! `handlers.enabled = [..., "hq-interop"]` and `[hq] root = "/srv/www"`.

use std::fs::File as StdFile;
use std::path::{Path, PathBuf};

use alknet_runtime::files::{relative_path, ChunkedFile, ConfinedDir};
use alknet_runtime::rt::serve_streams;
use alknet_runtime::{
    AuthContext, BiStream, Connection, HandlerError, LocalBoxFuture, ProtocolHandler, RecvStream,
    SendStream, VarInt,
};
use serde::Deserialize;

/// The ALPN this handler serves.
pub const ALPN: &[u8] = b"hq-interop";

/// `[hq] max_request_bytes` default: the longest request line accepted. The runner's paths
/// are short; anything longer is reset with [`reset_code::BAD_REQUEST`].
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4096;
/// `[hq] chunk_size` default: bytes read from the file per read, and queued per write.
pub const DEFAULT_CHUNK_SIZE: usize = 256 * 1024;

/// Application error codes of the stream resets this handler sends (hq-interop defines
/// none; these are ours).
pub mod reset_code {
    /// The request was not `GET /path` (or was longer than `max_request_bytes`).
    pub const BAD_REQUEST: u32 = 0x10;
    /// No regular file at that path inside the root (or it would leave the root).
    pub const NOT_FOUND: u32 = 0x11;
    /// Reading the file failed part way.
    pub const READ_ERROR: u32 = 0x12;
}

/// `[hq]`: where files are served from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HqConfig {
    /// The directory served. Required when `hq-interop` is enabled.
    pub root: Option<PathBuf>,
    #[serde(default = "default_chunk")]
    pub chunk_size: usize,
    #[serde(default = "default_max_request")]
    pub max_request_bytes: usize,
}

fn default_chunk() -> usize {
    DEFAULT_CHUNK_SIZE
}

fn default_max_request() -> usize {
    DEFAULT_MAX_REQUEST_BYTES
}

impl Default for HqConfig {
    fn default() -> Self {
        Self {
            root: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// Why the handler could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HqError {
    #[error("hq.root must be set to serve hq-interop")]
    NoRoot,
    #[error("hq.{0} must be greater than zero")]
    Zero(&'static str),
    #[error("hq.root {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a request line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A relative path inside the root, made of plain components only.
    Get(PathBuf),
    Bad(&'static str),
}

/// Parses `GET /path` (the line ending and FIN already removed). Sans-IO.
pub fn parse_request(line: &[u8]) -> Request {
    let Some(rest) = line.strip_prefix(b"GET ") else {
        return Request::Bad("not a GET");
    };
    let rest = rest.trim_ascii();
    let Some(path) = rest.strip_prefix(b"/") else {
        return Request::Bad("path must start with /");
    };
    match relative_path(path) {
        Ok(p) => Request::Get(p),
        Err(alknet_runtime::files::PathError::Forbidden) => {
            Request::Bad("empty path or forbidden byte")
        }
        Err(alknet_runtime::files::PathError::LeavesRoot) => Request::Bad("path leaves the root"),
    }
}

/// Where a request line ends: its length without the line ending, once one was seen.
fn line_end(buf: &[u8]) -> Option<usize> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    Some(if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    })
}

/// Serves `hq-interop` from one directory.
#[derive(Debug)]
pub struct HqHandler {
    root: ConfinedDir,
    chunk_size: usize,
    max_request_bytes: usize,
}

impl HqHandler {
    pub fn new(config: &HqConfig) -> Result<Self, HqError> {
        let root_path = config.root.clone().ok_or(HqError::NoRoot)?;
        if config.chunk_size == 0 {
            return Err(HqError::Zero("chunk_size"));
        }
        if config.max_request_bytes == 0 {
            return Err(HqError::Zero("max_request_bytes"));
        }
        let root = ConfinedDir::open(&root_path).map_err(|source| HqError::Root {
            path: root_path.clone(),
            source,
        })?;
        Ok(Self {
            root,
            chunk_size: config.chunk_size,
            max_request_bytes: config.max_request_bytes,
        })
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Reads the request line: up to the first line ending, or FIN.
    async fn read_request(&self, recv: &mut RecvStream) -> Result<Option<Vec<u8>>, HandlerError> {
        let mut buf = Vec::new();
        loop {
            if let Some(end) = line_end(&buf) {
                buf.truncate(end);
                return Ok(Some(buf));
            }
            let room = self.max_request_bytes + 2 - buf.len();
            match recv.read_chunk(room).await? {
                Some(chunk) => {
                    buf.extend_from_slice(&chunk);
                    if buf.len() > self.max_request_bytes + 1 && line_end(&buf).is_none() {
                        return Ok(None);
                    }
                }
                None => return Ok((buf.len() <= self.max_request_bytes).then_some(buf)),
            }
        }
    }

    async fn serve(&self, BiStream { mut send, mut recv }: BiStream) -> Result<u64, HandlerError> {
        let request = match self.read_request(&mut recv).await? {
            Some(line) => parse_request(&line),
            None => Request::Bad("request too long"),
        };
        // the request is all we read; the rest of the stream does not matter
        let _ = recv.stop(VarInt::from_u32(0));
        let path = match request {
            Request::Get(p) => p,
            Request::Bad(why) => {
                tracing::debug!("hq: bad request: {why}");
                let _ = send.reset(VarInt::from_u32(reset_code::BAD_REQUEST));
                return Ok(0);
            }
        };
        let file = match self.root.open_file(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!("hq: {}: {e}", path.display());
                let _ = send.reset(VarInt::from_u32(reset_code::NOT_FOUND));
                return Ok(0);
            }
        };
        self.send_file(file, &mut send).await
    }

    async fn send_file(&self, file: StdFile, send: &mut SendStream) -> Result<u64, HandlerError> {
        let mut file = match ChunkedFile::new(file, self.chunk_size) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("hq: registering file: {e}");
                let _ = send.reset(VarInt::from_u32(reset_code::READ_ERROR));
                return Ok(0);
            }
        };
        loop {
            match file.next_chunk().await {
                Ok(Some(chunk)) => send.write_chunk(chunk).await?,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("hq: reading at {}: {e}", file.position());
                    let _ = send.reset(VarInt::from_u32(reset_code::READ_ERROR));
                    return Ok(file.position());
                }
            }
        }
        let _ = send.finish();
        Ok(file.position())
    }
}

impl ProtocolHandler for HqHandler {
    fn alpn(&self) -> &[u8] {
        ALPN
    }

    fn handle(
        &self,
        conn: Connection,
        _auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            // stream tasks are spawned ('static): they share this connection's handle
            let me = std::rc::Rc::new(self.clone_for_worker()?);
            serve_streams(
                &conn,
                "hq stream",
                move |stream| {
                    let me = me.clone();
                    async move {
                        match me.serve(stream).await {
                            Ok(n) => tracing::trace!(bytes = n, "hq stream done"),
                            Err(e) => tracing::debug!("hq stream ended: {e}"),
                        }
                    }
                },
                |recv| async move { drop(recv) },
            )
            .await;
            Ok(())
        })
    }
}

impl HqHandler {
    /// A handle for the stream tasks of one connection (they must be `'static`): the root
    /// descriptor is duplicated, never reopened by path, so a renamed root stays served.
    fn clone_for_worker(&self) -> Result<Self, HandlerError> {
        let root = self
            .root
            .try_clone()
            .map_err(|e| HandlerError::Other(Box::new(e)))?;
        Ok(Self {
            root,
            chunk_size: self.chunk_size,
            max_request_bytes: self.max_request_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_runner_requests() {
        assert_eq!(parse_request(b"GET /abc"), Request::Get("abc".into()));
        assert_eq!(
            parse_request(b"GET /a/b.txt"),
            Request::Get("a/b.txt".into())
        );
        assert_eq!(parse_request(b"GET /./a"), Request::Get("a".into()));
        assert!(matches!(
            parse_request(b"GET /../etc/passwd"),
            Request::Bad(_)
        ));
        assert!(matches!(parse_request(b"GET /a/../../x"), Request::Bad(_)));
        assert!(matches!(
            parse_request(b"GET //etc/passwd"),
            Request::Bad(_)
        ));
        assert!(matches!(parse_request(b"GET /"), Request::Bad(_)));
        assert!(matches!(parse_request(b"POST /a"), Request::Bad(_)));
        assert!(matches!(parse_request(b"GET a"), Request::Bad(_)));
        assert!(matches!(parse_request(b"GET /a\0b"), Request::Bad(_)));
        assert!(matches!(parse_request(b"GET /a b"), Request::Bad(_)));
        assert_eq!(line_end(b"GET /a\r\n"), Some(6));
        assert_eq!(line_end(b"GET /a\n"), Some(6));
        assert_eq!(line_end(b"GET /a"), None);
    }

    #[test]
    fn needs_an_existing_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(HqHandler::new(&HqConfig::default()).is_err());
        assert!(HqHandler::new(&HqConfig {
            root: Some(dir.path().join("nope")),
            ..HqConfig::default()
        })
        .is_err());
        let h = HqHandler::new(&HqConfig {
            root: Some(dir.path().to_path_buf()),
            ..HqConfig::default()
        })
        .expect("handler");
        assert_eq!(h.root(), dir.path());
    }
}
