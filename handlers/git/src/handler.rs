//! `GitHandler`: the `ProtocolHandler` for `alknet/git`. Every bidirectional stream is one
//! git command: request line, identity, access check, repository, backend.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use alknet_runtime::rt::spawn_guarded;
use alknet_runtime::{
    AuthContext, BiStream, Bytes, Connection, HandlerError, Identity, LocalBoxFuture,
    ProtocolHandler, RecvStream, SendStream, VarInt,
};

use crate::access::{authorize, GitAction};
use crate::config::{GitBackend, GitConfig, GitConfigError};
use crate::process::{describe, GitCommand};
use crate::repo::{create_bare, normalize, resolve, RepoError, Repository};
use crate::request::{error_line, GitRequest, Progress, RequestDecoder, Service};

/// The ALPN this handler serves.
pub const ALPN: &[u8] = b"alknet/git";

/// Largest chunk read from a stream while its request line is incomplete (the line is
/// at most `max_request_line`; what comes behind it is handed on untouched).
const REQUEST_READ_CHUNK: usize = 64 * 1024;

/// Errors building the handler.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(transparent)]
    Config(#[from] GitConfigError),
    #[error("git.root {0}: {1}")]
    Root(PathBuf, std::io::Error),
}

struct Shared {
    config: GitConfig,
    root: PathBuf,
    /// `git` processes running now, across all workers.
    processes: AtomicUsize,
}

/// The `alknet/git` handler.
#[derive(Clone)]
pub struct GitHandler {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GitHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHandler")
            .field("root", &self.shared.root)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl GitHandler {
    /// A handler serving the repositories under `root` (created if missing).
    pub fn new(config: GitConfig, root: &Path) -> Result<Self, GitError> {
        config.validate()?;
        std::fs::create_dir_all(root).map_err(|e| GitError::Root(root.to_path_buf(), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| GitError::Root(root.to_path_buf(), e))?;
        if config.backend == GitBackend::Git {
            match std::process::Command::new(&config.git_program)
                .arg("--version")
                .output()
            {
                Ok(out) if out.status.success() => tracing::debug!(
                    "git backend: {}",
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
                _ => tracing::warn!(
                    program = %config.git_program.display(),
                    "git backend: the git program does not run; alknet/git requests will fail"
                ),
            }
        }
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                root,
                processes: AtomicUsize::new(0),
            }),
        })
    }

    /// The canonical repository root.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    pub fn config(&self) -> &GitConfig {
        &self.shared.config
    }
}

/// Decrements a counter when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes a slot if fewer than `max` are taken.
fn take_slot(counter: &AtomicUsize, max: usize) -> Option<Slot<'_>> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(counter))
}

impl ProtocolHandler for GitHandler {
    fn alpn(&self) -> &[u8] {
        ALPN
    }

    fn handle(
        &self,
        conn: Connection,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let commands = Arc::new(AtomicUsize::new(0));
            while let Ok(stream) = conn.accept_bi().await {
                let shared = shared.clone();
                let auth = auth.clone();
                let commands = commands.clone();
                spawn_guarded("git command", async move {
                    let Some(_slot) =
                        take_slot(&commands, shared.config.max_commands_per_connection)
                    else {
                        let (send, recv) = stream.split();
                        refuse(send, recv, "too many git commands on this connection").await;
                        return;
                    };
                    serve_stream(&shared, stream, &auth).await;
                });
            }
            // the peer closing the connection is how a git session normally ends
            Ok(())
        })
    }
}

/// Answers with an `ERR` line and ends the stream (the connection stays).
async fn refuse(mut send: SendStream, mut recv: RecvStream, message: &str) {
    let _ = recv.stop(VarInt::from_u32(0));
    if send.write_all(&error_line(message)).await.is_ok() {
        let _ = send.finish();
        // bounded by the connection's idle timeout if the peer never acknowledges
        let _ = send.stopped().await;
    }
}

/// Reads the request line (within `request_timeout_ms`): the request and the bytes that
/// came behind it.
async fn read_request(
    config: &GitConfig,
    recv: &mut RecvStream,
) -> Result<(GitRequest, Bytes), String> {
    let mut decoder = RequestDecoder::new(config.max_request_line);
    let read = async {
        loop {
            match recv.read_chunk(REQUEST_READ_CHUNK).await {
                Ok(Some(chunk)) => match decoder.push(&chunk) {
                    Ok(Progress::NeedMore) => {}
                    Ok(Progress::Done { request, consumed }) => {
                        return Ok((request, chunk.slice(consumed..)))
                    }
                    Err(e) => return Err(e.to_string()),
                },
                Ok(None) => return Err(decoder.finish().to_string()),
                Err(e) => return Err(format!("stream: {e}")),
            }
        }
    };
    match monoio::time::timeout(config.request_timeout(), read).await {
        Ok(r) => r,
        Err(_) => Err("no request line in time".into()),
    }
}

/// Who the request runs as: the identity of its token if it carries one (an unknown
/// token is refused, not ignored), else the connection's (its client certificate).
fn request_identity(auth: &AuthContext, request: &GitRequest) -> Result<Option<Identity>, String> {
    match &request.token {
        None => Ok(auth.identity.clone()),
        Some(token) => match auth.provider.resolve_from_token(token) {
            Some(id) => Ok(Some(id)),
            None => Err("alknet-token is not recognized".into()),
        },
    }
}

