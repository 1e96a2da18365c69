//! Live reload for `alknet serve`: SIGHUP and the `node.reload` call operation re-read the
//! node's own config file and apply what can change without a restart.
//!
//! Reloaded: the TLS certificate and key (`[tls]`, or the generated one in the data
//! directory), the client-certificate policy, `[[identities]]`, `[identity]`,
//! `[admission]`, `[limits]` and `[quic]` for new connections (except the keys that size
//! sockets and the endpoint at start, `alknet_runtime::RESTART_LIMITS`, refused by name),
//! `[handlers] enabled` (a handler enabled is built from the reloaded config; one disabled
//! drains as at shutdown), `[log] filter`, and the handler sections (`[call]`, `[ssh]`,
//! `[sftp]`, `[git]`, `[dns]`, `[http]`, `[http3]`, `[tcp]`, `[hq]`): the handlers a changed
//! section is read by are built anew ([`FileConfig::adopt`] says which, and carries over
//! the node-wide parts they share) and serve new connections, while open connections keep
//! the instance they were accepted with. Keys bound to sockets or run once at start are
//! refused by name ([`FileConfig::restart_only_changes`]); so are `listen`, `workers` and
//! the other top-level keys outside [`RELOADABLE`]. A reload that fails anywhere (syntax,
//! an unreadable key, a certificate that does not match its key, a section that does not
//! validate, a zone file that does not parse) changes nothing.
//!
//! One thread applies reloads one at a time, whoever asked. The operation takes no path: the
//! node re-reads the file it was started with, so an admin token cannot make it read
//! another file.

use std::path::PathBuf;
use std::sync::mpsc;

use alknet_call::{CallError, Operation, ADMIN_SCOPE};
use alknet_runtime::ConfigReloadHandle;
use serde_json::json;

use crate::config::{FileConfig, DEFAULT_CONFIG};

/// Top-level config keys a reload may change.
const RELOADABLE: [&str; 17] = [
    "tls",
    "identities",
    "identity",
    "admission",
    "handlers",
    "log",
    "limits",
    "quic",
    "call",
    "ssh",
    "sftp",
    "git",
    "dns",
    "http",
    "http3",
    "tcp",
    "hq",
];

/// The per-handler sections, with the handlers (or the TCP listener) built from them.
const HANDLER_SECTIONS: [(&str, &str); 9] = [
    (
        "call",
        "alknet/call (and the HTTP routes running its operations)",
    ),
    ("ssh", "alknet/ssh"),
    ("sftp", "alknet/sftp and the sftp subsystem of alknet/ssh"),
    ("git", "alknet/git"),
    ("dns", "doq and alknet/dns"),
    ("http", "the HTTP routes (h3 and the TCP listener)"),
    ("http3", "h3"),
    ("tcp", "the TLS-over-TCP listener"),
    ("hq", "hq-interop"),
];

/// What a reload did (one line per change), or why it did nothing.
pub type ReloadOutcome = Result<Vec<String>, String>;

/// A request to reload; `reply` gets the outcome (none for SIGHUP: it is logged).
pub struct ReloadRequest {
    pub reply: Option<async_channel::Sender<ReloadOutcome>>,
}

pub type ReloadSender = mpsc::Sender<ReloadRequest>;

/// Where the running config came from, to read it again.
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

impl ConfigSource {
    pub fn read(&self) -> Result<(toml::Table, FileConfig), String> {
        let (text, origin) = match &self.path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?,
                p.display().to_string(),
            ),
            None => (DEFAULT_CONFIG.to_string(), "<default>".to_string()),
        };
        let mut cfg = FileConfig::parse(&text, &origin).map_err(|e| e.to_string())?;
        if self.data_dir.is_some() {
            cfg.data_dir = self.data_dir.clone();
        }
        let table: toml::Table = toml::from_str(&text).map_err(|e| format!("{origin}: {e}"))?;
        Ok((table, cfg))
    }
}

/// Applies reloads to one running server.
pub struct Reloader {
    source: ConfigSource,
    running: toml::Table,
    /// The config the node serves, with the node-wide parts built from it (call node,
    /// HTTP state, DNS catalog and its zone watcher) that a reload carries over.
    live: FileConfig,
    handle: ConfigReloadHandle,
    /// For a call handler enabled by a reload (its `node.reload` operation).
    requests: ReloadSender,
}

impl Reloader {
    /// `running` is the config the server started with, as read from `source` (its text
    /// as a table, and `live`, the config its handlers were built from).
    pub fn new(
        source: ConfigSource,
        running: toml::Table,
        live: FileConfig,
        handle: ConfigReloadHandle,
        requests: ReloadSender,
    ) -> Self {
        Self {
            source,
            running,
            live,
            handle,
            requests,
        }
    }

