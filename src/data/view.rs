//! Derived views of a loaded dataset, declared by a task file's `[data]` table: keep some
//! classes, rotate every image, train on one part of a corpus. Fine-tune task pairs are built
//! from them (digits 0-4 then 5-9; MNIST then MNIST rotated; the first half of the Austen
//! training text then the second).
//!
//! Owns: the view's keys, their validation, and applying them to host data.
//! Must not: read files (the loaders do) or build tensors (`engine::prepare` does).

use super::{ImageSet, Loaded, TextSet};
use serde::{Deserialize, Serialize};

/// A task's `[data]` table. Every key is optional; an absent table is the dataset as loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataView {
    /// Keep only samples with these labels, in the train and the test split. Labels keep their
    /// values, so the classifier keeps the dataset's full width (a 10-way head for digits 5-9):
    /// a checkpoint of the complementary classes then loads with identical shapes.
    #[serde(default)]
    pub classes: Option<Vec<u8>>,
    /// Rotate every image (train and test) counter-clockwise by 90, 180 or 270 degrees: an
    /// exact, deterministic pixel permutation (no interpolation).
    #[serde(default)]
    pub rotate_deg: Option<u32>,
    /// Text: train on part `[k, n]` (1-based) of `n` equal consecutive parts of the training
    /// text; the held-out test text is unchanged.
    #[serde(default)]
    pub text_part: Option<[usize; 2]>,
    /// Text: `"bytes"` re-encodes a character corpus at the byte level (vocabulary the 256
    /// byte values, the 90/10 split recomputed on the UTF-8 bytes of the whole text), so a model
    /// trained on it shares its vocabulary, and its checkpoints, with the byte-level corpora.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_encoding: Option<TextEncoding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextEncoding {
    Bytes,
}

/// A `[data]` view that cannot apply: a key on the wrong kind of dataset, a value out of
/// range, or images that a rotation does not fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ViewError {
    /// `applies` says to what: "image datasets", "text datasets", "the text dataset".
    #[error("key 'data.{key}' applies to {applies} only")]
    WrongKind {
        key: &'static str,
        applies: &'static str,
    },
    #[error("key 'data.{key}' {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("rotating {h}x{w} images by 90 or 270 degrees needs square images")]
    NotSquare { h: usize, w: usize },
}

impl ViewError {
    /// The key under `[data]` at fault (`rotate_deg` for images a rotation does not fit).
    pub fn key(&self) -> &'static str {
        match self {
            ViewError::WrongKind { key, .. } | ViewError::Invalid { key, .. } => key,
            ViewError::NotSquare { .. } => "rotate_deg",
        }
    }
}

fn wrong(key: &'static str, applies: &'static str) -> ViewError {
    ViewError::WrongKind { key, applies }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ViewError {
    ViewError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl DataView {
    pub fn is_identity(&self) -> bool {
        self == &DataView::default()
    }

    /// Checks that do not need the data; the message names the key.
    pub fn validate(&self, is_text: bool, classes: usize) -> Result<(), ViewError> {
        if let Some(cs) = &self.classes {
            if is_text {
                return Err(wrong("classes", "image datasets"));
            }
            if cs.is_empty() {
                return Err(invalid("classes", "is empty"));
            }
            if let Some(c) = cs.iter().find(|&&c| usize::from(c) >= classes) {
                return Err(invalid(
                    "classes",
                    format!("has class {c}; the dataset has classes 0..{}", classes - 1),
                ));
            }
            let mut sorted = cs.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != cs.len() {
                return Err(invalid("classes", "lists a class twice"));
            }
        }
        if let Some(r) = self.rotate_deg {
            if is_text {
                return Err(wrong("rotate_deg", "image datasets"));
            }
            if ![90, 180, 270].contains(&r) {
                return Err(invalid(
                    "rotate_deg",
                    format!("must be 90, 180 or 270, got {r}"),
                ));
            }
        }
        if self.text_encoding.is_some() && !is_text {
            return Err(wrong("text_encoding", "text datasets"));
        }
        if let Some([k, n]) = self.text_part {
            if !is_text {
                return Err(wrong("text_part", "the text dataset"));
            }
            if n == 0 || k == 0 || k > n {
                return Err(invalid(
                    "text_part",
                    format!("is [k, n] with 1 <= k <= n, got [{k}, {n}]"),
                ));
            }
        }
        Ok(())
    }

    /// The view of `data` (a copy; the loaded data is left as it is).
    pub fn apply(&self, data: &Loaded) -> Result<Loaded, ViewError> {
        match data {
            Loaded::Images {
                train,
                test,
                classes,
            } => {
                let f = |s: &ImageSet| -> Result<ImageSet, ViewError> {
                    let mut s = match &self.classes {
                        Some(cs) => filter_classes(s, cs),
                        None => s.clone(),
                    };
                    if let Some(r) = self.rotate_deg {
                        s = rotate(&s, r / 90)?;
                    }
                    Ok(s)
                };
                Ok(Loaded::Images {
                    train: f(train)?,
                    test: f(test)?,
                    classes: *classes,
                })
            }
            Loaded::Text(t) => {
                let mut t = match self.text_encoding {
                    Some(TextEncoding::Bytes) if !t.is_byte_level() => {
                        let mut all = t.decode(&t.train);
                        all.push_str(&t.decode(&t.test));
                        TextSet::from_bytes(all.as_bytes())
                    }
                    _ => t.clone(),
                };
                if let Some([k, n]) = self.text_part {
                    t = text_part(&t, k, n);
                }
                Ok(Loaded::Text(t))
            }
        }
    }
}

/// The samples whose label is in `keep`, in their original order.
pub fn filter_classes(s: &ImageSet, keep: &[u8]) -> ImageSet {
    let per = s.sample_len();
    let mut out = ImageSet {
        images: Vec::new(),
        labels: Vec::new(),
        shape: s.shape,
    };
    for (img, &l) in s.images.chunks_exact(per.max(1)).zip(&s.labels) {
        if keep.contains(&l) {
            out.images.extend_from_slice(img);
            out.labels.push(l);
        }
    }
    out
}

/// Every image rotated counter-clockwise by `quarter_turns` x 90 degrees.
pub fn rotate(s: &ImageSet, quarter_turns: u32) -> Result<ImageSet, ViewError> {
    let [c, h, w] = s.shape;
    let q = quarter_turns % 4;
    if q % 2 == 1 && h != w {
        return Err(ViewError::NotSquare { h, w });
    }
    let per = c * h * w;
    let mut images = vec![0f32; s.images.len()];
    for (src, dst) in s.images.chunks_exact(per).zip(images.chunks_exact_mut(per)) {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    // Counter-clockwise: the pixel at (y, x) moves to (w-1-x, y) for 90.
                    let (ny, nx) = match q {
                        0 => (y, x),
                        1 => (w - 1 - x, y),
                        2 => (h - 1 - y, w - 1 - x),
                        _ => (x, h - 1 - y),
                    };
                    dst[ch * h * w + ny * w + nx] = src[ch * h * w + y * w + x];
                }
            }
        }
    }
    Ok(ImageSet {
        images,
        labels: s.labels.clone(),
        shape: s.shape,
    })
}

