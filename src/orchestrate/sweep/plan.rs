//! Suites and frozen plans (docs/design/scale-out.md "plan, then freeze").
//!
//! Owns: the suite files (`models/suite-<name>.toml`, or a user's TOML), expanding a suite into
//! a plan (entries sorted by task, variant and seed, each with a content-hash id; the measured
//! execution order; one hash over it all), reading a plan file back with its hash checked, and
//! which entries a shard runs (entry k belongs to shard k mod N).
//! Must not: train, measure or write run files (`sweep::run` does).

use crate::spec::task::{self, TaskSpec};
use crate::spec::variant::{self, Variant};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The plan file format version: bumped when the plan layout or the entry-id recipe changes.
pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("suite '{name}' not found: no {path}; valid suites: {valid}")]
    UnknownSuite {
        name: String,
        path: String,
        valid: String,
    },
    #[error("{path}: {message}")]
    Suite { path: String, message: String },
    #[error("plan file {path}: {message}")]
    Plan { path: String, message: String },
    #[error(
        "plan file {path}: hash mismatch (recorded {recorded}, content gives {computed}): the file was edited by hand or damaged; make a new one with `joulebench sweep plan`"
    )]
    HashMismatch {
        path: String,
        recorded: String,
        computed: String,
    },
    #[error("{0}")]
    Task(#[from] task::TaskError),
    #[error("{0}")]
    Variant(#[from] variant::VariantError),
}

/// A plan file whose content contradicts itself (a hand edit re-hashed, or a damaged file).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanFault {
    #[error("{0}")]
    Pause(#[from] crate::orchestrate::runner::PauseError),
    #[error("execution order names entry {0} twice or out of range")]
    OrderRepeats(usize),
    #[error("execution order misses entries")]
    OrderMisses,
    #[error("entry {0} names an unknown task or variant")]
    UnknownTaskOrVariant(usize),
    #[error("task {name}: {source}")]
    Task {
        name: String,
        source: task::InvalidKey,
    },
    #[error("entry {entry} names an unknown exec '{name}'")]
    UnknownExec { entry: usize, name: String },
    #[error("entry {entry} ({id}) does not match its spec")]
    EntryMismatch { entry: usize, id: String },
}

/// The order runs are executed in (docs/design/measurement.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Per task, variants interleaved across seeds with a rotating start (`runner::order`).
    #[default]
    Interleaved,
    /// A seeded shuffle of every run of the plan.
    Randomised,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Interleaved => "interleaved",
            Order::Randomised => "randomised",
        }
    }
}

/// `variants = "all"` (every variant this build implements) or a list of names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NameList {
    All(String),
    Names(Vec<String>),
}

/// A suite file: which tasks, variants and seeds, and how the series is measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    pub name: String,
    pub description: String,
    /// Task names (in the models folder) or `"all"`.
    pub tasks: NameList,
    pub variants: NameList,
    /// Seeds 1..=seeds.
    pub seeds: u64,
    #[serde(default)]
    pub order: Order,
    #[serde(default = "default_order_seed")]
    pub order_seed: u64,
    /// Idle baseline before the series and pause between runs, in seconds.
    pub idle_s: f64,
    pub cooldown_s: f64,
    /// Override of every task's epoch budget (quick suites).
    #[serde(default)]
    pub max_epochs: Option<usize>,
    /// Foreign programs run like native entries (`[[exec]]`: `joulebench exec` per run).
    #[serde(default)]
    pub exec: Vec<crate::orchestrate::exec::ExecSpec>,
    /// Stop each of joulebench's own runs whose forecast gives it under 1 % to reach T within
    /// its budget (`run --forecast-stop`; `stats::forecast`).
    #[serde(default)]
    pub forecast_stop: bool,
    /// Sequential seeds (`sweep --until-settled`): `seeds` is the most per variant; seeds run in
    /// rounds and a variant takes no more once its comparison with the baseline is settled
    /// (`stats::sequential`; the baseline runs at least 3 and then as many as a variant needs).
    #[serde(default)]
    pub until_settled: bool,
}

