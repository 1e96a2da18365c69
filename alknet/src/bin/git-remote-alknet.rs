//! `git-remote-alknet`: git's remote helper for `alknet://` URLs (see `git_remote.rs`).
//! Put it on `PATH` beside `alknet` and `git clone alknet://HOST:PORT/repo.git` works.

// the helper uses the dialing and stdio piping of `alknet connect`, not its CLI entry
#[allow(dead_code)]
#[path = "../connect.rs"]
mod connect;
#[path = "../eyeballs.rs"]
mod eyeballs;
#[path = "../git_remote.rs"]
mod git_remote;
#[path = "../hangup.rs"]
mod hangup;

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALKNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    git_remote::main()
}
