//! `joulebench collapse --experiment gaussian|digits`: arguments, checks, device and meter
//! set-up, and the Markdown/JSON output; the experiments are `orchestrate::collapse`.

use super::{usage, Failure};
use crate::data::{self, DatasetKind, Loaded};
use crate::measure;
use crate::orchestrate::collapse::digits;
use crate::orchestrate::collapse::gaussian;
use crate::record::collapse::{
    Detector, DigitsConfig, Estimator, GaussianConfig, GaussianFile, Policy, CLASSIFIER_TASK,
};
use crate::spec::generator::GeneratorKind;
use crate::spec::task;
use std::path::PathBuf;

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
    /// digits: cpu, cuda or cuda:i. Default: cuda:0 when a GPU is usable, else cpu (as `run`).
    #[arg(long)]
    pub device: Option<String>,
    /// Write collapse-<experiment>.json and .md into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
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
        let text = serde_json::to_string_pretty(&json).map_err(|e| Failure::Runtime(e.into()))?;
        write("json", &text)?;
        write("md", md)?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&json).map_err(|e| Failure::Runtime(e.into()))?;
        println!("{text}");
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
            let estimator = Estimator::parse(&args.estimator).map_err(usage)?;
            let policies = if policies.is_empty() {
                vec![Policy::Replace]
            } else {
                policies
            };
            let cfgs: Vec<GaussianConfig> = policies
                .iter()
                .map(|&policy| GaussianConfig {
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
        "digits" => digits_cmd(&args, policies),
        other => Err(usage(anyhow::anyhow!(
            "--experiment '{other}': valid: gaussian, digits"
        ))),
    }
}

/// The `digits` branch of `joulebench collapse`.
fn digits_cmd(args: &CollapseArgs, policies: Vec<Policy>) -> Result<i32, Failure> {
    let policies = if policies.is_empty() {
        vec![
            Policy::Replace,
            Policy::Accumulate,
            Policy::AccumulateSubsample,
            Policy::MixFresh(0.2),
            Policy::MixFixed(0.2),
            Policy::RealOnly,
        ]
    } else {
        policies
    };
    if args.seeds == 0 {
        return Err(usage(anyhow::anyhow!("--seeds must be at least 1")));
    }
    super::check_cpu_tdp_w(args.cpu_tdp_w).map_err(usage)?;
    let generator = GeneratorKind::parse(&args.generator).map_err(usage)?;
    let cfg = DigitsConfig {
        policies,
        generations: args.generations,
        seeds: (0..args.seeds as u64).map(|i| args.seed + i).collect(),
        generator,
        real_per_class: args.real_per_class,
        classifier_epochs: args.classifier_epochs,
        detector: Detector {
            ll_drop: args.detect_ll_drop,
            recall_drop: args.detect_recall_drop,
            acc_drop_pp: args.detect_acc_drop_pp,
        },
    };
    let bundle = data::load(DatasetKind::Digits, None).map_err(usage)?;
    let Loaded::Images { train, test, .. } = bundle.data else {
        return Err(usage(anyhow::anyhow!(
            "the digits dataset did not load as images"
        )));
    };
    cfg.validate(&train).map_err(usage)?;
    let base = task::find(&task::default_models_dir(), CLASSIFIER_TASK).map_err(usage)?;
    let spec = digits::classifier_spec(&base, cfg.classifier_epochs);
    let (device, label) = match &args.device {
        Some(d) => super::parse_device(d).map_err(usage)?,
        None => super::default_device(),
    };
    let gpu = label.strip_prefix("cuda:").and_then(|i| i.parse().ok());
    let (mut meter, _) =
        measure::detect_meter(&super::detect_options(args.meter, gpu, args.cpu_tdp_w))
            .map_err(usage)?;
    eprintln!(
        "joulebench collapse: digits, {} policies x {} seeds x {} generations on {label}, meter {}",
        cfg.policies.len(),
        cfg.seeds.len(),
        cfg.generations + 1,
        meter.name()
    );
    let mut env = digits::Env {
        meter: meter.as_mut(),
        device: &device,
        spec: &spec,
    };
    let rep = digits::run(&cfg, &train, &test, &mut env).map_err(Failure::Runtime)?;
    let json = serde_json::to_value(&rep).map_err(|e| Failure::Runtime(e.into()))?;
    emit(args, "digits", json, &digits::markdown(&rep))?;
    Ok(0)
}
