//! `alknet/git` on the wire, with a raw QUIC client: a malformed, refused or stalled
//! request line gets an `ERR` pkt-line and its stream ends, while the connection stays
//! and serves the next stream.

use std::sync::Arc;

use alknet_git::{encode_pkt_line, encode_request, GitConfig, GitHandler, Service};
use alknet_runtime::{Bytes, Connection};
use alknet_tests::git::require_git;
use alknet_tests::{client_endpoint, connect, run_client, start_server, ServerOptions};

/// Sends `bytes` on a new stream (finishing it if `fin`) and returns all the server said.
async fn exchange(conn: &Connection, bytes: &[u8], fin: bool) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
    send.write_chunk(Bytes::copy_from_slice(bytes))
        .await
        .expect("write");
    if fin {
        send.finish().expect("finish");
    }
    let mut got = Vec::new();
    while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024).await {
        got.extend_from_slice(&chunk);
    }
    got
}

fn assert_err(reply: &[u8], needle: &str) {
    let text = String::from_utf8_lossy(reply);
    assert!(
        text.len() > 8 && &text[4..8] == "ERR ",
        "not an ERR line: {text:?}"
    );
    let len = usize::from_str_radix(&text[..4], 16).expect("pkt-line length");
    assert_eq!(len, reply.len(), "exactly one pkt-line: {text:?}");
    assert!(text.contains(needle), "{needle:?} not in {text:?}");
}

#[test]
fn bad_requests_get_err_and_the_connection_stays() {
    if require_git().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("git");
    alknet_git::repo::create_bare(&root, "r.git", "main").expect("repo");
    let config = GitConfig {
        public_read: vec!["*".into()],
        request_timeout_ms: 300,
        ..GitConfig::default()
    };
    let handler = GitHandler::new(config, &root).expect("handler");
    let server = start_server(ServerOptions {
        handlers: vec![Arc::new(handler)],
        ..ServerOptions::default()
    });
    run_client(|| async move {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_git::ALPN)
            .await
            .expect("connect");
        let request = |path: &str| encode_request(Service::UploadPack, path, None, Some(2), None);
        let cases: Vec<(Vec<u8>, bool, &str)> = vec![
            (b"zzzz".to_vec(), true, "invalid pkt-line"),
            (b"0000".to_vec(), true, "flush"),
            (b"fff0".to_vec(), false, "too long"),
            (b"0020git-upload".to_vec(), true, "ended inside"),
            (b"0010".to_vec(), false, "no request line in time"),
            (
                encode_pkt_line(b"git-upload-archive /r.git\0"),
                true,
                "unsupported service",
            ),
            (encode_pkt_line(b"sh -c id\0"), true, "unsupported service"),
            (request("/../etc"), true, "'..' is not allowed"),
            (request("//etc/passwd"), true, "absolute paths"),
            (request("/nope.git"), true, "repository not found"),
            (
                encode_request(Service::ReceivePack, "/r.git", None, None, None),
                true,
                "authentication required",
            ),
            (
                encode_request(Service::UploadPack, "/r.git", None, None, Some("x")),
                true,
                "not recognized",
            ),
        ];
        for (bytes, fin, needle) in cases {
            let reply = exchange(&conn, &bytes, fin).await;
            assert_err(&reply, needle);
        }
        // the same connection still serves a good request: v2 capabilities, then the
        // client's flush ends the command
        let mut good = request("/r.git");
        good.extend_from_slice(b"0000");
        let reply = exchange(&conn, &good, true).await;
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("000eversion 2\n"), "{text:?}");
        assert!(text.contains("ls-refs"), "{text:?}");
        // and v0: the ref advertisement of an empty repository
        let v0 = encode_request(Service::UploadPack, "/r", None, None, None);
        let mut v0 = v0;
        v0.extend_from_slice(b"0000");
        let reply = exchange(&conn, &v0, true).await;
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains("capabilities^{}"), "{text:?}");
        assert!(conn.close_reason().is_none(), "the connection stays");
    });
    // and the repository is untouched
    let fsck = std::process::Command::new("git")
        .args(["fsck", "--full"])
        .current_dir(root.join("r.git"))
        .output()
        .expect("git fsck");
    assert!(fsck.status.success());
}

/// Entries of `objects/` that are a push's quarantine (`tmp_objdir-incoming-*`).
fn quarantines(repo: &std::path::Path) -> usize {
    std::fs::read_dir(repo.join("objects"))
        .expect("objects")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().contains("incoming"))
        })
        .count()
}

