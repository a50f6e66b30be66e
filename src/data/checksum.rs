//! SHA-256 of data files and `SHA256SUMS` verification.
//!
//! Owns: hashing files (`sha256_file`), parsing `SHA256SUMS` (`<64 hex>  <relative path>`, the
//! `sha256sum` format), finding the list that covers a dataset directory (in it, else in its
//! parent), and producing the `FileRecord`s that `load` returns: listed files are verified (a
//! mismatch is an error), unlisted files are hashed and recorded unverified.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::DataError;
use super::FileRecord;

/// Name of the checksum list file.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// Hashes `path`, returning the lowercase hex SHA-256 and the number of bytes read.
pub(crate) fn sha256_and_len(path: &Path) -> Result<(String, u64), DataError> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DataError::io(path, e)),
        };
        hasher.update(buf.get(..n).unwrap_or(&[]));
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// The lowercase hex SHA-256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    sha256_and_len(path).map(|(hex, _)| hex)
}

/// A parsed `SHA256SUMS` file: relative path (with `/` separators) to lowercase hex.
#[derive(Debug, Clone, Default)]
pub struct Sums {
    /// The `SHA256SUMS` file itself.
    pub file: PathBuf,
    /// Relative path -> lowercase hex digest.
    pub entries: BTreeMap<String, String>,
}

impl Sums {
    /// Parses a `SHA256SUMS` file. Blank lines and `#` comments are ignored; `*path` (binary
    /// mode marker) and a leading `./` are accepted.
    pub fn read(file: &Path) -> Result<Sums, DataError> {
        let bytes = std::fs::read(file).map_err(|e| DataError::io(file, e))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut entries = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let bad = || DataError::ChecksumList {
                path: file.to_path_buf(),
                line: i + 1,
                found: line.to_string(),
            };
            let (hex, rest) = line.split_once(' ').ok_or_else(bad)?;
            let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'));
            let name = name.unwrap_or(rest).trim_start_matches('*');
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
                return Err(bad());
            }
            let key = normalize(Path::new(name));
            entries.insert(key, hex.to_ascii_lowercase());
        }
        Ok(Sums {
            file: file.to_path_buf(),
            entries,
        })
    }

    /// The directory the entries are relative to.
    pub fn base(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new(""))
    }

    /// The expected digest of `path` (which must lie under `base()`), if listed.
    pub fn lookup(&self, path: &Path) -> Option<&str> {
        let rel = path.strip_prefix(self.base()).ok()?;
        self.entries.get(&normalize(rel)).map(String::as_str)
    }
}

/// A relative path as `a/b/c`, dropping `.` components.
fn normalize(rel: &Path) -> String {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Finds the `SHA256SUMS` that covers `dir`: `dir/SHA256SUMS`, else `dir/../SHA256SUMS`.
pub fn find_sums(dir: &Path) -> Result<Option<Sums>, DataError> {
    let own = dir.join(SUMS_FILE);
    if own.is_file() {
        return Sums::read(&own).map(Some);
    }
    let named = dir
        .components()
        .next_back()
        .is_some_and(|c| matches!(c, Component::Normal(_)));
    if named {
        if let Some(parent) = dir.parent() {
            let up = parent.join(SUMS_FILE);
            if up.is_file() {
                return Sums::read(&up).map(Some);
            }
        }
    }
    Ok(None)
}

/// Hashes `path` and checks it against `sums` if listed there.
pub fn record_file(path: &Path, sums: Option<&Sums>) -> Result<FileRecord, DataError> {
    let (actual, bytes) = sha256_and_len(path)?;
    let mut verified = false;
    if let Some(sums) = sums {
        if let Some(expected) = sums.lookup(path) {
            if expected != actual {
                return Err(DataError::ChecksumMismatch {
                    path: path.to_path_buf(),
                    sums: sums.file.clone(),
                    expected: expected.to_string(),
                    actual,
                });
            }
            verified = true;
        }
    }
    Ok(FileRecord {
        path: path.display().to_string(),
        sha256: actual,
        bytes,
        verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("abc");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(
            sha256_file(&f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(&f, b"").unwrap();
        assert_eq!(
            sha256_file(&f).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parent_sums_verify_and_mismatch() {
        let root = tempfile::tempdir().unwrap();
        let sub = root.path().join("set");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("a"), b"abc").unwrap();
        std::fs::write(sub.join("b"), b"xyz").unwrap();
        std::fs::write(
            root.path().join(SUMS_FILE),
            "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD  ./set/a\n\n\
             0000000000000000000000000000000000000000000000000000000000000000 *set/b\n",
        )
        .unwrap();
        let sums = find_sums(&sub).unwrap().unwrap();
        let rec = record_file(&sub.join("a"), Some(&sums)).unwrap();
        assert!(rec.verified);
        assert_eq!(rec.bytes, 3);
        let err = record_file(&sub.join("b"), Some(&sums)).unwrap_err();
        assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err}");
        std::fs::write(sub.join("c"), b"q").unwrap();
        assert!(!record_file(&sub.join("c"), Some(&sums)).unwrap().verified);
    }

    #[test]
    fn malformed_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SUMS_FILE), "nothex  a\n").unwrap();
        assert!(matches!(
            find_sums(dir.path()).unwrap_err(),
            DataError::ChecksumList { line: 1, .. }
        ));
    }
}
