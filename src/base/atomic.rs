//! Atomic file replacement: a reader sees the old file or the whole new one, never a part.
//!
//! Owns: the one temp-file-then-rename writer every layer uses (run files, plans, checkpoints,
//! leaderboards, program logs) and the name rule of its temp files. The temp file lives beside
//! the target (same file system, so the rename is atomic), is created with `O_EXCL` under a
//! random name (two processes on two hosts sharing a folder never write the same one), and is
//! removed by `tempfile` when the write fails: a full disk is not made fuller by a retry.

use std::io::Write;
use std::path::Path;

pub use tempfile::NamedTempFile;

/// A new, empty temp file beside `path`, named `.<name>.<random>.tmp`; removed when dropped
/// unless [`persist`]ed.
pub fn temp_beside(path: &Path) -> std::io::Result<NamedTempFile> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp").rand_bytes(10);
    // tempfile's default is 0600; a results file is as readable as any other (umask applies).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// fsync `tmp` and rename it onto `path`; on failure the temp file is removed.
pub fn persist(tmp: NamedTempFile, path: &Path) -> std::io::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist(path).map(drop).map_err(|e| e.error)
}

/// Replace `path` by `bytes`: temp file, fsync, rename.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = temp_beside(path)?;
    tmp.write_all(bytes)?;
    persist(tmp, path)
}

/// Replace `path` by what `fill` writes to the temp file's path (for writers that take a path,
/// such as safetensors); on an error from `fill` the temp file is removed.
pub fn write_via<E: From<std::io::Error>>(
    path: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = temp_beside(path)?;
    fill(tmp.path())?;
    Ok(persist(tmp, path)?)
}

/// Whether a file name is one of this module's temp files for `name`
/// (`.<name>.<random>.tmp`): a killed writer leaves such files behind.
pub fn is_temp_for(file_name: &str, name: &str) -> bool {
    file_name
        .strip_prefix('.')
        .and_then(|r| r.strip_prefix(name))
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_suffix(".tmp"))
        .is_some_and(|nonce| !nonce.is_empty() && !nonce.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a--b.json");
        write(&p, b"{}").unwrap();
        write(&p, b"{\"x\":1}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"x\":1}");
        assert_eq!(names(dir.path()), ["a--b.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_not_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.json");
        write(&p, b"1").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_ne!(mode & 0o044, 0, "mode {mode:o}: group/other cannot read");
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        write(&p, b"old").unwrap();
        let r: std::io::Result<()> = write_via(&p, |t| {
            std::fs::write(t, b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert_eq!(r.unwrap_err().to_string(), "disk full");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["w.safetensors"]);
        write_via(&p, |t| std::fs::write(t, b"new")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn a_failed_rename_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty folder: the rename fails after the bytes were written.
        let p = dir.path().join("taken");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("x"), b"").unwrap();
        assert!(write(&p, b"data").is_err());
        assert_eq!(names(dir.path()), ["taken"]);
    }

    #[test]
    fn temp_names_are_recognised_only_for_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = temp_beside(&dir.path().join("a--b.json")).unwrap();
        let name = t.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert!(is_temp_for(&name, "a--b.json"), "{name}");
        assert!(!is_temp_for(&name, "a--b.js"));
        assert!(!is_temp_for(".a--b.json.x.y.tmp", "a--b.json"));
        assert!(!is_temp_for(".a--b.json..tmp", "a--b.json"));
        assert!(!is_temp_for("a--b.json", "a--b.json"));
        let other = temp_beside(&dir.path().join("a--b.json")).unwrap();
        assert_ne!(t.path(), other.path());
    }
}
