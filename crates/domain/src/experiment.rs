//! An experiment: configurations (one model each) × seeds, trained with shared data and
//! training settings, analysed, drawn and compared with the paper together.

use crate::service::{AnalysisPlan, CheckpointSelection};
use crate::spec::{check_text, parse_toml, Errors};
use crate::{AnalysisSpec, DataSpec, ModelSpec, RunSpec, SpecError, TrainSpec};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Every configuration is trained once per seed.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    pub data: DataSpec,
    /// Training shared by every configuration (its `seed` is replaced by each seed).
    #[serde(default)]
    pub train: TrainSpec,
    /// Which checkpoints of each run are analysed (the final one always): `"final"`,
    /// `{ every = k }` or `{ epochs = [...] }`, as a run's analysis plan; the figures then
    /// follow the blocks over the analysed epochs.
    #[serde(default)]
    pub analysis_checkpoints: CheckpointSelection,
    /// How each analysed checkpoint is analysed.
    #[serde(default)]
    pub analysis: AnalysisSpec,
    pub configs: Vec<ConfigSpec>,
}

/// One configuration of an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// Default: the model's label (`resnet-110`, `single`, `resnet-110-ubn`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub model: ModelSpec,
    /// Replaces the experiment's training settings for this configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainSpec>,
}

impl ConfigSpec {
    /// Its label: the given one, or the model's.
    pub fn label(&self) -> String {
        self.label.clone().unwrap_or_else(|| self.model.label())
    }
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// One run of an experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentRun {
    pub label: String,
    pub seed: u64,
    pub spec: RunSpec,
}

impl ExperimentRun {
    /// The run's directory name inside the experiment's output.
    pub fn dir_name(&self) -> String {
        format!("{}-seed{}", self.label, self.seed)
    }
}

/// A spec file as `stepwise submit` and the dashboard take it: an experiment when it has
/// `configs`, else a run.
#[derive(Clone, Debug, PartialEq)]
pub enum SpecFile {
    Run(RunSpec),
    Experiment(ExperimentSpec),
}

impl SpecFile {
    /// Parses and validates either kind, naming the field of any error.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let table: toml::Table = parse_toml(text, "spec")?;
        if table.contains_key("configs") {
            ExperimentSpec::from_toml(text).map(Self::Experiment)
        } else {
            RunSpec::from_toml(text).map(Self::Run)
        }
    }
}

impl ExperimentSpec {
    /// Parses a TOML experiment, naming the field of any error.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec: Self = parse_toml(text, "experiment")?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an experiment spec serialises to TOML")
    }

    /// The analysis plan of every run.
    pub fn analysis_plan(&self) -> AnalysisPlan {
        AnalysisPlan {
            checkpoints: self.analysis_checkpoints.clone(),
            spec: self.analysis.clone(),
        }
    }

    /// Every run: configurations in order, each with every seed.
    pub fn runs(&self) -> Vec<ExperimentRun> {
        let mut out = vec![];
        for config in &self.configs {
            let label = config.label();
            for &seed in &self.seeds {
                let mut train = config.train.clone().unwrap_or_else(|| self.train.clone());
                train.seed = seed;
                let spec = RunSpec {
                    name: Some(format!("{}/{label}/seed{seed}", self.name)),
                    tags: vec![self.name.clone()],
                    model: config.model.clone(),
                    data: self.data.clone(),
                    train,
                };
                out.push(ExperimentRun {
                    label: label.clone(),
                    seed,
                    spec,
                });
            }
        }
        out
    }

    /// The configurations' labels, in order (distinct in a valid experiment).
    pub fn labels(&self) -> Vec<String> {
        self.configs.iter().map(ConfigSpec::label).collect()
    }

    /// Checks every field and every run, reporting all problems at once.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut e = Errors::default();
        let tag_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.name.is_empty() || self.name.len() > 64 || !self.name.chars().all(tag_char) {
            e.push("name", "1-64 of A-Z, a-z, 0-9, '.', '_', '-'");
        }
        if let Some(Err(bad)) = self
            .description
            .as_deref()
            .map(|d| check_text(d, 4000, true))
        {
            e.push("description", bad);
        }
        if self.seeds.is_empty() || self.seeds.len() > 32 {
            e.push("seeds", "give 1 to 32 seeds");
        }
        let mut seeds = self.seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        if seeds.len() != self.seeds.len() {
            e.push("seeds", "seeds must differ");
        }
        if self.configs.is_empty() || self.configs.len() > 64 {
            e.push("configs", "give 1 to 64 configurations");
        }
        let mut labels: Vec<String> = vec![];
        for (i, config) in self.configs.iter().enumerate() {
            let label = config.label();
            if label.is_empty() || label.len() > 64 || !label.chars().all(tag_char) {
                e.push(
                    &format!("configs[{i}].label"),
                    "1-64 of A-Z, a-z, 0-9, '.', '_', '-'",
                );
            }
            if labels.contains(&label) {
                e.push(
                    &format!("configs[{i}].label"),
                    format!("{label:?} is used twice; give the configurations labels"),
                );
            }
            labels.push(label);
        }
        if let Err(bad) = self.analysis.validate() {
            e.extend_prefixed("analysis.", bad);
        }
        // Within the shortest configuration (a configuration's train table may differ).
        if let Some(shortest) = self.runs().iter().map(|r| r.spec.epochs()).min() {
            self.analysis_checkpoints
                .check("analysis_checkpoints", shortest, &mut e);
        }
        // Each configuration's run spec, once (the seed does not change its validity).
        for (i, run) in self
            .runs()
            .iter()
            .step_by(self.seeds.len().max(1))
            .enumerate()
        {
            if let Err(bad) = run.spec.validate() {
                e.extend_prefixed(&format!("configs[{i}]."), bad);
            }
        }
        e.finish()
    }
}

