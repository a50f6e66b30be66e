//! Datasets: finding, verifying and loading the real data the benchmark trains on.
//!
//! Owns: the public types (`DatasetKind`, `ImageSet`, `TextSet`, `Loaded`, `FileRecord`,
//! `DatasetBundle`), `load` (which knows each dataset's directory layout and split), and
//! `default_data_dir`. The file formats live in `idx` (MNIST), `digits`, `cifar` and `text`;
//! hashing and `SHA256SUMS` in `checksum`; errors in `error`; file opening and gzip detection in
//! `source`. Nothing here downloads anything: the shipped `data/` folder (see `data/README.md`)
//! or a user's copy of the same format is all that is read.

pub mod checksum;
pub mod cifar;
pub mod digits;
pub mod error;
pub mod idx;
mod source;
pub mod text;
pub mod view;

use std::fmt;
use std::path::{Path, PathBuf};

pub use checksum::{sha256_file, Sums, SUMS_FILE};
pub use cifar::load_cifar_bin;
pub use digits::load_digits_csv;
pub use error::DataError;
pub use idx::{load_idx_images, load_idx_labels, load_idx_pair};
pub use text::load_text;

/// A pixel byte scaled to [0, 1], as every byte-image loader here scales it (and as
/// `engine::prepare` recognises byte images by).
pub fn unit_pixel(b: u8) -> f32 {
    f32::from(b) / 255.0
}

/// Number of classes of every image dataset here.
pub const NUM_CLASSES: usize = 10;

/// Environment variable that overrides the data folder.
pub const DATA_ENV: &str = "JOULEBENCH_DATA";

/// Which dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    Mnist,
    Digits,
    Cifar10,
    /// Jane Austen's six novels, character vocabulary of the file.
    Text,
    /// Fashion-MNIST: the MNIST layout and format, clothing classes.
    FashionMnist,
    /// The 43 Shakespeare works, byte vocabulary (256).
    Shakespeare,
}

impl DatasetKind {
    /// Every kind, in a fixed order.
    pub const ALL: [DatasetKind; 6] = [
        DatasetKind::Mnist,
        DatasetKind::Digits,
        DatasetKind::Cifar10,
        DatasetKind::Text,
        DatasetKind::FashionMnist,
        DatasetKind::Shakespeare,
    ];

    /// The name used on the command line, in serialized records and as the subfolder of the
    /// data folder: `mnist`, `digits`, `cifar10`, `text`, `fashion-mnist`, `shakespeare`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::Digits => "digits",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Text => "text",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Shakespeare => "shakespeare",
        }
    }

    /// True for the text corpora (token models, `text_part` views).
    pub fn is_text(&self) -> bool {
        matches!(self, DatasetKind::Text | DatasetKind::Shakespeare)
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Images scaled to [0,1], row-major N*C*H*W.
#[derive(Clone, PartialEq)]
pub struct ImageSet {
    /// `len() * sample_len()` values in [0,1].
    pub images: Vec<f32>,
    /// One class index (< 10) per image.
    pub labels: Vec<u8>,
    /// Per-image shape: channels, height, width.
    pub shape: [usize; 3],
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image: C*H*W.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Shows sizes only, never the pixels.
impl fmt::Debug for ImageSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageSet")
            .field("len", &self.len())
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// Character corpus: vocab is the sorted set of distinct chars of the WHOLE file (or, for a
/// byte-level corpus, the 256 byte values as chars U+0000..U+00FF); train is the first 90 % of
/// chars (bytes), test the last 10 %, both as indices into vocab.
#[derive(Clone, PartialEq, Eq)]
pub struct TextSet {
    pub vocab: Vec<char>,
    pub train: Vec<u32>,
    pub test: Vec<u32>,
}

/// Shows sizes only, never the text.
impl fmt::Debug for TextSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextSet")
            .field("vocab", &self.vocab.len())
            .field("train", &self.train.len())
            .field("test", &self.test.len())
            .finish()
    }
}

/// What a dataset loads into.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    Images {
        train: ImageSet,
        test: ImageSet,
        classes: usize,
    },
    Text(TextSet),
}

/// One file `load` read: where, its SHA-256, size, and whether a `SHA256SUMS` entry vouched
/// for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    /// The path as given to the loader (the dataset directory joined with the file name).
    pub path: String,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// File size in bytes.
    pub bytes: u64,
    /// True iff the file matched a `SHA256SUMS` entry.
    pub verified: bool,
}

/// A loaded dataset with where it came from.
#[derive(Debug, Clone)]
pub struct DatasetBundle {
    pub kind: DatasetKind,
    /// The directory the files were read from.
    pub dir: PathBuf,
    pub data: Loaded,
    /// Every file read, in reading order.
    pub files: Vec<FileRecord>,
}

