//! The dashboard (`GET /`, fed by `GET /api/dashboard/stream`) in a real browser: headless
//! Chromium loads it from the real `alknet serve` over HTTP/2 (TLS over TCP) and over
//! HTTP/3 (QUIC, forced with `--origin-to-force-quic-on`), the certificate accepted by its
//! public-key pin, and the test reads what the page's script filled in from the live
//! snapshots. Chromium is driven over the DevTools protocol by
//! `tests/interop/chromium_page.py` (standard library only). `tests/run-all.sh` installs
//! Debian's `chromium`; without it on PATH the test says so loudly and passes.
//!
//! Set `ALKNET_DASHBOARD_SCREENSHOT=docs/dashboard.png` to keep the HTTP/2 screenshot (the
//! one the README shows).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use alknet_tests::*;

/// Every client run ends within this, or the test fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long Chromium may take to show the figures (the page's own deadline).
const PAGE_DEADLINE_SECS: &str = "40";
/// Snapshots the page must have shown: two or more means the stream is live (the first
/// comes at once, the next after `dashboard_interval_ms`) and rates were computed.
const MIN_SNAPSHOTS: u32 = 3;
const TOKEN_METRICS: &str = "metrics-token-dash";

fn config(public: bool) -> String {
    let public = if public {
        r#"public = ["/", "/api/dashboard/stream"]"#
    } else {
        ""
    };
    format!(
        r#"
[handlers]
enabled = ["alknet/echo", "alknet/call", "h3"]

[http]
dashboard_interval_ms = 250
{public}

[[identities]]
name = "scraper"
tokens = ["{TOKEN_METRICS}"]
scopes = ["node:metrics"]
"#
    )
}

/// What the page showed: the text of its figure fields, as its script filled them in.
#[derive(Debug)]
struct Shown {
    protocol: String,
    fields: serde_json::Value,
}

impl Shown {
    fn text(&self, id: &str) -> &str {
        self.fields[id].as_str().unwrap_or_default()
    }
    fn number(&self, id: &str) -> f64 {
        self.text(id)
            .trim_end_matches(['k', 'M'])
            .parse()
            .unwrap_or_else(|_| panic!("#{id} is not a number: {:?}", self.fields))
    }
}

/// The ids of the page's figure fields the test reads.
const FIELDS: [&str; 10] = [
    "version",
    "status",
    "snapshots",
    "workers",
    "http-total",
    "call-total",
    "rate-in",
    "rate-http",
    "worker-rows",
    "alpn-rows",
];

/// Loads the dashboard in headless Chromium with `flags`, waits until it showed
/// `snapshots` snapshots and `also` (a JavaScript condition) holds, and returns what it
/// showed.
fn load_dashboard(
    server: &BinServer,
    flags: &[String],
    snapshots: u32,
    also: &str,
    screenshot: &Path,
) -> Shown {
    let read = format!(
        "JSON.stringify(Object.fromEntries({ids}.map(id => [id, document.getElementById(id).textContent])))",
        ids = serde_json::to_string(&FIELDS).expect("json")
    );
    let until = format!(
        "document.body.dataset.live === '1' && \
         Number(document.getElementById('snapshots').textContent) >= {snapshots} && ({also})"
    );
    let mut args = vec![
        format!("https://127.0.0.1:{}/", server.port),
        "--until".into(),
        until,
        "--read".into(),
        read,
        "--deadline".into(),
        PAGE_DEADLINE_SECS.into(),
        "--screenshot".into(),
        screenshot.display().to_string(),
    ];
    args.extend(flags.iter().map(|f| format!("--chromium-flag={f}")));
    let result = chromium_page(&args, CLIENT_TIMEOUT);
    assert_eq!(
        result["ok"], true,
        "the page never showed live figures: {result}"
    );
    let fields = result["value"]
        .as_str()
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_else(|| panic!("no fields read: {result}"));
    Shown {
        protocol: result["protocol"].as_str().unwrap_or_default().to_string(),
        fields,
    }
}

/// The page filled in from live snapshots, not its placeholders.
fn assert_live(shown: &Shown) {
    assert_eq!(
        shown.text("version"),
        env!("CARGO_PKG_VERSION"),
        "{shown:?}"
    );
    assert_eq!(shown.text("status"), "serving", "{shown:?}");
    assert!(
        shown.number("snapshots") >= f64::from(MIN_SNAPSHOTS),
        "{shown:?}"
    );
    // BinServer runs 2 workers
    assert_eq!(shown.text("workers"), "2", "{shown:?}");
    // at least the page itself was answered (and counted) before the snapshots
    assert!(shown.number("http-total") >= 1.0, "{shown:?}");
    // rates need two snapshots: the placeholder is gone
    for id in ["rate-in", "rate-http"] {
        assert!(shown.number(id) >= 0.0, "#{id}: {shown:?}");
    }
    // the ALPN table lists the served ALPNs
    assert!(shown.text("alpn-rows").contains("alknet/call"), "{shown:?}");
    assert!(shown.text("alpn-rows").contains("h3"), "{shown:?}");
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).expect("screenshot written");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000,
        "not a PNG screenshot: {} bytes",
        bytes.len()
    );
}