/// The labels runs are drawn under when figures put them together (local run directories,
/// or runs on the API). Runs whose specs differ only in their seed (and name, tags and
/// checkpoint policy) are seeds of one configuration, labelled by the model (`resnet-20`).
/// Runs that repeat a seed are no set of seeds — the same run twice, or weights imported
/// beside the run they came from — and stand apart. Where configurations that differ in
/// more — the recipe, the data, the epochs — share a model label, each is labelled by its
/// first run's own name (`runs`: each run's name and spec) instead, so that no two of them
/// are averaged as if they were seeds.
pub fn configuration_labels(runs: &[(&str, &RunSpec)]) -> Vec<String> {
    let key = |spec: &RunSpec| {
        let mut spec = spec.clone();
        spec.train.seed = 0;
        spec.name = None;
        spec.tags.clear();
        spec.train.checkpoint = Default::default();
        serde_json::to_string(&spec).expect("a run spec serialises")
    };
    let mut groups: Vec<(String, Vec<usize>)> = vec![];
    for (i, (_, spec)) in runs.iter().enumerate() {
        let k = key(spec);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(i),
            None => groups.push((k, vec![i])),
        }
    }
    let mut configs: Vec<Vec<usize>> = vec![];
    for (_, members) in groups {
        let seeds: std::collections::HashSet<u64> =
            members.iter().map(|&i| runs[i].1.train.seed).collect();
        if seeds.len() == members.len() {
            configs.push(members);
        } else {
            configs.extend(members.into_iter().map(|i| vec![i]));
        }
    }
    let model = |config: &[usize]| runs[config[0]].1.model.label();
    let mut labels = vec![String::new(); runs.len()];
    for config in &configs {
        let shared = configs.iter().filter(|c| model(c) == model(config)).count() > 1;
        let label = match runs[config[0]].0 {
            name if shared && !name.is_empty() => name.to_string(),
            _ => model(config),
        };
        for &i in config {
            labels[i] = label.clone();
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: &str = r#"
name = "demo"
seeds = [0, 1]
[data]
dataset = "shapes10"
[train]
epochs = 2
[[configs]]
model = { arch = "resnet", depth = 8, width = 8 }
[[configs]]
label = "narrow"
model = { arch = "resnet", depth = 8, width = 4 }
"#;

    #[test]
    fn runs_are_seeds_of_one_configuration_only_where_their_specs_differ_in_the_seed_alone() {
        let spec = |seed: u64| {
            let mut s = RunSpec::new(
                ModelSpec::new(crate::Arch::Resnet),
                DataSpec::new("shapes10"),
            );
            s.model.depth = Some(20);
            s.train.seed = seed;
            s
        };
        let run = |name: &'static str, spec: RunSpec| (name, spec);
        let labels = |runs: &[(&'static str, RunSpec)]| {
            let runs: Vec<(&str, &RunSpec)> = runs.iter().map(|(n, s)| (*n, s)).collect();
            configuration_labels(&runs)
        };
        let mut named = spec(1);
        named.name = Some("second".into());
        named.train.checkpoint.keep_last = 0;
        let seeds = [run("a", spec(0)), run("b", named)];
        assert_eq!(labels(&seeds), ["resnet-20", "resnet-20"]);

        // Another learning rate is another configuration, even of the same model.
        let mut slower = spec(0);
        slower.train.schedule.lr = Some(0.05);
        let mut wide = spec(0);
        wide.model.arch = crate::Arch::Wide;
        wide.model.depth = None;
        let runs = [
            seeds[0].clone(),
            seeds[1].clone(),
            run("lr-0.05", slower),
            run("w", wide),
        ];
        assert_eq!(labels(&runs), ["a", "a", "lr-0.05", "wide"]);

        // The same seed twice (weights imported beside the run they came from) is no pair
        // of seeds.
        let twice = [run("trained", spec(0)), run("imported", spec(0))];
        assert_eq!(labels(&twice), ["trained", "imported"]);
    }

    #[test]
    fn runs_are_configurations_times_seeds() {
        let spec = ExperimentSpec::from_toml(QUICK).unwrap();
        let runs = spec.runs();
        let names: Vec<String> = runs.iter().map(ExperimentRun::dir_name).collect();
        assert_eq!(
            names,
            [
                "resnet-8-seed0",
                "resnet-8-seed1",
                "narrow-seed0",
                "narrow-seed1"
            ]
        );
        assert_eq!(runs[1].spec.train.seed, 1);
        assert_eq!(runs[1].spec.train.epochs, Some(2));
        assert_eq!(runs[3].spec.model.width, Some(4));
    }

    #[test]
    fn a_spec_file_is_an_experiment_when_it_has_configurations() {
        let experiment = SpecFile::from_toml(QUICK).unwrap();
        assert!(matches!(experiment, SpecFile::Experiment(e) if e.name == "demo"));
        let run = "[model]\narch = \"resnet\"\ndepth = 8\n[data]\ndataset = \"shapes10\"\n";
        assert!(
            matches!(SpecFile::from_toml(run).unwrap(), SpecFile::Run(r) if r.model.depth == Some(8))
        );
        // Syntax and type errors say where they are in the text.
        let err = SpecFile::from_toml("[model\n").unwrap_err().to_string();
        assert!(err.starts_with("spec: line 1, column 7: "), "{err}");
        let err = SpecFile::from_toml(&run.replace("depth = 8", "depth = \"eight\""));
        let err = err.unwrap_err().to_string();
        assert!(err.starts_with("model.depth: line 3, column 9: "), "{err}");
        let err = SpecFile::from_toml(&run.replace("depth = 8", "depth = 9")).unwrap_err();
        assert!(err.to_string().contains("model.depth"), "{err}");
        let err = SpecFile::from_toml(&QUICK.replace("width = 4", "width = 0"));
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("configs[1].model.width"));
    }

    #[test]
    fn an_experiment_is_written_as_toml_that_reads_back() {
        let mut spec = ExperimentSpec::from_toml(QUICK).unwrap();
        assert_eq!(ExperimentSpec::from_toml(&spec.to_toml()).unwrap(), spec);
        spec.analysis_checkpoints = CheckpointSelection::Epochs(vec![0, 1]);
        spec.analysis.max_examples = 64;
        spec.configs[0].train = Some(TrainSpec {
            epochs: Some(1),
            ..TrainSpec::default()
        });
        assert_eq!(ExperimentSpec::from_toml(&spec.to_toml()).unwrap(), spec);
    }

    #[test]
    fn errors_name_the_configuration_and_field() {
        let bad = QUICK.replace("depth = 8, width = 4", "depth = 9, width = 4");
        let err = ExperimentSpec::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("configs[1].model.depth"), "{err}");
        let twice = QUICK
            .replace("label = \"narrow\"\n", "")
            .replace("width = 4", "width = 8");
        let err = ExperimentSpec::from_toml(&twice).unwrap_err().to_string();
        assert!(err.contains("used twice"), "{err}");
        let seeds = QUICK.replace("seeds = [0, 1]", "seeds = [1, 1]");
        assert!(ExperimentSpec::from_toml(&seeds).is_err());
    }

    #[test]
    fn analysis_checkpoints_make_every_runs_plan_within_the_shortest_configuration() {
        assert_eq!(
            ExperimentSpec::from_toml(QUICK).unwrap().analysis_plan(),
            AnalysisPlan::default()
        );
        let every = QUICK.replace(
            "seeds = [0, 1]",
            "seeds = [0, 1]\nanalysis_checkpoints = { every = 1 }",
        );
        let plan = ExperimentSpec::from_toml(&every).unwrap().analysis_plan();
        assert_eq!(plan.checkpoints, CheckpointSelection::Every(1));
        assert_eq!(plan.epochs(2), [1, 2]);
        // The second configuration trains for one epoch only.
        let shorter = every.replace(
            "label = \"narrow\"\n",
            "label = \"narrow\"\ntrain = { epochs = 1 }\n",
        );
        assert!(ExperimentSpec::from_toml(&shorter).is_ok());
        let listed = shorter.replace("{ every = 1 }", "{ epochs = [2] }");
        let err = ExperimentSpec::from_toml(&listed).unwrap_err().to_string();
        assert!(
            err.contains("analysis_checkpoints.epochs: 2 is out of range 0..=1"),
            "{err}"
        );
    }
}
