//! The client commands: submit specs to the API, list and follow runs, read metrics and
//! logs, cancel, retry and delete runs, fetch an experiment's figures; experiments, a run's
//! analyses and its checkpoints in [`experiment`], [`analysis`] and [`checkpoint`].

pub mod analysis;
pub mod checkpoint;
pub mod experiment;

use crate::args::{ListArgs, SubmitArgs, WeightsReading};
use anyhow::{bail, Context, Result};
use client::{Client, FiguresOf, RunQuery};
use domain::report::Report;
use domain::service::{
    AnalysisPlan, ExperimentImport, ExperimentView, FigureList, ImportSubmission, JobState,
    RunSubmission, RunView,
};
use domain::{ExperimentSpec, RunSpec, SpecFile};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

/// Where the API is and how to authenticate.
pub struct Api {
    pub url: String,
    pub token: Option<String>,
}

impl Api {
    fn client(&self) -> Result<Client> {
        Ok(Client::new(&self.url, self.token.clone())?)
    }
}

fn id(raw: &str) -> Result<Uuid> {
    Uuid::parse_str(raw).with_context(|| format!("{raw:?} is not an id (a UUID)"))
}

/// A run as the command line names it: its id, or its name (`list` prints both; an
/// experiment's runs are named `experiment/configuration/seedN`).
fn run_id(client: &Client, raw: &str) -> Result<Uuid> {
    if let Ok(id) = Uuid::parse_str(raw) {
        return Ok(id);
    }
    only_one(Kind::Run, raw, &runs_named(client, raw)?)
}

/// An experiment by its id or its name.
fn experiment_id(client: &Client, raw: &str) -> Result<Uuid> {
    if let Ok(id) = Uuid::parse_str(raw) {
        return Ok(id);
    }
    only_one(Kind::Experiment, raw, &experiments_named(client, raw)?)
}

/// What `watch`, `figures`, `cancel`, `retry` and `delete` act on: a run or an
/// experiment, by id or name (a run's name first).
enum Target {
    Run(Uuid),
    Experiment(Uuid),
}

fn target(client: &Client, raw: &str) -> Result<Target> {
    if let Ok(id) = Uuid::parse_str(raw) {
        return Ok(match client.experiment(id) {
            Ok(_) => Target::Experiment(id),
            Err(e) if e.status() == Some(client::StatusCode::NOT_FOUND) => Target::Run(id),
            Err(e) => return Err(e.into()),
        });
    }
    let runs = runs_named(client, raw)?;
    if !runs.is_empty() {
        return only_one(Kind::Run, raw, &runs).map(Target::Run);
    }
    let experiments = experiments_named(client, raw)?;
    if experiments.is_empty() {
        bail!("no run or experiment is named {raw:?} (give an id or a name, as `list` and `experiment list` print them)");
    }
    only_one(Kind::Experiment, raw, &experiments).map(Target::Experiment)
}

/// At most this many namesakes are looked up (and listed when the name is ambiguous).
const NAMESAKES: u32 = 10;

fn runs_named(client: &Client, name: &str) -> Result<Vec<Uuid>> {
    let query = RunQuery {
        name: Some(name.to_string()),
        limit: Some(NAMESAKES),
        ..RunQuery::default()
    };
    Ok(client
        .list_runs(&query)?
        .items
        .iter()
        .map(|r| r.id)
        .collect())
}

fn experiments_named(client: &Client, name: &str) -> Result<Vec<Uuid>> {
    let page = client.experiments(NAMESAKES, Some(name))?;
    Ok(page.items.iter().map(|e| e.id).collect())
}

/// What a name names.
#[derive(Clone, Copy)]
enum Kind {
    Run,
    Experiment,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Experiment => "experiment",
        }
    }

    /// The command that lists them with their ids and names.
    fn listing(self) -> &'static str {
        match self {
            Self::Run => "list",
            Self::Experiment => "experiment list",
        }
    }
}

