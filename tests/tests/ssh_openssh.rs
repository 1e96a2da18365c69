//! `alknet/ssh` with the real OpenSSH client: `ssh -o ProxyCommand='alknet connect --alpn
//! alknet/ssh …'` against the real `alknet serve`, keys made by `ssh-keygen` and granted
//! through `alknet peer add` or an `authorized_keys` file. `tests/run-all.sh` installs
//! openssh-client and tmux when missing.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alknet_tests::ssh::*;
use alknet_tests::*;

/// Kills (and reaps) a long-running child such as `ssh -N -L …` when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require_openssh() {
    assert!(
        openssh_available(),
        "the OpenSSH client is required: apt-get install openssh-client (tests/run-all.sh does)"
    );
}

fn target(server: &BinServer) -> SshTarget {
    SshTarget::new(server.addr(), server.fingerprint())
}

/// 10 MiB of stdin (payload `seed`), then EOF, through `sha256sum`; and back out again
/// through `cat`: input and output at once (a command that must write before it reads
/// more, the case russh's own back-pressure deadlocks on). Equal SHA-256 both times.
fn ten_mebibytes_in_and_out(t: &SshTarget, key: &SshKey, seed: u64) {
    let data = payload(seed, 10 << 20);
    let out = t.run(key, "sha256sum", &data);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{}  -\n", alknet_proto::hex::encode(&sha256(&data)))
    );
    let out = t.run(key, "cat", &data);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(sha256(&out.stdout), sha256(&data));
}

#[test]
fn exec_exit_status_stderr_and_stdin_with_a_peer_key() {
    require_openssh();
    // the key's SHA-256 (hex) added as a peer of the SQLite store, as an admin would
    let (server, _keys, key) = server_with_peer_key("alice", &["ssh:exec"]);
    let t = target(&server);

    let out = t.run(&key, "echo hi; exit 3", b"");
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");

    // stderr travels as extended data, separately from stdout
    let out = t.run(&key, "echo out; echo oops >&2; echo $ALKNET_IDENTITY", b"");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\nalice\n");
    assert_eq!(text(&out.stderr), "oops\n");

    ten_mebibytes_in_and_out(&t, &key, 7);

    // env requests: allowed names pass, others are refused
    let mut cmd = t.ssh(&key);
    cmd.args([
        "-o",
        "SetEnv=LANG=C.UTF-8 LD_PRELOAD=/x.so",
        "user@alknet",
        "echo \"$LANG ${LD_PRELOAD-unset}\"",
    ]);
    let out = run_with_input(cmd, b"");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "C.UTF-8 unset\n");

    // exec with a pty (ssh -tt): the command sees a terminal, named in SSH_TTY
    let mut cmd = t.ssh(&key);
    cmd.args(["-tt", "user@alknet", "tty; echo \"$SSH_TTY\"; exit 4"]);
    let out = run_with_input(cmd, b"");
    assert_eq!(out.status.code(), Some(4), "stderr: {}", text(&out.stderr));
    let printed = text(&out.stdout);
    let lines: Vec<&str> = printed.lines().map(str::trim_end).collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{printed}");
    assert_eq!(lines.get(1), Some(&lines[0]), "SSH_TTY: {printed}");

    // SSH_CONNECTION and SSH_CLIENT, as sshd sets them: the client (alknet connect's
    // address) and the server's address and port it reached
    let out = t.run(&key, "echo \"$SSH_CONNECTION|$SSH_CLIENT\"", b"");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let printed = text(&out.stdout);
    let (connection, client) = printed.trim_end().split_once('|').expect("two values");
    let fields: Vec<&str> = connection.split(' ').collect();
    let port = server.port.to_string();
    assert_eq!(fields.len(), 4, "{printed}");
    assert_eq!(
        (fields[0], fields[2], fields[3]),
        ("127.0.0.1", "127.0.0.1", port.as_str()),
        "{printed}"
    );
    assert_eq!(
        client,
        format!("127.0.0.1 {} {port}", fields[1]),
        "{printed}"
    );

    // a command killed by a signal ends the session too (exit-signal), without hanging
    let out = t.run(&key, "kill -KILL $$", b"");
    assert_eq!(
        out.status.code(),
        Some(255),
        "stderr: {}",
        text(&out.stderr)
    );
}

#[test]
fn unknown_keys_and_missing_scopes_are_refused() {
    require_openssh();
    let keys = tempfile::tempdir().expect("tempdir");
    let exec_key = ssh_keygen(keys.path(), "listed-exec");
    let shell_key = ssh_keygen(keys.path(), "listed-shell");
    let peer_key = ssh_keygen(keys.path(), "peer-shell");
    let stranger = ssh_keygen(keys.path(), "stranger");
    let authorized = keys.path().join("authorized_keys");
    std::fs::write(
        &authorized,
        format!(
            "# test keys\nscopes=\"ssh:exec\" {}\nscopes=\"ssh:shell\" {}\n",
            exec_key.public, shell_key.public
        ),
    )
    .expect("write authorized_keys");
    let server = BinServer::start_with_config(&format!(
        "[ssh]\nauthorized_keys = {authorized:?}\n[http]\npublic = [\"/metrics\"]\n"
    ));
    peer_add(
        server.data_dir.path(),
        "peer-shell",
        &peer_key.fingerprint_hex,
        &["ssh:shell", "ssh:forward-remote"],
    );
    let t = target(&server);

    // a key from the authorized_keys file, named by its comment
    let out = t.run(&exec_key, "echo $ALKNET_IDENTITY", b"");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "listed-exec\n");

    // an unknown key: authentication fails
    let out = t.run(&stranger, "echo should-not-run", b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        text(&out.stderr)
    );

    // authenticated, but without ssh:exec: the exec request is refused
    for key in [&shell_key, &peer_key] {
        let out = t.run(key, "echo should-not-run", b"");
        assert_eq!(out.status.code(), Some(255));
        assert!(out.stdout.is_empty());
        assert!(
            text(&out.stderr).contains("exec request failed"),
            "{}",
            text(&out.stderr)
        );
    }

    // without ssh:forward-local, a -L connection is refused (the listener is the
    // client's; the channel open is what the server denies)
    let echo = tcp_echo_server();
    let local = free_tcp_port();
    let mut cmd = t.ssh(&exec_key);
    cmd.args([
        "-N",
        "-L",
        &format!("127.0.0.1:{local}:127.0.0.1:{echo}"),
        "user@alknet",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _forward = Proc(cmd.spawn().expect("ssh -L"));
    let mut conn = connect_retry(local, SSH_TIMEOUT);
    conn.set_read_timeout(Some(SSH_TIMEOUT)).expect("timeout");
    // the client closes the connection when the server refuses the channel
    let _ = std::io::Write::write_all(&mut conn, b"denied");
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut conn, &mut got);
    assert!(got.is_empty(), "a denied channel carries nothing");

    // without ssh:forward-remote, -R fails (and with it, under ExitOnForwardFailure)
    let mut cmd = t.ssh(&exec_key);
    cmd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        &format!("127.0.0.1:{}:127.0.0.1:{echo}", free_tcp_port()),
        "user@alknet",
    ]);
    let out = run_with_input(cmd, b"");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("forwarding failed"),
        "{}",
        text(&out.stderr)
    );
    // with the scope but on an address outside ssh.forward_bind_allow, it fails too
    let mut cmd = t.ssh(&peer_key);
    cmd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        &format!("0.0.0.0:{}:127.0.0.1:{echo}", free_tcp_port()),
        "user@alknet",
    ]);
    let out = run_with_input(cmd, b"");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("forwarding failed"),
        "{}",
        text(&out.stderr)
    );

    // every refusal above is counted in /metrics, under its reason
    drop(_forward);
    let samples = server.metrics_samples();
    let value = |sample: &str| sample_value(&samples, sample);
    assert_eq!(value("alknet_ssh_requests_total{kind=exec}"), 1);
    assert_eq!(value("alknet_ssh_requests_refused_total{kind=exec}"), 2);
    assert_eq!(
        value("alknet_ssh_channels_refused_total{reason=denied,type=direct-tcpip}"),
        1
    );
    assert_eq!(
        value("alknet_ssh_requests_refused_total{kind=tcpip-forward}"),
        2
    );
    assert!(value("alknet_ssh_auth_refusals_total{reason=unknown_key}") >= 1);
    // the -L client's and the exec clients' sessions; the stranger never authenticated
    assert!(value("alknet_ssh_sessions_authenticated_total{}") >= 6);
    assert!(value("alknet_ssh_sessions_started_total{}") >= 7);
    assert_eq!(value("alknet_ssh_channels_opened_total{type=session}"), 3);
}