/// `$JOULEBENCH_DATA` if set (and not empty), else `<CARGO_MANIFEST_DIR>/data` (the folder this
/// crate ships, fixed at compile time) if it exists, else `./data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(v) = std::env::var_os(DATA_ENV) {
        if !v.is_empty() {
            return PathBuf::from(v);
        }
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    if shipped.is_dir() {
        shipped
    } else {
        PathBuf::from("data")
    }
}

/// The files of the MNIST layout, without the optional `.gz`.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// The files of the `cifar-10-batches-bin` layout: five training batches, then the test batch.
pub const CIFAR_FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// Digits file names, preferred first.
pub const DIGITS_FILES: [&str; 2] = ["digits.csv.gz", "digits.csv"];

/// Loads a dataset.
///
/// `dir = None` means the shipped folder `default_data_dir()` joined with the kind's subfolder
/// (mnist/, digits/, text/, cifar10/). `dir = Some(d)` means a user's copy of the same format:
/// `d` contains the files directly. Every file is hashed; if `d` or its parent has a
/// `SHA256SUMS` listing the file, it must match.
pub fn load(kind: DatasetKind, dir: Option<&Path>) -> Result<DatasetBundle, DataError> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => default_data_dir().join(kind.as_str()),
    };
    let sums = checksum::find_sums(&dir)?;
    let sums = sums.as_ref();
    let mut files = Vec::new();
    let data = match kind {
        DatasetKind::Mnist | DatasetKind::FashionMnist => {
            let paths = mnist_paths(&dir)?;
            for p in &paths {
                files.push(checksum::record_file(p, sums)?);
            }
            let [tri, trl, tei, tel] = &paths;
            Loaded::Images {
                train: load_idx_pair(tri, trl)?,
                test: load_idx_pair(tei, tel)?,
                classes: NUM_CLASSES,
            }
        }
        DatasetKind::Digits => {
            let path = DIGITS_FILES
                .iter()
                .map(|f| dir.join(f))
                .find(|p| p.is_file())
                .ok_or_else(|| DataError::Missing {
                    path: dir.join(DIGITS_FILES[0]),
                    expected: format!(
                        "the digits layout expects digits.csv.gz or digits.csv in {}",
                        dir.display()
                    ),
                })?;
            files.push(checksum::record_file(&path, sums)?);
            let (train, test) = digits::split_digits(load_digits_csv(&path)?);
            Loaded::Images {
                train,
                test,
                classes: NUM_CLASSES,
            }
        }
        DatasetKind::Cifar10 => {
            let paths = cifar_paths(&dir)?;
            for p in &paths {
                files.push(checksum::record_file(p, sums)?);
            }
            let (train_paths, test_paths) = paths.split_at(5);
            let train_refs: Vec<&Path> = train_paths.iter().map(PathBuf::as_path).collect();
            let test_refs: Vec<&Path> = test_paths.iter().map(PathBuf::as_path).collect();
            Loaded::Images {
                train: load_cifar_bin(&train_refs)?,
                test: load_cifar_bin(&test_refs)?,
                classes: NUM_CLASSES,
            }
        }
        DatasetKind::Text => {
            let path = text::find_text_file(&dir)?;
            files.push(checksum::record_file(&path, sums)?);
            let set = TextSet::from_text(&load_text(&path)?);
            if set.test.is_empty() {
                return Err(DataError::Malformed {
                    path,
                    detail: format!(
                        "text has {} characters, expected at least 10 so the 10 % test split is not empty",
                        set.train.len()
                    ),
                });
            }
            Loaded::Text(set)
        }
        DatasetKind::Shakespeare => {
            let path = text::find_corpus_file(&dir, text::SHAKESPEARE_FILES)?;
            files.push(checksum::record_file(&path, sums)?);
            let set = TextSet::from_bytes(&text::load_bytes(&path)?);
            if set.test.is_empty() {
                return Err(DataError::Malformed {
                    path,
                    detail: format!(
                        "text has {} bytes, expected at least 10 so the 10 % test split is not empty",
                        set.train.len()
                    ),
                });
            }
            Loaded::Text(set)
        }
    };
    if let Loaded::Images { train, test, .. } = &data {
        if train.shape != test.shape {
            // The first file read holds training images, the last test images (mnist: train
            // images, train labels, test images, test labels; cifar: 5 training batches, then
            // the test batch); digits has one file for both.
            let test_file = match kind {
                DatasetKind::Mnist | DatasetKind::FashionMnist => files.get(2),
                _ => files.last(),
            };
            let path_of =
                |f: Option<&FileRecord>| f.map_or_else(|| dir.clone(), |f| PathBuf::from(&f.path));
            return Err(DataError::ShapeMismatch {
                train_path: path_of(files.first()),
                test_path: path_of(test_file),
                train: shape_text(train.shape),
                test: shape_text(test.shape),
            });
        }
    }
    Ok(DatasetBundle {
        kind,
        dir,
        data,
        files,
    })
}

