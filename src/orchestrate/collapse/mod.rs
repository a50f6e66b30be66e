//! Model collapse (issue 7, ../shared/design/collapse.md): recursive synthetic-data generations
//! and the energy they waste.
//!
//! Owns: the data policies between generations (`Policy`), the closed-form Gaussian experiment
//! (`gaussian`), the digits generator-plus-classifier experiment with per-phase energy
//! (`digits`), their Markdown/JSON output (the serde types `joulebench report` reads back) and
//! the `joulebench collapse` command.
//! Must not: implement generators (`synth`), a classifier training loop (`train::train` is the
//! one loop) or a meter (`energy`); every joule comes from a `MeasuredWindow`.

pub mod digits;
pub mod gaussian;

use crate::cli::Failure;
use std::path::PathBuf;

pub use crate::record::collapse::{CollapseError, GaussianFile, Policy, POLICY_NAMES};

#[derive(clap::Args, Debug, Clone)]
pub struct CollapseArgs {
    /// gaussian (closed-form part) or digits (generator + classifier, with energy).
    #[arg(long)]
    pub experiment: String,
    /// Policy; repeatable. Default: gaussian replace; digits all six.
    #[arg(long = "policy")]
    pub policies: Vec<String>,
    #[arg(long, default_value_t = 20)]
    pub generations: usize,
    /// gaussian: M, samples drawn per generation.
    #[arg(long, default_value_t = 100)]
    pub samples_per_generation: usize,
    /// gaussian: independent chains.
    #[arg(long, default_value_t = 1000)]
    pub chains: usize,
    /// gaussian: mle or unbiased.
    #[arg(long, default_value = "mle")]
    pub estimator: String,
    /// gaussian: the seed; digits: the first of `--seeds` consecutive seeds.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// digits: number of seeds (chains per policy).
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// digits: generator (gaussian, gmm, gmm:<K>, vae).
    #[arg(long, default_value = "gaussian")]
    pub generator: String,
    /// digits: real training images per class (generation 0's data).
    #[arg(long, default_value_t = 20)]
    pub real_per_class: usize,
    /// digits: classifier epochs over each generation's data (a fixed epoch count, so a
    /// growing training set costs more).
    #[arg(long, default_value_t = 20)]
    pub classifier_epochs: usize,
    /// digits: detector threshold, drop of held-out log-likelihood (nats per image).
    #[arg(long, default_value_t = 20.0)]
    pub detect_ll_drop: f64,
    /// digits: detector threshold, drop of k-NN recall of real test images.
    #[arg(long, default_value_t = 0.25)]
    pub detect_recall_drop: f64,
    /// digits: detector threshold, drop of accuracy in points.
    #[arg(long, default_value_t = 5.0)]
    pub detect_acc_drop_pp: f64,
    #[arg(long, value_enum, default_value = "auto")]
    pub meter: crate::measure::MeterChoice,
    #[arg(long)]
    pub cpu_tdp_w: Option<f64>,
    /// cpu, cuda or cuda:i (digits).
    #[arg(long)]
    pub device: Option<String>,
    /// Write collapse-<experiment>.json and .md into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
}

fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Usage(e.into())
}

fn emit(args: &CollapseArgs, name: &str, json: serde_json::Value, md: &str) -> Result<(), Failure> {
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| usage(anyhow::anyhow!("--out {}: {e}", dir.display())))?;
        let write = |ext: &str, text: &str| {
            let p = dir.join(format!("collapse-{name}.{ext}"));
            std::fs::write(&p, text)
                .map_err(|e| Failure::Runtime(anyhow::anyhow!("writing {}: {e}", p.display())))
        };
        write(
            "json",
            &serde_json::to_string_pretty(&json).unwrap_or_default(),
        )?;
        write("md", md)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        println!("{md}");
    }
    Ok(())
}

/// `joulebench collapse`: validate everything, then run.
pub fn run_cmd(args: CollapseArgs) -> Result<i32, Failure> {
    let policies = args
        .policies
        .iter()
        .map(|p| Policy::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    if args.generations == 0 {
        return Err(usage(anyhow::anyhow!("--generations must be at least 1")));
    }
    match args.experiment.as_str() {
        "gaussian" => {
            let estimator = gaussian::Estimator::parse(&args.estimator).map_err(usage)?;
            let policies = if policies.is_empty() {
                vec![Policy::Replace]
            } else {
                policies
            };
            let cfgs: Vec<gaussian::GaussianConfig> = policies
                .iter()
                .map(|&policy| gaussian::GaussianConfig {
                    samples_per_generation: args.samples_per_generation,
                    chains: args.chains,
                    generations: args.generations,
                    policy,
                    estimator,
                    seed: args.seed,
                })
                .collect();
            for c in &cfgs {
                c.validate().map_err(usage)?;
            }
            let mut reports = Vec::new();
            for c in &cfgs {
                reports.push(gaussian::run(c).map_err(usage)?);
            }
            let md: Vec<String> = reports.iter().map(gaussian::markdown).collect();
            let file = GaussianFile {
                experiment: "gaussian".into(),
                runs: reports,
            };
            let json = serde_json::to_value(&file).map_err(|e| Failure::Runtime(e.into()))?;
            emit(&args, "gaussian", json, &md.join("\n"))?;
            Ok(0)
        }
        "digits" => digits::run_cmd(&args, policies),
        other => Err(usage(anyhow::anyhow!(
            "--experiment '{other}': valid: gaussian, digits"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::curve::nan_if_null;
    use serde::Deserialize;

    #[test]
    fn policies_parse_and_print_back() {
        for s in [
            "replace",
            "accumulate",
            "accumulate-subsample",
            "mix-fresh:0.25",
            "mix-fixed:1",
            "real-only",
        ] {
            assert_eq!(Policy::parse(s).unwrap().to_string(), s);
        }
        for bad in [
            "mix-fresh:0",
            "mix-fresh:1.5",
            "mix-fixed:x",
            "mix-fresh:nan",
        ] {
            assert!(Policy::parse(bad)
                .unwrap_err()
                .to_string()
                .contains("(0, 1]"));
        }
        assert!(Policy::parse("keep")
            .unwrap_err()
            .to_string()
            .contains("valid: replace"));
    }

    #[test]
    fn policies_and_non_finite_numbers_read_back_from_json() {
        let p: Vec<Policy> = serde_json::from_str(r#"["replace", "mix-fresh:0.2"]"#).unwrap();
        assert_eq!(p, [Policy::Replace, Policy::MixFresh(0.2)]);
        let e = serde_json::from_str::<Policy>(r#""keep""#).unwrap_err();
        assert!(e.to_string().contains("valid: replace"), "{e}");
        #[derive(Deserialize)]
        struct X {
            #[serde(deserialize_with = "nan_if_null")]
            v: f64,
        }
        // What serde_json writes for -inf.
        let null = serde_json::to_string(&serde_json::json!({ "v": f64::NEG_INFINITY })).unwrap();
        assert!(serde_json::from_str::<X>(&null).unwrap().v.is_nan());
        assert_eq!(serde_json::from_str::<X>(r#"{"v": -1.5}"#).unwrap().v, -1.5);
    }
}
