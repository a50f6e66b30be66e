//! Integration tests of `joulebench::data`: the shipped datasets load with the right counts and
//! checksums, hand-written files round-trip, and every kind of bad input gives the right
//! `DataError` variant with a one-line message naming the file.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use joulebench::data::{
    default_data_dir, load, load_cifar_bin, load_digits_csv, load_idx_images, load_idx_labels,
    load_idx_pair, load_text, sha256_file, DataError, DatasetKind, ImageSet, Loaded,
};

fn shipped(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(sub)
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [0x0000_0803u32, count, rows, cols] {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = 0x0000_0801u32.to_be_bytes().to_vec();
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// The error's message is one line and names `path`.
fn assert_one_line_naming(err: &DataError, path: &Path) {
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "multi-line message: {msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name {}: {msg}",
        path.display()
    );
}

fn histogram(labels: &[u8]) -> [usize; 10] {
    let mut h = [0; 10];
    for &l in labels {
        h[usize::from(l)] += 1;
    }
    h
}

fn images(loaded: &Loaded) -> (&ImageSet, &ImageSet, usize) {
    match loaded {
        Loaded::Images {
            train,
            test,
            classes,
        } => (train, test, *classes),
        Loaded::Text(_) => panic!("expected images"),
    }
}

#[test]
fn shipped_mnist_loads_and_verifies() {
    let bundle = load(DatasetKind::Mnist, Some(&shipped("mnist"))).unwrap();
    let (train, test, classes) = images(&bundle.data);
    assert_eq!(classes, 10);
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.shape, [1, 28, 28]);
    assert_eq!(test.shape, [1, 28, 28]);
    assert_eq!(train.images.len(), 60_000 * 784);
    assert_eq!(test.images.len(), 10_000 * 784);
    let h_train = histogram(&train.labels);
    let h_test = histogram(&test.labels);
    assert_eq!(
        h_train,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        h_test,
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(h_train.iter().sum::<usize>(), 60_000);
    assert_eq!(h_test.iter().sum::<usize>(), 10_000);
    assert_eq!(&train.labels[..3], &[5, 0, 4]);
    assert_eq!(&test.labels[..3], &[7, 2, 1]);
    // Sum of raw pixel bytes of the first training image is 27525.
    let first: f32 = train.images[..784].iter().sum();
    assert!((first * 255.0 - 27525.0).abs() < 0.5, "{first}");
    let max = train.images.iter().copied().fold(f32::MIN, f32::max);
    let min = train.images.iter().copied().fold(f32::MAX, f32::min);
    assert_eq!((min, max), (0.0, 1.0));
    assert_eq!(bundle.files.len(), 4);
    assert!(
        bundle.files.iter().all(|f| f.verified),
        "{:?}",
        bundle.files
    );
    assert_eq!(
        bundle.files[0].sha256,
        "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971"
    );
    assert_eq!(bundle.files[0].bytes, 9_719_438);
    assert!(bundle.files[0].path.ends_with("train-images-idx3-ubyte.gz"));
}

#[test]
fn default_dir_is_the_shipped_folder() {
    if std::env::var_os("JOULEBENCH_DATA").is_some() {
        return; // the user pointed elsewhere on purpose
    }
    assert_eq!(default_data_dir(), shipped(""));
    let bundle = load(DatasetKind::Digits, None).unwrap();
    assert_eq!(bundle.dir, shipped("digits"));
    assert_eq!(bundle.kind, DatasetKind::Digits);
}

#[test]
fn tiny_idx_roundtrips_raw_and_gz() {
    let dir = tempfile::tempdir().unwrap();
    let pixels = [0u8, 255, 128, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    let img = idx_images(2, 2, 3, &pixels);
    let lab = idx_labels(&[9, 0]);
    for (suffix, img_bytes, lab_bytes) in [
        ("raw", img.clone(), lab.clone()),
        // Named .bin on purpose: gzip is detected by magic bytes, not the extension.
        ("gz.bin", gz(&img), gz(&lab)),
    ] {
        let ip = dir.path().join(format!("img.{suffix}"));
        let lp = dir.path().join(format!("lab.{suffix}"));
        std::fs::write(&ip, img_bytes).unwrap();
        std::fs::write(&lp, lab_bytes).unwrap();
        let (px, shape) = load_idx_images(&ip).unwrap();
        assert_eq!(shape, [1, 2, 3]);
        let expected: Vec<f32> = pixels.iter().map(|&b| f32::from(b) / 255.0).collect();
        assert_eq!(px, expected);
        assert_eq!(px[1], 1.0);
        assert_eq!(load_idx_labels(&lp).unwrap(), vec![9, 0]);
        let set = load_idx_pair(&ip, &lp).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.sample_len(), 6);
        assert_eq!(set.labels, vec![9, 0]);
    }
}

#[test]
fn tiny_mnist_layout_via_data_dir_and_checksums() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mnist");
    std::fs::create_dir(&dir).unwrap();
    let files = [
        (
            "train-images-idx3-ubyte",
            idx_images(3, 1, 2, &[0, 51, 102, 153, 204, 255]),
        ),
        ("train-labels-idx1-ubyte", idx_labels(&[1, 2, 3])),
        ("t10k-images-idx3-ubyte", idx_images(1, 1, 2, &[255, 0])),
        ("t10k-labels-idx1-ubyte", idx_labels(&[4])),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    // No SHA256SUMS anywhere: loads, nothing verified.
    let bundle = load(DatasetKind::Mnist, Some(&dir)).unwrap();
    let (train, test, _) = images(&bundle.data);
    assert_eq!(train.labels, vec![1, 2, 3]);
    assert_eq!(train.images, vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    assert_eq!(test.labels, vec![4]);
    assert!(bundle.files.iter().all(|f| !f.verified));
    assert_eq!(
        bundle.files[0].sha256,
        sha256_file(&dir.join("train-images-idx3-ubyte")).unwrap()
    );

    // SHA256SUMS in the parent, listing three of the four files correctly.
    let mut sums = String::new();
    for (name, _) in &files[..3] {
        let hex = sha256_file(&dir.join(name)).unwrap();
        sums.push_str(&format!("{hex}  mnist/{name}\n"));
    }
    std::fs::write(root.path().join("SHA256SUMS"), &sums).unwrap();
    let bundle = load(DatasetKind::Mnist, Some(&dir)).unwrap();
    let verified: Vec<bool> = bundle.files.iter().map(|f| f.verified).collect();
    assert_eq!(verified, vec![true, true, true, false]);

    // A wrong entry is a ChecksumMismatch naming the file, expected and actual.
    let wrong = "0".repeat(64);
    sums.push_str(&format!("{wrong}  mnist/t10k-labels-idx1-ubyte\n"));
    std::fs::write(root.path().join("SHA256SUMS"), &sums).unwrap();
    let err = load(DatasetKind::Mnist, Some(&dir)).unwrap_err();
    let path = dir.join("t10k-labels-idx1-ubyte");
    match &err {
        DataError::ChecksumMismatch {
            path: p,
            expected,
            actual,
            ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha256_file(&path).unwrap());
        }
        e => panic!("wrong variant: {e}"),
    }
    assert_one_line_naming(&err, &path);
    assert!(err.to_string().contains(&wrong));

    // A SHA256SUMS in the directory itself takes precedence, with paths relative to it.
    let hex = sha256_file(&path).unwrap();
    std::fs::write(
        dir.join("SHA256SUMS"),
        format!("{hex}  t10k-labels-idx1-ubyte\n"),
    )
    .unwrap();
    let bundle = load(DatasetKind::Mnist, Some(&dir)).unwrap();
    let verified: Vec<bool> = bundle.files.iter().map(|f| f.verified).collect();
    assert_eq!(verified, vec![false, false, false, true]);
}

#[test]
fn truncated_idx_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train-images-idx3-ubyte");
    let mut bytes = idx_images(60000, 28, 28, &[]);
    bytes.resize(1000, 7);
    std::fs::write(&path, &bytes).unwrap();
    let err = load_idx_images(&path).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err}");
    assert_one_line_naming(&err, &path);
    assert_eq!(
        err.to_string(),
        format!(
            "data file {}: truncated: header says 60000 images of 28x28 (47040016 bytes), file has 1000 bytes",
            path.display()
        )
    );
    // Same through gzip: the decompressed length is reported.
    let gz_path = dir.path().join("train-images-idx3-ubyte.gz");
    let mut small = idx_images(3, 2, 2, &[1; 12]);
    small.truncate(20);
    std::fs::write(&gz_path, gz(&small)).unwrap();
    let err = load_idx_images(&gz_path).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err}");
    assert!(
        err.to_string().contains("decompressed data has 20 bytes"),
        "{err}"
    );
    assert_one_line_naming(&err, &gz_path);
    // Labels too.
    let lp = dir.path().join("labels");
    let mut lab = idx_labels(&[1, 2, 3, 4]);
    lab.pop();
    std::fs::write(&lp, &lab).unwrap();
    let err = load_idx_labels(&lp).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err}");
    assert_one_line_naming(&err, &lp);
}