fn default_order_seed() -> u64 {
    1
}

/// Shipped suite names, from `models/suite-*.toml`.
pub fn suite_names(models_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(models_dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let n = e.file_name().to_str()?.to_string();
                    Some(n.strip_prefix("suite-")?.strip_suffix(".toml")?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A shipped suite by name.
pub fn find_suite(models_dir: &Path, name: &str) -> Result<Suite, PlanError> {
    let path = models_dir.join(format!("suite-{name}.toml"));
    if !path.is_file() {
        return Err(PlanError::UnknownSuite {
            name: name.into(),
            path: path.display().to_string(),
            valid: suite_names(models_dir).join(", "),
        });
    }
    load_suite(&path)
}

/// A suite from any TOML file.
pub fn load_suite(path: &Path) -> Result<Suite, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError::Suite {
        path: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    parse_suite(&text, path)
}

/// A suite from the text of the file at `path` (named in errors).
pub fn parse_suite(text: &str, path: &Path) -> Result<Suite, PlanError> {
    let err = |message: String| PlanError::Suite {
        path: path.display().to_string(),
        message,
    };
    let suite: Suite = toml::from_str(text).map_err(|e| err(e.to_string().replace('\n', " ")))?;
    if suite.seeds == 0 || suite.seeds > 10_000 {
        return Err(err(format!("seeds must be 1-10000, got {}", suite.seeds)));
    }
    for (key, v) in [("idle_s", suite.idle_s), ("cooldown_s", suite.cooldown_s)] {
        crate::orchestrate::runner::check_pause_s(key, v).map_err(|e| err(e.to_string()))?;
    }
    if suite.max_epochs == Some(0) {
        return Err(err("max_epochs must be at least 1".into()));
    }
    for list in [&suite.tasks, &suite.variants] {
        if let NameList::All(s) = list {
            if s != "all" {
                return Err(err(format!(
                    "expected \"all\" or a list of names, got \"{s}\""
                )));
            }
        }
    }
    Ok(suite)
}

/// Settings every run of a plan shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub idle_s: f64,
    pub cooldown_s: f64,
    pub stop_at_target: bool,
    pub order: Order,
    pub order_seed: u64,
    /// The suite's `forecast_stop` (absent when off, so older plans keep their hash).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forecast_stop: bool,
    /// Sequential seeds (absent when off): see [`UntilSettled`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_settled: Option<UntilSettled>,
}

/// Sequential seeds: looks after seed `min_seeds`, ..., `max_seeds` (`stats::sequential`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UntilSettled {
    pub min_seeds: u64,
    pub max_seeds: u64,
}

impl UntilSettled {
    pub fn seed_plan(&self) -> crate::stats::sequential::SeedPlan {
        crate::stats::sequential::SeedPlan {
            min_pairs: self.min_seeds as usize,
            max_pairs: self.max_seeds as usize,
        }
    }
}

/// One run of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the sorted list: shard = index mod shard count.
    pub index: usize,
    /// Content hash of the canonical spec (task spec, variant, seed, stop-at-target).
    pub id: String,
    pub task: String,
    pub variant: String,
    pub seed: u64,
    /// The `[[exec]]` program that trains this entry; absent for joulebench's own training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
}

/// A frozen sweep. `tasks` holds each task's full spec, so a worker needs no models folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub format: String,
    pub plan_version: u32,
    pub joulebench_version: String,
    pub name: String,
    /// sha256 of the canonical JSON of everything else in the file.
    pub hash: String,
    pub settings: Settings,
    pub tasks: Vec<TaskSpec>,
    pub variants: Vec<Variant>,
    pub entries: Vec<Entry>,
    /// Execution order: entry indexes, each once.
    pub execution: Vec<usize>,
    /// The foreign programs some entries run (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<crate::orchestrate::exec::ExecSpec>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Canonical JSON: serde_json's maps are sorted (no `preserve_order`), struct fields in
/// declaration order, so equal values give equal bytes.
fn canonical(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_value(v)
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_default()
}