/// The one id found under a name; an error when there is none, or several (newest first).
fn only_one(kind: Kind, name: &str, ids: &[Uuid]) -> Result<Uuid> {
    match ids {
        [id] => Ok(*id),
        [] => bail!(
            "no {} is named {name:?} (give its id or its name, as `{}` prints them)",
            kind.noun(),
            kind.listing()
        ),
        several => bail!(
            "{} {}s are named {name:?}; give the id of one (newest first): {}",
            if several.len() as u32 >= NAMESAKES {
                "several".to_string()
            } else {
                several.len().to_string()
            },
            kind.noun(),
            several
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn submit(api: &Api, args: SubmitArgs) -> Result<ExitCode> {
    let client = api.client()?;
    let text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading {}", args.spec.display()))?;
    match SpecFile::from_toml(&text).with_context(|| format!("{}", args.spec.display()))? {
        SpecFile::Experiment(spec) => submit_experiment(&client, spec, &args),
        SpecFile::Run(spec) => submit_run(&client, spec, &args),
    }
}

fn submit_experiment(
    client: &Client,
    mut spec: ExperimentSpec,
    args: &SubmitArgs,
) -> Result<ExitCode> {
    if args.no_analysis || args.analysis != "final" {
        bail!(
            "an experiment's runs are analysed as its `analysis_checkpoints` says: drop \
             --analysis and --no-analysis"
        );
    }
    let key = args.idempotency_key.as_deref();
    if let Some(n) = args.analysis_examples {
        spec.analysis.max_examples = n;
    }
    let view = if args.weights.is_empty() {
        client.submit_experiment(&spec, key)?
    } else {
        let submission = ExperimentImport {
            spec,
            key: args.reading.key.clone(),
            strip_prefix: args.reading.strip_prefix.clone(),
        };
        submission.validate().context("invalid submission")?;
        let runs = submission.spec.runs();
        let mut files = vec![];
        for given in &args.weights {
            let (run, file) = given.split_once('=').with_context(|| {
                format!("--weights {given}: an experiment's are LABEL/SEED=FILE")
            })?;
            let part = format!("weights/{run}");
            let index = submission.run_of_part(&part).map_err(anyhow::Error::msg)?;
            let file = PathBuf::from(file);
            check_weights(&runs[index].spec, &file, &args.reading)?;
            files.push((part, file));
        }
        client.import_experiment(&submission, &files, key)?
    };
    if args.json {
        return json(&view);
    }
    super::print_text(&format!(
        "experiment {} ({}): {} runs",
        view.id,
        view.name,
        view.runs.len()
    ))?;
    for run in &view.runs {
        super::print_text(&format!(
            "  run {} {}{}",
            run.id,
            run.name.as_deref().unwrap_or(""),
            if run.weights.is_some() {
                " (imported)"
            } else {
                ""
            }
        ))?;
    }
    submitted(client, args.watch, Target::Experiment(view.id))
}

fn submit_run(client: &Client, spec: RunSpec, args: &SubmitArgs) -> Result<ExitCode> {
    let key = args.idempotency_key.as_deref();
    let analysis = if args.no_analysis {
        None
    } else {
        let mut plan = AnalysisPlan {
            checkpoints: args
                .analysis
                .parse()
                .map_err(|bad| anyhow::anyhow!("--analysis {bad}"))?,
            ..Default::default()
        };
        if let Some(n) = args.analysis_examples {
            plan.spec.max_examples = n;
        }
        Some(plan)
    };
    let view = match args.weights.as_slice() {
        [] => client.submit_run(&RunSubmission { spec, analysis }, key)?,
        [file] => {
            let file = Path::new(file);
            let submission = ImportSubmission {
                spec,
                analysis,
                key: args.reading.key.clone(),
                strip_prefix: args.reading.strip_prefix.clone(),
            };
            // The submission first: reading weights can take a while.
            submission.validate().context("invalid submission")?;
            check_weights(&submission.spec, file, &args.reading)?;
            client.import_run(&submission, file, key)?
        }
        _ => bail!("a run spec takes one --weights FILE"),
    };
    if args.json {
        return json(&view);
    }
    super::print_text(&format!("run {} ({}) {}", view.id, view.label, view.status))?;
    submitted(client, args.watch, Target::Run(view.id))
}

/// Checks weights to upload as the trainer will, so that another model's are refused
/// before they travel.
fn check_weights(spec: &RunSpec, file: &Path, reading: &WeightsReading) -> Result<()> {
    let tensors = super::model::read_weights(file, reading)?;
    train::check_weights(spec, &tensors, &file.display().to_string())?;
    Ok(())
}

/// After a submission: done, or with `--watch` following what was submitted.
fn submitted(client: &Client, watch: bool, target: Target) -> Result<ExitCode> {
    if watch {
        return follow(client, target, Duration::from_secs(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn json(value: &impl serde::Serialize) -> Result<ExitCode> {
    super::print_json(value)?;
    Ok(ExitCode::SUCCESS)
}

pub fn list(api: &Api, args: ListArgs) -> Result<ExitCode> {
    let client = api.client()?;
    let query = RunQuery {
        status: args.status,
        arch: args.arch,
        tag: args.tag,
        experiment: args
            .experiment
            .map(|e| experiment_id(&client, &e))
            .transpose()?,
        name: None,
        cursor: None,
        limit: Some(args.limit),
    };
    let page = client.list_runs(&query)?;
    if args.json {
        return json(&page);
    }
    let mut lines = vec![format!(
        "{:<36}  {:<28} {:<10} {:<11} {:>9} {:>9}  {}",
        "id", "name", "dataset", "status", "epochs", "best acc", "analyses"
    )];
    for r in &page.items {
        let line = format!(
            "{:<36}  {:<28} {:<10} {:<11} {:>9} {:>9}  {}",
            r.id,
            domain::service::run_title(r.name.as_deref(), &r.label),
            r.dataset,
            r.status.as_str(),
            format!("{}/{}", r.epochs_done, r.epochs),
            r.best_test_accuracy
                .map_or("-".into(), |a| format!("{:.2}%", 100.0 * a)),
            match r.analyses_pending {
                0 => String::new(),
                n => domain::service::analyses_pending(n as usize),
            }
        );
        lines.push(line.trim_end().to_string());
    }
    if page.next_cursor.is_some() {
        lines.push(format!("(more: raise --limit above {})", args.limit));
    }
    super::print_text(&lines.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// The workers the API has seen lately: what they take, their budget, when they were last
/// seen and what each runs.
pub fn workers(api: &Api, as_json: bool) -> Result<ExitCode> {
    let workers = api.client()?.workers()?;
    if as_json {
        return json(&workers);
    }
    let now = chrono::Utc::now();
    let mut lines = vec![format!(
        "{:<28} {:<14} {:>14} {:>18}  {}",
        "name", "takes", "budget", "seen", "working on"
    )];
    for w in &workers {
        let kinds: Vec<&str> = w.kinds.iter().map(|k| k.as_str()).collect();
        let ago = (now - w.seen_at).to_std().unwrap_or_default();
        lines.push(format!(
            "{:<28} {:<14} {:>14} {:>18}  {}",
            w.name,
            kinds.join(","),
            w.capacity.to_string(),
            format!("{} ago", indicatif::HumanDuration(ago)),
            match &w.job {
                Some(job) => format!(
                    "{} job of run {} {} · {}",
                    job.kind,
                    job.run_id,
                    job.run(),
                    job.doing()
                ),
                None => w.presence(now),
            }
        ));
    }
    super::print_text(&lines.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}

fn describe(r: &RunView) -> String {
    let mut lines = vec![
        format!(
            "run {} ({}{})",
            r.id,
            r.label,
            r.name.as_ref().map_or(String::new(), |n| format!(", {n}"))
        ),
        format!("  status    {}", r.status),
        format!("  dataset   {}", r.dataset),
        format!(
            "  progress  epoch {}/{}, step {}/{}{}",
            r.epochs_done,
            r.epochs,
            r.step,
            r.total_steps,
            r.eta_seconds
                .map_or(String::new(), |s| format!(", about {:.0} s left", s))
        ),
        format!("  attempts  {}", r.attempts),
    ];
    if r.analyses_pending > 0 {
        let pending = domain::service::analyses_pending(r.analyses_pending as usize);
        lines.push(format!("  analyses  {pending}"));
    }
    if let Some(w) = &r.weights {
        lines.push(format!(
            "  weights   {} ({} bytes, sha256 {}), imported rather than trained",
            w.file_name, w.size, w.sha256
        ));
    }
    if let Some(acc) = r.best_test_accuracy {
        lines.push(format!("  best test accuracy {:.2}%", 100.0 * acc));
    }
    match (r.failure_kind, &r.last_error) {
        (Some(kind), Some(error)) => lines.push(format!("  last failure ({kind}): {error}")),
        // A worker too small for the run gave it back to wait for a larger one.
        (None, Some(error)) => lines.push(format!("  last error {error}")),
        _ => {}
    }
    lines.join("\n")
}

pub fn status(api: &Api, run: &str, as_json: bool) -> Result<ExitCode> {
    let client = api.client()?;
    let view = client.run(run_id(&client, run)?)?;
    if as_json {
        return json(&view);
    }
    super::print_text(&describe(&view))?;
    Ok(ExitCode::SUCCESS)
}

/// Follows a run, or every run of an experiment, until training ends and then until the
/// analyses are done; fails unless every run succeeded.
pub fn watch(api: &Api, raw: &str, every: f64) -> Result<ExitCode> {
    let client = api.client()?;
    let target = target(&client, raw)?;
    follow(
        &client,
        target,
        Duration::from_secs_f64(every.clamp(0.1, 60.0)),
    )
}

/// `watch`'s loop, polling every `every`.
fn follow(client: &Client, target: Target, every: Duration) -> Result<ExitCode> {
    let run = match target {
        Target::Experiment(id) => return experiment::watch(client, id, every),
        Target::Run(id) => id,
    };
    let bar = run_bar();
    let view = loop {
        let view = client.run(run)?;
        show_progress(&bar, &view);
        if view.status.is_final() {
            break view;
        }
        std::thread::sleep(every);
    };
    bar.finish();
    await_analyses(client, &view, &bar, every)?;
    super::print_text(&describe(&view))?;
    Ok(succeeded(&[view]))
}

/// A progress bar of a run's training steps.
fn run_bar() -> ProgressBar {
    ProgressBar::new(1).with_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    )
}

fn show_progress(bar: &ProgressBar, view: &RunView) {
    bar.set_prefix(format!("{} {}", view.label, view.status));
    bar.set_length(view.total_steps.max(1));
    bar.set_position(view.step);
    bar.set_message(format!(
        "epoch {}/{}{}{}",
        view.epochs_done,
        view.epochs,
        view.best_test_accuracy
            .map_or(String::new(), |a| format!(", best test {:.2}%", 100.0 * a)),
        view.eta_seconds
            .map_or(String::new(), |s| format!(", ~{s:.0} s left"))
    ));
}

/// Once a run has succeeded: waits until none of its analyses is pending, then names them.
fn await_analyses(
    client: &Client,
    run: &RunView,
    bar: &ProgressBar,
    every: Duration,
) -> Result<()> {
    if run.status != JobState::Succeeded {
        return Ok(());
    }
    loop {
        let analyses = client.analyses(run.id)?;
        let pending = analyses.iter().filter(|a| !a.status.is_final()).count();
        if pending == 0 {
            for a in &analyses {
                eprintln!(
                    "{}: analysis {} of epoch {}: {}",
                    run.label, a.id, a.epoch, a.status
                );
            }
            return Ok(());
        }
        let at: Vec<String> = analyses
            .iter()
            .filter_map(|a| {
                let progress = a.progress.as_ref()?;
                Some(format!("epoch {}: {}", a.epoch, progress.describe()))
            })
            .collect();
        let pending = domain::service::analyses_pending(pending);
        bar.set_message(match at.as_slice() {
            [] => pending,
            _ => format!("{pending} · {}", at.join("; ")),
        });
        std::thread::sleep(every);
    }
}

fn succeeded(runs: &[RunView]) -> ExitCode {
    if runs.iter().all(|r| r.status == JobState::Succeeded) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub fn metrics(
    api: &Api,
    run: &str,
    name: Option<&str>,
    split: Option<&str>,
    csv: bool,
) -> Result<ExitCode> {
    let client = api.client()?;
    let run = run_id(&client, run)?;
    if csv {
        let text = client.metrics_csv(run, name, split)?;
        super::print_text(text.trim_end())?;
        return Ok(ExitCode::SUCCESS);
    }
    let records = client.metrics(run, name, split)?;
    let mut lines = vec![format!(
        "{:<24} {:<6} {:>6} {:<8} {:>12}",
        "name", "split", "epoch", "block", "value"
    )];
    for r in &records {
        lines.push(format!(
            "{:<24} {:<6} {:>6} {:<8} {:>12.6}",
            r.name.as_str(),
            r.split.map_or("", |s| s.as_str()),
            r.epoch,
            r.block.map_or(String::new(), |b| b.to_string()),
            r.value
        ));
    }
    super::print_text(&lines.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// Cancels a run, or every queued or running run of an experiment.
pub fn cancel(api: &Api, raw: &str) -> Result<ExitCode> {
    let client = api.client()?;
    match target(&client, raw)? {
        Target::Run(id) => print_run_state(&client.cancel(id)?),
        Target::Experiment(id) => print_run_states(&client.cancel_experiment(id)?),
    }
}

/// Queues a run, or every failed or cancelled run of an experiment, again.
pub fn retry(api: &Api, raw: &str) -> Result<ExitCode> {
    let client = api.client()?;
    match target(&client, raw)? {
        Target::Run(id) => print_run_state(&client.retry(id)?),
        Target::Experiment(id) => print_run_states(&client.retry_experiment(id)?),
    }
}

fn print_run_state(view: &RunView) -> Result<ExitCode> {
    super::print_text(&format!("run {} is {}", view.id, view.status))?;
    Ok(ExitCode::SUCCESS)
}

fn print_run_states(view: &ExperimentView) -> Result<ExitCode> {
    let lines: Vec<String> = view
        .runs
        .iter()
        .map(|r| {
            let name = r.name.as_deref().unwrap_or(&r.label);
            format!("run {} ({name}) is {}", r.id, r.status)
        })
        .collect();
    super::print_text(&lines.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// Deletes a run, or an experiment with all its runs, and their files.
pub fn delete(api: &Api, raw: &str) -> Result<ExitCode> {
    let client = api.client()?;
    let deleted = match target(&client, raw)? {
        Target::Run(id) => client.delete_run(id).map(|()| format!("run {id}")),
        Target::Experiment(id) => client
            .delete_experiment(id)
            .map(|()| format!("experiment {id} with its runs")),
    }?;
    super::print_text(&format!("{deleted} deleted"))?;
    Ok(ExitCode::SUCCESS)
}

pub fn logs(api: &Api, run: &str, limit: u32) -> Result<ExitCode> {
    let client = api.client()?;
    let text = client.logs_text(run_id(&client, run)?, limit)?;
    super::print_text(text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

/// Every figure of an experiment or a run, or of several together (all their runs), as SVG
/// and PNG files in `out`, as `stepwise figures --run` writes them locally; `blocks.csv`;
/// and of one experiment `report.md`, as `stepwise run` writes it.
pub fn figures(api: &Api, targets: &[String], out: &Path) -> Result<ExitCode> {
    let client = api.client()?;
    let of = match targets {
        [one] => match target(&client, one)? {
            Target::Experiment(id) => FiguresOf::Experiment(id),
            Target::Run(id) => FiguresOf::Run(id),
        },
        several => {
            let mut runs: Vec<Uuid> = vec![];
            for raw in several {
                let ids = match target(&client, raw)? {
                    Target::Run(id) => vec![id],
                    Target::Experiment(id) => {
                        client.experiment(id)?.runs.iter().map(|r| r.id).collect()
                    }
                };
                // An experiment named beside one of its runs draws that run once.
                for id in ids {
                    if !runs.contains(&id) {
                        runs.push(id);
                    }
                }
            }
            FiguresOf::Runs(runs)
        }
    };
    let FigureList { figures, left_out } = client.figure_list(&of)?;
    if figures.is_empty() {
        bail!("no results to draw yet: the runs have no metrics or analyses");
    }
    for l in &left_out {
        let run = l.run();
        eprintln!(
            "{run}: left out of {}'s block-wise figures and blocks.csv: {}",
            l.configuration, l.reason
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = vec![];
    for name in figures {
        for file in [format!("{name}.svg"), format!("{name}.png")] {
            let bytes = client.figure(&of, &file)?;
            let path = out.join(file);
            resnet::checkpoint::write_atomic(&path, &bytes)?;
            written.push(path);
        }
    }
    let blocks = client.block_summaries(&of)?;
    let blocks = super::figures::write_blocks_csv(&blocks, &out.join("blocks.csv"))?;
    let mut listed: Vec<PathBuf> = written.iter().chain(&blocks).cloned().collect();
    if let FiguresOf::Experiment(id) = of {
        let report = experiment_report(api, &client, id, &written, blocks.as_deref(), out)?;
        let path = out.join("report.md");
        resnet::checkpoint::write_atomic(&path, report.as_bytes())?;
        listed.push(path);
    }
    let listed: Vec<String> = listed.iter().map(|p| p.display().to_string()).collect();
    super::print_text(&listed.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// `report.md` of an experiment on the API, as `stepwise run` writes one of local runs, its
/// figures and `blocks.csv` (written in `out`) linked.
fn experiment_report(
    api: &Api,
    client: &Client,
    id: Uuid,
    figures: &[PathBuf],
    blocks: Option<&Path>,
    out: &Path,
) -> Result<String> {
    let experiment = client.experiment(id)?;
    let claims = client.experiment_claims(id)?;
    let figures = super::figures::svg_links(figures, out);
    let blocks = blocks.map(|b| super::figures::link(b, out));
    let report = Report::of_experiment(&experiment, claims, Some(&api.url), figures, blocks);
    Ok(report.markdown())
}

#[cfg(test)]
mod tests {
    use super::{only_one, Kind, NAMESAKES};
    use uuid::Uuid;

    #[test]
    fn a_name_resolves_only_when_exactly_one_holds_it() {
        let ids: Vec<Uuid> = (1..=NAMESAKES as u128).map(Uuid::from_u128).collect();
        assert_eq!(only_one(Kind::Run, "r", &ids[..1]).unwrap(), ids[0]);
        let none = only_one(Kind::Run, "r", &[]).unwrap_err().to_string();
        assert!(none.starts_with("no run is named \"r\""), "{none}");
        let none = only_one(Kind::Experiment, "e", &[])
            .unwrap_err()
            .to_string();
        assert!(none.contains("as `experiment list` prints"), "{none}");
        let two = only_one(Kind::Experiment, "e", &ids[..2])
            .unwrap_err()
            .to_string();
        assert!(
            two.starts_with("2 experiments are named \"e\"") && two.contains(&ids[1].to_string()),
            "{two}"
        );
        // A full page of namesakes may not be all of them.
        let many = only_one(Kind::Run, "r", &ids).unwrap_err().to_string();
        assert!(many.starts_with("several runs"), "{many}");
    }
}