/// Steady requests for a few seconds (GET /health at 40/s, the public `echo` operation at
/// 20/s), so the request-rate chart and the call counter have something to show; curl
/// paces them (`--rate`) and ends by itself.
fn traffic(server: &BinServer) -> Vec<std::process::Child> {
    let cert = server.data_dir.path().join("cert.pem");
    let health = format!("https://127.0.0.1:{}/health", server.port);
    let echo = format!("https://127.0.0.1:{}/api/call/echo", server.port);
    let run = |rate: &str, extra: &[&str], url: &str, n: usize| {
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "--http2", "--max-time", "30"])
            .args(["--rate", rate, "--cacert"])
            .arg(&cert)
            .args(extra)
            .args(std::iter::repeat_n(url, n))
            .stdout(Stdio::null())
            .spawn()
            .expect("curl (tests/run-all.sh installs it)")
    };
    vec![
        run("40/s", &[], &health, 200),
        run("20/s", &["--data", r#"{"hello":"dashboard"}"#], &echo, 100),
    ]
}

#[test]
fn chromium_shows_live_figures_over_http2_and_http3() {
    if !chromium_available() {
        eprintln!(
            "\n\n!!!!! SKIPPED http_dashboard: no `chromium` on PATH \
             (tests/run-all.sh installs Debian's chromium) !!!!!\n\n"
        );
        return;
    }
    let server = BinServer::start_with_config(&config(true));
    let curls = traffic(&server);
    let pin = format!(
        "--ignore-certificate-errors-spki-list={}",
        server.spki_sha256_base64()
    );
    let shots = tempfile::tempdir().expect("tempdir");

    let h2_shot = shots.path().join("h2.png");
    // more snapshots than needed, with calls counted: the screenshot shows some history
    let shown = load_dashboard(
        &server,
        std::slice::from_ref(&pin),
        4 * MIN_SNAPSHOTS,
        "Number(document.getElementById('call-total').textContent) >= 1",
        &h2_shot,
    );
    assert_eq!(shown.protocol, "h2", "{shown:?}");
    assert_live(&shown);
    assert!(shown.number("call-total") >= 1.0, "{shown:?}");
    for curl in curls {
        assert!(wait_output(curl, CLIENT_TIMEOUT).status.success());
    }
    assert_png(&h2_shot);
    if let Ok(keep) = std::env::var("ALKNET_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&h2_shot, &keep).expect("copy the screenshot");
    }

    let h3_shot = shots.path().join("h3.png");
    let flags = [
        pin,
        format!("--origin-to-force-quic-on=127.0.0.1:{}", server.port),
    ];
    let shown = load_dashboard(&server, &flags, MIN_SNAPSHOTS, "true", &h3_shot);
    assert_eq!(shown.protocol, "h3", "{shown:?}");
    assert_live(&shown);
    assert_png(&h3_shot);
}

/// Without `[http] public`, the dashboard follows `/metrics`' rule: anonymous is refused,
/// the scope `node:metrics` gets the page and the stream's first snapshot.
#[test]
fn the_dashboard_needs_the_metrics_scope_unless_public() {
    let server = BinServer::start_with_config(&config(false));
    let curl = |path: &str, token: Option<&str>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--http2", "--max-time", "5", "--cacert"])
            .arg(server.data_dir.path().join("cert.pem"))
            .args(["-w", "\n%{http_code}"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let child = cmd
            .arg(format!("https://127.0.0.1:{}{path}", server.port))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("curl");
        // the stream never ends by itself: curl's --max-time ends it (exit 28)
        let out = wait_output(child, CLIENT_TIMEOUT);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
        (code.trim().to_string(), body.to_string())
    };
    for path in ["/", "/dashboard", "/api/dashboard/stream"] {
        assert_eq!(curl(path, None).0, "401", "{path}");
    }
    for path in ["/", "/dashboard"] {
        let (code, body) = curl(path, Some(TOKEN_METRICS));
        assert_eq!(code, "200", "{path}");
        assert!(body.contains("/api/dashboard/stream"), "{path}: {body}");
    }
    let (code, body) = curl("/api/dashboard/stream", Some(TOKEN_METRICS));
    assert_eq!(code, "200");
    // the first snapshot at once, then one every 250 ms: within 5 s, several
    let snapshots: Vec<serde_json::Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("snapshot JSON"))
        .collect();
    assert!(snapshots.len() >= 3, "{body}");
    for (i, s) in snapshots.iter().enumerate() {
        assert_eq!(s["seq"], i as u64, "{s}");
        assert_eq!(s["workers"].as_array().map(Vec::len), Some(2), "{s}");
    }
    assert!(snapshots[1]["uptime_ms"].as_u64() > snapshots[0]["uptime_ms"].as_u64());
}