/// The id of one of joulebench's own entries. A forecast stop changes what the run does, so
/// it is part of the id when on (and absent when off: ids of older plans are unchanged).
fn entry_id(spec: &TaskSpec, variant: &Variant, seed: u64, settings: &Settings) -> String {
    let mut spec = serde_json::json!({
        "task": spec, "variant": variant, "seed": seed, "stop_at_target": settings.stop_at_target,
    });
    if settings.forecast_stop {
        spec["forecast_stop"] = true.into();
    }
    sha256_hex(&canonical(&spec))[..16].to_string()
}

/// The id of an entry a foreign program trains: its spec (command and all) is part of it.
fn exec_entry_id(
    spec: &TaskSpec,
    variant: &Variant,
    seed: u64,
    stop_at_target: bool,
    exec: &crate::orchestrate::exec::ExecSpec,
) -> String {
    let spec = serde_json::json!({
        "task": spec, "variant": variant, "seed": seed, "stop_at_target": stop_at_target,
        "exec": exec,
    });
    sha256_hex(&canonical(&spec))[..16].to_string()
}

impl PlanFile {
    fn content_hash(&self) -> String {
        let mut v = self.clone();
        v.hash = String::new();
        sha256_hex(&canonical(&v))
    }

    pub fn task(&self, name: &str) -> Option<&TaskSpec> {
        self.tasks.iter().find(|t| t.name == name)
    }

    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// The `[[exec]]` program of that name.
    pub fn exec_spec(&self, name: &str) -> Option<&crate::orchestrate::exec::ExecSpec> {
        self.exec.iter().find(|x| x.name == name)
    }

    /// Entries of shard `index` of `count`, in execution order.
    pub fn shard(&self, index: u64, count: u64) -> Vec<&Entry> {
        self.execution
            .iter()
            .filter_map(|&i| self.entries.get(i))
            .filter(|e| e.index as u64 % count == index)
            .collect()
    }

    /// The entry's place in the execution order.
    pub fn position(&self, entry: &Entry) -> usize {
        self.execution
            .iter()
            .position(|&i| i == entry.index)
            .unwrap_or(entry.index)
    }

