//! Running under systemd, checked where systemd is not PID 1: the unit's exposure rating, the
//! readiness protocol (a `NOTIFY_SOCKET` this test listens on, as systemd would), SIGHUP
//! reloading the policies (a bad set refused, the old one kept) and SIGTERM.
mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;
use common::{Keys, Pki};

#[test]
fn the_unit_is_rated_2_or_lower_by_systemd_analyze() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/sceau.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd; tests/run.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for sceau.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "exposure level {level}:\n{text}");
}

/// The years between a certificate's notBefore and notAfter.
fn validity_years(certificate: &Path) -> i32 {
    let text = common::x509::x509(certificate, &["-startdate", "-enddate"]);
    let year = |prefix: &str| -> i32 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|d| d.split_whitespace().nth(3))
            .and_then(|y| y.parse().ok())
            .unwrap()
    };
    year("notAfter=") - year("notBefore=")
}

fn issue(pki: &Pki, name: &str) -> std::path::PathBuf {
    pki.issue_holder(
        name,
        &format!("/GN=Agent/SN={0}/CN=Agent {0}", name.to_uppercase()),
    )
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let n = socket
        .recv(&mut buffer)
        .expect("a notification from the daemon");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

fn hangup(daemon: &Daemon) {
    let status = Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn readiness_reload_and_stop_follow_the_systemd_protocol() {
    let pki = Pki::new(Keys::EC);
    let policies = pki.private_policies();
    pki.init();
    let socket_path = pki.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let daemon = Daemon::start_with_env(&pki, &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let ready = receive(&socket);
    assert!(ready.starts_with("READY=1"), "{ready}");
    assert!(ready.contains(&format!("va={}", daemon.va)), "{ready}");
    assert_eq!(validity_years(&issue(&pki, "first")), 3);

    // The policy's maximum validity set to `years`, then SIGHUP: the daemon says it reloads.
    let auth = policies.join("justice-auth.toml");
    let good = std::fs::read_to_string(&auth).unwrap();
    let reload_with = |years: &str| {
        let changed = good.replace(
            "max_validity_years = 3",
            &format!("max_validity_years = {years}"),
        );
        std::fs::write(&auth, changed).unwrap();
        hangup(&daemon);
        assert_eq!(receive(&socket), "RELOADING=1");
        assert_eq!(receive(&socket), "READY=1");
    };
    // A broken policy file: refused, the policies in force stay.
    reload_with("\"three\"");
    assert_eq!(validity_years(&issue(&pki, "second")), 3);

    // A valid change: in force for the next issuance.
    reload_with("2");
    assert_eq!(validity_years(&issue(&pki, "third")), 2);

    let log = std::fs::read_to_string(pki.path("daemon.log")).unwrap();
    assert!(log.contains("policies not reloaded"), "{log}");
    assert!(log.contains("policies reloaded"), "{log}");
    // The PIN is never in the logs.
    assert!(!log.contains("4242-test-pin"));
    assert!(daemon.stop().success());
    assert_eq!(receive(&socket), "STOPPING=1");
}
