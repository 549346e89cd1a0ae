//! The local admin channel proves itself (issue 10 problem 8): the CLI sends its token only to
//! a daemon that proves it knows it; the token changes at every start and its file is 0600;
//! the admin listener binds loopback only.
mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::daemon::Daemon;
use common::{Keys, Pki};

/// A process that took the admin address while sceau was stopped: it answers 200 to
/// everything and keeps what it was sent.
fn impostor() -> (std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut seen = Vec::new();
            let mut buffer = [0u8; 4096];
            // Answer every request on the connection the same way, until the client leaves.
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buffer[..n]);
                let body = br#"{"revoked":[],"ocsp":"revoked","proof":"00"}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            }
            let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
        }
    });
    (address, rx)
}

#[test]
fn the_cli_sends_its_token_only_to_its_own_daemon() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let token_file = pki.data_dir().join("admin.token");
    let daemon = Daemon::start(&pki);
    let first = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Through the real daemon, commands work (the daemon proves itself first).
    let holder = pki.issue_holder("alice", "/GN=Alice/SN=BLANC/CN=Alice BLANC");
    assert!(daemon.stop().success());

    // Stopped: another process takes the address the CLI will try.
    let (address, seen) = impostor();
    std::fs::write(pki.data_dir().join("admin.addr"), address.to_string()).unwrap();
    let serial = common::serial_of(&holder);
    let out = pki.sceau(&["revoke", "--serial", &serial, "--reason", "superseded"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the impostor was believed: {stderr}");
    assert!(stderr.contains("is not the sceau daemon"), "{stderr}");
    let captured = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(captured.contains("/admin/identity"), "{captured}");
    assert!(
        !captured.contains(first.trim()) && !captured.contains("Authorization"),
        "the token was sent to the impostor:\n{captured}"
    );
    // Nothing was revoked.
    assert_eq!(pki.serial_state(&serial)["state"], "issued");

    // The next start writes a new token, 0600 again even if the file was opened up.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let daemon = Daemon::start(&pki);
    let second = std::fs::read_to_string(&token_file).unwrap();
    assert_ne!(first, second, "the token is rotated at each start");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    pki.sceau_ok(&["revoke", "--serial", &serial, "--reason", "superseded"]);
    assert!(daemon.stop().success());
    assert_eq!(pki.serial_state(&serial)["state"], "revoked");
}

#[test]
fn the_admin_listener_binds_loopback_only() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sceau"))
        .arg("-c")
        .arg(&pki.config)
        .args([
            "serve",
            "--listen-va",
            "127.0.0.1:0",
            "--listen-admin",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
    // A configuration to fix: 78 (EX_CONFIG), which the systemd unit does not restart.
    assert_eq!(out.status.code(), Some(78), "{stderr}");
}