    /// `plan.json`'s text. An error, never an empty plan, when it cannot be encoded.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        Ok(serde_json::to_string_pretty(self)? + "\n")
    }

    /// Read a plan file: format, version and hash checked, every entry consistent.
    pub fn read(path: &Path) -> Result<PlanFile, PlanError> {
        let bytes = std::fs::read(path).map_err(|e| PlanError::Plan {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&bytes, path)
    }

    /// A plan from the bytes of the file at `path` (named in errors), checked as `read` does.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<PlanFile, PlanError> {
        let err = |message: String| PlanError::Plan {
            path: path.display().to_string(),
            message,
        };
        let probe: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| err(format!("not JSON: {e}")))?;
        if probe.get("format").and_then(|f| f.as_str()) != Some("joulebench-plan") {
            return Err(err(
                "not a joulebench plan (no \"format\": \"joulebench-plan\")".into(),
            ));
        }
        let version = probe.get("plan_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(PLAN_VERSION)) {
            return Err(err(format!(
                "plan_version {} but this joulebench ({}) reads version {PLAN_VERSION}: make the plan again with this version",
                version.map_or("missing".into(), |v| v.to_string()),
                env!("CARGO_PKG_VERSION")
            )));
        }
        // A setting of the wrong kind is named by its key (serde's message would not say which
        // field): an unknown order, seconds that are not a number (JSON has no NaN: null).
        for key in ["idle_s", "cooldown_s"] {
            if let Some(v) = probe.pointer(&format!("/settings/{key}")) {
                if !v.is_number() {
                    return Err(err(format!(
                        "settings.{key} must be a number of seconds, got {}",
                        crate::base::csvline::clip(&v.to_string())
                    )));
                }
            }
        }
        if let Some(order) = probe.pointer("/settings/order") {
            let known = [Order::Interleaved, Order::Randomised].map(Order::as_str);
            if !order.as_str().is_some_and(|o| known.contains(&o)) {
                return Err(err(format!(
                    "settings.order must be \"interleaved\" or \"randomised\", got {}",
                    crate::base::csvline::clip(&order.to_string())
                )));
            }
        }
        // serde quotes the offending value, which may hold a line break: keep the error one line.
        let plan: PlanFile = serde_json::from_value(probe)
            .map_err(|e| err(e.to_string().replace('\n', "\\n").replace('\r', "\\r")))?;
        let computed = plan.content_hash();
        if computed != plan.hash {
            return Err(PlanError::HashMismatch {
                path: path.display().to_string(),
                recorded: plan.hash.clone(),
                computed,
            });
        }
        plan.check().map_err(|e| err(e.to_string()))?;
        Ok(plan)
    }

    fn check(&self) -> Result<(), PlanFault> {
        // The settings as a suite's are checked (a re-hashed hand edit passes the hash).
        let s = &self.settings;
        for (key, v) in [
            ("settings.idle_s", s.idle_s),
            ("settings.cooldown_s", s.cooldown_s),
        ] {
            crate::orchestrate::runner::check_pause_s(key, v)?;
        }
        let mut seen = vec![false; self.entries.len()];
        for &i in &self.execution {
            match seen.get_mut(i) {
                Some(s) if !*s => *s = true,
                _ => return Err(PlanFault::OrderRepeats(i)),
            }
        }
        if seen.iter().any(|s| !s) {
            return Err(PlanFault::OrderMisses);
        }
        for (k, e) in self.entries.iter().enumerate() {
            let (Some(t), Some(v)) = (self.task(&e.task), self.variant(&e.variant)) else {
                return Err(PlanFault::UnknownTaskOrVariant(k));
            };
            t.validate().map_err(|source| PlanFault::Task {
                name: t.name.clone(),
                source,
            })?;
            let id = match &e.exec {
                None => entry_id(t, v, e.seed, &self.settings),
                Some(name) => {
                    let x = self.exec_spec(name).ok_or_else(|| PlanFault::UnknownExec {
                        entry: k,
                        name: name.clone(),
                    })?;
                    exec_entry_id(t, v, e.seed, self.settings.stop_at_target, x)
                }
            };
            if e.index != k || e.id != id {
                return Err(PlanFault::EntryMismatch {
                    entry: k,
                    id: e.id.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Expand a suite into a frozen plan.
pub fn expand(suite: &Suite, models_dir: &Path) -> Result<PlanFile, PlanError> {
    let mut tasks = match &suite.tasks {
        NameList::All(_) => task::load_all(models_dir)?,
        NameList::Names(names) => names
            .iter()
            .map(|n| task::find(models_dir, n))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if let Some(e) = suite.max_epochs {
        for t in &mut tasks {
            t.budget.max_epochs = e;
        }
    }
    tasks.sort_by(|a, b| a.name.cmp(&b.name));
    tasks.dedup_by(|a, b| a.name == b.name);
    // Only the suite's own tasks get native entries; an `[[exec]]` task joins the plan's
    // tasks (for its T and c) without them.
    let native_tasks: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let mut exec_names: Vec<&str> = Vec::new();
    for x in &suite.exec {
        x.check().map_err(|message| PlanError::Suite {
            path: format!("suite '{}'", suite.name),
            message: message.to_string(),
        })?;
        if exec_names.contains(&x.name.as_str()) {
            return Err(PlanError::Suite {
                path: format!("suite '{}'", suite.name),
                message: format!("two [[exec]] entries are named '{}'", x.name),
            });
        }
        exec_names.push(&x.name);
        for n in &x.tasks {
            if !tasks.iter().any(|t| &t.name == n) {
                let mut t = task::find(models_dir, n)?;
                if let Some(e) = suite.max_epochs {
                    t.budget.max_epochs = e;
                }
                tasks.push(t);
            }
        }
    }
    tasks.sort_by(|a, b| a.name.cmp(&b.name));
    let mut variants = match &suite.variants {
        NameList::All(_) => variant::catalog().into_iter().map(|(v, _)| v).collect(),
        NameList::Names(names) => names
            .iter()
            .map(|n| variant::parse(n))
            .collect::<Result<Vec<_>, _>>()?,
    };
    for x in &suite.exec {
        for n in &x.variants {
            variants.push(variant::parse(n)?);
        }
    }
    variants.sort_by(|a, b| a.name.cmp(&b.name));
    variants.dedup_by(|a, b| a.name == b.name);
    let settings = Settings {
        idle_s: suite.idle_s,
        cooldown_s: suite.cooldown_s,
        stop_at_target: true,
        order: suite.order,
        order_seed: suite.order_seed,
        forecast_stop: suite.forecast_stop,
        until_settled: suite.until_settled.then_some(UntilSettled {
            min_seeds: crate::stats::sequential::DEFAULT_MIN_PAIRS as u64,
            max_seeds: suite.seeds,
        }),
    };
    if suite.until_settled && suite.seeds < crate::stats::sequential::DEFAULT_MIN_PAIRS as u64 {
        return Err(PlanError::Suite {
            path: format!("suite '{}'", suite.name),
            message: format!(
                "until_settled needs seeds >= {} (the first look), got {}",
                crate::stats::sequential::DEFAULT_MIN_PAIRS,
                suite.seeds
            ),
        });
    }
    let seeds: Vec<u64> = (1..=suite.seeds).collect();
    let mut entries = Vec::new();
    // `variants = "all"` means every variant that applies to the task (no fine-tune without a
    // `[finetune] source`, no structured pruning or generators where the model has no hidden
    // units or images) and runs on any device (tf32 is CUDA-only: name it to include it). A
    // variant named explicitly is kept, and refused with its reason when it runs.
    let all_variants = matches!(suite.variants, NameList::All(_));
    let applies = |t: &TaskSpec, v: &Variant| {
        !all_variants
            || (v.precision != crate::spec::variant::Precision::Tf32
                && variant::check_applicable(
                    v,
                    &t.name,
                    crate::engine::variant_run::family(&t.model),
                    t.finetune.is_some(),
                    false,
                )
                .is_ok())
    };
    let suite_variant = |v: &Variant| match &suite.variants {
        NameList::All(_) => true,
        NameList::Names(n) => n.contains(&v.name),
    };
    for t in tasks.iter().filter(|t| native_tasks.contains(&t.name)) {
        for v in variants
            .iter()
            .filter(|v| suite_variant(v) && applies(t, v))
        {
            for &seed in &seeds {
                entries.push(Entry {
                    index: entries.len(),
                    id: entry_id(t, v, seed, &settings),
                    task: t.name.clone(),
                    variant: v.name.clone(),
                    seed,
                    exec: None,
                });
            }
        }
    }
    let native_entries = entries.len();
    for x in &suite.exec {
        for tn in &x.tasks {
            let Some(t) = tasks.iter().find(|t| &t.name == tn) else {
                continue;
            };
            for vn in &x.variants {
                let Some(v) = variants.iter().find(|v| &v.name == vn) else {
                    continue;
                };
                for &seed in &seeds {
                    entries.push(Entry {
                        index: entries.len(),
                        id: exec_entry_id(t, v, seed, settings.stop_at_target, x),
                        task: t.name.clone(),
                        variant: v.name.clone(),
                        seed,
                        exec: Some(x.name.clone()),
                    });
                }
            }
        }
    }
    if entries.is_empty() {
        return Err(PlanError::Suite {
            path: format!("suite '{}'", suite.name),
            message:
                "the suite has no runs (no task, no variant that applies, or no [[exec]] entry)"
                    .into(),
        });
    }
    // The plan lists only the variants some task runs.
    variants.retain(|v| entries.iter().any(|e| e.variant == v.name));
    let index_of = |task: &str, variant: &str, seed: u64| {
        entries.iter().position(|e| {
            e.exec.is_none() && e.task == task && e.variant == variant && e.seed == seed
        })
    };
    let execution: Vec<usize> = match suite.order {
        Order::Interleaved => {
            // Each program's run of a task, variant and seed right after joulebench's own, so
            // both see the same conditions; the rest in seed order.
            let native: Vec<usize> = (0..tasks.len())
                .flat_map(|ti| crate::orchestrate::runner::order(ti, &variants, &seeds))
                .filter_map(|j| index_of(&tasks[j.task].name, &j.variant.name, j.seed))
                .collect();
            let mut order = Vec::with_capacity(entries.len());
            let mut placed = vec![false; entries.len()];
            for i in native {
                order.push(i);
                placed[i] = true;
                let n = &entries[i];
                for x in &entries[native_entries..] {
                    if x.task == n.task && x.variant == n.variant && x.seed == n.seed {
                        order.push(x.index);
                        placed[x.index] = true;
                    }
                }
            }
            let mut rest: Vec<&Entry> = entries.iter().filter(|e| !placed[e.index]).collect();
            rest.sort_by_key(|e| (e.seed, e.index));
            order.extend(rest.iter().map(|e| e.index));
            order
        }
        Order::Randomised => {
            let mut rng = crate::engine::model::SeededRng::new(suite.order_seed, 11);
            let mut ix: Vec<usize> = (0..entries.len()).collect();
            for i in (1..ix.len()).rev() {
                let j = rng.below(i + 1);
                ix.swap(i, j);
            }
            ix
        }
    };
    // Sequential seeds run in rounds: every entry of seed 1, then of seed 2, ... (the order
    // within a round kept), so each round's decisions see the rounds before it.
    let mut execution = execution;
    if settings.until_settled.is_some() {
        execution.sort_by_key(|&i| entries[i].seed);
    }
    let mut plan = PlanFile {
        format: "joulebench-plan".into(),
        plan_version: PLAN_VERSION,
        joulebench_version: env!("CARGO_PKG_VERSION").into(),
        name: suite.name.clone(),
        hash: String::new(),
        settings,
        tasks,
        variants,
        entries,
        execution,
        exec: suite.exec.clone(),
    };
    plan.hash = plan.content_hash();
    Ok(plan)
}

/// Shard indexes (0-based) holding any of the given entry indexes, as a Slurm `--array=` list
/// ("0-2,5").
pub fn array_list(entry_indexes: &[usize], count: u64) -> String {
    let mut shards: Vec<u64> = entry_indexes.iter().map(|&i| i as u64 % count).collect();
    shards.sort_unstable();
    shards.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < shards.len() {
        let mut j = i;
        while j + 1 < shards.len() && shards[j + 1] == shards[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", shards[i], shards[j])
        } else {
            shards[i].to_string()
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// digits-mlp under every variant, 5 seeds, 2 epochs (a test suite other modules use too).
    pub(crate) fn suite(order: Order) -> Suite {
        Suite {
            name: "t".into(),
            description: "test".into(),
            tasks: NameList::Names(vec!["digits-mlp".into()]),
            variants: NameList::All("all".into()),
            seeds: 5,
            order,
            order_seed: 3,
            idle_s: 0.0,
            cooldown_s: 0.0,
            max_epochs: Some(2),
            exec: vec![],
            forecast_stop: false,
            until_settled: false,
        }
    }

    #[test]
    fn forecast_stop_is_part_of_the_plan_only_when_on() {
        let dir = task::default_models_dir();
        let off = expand(&suite(Order::Interleaved), &dir).unwrap();
        let json = off.to_json().unwrap();
        assert!(
            !json.contains("forecast_stop"),
            "older plans keep their bytes"
        );
        let mut s = suite(Order::Interleaved);
        s.forecast_stop = true;
        let on = expand(&s, &dir).unwrap();
        assert!(on.settings.forecast_stop);
        assert!(on.to_json().unwrap().contains("\"forecast_stop\": true"));
        assert_ne!(off.hash, on.hash);
        // A run that may be stopped is another run: every entry id changes.
        for (a, b) in off.entries.iter().zip(&on.entries) {
            assert_ne!(a.id, b.id);
        }
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("plan.json");
        std::fs::write(&p, on.to_json().unwrap()).unwrap();
        assert_eq!(PlanFile::read(&p).unwrap(), on);
    }

    #[test]
    fn exec_entries_are_planned_beside_native_ones() {
        let dir = task::default_models_dir();
        let mut s = suite(Order::Interleaved);
        s.variants = NameList::Names(vec!["f32".into(), "bf16-amp".into()]);
        s.seeds = 2;
        s.exec = vec![crate::orchestrate::exec::ExecSpec {
            devices: None,
            name: "torch".into(),
            command: vec!["python3".into(), "scripts/torch/{task_snake}.py".into()],
            tasks: vec!["digits-mlp".into(), "mnist-mlp".into()],
            variants: vec!["f32".into()],
            stop_at_target: false,
            max_time_s: None,
        }];
        let p = expand(&s, &dir).unwrap();
        // 2 native variants x 2 seeds on digits-mlp; the program on 2 tasks x 1 variant x 2.
        let native: Vec<&Entry> = p.entries.iter().filter(|e| e.exec.is_none()).collect();
        let exec: Vec<&Entry> = p.entries.iter().filter(|e| e.exec.is_some()).collect();
        assert_eq!((native.len(), exec.len()), (4, 4));
        assert!(native.iter().all(|e| e.task == "digits-mlp"));
        // mnist-mlp joins the plan's tasks for its T and c, with no native entry.
        assert!(p.task("mnist-mlp").is_some());
        // Interleaved: the program's digits-mlp f32 run right after joulebench's own.
        for (k, &i) in p.execution.iter().enumerate() {
            let e = &p.entries[i];
            if e.exec.is_some() && e.task == "digits-mlp" {
                let before = &p.entries[p.execution[k - 1]];
                assert!(
                    before.exec.is_none() && before.variant == e.variant && before.seed == e.seed
                );
            }
        }
        // Ids differ from the native entry of the same task, variant and seed.
        let n = native
            .iter()
            .find(|e| e.variant == "f32" && e.seed == 1)
            .unwrap();
        let x = exec
            .iter()
            .find(|e| e.task == "digits-mlp" && e.seed == 1)
            .unwrap();
        assert_ne!(n.id, x.id);
        assert_eq!(
            p.exec_spec("torch")
                .unwrap()
                .command_for("mnist-mlp", "f32")[1],
            "scripts/torch/mnist_mlp.py"
        );
        // The plan round-trips and checks.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("plan.json");
        std::fs::write(&path, p.to_json().unwrap()).unwrap();
        assert_eq!(PlanFile::read(&path).unwrap(), p);
        // A plan without [[exec]] says nothing of it (older plans read the same).
        let plain = expand(&suite(Order::Interleaved), &dir).unwrap();
        assert!(!plain.to_json().unwrap().contains("\"exec\""));
        // A suite with nothing to run is an error, not "0 runs".
        let mut empty = suite(Order::Interleaved);
        empty.tasks = NameList::Names(vec![]);
        assert!(expand(&empty, &dir)
            .unwrap_err()
            .to_string()
            .contains("no runs"));
        // A bad spec is a one-line error.
        s.exec[0].name = "a b".into();
        assert!(expand(&s, &dir)
            .unwrap_err()
            .to_string()
            .contains("exec name"));
    }

    #[test]
    fn plan_is_stable_sharded_and_hash_checked() {
        let dir = task::default_models_dir();
        let a = expand(&suite(Order::Interleaved), &dir).unwrap();
        let b = expand(&suite(Order::Interleaved), &dir).unwrap();
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.entries.len(), 5 * a.variants.len());
        // "all" leaves out what does not apply: tf32 off CUDA, fine-tuning without a source.
        let names: Vec<&str> = a.variants.iter().map(|v| v.name.as_str()).collect();
        assert!(names.contains(&"f32") && names.contains(&"unstructured-50"));
        assert!(!names.contains(&"tf32") && !names.iter().any(|n| n.contains("finetune")));
        let r = expand(&suite(Order::Randomised), &dir).unwrap();
        assert_ne!(a.hash, r.hash);
        assert_eq!(
            a.entries.iter().map(|e| &e.id).collect::<Vec<_>>(),
            r.entries.iter().map(|e| &e.id).collect::<Vec<_>>(),
            "entry ids do not depend on the order"
        );
        // Every entry in exactly one shard.
        let mut all: Vec<usize> = (0..3)
            .flat_map(|i| a.shard(i, 3))
            .map(|e| e.index)
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..a.entries.len()).collect::<Vec<_>>());
        // Round trip, then a hand edit is caught.
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("plan.json");
        std::fs::write(&p, a.to_json().unwrap()).unwrap();
        assert_eq!(PlanFile::read(&p).unwrap(), a);
        std::fs::write(
            &p,
            a.to_json().unwrap().replace("\"seed\": 5", "\"seed\": 6"),
        )
        .unwrap();
        let e = PlanFile::read(&p).unwrap_err().to_string();
        assert!(e.contains("hash mismatch"), "{e}");
        std::fs::write(
            &p,
            a.to_json()
                .unwrap()
                .replace("\"plan_version\": 1", "\"plan_version\": 9"),
        )
        .unwrap();
        let e = PlanFile::read(&p).unwrap_err().to_string();
        assert!(e.contains("plan_version 9"), "{e}");
    }

    #[test]
    fn rehashed_settings_are_checked_and_name_the_key() {
        let dir = task::default_models_dir();
        let good = expand(&suite(Order::Interleaved), &dir).unwrap();
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("plan.json");
        let read_with = |edit: &dyn Fn(&mut Settings)| {
            let mut p = good.clone();
            edit(&mut p.settings);
            p.hash = p.content_hash();
            std::fs::write(&path, p.to_json().unwrap()).unwrap();
            PlanFile::read(&path).map(|_| ()).map_err(|e| e.to_string())
        };
        assert_eq!(read_with(&|_| {}), Ok(()));
        for (edit, key) in [
            (
                &(|s: &mut Settings| s.idle_s = -5.0) as &dyn Fn(&mut Settings),
                "settings.idle_s",
            ),
            (
                &|s: &mut Settings| s.cooldown_s = -0.5,
                "settings.cooldown_s",
            ),
            (&|s: &mut Settings| s.idle_s = 1e300, "settings.idle_s"),
            (
                &|s: &mut Settings| s.cooldown_s = f64::NAN,
                "settings.cooldown_s",
            ),
        ] {
            let e = read_with(edit).unwrap_err();
            assert!(e.contains(key) && e.contains("plan.json"), "{e}");
            assert!(!e.contains("hash mismatch"), "{e}");
        }
        // An unknown order never deserialises: named by its key all the same.
        std::fs::write(
            &path,
            good.to_json()
                .unwrap()
                .replace("\"order\": \"interleaved\"", "\"order\": \"sideways\""),
        )
        .unwrap();
        let e = PlanFile::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("settings.order") && e.contains("sideways"),
            "{e}"
        );
        // A suite's seconds are bounded the same way.
        let st = t.path().join("s.toml");
        std::fs::write(
            &st,
            "name = \"s\"\ndescription = \"d\"\ntasks = [\"digits-mlp\"]\nvariants = \"all\"\nseeds = 1\nidle_s = 1e300\ncooldown_s = 0.0\n",
        )
        .unwrap();
        let e = load_suite(&st).unwrap_err().to_string();
        assert!(e.contains("idle_s") && e.contains("at most"), "{e}");
    }

    #[test]
    fn shipped_suites_load_and_unknown_lists_valid() {
        let dir = task::default_models_dir();
        for n in ["quick", "standard", "full"] {
            let s = find_suite(&dir, n).unwrap();
            expand(&s, &dir).unwrap();
        }
        let e = find_suite(&dir, "huge").unwrap_err().to_string();
        assert!(e.contains("quick") && e.contains("standard"), "{e}");
    }

    #[test]
    fn array_lists_collapse_ranges() {
        assert_eq!(array_list(&[0, 1, 2, 5, 9], 4), "0-2");
        assert_eq!(array_list(&[0, 5, 7, 12], 10), "0,2,5,7");
        assert_eq!(array_list(&[], 4), "");
    }
}
