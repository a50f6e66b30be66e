//! Character-level text corpora.
//!
//! Owns: reading a UTF-8 text file (`load_text`), building a `TextSet` (sorted vocabulary of
//! the whole file's distinct chars, first 90 % of chars train, last 10 % test), and finding the
//! corpus file in a directory (`austen.txt`, else the single `*.txt`).

use std::path::{Path, PathBuf};

use super::error::DataError;
use super::source::Source;
use super::TextSet;

/// The corpus file name `load` prefers in a text directory.
pub const TEXT_FILE: &str = "austen.txt";

/// The Shakespeare corpus files, preferred first (gzip, or the plain text).
pub const SHAKESPEARE_FILES: &[&str] = &["shakespeare.txt.gz", "shakespeare.txt"];

/// Reads a whole file (raw or gzip) as bytes: a byte-level corpus needs no decoding.
pub fn load_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    Source::open(path, "a text file")?.read_rest()
}

/// The first of `names` that exists in `dir`, or an error naming them all.
pub fn find_corpus_file(dir: &Path, names: &[&str]) -> Result<PathBuf, DataError> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::Missing {
            path: dir.join(names.first().copied().unwrap_or("")),
            expected: format!(
                "the corpus layout expects {} in {}",
                names.join(" or "),
                dir.display()
            ),
        })
}

/// Reads a UTF-8 text file (raw or gzip). Invalid UTF-8 is an error giving the byte offset.
pub fn load_text(path: &Path) -> Result<String, DataError> {
    let mut src = Source::open(path, "a UTF-8 text file")?;
    let bytes = src.read_rest()?;
    String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Number of training characters for a corpus of `n` chars: floor(0.9 n), without overflow.
pub fn text_train_len(n: usize) -> usize {
    n / 10 * 9 + (n % 10) * 9 / 10
}

impl TextSet {
    /// Builds the vocabulary (sorted distinct chars of all of `text`) and the 90/10 split.
    pub fn from_text(text: &str) -> TextSet {
        let mut ascii_seen = [false; 128];
        let mut other = std::collections::BTreeSet::new();
        for c in text.chars() {
            match ascii_seen.get_mut(c as usize) {
                Some(seen) => *seen = true,
                None => {
                    other.insert(c);
                }
            }
        }
        let mut vocab: Vec<char> = (0u8..128)
            .filter(|&b| ascii_seen.get(usize::from(b)).copied().unwrap_or(false))
            .map(char::from)
            .collect();
        vocab.extend(other);
        let mut ascii_index = [0u32; 128];
        for (i, &c) in vocab.iter().enumerate() {
            if let Some(slot) = ascii_index.get_mut(c as usize) {
                *slot = i as u32;
            }
        }
        let index = |c: char| -> u32 {
            match ascii_index.get(c as usize) {
                Some(&i) => i,
                None => vocab.binary_search(&c).map_or(0, |i| i as u32),
            }
        };
        let ids: Vec<u32> = text.chars().map(index).collect();
        let n_train = text_train_len(ids.len());
        let (train, test) = ids.split_at(n_train.min(ids.len()));
        TextSet {
            train: train.to_vec(),
            test: test.to_vec(),
            vocab,
        }
    }

    /// A byte-level corpus: vocabulary the 256 byte values (as chars U+0000..U+00FF, whether or
    /// not they occur, so a checkpoint transfers between byte corpora), ids the bytes, first
    /// floor(0.9 n) bytes train.
    pub fn from_bytes(bytes: &[u8]) -> TextSet {
        let ids: Vec<u32> = bytes.iter().map(|&b| u32::from(b)).collect();
        let n_train = text_train_len(ids.len());
        let (train, test) = ids.split_at(n_train.min(ids.len()));
        TextSet {
            train: train.to_vec(),
            test: test.to_vec(),
            vocab: (0u8..=255).map(char::from).collect(),
        }
    }

    /// True for a byte-level vocabulary (the 256 byte values in order).
    pub fn is_byte_level(&self) -> bool {
        self.vocab.len() == 256 && self.vocab.iter().enumerate().all(|(i, &c)| c as usize == i)
    }

    /// Turns indices back into text (indices outside the vocabulary are skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .filter_map(|&i| self.vocab.get(i as usize))
            .collect()
    }
}

/// Finds the corpus in `dir`: `austen.txt` if present, else the only `*.txt` file.
pub fn find_text_file(dir: &Path) -> Result<PathBuf, DataError> {
    let preferred = dir.join(TEXT_FILE);
    if preferred.is_file() {
        return Ok(preferred);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: dir.to_path_buf(),
                expected: format!(
                    "the text layout expects a directory holding {TEXT_FILE} or exactly one *.txt file"
                ),
            }
        } else {
            DataError::io(dir, e)
        }
    })?;
    let mut found: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let is_txt = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
        if is_txt && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    match found.len() {
        0 => Err(DataError::NoTextFile {
            dir: dir.to_path_buf(),
        }),
        1 => Ok(found.swap_remove(0)),
        count => Err(DataError::AmbiguousTextFile {
            dir: dir.to_path_buf(),
            count,
            names: found
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_and_split() {
        let t = TextSet::from_text("hello wörld, hello!!");
        let mut expected: Vec<char> = "hello wörld, hello!!".chars().collect();
        expected.sort();
        expected.dedup();
        assert_eq!(t.vocab, expected);
        assert_eq!(t.train.len() + t.test.len(), 20);
        assert_eq!(t.train.len(), 18);
        let all: Vec<u32> = t.train.iter().chain(&t.test).copied().collect();
        assert_eq!(t.decode(&all), "hello wörld, hello!!");
    }

    #[test]
    fn byte_corpus_has_all_256_ids() {
        let t = TextSet::from_bytes(b"abcabcabcX");
        assert_eq!(t.vocab.len(), 256);
        assert_eq!(t.train, vec![97, 98, 99, 97, 98, 99, 97, 98, 99]);
        assert_eq!(t.test, vec![88]);
        assert_eq!(t.decode(&t.test), "X");
    }

    #[test]
    fn train_len_is_floor_of_ninety_percent() {
        for n in [0usize, 1, 9, 10, 11, 19, 4_025_028, usize::MAX] {
            let exact = (n as u128 * 9 / 10) as usize;
            assert_eq!(text_train_len(n), exact, "n={n}");
        }
    }

    #[test]
    fn non_utf8_reports_offset() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.txt");
        std::fs::write(&f, b"abc\xffdef").unwrap();
        let err = load_text(&f).unwrap_err();
        assert!(matches!(err, DataError::NotUtf8 { offset: 3, .. }), "{err}");
    }

    #[test]
    fn finding_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            find_text_file(dir.path()).unwrap_err(),
            DataError::NoTextFile { .. }
        ));
        std::fs::write(dir.path().join("a.txt"), "x").unwrap();
        assert_eq!(
            find_text_file(dir.path()).unwrap(),
            dir.path().join("a.txt")
        );
        std::fs::write(dir.path().join("b.txt"), "y").unwrap();
        let err = find_text_file(dir.path()).unwrap_err();
        assert!(matches!(err, DataError::AmbiguousTextFile { count: 2, .. }));
        assert!(err.to_string().contains("a.txt, b.txt"), "{err}");
        std::fs::write(dir.path().join(TEXT_FILE), "z").unwrap();
        assert_eq!(
            find_text_file(dir.path()).unwrap(),
            dir.path().join(TEXT_FILE)
        );
    }
}
