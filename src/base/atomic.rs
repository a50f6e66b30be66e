//! Atomic file replacement: a reader sees the old file or the whole new one, never a part.
//!
//! Owns: the one temp-file-then-rename writer every layer uses (run files, plans, checkpoints,
//! leaderboards, program logs) and the name rule of its temp files. The temp file lives beside
//! the target (same file system, so the rename is atomic), is created with `O_EXCL` under a
//! random name (two processes on two hosts sharing a folder never write the same one), and is
//! removed by `tempfile` when the write fails: a full disk is not made fuller by a retry.
//! A writer killed mid-write cannot remove its temp file, so each temp name carries its
//! writer's tag (`<host>-<pid namespace>-<pid>`): the next writer of the same file, or a
//! command opening the results folder, removes the temp files of writers of this machine that
//! no longer exist ([`remove_dead_writers_files`]). A temp file of a live writer, or of another
//! machine sharing the folder, is never touched.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

pub use tempfile::NamedTempFile;

/// `<host>-<pid namespace>`: where a PID means one process. The host name keeps only ASCII
/// letters, digits and `_` (at most 32), so a tag holds no `.`.
fn machine_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(32)
            .collect();
        // `pid:[4026531836]`: the PID namespace's inode.
        let ns: String = std::fs::read_link("/proc/self/ns/pid")
            .map(|l| {
                l.to_string_lossy()
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect()
            })
            .unwrap_or_default();
        let or_x = |s: String| if s.is_empty() { "x".to_string() } else { s };
        format!("{}-{}", or_x(host), or_x(ns))
    })
}

/// This process's writer tag, `<host>-<pid namespace>-<pid>`, for the names of the temporary
/// files it makes (temp files, plan claims, write probes).
pub fn writer_tag() -> String {
    format!("{}-{}", machine_tag(), std::process::id())
}

/// Whether `file_name` is a dot-file carrying the writer tag of a process of this machine
/// and PID namespace that no longer exists (a zombie still exists; so does a process this
/// one may not signal).
pub fn is_dead_writers_file(file_name: &str) -> bool {
    if !file_name.starts_with('.') {
        return false;
    }
    let key = format!("{}-", machine_tag());
    let Some(at) = file_name.find(&key) else {
        return false;
    };
    let digits: String = file_name[at + key.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let Ok(pid) = digits.parse::<i32>() else {
        return false;
    };
    if pid <= 0 || pid as u32 == std::process::id() {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only asks whether `pid` exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Remove, from `dir`, the files whose name passes `only` and is a dead writer's
/// (`is_dead_writers_file`): what killed writers of this machine left. Best effort (a file that
/// cannot be removed is left, harmless to every reader); returns how many were removed.
pub fn remove_dead_writers_files(dir: &Path, only: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            only(&name) && is_dead_writers_file(&name)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// A new, empty temp file beside `path`, named `.<name>.<writer tag>-<random>.tmp`; removed
/// when dropped unless [`persist`]ed. The temp files of `path` that dead writers of this
/// machine left are removed first.
pub fn temp_beside(path: &Path) -> std::io::Result<NamedTempFile> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    remove_dead_writers_files(dir, |f| is_temp_for(f, name));
    let prefix = format!(".{name}.{}-", writer_tag());
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

    /// The PID of a process that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn a_dead_writers_temp_file_is_removed_by_the_next_writer_and_no_other_is() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a--b.json");
        let tag = machine_tag();
        let dead = format!(".a--b.json.{tag}-{}-Xy12345678.tmp", dead_pid());
        let mine = format!(".a--b.json.{}-Ab12345678.tmp", writer_tag());
        let init = format!(".a--b.json.{tag}-1-Cd12345678.tmp");
        let elsewhere = format!(".a--b.json.otherhost-{}-Ef12345678.tmp", dead_pid());
        let other_file = format!(".c.json.{tag}-{}-Gh12345678.tmp", dead_pid());
        for n in [&dead, &mine, &init, &elsewhere, &other_file] {
            std::fs::write(dir.path().join(n), b"half").unwrap();
        }
        assert!(is_dead_writers_file(&dead));
        assert!(!is_dead_writers_file(&mine), "this process is alive");
        assert!(!is_dead_writers_file(&init), "PID 1 is alive");
        assert!(
            !is_dead_writers_file(&elsewhere),
            "another machine's writer is unknown"
        );
        write(&p, b"{}").unwrap();
        let left = names(dir.path());
        assert!(!left.contains(&dead), "{left:?}");
        for n in [&mine, &init, &elsewhere, &other_file] {
            assert!(left.contains(n), "{n} was removed: {left:?}");
        }
        // A folder-wide sweep takes the other file's dead temp too.
        assert_eq!(remove_dead_writers_files(dir.path(), |_| true), 1);
        assert!(!names(dir.path()).contains(&other_file));
    }

    #[test]
    fn temp_names_carry_the_writer_tag() {
        let dir = tempfile::tempdir().unwrap();
        let t = temp_beside(&dir.path().join("x.csv")).unwrap();
        let name = t.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with(&format!(".x.csv.{}-", writer_tag())),
            "{name}"
        );
        assert!(!writer_tag().contains('.'));
    }
}
