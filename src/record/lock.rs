//! The per-run lock of a results folder (`locks/<run-id>.lock`): the one process that makes a
//! run holds it while the run trains, so two processes writing to one folder (two shards of a
//! sweep, a `run` beside a sweep, two `run`s by mistake) never make the same run twice or
//! replace each other's run file. `flock(2)` through std: held by the open file, released when
//! it is dropped or the process dies, so a killed process leaves no stale lock.

use crate::record::ResultsDir;

/// An exclusive lock on one run id of a results folder.
pub struct RunLock(#[allow(dead_code)] std::fs::File);

/// The lock file could not be made or locked.
#[derive(Debug, thiserror::Error)]
#[error("lock {path}: {source}")]
pub struct LockError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// Take the lock on `run_id`; `None` when another process holds it.
pub fn try_lock(results: &ResultsDir, run_id: &str) -> Result<Option<RunLock>, LockError> {
    let (f, path) = lock_file(results, run_id)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(RunLock(f))),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(lock_error(&path, e)),
    }
}

/// Take the lock on `run_id`, waiting while another process holds it: for a run this
/// process needs but another may be making now (a fine-tune's pretraining source).
pub fn lock_waiting(results: &ResultsDir, run_id: &str) -> Result<RunLock, LockError> {
    let (f, path) = lock_file(results, run_id)?;
    f.lock().map_err(|e| lock_error(&path, e))?;
    Ok(RunLock(f))
}

fn lock_error(path: &std::path::Path, source: std::io::Error) -> LockError {
    LockError {
        path: path.display().to_string(),
        source,
    }
}

/// `locks/<run-id>.lock`, opened (and made, with its folder, when missing).
fn lock_file(
    results: &ResultsDir,
    run_id: &str,
) -> Result<(std::fs::File, std::path::PathBuf), LockError> {
    let dir = results.root().join("locks");
    let path = dir.join(format!("{run_id}.lock"));
    std::fs::create_dir_all(&dir).map_err(|e| lock_error(&path, e))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| lock_error(&path, e))?;
    Ok((f, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_lock_excludes_a_second_holder_until_dropped() {
        let t = tempfile::tempdir().unwrap();
        let r = ResultsDir::open(t.path()).unwrap();
        let first = try_lock(&r, "a--f32--seed-1--x").unwrap();
        assert!(first.is_some());
        assert!(try_lock(&r, "a--f32--seed-1--x").unwrap().is_none());
        assert!(try_lock(&r, "a--f32--seed-2--x").unwrap().is_some());
        drop(first);
        assert!(try_lock(&r, "a--f32--seed-1--x").unwrap().is_some());
    }

    /// A waiting lock is granted when the holder lets go, not before.
    #[test]
    fn a_waiting_lock_is_granted_when_the_holder_lets_go() {
        let t = tempfile::tempdir().unwrap();
        let r = ResultsDir::open(t.path()).unwrap();
        let held = try_lock(&r, "src--f32--seed-1--x").unwrap().unwrap();
        let root = t.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let r = ResultsDir::open(&root).unwrap();
            let lock = lock_waiting(&r, "src--f32--seed-1--x").unwrap();
            tx.send(()).unwrap();
            drop(lock);
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "granted while held"
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("granted after release");
        waiter.join().unwrap();
    }
}
