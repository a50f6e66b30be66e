//! `DataError`: every way loading a dataset can fail.
//!
//! Owns: the error enum of the `data` module. Every variant names the file (or directory) it is
//! about and what was expected, and its `Display` is exactly one line, so it can go straight into
//! a log line or a run record. Values copied from file content are shown with `{:?}` so control
//! characters cannot break the line.

use std::fmt;
use std::path::{Path, PathBuf};

/// Shows a path on one line: newlines and other control characters are escaped.
pub(crate) struct OneLine<'a>(pub &'a Path);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.to_string_lossy();
        if s.chars().any(char::is_control) {
            write!(f, "{}", s.escape_debug())
        } else {
            f.write_str(&s)
        }
    }
}

fn p(path: &Path) -> OneLine<'_> {
    OneLine(path)
}

/// Why a dataset could not be loaded. `Display` is one line that starts with the path.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file the layout (or the caller) needs does not exist.
    #[error("data file {}: not found; {expected}", p(path))]
    Missing { path: PathBuf, expected: String },

    /// The file exists but could not be read (permissions, I/O error).
    #[error("data file {}: cannot read: {}", p(path), one_line(&source.to_string()))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file (or its decompressed content) is shorter than its header or format says.
    #[error("data file {}: truncated: {expected}, {found}", p(path))]
    Truncated {
        path: PathBuf,
        /// e.g. `header says 60000 images of 28x28 (47040016 bytes)`.
        expected: String,
        /// e.g. `file has 1000 bytes`.
        found: String,
    },

    /// The first four bytes are not the expected magic number.
    #[error(
        "data file {}: bad magic: expected {expected:#010x} ({what}), found {found:#010x}",
        p(path)
    )]
    BadMagic {
        path: PathBuf,
        what: &'static str,
        expected: u32,
        found: u32,
    },

    /// The file starts with the gzip magic bytes but does not decompress.
    #[error("data file {}: corrupt gzip: {}", p(path), one_line(detail))]
    CorruptGzip { path: PathBuf, detail: String },

    /// The file's SHA-256 differs from the entry in a `SHA256SUMS` file.
    #[error(
        "data file {}: checksum mismatch: {} lists sha256 {expected}, actual {actual}",
        p(path),
        p(sums)
    )]
    ChecksumMismatch {
        path: PathBuf,
        sums: PathBuf,
        expected: String,
        actual: String,
    },

    /// A `SHA256SUMS` line is not `<64 hex digits>  <relative path>`.
    #[error(
        "data file {}: line {line}: expected `<64 hex digits>  <relative path>`, found {}",
        p(path),
        crate::base::csvline::excerpt(found)
    )]
    ChecksumList {
        path: PathBuf,
        line: usize,
        found: String,
    },

    /// A CSV field is not what the format needs (1-based line and column). The field is quoted
    /// as an excerpt (`carbon::csvline::excerpt`): a garbage line of any length stays one short
    /// line.
    #[error(
        "data file {}: CSV parse error at line {line}, column {column}: found {}, expected {expected}",
        p(path),
        crate::base::csvline::excerpt(value)
    )]
    Csv {
        path: PathBuf,
        line: usize,
        column: usize,
        value: String,
        expected: String,
    },

    /// A label is not a valid class index.
    #[error(
        "data file {}: label {label} at {location} out of range: expected 0..={}",
        p(path),
        classes.saturating_sub(1)
    )]
    LabelOutOfRange {
        path: PathBuf,
        /// e.g. `label 17`, `line 5`, `record 3`.
        location: String,
        label: u64,
        classes: usize,
    },

    /// An image file and its label file disagree on the number of samples.
    #[error(
        "data file {}: count mismatch: {images} images, but {} has {labels} labels",
        p(images_path),
        p(labels_path)
    )]
    CountMismatch {
        images_path: PathBuf,
        labels_path: PathBuf,
        images: usize,
        labels: usize,
    },

    /// The train and the test images of one dataset have different shapes.
    #[error(
        "data file {}: shape mismatch: its training images are {train}, but the test images of {} are {test}; both splits must have one shape",
        p(train_path),
        p(test_path)
    )]
    ShapeMismatch {
        train_path: PathBuf,
        test_path: PathBuf,
        /// e.g. `28x28`, `3x32x32`.
        train: String,
        test: String,
    },

    /// The dataset loads but is too small for the task that would train on it (fewer training
    /// samples than one batch, no test sample, a text shorter than one window).
    #[error("data {what} {}: too small for task {task}: {detail}", p(path))]
    TooSmall {
        /// `file` or `directory`.
        what: &'static str,
        path: PathBuf,
        task: String,
        detail: String,
    },

    /// A text corpus is not valid UTF-8.
    #[error(
        "data file {}: not UTF-8 text: invalid byte sequence at byte offset {offset}",
        p(path)
    )]
    NotUtf8 { path: PathBuf, offset: usize },

    /// A text directory holds no usable `.txt` file.
    #[error(
        "data directory {}: no text file: expected austen.txt or exactly one *.txt file",
        p(dir)
    )]
    NoTextFile { dir: PathBuf },

    /// A text directory holds several `.txt` files and no `austen.txt`.
    #[error(
        "data directory {}: ambiguous text file: {count} *.txt files ({}), expected austen.txt or exactly one",
        p(dir),
        one_line(names)
    )]
    AmbiguousTextFile {
        dir: PathBuf,
        count: usize,
        names: String,
    },

    /// The file is readable but its structure is wrong in a way not covered above
    /// (absurd or overflowing header dimensions, trailing bytes, empty corpus).
    #[error("data file {}: malformed: {}", p(path), one_line(detail))]
    Malformed { path: PathBuf, detail: String },
}

