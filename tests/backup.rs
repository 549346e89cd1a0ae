//! Backups and restores (issue 12 problem 5): a disaster drill with a real daemon on a real
//! SoftHSM2 token, a real nats-server for the responder nodes' engine, and OpenSSL judging what
//! the restored CA says.
mod common;

use common::daemon::Daemon;
use common::{Keys, Pki, serial_of};

fn revoke(pki: &Pki, certificate: &std::path::Path) {
    pki.revoke(certificate, "key-compromise");
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
    let (_dir, nats, pki, daemon) = common::nats::ca_with_engine();

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
    daemon.kill_9();
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
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("holds a store with a CA"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

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

/// The lines `openssl ocsp` prints of a revocation: its time and reason.
fn revocation_lines(ocsp: &str) -> Vec<String> {
    let lines: Vec<String> = ocsp
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Reason:") || l.starts_with("Revocation Time:"))
        .map(str::to_owned)
        .collect();
    assert!(!lines.is_empty(), "not a revocation: {ocsp}");
    lines
}

/// Each entry of the served CRL of `name` as `openssl crl -text` prints it (its revocation
/// date and extensions), by serial.
fn crl_entries(
    pki: &Pki,
    daemon: &Daemon,
    name: &str,
) -> std::collections::BTreeMap<String, String> {
    common::crl::entries(&pki.served_crl_text(daemon, name))
}

/// Issue 17, problems 5 and 7: revocations made after the backup come back exactly as they
/// were published, time, reason and invalidity date, whether a signed CRL listed them or only
/// the engine knew them; a start on the lost data directory refuses (it creates no store),
/// and a store left empty by an earlier start, or a `.restoring` leftover, does not block the
/// restore.
#[test]
fn a_restore_keeps_every_revocation_as_it_was_published() {
    let dir = tempfile::tempdir().unwrap();
    let nats = common::nats::NatsServer::start(&dir.path().join("nats"));
    let pki = Pki::new(Keys::EC);
    pki.enable_nats(&[nats.url()], 1);
    // The CRL a revocation triggers waits 15 s (2 s by default), so that the CRL read below
    // is the one made before the last revocation, however slow the machine.
    let mut config = std::fs::read_to_string(&pki.config).unwrap();
    assert!(!config.contains("[crl]"), "{config}");
    config.push_str("\n[crl]\ncoalesce_seconds = 15\n");
    std::fs::write(&pki.config, config).unwrap();
    pki.init();
    let daemon = Daemon::start(&pki);
    let kept = pki.issue_holder("kept", &subject("kept"));
    let backup = pki.path("backup");
    pki.sceau_ok(&["backup", "--out", backup.to_str().unwrap()]);

    // After the backup: a revocation of a certificate in it; one of a certificate issued
    // after it, with an invalidity date, listed by a CRL; one only the engine knew of (the
    // machine is lost before the CRL that would list it: CRLs wait 15 s to coalesce here).
    let listed = pki.issue_holder("listed", &subject("listed"));
    let now = || sceau::x509::Timestamp::now();
    let rfc3339 = |t: sceau::x509::Timestamp| t.to_date_time().unwrap().to_string();
    pki.revoke_with(
        &listed,
        "key-compromise",
        &["--invalidity-date", &rfc3339(now())],
    );
    pki.revoke(&kept, "affiliation-changed");
    pki.sceau_ok(&["crl"]);
    let engine_only = pki.issue_holder("engine-only", &subject("engine-only"));
    daemon.wait_until("the engine has everything", |d| {
        d.metric("sceau_outbox_depth", "") == 0
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    let invalid_since = now().minus_seconds(1);
    let since = rfc3339(invalid_since);
    pki.revoke_with(&engine_only, "superseded", &["--invalidity-date", &since]);
    let mut published = std::collections::BTreeMap::new();
    for certificate in [&kept, &listed, &engine_only] {
        published.insert(
            serial_of(certificate),
            revocation_lines(&pki.ocsp_status(&daemon, certificate)),
        );
    }
    daemon.wait_until("the engine has the last revocation", |d| {
        d.metric("sceau_outbox_depth", "") == 0
    });
    let before = crl_entries(&pki, &daemon, "ac-agents");
    assert!(
        !before.contains_key(&serial_of(&engine_only)),
        "the CRL was made before the machine was lost: the test needs it not to list this one"
    );
    daemon.kill_9();
    std::fs::remove_dir_all(pki.data_dir().join("store")).unwrap();

    // A start on the lost store refuses and creates nothing.
    let refused = pki.sceau(&["serve"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("no store") && why.contains("sceau restore"),
        "{why}"
    );
    assert!(!pki.data_dir().join("store").exists());
    // An empty store (what an older start left) and an interrupted restore's leftover.
    drop(sceau::store::Store::open(&pki.data_dir().join("store")).unwrap());
    std::fs::create_dir_all(pki.data_dir().join("store.restoring")).unwrap();
    std::fs::write(pki.data_dir().join("store.restoring/000001.sst"), b"junk").unwrap();

    let report = pki.sceau_ok(&["restore", "--from", backup.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        report["revoked_at_restore_time"],
        serde_json::json!([]),
        "{report}"
    );
    let reapplied = report["revocations_reapplied"].as_array().unwrap();
    assert_eq!(reapplied.len(), 3, "{report}");
    let engine_entry = reapplied
        .iter()
        .find(|r| r["serial"] == serial_of(&engine_only))
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(engine_entry["source"], "engine", "{report}");
    assert_eq!(engine_entry["reason"], "superseded", "{report}");
    assert_eq!(
        engine_entry["invalidity_date"],
        invalid_since.unix_seconds(),
        "{report}"
    );
    assert!(!pki.data_dir().join("store.restoring").exists());

    let daemon = Daemon::start(&pki);
    for certificate in [&kept, &listed, &engine_only] {
        let serial = serial_of(certificate);
        assert_eq!(
            revocation_lines(&pki.ocsp_status(&daemon, certificate)),
            published[&serial],
            "{serial}: OCSP after the restore"
        );
    }
    daemon.wait_until("the restored CA's CRL lists every revocation", |d| {
        crl_entries(&pki, d, "ac-agents").contains_key(&serial_of(&engine_only))
    });
    let after = crl_entries(&pki, &daemon, "ac-agents");
    for certificate in [&kept, &listed] {
        let serial = serial_of(certificate);
        assert_eq!(after[&serial], before[&serial], "{serial}: CRL entry");
    }
    let entry = &after[&serial_of(&engine_only)];
    // As OpenSSL prints the invalidity date.
    let printed = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", invalid_since.unix_seconds()),
            "+%b %e %H:%M:%S %Y GMT",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout).trim().to_owned();
    assert!(
        entry.contains("Superseded") && entry.contains(&printed),
        "{entry} (expected {printed})"
    );
    drop(nats);
}

/// Issue 17, problem 6: restored with nothing to go on (no engine, the publish directory lost
/// with the data), the CA never publishes a CRL number it published before: the report says the
/// numbers come from the clock.
#[test]
fn with_nothing_published_to_go_on_a_restore_reuses_no_crl_number() {
    let pki = Pki::new(Keys::EC);
    pki.init();
    let daemon = Daemon::start(&pki);
    let holder = pki.issue_holder("holder", &subject("holder"));
    let backup = pki.path("backup");
    pki.sceau_ok(&["backup", "--out", backup.to_str().unwrap()]);
    revoke(&pki, &holder);
    for _ in 0..3 {
        pki.sceau_ok(&["crl"]);
    }
    let (_, crl_published) = pki.served_crl(&daemon, "ac-agents");
    let (_, arl_published) = pki.served_crl(&daemon, "racine");
    assert!(crl_published >= 4, "{crl_published}");
    daemon.kill_9();
    std::fs::remove_dir_all(pki.data_dir().join("store")).unwrap();
    std::fs::remove_dir_all(pki.path("publish")).unwrap();

    let report = pki.sceau_ok(&["restore", "--from", backup.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    for name in ["ac-agents", "racine"] {
        assert_eq!(
            report["crl_number_floors"][name]["source"], "clock",
            "{report}"
        );
    }
    assert!(
        report["unverified"].to_string().contains("no engine"),
        "{report}"
    );
    let daemon = Daemon::start(&pki);
    daemon.wait_until("a CRL and an ARL", |d| d.metric("sceau_crl_number", "") > 0);
    let (_, crl_number) = pki.served_crl(&daemon, "ac-agents");
    let (_, arl_number) = pki.served_crl(&daemon, "racine");
    assert!(
        crl_number > crl_published && arl_number > arl_published,
        "CRL {crl_number} (published {crl_published}), ARL {arl_number} (published {arl_published})"
    );
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