#[test]
fn bad_magic_is_bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swapped");
    std::fs::write(&path, idx_labels(&[1, 2])).unwrap();
    let err = load_idx_images(&path).unwrap_err();
    match &err {
        DataError::BadMagic {
            expected, found, ..
        } => assert_eq!((*expected, *found), (0x803, 0x801)),
        e => panic!("wrong variant: {e}"),
    }
    assert_one_line_naming(&err, &path);
    assert!(err.to_string().contains("0x00000803"));
    assert!(err.to_string().contains("0x00000801"));
    std::fs::write(&path, idx_images(1, 1, 1, &[0])).unwrap();
    assert!(matches!(
        load_idx_labels(&path).unwrap_err(),
        DataError::BadMagic { .. }
    ));
}

#[test]
fn corrupt_gzip_is_corrupt_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    // Valid gzip magic, garbage after it.
    std::fs::write(
        &path,
        [0x1f, 0x8b, 0x08, 0x00, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3],
    )
    .unwrap();
    let err = load_idx_images(&path).unwrap_err();
    assert!(matches!(err, DataError::CorruptGzip { .. }), "{err}");
    assert_one_line_naming(&err, &path);
    // A real gzip cut in half.
    let packed = gz(&idx_images(50, 10, 10, &[9; 5000]));
    std::fs::write(&path, &packed[..packed.len() / 2]).unwrap();
    let err = load_idx_images(&path).unwrap_err();
    assert!(matches!(err, DataError::CorruptGzip { .. }), "{err}");
    assert_one_line_naming(&err, &path);
    // Flip bytes in the middle of the deflate stream of a real file.
    let mut flipped = gz(&(0..20_000u32)
        .map(|i| (i * 31 % 253) as u8)
        .collect::<Vec<_>>());
    let mid = flipped.len() / 2;
    for b in &mut flipped[mid..mid + 16] {
        *b ^= 0xff;
    }
    let tp = dir.path().join("corpus.txt");
    std::fs::write(&tp, &flipped).unwrap();
    let err = load_text(&tp).unwrap_err();
    assert!(matches!(err, DataError::CorruptGzip { .. }), "{err}");
    assert_one_line_naming(&err, &tp);
}