/// `ssh -N FLAG 127.0.0.1:PORT:127.0.0.1:ECHO` (FLAG is -L or -R), killed when dropped.
fn forward(t: &SshTarget, key: &SshKey, flag: &str, port: u16, echo: u16) -> Proc {
    let mut cmd = t.ssh(key);
    cmd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        flag,
        &format!("127.0.0.1:{port}:127.0.0.1:{echo}"),
        "user@alknet",
    ])
    // the ProxyCommand outlives a killed ssh briefly: keep it off the test's output
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    Proc(cmd.spawn().expect("ssh forwarding"))
}

/// Three round trips of `data` through the forwarded port, checked byte for byte.
fn echo_rounds(port: u16, data: &[u8]) {
    for round in 0..3 {
        let got = echo_through(connect_retry(port, SSH_TIMEOUT), data);
        assert_eq!(got.len(), data.len(), "round {round}");
        assert_eq!(sha256(&got), sha256(data), "round {round}");
    }
}

#[test]
fn local_and_remote_forwarding_reach_a_loopback_echo_server() {
    require_openssh();
    let (server, _keys, key) =
        server_with_peer_key("forwarder", &["ssh:forward-local", "ssh:forward-remote"]);
    let t = target(&server);
    let echo = tcp_echo_server();
    let data = payload(11, 3 << 20);

    // ssh -L: the client listens, the server connects to the echo server
    let local = free_tcp_port();
    let _l = forward(&t, &key, "-L", local, echo);
    echo_rounds(local, &data);

    // ssh -R: the server listens, the client connects to the echo server
    let remote = free_tcp_port();
    let mut r = forward(&t, &key, "-R", remote, echo);
    echo_rounds(remote, &data);
    // the session's end closes its listener
    let _ = r.0.kill();
    let _ = r.0.wait();
    let deadline = Instant::now() + Duration::from_secs(45);
    while std::net::TcpStream::connect(("127.0.0.1", remote)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the -R listener outlived its session"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// OpenSSH ends its ProxyCommand with SIGHUP when the session is over. `alknet connect`
/// catches it and closes the QUIC connection, so the server ends the session at once:
/// the same `ssh -R` port can be asked for again by the next session straight away
/// (before, the server held the dead session, and its listener, until the 30 s idle
/// timeout, and the next `ssh -R` failed).
#[test]
fn a_finished_session_lets_go_of_its_remote_forward_at_once() {
    require_openssh();
    let (server, _keys, key) =
        server_with_peer_key("forwarder", &["ssh:exec", "ssh:forward-remote"]);
    let t = target(&server);
    let echo = tcp_echo_server();
    let port = free_tcp_port();
    for round in 0..3 {
        let mut cmd = t.ssh(&key);
        cmd.args([
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            &format!("127.0.0.1:{port}:127.0.0.1:{echo}"),
            "user@alknet",
            "sleep 0.3; echo up",
        ]);
        let out = run_with_input(cmd, b"");
        assert_eq!(
            (out.status.code(), text(&out.stdout).as_str()),
            (Some(0), "up\n"),
            "round {round}: {}",
            text(&out.stderr)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the -R listener outlived its session by 3 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same sessions over TLS/TCP (`alknet connect --transport tcp`), for networks that
/// block UDP: a command with its exit status, 10 MiB in and out with equal SHA-256, and a
/// `-L` forward. A server that does not list `alknet/ssh` in `[tcp] stream_alpns` refuses
/// the same command, so the session above cannot have gone over QUIC.
#[test]
fn over_tls_tcp_a_command_ten_mebibytes_and_a_forward() {
    require_openssh();
    let (server, _keys, key) = server_with_peer_key("tcp-user", &["ssh:exec", "ssh:forward-local"]);
    let t = target(&server).over("tcp");

    let out = t.run(&key, "echo $ALKNET_IDENTITY; exit 5", b"");
    assert_eq!(out.status.code(), Some(5), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "tcp-user\n");

    ten_mebibytes_in_and_out(&t, &key, 13);

    let echo = tcp_echo_server();
    let local = free_tcp_port();
    let _l = forward(&t, &key, "-L", local, echo);
    echo_rounds(local, &payload(17, 1 << 20));

    // not offered over TCP: the TLS handshake fails (no_application_protocol)
    let quic_only = BinServer::start_with_config("[tcp]\nstream_alpns = [\"alknet/echo\"]\n");
    peer_add(
        quic_only.data_dir.path(),
        "tcp-user",
        &key.fingerprint_hex,
        &["ssh:exec"],
    );
    let refused = target(&quic_only).over("tcp").run(&key, "echo hi", b"");
    assert!(!refused.status.success(), "{}", text(&refused.stdout));
    assert!(
        text(&refused.stderr).contains("alknet connect"),
        "{}",
        text(&refused.stderr)
    );
    let over_quic = target(&quic_only).run(&key, "echo hi", b"");
    assert_eq!(
        text(&over_quic.stdout),
        "hi\n",
        "{}",
        text(&over_quic.stderr)
    );
}

/// The screen of a tmux pane.
fn capture(socket: &Path) -> String {
    let out = Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(["capture-pane", "-p", "-t", "t"])
        .output()
        .expect("tmux capture-pane");
    text(&out.stdout)
}

fn tmux(socket: &Path, args: &[&str]) {
    let status = Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(args)
        .status()
        .expect("tmux");
    assert!(status.success(), "tmux {args:?}");
}

/// Waits until the pane shows something `ok` accepts.
fn wait_screen(socket: &Path, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + SSH_TIMEOUT;
    loop {
        let screen = capture(socket);
        if ok(&screen) {
            return screen;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} on the screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pty_shell_in_tmux_shows_a_prompt_runs_commands_and_resizes() {
    require_openssh();
    assert!(
        Command::new("tmux").arg("-V").output().is_ok(),
        "tmux is required: apt-get install tmux (tests/run-all.sh does)"
    );
    let (server, dir, key) = server_with_peer_key("terminal", &["ssh:shell"]);
    let t = target(&server);
    // a shell without a pty reads its commands from stdin
    let mut cmd = t.ssh(&key);
    cmd.args(["-T", "user@alknet"]);
    let out = run_with_input(cmd, b"echo from-stdin\nexit 5\n");
    assert_eq!(out.status.code(), Some(5), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from-stdin\n");
    // tmux runs a shell command line: a script holding the exact ssh invocation
    let line = t.ssh_command_line(&key);
    let status_file = dir.path().join("status");
    let script = dir.path().join("session.sh");
    std::fs::write(
        &script,
        format!(
            // written aside and renamed: `echo > file` creates the file empty before it
            // writes, and the test may read it in between
            // the client's terminal modes (erase ^H, no XON/XOFF) travel in its pty-req
            "#!/bin/sh\nstty erase '^H' -ixon\n{line} -tt user@alknet\necho $? > {tmp} && mv {tmp} {status}\n",
            tmp = sh_quote(&dir.path().join("status.tmp").to_string_lossy()),
            status = sh_quote(&status_file.to_string_lossy())
        ),
    )
    .expect("write script");
    let socket = dir.path().join("tmux.sock");
    tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "100",
            "-y",
            "30",
            &format!("sh {}", sh_quote(&script.to_string_lossy())),
        ],
    );
    let result = std::panic::catch_unwind(|| {
        // a login shell's prompt ("$ " or, as root, "# ")
        wait_screen(&socket, "prompt", |s| {
            s.lines()
                .any(|l| l.trim_end().ends_with('$') || l.trim_end().ends_with('#'))
        });
        tmux(
            &socket,
            &[
                "send-keys",
                "-t",
                "t",
                "echo pty-$((6*7)); stty size; tty",
                "Enter",
            ],
        );
        let screen = wait_screen(&socket, "command output", |s| {
            s.contains("pty-42") && s.contains("/dev/pts/")
        });
        assert!(screen.contains("30 100"), "pty-req size:\n{screen}");
        // the server's pty took the client's modes (the patterns are spelled apart in the
        // command so that its echo on the screen cannot match them)
        tmux(
            &socket,
            &[
                "send-keys",
                "-t",
                "t",
                "E=era X=ix; stty -a | grep -o -e \"${E}se = ^H\" -e \"-${X}on\" | tr '\\n' ' '",
                "Enter",
            ],
        );
        wait_screen(&socket, "the client's terminal modes", |s| {
            s.contains("erase = ^H -ixon")
        });
        // window-change reaches the pty
        tmux(
            &socket,
            &["resize-window", "-t", "t", "-x", "120", "-y", "40"],
        );
        std::thread::sleep(Duration::from_millis(300));
        tmux(&socket, &["send-keys", "-t", "t", "stty size", "Enter"]);
        wait_screen(&socket, "the new size", |s| s.contains("40 120"));
        tmux(&socket, &["send-keys", "-t", "t", "exit 7", "Enter"]);
        let deadline = Instant::now() + SSH_TIMEOUT;
        loop {
            if let Ok(s) = std::fs::read_to_string(&status_file) {
                assert_eq!(s.trim(), "7", "the shell's exit status");
                break;
            }
            assert!(Instant::now() < deadline, "the session did not end");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let _ = Command::new("tmux")
        .arg("-S")
        .arg(&socket)
        .arg("kill-server")
        .status();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn ten_parallel_sessions_do_not_interfere() {
    require_openssh();
    let (server, _keys, key) = server_with_peer_key("parallel", &["ssh:exec"]);
    let t = target(&server);
    let key = std::sync::Arc::new(key);
    let sessions: Vec<_> = (0..10u64)
        .map(|i| {
            let (t, key) = (t.clone(), key.clone());
            std::thread::spawn(move || {
                let data = payload(100 + i, (1 << 20) + 1000 * i as usize);
                let out = t.run(
                    &key,
                    &format!("printf 'session-%s\\n' {i}; sha256sum; exit $((20 + {i}))"),
                    &data,
                );
                (i, data, out)
            })
        })
        .collect();
    for s in sessions {
        let (i, data, out) = s.join().expect("session thread");
        assert_eq!(
            out.status.code(),
            Some(20 + i as i32),
            "session {i}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stdout),
            format!(
                "session-{i}\n{}  -\n",
                alknet_proto::hex::encode(&sha256(&data))
            ),
            "session {i}"
        );
    }
}

#[test]
fn a_vanished_client_hangs_its_command_up() {
    require_openssh();
    let (server, _keys, key) = server_with_peer_key("leaver", &["ssh:exec"]);
    let t = target(&server);
    let mut cmd = t.ssh(&key);
    cmd.args(["user@alknet", "echo $$; exec sleep 300"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut ssh = Proc(cmd.spawn().expect("ssh"));
    let stdout = ssh.0.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("the command's pid");
    let pid: u32 = line.trim().parse().expect("a pid");
    let proc_dir = format!("/proc/{pid}");
    assert!(Path::new(&proc_dir).exists(), "sleep runs");
    // the client goes away without a word: the session ends and the command is hung up
    let _ = ssh.0.kill();
    let _ = ssh.0.wait();
    let deadline = Instant::now() + Duration::from_secs(40);
    while Path::new(&proc_dir).exists() {
        assert!(
            Instant::now() < deadline,
            "the command outlived its session (pid {pid})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client that sends its banner and ends its side at once (a probe) still gets the
/// server's banner: the session ends with FIN after what was written, not a reset (which
/// would make QUIC discard the banner unread). Every time, not one in three.
#[test]
fn a_probe_that_ends_its_side_gets_the_banner() {
    let server = BinServer::start();
    let fingerprint = server.fingerprint();
    for i in 0..10 {
        let mut cmd = Command::new(alknet_bin());
        cmd.args([
            "connect",
            "--alpn",
            "alknet/ssh",
            "--fingerprint",
            &fingerprint,
            &server.addr(),
        ]);
        let out = alknet_tests::ssh::run_with_input(cmd, b"SSH-2.0-probe\r\n");
        let shown = text(&out.stdout);
        assert!(
            shown.starts_with("SSH-2.0-alknet"),
            "run {i}: no banner: {shown:?}; stderr: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn server_alive_probes_are_answered() {
    require_openssh();
    let (server, _keys, key) = server_with_peer_key("alice", &["ssh:exec"]);
    let t = target(&server);
    // OpenSSH's ServerAliveInterval: a keepalive@openssh.com global request every second
    // while the command is quiet; two unanswered in a row and ssh gives up ("Timeout,
    // server not responding"). A server must answer them (a failure reply will do).
    let mut cmd = t.ssh(&key);
    cmd.args([
        "-o",
        "ServerAliveInterval=1",
        "-o",
        "ServerAliveCountMax=2",
        "user@alknet",
        "sleep 4; echo alive",
    ]);
    let out = run_with_input(cmd, b"");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "alive\n");
}

#[test]
fn git_clone_and_push_over_ssh_exec() {
    require_openssh();
    let (server, _keys, key) = server_with_peer_key("alice", &["ssh:exec"]);
    let t = target(&server);
    // git's ssh transport: `ssh user@alknet "git-upload-pack '/path'"` (and receive-pack),
    // run by exec on the server's filesystem, as with any sshd. Its GIT_PROTOCOL env
    // request passes (`ssh.env_allow`), so the clone speaks protocol v2: the empty
    // repository's unborn HEAD reaches the clone, whose branch is then `main` (over v0 it
    // would be the client's default, and the push of `main` below would fail)
    let work = tempfile::tempdir().expect("tempdir");
    let ssh_command = t.ssh_command_line(&key);
    let git = |dir: &std::path::Path, args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", &ssh_command)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let origin = work.path().join("origin.git");
    git(
        work.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &origin.display().to_string(),
        ],
    );
    let url = format!("user@alknet:{}", origin.display());
    let one = work.path().join("one");
    git(work.path(), &["clone", "-q", &url, "one"]);
    std::fs::write(one.join("a.txt"), "hello over alknet/ssh\n").expect("write");
    git(&one, &["add", "a.txt"]);
    git(
        &one,
        &[
            "-c",
            "user.name=A",
            "-c",
            "user.email=a@x",
            "commit",
            "-qm",
            "one",
        ],
    );
    git(&one, &["push", "-q", "origin", "main"]);
    git(work.path(), &["clone", "-q", &url, "two"]);
    let got = std::fs::read_to_string(work.path().join("two/a.txt")).expect("cloned file");
    assert_eq!(got, "hello over alknet/ssh\n");
}

#[test]
fn rsync_both_ways_over_ssh_exec() {
    require_openssh();
    let (server, _keys, key) = server_with_peer_key("alice", &["ssh:exec"]);
    let t = target(&server);
    // rsync's remote shell: `ssh user@alknet rsync --server …`, run by exec, its protocol
    // on the channel's stdin/stdout both ways at once
    let rsh = t.ssh_command_line(&key);
    let rsync = |args: &[&str]| {
        let out = Command::new("rsync")
            .arg("-e")
            .arg(&rsh)
            .args(args)
            .output()
            .expect("rsync (tests/run-all.sh installs it)");
        assert!(
            out.status.success(),
            "rsync {args:?}: {}",
            text(&out.stderr)
        );
    };
    let local = tempfile::tempdir().expect("tempdir");
    let remote = tempfile::tempdir().expect("tempdir");
    let src = local.path().join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    let big = payload(41, 4 << 20);
    std::fs::write(src.join("big.bin"), &big).expect("write");
    std::fs::write(src.join("sub/small.txt"), "small\n").expect("write");
    let there = format!("user@alknet:{}/", remote.path().display());
    rsync(&["-a", &format!("{}/", src.display()), &there]);
    assert_eq!(
        sha256(&std::fs::read(remote.path().join("big.bin")).expect("sent")),
        sha256(&big)
    );
    // a change in the middle of the big file: rsync's delta transfer (`--checksum`: the
    // size is the same and the mtime may be too, within a second), then back again
    let mut changed = big.clone();
    changed[2 << 20..(2 << 20) + 10].copy_from_slice(b"0123456789");
    std::fs::write(src.join("big.bin"), &changed).expect("write");
    rsync(&["-a", "--checksum", &format!("{}/", src.display()), &there]);
    assert_eq!(
        sha256(&std::fs::read(remote.path().join("big.bin")).expect("updated")),
        sha256(&changed)
    );
    let back = local.path().join("back");
    rsync(&["-a", &there, &format!("{}/", back.display())]);
    assert_eq!(
        sha256(&std::fs::read(back.join("big.bin")).expect("back")),
        sha256(&changed)
    );
    assert_eq!(
        std::fs::read_to_string(back.join("sub/small.txt")).expect("back"),
        "small\n"
    );
}

/// `ssh-keygen -s CA -I ID [ARGS…] KEY.pub`: a user certificate for `key`, written as
/// `KEY-cert.pub` beside it, where `ssh -i KEY` finds and offers it.
fn sign_user_key(ca: &SshKey, key: &SshKey, id: &str, args: &[&str]) {
    let out = Command::new("ssh-keygen")
        .arg("-q")
        .arg("-s")
        .arg(&ca.path)
        .args(["-I", id])
        .args(args)
        .arg(key.path.with_extension("pub"))
        .output()
        .expect("ssh-keygen -s");
    assert!(out.status.success(), "ssh-keygen -s: {out:?}");
}

/// `ssh -i KEY USER@alknet COMMAND` (the key's certificate offered with it).
fn run_as(
    t: &SshTarget,
    key: &SshKey,
    user: &str,
    extra: &[&str],
    command: &str,
) -> (Option<i32>, String, String) {
    let mut cmd = t.ssh(key);
    cmd.args(extra).arg(format!("{user}@alknet")).arg(command);
    let out = run_with_input(cmd, b"");
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn user_certificates_signed_by_a_cert_authority_line() {
    require_openssh();
    let keys = tempfile::tempdir().expect("tempdir");
    let ca = ssh_keygen(keys.path(), "ops-ca");
    let other_ca = ssh_keygen(keys.path(), "other-ca");
    // a key NAME with a certificate (key id NAME) signed by CA with ARGS
    let signed = |ca: &SshKey, name: &str, args: &[&str]| {
        let key = ssh_keygen(keys.path(), name);
        sign_user_key(ca, &key, name, args);
        key
    };
    let authorized = keys.path().join("authorized_keys");
    std::fs::write(
        &authorized,
        format!(
            // the key's comment, ops-ca, names the identity
            "cert-authority,scopes=\"ssh:exec,ssh:shell\" {}\n",
            ca.public
        ),
    )
    .expect("write authorized_keys");
    let server = BinServer::start_with_config(&format!(
        "[ssh]\nauthorized_keys = {authorized:?}\n[http]\npublic = [\"/metrics\"]\n"
    ));
    let t = target(&server);
    let denied = |(code, out, err): (Option<i32>, String, String)| {
        assert_eq!(code, Some(255), "{out} {err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains("Permission denied (publickey)"), "{err}");
    };

    // a certificate for principal alice, logging in as alice: the CA's scopes, as
    // alice@ops-ca; OpenSSH's default certificate permits a pty
    let alice = signed(&ca, "alice", &["-n", "alice,deploy", "-V", "-5m:+1h"]);
    let (code, out, err) = run_as(&t, &alice, "alice", &[], "echo $ALKNET_IDENTITY");
    assert_eq!((code, out.as_str()), (Some(0), "alice@ops-ca\n"), "{err}");
    let (code, out, err) = run_as(&t, &alice, "deploy", &[], "echo $ALKNET_IDENTITY");
    assert_eq!((code, out.as_str()), (Some(0), "deploy@ops-ca\n"), "{err}");
    let (code, out, err) = run_as(&t, &alice, "alice", &["-tt"], "tty");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("/dev/pts/"), "{out}");
    server.wait_for_log("ssh: authenticated with a certificate");

    // a user name that is not among its principals
    denied(run_as(&t, &alice, "root", &[], "echo no"));
    // the CA's own key logs nobody in: it only signs
    denied(run_as(&t, &ca, "alice", &[], "echo no"));

    // expired; signed by a CA no line lists; a host certificate
    let expired = signed(&ca, "expired", &["-n", "alice", "-V", "20200101:20200102"]);
    denied(run_as(&t, &expired, "alice", &[], "echo no"));
    let foreign = signed(&other_ca, "foreign", &["-n", "alice"]);
    denied(run_as(&t, &foreign, "alice", &[], "echo no"));
    let host = signed(&ca, "host", &["-h", "-n", "alice"]);
    denied(run_as(&t, &host, "alice", &[], "echo no"));

    // critical options: a source-address that holds the client is enforced and passes,
    // one that does not is refused
    let near = signed(
        &ca,
        "near",
        &["-n", "alice", "-O", "source-address=10.0.0.0/8,127.0.0.1"],
    );
    let (code, out, err) = run_as(&t, &near, "alice", &[], "echo near");
    assert_eq!((code, out.as_str()), (Some(0), "near\n"), "{err}");
    let far = signed(
        &ca,
        "far",
        &["-n", "alice", "-O", "source-address=192.0.2.0/24"],
    );
    denied(run_as(&t, &far, "alice", &[], "echo no"));
    // force-command runs in place of what is asked, which it finds in
    // SSH_ORIGINAL_COMMAND (a shell too runs it)
    let forced = signed(
        &ca,
        "forced",
        &[
            "-n",
            "alice",
            "-O",
            "force-command=echo forced: $SSH_ORIGINAL_COMMAND",
        ],
    );
    let (code, out, err) = run_as(&t, &forced, "alice", &[], "rm -rf /tmp/nothing");
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "forced: rm -rf /tmp/nothing\n"),
        "{err}"
    );
    let mut shell = t.ssh(&forced);
    shell.args(["-T", "alice@alknet"]);
    let out = run_with_input(shell, b"echo from-stdin\n");
    assert_eq!(text(&out.stdout), "forced:\n", "{}", text(&out.stderr));
    // an option nobody enforces refuses the certificate
    let strict = signed(&ca, "strict", &["-n", "alice", "-O", "verify-required"]);
    denied(run_as(&t, &strict, "alice", &[], "echo no"));

    // without permit-pty the pty is refused (ssh -tt then gives up, as it must when a
    // pty it insisted on is refused); a command without one runs
    let no_pty = signed(&ca, "no-pty", &["-n", "alice", "-O", "no-pty"]);
    let (code, out, err) = run_as(&t, &no_pty, "alice", &["-tt"], "tty");
    assert!(err.contains("PTY allocation request failed"), "{err}");
    assert_eq!((code, out.as_str()), (Some(255), ""), "{err}");
    let (code, out, err) = run_as(&t, &no_pty, "alice", &[], "tty");
    assert_eq!((code, out.trim()), (Some(1), "not a tty"), "{err}");

    let samples = server.metrics_samples();
    let refusals = sample_value(
        &samples,
        "alknet_ssh_auth_refusals_total{reason=certificate}",
    );
    // root, foreign, far and strict. The expired and the host certificate never reach
    // the check (OpenSSH's client does not offer a host certificate, russh refuses an
    // expired one first; both are in `certificate.rs`'s unit tests), and the CA's bare
    // key is an unknown key
    assert_eq!(refusals, 4);
}

/// `ssh-keygen -k -f KRL [-s CA.pub] SPEC…`: an OpenSSH Key Revocation List.
fn make_krl(krl: &Path, ca: Option<&SshKey>, specs: &[&Path]) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-k", "-f"]).arg(krl);
    if let Some(ca) = ca {
        cmd.arg("-s").arg(ca.path.with_extension("pub"));
    }
    let out = cmd.args(specs).output().expect("ssh-keygen -k");
    assert!(out.status.success(), "ssh-keygen -k: {out:?}");
}

#[test]
fn revoked_keys_and_certificates_are_refused() {
    require_openssh();
    let keys = tempfile::tempdir().expect("tempdir");
    let ca = ssh_keygen(keys.path(), "ops-ca");
    let gone = ssh_keygen(keys.path(), "gone");
    let kept = ssh_keygen(keys.path(), "kept");
    let laptop = ssh_keygen(keys.path(), "laptop");
    let phone = ssh_keygen(keys.path(), "phone");
    sign_user_key(&ca, &laptop, "alice-laptop", &["-n", "alice", "-z", "7"]);
    sign_user_key(&ca, &phone, "alice-phone", &["-n", "alice", "-z", "8"]);
    let authorized = keys.path().join("authorized_keys");
    std::fs::write(
        &authorized,
        format!(
            "scopes=\"ssh:exec\" {}\nscopes=\"ssh:exec\" {}\ncert-authority,scopes=\"ssh:exec\" {}\n",
            gone.public, kept.public, ca.public
        ),
    )
    .expect("write authorized_keys");
    // a text list first: one public key per line
    let revoked = keys.path().join("revoked");
    std::fs::write(&revoked, format!("# lost\n{}\n", gone.public)).expect("write revoked");
    let server = BinServer::start_with_config(&format!(
        "[ssh]\nauthorized_keys = {authorized:?}\nrevoked_keys = {revoked:?}\n"
    ));
    let t = target(&server);
    let ok = |key: &SshKey, user: &str| {
        let (code, out, err) = run_as(&t, key, user, &[], "echo in");
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "in\n"),
            "{}: {err}",
            key.path.display()
        );
    };
    let denied = |key: &SshKey, user: &str| {
        let (code, out, err) = run_as(&t, key, user, &[], "echo in");
        assert_eq!(code, Some(255), "{}: {out} {err}", key.path.display());
        assert!(err.contains("Permission denied (publickey)"), "{err}");
    };
    denied(&gone, "user");
    server.wait_for_log("ssh: revoked key refused");
    ok(&kept, "user");
    ok(&laptop, "alice");
    ok(&phone, "alice");

    // a KRL in its place (read again because it changed): serial 7 under the CA, and
    // the key id of the phone's certificate
    let spec = keys.path().join("spec");
    std::fs::write(&spec, "serial: 7\nid: alice-phone\n").expect("spec");
    let krl = keys.path().join("krl");
    make_krl(&krl, Some(&ca), &[&spec]);
    std::fs::copy(&krl, &revoked).expect("install krl");
    denied(&laptop, "alice");
    denied(&phone, "alice");
    server.wait_for_log("ssh: certificate refused: revoked");
    // the text list's key is no longer listed; a certificate with another serial is
    ok(&gone, "user");
    let tablet = ssh_keygen(keys.path(), "tablet");
    sign_user_key(&ca, &tablet, "alice-tablet", &["-n", "alice", "-z", "9"]);
    ok(&tablet, "alice");

    // revoking the CA's key revokes every certificate it signed
    let krl = keys.path().join("krl-ca");
    make_krl(&krl, None, &[&ca.path.with_extension("pub")]);
    std::fs::copy(&krl, &revoked).expect("install krl");
    denied(&tablet, "alice");
    ok(&kept, "user");
}

/// The host keys a server makes for itself (ed25519 and ECDSA P-256), and an RSA key an
/// operator adds: each algorithm verified by a client that will take only that one, with
/// the key in `known_hosts`; and a client held to what RHEL's FIPS policy allows (no
/// ed25519 or curve25519 anywhere) logs in with an ECDSA key.
#[test]
fn every_host_key_algorithm_is_served_and_a_fips_policy_client_gets_in() {
    require_openssh();
    let keys = tempfile::tempdir().expect("tempdir");
    let user = ssh_keygen(keys.path(), "user");
    let user_ecdsa = ssh_keygen_typed(keys.path(), "user-ecdsa", &["-t", "ecdsa", "-b", "256"]);
    let authorized = keys.path().join("authorized_keys");
    std::fs::write(
        &authorized,
        format!(
            "scopes=\"ssh:exec\" {}\nscopes=\"ssh:exec\" {}\n",
            user.public, user_ecdsa.public
        ),
    )
    .expect("write authorized_keys");
    let run = |t: &SshTarget, key: &SshKey, known: &str, options: &[&str]| {
        let file = keys.path().join("known_hosts");
        std::fs::write(&file, known).expect("known_hosts");
        let mut cmd = t.ssh_with_known_hosts(key, &file);
        for o in options {
            cmd.args(["-o", o]);
        }
        cmd.args(["user@alknet", "echo verified"]);
        let out = run_with_input(cmd, b"");
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let public = |path: std::path::PathBuf| {
        let line = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        format!("alknet {}", line.trim())
    };

    // the defaults, generated on first start
    let server =
        BinServer::start_with_config(&format!("[ssh]\nauthorized_keys = {authorized:?}\n"));
    let t = target(&server);
    let data = server.data_dir.path();
    let ed25519 = public(data.join("ssh_host_ed25519_key.pub"));
    let ecdsa = public(data.join("ssh_host_ecdsa_key.pub"));
    assert!(ecdsa.starts_with("alknet ecdsa-sha2-nistp256 "), "{ecdsa}");
    for (algorithm, known, other) in [
        ("ssh-ed25519", &ed25519, &ecdsa),
        ("ecdsa-sha2-nistp256", &ecdsa, &ed25519),
    ] {
        let only = format!("HostKeyAlgorithms={algorithm}");
        let (code, out, err) = run(&t, &user, known, &[&only]);
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "verified\n"),
            "{algorithm}: {err}"
        );
        // the other key in known_hosts does not verify this one
        let (code, _, err) = run(&t, &user, other, &[&only]);
        assert_eq!(
            code,
            Some(255),
            "{algorithm} verified by the other key: {err}"
        );
    }
    // RHEL's FIPS crypto policy, as OpenSSH options: no ed25519, no curve25519, no
    // chacha20; ECDSA user key
    let fips = [
        "KexAlgorithms=ecdh-sha2-nistp256,diffie-hellman-group14-sha256,diffie-hellman-group16-sha512",
        "HostKeyAlgorithms=ecdsa-sha2-nistp256,rsa-sha2-256,rsa-sha2-512",
        "PubkeyAcceptedAlgorithms=ecdsa-sha2-nistp256,rsa-sha2-256,rsa-sha2-512",
        "Ciphers=aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes128-ctr",
        "MACs=hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256",
    ];
    let (code, out, err) = run(&t, &user_ecdsa, &ecdsa, &fips);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "verified\n"),
        "FIPS policy: {err}"
    );
    drop(server);

    // an operator's list: ed25519 and RSA (no ECDSA then)
    let ed_key = ssh_keygen(keys.path(), "host-ed25519");
    let rsa_key = ssh_keygen_typed(keys.path(), "host-rsa", &["-t", "rsa", "-b", "3072"]);
    let server = BinServer::start_with_config(&format!(
        "[ssh]\nhost_keys = [{:?}, {:?}]\nauthorized_keys = {authorized:?}\n",
        ed_key.path, rsa_key.path
    ));
    let t = target(&server);
    let rsa = format!("alknet {}", rsa_key.public);
    for algorithm in ["rsa-sha2-512", "rsa-sha2-256"] {
        let only = format!("HostKeyAlgorithms={algorithm}");
        let (code, out, err) = run(&t, &user, &rsa, &[&only]);
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "verified\n"),
            "{algorithm}: {err}"
        );
    }
    let (code, out, err) = run(&t, &user, &format!("alknet {}", ed_key.public), &[]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "verified\n"),
        "ed25519: {err}"
    );
    let (code, _, err) = run(&t, &user, &rsa, &["HostKeyAlgorithms=ecdsa-sha2-nistp256"]);
    assert_eq!(code, Some(255), "no ECDSA key listed, yet: {err}");
    drop(server);

    // one key listed twice, or host_key beside host_keys, stop the server at start
    for (config, why) in [
        (
            format!(
                "[ssh]\nhost_keys = [{:?}, {:?}, {:?}]\n",
                ed_key.path, rsa_key.path, ed_key.path
            ),
            "listed twice",
        ),
        (
            format!(
                "[ssh]\nhost_key = {:?}\nhost_keys = [{:?}]\n",
                ed_key.path, rsa_key.path
            ),
            "not both",
        ),
    ] {
        let log = BinServer::try_start_with_config(&config)
            .err()
            .expect("the server must not start");
        assert!(log.contains(why), "{log}");
    }
}

/// Host key rotation as OpenSSH does it (`UpdateHostKeys`, OpenSSH's `PROTOCOL` 2.5): the
/// server announces every key after authentication, the client asks for proof of the
/// ones it does not know, and records them, then forgets the host's keys no longer
/// announced. A server listing the old key first and the new one after it teaches the
/// client the new key; once only the new one is served, the old one is dropped. OpenSSH
/// checks every proof's signature, so a wrong one (a wrong session id, or an RSA key's
/// hash other than the key exchange's) would leave `known_hosts` as it was.
#[test]
fn update_host_keys_teaches_a_rotated_key_and_forgets_the_retired_one() {
    require_openssh();
    let keys = tempfile::tempdir().expect("tempdir");
    let user = ssh_keygen(keys.path(), "user");
    let authorized = keys.path().join("authorized_keys");
    std::fs::write(
        &authorized,
        format!("scopes=\"ssh:exec\" {}\n", user.public),
    )
    .expect("write authorized_keys");
    let old = ssh_keygen(keys.path(), "host-old");
    let new = ssh_keygen(keys.path(), "host-new");
    let rsa_old = ssh_keygen_typed(keys.path(), "host-rsa-old", &["-t", "rsa", "-b", "2048"]);
    let rsa_new = ssh_keygen_typed(keys.path(), "host-rsa-new", &["-t", "rsa", "-b", "2048"]);
    // "TYPE BASE64" of a public key line
    let blob = |k: &SshKey| k.public.split(' ').take(2).collect::<Vec<_>>().join(" ");
    let file = keys.path().join("known_hosts");
    // the keys known_hosts holds for the host, as "TYPE BASE64", sorted
    let known = || {
        let text = std::fs::read_to_string(&file).expect("read known_hosts");
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f.first(), Some(&"alknet"), "a line for another host: {l}");
                f[1..3].join(" ")
            })
            .collect();
        lines.sort();
        lines
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let serve = |host_keys: &[&SshKey]| {
        let list: Vec<String> = host_keys.iter().map(|k| format!("{:?}", k.path)).collect();
        BinServer::start_with_config(&format!(
            "[ssh]\nhost_keys = [{}]\nauthorized_keys = {authorized:?}\n",
            list.join(", ")
        ))
    };
    let login = |server: &BinServer, options: &[&str]| {
        let mut cmd = target(server).ssh_with_known_hosts(&user, &file);
        for o in options {
            cmd.args(["-o", o]);
        }
        cmd.args(["user@alknet", "echo verified"]);
        let out = run_with_input(cmd, b"");
        assert_eq!(
            (out.status.code(), text(&out.stdout).as_str()),
            (Some(0), "verified\n"),
            "{}",
            text(&out.stderr)
        );
    };
    let update = "UpdateHostKeys=yes";

    // the old key serves, the new one is announced: learned with UpdateHostKeys only
    let server = serve(&[&old, &new]);
    std::fs::write(&file, format!("alknet {}\n", blob(&old))).expect("known_hosts");
    login(&server, &["UpdateHostKeys=no"]);
    assert_eq!(known(), vec![blob(&old)], "updated without UpdateHostKeys");
    login(&server, &[update]);
    assert_eq!(known(), sorted(vec![blob(&old), blob(&new)]));
    drop(server);

    // the old key retired: the client, knowing the new one, forgets the old one
    let server = serve(&[&new]);
    login(&server, &[update]);
    assert_eq!(known(), vec![blob(&new)]);
    drop(server);

    // an RSA key exchange: the proof of the new RSA key is signed with the hash the key
    // exchange used (rsa-sha2-256 here), which is the one OpenSSH verifies it with; the
    // ed25519 key announced beside them is not taken by a client that allows RSA only
    let server = serve(&[&rsa_old, &new, &rsa_new]);
    std::fs::write(&file, format!("alknet {}\n", blob(&rsa_old))).expect("known_hosts");
    login(&server, &[update, "HostKeyAlgorithms=rsa-sha2-256"]);
    assert_eq!(known(), sorted(vec![blob(&rsa_old), blob(&rsa_new)]));
}

#[test]
fn a_host_certificate_is_trusted_through_cert_authority_in_known_hosts() {
    require_openssh();
    let keys = tempfile::tempdir().expect("tempdir");
    let host_ca = ssh_keygen(keys.path(), "host-ca");
    let other_ca = ssh_keygen(keys.path(), "other-ca");
    let host_key = ssh_keygen(keys.path(), "ssh_host_ed25519_key");
    let user = ssh_keygen(keys.path(), "user");
    // the host name ssh checks is the label on its command line: alknet
    sign_user_key(
        &host_ca,
        &host_key,
        "node-1",
        &["-h", "-n", "alknet,node-1"],
    );
    let host_cert = keys.path().join("ssh_host_ed25519_key-cert.pub");
    let authorized = keys.path().join("authorized_keys");
    std::fs::write(
        &authorized,
        format!("scopes=\"ssh:exec\" {}\n", user.public),
    )
    .expect("write authorized_keys");
    let server = BinServer::start_with_config(&format!(
        "[ssh]\nhost_key = {:?}\nhost_certificate = {host_cert:?}\nauthorized_keys = {authorized:?}\n",
        host_key.path
    ));
    let t = target(&server);
    let run = |known_hosts: &str| {
        let file = keys.path().join("known_hosts");
        std::fs::write(&file, known_hosts).expect("known_hosts");
        let mut cmd = t.ssh_with_known_hosts(&user, &file);
        cmd.args(["user@alknet", "echo trusted"]);
        let out = run_with_input(cmd, b"");
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    // no host key in known_hosts, only the CA: strict checking passes
    let (code, out, err) = run(&format!("@cert-authority alknet {}\n", host_ca.public));
    assert_eq!((code, out.as_str()), (Some(0), "trusted\n"), "{err}");
    // another CA: the host is not verified
    let (code, out, err) = run(&format!("@cert-authority alknet {}\n", other_ca.public));
    assert_eq!((code, out.as_str()), (Some(255), ""), "{err}");
    assert!(err.contains("Host key verification failed"), "{err}");
    drop(server);

    // a certificate of another key, or a user certificate, stops the server at start
    let stranger = ssh_keygen(keys.path(), "stranger");
    sign_user_key(&host_ca, &stranger, "wrong", &["-h", "-n", "alknet"]);
    let user_cert = ssh_keygen(keys.path(), "user-signed");
    sign_user_key(&host_ca, &user_cert, "user", &["-n", "alknet"]);
    for (cert, why) in [
        (
            keys.path().join("stranger-cert.pub"),
            "certifies another key",
        ),
        (
            keys.path().join("user-signed-cert.pub"),
            "not a host certificate",
        ),
    ] {
        let refused = BinServer::try_start_with_config(&format!(
            "[ssh]\nhost_key = {:?}\nhost_certificate = {cert:?}\n",
            host_key.path
        ));
        let log = refused.err().expect("the server must not start");
        assert!(log.contains(why), "{log}");
    }
}

#[test]
fn authorized_keys_options_restrict_as_sshd_does() {
    require_openssh();
    let keys = tempfile::tempdir().expect("tempdir");
    let forced = ssh_keygen(keys.path(), "forced");
    let near = ssh_keygen(keys.path(), "near");
    let far = ssh_keygen(keys.path(), "far");
    let no_pty = ssh_keygen(keys.path(), "no-pty");
    let sftp_only = ssh_keygen(keys.path(), "sftp-only");
    let authorized = keys.path().join("authorized_keys");
    std::fs::write(
        &authorized,
        format!(
            "restrict,command=\"echo \\\"forced:\\\" $SSH_ORIGINAL_COMMAND\",scopes=\"ssh:exec\" {}\n\
             from=\"10.*,127.0.0.0/8,::1\",scopes=\"ssh:exec\" {}\n\
             from=\"192.0.2.0/24\",scopes=\"ssh:exec\" {}\n\
             no-pty,scopes=\"ssh:exec\" {}\n\
             restrict,command=\"internal-sftp\",scopes=\"ssh:exec,ssh:sftp,sftp:read,sftp:write\" {}\n",
            forced.public, near.public, far.public, no_pty.public, sftp_only.public
        ),
    )
    .expect("write authorized_keys");
    let server = BinServer::start_with_config(&format!(
        "[ssh]\nauthorized_keys = {authorized:?}\n[http]\npublic = [\"/metrics\"]\n"
    ));
    let t = target(&server);

    // command= runs in place of what was asked, which it finds in SSH_ORIGINAL_COMMAND
    let (code, out, err) = run_as(&t, &forced, "user", &[], "rm -rf /tmp/nothing");
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "forced: rm -rf /tmp/nothing\n"),
        "{err}"
    );
    // restrict took the pty
    let (code, _, err) = run_as(&t, &forced, "user", &["-tt"], "tty");
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("PTY allocation request failed"), "{err}");

    // from= holds the client's address (127.0.0.1) or not
    let (code, out, err) = run_as(&t, &near, "user", &[], "echo near");
    assert_eq!((code, out.as_str()), (Some(0), "near\n"), "{err}");
    let (code, out, err) = run_as(&t, &far, "user", &[], "echo far");
    assert_eq!((code, out.as_str()), (Some(255), ""), "{err}");
    assert!(err.contains("Permission denied (publickey)"), "{err}");
    server.wait_for_log("ssh: key refused by its authorized_keys options: from=");

    // no-pty: no pty, the command runs without one
    let (code, _, err) = run_as(&t, &no_pty, "user", &["-tt"], "tty");
    assert_eq!(code, Some(255), "{err}");
    let (code, out, err) = run_as(&t, &no_pty, "user", &[], "tty");
    assert_eq!((code, out.trim()), (Some(1), "not a tty"), "{err}");

    // sshd's SFTP-only idiom: command="internal-sftp" runs the sftp subsystem and nothing
    // else (the scopes would allow exec)
    let local = tempfile::tempdir().expect("tempdir");
    std::fs::write(local.path().join("up.txt"), b"sftp only\n").expect("write");
    let batch = local.path().join("batch");
    std::fs::write(&batch, "put up.txt\nget up.txt down.txt\nls -l\n").expect("batch");
    let mut sftp = t.sftp(&sftp_only);
    sftp.arg("-b")
        .arg(&batch)
        .arg("user@alknet")
        .current_dir(local.path());
    let out = run_with_input(sftp, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(local.path().join("down.txt")).expect("down.txt"),
        b"sftp only\n"
    );
    let (code, out, err) = run_as(&t, &sftp_only, "user", &[], "echo no");
    assert_eq!((code, out.as_str()), (Some(255), ""), "{err}");
    assert!(err.contains("exec request failed"), "{err}");

    let samples = server.metrics_samples();
    assert!(
        samples
            .iter()
            .any(|l| l == "alknet_ssh_auth_refusals_total{reason=restricted} 1"),
        "{}",
        samples.join("\n")
    );
}

/// `ssh-agent -D -a SOCKET` holding `key`: the user's own agent on the client side.
fn start_agent(dir: &Path, key: &SshKey) -> (Proc, std::path::PathBuf) {
    let socket = dir.join("client-agent.sock");
    let agent = Proc(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "ssh-agent made no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new("ssh-add")
        .arg("-q")
        .arg(&key.path)
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .expect("ssh-add");
    assert!(out.status.success(), "ssh-add: {out:?}");
    (agent, socket)
}

/// Keys for a forwarding that `scope` grants and that both an `authorized_keys` option
/// and a certificate option (`withhold`, e.g. `no-agent-forwarding`) withhold: `alice`
/// has the scope; `bob` too, on a line with `withhold`; `carol` lacks it; `dan` and `erin`
/// log in by certificates of a CA whose line grants it, `erin`'s signed with `-O
/// withhold`. All may `exec`.
struct GrantKeys {
    alice: SshKey,
    bob: SshKey,
    carol: SshKey,
    dan: SshKey,
    erin: SshKey,
    authorized: std::path::PathBuf,
}

fn grant_keys(dir: &Path, scope: &str, withhold: &str) -> GrantKeys {
    let alice = ssh_keygen(dir, "alice");
    let bob = ssh_keygen(dir, "bob");
    let carol = ssh_keygen(dir, "carol");
    let ca = ssh_keygen(dir, "ca");
    let dan = ssh_keygen(dir, "dan");
    let erin = ssh_keygen(dir, "erin");
    sign_user_key(&ca, &dan, "dan", &["-n", "user"]);
    sign_user_key(&ca, &erin, "erin", &["-n", "user", "-O", withhold]);
    let authorized = dir.join("authorized_keys");
    std::fs::write(
        &authorized,
        format!(
            "scopes=\"ssh:exec,{scope}\" {}\n\
             {withhold},scopes=\"ssh:exec,{scope}\" {}\n\
             scopes=\"ssh:exec\" {}\n\
             cert-authority,scopes=\"ssh:exec,{scope}\" {}\n",
            alice.public, bob.public, carol.public, ca.public
        ),
    )
    .expect("write authorized_keys");
    GrantKeys {
        alice,
        bob,
        carol,
        dan,
        erin,
        authorized,
    }
}

#[test]
fn agent_forwarding_signs_with_the_clients_agent_and_only_where_granted() {
    require_openssh();
    let keys = tempfile::tempdir().expect("tempdir");
    let in_agent = ssh_keygen(keys.path(), "in-agent");
    let GrantKeys {
        alice,
        bob,
        carol,
        dan,
        erin,
        authorized,
    } = grant_keys(keys.path(), "ssh:forward-agent", "no-agent-forwarding");
    let server = BinServer::start_with_config(&format!(
        "[ssh]\nauthorized_keys = {authorized:?}\n[http]\npublic = [\"/metrics\"]\n"
    ));
    let t = target(&server);
    let (_agent, socket) = start_agent(keys.path(), &in_agent);
    let run = |key: &SshKey, command: &str| {
        let mut cmd = t.ssh_forwarding_agent(key, &socket);
        cmd.args(["user@alknet", command]);
        let out = run_with_input(cmd, b"");
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let in_agent_pub = in_agent.path.with_extension("pub");

    // granted: the command finds the agent in SSH_AUTH_SOCK, lists the client's key and
    // has it sign (ssh-add -T: a signature made by the client's agent and verified)
    let listed = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&in_agent_pub)
        .output()
        .expect("ssh-keygen -l");
    let fingerprint = text(&listed.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string();
    for key in [&alice, &dan] {
        let (code, out, err) = run(
            key,
            &format!(
                "echo \"$SSH_AUTH_SOCK\"; ssh-add -l && ssh-add -T {}",
                in_agent_pub.display()
            ),
        );
        assert_eq!(code, Some(0), "{}: {out} {err}", key.path.display());
        let mut lines = out.lines();
        let sock = std::path::PathBuf::from(lines.next().expect("SSH_AUTH_SOCK"));
        assert!(out.contains(&fingerprint), "{out}");
        // the socket's directory is private and goes with the session
        let dir = sock.parent().expect("dir").to_path_buf();
        let deadline = Instant::now() + Duration::from_secs(10);
        while dir.exists() {
            assert!(
                Instant::now() < deadline,
                "{} outlived its session",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // the socket is mode 0700 and the agent works for a process that is still running
    let (code, out, err) = run(&alice, "stat -c %a \"$(dirname \"$SSH_AUTH_SOCK\")\"");
    assert_eq!((code, out.trim()), (Some(0), "700"), "{err}");

    // not granted: no-agent-forwarding on the line, no scope, a certificate without
    // permit-agent-forwarding; the command runs, with no agent
    for key in [&bob, &carol, &erin] {
        let (code, out, err) = run(key, "echo \"${SSH_AUTH_SOCK-unset}\"");
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "unset\n"),
            "{}: {err}",
            key.path.display()
        );
    }

    let samples = server.metrics_samples();
    let value = |sample: &str| sample_value(&samples, sample);
    assert_eq!(value("alknet_ssh_requests_total{kind=auth-agent-req}"), 3);
    assert_eq!(
        value("alknet_ssh_requests_refused_total{kind=auth-agent-req}"),
        3
    );
    // ssh-add -l and -T in two sessions: one agent connection each at least
    assert!(value("alknet_ssh_channels_opened_total{type=auth-agent}") >= 4);
}

/// An X server for the client side: Xvfb on a free display, with a screen of `size`,
/// taking only clients that present the cookie in the returned authority file.
fn start_xvfb(dir: &Path, size: &str) -> (Proc, String, std::path::PathBuf) {
    let authority = dir.join("client.xauth");
    let number = (90..190)
        .find(|n| {
            !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        })
        .expect("a free X display number");
    let display = format!(":{number}");
    let cookie: String = (0..16)
        .map(|i| format!("{:02x}", (std::process::id() as usize * 31 + i * 97) % 256))
        .collect();
    let out = Command::new("xauth")
        .arg("-f")
        .arg(&authority)
        .args(["add", &display, ".", &cookie])
        .output()
        .expect("xauth (package xauth)");
    assert!(out.status.success(), "xauth add: {out:?}");
    let xvfb = Proc(
        Command::new("Xvfb")
            .arg(&display)
            .arg("-auth")
            .arg(&authority)
            .args(["-nolisten", "tcp", "-screen", "0", size])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (package xvfb)"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = Command::new("xdpyinfo")
            .env("DISPLAY", &display)
            .env("XAUTHORITY", &authority)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "Xvfb {display} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    (xvfb, display, authority)
}

/// `ssh -X` and `ssh -Y` against an X server on the client side (Xvfb): the remote
/// command's X client reaches it through the forwarded display, sees its screen, and the
/// session's authority file goes with the session; refused (no DISPLAY, the command still
/// runs) for a `no-x11-forwarding` line, an identity without `ssh:forward-x11`, and a
/// certificate without `permit-X11-forwarding`.
#[test]
fn x11_forwarding_reaches_the_clients_x_server_and_only_where_granted() {
    require_openssh();
    let keys = tempfile::tempdir().expect("tempdir");
    let (_xvfb, display, authority) = start_xvfb(keys.path(), "1234x567x24");
    let GrantKeys {
        alice,
        bob,
        carol,
        dan,
        erin,
        authorized,
    } = grant_keys(keys.path(), "ssh:forward-x11", "no-x11-forwarding");
    let server = BinServer::start_with_config(&format!(
        "[ssh]\nauthorized_keys = {authorized:?}\n[http]\npublic = [\"/metrics\"]\n"
    ));
    let t = target(&server);
    let run = |key: &SshKey, flag: &str, command: &str| {
        let mut cmd = t.ssh(key);
        cmd.env("DISPLAY", &display).env("XAUTHORITY", &authority);
        cmd.args([flag, "user@alknet", command]);
        let out = run_with_input(cmd, b"");
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let probe = "echo \"$DISPLAY\"; echo \"$XAUTHORITY\"; xdpyinfo | grep dimensions; \
                 stat -c %a \"$(dirname \"$XAUTHORITY\")\"";
    // -Y (trusted) and -X (untrusted: the client makes a cookie the X server limits)
    for (key, flag) in [(&alice, "-Y"), (&alice, "-X"), (&dan, "-Y")] {
        let (code, out, err) = run(key, flag, probe);
        assert_eq!(code, Some(0), "{flag}: {out} {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("localhost:1") && lines[0].ends_with(".0"),
            "DISPLAY {out}"
        );
        assert!(lines[2].contains("1234x567 pixels"), "{flag}: {out}");
        assert_eq!(lines[3], "700", "{out}");
        // the authority file's directory goes with the session
        let dir = Path::new(lines[1]).parent().expect("dir").to_path_buf();
        let deadline = Instant::now() + Duration::from_secs(10);
        while dir.exists() {
            assert!(
                Instant::now() < deadline,
                "{} outlived its session",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // not granted: the command runs without a display
    for key in [&bob, &carol, &erin] {
        let (code, out, err) = run(key, "-Y", "echo \"${DISPLAY-unset}\"");
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "unset\n"),
            "{}: {err}",
            key.path.display()
        );
    }
    let samples = server.metrics_samples();
    let value = |sample: &str| sample_value(&samples, sample);
    assert_eq!(value("alknet_ssh_requests_total{kind=x11-req}"), 3);
    assert_eq!(value("alknet_ssh_requests_refused_total{kind=x11-req}"), 3);
    assert!(value("alknet_ssh_channels_opened_total{type=x11}") >= 3);
}

/// `ssh -N -o ExitOnForwardFailure=yes FLAG SPEC user@alknet`, in the background.
fn forward_spec(t: &SshTarget, key: &SshKey, flag: &str, spec: &str) -> Proc {
    let mut cmd = t.ssh(key);
    cmd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        flag,
        spec,
        "user@alknet",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    Proc(cmd.spawn().expect("ssh forwarding"))
}

/// Ends ssh as a user does (SIGTERM: it closes its session and hangs up its
/// ProxyCommand), and waits for it.
fn end_ssh(mut p: Proc) {
    let _ = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status();
    let _ = p.0.wait();
}

/// A socket left at an `ssh -R` socket path (a dropped session's forwarded GnuPG agent):
/// refused by default, replaced with `stream_local_bind_unlink` (sshd's
/// `StreamLocalBindUnlink yes`); a file that is not a socket is never removed; and the
/// session whose socket was replaced leaves the new one in place when it ends.
#[test]
fn a_stale_forwarded_socket_is_replaced_only_with_stream_local_bind_unlink() {
    require_openssh();
    let allowed = tempfile::tempdir().expect("tempdir");
    let keys = tempfile::tempdir().expect("tempdir");
    let key = ssh_keygen(keys.path(), "gpg");
    let echo = tcp_echo_server();
    let data = payload(21, 64 << 10);
    let stale = allowed.path().join("S.gpg-agent");
    let plain = allowed.path().join("plain-file");
    std::fs::write(&plain, b"keep me").expect("plain file");
    let remote = |t: &SshTarget, path: &Path| {
        forward_spec(
            t,
            &key,
            "-R",
            &format!("{}:127.0.0.1:{echo}", path.display()),
        )
    };
    for unlink in [false, true] {
        let server = BinServer::start_with_config(&format!(
            "[ssh]\nforward_socket_allow = [{:?}]\nstream_local_bind_unlink = {unlink}\n",
            allowed.path()
        ));
        peer_add(
            server.data_dir.path(),
            "gpg",
            &key.fingerprint_hex,
            &["ssh:forward-remote"],
        );
        let t = target(&server);
        // a socket nobody listens on any more
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("stale socket"));
        let mut first = remote(&t, &stale);
        if !unlink {
            let status = first.0.wait().expect("ssh exits");
            assert_eq!(
                status.code(),
                Some(255),
                "a stale socket replaced by default"
            );
            assert!(stale.exists());
        } else {
            let got = echo_through(connect_unix_retry(&stale, SSH_TIMEOUT), &data);
            assert_eq!(sha256(&got), sha256(&data));
            // a second session takes the path over; the first, ending, leaves it alone
            use std::os::unix::fs::MetadataExt;
            let original = std::fs::metadata(&stale).expect("socket").ino();
            let second = remote(&t, &stale);
            let deadline = Instant::now() + SSH_TIMEOUT;
            while std::fs::metadata(&stale).is_ok_and(|m| m.ino() == original) {
                assert!(
                    Instant::now() < deadline,
                    "the second session did not rebind"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            end_ssh(first);
            std::thread::sleep(Duration::from_millis(500));
            let got = echo_through(connect_unix_retry(&stale, SSH_TIMEOUT), &data);
            assert_eq!(sha256(&got), sha256(&data), "the second session's socket");
            end_ssh(second);
        }
        // not a socket: refused either way, the file untouched
        let mut refused = remote(&t, &plain);
        let status = refused.0.wait().expect("ssh exits");
        assert_eq!(status.code(), Some(255));
        assert_eq!(std::fs::read(&plain).expect("plain file"), b"keep me");
        let _ = std::fs::remove_file(&stale);
    }
}

#[test]
fn unix_socket_forwarding_both_ways_beneath_the_allowed_directory() {
    require_openssh();
    let allowed = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let server = BinServer::start_with_config(&format!(
        "[ssh]\nforward_socket_allow = [{:?}]\n[http]\npublic = [\"/metrics\"]\n",
        allowed.path()
    ));
    let keys = tempfile::tempdir().expect("tempdir");
    let key = ssh_keygen(keys.path(), "sockets");
    peer_add(
        server.data_dir.path(),
        "sockets",
        &key.fingerprint_hex,
        &["ssh:forward-local", "ssh:forward-remote"],
    );
    let t = target(&server);
    let data = payload(13, 1 << 20);

    // ssh -L PORT:/path: the server connects to a Unix socket beneath the directory
    let served = allowed.path().join("service.sock");
    unix_echo_server(&served);
    let local = free_tcp_port();
    let l = forward_spec(
        &t,
        &key,
        "-L",
        &format!("127.0.0.1:{local}:{}", served.display()),
    );
    echo_rounds(local, &data);
    end_ssh(l);

    // ssh -R /path:HOST:PORT: the server listens on a Unix socket (mode 0600), its
    // connections reach the client's side
    let echo = tcp_echo_server();
    let bound = allowed.path().join("forwarded.sock");
    let r = forward_spec(
        &t,
        &key,
        "-R",
        &format!("{}:127.0.0.1:{echo}", bound.display()),
    );
    for round in 0..3 {
        let got = echo_through(connect_unix_retry(&bound, SSH_TIMEOUT), &data);
        assert_eq!(sha256(&got), sha256(&data), "round {round}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&bound)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // the session's end removes the socket
    end_ssh(r);
    let deadline = Instant::now() + Duration::from_secs(5);
    while bound.exists() {
        assert!(Instant::now() < deadline, "the socket outlived its session");
        std::thread::sleep(Duration::from_millis(50));
    }

    // outside the directory: -R refused (ssh exits 255), -L's channel refused (the
    // local connection is closed with nothing echoed)
    let stray = outside.path().join("stray.sock");
    let mut refused = forward_spec(
        &t,
        &key,
        "-R",
        &format!("{}:127.0.0.1:{echo}", stray.display()),
    );
    let status = refused.0.wait().expect("ssh exits");
    assert_eq!(status.code(), Some(255));
    assert!(!stray.exists());
    let outside_service = outside.path().join("service.sock");
    unix_echo_server(&outside_service);
    let local = free_tcp_port();
    let _l = forward_spec(
        &t,
        &key,
        "-L",
        &format!("127.0.0.1:{local}:{}", outside_service.display()),
    );
    {
        use std::io::{Read, Write};
        let mut conn = connect_retry(local, SSH_TIMEOUT);
        conn.set_read_timeout(Some(SSH_TIMEOUT)).expect("timeout");
        let _ = conn.write_all(b"not echoed");
        let mut got = Vec::new();
        // ssh closes the local connection when the server refuses its channel
        match conn.read_to_end(&mut got) {
            Ok(_) => assert!(got.is_empty(), "{got:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }

    let samples = server.metrics_samples();
    let value = |sample: &str| sample_value(&samples, sample);
    assert_eq!(
        value("alknet_ssh_requests_total{kind=streamlocal-forward}"),
        1
    );
    assert_eq!(
        value("alknet_ssh_requests_refused_total{kind=streamlocal-forward}"),
        1
    );
    assert_eq!(
        value("alknet_ssh_channels_opened_total{type=direct-streamlocal}"),
        3
    );
    assert_eq!(
        value("alknet_ssh_channels_opened_total{type=forwarded-streamlocal}"),
        3
    );
    assert_eq!(
        value("alknet_ssh_channels_refused_total{reason=denied,type=direct-streamlocal}"),
        1
    );
}

/// `[ssh] subsystems`, sshd's `Subsystem NAME COMMAND`: `ssh -s NAME` runs the command as
/// an `exec` would, for an identity with `ssh:exec`.
#[test]
fn a_configured_subsystem_runs_its_command() {
    require_openssh();
    let server = BinServer::start_with_config("[ssh]\nsubsystems = { upper = \"tr a-z A-Z\" }\n");
    let keys = tempfile::tempdir().expect("tempdir");
    let runner = ssh_keygen(keys.path(), "runner");
    let shell_only = ssh_keygen(keys.path(), "shell-only");
    let dir = server.data_dir.path();
    peer_add(dir, "runner", &runner.fingerprint_hex, &["ssh:exec"]);
    peer_add(
        dir,
        "shell-only",
        &shell_only.fingerprint_hex,
        &["ssh:shell"],
    );
    let t = target(&server);
    let subsystem = |key: &SshKey, name: &str| {
        let mut cmd = t.ssh(key);
        cmd.args(["-s", "user@alknet", name]);
        run_with_input(cmd, b"quic all the way\n")
    };
    let out = subsystem(&runner, "upper");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "QUIC ALL THE WAY\n");
    // without ssh:exec, and a name nobody configured: refused
    for (key, name) in [(&shell_only, "upper"), (&runner, "lower")] {
        let out = subsystem(key, name);
        assert_eq!(out.status.code(), Some(255), "{name}");
        assert!(
            text(&out.stderr).contains("subsystem request failed"),
            "{}",
            text(&out.stderr)
        );
    }
}
