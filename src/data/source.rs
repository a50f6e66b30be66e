//! Opening data files: gzip detection by magic bytes and bounded reads.
//!
//! Owns: `Source`, the one way the loaders read a file. A file whose first two bytes are
//! `1f 8b` is decompressed (whatever its extension), anything else is read raw. Reads are
//! bounded by what the caller asks for, so a lying header cannot make us allocate more than the
//! file can actually hold, and read errors are mapped to `DataError` (decoder failures become
//! `CorruptGzip`).

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::error::DataError;

/// Upper bound on the deflate compression ratio (the format cannot exceed about 1032:1).
const MAX_GZIP_RATIO: u64 = 1032;
/// Largest single up-front allocation a read makes; beyond it the buffer grows as data arrives.
const MAX_PREALLOC: u64 = 64 << 20;

/// An open data file, decompressed on the fly if it is gzip.
pub(crate) struct Source {
    path: PathBuf,
    reader: Box<dyn Read>,
    gz: bool,
    file_len: u64,
    consumed: u64,
}

impl Source {
    /// Opens `path`; `expected` says what the file should be (used if it does not exist).
    pub(crate) fn open(path: &Path, expected: &str) -> Result<Self, DataError> {
        let mut file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::Missing {
                    path: path.to_path_buf(),
                    expected: format!("expected {expected}"),
                }
            } else {
                DataError::io(path, e)
            }
        })?;
        let meta = file.metadata().map_err(|e| DataError::io(path, e))?;
        if meta.is_dir() {
            return Err(DataError::Malformed {
                path: path.to_path_buf(),
                detail: format!("is a directory, expected {expected}"),
            });
        }
        let file_len = meta.len();
        let mut magic = Vec::with_capacity(2);
        (&mut file)
            .take(2)
            .read_to_end(&mut magic)
            .map_err(|e| DataError::io(path, e))?;
        let gz = magic == [0x1f, 0x8b];
        let raw = Cursor::new(magic).chain(file);
        let reader: Box<dyn Read> = if gz {
            Box::new(MultiGzDecoder::new(raw))
        } else {
            Box::new(raw)
        };
        Ok(Source {
            path: path.to_path_buf(),
            reader,
            gz,
            file_len,
            consumed: 0,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file on disk (compressed size for gzip).
    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Whether the file is gzip-compressed.
    pub(crate) fn is_gzip(&self) -> bool {
        self.gz
    }

    /// The most (decompressed) bytes the rest of the file can possibly hold.
    pub(crate) fn max_remaining(&self) -> u64 {
        if self.gz {
            self.file_len
                .saturating_mul(MAX_GZIP_RATIO)
                .saturating_add(1 << 16)
                .saturating_sub(self.consumed)
        } else {
            self.file_len.saturating_sub(self.consumed)
        }
    }

    /// Describes `total` content bytes for an error message: `file has N bytes` or
    /// `decompressed data has N bytes`.
    pub(crate) fn describe_len(&self, total: u64) -> String {
        if self.gz {
            format!("decompressed data has {total} bytes")
        } else {
            format!("file has {total} bytes")
        }
    }

    /// Explains why `needed` more bytes cannot be there, for a `Truncated` error raised before
    /// reading (so nothing absurd is allocated).
    pub(crate) fn describe_capacity(&self) -> String {
        if self.gz {
            format!(
                "gzip file has {} bytes and cannot decompress to that many",
                self.file_len
            )
        } else {
            format!("file has {} bytes", self.file_len)
        }
    }

    fn map_err(&self, e: std::io::Error) -> DataError {
        if self.gz {
            DataError::CorruptGzip {
                path: self.path.clone(),
                detail: e.to_string(),
            }
        } else {
            DataError::io(&self.path, e)
        }
    }

    /// Reads at most `n` bytes; fewer only at end of data.
    pub(crate) fn read_up_to(&mut self, n: u64) -> Result<Vec<u8>, DataError> {
        let mut buf = Vec::with_capacity(usize::try_from(n.min(MAX_PREALLOC)).unwrap_or(0));
        let got = (&mut self.reader).take(n).read_to_end(&mut buf);
        match got {
            Ok(k) => {
                self.consumed = self.consumed.saturating_add(k as u64);
                Ok(buf)
            }
            Err(e) => Err(self.map_err(e)),
        }
    }

    /// Reads everything that is left, refusing more than `max_remaining()` bytes.
    pub(crate) fn read_rest(&mut self) -> Result<Vec<u8>, DataError> {
        let limit = self.max_remaining();
        let buf = self.read_up_to(limit)?;
        if !self.at_end()? {
            return Err(DataError::CorruptGzip {
                path: self.path.clone(),
                detail: format!(
                    "decompresses to more than {} bytes, beyond any valid gzip of {} bytes",
                    limit, self.file_len
                ),
            });
        }
        Ok(buf)
    }

    /// True if no data is left (reads one byte to find out, and also drives the gzip decoder to
    /// check its trailer).
    pub(crate) fn at_end(&mut self) -> Result<bool, DataError> {
        Ok(self.read_up_to(1)?.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn detects_gzip_by_magic_not_extension() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("plain.gz");
        let b = dir.path().join("packed.bin");
        std::fs::write(&a, b"hello").unwrap();
        std::fs::write(&b, gz(b"hello")).unwrap();
        let mut sa = Source::open(&a, "x").unwrap();
        let mut sb = Source::open(&b, "x").unwrap();
        assert!(!sa.is_gzip());
        assert!(sb.is_gzip());
        assert_eq!(sa.read_rest().unwrap(), b"hello");
        assert_eq!(sb.read_rest().unwrap(), b"hello");
    }

    #[test]
    fn truncated_gzip_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let packed = gz(&data);
        let f = dir.path().join("cut.gz");
        std::fs::write(&f, &packed[..packed.len() / 2]).unwrap();
        let err = Source::open(&f, "x").unwrap().read_rest().unwrap_err();
        assert!(matches!(err, DataError::CorruptGzip { .. }), "{err}");
    }

    #[test]
    fn tiny_files_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("one");
        std::fs::write(&f, [0x1f]).unwrap();
        let mut s = Source::open(&f, "x").unwrap();
        assert!(!s.is_gzip());
        assert_eq!(s.read_rest().unwrap(), vec![0x1f]);
        let err = Source::open(&dir.path().join("nope"), "an IDX file")
            .err()
            .unwrap();
        assert!(matches!(err, DataError::Missing { .. }));
        assert!(err.to_string().contains("expected an IDX file"));
    }
}