#[test]
fn missing_files_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope-idx3-ubyte");
    let err = load_idx_images(&path).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err}");
    assert_one_line_naming(&err, &path);
    let err = load(DatasetKind::Mnist, Some(dir.path())).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err}");
    assert_one_line_naming(&err, dir.path());
    assert!(err.to_string().contains("train-labels-idx1-ubyte"));
    let err = load(DatasetKind::Cifar10, Some(dir.path())).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("data_batch_5.bin"));
    let err = load(DatasetKind::Text, Some(dir.path())).unwrap_err();
    assert!(matches!(err, DataError::NoTextFile { .. }), "{err}");
    assert_one_line_naming(&err, dir.path());
}

#[test]
fn count_mismatch_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ip = dir.path().join("i");
    let lp = dir.path().join("l");
    std::fs::write(&ip, idx_images(2, 1, 1, &[1, 2])).unwrap();
    std::fs::write(&lp, idx_labels(&[1, 2, 3])).unwrap();
    let err = load_idx_pair(&ip, &lp).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                images: 2,
                labels: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_one_line_naming(&err, &ip);
    assert_one_line_naming(&err, &lp);
}

#[test]
fn shipped_digits_load_and_split() {
    let bundle = load(DatasetKind::Digits, Some(&shipped("digits"))).unwrap();
    let (train, test, classes) = images(&bundle.data);
    assert_eq!(classes, 10);
    assert_eq!(train.len() + test.len(), 1797);
    assert_eq!((train.len(), test.len()), (1438, 359));
    assert_eq!(train.shape, [1, 8, 8]);
    assert_eq!(train.images.len(), 1438 * 64);
    let max = train
        .images
        .iter()
        .chain(&test.images)
        .copied()
        .fold(f32::MIN, f32::max);
    let min = train
        .images
        .iter()
        .chain(&test.images)
        .copied()
        .fold(f32::MAX, f32::min);
    assert_eq!((min, max), (0.0, 1.0));
    let mut h = histogram(&train.labels);
    for (a, b) in h.iter_mut().zip(histogram(&test.labels)) {
        *a += b;
    }
    assert_eq!(h, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    assert_eq!(histogram(&train.labels)[0], 151);
    assert!(bundle.files[0].verified);

    // The low-level loader sees all 1797 in file order; sample 4 is the first test sample.
    let all = load_digits_csv(&shipped("digits/digits.csv.gz")).unwrap();
    assert_eq!(all.len(), 1797);
    assert_eq!(all.labels[4], test.labels[0]);
    assert_eq!(&all.images[4 * 64..5 * 64], &test.images[..64]);
}

#[test]
fn csv_bad_value_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let good: Vec<String> = (0..65).map(|i| (i % 10).to_string()).collect();
    let mut bad = good.clone();
    bad[10] = "1O".to_string();
    let text = format!(
        "{}\n{}\n{}\n",
        good.join(","),
        good.join(","),
        bad.join(",")
    );
    let path = dir.path().join("digits.csv.gz");
    std::fs::write(&path, gz(text.as_bytes())).unwrap();
    let err = load_digits_csv(&path).unwrap_err();
    match &err {
        DataError::Csv {
            line,
            column,
            value,
            ..
        } => assert_eq!((*line, *column, value.as_str()), (3, 11, "1O")),
        e => panic!("wrong variant: {e}"),
    }
    let msg = err.to_string();
    assert_one_line_naming(&err, &path);
    assert!(msg.contains("line 3"), "{msg}");
    assert!(msg.contains("column 11"), "{msg}");
    assert!(msg.contains("\"1O\""), "{msg}");
    // Via load() on a data dir too.
    let err = load(DatasetKind::Digits, Some(dir.path())).unwrap_err();
    assert!(matches!(err, DataError::Csv { line: 3, .. }), "{err}");
}

