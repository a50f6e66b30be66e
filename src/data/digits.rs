//! The UCI optical digits CSV (the 8x8 set bundled with scikit-learn).
//!
//! Owns: parsing `digits.csv[.gz]`: no header, one sample per line, 64 integer pixels in 0..=16
//! then the label 0..=9. Pixels are scaled by 1/16 into [0,1]; shape `[1, 8, 8]`. Also the
//! deterministic train/test split used by `load` (sample i is test iff i % 5 == 4).

use std::path::Path;

use super::error::DataError;
use super::source::Source;
use super::{ImageSet, NUM_CLASSES};

/// Pixels per digits sample (8x8).
pub const DIGITS_PIXELS: usize = 64;
/// Largest pixel value in the digits CSV.
pub const DIGITS_MAX_PIXEL: u8 = 16;

/// Loads the digits CSV (gzip or plain, detected by magic bytes). Blank lines are skipped;
/// anything else that is not 65 comma-separated integers in range is an error naming the
/// 1-based line and column.
pub fn load_digits_csv(path: &Path) -> Result<ImageSet, DataError> {
    let mut src = Source::open(path, "the digits CSV (64 pixels 0..=16 then a label 0..=9)")?;
    let bytes = src.read_rest()?;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let ncols = DIGITS_PIXELS + 1;
    let csv_err = |line: usize, column: usize, value: &[u8], expected: String| DataError::Csv {
        path: path.to_path_buf(),
        line,
        column,
        value: String::from_utf8_lossy(value).into_owned(),
        expected,
    };
    for (line_idx, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = line_idx + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut n_fields = 0;
        for (col_idx, field) in line.split(|&b| b == b',').enumerate() {
            let column = col_idx + 1;
            n_fields = column;
            if column > ncols {
                return Err(csv_err(
                    line_no,
                    column,
                    field,
                    format!("{ncols} fields per line (64 pixels then the label)"),
                ));
            }
            let is_label = column == ncols;
            let parsed = std::str::from_utf8(field)
                .ok()
                .map(str::trim)
                .and_then(|s| s.parse::<u64>().ok());
            let Some(v) = parsed else {
                let what = if is_label {
                    "an integer label 0..=9"
                } else {
                    "an integer pixel 0..=16"
                };
                return Err(csv_err(line_no, column, field, what.to_string()));
            };
            if is_label {
                if v >= NUM_CLASSES as u64 {
                    return Err(DataError::LabelOutOfRange {
                        path: path.to_path_buf(),
                        location: format!("line {line_no}, column {column}"),
                        label: v,
                        classes: NUM_CLASSES,
                    });
                }
                labels.push(v as u8);
            } else {
                if v > u64::from(DIGITS_MAX_PIXEL) {
                    return Err(csv_err(
                        line_no,
                        column,
                        field,
                        "an integer pixel 0..=16".to_string(),
                    ));
                }
                images.push(v as f32 / f32::from(DIGITS_MAX_PIXEL));
            }
        }
        if n_fields < ncols {
            return Err(csv_err(
                line_no,
                n_fields + 1,
                b"",
                format!("{ncols} fields per line (64 pixels then the label), found {n_fields}"),
            ));
        }
    }
    Ok(ImageSet {
        images,
        labels,
        shape: [1, 8, 8],
    })
}

/// Whether sample `i` of the digits set belongs to the test split.
pub fn digits_is_test(i: usize) -> bool {
    i % 5 == 4
}

/// Splits the digits set deterministically: sample i goes to test iff i % 5 == 4.
pub fn split_digits(all: ImageSet) -> (ImageSet, ImageSet) {
    let per = all.sample_len();
    let mut train = ImageSet {
        images: Vec::new(),
        labels: Vec::new(),
        shape: all.shape,
    };
    let mut test = ImageSet {
        images: Vec::new(),
        labels: Vec::new(),
        shape: all.shape,
    };
    if per == 0 {
        return (train, test);
    }
    for (i, (img, &label)) in all.images.chunks_exact(per).zip(&all.labels).enumerate() {
        let dst = if digits_is_test(i) {
            &mut test
        } else {
            &mut train
        };
        dst.images.extend_from_slice(img);
        dst.labels.push(label);
    }
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: u32, fill: u32) -> String {
        let mut v: Vec<String> = (0..64).map(|_| fill.to_string()).collect();
        v.push(label.to_string());
        v.join(",")
    }

    #[test]
    fn parses_plain_csv_with_crlf_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.csv");
        let text = format!("{}\r\n\n{}\n", row(3, 16), row(7, 8));
        std::fs::write(&f, text).unwrap();
        let set = load_digits_csv(&f).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.labels, vec![3, 7]);
        assert_eq!(set.shape, [1, 8, 8]);
        assert!(set.images[..64].iter().all(|&p| p == 1.0));
        assert!(set.images[64..].iter().all(|&p| p == 0.5));
    }

    #[test]
    fn errors_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.csv");
        let bad = row(1, 2).replacen("2", "x", 1);
        std::fs::write(&f, format!("{}\n{}\n", row(1, 2), bad)).unwrap();
        match load_digits_csv(&f).unwrap_err() {
            DataError::Csv {
                line,
                column,
                value,
                ..
            } => {
                assert_eq!((line, column, value.as_str()), (2, 1, "x"));
            }
            e => panic!("wrong error {e}"),
        }
        std::fs::write(&f, row(1, 17)).unwrap();
        assert!(matches!(
            load_digits_csv(&f).unwrap_err(),
            DataError::Csv { column: 1, .. }
        ));
        std::fs::write(&f, row(10, 1)).unwrap();
        assert!(matches!(
            load_digits_csv(&f).unwrap_err(),
            DataError::LabelOutOfRange { label: 10, .. }
        ));
        std::fs::write(&f, "1,2,3\n").unwrap();
        assert!(matches!(
            load_digits_csv(&f).unwrap_err(),
            DataError::Csv { column: 4, .. }
        ));
        std::fs::write(&f, format!("{},5\n", row(1, 1))).unwrap();
        assert!(matches!(
            load_digits_csv(&f).unwrap_err(),
            DataError::Csv { column: 66, .. }
        ));
    }

    #[test]
    fn split_rule() {
        let set = ImageSet {
            images: (0..10 * 64).map(|i| (i / 64) as f32).collect(),
            labels: (0..10).collect(),
            shape: [1, 8, 8],
        };
        let (train, test) = split_digits(set);
        assert_eq!(test.labels, vec![4, 9]);
        assert_eq!(train.labels, vec![0, 1, 2, 3, 5, 6, 7, 8]);
        assert_eq!(test.images[64], 9.0);
    }
}
