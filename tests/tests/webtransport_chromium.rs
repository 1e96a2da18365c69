//! WebTransport from a real browser: headless Chromium loads a page that the real
//! `alknet serve` serves itself over HTTP/2 (TLS over TCP, same port), the page fetches
//! `GET /api/webtransport` and opens sessions with `serverCertificateHashes` (the node's
//! `tls.webtransport_cert = "auto"` certificate): `alknet/call` (`node.info` and the
//! streamed `echo.stream`, framed by the page's own JavaScript), `alknet/echo` (1 MiB on
//! a bidirectional stream, compared by SHA-256, and datagrams), and three refusals (a
//! handler not allowed, an unknown path, a bad token). A second load gives the page a
//! wrong certificate hash, which Chromium must refuse. The page's script is
//! `tests/interop/webtransport_page.html`; Chromium is driven by
//! `tests/interop/chromium_page.py`. Without Chromium on PATH the test says so loudly and
//! passes (`tests/run-all.sh` installs Debian's `chromium`).

use std::path::Path;
use std::time::Duration;

use alknet_tests::*;

/// Every client run ends within this, or the test fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
/// The page's own deadline for all of its steps.
const PAGE_DEADLINE_SECS: &str = "60";
const TOKEN: &str = "wt-browser-token";

fn config() -> String {
    let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop");
    format!(
        r#"
[handlers]
enabled = ["alknet/echo", "alknet/call", "perf", "h3"]

[tls]
webtransport_cert = "auto"

[http]
static_root = "{}"

[[identities]]
name = "browser"
tokens = ["{TOKEN}"]
scopes = []
"#,
        interop.display()
    )
}

/// Loads the page with `query`, waits until its steps ran, returns its results.
fn run_page(server: &BinServer, query: &str) -> serde_json::Value {
    let args = [
        format!(
            "https://127.0.0.1:{}/webtransport_page.html?{query}",
            server.port
        ),
        "--until".into(),
        "document.body.dataset.done === '1'".into(),
        "--read".into(),
        "document.body.dataset.results || '{}'".into(),
        "--deadline".into(),
        PAGE_DEADLINE_SECS.into(),
        // the page itself comes over HTTP/2 with the node's main certificate, pinned
        format!(
            "--chromium-flag=--ignore-certificate-errors-spki-list={}",
            server.spki_sha256_base64()
        ),
    ];
    let result = chromium_page(&args, CLIENT_TIMEOUT);
    assert_eq!(result["ok"], true, "the page never finished: {result}");
    assert_eq!(
        result["protocol"], "h2",
        "the page is served over HTTP/2: {result}"
    );
    result["value"]
        .as_str()
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_else(|| panic!("no results read: {result}"))
}

#[test]
fn chromium_calls_echoes_and_is_refused_over_webtransport() {
    if !chromium_available() {
        eprintln!(
            "\n\n!!!!! SKIPPED webtransport_chromium: no `chromium` on PATH \
             (tests/run-all.sh installs Debian's chromium) !!!!!\n\n"
        );
        return;
    }
    let server = BinServer::start_with_config(&config());

    let r = run_page(&server, &format!("token={TOKEN}"));
    assert_eq!(r.get("error"), None, "a step failed: {r}");
    assert_eq!(r["draft"], "draft02", "{r}");
    assert_eq!(r["hashes"], 1, "one certificate, no rotation due: {r}");
    let paths: Vec<&str> = r["paths"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        paths,
        ["/alknet/echo", "/alknet/call"],
        "perf and h3 are not offered: {r}"
    );
    assert_eq!(r["node.info"], env!("CARGO_PKG_VERSION"), "{r}");
    assert_eq!(r["echo.stream"], "5/1", "five items, one end: {r}");
    assert_eq!(r["echo.bytes"], 1 << 20, "{r}");
    assert_eq!(r["echo.same"], true, "{r}");
    assert_eq!(r["datagrams"], 5, "{r}");
    assert_eq!(r["refused.perf"], "refused", "{r}");
    assert_eq!(r["refused.unknown"], "refused", "{r}");
    assert_eq!(r["refused.token"], "refused", "{r}");

    let r = run_page(&server, "badhash=1");
    assert_eq!(r.get("error"), None, "{r}");
    assert_eq!(
        r["badhash"], "refused",
        "a wrong certificate hash must fail: {r}"
    );
}