#[test]
fn shipped_cifar_sample_loads() {
    let path = shipped("cifar10/test_batch_first20.bin");
    let set = load_cifar_bin(&[&path]).unwrap();
    assert_eq!(set.shape, [3, 32, 32]);
    assert_eq!(set.len(), 20);
    assert_eq!(set.images.len(), 20 * 3072);
    assert_eq!(
        set.labels,
        vec![3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    );
    assert!(set.images.iter().all(|&p| (0.0..=1.0).contains(&p)));
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(set.images[0], f32::from(raw[1]) / 255.0);
    assert_eq!(
        set.images[3072 + 1024],
        f32::from(raw[3073 + 1 + 1024]) / 255.0
    );

    // A truncated copy errors.
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("test_batch.bin");
    std::fs::write(&cut, &raw[..3073 * 2 + 100]).unwrap();
    let err = load_cifar_bin(&[&cut]).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err}");
    assert_one_line_naming(&err, &cut);
    assert!(
        err.to_string()
            .contains("2 whole records and 100 extra bytes"),
        "{err}"
    );
}

#[test]
fn cifar_layout_via_data_dir() {
    let raw = std::fs::read(shipped("cifar10/test_batch_first20.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=5 {
        std::fs::write(
            dir.path().join(format!("data_batch_{i}.bin")),
            &raw[(i - 1) * 3073..(i + 1) * 3073],
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("test_batch.bin"), &raw[15 * 3073..]).unwrap();
    let bundle = load(DatasetKind::Cifar10, Some(dir.path())).unwrap();
    let (train, test, classes) = images(&bundle.data);
    assert_eq!(classes, 10);
    assert_eq!(train.len(), 10);
    assert_eq!(train.labels, vec![3, 8, 8, 8, 8, 0, 0, 6, 6, 6]);
    assert_eq!(test.labels, vec![8, 5, 7, 8, 6]);
    assert_eq!(bundle.files.len(), 6);
}

#[test]
fn shipped_text_loads() {
    let bundle = load(DatasetKind::Text, Some(&shipped("text"))).unwrap();
    let Loaded::Text(set) = &bundle.data else {
        panic!("expected text");
    };
    let total = 4_025_028; // 4,025,029 bytes, one two-byte pound sign
    assert_eq!(set.vocab.len(), 81);
    assert!(
        set.vocab.windows(2).all(|w| w[0] < w[1]),
        "vocab not sorted"
    );
    assert!(set.vocab.contains(&'£'));
    assert_eq!(set.train.len() + set.test.len(), total);
    assert_eq!(set.train.len(), total * 9 / 10);
    assert_eq!(set.test.len(), total - total * 9 / 10);
    assert!(set
        .train
        .iter()
        .chain(&set.test)
        .all(|&i| (i as usize) < 81));
    let text = load_text(&shipped("text/austen.txt")).unwrap();
    assert_eq!(text.chars().count(), total);
    let head: String = text.chars().take(200).collect();
    assert_eq!(set.decode(&set.train[..200]), head);
    assert!(bundle.files[0].verified);
    assert_eq!(bundle.files[0].bytes, 4_025_029);
}

#[test]
fn text_from_user_dir() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("corpus");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "abcabcabcabcabcabcab").unwrap();
    std::fs::write(dir.join("readme.md"), "not a corpus").unwrap();
    let bundle = load(DatasetKind::Text, Some(&dir)).unwrap();
    let Loaded::Text(set) = &bundle.data else {
        panic!("expected text");
    };
    assert_eq!(set.vocab, vec!['a', 'b', 'c']);
    assert_eq!(set.train.len(), 18);
    assert_eq!(set.test, vec![0, 1]);
    assert_eq!(bundle.files.len(), 1);
    assert!(!bundle.files[0].verified);
    assert!(bundle.files[0].path.ends_with("notes.txt"));

    std::fs::write(dir.join("other.txt"), "x").unwrap();
    let err = load(DatasetKind::Text, Some(&dir)).unwrap_err();
    assert!(
        matches!(err, DataError::AmbiguousTextFile { count: 2, .. }),
        "{err}"
    );
    assert_one_line_naming(&err, &dir);

    std::fs::write(dir.join("austen.txt"), "\u{fffd}é\n".repeat(5)).unwrap();
    let bundle = load(DatasetKind::Text, Some(&dir)).unwrap();
    assert!(bundle.files[0].path.ends_with("austen.txt"));

    std::fs::write(dir.join("austen.txt"), b"ok \xc3\x28 bad").unwrap();
    let err = load(DatasetKind::Text, Some(&dir)).unwrap_err();
    assert!(matches!(err, DataError::NotUtf8 { offset: 3, .. }), "{err}");
    assert_one_line_naming(&err, &dir.join("austen.txt"));
}