/// Finds (or, for a push with `git:create`, creates) the repository and checks access.
/// Access is checked on the requested path before anything about the repository is
/// said, so those who may not read it cannot learn whether it exists.
fn open_repository(
    shared: &Shared,
    identity: Option<&Identity>,
    request: &GitRequest,
) -> Result<Repository, String> {
    let name = normalize(&request.path).map_err(|e| e.to_string())?;
    let public = &shared.config.public_read;
    let action = match request.service {
        Service::UploadPack => GitAction::Read,
        Service::ReceivePack => GitAction::Write,
    };
    let allowed = authorize(identity, &name, action, public);
    match resolve(&shared.root, &name) {
        Ok(repo) => {
            allowed.map_err(|e| e.to_string())?;
            Ok(repo)
        }
        Err(RepoError::NotFound)
            if request.service == Service::ReceivePack
                && authorize(identity, &name, GitAction::Create, public).is_ok() =>
        {
            match create_bare(&shared.root, &name, &shared.config.default_branch) {
                Ok(repo) => {
                    tracing::info!(repo = %repo.name, identity = ?identity.map(|i| &i.name), "git: repository created by push");
                    Ok(repo)
                }
                // created by a concurrent push meanwhile: serve that one
                Err(RepoError::AlreadyExists) => {
                    resolve(&shared.root, &name).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => {
            allowed.map_err(|e| e.to_string())?;
            if let RepoError::Io(io) = &e {
                tracing::warn!(path = %name, "git: resolving the repository: {io}");
                return Err("cannot open the repository".into());
            }
            if matches!(e, RepoError::Escapes) {
                tracing::warn!(path = %name, "git: a repository path leads out of the root");
            }
            Err(e.to_string())
        }
    }
}

async fn serve_stream(shared: &Shared, stream: BiStream, auth: &AuthContext) {
    let (send, mut recv) = stream.split();
    let (request, leftover) = match read_request(&shared.config, &mut recv).await {
        Ok(r) => r,
        Err(msg) => {
            tracing::debug!(remote = %auth.remote, "git: bad request: {msg}");
            refuse(send, recv, &msg).await;
            return;
        }
    };
    let identity = match request_identity(auth, &request) {
        Ok(id) => id,
        Err(msg) => {
            tracing::info!(remote = %auth.remote, "git: {msg}");
            refuse(send, recv, &msg).await;
            return;
        }
    };
    let repo = match open_repository(shared, identity.as_ref(), &request) {
        Ok(r) => r,
        Err(msg) => {
            tracing::info!(remote = %auth.remote, service = request.service.name(), path = %request.path, identity = ?identity.as_ref().map(|i| &i.name), "git: refused: {msg}");
            refuse(send, recv, &msg).await;
            return;
        }
    };
    let Some(_process) = take_slot(&shared.processes, shared.config.max_processes) else {
        tracing::warn!(
            "git: max_processes ({}) reached",
            shared.config.max_processes
        );
        refuse(send, recv, "server busy: too many git processes, try again").await;
        return;
    };
    if shared.config.backend == GitBackend::Gix {
        let command = crate::native::NativeCommand {
            service: request.service,
            dir: repo.dir.clone(),
            version: request.version.unwrap_or(0),
            allow_force_push: shared.config.allow_force_push,
            limits: shared.config.native_limits(),
        };
        let (mut send, mut recv) = (send, recv);
        let started = std::time::Instant::now();
        let (delivered, verdict) = crate::native::bridge::run_blocking(
            &mut send,
            &mut recv,
            leftover,
            move |input, output, interrupt| command.run(input, output, interrupt),
        )
        .await;
        crate::native::bridge::finish(&mut send, delivered, shared.config.exit_grace()).await;
        let who = identity.as_ref().map(|i| &i.name);
        match verdict {
            Ok(()) => {
                tracing::info!(remote = %auth.remote, service = request.service.name(), repo = %repo.name, identity = ?who, elapsed_ms = started.elapsed().as_millis() as u64, "git: done")
            }
            Err(e) => {
                tracing::info!(remote = %auth.remote, service = request.service.name(), repo = %repo.name, identity = ?who, delivered, "git: command failed: {e}")
            }
        }
        return;
    }
    let cmd = GitCommand {
        program: shared.config.git_program.clone(),
        service: request.service,
        dir: repo.dir.clone(),
        version: request.version,
        allow_force_push: shared.config.allow_force_push,
        allow_filter: shared.config.allow_filter,
        allow_want_ref: shared.config.git_backend_want_ref(),
        identity: identity.as_ref().map(|i| i.name.clone()),
        stderr_log_limit: shared.config.stderr_log_limit,
        exit_grace: shared.config.exit_grace(),
    };
    let spawned = match crate::process::spawn(&cmd) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(program = %cmd.program.display(), "git: cannot run git: {e}");
            refuse(send, recv, "the server cannot run git").await;
            return;
        }
    };
    let started = std::time::Instant::now();
    let outcome = spawned.serve(send, recv, leftover).await;
    let who = identity.as_ref().map(|i| &i.name);
    if outcome.status.is_some_and(|s| s.success()) && !outcome.aborted {
        tracing::info!(remote = %auth.remote, service = request.service.name(), repo = %repo.name, identity = ?who, elapsed_ms = started.elapsed().as_millis() as u64, "git: done");
    } else {
        let status = outcome
            .status
            .as_ref()
            .map_or_else(|| "unknown".into(), describe);
        tracing::info!(remote = %auth.remote, service = request.service.name(), repo = %repo.name, identity = ?who, status, aborted = outcome.aborted, stderr = %outcome.stderr, "git: command failed");
    }
}