#[test]
fn a_push_reset_mid_pack_leaves_the_repository_as_it_was() {
    if require_git().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("git");
    let repo = alknet_git::repo::create_bare(&root, "p.git", "main").expect("repo");
    let provider = alknet_runtime::ConfigIdentityProvider::new(&[alknet_runtime::IdentityEntry {
        name: "writer".into(),
        fingerprints: vec![],
        tokens: vec!["w".into()],
        scopes: vec!["git:write".into()],
    }])
    .expect("provider");
    let handler = GitHandler::new(GitConfig::default(), &root).expect("handler");
    let server = start_server(ServerOptions {
        handlers: vec![Arc::new(handler)],
        provider: Arc::new(provider),
        ..ServerOptions::default()
    });
    let dir_path = repo.dir.clone();
    run_client(|| async move {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_git::ALPN)
            .await
            .expect("connect");
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        let request = encode_request(Service::ReceivePack, "/p.git", None, None, Some("w"));
        send.write_chunk(Bytes::from(request)).await.expect("write");
        // the ref advertisement ends with a flush
        let mut advert = Vec::new();
        while !advert.ends_with(b"0000") {
            let chunk = recv
                .read_chunk(64 * 1024)
                .await
                .expect("read")
                .expect("data");
            advert.extend_from_slice(&chunk);
        }
        assert!(String::from_utf8_lossy(&advert).contains("report-status"));
        // one ref update, then a pack that announces 1000 objects and stops after its header
        let zero = "0".repeat(40);
        let new = "a".repeat(40);
        let mut push =
            encode_pkt_line(format!("{zero} {new} refs/heads/x\0report-status\n").as_bytes());
        push.extend_from_slice(b"0000PACK\0\0\0\x02\0\0\x03\xe8");
        send.write_chunk(Bytes::from(push)).await.expect("write");
        // receive-pack is now waiting inside its quarantine
        let mut waited = 0;
        while quarantines(&dir_path) == 0 {
            assert!(waited < 100, "no quarantine directory appeared");
            monoio::time::sleep(std::time::Duration::from_millis(50)).await;
            waited += 1;
        }
        send.reset(alknet_runtime::VarInt::from_u32(7))
            .expect("reset");
        // git is told to stop and removes its quarantine itself
        let mut waited = 0;
        while quarantines(&dir_path) > 0 {
            assert!(waited < 100, "the quarantine directory stayed");
            monoio::time::sleep(std::time::Duration::from_millis(50)).await;
            waited += 1;
        }
        assert!(conn.close_reason().is_none(), "the connection stays");
    });
    assert!(!repo.dir.join("refs/heads/x").exists());
    let packs = std::fs::read_dir(repo.dir.join("objects/pack"))
        .expect("pack dir")
        .count();
    assert_eq!(packs, 0, "no objects left behind");
    let fsck = std::process::Command::new("git")
        .args(["fsck", "--full"])
        .current_dir(&repo.dir)
        .output()
        .expect("git fsck");
    assert!(fsck.status.success());
}