#[test]
fn file_records_serialize() {
    let bundle = load(DatasetKind::Digits, Some(&shipped("digits"))).unwrap();
    let json = serde_json::to_string(&bundle.files).unwrap();
    assert!(json.contains("\"verified\":true"), "{json}");
    assert!(json.contains("09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"));
    let back: Vec<joulebench::data::FileRecord> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, bundle.files);
}

/// Every prefix and many single-byte corruptions of small valid files give `Ok` or a one-line
/// `DataError` naming the file, never a panic.
#[test]
fn mangled_inputs_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let csv_row: Vec<String> = (0..65).map(|i| (i % 10).to_string()).collect();
    let csv = format!("{}\n", csv_row.join(",")).repeat(2).into_bytes();
    let mut cifar = vec![3u8];
    cifar.extend((0..3072).map(|i| (i % 256) as u8));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("images", idx_images(2, 3, 3, &[7; 18])),
        ("images", gz(&idx_images(2, 3, 3, &[7; 18]))),
        ("labels", idx_labels(&[1, 2, 3])),
        ("labels", gz(&idx_labels(&[1, 2, 3]))),
        ("csv", csv.clone()),
        ("csv", gz(&csv)),
        ("cifar", cifar.clone()),
        ("text", "héllo wörld".as_bytes().to_vec()),
        ("text", gz("héllo wörld".as_bytes())),
    ];
    let run = |kind: &str, bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        let err = match kind {
            "images" => load_idx_images(&path).err(),
            "labels" => load_idx_labels(&path).err(),
            "csv" => load_digits_csv(&path).err(),
            "cifar" => load_cifar_bin(&[&path]).err(),
            _ => load_text(&path).err(),
        };
        if let Some(err) = err {
            assert_one_line_naming(&err, &path);
        }
    };
    for (kind, bytes) in &cases {
        for cut in 0..bytes.len() {
            run(kind, &bytes[..cut]);
        }
        let step = (bytes.len() / 64).max(1);
        for i in (0..bytes.len()).step_by(step) {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut m = bytes.clone();
                m[i] ^= flip;
                run(kind, &m);
            }
        }
    }
}
