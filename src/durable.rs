//! Files that survive a power cut: written under a name of their own, synced, renamed into
//! place, and the directory synced, so that a reader sees the old file or the new one, whole,
//! and a crash after the call returns never loses the new one.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `contents` to `path` atomically and durably. Two writers of the same path never
/// share a temporary file (each gets a name of its own).
pub fn write_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = parent(path) {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = temporary_name(path);
    let written = write_synced(&temporary, contents).and_then(|()| rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Creates (or truncates) `path` with `contents` and syncs the file and its directory.
pub fn write_synced(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    sync_dir(path)
}

/// Renames `from` to `to` and syncs the directory, so that the new name survives a power cut.
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    sync_dir(to)
}

/// Syncs the directory that holds `path` (its entries: a new or renamed name).
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    match parent(path) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

fn parent(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

/// `<name>.tmp-<pid>-<n>` beside `path`.
fn temporary_name(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("a.pem");
        write_file(&path, b"first").unwrap();
        write_file(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.pem")]);
    }

    #[test]
    fn concurrent_writers_never_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.addr");
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        write_file(&path, &[i; 4096]).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // Whole contents of one writer, never a mix of two.
        let contents = std::fs::read(&path).unwrap();
        assert_eq!(contents.len(), 4096);
        assert!(contents.iter().all(|b| *b == contents[0]));
    }

    #[test]
    fn a_failed_write_names_the_file_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        // A directory cannot be created under a file.
        assert!(write_file(&blocker.join("a.pem"), b"y").is_err());
        assert_eq!(std::fs::read(&blocker).unwrap(), b"x");
    }
}