/// Replaces line breaks (and other control characters) so a message stays on one line.
fn one_line(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.escape_debug().to_string()
    } else {
        s.to_string()
    }
}

impl DataError {
    /// The file or directory the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DataError::Missing { path, .. }
            | DataError::Io { path, .. }
            | DataError::Truncated { path, .. }
            | DataError::BadMagic { path, .. }
            | DataError::CorruptGzip { path, .. }
            | DataError::ChecksumMismatch { path, .. }
            | DataError::ChecksumList { path, .. }
            | DataError::Csv { path, .. }
            | DataError::LabelOutOfRange { path, .. }
            | DataError::NotUtf8 { path, .. }
            | DataError::Malformed { path, .. }
            | DataError::TooSmall { path, .. } => path,
            DataError::CountMismatch { images_path, .. } => images_path,
            DataError::ShapeMismatch { train_path, .. } => train_path,
            DataError::NoTextFile { dir } | DataError::AmbiguousTextFile { dir, .. } => dir,
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_path_buf(),
                expected: "the file does not exist".to_string(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_name_the_path() {
        let path = PathBuf::from("data/mnist/train-images-idx3-ubyte.gz");
        let errors = [
            DataError::Truncated {
                path: path.clone(),
                expected: "header says 60000 images of 28x28 (47040016 bytes)".into(),
                found: "file has 1000 bytes".into(),
            },
            DataError::BadMagic {
                path: path.clone(),
                what: "IDX images",
                expected: 0x803,
                found: 0x801,
            },
            DataError::CorruptGzip {
                path: path.clone(),
                detail: "bad\nthing".into(),
            },
            DataError::Csv {
                path: path.clone(),
                line: 3,
                column: 7,
                value: "x\ny".into(),
                expected: "an integer 0..=16".into(),
            },
            DataError::Io {
                path: PathBuf::from("weird\nname"),
                source: std::io::Error::other("multi\nline"),
            },
        ];
        for e in &errors {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            assert!(msg.contains("data file "), "{msg}");
        }
        assert_eq!(
            errors[0].to_string(),
            "data file data/mnist/train-images-idx3-ubyte.gz: truncated: header says 60000 images \
             of 28x28 (47040016 bytes), file has 1000 bytes"
        );
        assert_eq!(
            errors[1].to_string(),
            "data file data/mnist/train-images-idx3-ubyte.gz: bad magic: expected 0x00000803 \
             (IDX images), found 0x00000801"
        );
        assert_eq!(errors[0].path(), path.as_path());
    }

    #[test]
    fn quoted_file_content_is_an_excerpt() {
        let huge = "7".repeat(20_000_000);
        for e in [
            DataError::Csv {
                path: "d/digits.csv".into(),
                line: 2,
                column: 1,
                value: huge.clone(),
                expected: "an integer 0..=16".into(),
            },
            DataError::ChecksumList {
                path: "d/SHA256SUMS".into(),
                line: 1,
                found: huge.clone(),
            },
        ] {
            let msg = e.to_string();
            assert!(msg.len() < 400, "{} bytes", msg.len());
            assert!(msg.contains("... (20000000 bytes)"), "{msg}");
        }
    }

    #[test]
    fn not_found_maps_to_missing() {
        let e = DataError::io(
            Path::new("x/y.bin"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert!(matches!(e, DataError::Missing { .. }));
        assert!(e.to_string().starts_with("data file x/y.bin: not found"));
    }
}