    /// Re-reads the config and applies it, or changes nothing and says why.
    pub fn reload(&mut self) -> ReloadOutcome {
        let (table, mut cfg) = self.source.read()?;
        // for a call handler built by this reload (its `node.reload` operation)
        cfg.reload_requests = Some(self.requests.clone());
        let changed = changed_sections(&self.running, &table);
        let fixed = changed
            .iter()
            .filter(|k| !RELOADABLE.contains(&k.as_str()))
            .cloned()
            .collect::<Vec<_>>();
        if !fixed.is_empty() {
            return Err(format!(
                "not reloaded: {} changed, which needs a restart (the listen address, \
                 workers, the vault and the data directory are fixed at start); nothing was \
                 changed",
                fixed.join(", ")
            ));
        }
        let keys = cfg.restart_only_changes(&self.live);
        if !keys.is_empty() {
            let named: Vec<String> = keys.iter().map(|(k, why)| format!("{k} ({why})")).collect();
            return Err(format!(
                "not reloaded: {} changed, which needs a restart; nothing was changed",
                named.join(", ")
            ));
        }
        let rebuild = cfg
            .adopt(&self.live, &changed)
            .map_err(|e| format!("not reloaded: {e}; nothing was changed"))?;
        let mut changes = Vec::new();
        // Build everything before changing anything.
        let tls = if cfg.vault.file.is_some() {
            None // the vault's key: it changes only with the vault, which needs a restart
        } else {
            Some(cfg.tls_identity().map_err(|e| format!("TLS: {e}"))?.0)
        };
        let provider = cfg.identity_provider().map_err(|e| e.to_string())?;
        let sections: Vec<&str> = HANDLER_SECTIONS
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| changed.iter().any(|c| c == s))
            .collect();
        let handlers =
            if self.running.get("handlers") != table.get("handlers") || !rebuild.alpns.is_empty() {
                let running = self.handle.handlers();
                let next = cfg
                    .registry_reusing(&running, &rebuild.alpns)
                    .map_err(|e| format!("not reloaded: {e}; nothing was changed"))?;
                Some((alpn_change(&running, &next), next))
            } else {
                None
            };
        if rebuild.http {
            // made (and `[http]` checked) now even when no handler serves it yet, after the
            // call handler whose operations it runs
            cfg.http_state()
                .map_err(|e| format!("not reloaded: {e}; nothing was changed"))?;
        }
        // the TLS-over-TCP listener's handler (HTTP) and limits, when it runs
        let tcp = if rebuild.tcp && self.handle.tcp_listening() {
            let (setup, _) = cfg
                .tcp_setup()
                .map_err(|e| format!("not reloaded: {e}; nothing was changed"))?;
            Some(setup)
        } else {
            None
        };
        let transport = ["limits", "quic"]
            .iter()
            .any(|k| self.running.get(*k) != table.get(*k));
        if transport {
            self.handle
                .check_transport(&cfg.limits, &cfg.quic)
                .map_err(|e| format!("not reloaded: {e}; nothing was changed"))?;
        }
        let old_tls = self.running.get("tls");
        if let Some(tls) = tls {
            let before = self.handle.fingerprint();
            let policy_changed = old_tls.and_then(|t| t.get("client_auth"))
                != table.get("tls").and_then(|t| t.get("client_auth"));
            if tls.fingerprint() != before || policy_changed {
                let after = self
                    .handle
                    .reload_tls(&tls, cfg.tls.client_auth)
                    .map_err(|e| format!("TLS: {e}; the old certificate stays"))?;
                if after != before {
                    changes.push(format!("certificate {before} -> {after}"));
                }
                if policy_changed {
                    changes.push(format!("client_auth -> {:?}", cfg.tls.client_auth));
                }
            }
        }
        if self.running.get("log") != table.get("log") {
            match crate::logging::set_filter(&cfg.log.filter)? {
                true => changes.push(format!("log filter -> {}", cfg.log.filter)),
                false => changes.push("log filter unchanged: ALKNET_LOG is set".into()),
            }
        }
        if let Some((change, registry)) = handlers {
            self.handle
                .set_handlers(registry)
                .map_err(|e| format!("handlers: {e}"))?;
            if self.running.get("handlers") != table.get("handlers") {
                changes.push(change);
            }
        }
        if let Some(setup) = tcp {
            self.handle
                .set_tcp(setup)
                .map_err(|e| format!("[tcp]: {e}"))?;
        }
        cfg.commit_reload(&self.live);
        for section in sections {
            let built = HANDLER_SECTIONS
                .iter()
                .find(|(s, _)| *s == section)
                .map_or("", |(_, h)| h);
            changes.push(format!("[{section}] for new connections ({built})"));
        }
        if transport {
            self.handle
                .set_transport(cfg.limits.clone(), cfg.quic.clone())
                .map_err(|e| format!("[limits]/[quic]: {e}"))?;
            for key in ["limits", "quic"] {
                if self.running.get(key) != table.get(key) {
                    changes.push(format!("[{key}] for new connections"));
                }
            }
        }
        if self.running.get("admission") != table.get("admission") {
            self.handle
                .set_admission(cfg.admission.clone())
                .map_err(|e| e.to_string())?;
            changes.push("admission limits".to_string());
        }
        self.handle.set_identity_provider(provider);
        if ["identities", "identity"]
            .iter()
            .any(|k| self.running.get(*k) != table.get(*k))
        {
            changes.push(format!("identities ({} configured)", cfg.identities.len()));
        }
        self.running = table;
        self.live = cfg;
        Ok(changes)
    }

    /// Serves reload requests on a thread of its own until every sender is gone.
    pub fn spawn(mut self, requests: mpsc::Receiver<ReloadRequest>) {
        std::thread::Builder::new()
            .name("alknet-reload".into())
            .spawn(move || {
                for request in requests {
                    crate::systemd::notify("RELOADING=1");
                    let outcome = self.reload();
                    crate::systemd::notify("READY=1");
                    match &outcome {
                        Ok(c) if c.is_empty() => tracing::info!("reload: nothing changed"),
                        Ok(c) => tracing::info!("reloaded: {}", c.join("; ")),
                        Err(e) => tracing::warn!("reload refused: {e}"),
                    }
                    if let Some(reply) = request.reply {
                        let _ = reply.send_blocking(outcome);
                    }
                }
            })
            .map(drop)
            .unwrap_or_else(|e| tracing::error!("cannot start the reload thread: {e}"));
    }
}