/// Part `k` (1-based) of `n` equal consecutive parts of the training text.
pub fn text_part(t: &TextSet, k: usize, n: usize) -> TextSet {
    let len = t.train.len();
    let lo = len * (k - 1) / n;
    let hi = len * k / n;
    TextSet {
        vocab: t.vocab.clone(),
        train: t.train[lo..hi].to_vec(),
        test: t.test.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> ImageSet {
        // Two 1x2x2 images: labels 3 and 7.
        ImageSet {
            images: vec![1., 2., 3., 4., 5., 6., 7., 8.],
            labels: vec![3, 7],
            shape: [1, 2, 2],
        }
    }

    #[test]
    fn byte_encoding_reencodes_a_char_corpus() {
        let t = TextSet::from_text("ab£abcdefghij");
        let v = DataView {
            text_encoding: Some(TextEncoding::Bytes),
            ..Default::default()
        };
        let Loaded::Text(b) = v.apply(&Loaded::Text(t)).unwrap() else {
            panic!("text")
        };
        assert!(b.is_byte_level());
        // 14 UTF-8 bytes ('£' is two): 12 train, 2 test.
        assert_eq!(b.train.len() + b.test.len(), 14);
        assert_eq!(&b.train[..4], &[97, 98, 0xc2, 0xa3]);
        assert!(v.validate(false, 10).is_err());
    }

    #[test]
    fn filter_keeps_labels_and_order() {
        let f = filter_classes(&set(), &[7]);
        assert_eq!(f.labels, [7]);
        assert_eq!(f.images, [5., 6., 7., 8.]);
    }

    #[test]
    fn rotation_is_counter_clockwise_and_four_turns_is_identity() {
        // [[1, 2], [3, 4]] rotated 90 degrees counter-clockwise is [[2, 4], [1, 3]].
        let r = rotate(&set(), 1).unwrap();
        assert_eq!(&r.images[..4], &[2., 4., 1., 3.]);
        let mut x = set();
        for _ in 0..4 {
            x = rotate(&x, 1).unwrap();
        }
        assert_eq!(x, set());
        assert_eq!(rotate(&set(), 2).unwrap().images[..4], [4., 3., 2., 1.]);
    }

    #[test]
    fn text_parts_tile_the_training_text() {
        let t = TextSet {
            vocab: vec!['a', 'b'],
            train: (0..11).map(|i| i % 2).collect(),
            test: vec![0, 1],
        };
        let a = text_part(&t, 1, 2);
        let b = text_part(&t, 2, 2);
        assert_eq!(a.train.len() + b.train.len(), 11);
        assert_eq!([a.train, b.train].concat(), t.train);
        assert_eq!(a.test, t.test);
    }

    #[test]
    fn validation_names_the_key() {
        let v = DataView {
            classes: Some(vec![1, 1]),
            ..Default::default()
        };
        assert!(v
            .validate(false, 10)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let v = DataView {
            rotate_deg: Some(45),
            ..Default::default()
        };
        assert_eq!(v.validate(false, 10).unwrap_err().key(), "rotate_deg");
        let v = DataView {
            text_part: Some([3, 2]),
            ..Default::default()
        };
        assert!(v
            .validate(true, 10)
            .unwrap_err()
            .to_string()
            .contains("data.text_part"));
        assert!(v.validate(false, 10).is_err());
    }
}
