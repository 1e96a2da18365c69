//! Logging of the `alknet` commands: `tracing` to stderr, filtered by `ALKNET_LOG` or, for
//! `alknet serve`, by `[log] filter` — which a reload changes while the node runs.

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// Replaces the filter of the installed subscriber (set once it is installed, unless
/// `ALKNET_LOG` chose the filter: the environment wins over the config).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Installs the subscriber with `ALKNET_LOG`, else `default`.
pub fn init(default: &str) {
    use std::io::IsTerminal;
    let from_env = EnvFilter::try_from_env("ALKNET_LOG").ok();
    let env_chose = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_filter_reloading();
    let handle = builder.reload_handle();
    if builder.try_init().is_ok() && !env_chose {
        let _ = SET_FILTER.set(Box::new(move |f| {
            handle.reload(f).map_err(|e| e.to_string())
        }));
    }
}

/// Checks a filter directive such as `info,alknet_runtime=debug`.
pub fn parse(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(filter).map_err(|e| format!("log.filter {filter:?}: {e}"))
}

/// Filters logs with `filter` from now on. `Ok(false)`: `ALKNET_LOG` is set and keeps its
/// filter.
pub fn set_filter(filter: &str) -> Result<bool, String> {
    let parsed = parse(filter)?;
    match SET_FILTER.get() {
        Some(set) => set(parsed).map(|()| true),
        None => Ok(false),
    }
}
