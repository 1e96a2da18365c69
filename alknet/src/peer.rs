//! `alknet peer add|list|remove`: the peers of the SQLite identity store.
//!
//! The database is `--db`, else the config's `identity.peers_db`, else `peers.db` in the
//! data directory (`--data-dir`, the config's `data_dir`, `$ALKNET_DATA_DIR`, the XDG
//! default). A running server sees every change at its next resolution.

use std::path::PathBuf;
use std::process::ExitCode;

use alknet_peers::{NewPeer, PeerSummary, SqlitePeerStore};
use alknet_runtime::Fingerprint;
use clap::{Args, Subcommand};

/// Hex digits of a fingerprint shown by `peer list` (`--json` shows them whole).
const FINGERPRINT_ABBREV: usize = 16;

#[derive(Args, Debug)]
pub struct PeerArgs {
    #[command(subcommand)]
    command: PeerCommand,
    /// TOML config file (for `identity.peers_db` and `data_dir`)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Override `data_dir` (the database is peers.db in it)
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// The peer database file (overrides the config and the data directory)
    #[arg(long, global = true, value_name = "FILE")]
    db: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum PeerCommand {
    /// Add a peer with its credentials and scopes
    Add {
        /// 1 to 64 characters from A-Z a-z 0-9 . _ @ -
        name: String,
        /// SHA-256 fingerprint of a client certificate (repeatable)
        #[arg(long = "fingerprint", value_name = "HEX")]
        fingerprints: Vec<Fingerprint>,
        /// A bearer token (repeatable; stored only as its SHA-256). A token on the command
        /// line is visible to other local users: prefer --generate-token
        #[arg(long = "token", value_name = "TOKEN")]
        tokens: Vec<String>,
        /// Generate a random token and print it once on stdout
        #[arg(long)]
        generate_token: bool,
        /// A scope granted to the peer (repeatable, at least one)
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
    },
    /// List the peers: name, scopes, fingerprints, token count
    List {
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Remove a peer and all its credentials
    Remove { name: String },
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("alknet peer: {msg}");
    ExitCode::FAILURE
}

pub fn run(args: PeerArgs) -> ExitCode {
    let path = match &args.db {
        Some(p) => p.clone(),
        None => {
            let cfg = match crate::load_config(args.config.clone(), args.data_dir.clone()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if !cfg.identity.sqlite {
                eprintln!(
                    "alknet peer: note: identity.sqlite is false in the config, so the server \
                     does not read this database"
                );
            }
            cfg.peers_db()
        }
    };
    let store = match SqlitePeerStore::open(&path) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match args.command {
        PeerCommand::Add {
            name,
            fingerprints,
            mut tokens,
            generate_token,
            scopes,
        } => {
            let generated = generate_token.then(alknet_peers::generate_token);
            tokens.extend(generated.clone());
            if fingerprints.is_empty() && tokens.is_empty() {
                return fail("give at least one --fingerprint, --token or --generate-token");
            }
            let peer = NewPeer {
                name,
                fingerprints,
                tokens,
                scopes,
            };
            if let Err(e) = store.add(&peer) {
                return fail(e);
            }
            if let Some(token) = generated {
                println!("{token}");
            }
            eprintln!(
                "added peer {:?} ({} fingerprint(s), {} token(s){}) to {}",
                peer.name,
                peer.fingerprints.len(),
                peer.tokens.len(),
                if generate_token {
                    "; the generated token is printed above and cannot be shown again"
                } else {
                    ""
                },
                path.display()
            );
            ExitCode::SUCCESS
        }
        PeerCommand::List { json } => match store.list() {
            Ok(peers) if json => {
                println!("{}", to_json(&peers));
                ExitCode::SUCCESS
            }
            Ok(peers) => {
                if peers.is_empty() {
                    eprintln!("no peers in {}", path.display());
                } else {
                    print!("{}", table(&peers));
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        PeerCommand::Remove { name } => match store.remove(&name) {
            Ok(true) => {
                eprintln!("removed peer {name:?} from {}", path.display());
                ExitCode::SUCCESS
            }
            Ok(false) => fail(format!("no peer {name:?} in {}", path.display())),
            Err(e) => fail(e),
        },
    }
}

fn to_json(peers: &[PeerSummary]) -> String {
    let list: Vec<serde_json::Value> = peers
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "scopes": p.scopes,
                "fingerprints": p.fingerprints.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
                "token_count": p.token_count,
                "created_at": p.created_at,
            })
        })
        .collect();
    serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into())
}

fn table(peers: &[PeerSummary]) -> String {
    let header = ["NAME", "SCOPES", "FINGERPRINTS", "TOKENS"].map(String::from);
    let rows: Vec<[String; 4]> = peers
        .iter()
        .map(|p| {
            let fps: Vec<String> = p
                .fingerprints
                .iter()
                .map(|f| format!("{}...", &f.to_string()[..FINGERPRINT_ABBREV]))
                .collect();
            [
                p.name.clone(),
                p.scopes.join(","),
                if fps.is_empty() {
                    "-".into()
                } else {
                    fps.join(",")
                },
                p.token_count.to_string(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_table_abbreviates_fingerprints() {
        let peers = [
            PeerSummary {
                name: "alice".into(),
                fingerprints: vec![Fingerprint([0xab; 32]), Fingerprint([0x01; 32])],
                token_count: 0,
                scopes: vec!["echo".into(), "call".into()],
                created_at: 1,
            },
            PeerSummary {
                name: "a-much-longer-name".into(),
                fingerprints: vec![],
                token_count: 2,
                scopes: vec!["x".into()],
                created_at: 2,
            },
        ];
        let t = table(&peers);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME                "), "{t}");
        assert!(
            lines[1].contains("echo,call  abababababababab...,0101010101010101...  0"),
            "{t}"
        );
        assert!(lines[2].starts_with("a-much-longer-name  x "), "{t}");
        assert!(lines[2].contains("  -  ") && lines[2].ends_with('2'), "{t}");
        let json: serde_json::Value = serde_json::from_str(&to_json(&peers)).expect("json");
        assert_eq!(json[0]["fingerprints"][0], "ab".repeat(32));
        assert_eq!(json[1]["token_count"], 2);
    }
}
