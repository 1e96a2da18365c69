//! `alknet serve` under systemd's `Type=notify`: READY=1 once serving, RELOADING=1 and
//! READY=1 around a SIGHUP reload, STOPPING=1 when SIGTERM starts the drain.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use alknet_tests::*;

fn next_state(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn serve_notifies_systemd_of_ready_reload_and_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let port = free_udp_port();
    let mut child = Command::new(alknet_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "1",
        ])
        .env("ALKNET_DATA_DIR", dir.path())
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn alknet serve");
    let pid = child.id() as i32;

    let ready = next_state(&socket);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(ready.contains(&format!("127.0.0.1:{port}")), "{ready:?}");

    // SAFETY: kill(2) on the child this test started
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(next_state(&socket), "RELOADING=1");
    assert_eq!(next_state(&socket), "READY=1");

    // SAFETY: as above
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(next_state(&socket), "STOPPING=1");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("alknet serve did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