/// "handlers: +added -removed" between two registries.
fn alpn_change(
    before: &alknet_runtime::AlpnRegistry,
    after: &alknet_runtime::AlpnRegistry,
) -> String {
    let name = |a: &Vec<u8>| String::from_utf8_lossy(a).into_owned();
    let (after_alpns, before_alpns) = (after.alpns(), before.alpns());
    let added = after_alpns
        .iter()
        .filter(|a| before.lookup(a).is_none())
        .map(|a| format!("+{}", name(a)));
    let removed = before_alpns
        .iter()
        .filter(|a| after.lookup(a).is_none())
        .map(|a| format!("-{}", name(a)));
    let all: Vec<String> = added.chain(removed).collect();
    format!("handlers {}", all.join(" "))
}

/// How often `alknet serve --watch-config` looks at the config file.
pub const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What `--watch-config` compares: the file's modification time and size.
pub type FileStamp = Option<(Option<std::time::SystemTime>, u64)>;

pub fn file_stamp(path: &std::path::Path) -> FileStamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

/// `--watch-config`: a thread that asks for a reload whenever the file's modification
/// time or size differs from `seen` (its stamp when the running config was read; polled
/// every [`WATCH_INTERVAL`]: no inotify dependency, and an editor's replace-by-rename is
/// seen as well). Ends with the reload thread.
pub fn watch(path: PathBuf, seen: FileStamp, requests: ReloadSender) {
    let stamp = file_stamp;
    let spawned = std::thread::Builder::new()
        .name("alknet-watch-config".into())
        .spawn(move || {
            let mut seen = seen;
            loop {
                std::thread::sleep(WATCH_INTERVAL);
                let now = stamp(&path);
                if now != seen {
                    seen = now;
                    tracing::info!("{} changed: reloading", path.display());
                    if requests.send(ReloadRequest { reply: None }).is_err() {
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch the config file: {e}");
    }
}

/// Top-level keys whose values differ between `a` and `b`.
fn changed_sections(a: &toml::Table, b: &toml::Table) -> Vec<String> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// `node.reload` (scope `node:admin`): reloads the node's config file and answers what
/// changed; refusals come back as FAILED_PRECONDITION-like `INVALID_ARGUMENT` with the
/// reason.
pub fn reload_operation(requests: ReloadSender) -> Operation {
    Operation::unary("node.reload", move |_, _| {
        let requests = requests.clone();
        async move {
            let (reply, answer) = async_channel::bounded(1);
            requests
                .send(ReloadRequest { reply: Some(reply) })
                .map_err(|_| CallError::unavailable("reload is not running"))?;
            match answer.recv().await {
                Ok(Ok(changed)) => Ok(json!({ "changed": changed })),
                Ok(Err(reason)) => Err(CallError::invalid_argument(reason)),
                Err(_) => Err(CallError::internal("the reload thread ended")),
            }
        }
    })
    .scopes([ADMIN_SCOPE])
    .describe(
        "Re-reads the node's config file and applies what can change live; answers what changed",
    )
    .output_schema(json!({
        "type": "object",
        "required": ["changed"],
        "properties": {"changed": {"type": "array", "items": {"type": "string"}}}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_sections_names_what_differs() {
        let a: toml::Table =
            toml::from_str("listen = \"127.0.0.1:1\"\n[tls]\nclient_auth = \"optional\"\n")
                .expect("a");
        let b: toml::Table = toml::from_str(
            "listen = \"127.0.0.1:2\"\n[tls]\nclient_auth = \"required\"\nworkers = 3\n",
        )
        .expect("b");
        assert_eq!(changed_sections(&a, &b), vec!["listen", "tls"]);
        assert!(changed_sections(&a, &a).is_empty());
    }
}
