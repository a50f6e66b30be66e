//! The command-line spelling of the library's enums (clap's `ValueEnum`), kept here so that
//! only `cli` knows clap. Each name is the one the enum's docs, run files and earlier releases
//! use; `every_value_round_trips` checks they parse back.

use crate::analyse::carbon::footprint;
use crate::analyse::report;
use crate::data::DatasetKind;
use crate::measure::MeterChoice;
use crate::orchestrate::speed::OptChoice;
use crate::orchestrate::sweep::emit::{Engine, Isolation};
use clap::builder::PossibleValue;

/// `impl clap::ValueEnum` from a list of `variant => "name"` (optionally `: "help"`).
macro_rules! value_enum {
    ($t:ty { $($v:path => $name:literal $(: $help:literal)?),* $(,)? }) => {
        impl clap::ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($v),*]
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(match self {
                    $($v => PossibleValue::new($name)$(.help($help))?),*
                })
            }
        }
    };
}

value_enum!(MeterChoice {
    MeterChoice::Auto => "auto",
    MeterChoice::Nvml => "nvml",
    MeterChoice::Amdgpu => "amdgpu",
    MeterChoice::Rapl => "rapl",
    MeterChoice::Estimate => "estimate",
});

value_enum!(DatasetKind {
    DatasetKind::Mnist => "mnist",
    DatasetKind::Digits => "digits",
    DatasetKind::Cifar10 => "cifar10",
    DatasetKind::Text => "text": "Jane Austen's six novels, character vocabulary of the file",
    DatasetKind::FashionMnist => "fashion-mnist": "Fashion-MNIST: the MNIST layout and format, clothing classes",
    DatasetKind::Shakespeare => "shakespeare": "The 43 Shakespeare works, byte vocabulary (256)",
});

value_enum!(report::Format {
    report::Format::Md => "md": "leaderboard.md (GitHub Markdown)",
    report::Format::Csv => "csv": "leaderboard.csv (one row per system x variant)",
    report::Format::Json => "json": "leaderboard.json (the whole leaderboard)",
    report::Format::Latex => "latex": "leaderboard.tex (booktabs + siunitx + threeparttable; compiles with pdflatex)",
    report::Format::Html => "html": "leaderboard.html (one self-contained page with SVG charts)",
    report::Format::Emissions => "emissions": "emissions.csv (CodeCarbon's 38 columns)",
    report::Format::Footprint => "footprint": "footprint.md: carbon, inference energy and break-even per run (a separate table)",
    report::Format::FootprintCsv => "footprint-csv": "footprint.csv: the same, one row per run",
    report::Format::Text => "text": "the terminal table",
});

value_enum!(footprint::Format {
    footprint::Format::Md => "md",
    footprint::Format::Csv => "csv",
    footprint::Format::Json => "json",
});

value_enum!(OptChoice {
    OptChoice::Fused => "fused",
    OptChoice::Candle => "candle",
});

value_enum!(Engine {
    Engine::Slurm => "slurm": "An sbatch script (`bash` it to submit the array and the merge; `sbatch` it for the array)",
    Engine::K8s => "k8s": "A Kubernetes Indexed Job (YAML)",
    Engine::Parallel => "parallel": "A GNU parallel command line",
});

value_enum!(Isolation {
    Isolation::Gpu => "gpu": "One GPU per task (`--gres=gpu:1`): NVML counters are per board",
    Isolation::Exclusive => "exclusive": "The whole node per task (`--exclusive`): RAPL and IPMI are node-wide",
    Isolation::None => "none": "Neither (shared CPUs: energy is flagged, for tests and estimates only)",
});

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    fn round_trips<T: ValueEnum + PartialEq + std::fmt::Debug>() -> usize {
        for v in T::value_variants() {
            let name = v.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(&T::from_str(&name, false).unwrap(), v, "{name}");
        }
        T::value_variants().len()
    }

    #[test]
    fn every_value_round_trips() {
        assert_eq!(round_trips::<MeterChoice>(), 5);
        assert_eq!(round_trips::<DatasetKind>(), DatasetKind::ALL.len());
        assert_eq!(round_trips::<report::Format>(), 9);
        assert_eq!(round_trips::<footprint::Format>(), 3);
        assert_eq!(round_trips::<OptChoice>(), 2);
        assert_eq!(round_trips::<Engine>(), 3);
        assert_eq!(round_trips::<Isolation>(), 3);
    }

    /// The spelling on the command line is the one run files and `list` use.
    #[test]
    fn names_agree_with_the_library() {
        for k in DatasetKind::ALL {
            assert_eq!(k.to_possible_value().unwrap().get_name(), k.as_str());
        }
        let meter = serde_json::to_string(&MeterChoice::Estimate).unwrap();
        assert_eq!(meter, "\"estimate\"");
    }
}
