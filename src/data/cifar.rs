//! CIFAR-10 binary batches (`cifar-10-batches-bin`).
//!
//! Owns: parsing records of 3073 bytes (1 label byte, then 1024 red, 1024 green, 1024 blue
//! bytes, each plane row-major 32x32) into an `ImageSet` of shape `[3, 32, 32]` scaled by 1/255.
//! Files are raw (as distributed) or gzip, detected by magic bytes.

use std::path::Path;

use super::error::DataError;
use super::idx::check_labels;
use super::source::Source;
use super::ImageSet;

/// Bytes per image in a CIFAR-10 record (3 planes of 32x32).
pub const CIFAR_IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes per CIFAR-10 record (label byte plus image).
pub const CIFAR_RECORD_BYTES: usize = 1 + CIFAR_IMAGE_BYTES;

/// Loads and concatenates CIFAR-10 binary batch files, in the order given. Each file must hold a
/// whole number of 3073-byte records, and every label must be below 10.
pub fn load_cifar_bin(paths: &[&Path]) -> Result<ImageSet, DataError> {
    let mut set = ImageSet {
        images: Vec::new(),
        labels: Vec::new(),
        shape: [3, 32, 32],
    };
    for path in paths {
        let mut src = Source::open(
            path,
            "a CIFAR-10 binary batch (records of 3073 bytes: label, 1024 R, 1024 G, 1024 B)",
        )?;
        let rec = CIFAR_RECORD_BYTES as u64;
        let truncated = |len: u64, src: &Source| DataError::Truncated {
            path: path.to_path_buf(),
            expected: format!(
                "CIFAR-10 records are {rec} bytes, so the size must be a multiple of {rec}"
            ),
            found: format!(
                "{} ({} whole records and {} extra bytes)",
                src.describe_len(len),
                len / rec,
                len % rec
            ),
        };
        // Raw files: check the size before reading anything.
        if !src.is_gzip() && src.file_len() % rec != 0 {
            return Err(truncated(src.file_len(), &src));
        }
        let bytes = src.read_rest()?;
        if bytes.len() % CIFAR_RECORD_BYTES != 0 {
            return Err(truncated(bytes.len() as u64, &src));
        }
        let n = bytes.len() / CIFAR_RECORD_BYTES;
        set.images.reserve(n * CIFAR_IMAGE_BYTES);
        set.labels.reserve(n);
        let first = set.labels.len();
        for record in bytes.chunks_exact(CIFAR_RECORD_BYTES) {
            if let Some((&label, pixels)) = record.split_first() {
                set.labels.push(label);
                set.images
                    .extend(pixels.iter().map(|&b| super::unit_pixel(b)));
            }
        }
        check_labels(path, set.labels.get(first..).unwrap_or(&[]), "record")?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_records_roundtrip_and_bad_label() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.bin");
        let mut bytes = vec![7u8];
        bytes.extend((0..CIFAR_IMAGE_BYTES).map(|i| (i % 256) as u8));
        bytes.push(2);
        bytes.extend(std::iter::repeat_n(255u8, CIFAR_IMAGE_BYTES));
        std::fs::write(&f, &bytes).unwrap();
        let set = load_cifar_bin(&[&f, &f]).unwrap();
        assert_eq!(set.labels, vec![7, 2, 7, 2]);
        assert_eq!(set.shape, [3, 32, 32]);
        assert_eq!(set.images.len(), 4 * CIFAR_IMAGE_BYTES);
        assert_eq!(set.images[1], 1.0 / 255.0);
        assert_eq!(set.images[CIFAR_IMAGE_BYTES], 1.0);
        bytes[0] = 10;
        std::fs::write(&f, &bytes).unwrap();
        let err = load_cifar_bin(&[&f]).unwrap_err();
        assert!(
            matches!(err, DataError::LabelOutOfRange { label: 10, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("record 0"), "{err}");
    }

    #[test]
    fn empty_list_is_empty_set() {
        let set = load_cifar_bin(&[]).unwrap();
        assert!(set.is_empty());
    }
}