/// A handler serving a copy of a generated repository (`commits` commits) at
/// `root/name`, readable by anyone, as `config` says; and the source work tree.
fn served_repo(
    dir: &std::path::Path,
    name: &str,
    commits: usize,
    config: GitConfig,
) -> (GitHandler, std::path::PathBuf) {
    let root = dir.join("git");
    std::fs::create_dir_all(&root).expect("root");
    let src = dir.join("src");
    alknet_tests::git::generate_repo(&src, commits, 5, 11);
    let mut clone = alknet_tests::git::git_cmd(dir);
    clone.args(["clone", "--bare", "--quiet", s(&src), s(&root.join(name))]);
    alknet_tests::git::run_ok(clone);
    let config = GitConfig {
        public_read: vec!["*".into()],
        ..config
    };
    (GitHandler::new(config, &root).expect("handler"), src)
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The pkt-lines of `bytes` up to the first that is not text (the pack's side-band
/// data), flushes and delimiters as `0000` and `0001`.
fn text_lines(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let Ok(len) = usize::from_str_radix(&String::from_utf8_lossy(&bytes[at..at + 4]), 16)
        else {
            break;
        };
        if len < 4 {
            // flush, delimiter, response end
            out.push(format!("{len:04}"));
            at += 4;
            continue;
        }
        if len < 4 || at + len > bytes.len() || bytes[at + 4] < 0x20 {
            break;
        }
        out.push(
            String::from_utf8_lossy(&bytes[at + 4..at + len])
                .trim_end()
                .to_string(),
        );
        at += len;
    }
    out
}

/// Protocol v0 `multi_ack_detailed` with `no-done`, which git uses only over stateless
/// transports: unknown haves get `NAK`; the batch holding a common commit gets
/// `ACK X common`, `ACK X ready`, `NAK`, the final `ACK X`, and then the pack, the
/// client never sending `done`.
#[test]
fn v0_no_done_sends_the_pack_after_ready() {
    if require_git().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (handler, src) = served_repo(dir.path(), "n.git", 20, GitConfig::default());
    let server = start_server(ServerOptions {
        handlers: vec![Arc::new(handler)],
        ..ServerOptions::default()
    });
    let tip = alknet_tests::git::git_ok(&src, &["rev-parse", "main"]);
    let base = alknet_tests::git::git_ok(&src, &["rev-parse", "main~5"]);
    let (tip, base) = (tip.trim().to_string(), base.trim().to_string());
    run_client(|| async move {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_git::ALPN)
            .await
            .expect("connect");
        let mut talk = encode_request(Service::UploadPack, "/n.git", None, None, None);
        talk.extend(encode_pkt_line(
            format!("want {tip} multi_ack_detailed no-done side-band-64k ofs-delta\n").as_bytes(),
        ));
        talk.extend_from_slice(b"0000");
        for unknown in ["1", "2"] {
            talk.extend(encode_pkt_line(
                format!("have {}\n", unknown.repeat(40)).as_bytes(),
            ));
        }
        talk.extend_from_slice(b"0000");
        talk.extend(encode_pkt_line(format!("have {base}\n").as_bytes()));
        talk.extend_from_slice(b"0000");
        // no done: the stream's end would fail the command if the server waited for one
        let reply = exchange(&conn, &talk, true).await;
        let lines = text_lines(&reply);
        let after_advert: Vec<&str> = lines
            .iter()
            .skip_while(|l| *l != "0000")
            .skip(1)
            .map(String::as_str)
            .collect();
        assert_eq!(
            after_advert,
            [
                "NAK".to_string(),
                format!("ACK {base} common"),
                format!("ACK {base} ready"),
                "NAK".into(),
                format!("ACK {base}"),
            ],
            "{lines:#?}"
        );
        assert!(
            reply.windows(4).any(|w| w == b"PACK"),
            "the pack follows the final ACK"
        );
        assert!(lines[0].contains("multi_ack_detailed") && lines[0].contains("no-done"));
    });
}

/// Protocol v2 `want-ref` on the wire: a `wanted-refs` section before the pack; an
/// unknown reference (or an abbreviated name) is an `ERR`, and so is an unsupported
/// partial-clone filter.
#[test]
fn v2_want_ref_and_bad_arguments() {
    if require_git().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (handler, src) = served_repo(dir.path(), "w.git", 10, GitConfig::default());
    let server = start_server(ServerOptions {
        handlers: vec![Arc::new(handler)],
        ..ServerOptions::default()
    });
    let tip = alknet_tests::git::git_ok(&src, &["rev-parse", "main"])
        .trim()
        .to_string();
    run_client(|| async move {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_git::ALPN)
            .await
            .expect("connect");
        let fetch = |args: &[&str]| {
            let mut talk = encode_request(Service::UploadPack, "/w.git", None, Some(2), None);
            talk.extend(encode_pkt_line(b"command=fetch\n"));
            talk.extend_from_slice(b"0001");
            for a in args {
                talk.extend(encode_pkt_line(format!("{a}\n").as_bytes()));
            }
            talk.extend_from_slice(b"0000");
            talk
        };
        let reply = exchange(
            &conn,
            &fetch(&["want-ref refs/heads/main", "no-progress", "done"]),
            true,
        )
        .await;
        let lines = text_lines(&reply);
        let at = lines
            .iter()
            .position(|l| l == "wanted-refs")
            .unwrap_or_else(|| panic!("no wanted-refs: {lines:#?}"));
        assert_eq!(lines[at + 1], format!("{tip} refs/heads/main"));
        assert_eq!(lines[at + 2], "0001");
        assert_eq!(lines[at + 3], "packfile");
        assert!(reply.windows(4).any(|w| w == b"PACK"));
        for (args, needle) in [
            (
                &["want-ref refs/heads/nope", "done"][..],
                "unknown ref refs/heads/nope",
            ),
            (&["want-ref main", "done"][..], "unknown ref main"),
            (
                &[&format!("want {tip}")[..], "filter sparse:oid=x", "done"][..],
                "unable to access sparse blob in 'x'",
            ),
            (
                &[&format!("want {tip}")[..], "filter sparse:od=x", "done"][..],
                "unsupported filter spec",
            ),
        ] {
            let reply = exchange(&conn, &fetch(args), true).await;
            let text = String::from_utf8_lossy(&reply);
            let err = text
                .find("ERR ")
                .unwrap_or_else(|| panic!("no ERR: {text:?}"));
            assert!(text[err..].contains(needle), "{needle:?} not in {text:?}");
        }
        assert!(conn.close_reason().is_none(), "the connection stays");
    });
}
