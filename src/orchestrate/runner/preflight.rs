//! Whether a task's data can make a run at all (one training batch, one held-out sample) and
//! whether its model can be trained in this machine's memory (on the CPU), checked by `run` and
//! `sweep` before anything is written or measured, and the sizes a run gets, counted without
//! building tensors.

use crate::data::{DataError, DatasetBundle, Loaded};
use crate::spec::task::TaskSpec;

/// The task's view of `bundle` (`crate::engine::prepare::task_data`), borrowed when the task has no `[data]`
/// view.
fn viewed<'a>(
    spec: &TaskSpec,
    bundle: &'a DatasetBundle,
) -> anyhow::Result<std::borrow::Cow<'a, Loaded>> {
    Ok(crate::engine::prepare::task_view(spec, bundle)?)
}

/// The training and held-out sizes a run of `spec` on `bundle` gets, as `crate::engine::prepare::prepare` makes
/// them (samples; text: windows of the model's context), counted without building tensors.
pub fn prepared_sizes(spec: &TaskSpec, bundle: &DatasetBundle) -> anyhow::Result<(usize, usize)> {
    sizes_of(spec, viewed(spec, bundle)?.as_ref())
}

fn sizes_of(spec: &TaskSpec, data: &Loaded) -> anyhow::Result<(usize, usize)> {
    let cap = |n: usize| crate::engine::prepare::eval_cap(spec, n);
    Ok(match data {
        Loaded::Images { train, test, .. } => (train.len(), cap(test.len())),
        Loaded::Text(text) => {
            let context = spec.model.context().ok_or_else(|| {
                anyhow::anyhow!("task {}: text data needs a token model", spec.name)
            })?;
            let windows = |ids: &[u32]| crate::engine::prepare::window_count(ids.len(), context);
            (windows(&text.train), cap(windows(&text.test)))
        }
    })
}

/// A task's data can make a run: at least one batch of training samples (the task's
/// `batch_size`; a smaller set would train on a shrunken batch or not at all) and at least one
/// held-out sample to score. A usage error naming the data file (or folder) and what is
/// missing; called before anything is written or measured.
pub fn preflight_data(
    spec: &TaskSpec,
    bundle: &DatasetBundle,
    device: &candle_core::Device,
) -> anyhow::Result<()> {
    let data = viewed(spec, bundle)?;
    if device.is_cpu() {
        check_memory(spec, data.as_ref(), available_memory_bytes())?;
    }
    let (n_train, n_eval) = sizes_of(spec, &data)?;
    let batch = spec.train.batch_size;
    let (what, path) = match bundle.files.as_slice() {
        [one] => ("file", std::path::PathBuf::from(&one.path)),
        _ => ("directory", bundle.dir.clone()),
    };
    let view_note = if spec.data.is_identity() {
        ""
    } else {
        " (after the task's [data] view)"
    };
    let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    // What each split is made of, in the words of its kind of data.
    let (train_is, test_is) = match (data.as_ref(), spec.model.context()) {
        (Loaded::Text(t), Some(c)) => {
            let symbol = if t.is_byte_level() {
                "byte"
            } else {
                "character"
            };
            let split = |name: &str, len: usize, n: usize| {
                format!(
                    "the {name} text{view_note} ({}) makes {} of {} {symbol}s",
                    plural(len, symbol),
                    plural(n, "window"),
                    c + 1
                )
            };
            (
                split("training", t.train.len(), n_train),
                split("test", t.test.len(), n_eval),
            )
        }
        _ => (
            format!(
                "the training split{view_note} has {}",
                plural(n_train, "sample")
            ),
            format!("the test split{view_note} has {}", plural(n_eval, "sample")),
        ),
    };
    let too_small = |detail: String| DataError::TooSmall {
        what,
        path: path.clone(),
        task: spec.name.clone(),
        detail,
    };
    if n_train < batch {
        return Err(too_small(format!(
            "{train_is}; the task needs at least one batch of {batch} (its [train] batch_size)"
        ))
        .into());
    }
    if n_eval == 0 {
        return Err(too_small(format!("{test_is}; at least one is needed to score a run")).into());
    }
    Ok(())
}

/// `MemAvailable` of `/proc/meminfo`, in bytes: what a new process can use without swapping.
/// `None` where it cannot be read (then the memory check is skipped).
pub fn available_memory_bytes() -> Option<u128> {
    crate::measure::system::meminfo_kib("MemAvailable").map(|kib| u128::from(kib) * 1024)
}

