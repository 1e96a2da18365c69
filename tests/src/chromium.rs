//! Headless Chromium driven by `tests/interop/chromium_page.py` (standard library only):
//! load a page, wait for a JavaScript condition, read a JavaScript value. `tests/run-all.sh`
//! installs Debian's `chromium`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::wait_output;

/// Whether Debian's `chromium` or `chromium-headless-shell` is on PATH.
pub fn chromium_available() -> bool {
    ["chromium", "chromium-headless-shell"].iter().any(|c| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs `chromium_page.py` with `args` (the URL first, then its options) and returns the
/// JSON it prints (`ok`, `protocol`, `value`, …), failing the test when it prints none or
/// runs past `limit`.
pub fn chromium_page(args: &[String], limit: Duration) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/chromium_page.py");
    let child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let out = wait_output(child, limit);
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "chromium_page.py printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