/// An image shape as a person writes it: `28x28` for one channel, `3x32x32` otherwise.
pub fn shape_text([c, h, w]: [usize; 3]) -> String {
    if c == 1 {
        format!("{h}x{w}")
    } else {
        format!("{c}x{h}x{w}")
    }
}

fn mnist_paths(dir: &Path) -> Result<[PathBuf; 4], DataError> {
    let mut out: [PathBuf; 4] = Default::default();
    for (slot, name) in out.iter_mut().zip(MNIST_FILES) {
        let gz = dir.join(format!("{name}.gz"));
        let raw = dir.join(name);
        *slot = if gz.is_file() {
            gz
        } else if raw.is_file() {
            raw
        } else {
            return Err(DataError::Missing {
                path: gz,
                expected: format!(
                    "the mnist layout expects {} (each optionally .gz) in {}",
                    MNIST_FILES.join(", "),
                    dir.display()
                ),
            });
        };
    }
    Ok(out)
}

fn cifar_paths(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let paths: Vec<PathBuf> = CIFAR_FILES.iter().map(|f| dir.join(f)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
        let sample = if dir.join("test_batch_first20.bin").is_file() {
            " (test_batch_first20.bin is a 20-image sample for tests, not a full dataset; \
             point --data-dir at a real cifar-10-batches-bin folder)"
        } else {
            ""
        };
        return Err(DataError::Missing {
            path: missing.clone(),
            expected: format!(
                "the cifar10 layout (cifar-10-batches-bin) expects {} in {}{sample}",
                CIFAR_FILES.join(", "),
                dir.display()
            ),
        });
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_agree_everywhere() {
        for k in DatasetKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            let back: DatasetKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, k);
            assert_eq!(k.to_string(), k.as_str());
        }
    }

    #[test]
    fn image_set_sizes() {
        let s = ImageSet {
            images: vec![0.0; 2 * 3 * 4 * 5],
            labels: vec![1, 2],
            shape: [3, 4, 5],
        };
        assert_eq!(s.len(), 2);
        assert!(!s.is_empty());
        assert_eq!(s.sample_len(), 60);
        assert_eq!(
            format!("{s:?}"),
            "ImageSet { len: 2, shape: [3, 4, 5], .. }"
        );
    }

    #[test]
    fn missing_layout_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(DatasetKind::Mnist, Some(dir.path())).unwrap_err();
        assert!(matches!(err, DataError::Missing { .. }));
        let msg = err.to_string();
        assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
        assert!(msg.contains("t10k-labels-idx1-ubyte"), "{msg}");
        let err = load(DatasetKind::Digits, Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("digits.csv.gz or digits.csv"));
    }

    /// An IDX images file (magic 0x803) of `n` images of `rows` x `cols`, and its labels.
    fn write_idx_pair(dir: &Path, prefix: &str, n: u32, rows: u32, cols: u32) {
        let mut img = Vec::new();
        for v in [0x803, n, rows, cols] {
            img.extend_from_slice(&u32::to_be_bytes(v));
        }
        img.extend(std::iter::repeat_n(7u8, (n * rows * cols) as usize));
        let kind = if prefix == "train" { "train" } else { "t10k" };
        std::fs::write(dir.join(format!("{kind}-images-idx3-ubyte")), img).unwrap();
        let mut lab = Vec::new();
        for v in [0x801, n] {
            lab.extend_from_slice(&u32::to_be_bytes(v));
        }
        lab.extend((0..n).map(|i| (i % 10) as u8));
        std::fs::write(dir.join(format!("{kind}-labels-idx1-ubyte")), lab).unwrap();
    }

    #[test]
    fn train_and_test_images_of_different_shapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_pair(dir.path(), "train", 4, 28, 28);
        write_idx_pair(dir.path(), "test", 3, 20, 20);
        let err = load(DatasetKind::Mnist, Some(dir.path())).unwrap_err();
        assert!(matches!(err, DataError::ShapeMismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(!msg.contains('\n'));
        for needle in [
            "train-images-idx3-ubyte",
            "t10k-images-idx3-ubyte",
            "28x28",
            "20x20",
        ] {
            assert!(msg.contains(needle), "{needle} not in {msg}");
        }
        // One shape loads.
        write_idx_pair(dir.path(), "test", 3, 28, 28);
        load(DatasetKind::FashionMnist, Some(dir.path())).unwrap();
        assert_eq!(shape_text([3, 32, 32]), "3x32x32");
    }

    #[test]
    fn shipped_cifar_sample_is_not_a_full_dataset() {
        let err = load(
            DatasetKind::Cifar10,
            Some(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/cifar10")),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Missing { .. }));
        assert!(msg.contains("data_batch_1.bin"), "{msg}");
        assert!(msg.contains("test_batch.bin"), "{msg}");
        assert!(msg.contains("not a full dataset"), "{msg}");
        assert!(!msg.contains('\n'));
    }
}