/// A model whose training needs more memory than `available` (bytes; `None`: unknown) is a
/// usage error, before anything is written: without it the allocation fails mid-run and the
/// process aborts (exit 134) after the results folder was made. The need is a lower bound
/// (`engine::model::size`), so a model that fits is never refused.
fn check_memory(spec: &TaskSpec, data: &Loaded, available: Option<u128>) -> anyhow::Result<()> {
    let Some(available) = available else {
        return Ok(());
    };
    let (input, classes) = crate::engine::prepare::input_of(spec, data)?;
    let params = crate::engine::model::size::parameters_at_least(&spec.model, input, classes);
    let need = crate::engine::model::size::training_bytes_at_least(&spec.model, input, classes);
    if need > available {
        let gib = |b: u128| b as f64 / f64::from(1u32 << 30);
        anyhow::bail!(
            "task {}: its model has at least {params} trainable parameters, so training takes at least {:.1} GiB (weight, gradient and two AdamW moments, 4 bytes each), more than the {:.1} GiB this machine has available: make the model smaller",
            spec.name,
            gib(need),
            gib(available)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn shipped(name: &str) -> TaskSpec {
        crate::spec::task::find(&crate::spec::task::default_models_dir(), name).unwrap()
    }

    fn images(n_train: usize, n_test: usize) -> DatasetBundle {
        let set = |n: usize| crate::data::ImageSet {
            images: vec![0.5; n * 64],
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            shape: [1, 8, 8],
        };
        DatasetBundle {
            kind: crate::data::DatasetKind::Digits,
            dir: "d".into(),
            data: Loaded::Images {
                train: set(n_train),
                test: set(n_test),
                classes: 10,
            },
            files: vec![crate::data::FileRecord {
                path: "d/digits.csv".into(),
                sha256: String::new(),
                bytes: 0,
                verified: false,
            }],
        }
    }

    fn text(chars: usize) -> DatasetBundle {
        let body: String = (0..chars)
            .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
            .collect();
        let mut b = images(0, 0);
        b.kind = crate::data::DatasetKind::Text;
        b.files[0].path = "t/austen.txt".into();
        b.data = Loaded::Text(crate::data::TextSet::from_text(&body));
        b
    }

    #[test]
    fn prepared_sizes_are_what_prepare_makes() {
        for (task, bundle) in [
            ("digits-mlp", images(100, 7)),
            ("digits-lo-mlp", images(100, 7)),
            ("text-charlm", text(20_000)),
            ("text-charlm-p1", text(20_000)),
            ("text-charlm", text(700)),
        ] {
            let spec = shipped(task);
            let p = crate::engine::prepare::prepare(&spec, &bundle, &Device::Cpu).unwrap();
            assert_eq!(
                prepared_sizes(&spec, &bundle).unwrap(),
                (p.n_train, p.n_eval),
                "{task}"
            );
        }
    }

    #[test]
    fn data_too_small_for_a_run_is_refused_naming_the_file() {
        let digits = shipped("digits-mlp");
        preflight_data(&digits, &images(32, 1), &Device::Cpu).unwrap();
        for (bundle, needles) in [
            (images(0, 5), &["has 0 samples", "one batch of 32"][..]),
            (images(1, 5), &["has 1 sample;", "one batch of 32"]),
            (images(31, 5), &["has 31 samples"]),
            (images(40, 0), &["test split has 0 samples"]),
        ] {
            let e = preflight_data(&digits, &bundle, &Device::Cpu).unwrap_err();
            let msg = e.to_string();
            assert!(e.downcast_ref::<DataError>().is_some(), "{msg}");
            assert!(
                msg.starts_with("data file d/digits.csv: too small for task digits-mlp: "),
                "{msg}"
            );
            for n in needles {
                assert!(msg.contains(n), "{n} not in {msg}");
            }
        }
        // A class view counts what the task keeps: digits 0-4 of 60 samples are 30.
        let e =
            preflight_data(&shipped("digits-lo-mlp"), &images(60, 10), &Device::Cpu).unwrap_err();
        assert!(
            e.to_string()
                .contains("training split (after the task's [data] view) has 30 samples"),
            "{e}"
        );
        let charlm = shipped("text-charlm");
        let e = preflight_data(&charlm, &text(3), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t/austen.txt")
                && e.contains("the training text (2 characters) makes 0 windows of 65 characters"),
            "{e}"
        );
        // With a smaller batch the training text suffices, but its 10 % test text (60
        // characters) is shorter than one window.
        let mut small_batch = charlm.clone();
        small_batch.train.batch_size = 4;
        preflight_data(&small_batch, &text(700), &Device::Cpu).unwrap();
        let e = preflight_data(&small_batch, &text(600), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "the test text (60 characters) makes 0 windows of 65 characters; at least one"
            ),
            "{e}"
        );
    }

    /// Issue 20: a task whose model cannot be trained in memory is one line before anything
    /// is written, not an aborted allocation (`hidden = [100000000]` on digits: 25.6 GB of
    /// weights alone).
    #[test]
    fn a_model_too_big_for_memory_is_refused_and_one_that_fits_is_not() {
        let mut big = shipped("digits-mlp");
        big.model = crate::spec::task::ModelSpec::Mlp {
            hidden: vec![100_000_000],
        };
        let data = images(64, 8);
        let gib8 = Some(8u128 << 30);
        let e = check_memory(&big, &data.data, gib8)
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.contains("task digits-mlp") && e.contains("at least 7400000000 trainable parameters"),
            "{e}"
        );
        assert!(e.contains("110.3 GiB") && e.contains("8.0 GiB"), "{e}");
        check_memory(&shipped("digits-mlp"), &data.data, gib8).unwrap();
        check_memory(&big, &data.data, None).unwrap();
    }
}
