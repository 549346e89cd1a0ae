//! Backups and restores (issue 12 problem 5): a disaster drill with a real daemon on a real
//! SoftHSM2 token, a real nats-server for the responder nodes' engine, and OpenSSL judging what
//! the restored CA says.
mod common;

use common::daemon::Daemon;
use common::nats::NatsServer;
use common::{Keys, Pki, serial_of};

fn revoke(pki: &Pki, certificate: &std::path::Path) {
    pki.sceau_ok(&[
        "revoke",
        "--serial",
        &serial_of(certificate),
        "--reason",
        "key-compromise",
    ]);
}

fn subject(name: &str) -> String {
    format!(
        "/GN=Agent/SN={}/CN=Agent {}",
        name.to_uppercase(),
        name.to_uppercase()
    )
}

/// Issue and revoke; back up while certificates are issued and revoked; issue and revoke more;
/// lose the data directory; restore: everything up to the backup is back, `audit verify`
/// passes, the next CRL number is above every published one, and the revocations made after the
/// backup are back from the engine (a certificate issued after the backup, which the CA cannot
/// account for any more, is revoked).
#[test]
fn a_ca_restored_from_a_backup_loses_no_revocation_and_reuses_no_crl_number() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&dir.path().join("nats"));
    let pki = Pki::new(Keys::EC);
    pki.enable_nats(&[nats.url()], 1);
    pki.init();
    let daemon = Daemon::start(&pki);

    let kept = pki.issue_holder("kept", &subject("kept"));
    let early = pki.issue_holder("early", &subject("early"));
    let later = pki.issue_holder("later", &subject("later"));
    revoke(&pki, &early);

    // The backup, through the running daemon, while another client issues and revokes.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let backup = pki.path("backup-1");
    let during = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("load{n}");
                let certificate = pki.issue_holder(&name, &subject(&name));
                if n % 2 == 0 {
                    revoke(&pki, &certificate);
                }
                n += 1;
            }
            n
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let made = pki.sceau(&["backup", "--out", backup.to_str().unwrap()]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let issued = load.join().unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        issued
    });
    assert!(during > 0, "no load ran during the backup");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    assert!(
        manifest["counts"]["certificates"].as_u64().unwrap() >= 3,
        "{manifest}"
    );
    assert!(
        manifest["files"]
            .as_object()
            .unwrap()
            .keys()
            .any(|f| f.starts_with("store/"))
    );
    assert!(backup.join("certs/racine.pem").is_file());

    // After the backup: a revocation of a certificate the backup has, a certificate the
    // backup lacks (revoked too), and one it lacks that stays unrevoked.
    revoke(&pki, &later);
    let after = pki.issue_holder("after", &subject("after"));
    revoke(&pki, &after);
    let unrevoked_after = pki.issue_holder("unrevoked", &subject("unrevoked"));
    pki.sceau_ok(&["crl"]);
    let (_, published) = pki.served_crl(&daemon, "ac-agents");
    daemon.wait_until("the engine has everything", |d| {
        d.metric("sceau_outbox_depth", "") == 0
    });

    // The machine is lost: the daemon dies, the data directory is gone.
    let killed = std::process::Command::new("kill")
        .args(["-9", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(daemon);
    std::fs::remove_dir_all(pki.data_dir()).unwrap();

    // A tampered backup is refused, naming the file.
    let tampered = pki.path("backup-tampered");
    copy_dir(&backup, &tampered);
    let sst = std::fs::read_dir(tampered.join("store"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "sst"))
        .unwrap();
    let mut bytes = std::fs::read(&sst).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&sst, bytes).unwrap();
    let refused = pki.sceau(&["restore", "--from", tampered.to_str().unwrap()]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains(".sst") && why.contains("SHA-256"), "{why}");
    assert!(
        !pki.data_dir().join("store").exists(),
        "a refused restore left a store"
    );

    // A CRL file this CA did not sign (here: a published one with its signature altered) is
    // not believed: neither its number nor its entries.
    let publish = pki.path("publish");
    let mut forged = std::fs::read(publish.join("ac-agents.crl")).unwrap();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    std::fs::write(publish.join("forged.crl"), forged).unwrap();
    let restored = pki.sceau_ok(&["restore", "--from", backup.to_str().unwrap()]);
    let restored: serde_json::Value = serde_json::from_str(&restored).unwrap();
    let reapplied = restored["revocations_reapplied"].to_string();
    assert!(reapplied.contains(&serial_of(&later)), "{restored}");
    let unaccounted = restored["unaccounted_revoked"].to_string();
    assert!(unaccounted.contains(&serial_of(&after)), "{restored}");
    assert!(
        unaccounted.contains(&serial_of(&unrevoked_after)),
        "{restored}"
    );
    let verified = pki.sceau(&["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    // Never over a store.
    let again = pki.sceau(&["restore", "--from", backup.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let daemon = Daemon::start(&pki);
    assert!(pki.ocsp_status(&daemon, &kept).contains(": good"));
    for revoked in [&early, &later, &after, &unrevoked_after] {
        let status = pki.ocsp_status(&daemon, revoked);
        assert!(
            status.contains(": revoked"),
            "{}: {status}",
            revoked.display()
        );
    }
    daemon.wait_until("a CRL above every published one", |d| {
        let (listed, number) = pki.served_crl(d, "ac-agents");
        number > published && listed.contains(&serial_of(&later))
    });
    let (listed, _) = pki.served_crl(&daemon, "ac-agents");
    for revoked in [&early, &later, &after] {
        assert!(listed.contains(&serial_of(revoked)));
    }
    // And the CA issues again, on serials it never used.
    let fresh = pki.issue_holder("fresh", &subject("fresh"));
    assert!(pki.ocsp_status(&daemon, &fresh).contains(": good"));
    drop(nats);
}

/// A restore checks that the HSM holds the CA's keys: into another PKI's token, it is refused
/// and leaves nothing behind.
#[test]
fn a_backup_is_not_restored_against_a_token_without_its_keys() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let backup = pki.path("backup");
    pki.sceau_ok(&["backup", "--out", backup.to_str().unwrap()]);
    // Not a backup: the error names the file.
    let nothing = pki.sceau(&[
        "restore",
        "--from",
        pki.path("no-such-backup").to_str().unwrap(),
    ]);
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("no-such-backup/manifest.json"));
    let junk = pki.path("junk-backup");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("manifest.json"), b"{not json").unwrap();
    let refused = pki.sceau(&["restore", "--from", junk.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("junk-backup/manifest.json"));
    let other = Pki::new(Keys::EC);
    other.init();
    std::fs::remove_dir_all(other.data_dir().join("store")).unwrap();
    let refused = other.sceau(&["restore", "--from", backup.to_str().unwrap()]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("does not hold the key"), "{why}");
    assert!(!other.data_dir().join("store").exists());
    // A second backup into the same directory is refused.
    let twice = pki.sceau(&["backup", "--out", backup.to_str().unwrap()]);
    assert!(!twice.status.success());
}

/// `[backup]`: the daemon backs up on its own, each backup checked, the `keep` newest kept;
/// one of them restores.
#[test]
fn the_daemon_backs_up_on_schedule_and_keeps_the_newest() {
    let pki = Pki::new(Keys::EC);
    let backups = pki.path("backups");
    let mut config = std::fs::read_to_string(&pki.config).unwrap();
    config.push_str(&format!(
        "\n[backup]\ndir = \"{}\"\nevery_hours = 24\nkeep = 2\n",
        backups.display()
    ));
    std::fs::write(&pki.config, config).unwrap();
    pki.init();
    // Every 1.1 s instead of every 24 h (a test build's hook): names are UTC seconds.
    let daemon = Daemon::start_with_env(&pki, &[("SCEAU_BACKUP_EVERY_MS", "1100")]);
    let issued = pki.issue_holder("scheduled", &subject("scheduled"));
    let listed = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        let mut all: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        all.sort();
        all
    };
    let mut seen = std::collections::BTreeSet::new();
    daemon.wait_until("four scheduled backups", |_| {
        seen.extend(
            listed(&backups)
                .into_iter()
                .filter(|p| !p.to_string_lossy().ends_with(".sceau-partial")),
        );
        seen.len() >= 4
    });
    // Between two runs, the two newest are there, whole; the others were pruned.
    let whole = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        listed(dir)
            .into_iter()
            .filter(|p| p.join("manifest.json").is_file())
            .collect()
    };
    daemon.wait_until("two backups kept", |_| whole(&backups).len() == 2);
    let kept = whole(&backups);
    assert!(
        seen.iter().filter(|p| !kept.contains(p)).count() >= 2,
        "nothing pruned: {seen:?}"
    );
    let newest = kept[1].clone();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(newest.join("manifest.json")).unwrap()).unwrap();
    assert!(
        manifest["counts"]["certificates"].as_u64().unwrap() >= 1,
        "{manifest}"
    );
    daemon.stop();
    std::fs::remove_dir_all(pki.data_dir().join("store")).unwrap();
    pki.sceau_ok(&["restore", "--from", newest.to_str().unwrap()]);
    let daemon = Daemon::start(&pki);
    assert!(pki.ocsp_status(&daemon, &issued).contains(": good"));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
