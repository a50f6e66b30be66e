//! IDX files (the MNIST format): images (magic `0x00000803`) and labels (magic `0x00000801`).
//!
//! Owns: parsing big-endian IDX headers, checking the header's size claims against the real
//! file before allocating, and turning pixels into `f32` in [0,1]. Files may be gzip (detected
//! by the `1f 8b` magic bytes) or raw.

use std::path::Path;

use super::error::DataError;
use super::source::Source;
use super::{ImageSet, NUM_CLASSES};

/// Magic number of an IDX file of unsigned-byte 3-D data (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte 1-D data (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

fn be_u32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

/// Reads an `n`-byte header (n = 8 or 16) and checks the magic; returns the header's u32 words
/// after the magic.
fn read_header<const N: usize>(
    src: &mut Source,
    magic: u32,
    what: &'static str,
) -> Result<[u32; N], DataError> {
    let header_len = 4 * (N as u64 + 1);
    let head = src.read_up_to(header_len)?;
    // Check the magic first when at least 4 bytes are there: a short file of the wrong kind
    // is reported as the wrong kind.
    if let Some(m) = head.get(0..4) {
        let found = be_u32([m[0], m[1], m[2], m[3]]);
        if found != magic {
            return Err(DataError::BadMagic {
                path: src.path().to_path_buf(),
                what,
                expected: magic,
                found,
            });
        }
    }
    if (head.len() as u64) < header_len {
        return Err(DataError::Truncated {
            path: src.path().to_path_buf(),
            expected: format!("an IDX {what} header is {header_len} bytes"),
            found: src.describe_len(head.len() as u64),
        });
    }
    let mut words = [0u32; N];
    for (w, chunk) in words.iter_mut().zip(head.chunks_exact(4).skip(1)) {
        *w = be_u32([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Ok(words)
}

/// Reads exactly `body_len` bytes after the header, then requires end of data.
fn read_body(
    src: &mut Source,
    header_len: u64,
    body_len: u64,
    claim: &str,
) -> Result<Vec<u8>, DataError> {
    let total = header_len.saturating_add(body_len);
    if body_len > src.max_remaining() {
        return Err(DataError::Truncated {
            path: src.path().to_path_buf(),
            expected: format!("{claim} ({total} bytes)"),
            found: src.describe_capacity(),
        });
    }
    let body = src.read_up_to(body_len)?;
    if (body.len() as u64) < body_len {
        return Err(DataError::Truncated {
            path: src.path().to_path_buf(),
            expected: format!("{claim} ({total} bytes)"),
            found: src.describe_len(header_len + body.len() as u64),
        });
    }
    if !src.at_end()? {
        let extra = src.read_rest()?.len() as u64 + 1;
        return Err(DataError::Malformed {
            path: src.path().to_path_buf(),
            detail: format!(
                "{claim} ({total} bytes), but {}",
                src.describe_len(total + extra)
            ),
        });
    }
    Ok(body)
}

/// Loads an IDX image file (magic `0x00000803`, gzip or raw). Returns the pixels scaled to
/// [0,1] (row-major N*1*H*W) and the per-image shape `[1, rows, cols]`; the image count is
/// `pixels.len() / (rows * cols)`.
pub fn load_idx_images(path: &Path) -> Result<(Vec<f32>, [usize; 3]), DataError> {
    let mut src = Source::open(path, "an IDX image file (magic 0x00000803)")?;
    let [count, rows, cols] = read_header::<3>(&mut src, IDX_IMAGES_MAGIC, "images")?;
    if rows == 0 || cols == 0 {
        return Err(DataError::Malformed {
            path: path.to_path_buf(),
            detail: format!(
                "header says images of {rows}x{cols}, expected both dimensions at least 1"
            ),
        });
    }
    let claim = format!("header says {count} images of {rows}x{cols}");
    let body_len = u64::from(count)
        .checked_mul(u64::from(rows))
        .and_then(|v| v.checked_mul(u64::from(cols)))
        .filter(|v| usize::try_from(*v).is_ok())
        .ok_or_else(|| DataError::Malformed {
            path: path.to_path_buf(),
            detail: format!("{claim}, which overflows"),
        })?;
    let body = read_body(&mut src, 16, body_len, &claim)?;
    let pixels = body.iter().map(|&b| super::unit_pixel(b)).collect();
    Ok((pixels, [1, rows as usize, cols as usize]))
}

/// Loads an IDX label file (magic `0x00000801`, gzip or raw). Every label must be a class
/// index below 10.
pub fn load_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut src = Source::open(path, "an IDX label file (magic 0x00000801)")?;
    let [count] = read_header::<1>(&mut src, IDX_LABELS_MAGIC, "labels")?;
    let claim = format!("header says {count} labels");
    let labels = read_body(&mut src, 8, u64::from(count), &claim)?;
    check_labels(path, &labels, "label")?;
    Ok(labels)
}

/// Fails on the first label that is not below `NUM_CLASSES`; `unit` names the position
/// (`label 17`, `record 3`).
pub(crate) fn check_labels(path: &Path, labels: &[u8], unit: &str) -> Result<(), DataError> {
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::from(l) >= NUM_CLASSES)
    {
        return Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            location: format!("{unit} {i}"),
            label: u64::from(l),
            classes: NUM_CLASSES,
        });
    }
    Ok(())
}

