//! Smoke runs of every workload against both servers: a second or two, tiny sizes,
//! asserting exact operation and byte counts and zero errors — never timings.

use std::process::Command;

fn loadtest(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_alknet-loadtest"))
        .args(args)
        .output()
        .expect("run alknet-loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "alknet-loadtest {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The number after `"key":` in a one-line JSON summary.
fn field(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let start = json
        .find(&pat)
        .unwrap_or_else(|| panic!("{key} missing in {json}"))
        + pat.len();
    let digits: String = json[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a count in {json}"))
}

fn run(workload: &str, target: &str, extra: &[&str]) -> String {
    let mut args = vec![workload, "--target", target, "--warmup", "0", "--json"];
    // bulk passes its own --duration (the longest a transfer may take)
    if !extra.contains(&"--duration") {
        args.extend_from_slice(&["--duration", "1"]);
    }
    args.extend_from_slice(extra);
    let json = loadtest(&args);
    assert!(json.contains("\"errors\":{}"), "errors in {json}");
    json
}

#[test]
fn rr_moves_exact_bytes_on_both_servers_with_both_clients() {
    for target in ["alknet", "quinn"] {
        for client in ["alknet", "quinn"] {
            let json = run(
                "rr",
                target,
                &[
                    "--client",
                    client,
                    "--connections",
                    "2",
                    "--streams",
                    "4",
                    "--size",
                    "100",
                ],
            );
            let ops = field(&json, "operations");
            assert!(ops > 0, "{target}/{client}: {json}");
            // each echo is compared byte for byte by the client: a wrong one is an error
            assert_eq!(
                field(&json, "bytes"),
                ops * 200,
                "{target}/{client}: {json}"
            );
            assert_eq!(field(&json, "connections"), 2, "{target}/{client}: {json}");
        }
    }
}

#[test]
fn perf_rr_moves_exact_bytes_on_every_server_with_both_clients() {
    for target in ["alknet", "quinn", "quinn-mt"] {
        for client in ["alknet", "quinn"] {
            let json = run(
                "perf-rr",
                target,
                &[
                    "--client",
                    client,
                    "--connections",
                    "2",
                    "--streams",
                    "4",
                    "--upload-size",
                    "100",
                    "--download-size",
                    "3000",
                ],
            );
            let ops = field(&json, "operations");
            assert!(ops > 0, "{target}/{client}: {json}");
            assert_eq!(field(&json, "bytes"), ops * 3100, "{json}");
            assert_eq!(field(&json, "connections"), 2, "{json}");
            // the server's CPU is read from /proc: every report carries the efficiency
            assert!(!json.contains("\"per_server_cpu_s\":null"), "{json}");
        }
    }
    // upload only: the client waits for the server to have it all, reads nothing back
    let json = run(
        "perf-rr",
        "alknet",
        &["--upload-size", "5000", "--download-size", "0"],
    );
    let ops = field(&json, "operations");
    assert!(ops > 0, "{json}");
    assert_eq!(field(&json, "bytes"), ops * 5000, "{json}");
}

#[test]
fn h3_gets_exact_bodies_from_every_server_with_every_client() {
    for target in ["alknet", "quinn", "quinn-mt"] {
        for client in ["wire", "h3-crate", "quinn"] {
            let json = run(
                "h3",
                target,
                &[
                    "--h3-client",
                    client,
                    "--connections",
                    "2",
                    "--streams",
                    "4",
                ],
            );
            let ops = field(&json, "operations");
            assert!(ops > 0, "{target}/{client}: {json}");
            // every answer is `{"status":"serving"}`, checked byte for byte by the client
            assert_eq!(field(&json, "bytes"), ops * 20, "{target}/{client}: {json}");
            assert_eq!(field(&json, "connections"), 2, "{target}/{client}: {json}");
        }
    }
}

#[test]
fn split_cores_runs_both_servers_and_clients() {
    for target in ["alknet", "quinn"] {
        for client in ["alknet", "quinn"] {
            let json = run(
                "perf-rr",
                target,
                &["--split-cores", "--client", client, "--streams", "4"],
            );
            let ops = field(&json, "operations");
            assert!(ops > 0, "{json}");
            assert_eq!(field(&json, "bytes"), ops * 128, "{json}");
            assert!(json.contains("cores split"), "{json}");
        }
    }
}

#[test]
fn alknet_reports_its_datagram_counters_and_no_forwarding() {
    let json = run(
        "perf-rr",
        "alknet",
        &["--connections", "4", "--streams", "4"],
    );
    assert!(field(&json, "server_datagrams_received") > 0, "{json}");
    assert!(field(&json, "server_datagrams_sent") > 0, "{json}");
    // connections stay on the worker the kernel steered them to
    assert_eq!(field(&json, "forwarded"), 0, "{json}");
}

#[test]
fn bulk_moves_exact_bytes_both_ways_on_both_servers() {
    for target in ["alknet", "quinn"] {
        for direction in ["download", "upload"] {
            let json = run(
                "bulk",
                target,
                &[
                    "--connections",
                    "2",
                    "--bytes",
                    "3000001",
                    "--direction",
                    direction,
                    "--duration",
                    "30",
                ],
            );
            assert_eq!(field(&json, "operations"), 2, "{json}");
            assert_eq!(field(&json, "bytes"), 6_000_002, "{json}");
        }
    }
}

#[test]
fn handshake_and_idle_complete_on_both_servers() {
    for target in ["alknet", "quinn"] {
        let json = run("handshake", target, &["--connections", "2"]);
        let ops = field(&json, "operations");
        assert!(ops > 0, "{json}");
        // one 1-byte exchange per handshake
        assert_eq!(field(&json, "bytes"), ops, "{json}");
        assert_eq!(field(&json, "connections"), ops, "{json}");
        let json = run("handshake", target, &["--connections", "2", "--resumption"]);
        assert!(field(&json, "operations") > 0, "{json}");
        // the vault's certificate kind
        let json = run(
            "handshake",
            target,
            &["--connections", "2", "--tls-key", "ed25519"],
        );
        assert!(field(&json, "operations") > 0, "{json}");
        assert!(json.contains("Ed25519 certificate"), "{json}");
        // quinn's kind of client: the same loop, the same exchange
        for resumption in [false, true] {
            // with resumption, on two client threads (an endpoint and a loop each)
            let mut args = vec!["--client", "quinn", "--connections", "2"];
            if resumption {
                args.extend(["--resumption", "--client-threads", "2"]);
            }
            let json = run("handshake", target, &args);
            let ops = field(&json, "operations");
            assert!(ops > 0, "{json}");
            assert_eq!(field(&json, "bytes"), ops, "{json}");
            assert_eq!(field(&json, "connections"), ops, "{json}");
            assert!(
                json.contains("quinn (tokio current-thread) client"),
                "{json}"
            );
            assert!(json.contains(&format!("resumption {resumption}")), "{json}");
            let threads = if resumption { 2 } else { 1 };
            assert!(
                json.contains(&format!("{threads} client threads")),
                "{json}"
            );
        }

        let json = run("idle", target, &["--connections", "50"]);
        assert_eq!(field(&json, "operations"), 50, "{json}");
        assert!(json.contains("\"rss_per_connection\":"), "{json}");
    }
}

#[test]
fn compare_prints_a_ratio() {
    let out = loadtest(&[
        "compare",
        "--workload",
        "rr",
        "--rounds",
        "1",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--streams",
        "2",
        "--baseline",
        "quinn",
        "--baseline",
        "quinn-mt",
    ]);
    assert!(out.contains("ratio alknet/quinn: throughput"), "{out}");
    assert!(out.contains("ratio alknet/quinn-mt: throughput"), "{out}");
    assert!(out.contains("efficiency"), "{out}");
}

#[test]
fn probe_reports_all_three_limits() {
    let out = loadtest(&["probe", "--seconds", "1"]);
    for needle in ["GSO x", "one datagram per send", "aes-128-gcm"] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
}

#[test]
fn call_moves_exact_bytes_through_the_call_stack() {
    let json = run(
        "call",
        "alknet",
        &["--connections", "2", "--streams", "8", "--size", "100"],
    );
    let ops = field(&json, "operations");
    assert!(ops > 0, "{json}");
    assert_eq!(field(&json, "bytes"), ops * 200, "{json}");
    assert_eq!(field(&json, "connections"), 2);
}

#[test]
fn ssh_workloads_move_exact_bytes_through_the_bridge() {
    let json = run(
        "ssh-cat",
        "alknet",
        &[
            "--connections",
            "2",
            "--bytes",
            "3000000",
            "--duration",
            "20",
        ],
    );
    assert_eq!(field(&json, "operations"), 2, "{json}");
    assert_eq!(field(&json, "bytes"), 6_000_000, "{json}");
    let json = run("ssh-rr", "alknet", &["--connections", "2", "--size", "100"]);
    let ops = field(&json, "operations");
    assert!(ops > 0, "{json}");
    assert_eq!(field(&json, "bytes"), ops * 200, "{json}");
}

/// The number after `label` in `text`.
#[test]
fn sftp_workloads_move_exact_bytes_and_files_both_ways() {
    // one file per session, read with requests smaller than the file (a short last one)
    for workload in ["sftp-get", "sftp-put"] {
        let json = run(
            workload,
            "alknet",
            &[
                "--connections",
                "2",
                "--bytes",
                "3000001",
                "--sftp-chunk",
                "65536",
                "--duration",
                "30",
            ],
        );
        assert_eq!(field(&json, "operations"), 2, "{json}");
        assert_eq!(field(&json, "bytes"), 6_000_002, "{json}");
        assert!(json.contains("\"unit\":\"MB/s\""), "{json}");
    }
    // many small files, several at a time, on two client threads
    for workload in ["sftp-get", "sftp-put"] {
        let json = run(
            workload,
            "alknet",
            &[
                "--connections",
                "3",
                "--client-threads",
                "2",
                "--sftp-files",
                "50",
                "--sftp-files-in-flight",
                "4",
                "--size",
                "4097",
                "--duration",
                "30",
            ],
        );
        assert_eq!(field(&json, "operations"), 150, "{json}");
        assert_eq!(field(&json, "bytes"), 150 * 4097, "{json}");
        assert!(json.contains("\"unit\":\"files/s\""), "{json}");
    }
}

fn count_after(text: &str, label: &str) -> u64 {
    let start = text
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} missing in {text}"))
        + label.len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no count after {label:?} in {text}"))
}

#[test]
fn flood_engages_retry_and_the_rate_limit_and_the_legitimate_client_is_served() {
    let out = Command::new(env!("CARGO_BIN_EXE_alknet-loadtest"))
        .args([
            "flood",
            "--rate",
            "2000",
            "--ports",
            "64",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--connections",
            "2",
            "--streams",
            "2",
        ])
        .env("ALKNET_NEW_CONNECTIONS_PER_SECOND", "500")
        .output()
        .expect("run alknet-loadtest flood");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "flood failed (the legitimate client had errors?):\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = count_after(&text, "flood: ");
    assert!(sent > 1000, "{text}");
    // each Initial met one fate: past the rate, then Retry once the worker's unvalidated
    // handshakes reached the threshold (256 per worker), or accepted before that
    let retries = count_after(&text, "Retry sent ");
    let dropped = count_after(&text, "dropped over rate ");
    let accepted = count_after(&text, "accepted ");
    assert!(retries > 0 && dropped > 0, "{text}");
    assert!(accepted <= 2 * 256 + 8, "accepted {accepted}: {text}");
    assert!(retries + dropped + accepted <= sent + 8, "{text}");
    assert!(text.contains("Retry disengaged"), "{text}");
}
