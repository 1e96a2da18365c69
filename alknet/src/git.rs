//! `alknet git`: managing the repositories `alknet/git` serves.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct GitArgs {
    #[command(subcommand)]
    command: GitCommand,
    /// TOML config file (for `[git]` root and default_branch)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Override `data_dir` (the default root is git/ in it)
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum GitCommand {
    /// Create a bare repository at PATH (relative to `[git]` root; must end in .git)
    Init {
        /// e.g. team/app.git
        path: String,
    },
}

pub fn run(args: GitArgs) -> ExitCode {
    let cfg = match crate::load_config(args.config, args.data_dir) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match args.command {
        GitCommand::Init { path } => {
            let root = cfg.git_root();
            let created = alknet_git::repo::normalize(&path).and_then(|name| {
                alknet_git::repo::create_bare(&root, &name, &cfg.git.default_branch)
            });
            match created {
                Ok(repo) => {
                    println!("{}", repo.dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("alknet git init: {path}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