/// Loads an IDX image file and its label file; the counts must agree.
pub fn load_idx_pair(images: &Path, labels: &Path) -> Result<ImageSet, DataError> {
    let (pixels, shape) = load_idx_images(images)?;
    let label_vec = load_idx_labels(labels)?;
    let per = shape.iter().product::<usize>().max(1);
    let n_images = pixels.len() / per;
    if n_images != label_vec.len() {
        return Err(DataError::CountMismatch {
            images_path: images.to_path_buf(),
            labels_path: labels.to_path_buf(),
            images: n_images,
            labels: label_vec.len(),
        });
    }
    Ok(ImageSet {
        images: pixels,
        labels: label_vec,
        shape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_bytes(count: u32, rows: u32, cols: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [IDX_IMAGES_MAGIC, count, rows, cols] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn absurd_header_is_rejected_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("huge");
        std::fs::write(&f, images_bytes(u32::MAX, u32::MAX, u32::MAX, &[0; 10])).unwrap();
        let err = load_idx_images(&f).unwrap_err();
        assert!(matches!(err, DataError::Malformed { .. }), "{err}");
        std::fs::write(&f, images_bytes(1 << 30, 1 << 10, 1, &[0; 10])).unwrap();
        let err = load_idx_images(&f).unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("file has 26 bytes"), "{err}");
    }

    #[test]
    fn zero_dims_and_trailing_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("z");
        std::fs::write(&f, images_bytes(1, 0, 3, &[])).unwrap();
        assert!(matches!(
            load_idx_images(&f).unwrap_err(),
            DataError::Malformed { .. }
        ));
        std::fs::write(&f, images_bytes(1, 1, 2, &[1, 2, 3])).unwrap();
        let err = load_idx_images(&f).unwrap_err();
        assert!(matches!(err, DataError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("file has 19 bytes"), "{err}");
        // Zero images is a valid (empty) file.
        std::fs::write(&f, images_bytes(0, 2, 2, &[])).unwrap();
        let (px, shape) = load_idx_images(&f).unwrap();
        assert!(px.is_empty());
        assert_eq!(shape, [1, 2, 2]);
    }

    #[test]
    fn short_header_and_label_range() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("l");
        std::fs::write(&f, [0, 0, 8, 1, 0]).unwrap();
        let err = load_idx_labels(&f).unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }), "{err}");
        let mut v = IDX_LABELS_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&3u32.to_be_bytes());
        v.extend_from_slice(&[1, 9, 10]);
        std::fs::write(&f, &v).unwrap();
        let err = load_idx_labels(&f).unwrap_err();
        assert!(
            matches!(err, DataError::LabelOutOfRange { label: 10, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("label 2"), "{err}");
    }
}
