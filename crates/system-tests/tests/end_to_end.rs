//! A `shapes10` run submitted over HTTP is trained, checkpointed and analysed by the real
//! workers, and its metrics and figures are served — driven by the README's curl
//! walk-through, run verbatim.

use domain::service::JobState;
use domain::MetricName;
use sha2::Digest;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use system_tests::{serial, wait_for, Settings, Stack};

/// The shell block between the walk-through markers of README.md.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("the walk-through's start marker");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("the walk-through's end marker");
    let block = &readme[start..end];
    let body = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.rsplit_once("```"))
        .expect("a ```sh block between the markers")
        .0;
    body.to_string()
}

#[test]
fn a_submitted_run_trains_checkpoints_is_analysed_and_served() {
    let _serial = serial();
    let mut stack = Stack::start(Settings::default());
    stack.spawn_worker("stepwise-trainer");
    stack.spawn_worker("stepwise-analyzer");
    let work = tempfile::tempdir().unwrap();
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &walkthrough()])
        .current_dir(work.path())
        .env("STEPWISE_API_URL", &stack.api_url)
        .output()
        .expect("bash runs the walk-through");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the walk-through failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        stack.logs()
    );
    assert!(stdout.contains("succeeded, best test accuracy"), "{stdout}");
    // Both epochs were analysed: the figure list has the blocks over training.
    assert!(
        stdout.contains("\"blocks_over_training_resnet-8\""),
        "{stdout}"
    );
    let svg = std::fs::read_to_string(work.path().join("fig2_cosine.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg:.200}");
    let png = std::fs::read(work.path().join("fig2_cosine.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    // The analysis' records the query names: the test split's mean cosines only.
    let records = stdout
        .split_once("name,split,epoch,block,block_index,kind,group,alpha,step,stat,value,n\n")
        .expect("the analysis' records as CSV")
        .1;
    let cosines: Vec<&str> = records
        .lines()
        .take_while(|l| l.starts_with("cosine,"))
        .collect();
    assert!(!cosines.is_empty(), "{stdout}");
    assert!(
        cosines
            .iter()
            .all(|l| l.starts_with("cosine,test,") && l.contains(",mean,")),
        "{records}"
    );
    // The blocks behind it: the header, then the test cosine of every block, one seed.
    assert!(
        stdout.contains("configuration,epoch,name,split,block,block_index,kind,runs,mean,sd\nresnet-8,2,cosine,test,s0.b0,0,identity,1,"),
        "{stdout}"
    );

    // The same run through the typed client: every epoch once, checkpoints, analyses.
    let client = stack.client();
    let run_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .expect("the walk-through prints the run id")
        .parse()
        .unwrap();
    let run = client.run(run_id).unwrap();
    assert_eq!(
        (run.status, run.epochs_done, run.attempts),
        (JobState::Succeeded, 2, 1)
    );
    let identity = run
        .resolved_spec
        .as_ref()
        .and_then(|s| s.data.identity.clone());
    assert_eq!(identity.map(|i| i.name).as_deref(), Some("shapes10"));
    let accuracy = client
        .metrics(run_id, Some("accuracy"), Some("test"))
        .unwrap();
    assert_eq!(accuracy.iter().map(|m| m.epoch).collect::<Vec<_>>(), [1, 2]);
    assert!(accuracy.iter().all(|m| m.name == MetricName::Accuracy));
    let checkpoints = client.checkpoints(run_id).unwrap();
    assert_eq!(
        checkpoints.iter().map(|c| c.epoch).collect::<Vec<_>>(),
        [1, 2]
    );
    for c in &checkpoints {
        let path = stack
            .checkpoint_dir()
            .join(format!("runs/{run_id}/attempt-1"))
            .join(&c.file_name);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), c.size);
    }
    let analyses = client.analyses(run_id).unwrap();
    assert_eq!(analyses.iter().map(|a| a.epoch).collect::<Vec<_>>(), [1, 2]);
    assert!(analyses.iter().all(|a| a.status == JobState::Succeeded));
    // Submitting the walk-through again with its key returns the same run.
    let again = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &walkthrough()])
        .current_dir(work.path())
        .env("STEPWISE_API_URL", &stack.api_url)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains(&format!("run {run_id}")));
    wait_for("nothing new to be queued", Duration::from_secs(5), || {
        client.list_runs(&Default::default()).unwrap().items.len() == 1
    });
}

/// Runs `stepwise` against the stack; returns (success, stdout, stderr).
#[test]
fn the_cli_client_commands_drive_runs_and_experiments() {
    let _serial = serial();
    let mut stack = Stack::start(Settings::default());
    stack.synth("tiny10", 512, 128);
    stack.spawn_worker("stepwise-trainer");
    stack.spawn_worker("stepwise-analyzer");
    let specs = tempfile::tempdir().unwrap();
    let run_spec = specs.path().join("run.toml");
    std::fs::write(
        &run_spec,
        "[model]\narch = \"resnet\"\ndepth = 8\nwidth = 4\n[data]\ndataset = \"tiny10\"\n\
         [train]\nepochs = 2\nbatch_size = 64\n",
    )
    .unwrap();
    let path = run_spec.to_str().unwrap();
    let (ok, out, err) = stack.stepwise(&[
        "submit",
        path,
        "--analysis",
        "every:1",
        "--analysis-examples",
        "64",
        "--json",
    ]);
    assert!(ok, "{err}");
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    let (ok, out, err) = stack.stepwise(&["watch", &id, "--every", "0.2"]);
    assert!(ok, "watch: {out}\n{err}\n{}", stack.logs());
    assert!(out.contains("status    succeeded"), "{out}");
    assert!(err.contains("of epoch 2: succeeded"), "{err}");
    let (ok, out, _) = stack.stepwise(&[
        "metrics", &id, "--name", "accuracy", "--split", "test", "--csv",
    ]);
    assert!(ok);
    assert_eq!(out.lines().count(), 3, "header and two epochs: {out}");
    let (ok, out, _) = stack.stepwise(&["list", "--status", "succeeded"]);
    assert!(ok && out.contains(&id), "{out}");
    let (ok, out, _) = stack.stepwise(&["status", &id]);
    assert!(ok && out.contains("epoch 2/2"), "{out}");
    let figures = specs.path().join("figures");
    let (ok, out, err) = stack.stepwise(&["figures", &id, "--out", figures.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("fig2_cosine.svg"), "{out}");
    // A finished run can be neither cancelled nor retried; the error says why.
    let (ok, _, err) = stack.stepwise(&["cancel", &id]);
    assert!(
        !ok && err.contains("409") && err.contains("only queued or running"),
        "{err}"
    );
    let (ok, _, err) = stack.stepwise(&["retry", &id]);
    assert!(!ok && err.contains("only failed or cancelled"), "{err}");
    let (ok, _, err) = stack.stepwise(&["status", "not-a-name"]);
    assert!(
        !ok && err.contains("no run is named \"not-a-name\""),
        "{err}"
    );

    // Its block-wise analyses: listed, shown as a table per split, every record as CSV.
    let (ok, out, err) = stack.stepwise(&["analysis", "list", &id]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("succeeded").count(), 2, "epochs 1 and 2: {out}");
    let analyses = stack.client().analyses(id.parse().unwrap()).unwrap();
    let last = analyses
        .iter()
        .find(|a| a.epoch == 2)
        .unwrap()
        .id
        .to_string();
    let (ok, out, err) = stack.stepwise(&["analysis", "show", &last]);
    assert!(ok, "{err}");
    assert!(out.contains("64 train, 64 test examples"), "{out}");
    let table = out.split_once("test split:").expect("a test table").1;
    let s0b0 = table.lines().find(|l| l.trim_start().starts_with("s0.b0"));
    let cosine = s0b0.and_then(|l| l.split_whitespace().nth(2));
    assert!(
        cosine.is_some_and(|c| c.parse::<f64>().is_ok_and(|c| (-1.0..=1.0).contains(&c))),
        "a mean cosine of block s0.b0: {out}"
    );
    let (ok, out, _) = stack.stepwise(&["analysis", "show", &last, "--csv"]);
    assert!(ok && out.starts_with("name,split,epoch,"), "{out}");
    // Some of them: a block's test cosines, its mean and median.
    let (ok, out, err) = stack.stepwise(&[
        "analysis", "show", &last, "--name", "cosine", "--block", "s0.b0", "--split", "test",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows.iter().all(|r| r.starts_with("cosine,test,2,s0.b0,")),
        "{out}"
    );
    let (ok, _, err) = stack.stepwise(&["analysis", "show", &last, "--name", "speed"]);
    assert!(
        !ok && err.contains("unknown variant `speed`, expected one of `loss`"),
        "{err}"
    );
    // Another analysis of epoch 1's checkpoint, on the test split only, waited for.
    let (ok, out, err) = stack.stepwise(&[
        "analysis",
        "request",
        &id,
        "--epoch",
        "1",
        "--metrics",
        "cosine,l2",
        "--splits",
        "test",
        "--max-examples",
        "32",
        "--wait",
        "--every",
        "0.2",
    ]);
    assert!(ok, "{out}\n{err}\n{}", stack.logs());
    assert!(out.contains("checkpoint after epoch 1: succeeded"), "{out}");
    assert!(
        out.contains("32 test examples") && !out.contains("train split:"),
        "{out}"
    );
    assert!(
        out.contains(
            "settings: max_examples = 32; metrics = [\"cosine\", \"l2\"]; splits = [\"test\"]"
        ),
        "{out}"
    );
    // The list tells the two analyses of epoch 1 apart by their settings.
    let (ok, out, err) = stack.stepwise(&["analysis", "list", &id]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("splits = [\"test\"]").count(), 1, "{out}");
    let (ok, _, err) = stack.stepwise(&["analysis", "request", &id, "--epoch", "9"]);
    assert!(!ok && err.contains("no checkpoint after epoch 9"), "{err}");
    // One per epoch checkpoint, for how a metric evolves over training.
    let (ok, out, err) = stack.stepwise(&[
        "analysis",
        "request",
        &id,
        "--all-epochs",
        "--metrics",
        "l2",
        "--max-examples",
        "16",
        "--wait",
        "--every",
        "0.2",
        "--json",
    ]);
    assert!(ok, "{out}\n{err}");
    let requested: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let epochs: Vec<_> = requested.iter().map(|a| a["epoch"].as_u64()).collect();
    assert_eq!(epochs, [Some(1), Some(2)]);
    assert!(
        requested.iter().all(|a| a["status"] == "succeeded"),
        "{out}"
    );

    // Its checkpoints: downloaded after its sha256 matched, then evaluated locally.
    let (ok, out, err) = stack.stepwise(&["checkpoint", "list", &id]);
    assert!(ok, "{err}");
    assert!(out.lines().count() >= 3, "a header and two epochs: {out}");
    let downloaded = specs.path().join("final.safetensors");
    let (ok, out, err) = stack.stepwise(&[
        "checkpoint",
        "download",
        &id,
        "--out",
        downloaded.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("(epoch 2,"), "{out}");
    let registered = stack.client().checkpoints(id.parse().unwrap()).unwrap();
    let sha = &registered
        .iter()
        .find(|c| c.epoch == 2 && c.batch == 0)
        .unwrap()
        .sha256;
    let digest = sha2::Sha256::digest(std::fs::read(&downloaded).unwrap());
    assert_eq!(&format!("{digest:x}"), sha);
    let (ok, out, err) = stack.stepwise(&[
        "eval",
        "--checkpoint",
        downloaded.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok && out.contains("accuracy"), "{out}\n{err}");
    // A file changed in the store since it was registered is refused, and nothing is written.
    let stored = stack
        .checkpoint_dir()
        .join(format!("runs/{id}/attempt-{}", registered[0].attempt))
        .join(&registered[0].file_name);
    let mut bytes = std::fs::read(&stored).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    let corrupt = specs.path().join("corrupt.safetensors");
    let (ok, _, err) = stack.stepwise(&[
        "checkpoint",
        "download",
        &id,
        "--epoch",
        &registered[0].epoch.to_string(),
        "--out",
        corrupt.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("sha256"), "{err}");
    assert_eq!(
        std::fs::read_dir(specs.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("corrupt"))
            .count(),
        0,
        "no file and no temp file left"
    );

    let (ok, out, err) = stack.stepwise(&["logs", &id]);
    assert!(ok, "{err}");
    assert!(out.lines().count() >= 2, "{out}");
    let (ok, out, err) = stack.stepwise(&["delete", &id]);
    assert!(ok && out.contains("deleted"), "{err}");
    let (ok, _, err) = stack.stepwise(&["status", &id]);
    assert!(!ok && err.contains("404"), "{err}");
    assert!(!stack.checkpoint_dir().join(format!("runs/{id}")).exists());

    // An experiment: two seeds of one configuration, figures over both.
    let experiment = specs.path().join("experiment.toml");
    std::fs::write(
        &experiment,
        "name = \"cli\"\nseeds = [0, 1]\n[data]\ndataset = \"tiny10\"\n[train]\nepochs = 1\n\
         batch_size = 64\n[analysis]\nmax_examples = 64\nmetrics = [\"cosine\", \"l2\"]\n\
         [[configs]]\nmodel = { arch = \"resnet\", depth = 8, width = 4 }\n",
    )
    .unwrap();
    // Submitted and watched in one: both runs and their analyses followed, then shown.
    let (ok, out, err) = stack.stepwise(&["submit", experiment.to_str().unwrap(), "--watch"]);
    assert!(ok, "{out}\n{err}");
    let experiment_id = out
        .lines()
        .find_map(|l| l.strip_prefix("experiment "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    let runs: Vec<String> = out
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("run "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert_eq!(runs.len(), 2, "{out}");
    for run in &runs {
        assert_eq!(
            stack.client().run(run.parse().unwrap()).unwrap().status,
            JobState::Succeeded
        );
    }
    assert_eq!(err.matches("of epoch 1: succeeded").count(), 2, "{err}");
    assert!(out.contains("claims (paper.md"), "{out}");
    let figures = specs.path().join("experiment-figures");
    let (ok, out, err) = stack.stepwise(&[
        "figures",
        &experiment_id,
        "--out",
        figures.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("fig3_l2_ratio.svg") && out.contains("fig3_l2_ratio.png"),
        "{out}"
    );
    let png = std::fs::read(figures.join("fig3_l2_ratio.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    // With the experiment's report, as `stepwise run` writes one of local runs.
    let report = std::fs::read_to_string(figures.join("report.md")).unwrap();
    for expected in [
        "# Experiment `cli`",
        &format!("from experiment {experiment_id} on {}", stack.api_url),
        "2 of 2 runs succeeded",
        "| resnet-8 | ",                           // Table 1
        "| C1 | resnet-8 | ",                      // the claims
        "![fig3_l2_ratio.svg](fig3_l2_ratio.svg)", // the figures, linked
        "[blocks.csv](blocks.csv)",
    ] {
        assert!(report.contains(expected), "{expected}: {report}");
    }
    let (ok, out, err) = stack.stepwise(&["experiment", "list"]);
    assert!(
        ok && out.contains(&format!("{experiment_id}  cli")),
        "{out}\n{err}"
    );
    // Runs and experiments go by their names too.
    let (ok, out, err) = stack.stepwise(&["list", "--experiment", "cli"]);
    assert!(ok, "{err}");
    let seed1 = out
        .lines()
        .find(|l| l.contains("  cli/resnet-8/seed1 "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert!(runs.contains(&seed1), "{out}");
    let (ok, out, err) = stack.stepwise(&["status", "cli/resnet-8/seed1"]);
    assert!(ok && out.contains(&format!("run {seed1} ")), "{out}\n{err}");
    // Named together with one of its own runs: that run drawn once, both seeds as one
    // configuration.
    let together = specs.path().join("together");
    let (ok, out, err) = stack.stepwise(&[
        "figures",
        "cli",
        "cli/resnet-8/seed1",
        "--out",
        together.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("fig3_l2_ratio.svg"), "{out}");
    // The numbers beside them: the experiment's two seeds as one configuration.
    let blocks = std::fs::read_to_string(together.join("blocks.csv")).unwrap();
    assert!(
        blocks.contains("\nresnet-8,1,cosine,test,s0.b0,0,identity,2,"),
        "{blocks}"
    );
    // A finished experiment has nothing to cancel or retry; the error says so.
    let (ok, _, err) = stack.stepwise(&["cancel", "cli"]);
    assert!(!ok && err.contains("no queued or running runs"), "{err}");
    let (ok, _, err) = stack.stepwise(&["retry", &experiment_id]);
    assert!(!ok && err.contains("no failed or cancelled runs"), "{err}");
    // Its configurations over seeds and the paper's claims over its analyses.
    let (ok, out, err) = stack.stepwise(&["experiment", "show", "cli"]);
    assert!(ok, "{err}");
    let config = out.lines().find(|l| l.trim_start().starts_with("resnet-8"));
    assert!(
        config.is_some_and(|l| l.contains(" ± ")),
        "two seeds' mean ± sd: {out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("C1  resnet-8")),
        "{out}"
    );
    // With every block's values side by side: the two seeds as mean ± sd.
    let (ok, out, err) = stack.stepwise(&["experiment", "show", "cli", "--blocks"]);
    assert!(ok, "{err}");
    let table = out
        .split("cosine per block, test split:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(header.contains("resnet-8 (2 seeds, epoch 1)"), "{out}");
    let first = lines.next().unwrap();
    assert!(
        first.trim_start().starts_with("s0.b0") && first.contains(" ± "),
        "{out}"
    );
    assert!(out.contains("note: ") && out.contains("1 of 300"), "{out}");
    let table = out
        .lines()
        .skip_while(|l| !l.starts_with("Table 1"))
        .nth(2)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        table.trim_start().starts_with("resnet-8") && table.contains("(n=2)"),
        "two seeds' test errors in Table 1: {out}"
    );
    // The second seed analysed again with the skip gradient: one seed each way, the first
    // listed (seed 0) decides, and `experiment show` says which seed is left out and why.
    let (ok, out, err) = stack.stepwise(&[
        "analysis",
        "request",
        "cli/resnet-8/seed1",
        "--gradient",
        "skip",
        "--metrics",
        "cosine",
        "--max-examples",
        "20",
        "--wait",
    ]);
    assert!(ok, "{out}\n{err}");
    let (ok, out, err) = stack.stepwise(&["experiment", "show", "cli"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("left out: cli/resnet-8/seed1 (resnet-8): analysed with other settings"),
        "{out}"
    );
    let drawn = specs.path().join("drawn");
    let (ok, _, err) = stack.stepwise(&["figures", "cli", "--out", drawn.to_str().unwrap()]);
    assert!(
        ok && err.contains(
            "cli/resnet-8/seed1: left out of resnet-8's block-wise figures and blocks.csv: \
             analysed with other settings"
        ),
        "{err}"
    );
    let client = stack.client();
    let summary = client.experiment(experiment_id.parse().unwrap()).unwrap();
    assert_eq!(summary.configs[0].succeeded, 2);
    assert!(summary.configs[0].test_accuracy_sd.is_some());
    // Deleted by name, with its runs and their files.
    let (ok, out, err) = stack.stepwise(&["delete", "cli"]);
    assert!(ok && out.contains("with its runs deleted"), "{out}\n{err}");
    for run in &runs {
        assert!(!stack.checkpoint_dir().join(format!("runs/{run}")).exists());
    }
    let (ok, _, err) = stack.stepwise(&["experiment", "show", &experiment_id]);
    assert!(!ok && err.contains("404"), "{err}");
}

#[test]
fn weights_trained_elsewhere_are_uploaded_imported_and_analysed() {
    let _serial = serial();
    let mut stack = Stack::start(Settings::default());
    stack.synth("tiny10", 512, 128);
    let trainer = stack.spawn_worker("stepwise-trainer");
    stack.spawn_worker("stepwise-analyzer");
    let work = tempfile::tempdir().unwrap();
    let spec = |width: u32| {
        let path = work.path().join(format!("w{width}.toml"));
        std::fs::write(
            &path,
            format!(
                "[model]\narch = \"resnet\"\ndepth = 8\nwidth = {width}\n[data]\n\
                 dataset = \"tiny10\"\n[train]\nepochs = 3\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let (narrow, wide) = (spec(2), spec(4));
    // PyTorch's ResNet-8 (width 2), saved inside a dict with DataParallel's names.
    let weights = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../resnet/tests/fixtures/resnet8-w2-wrapped.pt"
    );
    let reading = ["--key", "state_dict", "--strip-prefix", "module."];

    // What the weights score, imported locally.
    let local = work.path().join("local");
    let mut args = vec!["model", "import", "--weights", weights, "--spec", &narrow];
    args.extend(reading);
    args.extend(["--out", local.to_str().unwrap(), "--json"]);
    let (ok, out, err) = stack.stepwise(&args);
    assert!(ok, "{err}");
    let local: serde_json::Value = serde_json::from_str(&out).unwrap();

    // The same through the services: uploaded, imported by the trainer, analysed.
    let mut args = vec!["submit", &narrow, "--weights", weights];
    args.extend(reading);
    args.extend(["--analysis-examples", "64", "--json"]);
    let (ok, out, err) = stack.stepwise(&args);
    assert!(ok, "{err}");
    let run: domain::service::RunView = serde_json::from_str(&out).unwrap();
    let (ok, out, err) = stack.stepwise(&["watch", &run.id.to_string(), "--every", "0.2"]);
    assert!(ok, "watch: {out}\n{err}\n{}", stack.logs());
    assert!(out.contains("imported rather than trained"), "{out}");
    let client = stack.client();
    let run = client.run(run.id).unwrap();
    let uploaded = run.weights.as_ref().expect("the run names its weights");
    let file = std::fs::read(weights).unwrap();
    let sha256: String = sha2::Sha256::digest(&file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(uploaded.sha256, sha256);
    assert_eq!(
        (uploaded.file_name.as_str(), uploaded.size),
        ("resnet8-w2-wrapped.pt", file.len() as u64)
    );
    assert_eq!((run.status, run.epochs_done), (JobState::Succeeded, 3));
    assert!(run.resolved_spec.is_some_and(|s| s.data.identity.is_some()));
    let accuracy = client
        .metrics(run.id, Some("accuracy"), Some("test"))
        .unwrap();
    assert_eq!(accuracy.len(), 1);
    assert_eq!(accuracy[0].epoch, 3);
    assert_eq!(accuracy[0].value, local["test_accuracy"].as_f64().unwrap());
    let checkpoints = client.checkpoints(run.id).unwrap();
    assert_eq!(checkpoints.iter().map(|c| c.epoch).collect::<Vec<_>>(), [3]);
    let analyses = client.analyses(run.id).unwrap();
    assert_eq!(
        analyses
            .iter()
            .map(|a| (a.epoch, a.status))
            .collect::<Vec<_>>(),
        [(3, JobState::Succeeded)]
    );
    let logs = client.logs_text(run.id, 100).unwrap();
    assert!(logs.contains("importing resnet8-w2-wrapped.pt"), "{logs}");

    // Weights of another model: the CLI refuses them before uploading; uploaded anyway,
    // the trainer fails the job as invalid, saying why.
    let mut args = vec!["submit", &wide, "--weights", weights];
    args.extend(reading);
    let (ok, _, err) = stack.stepwise(&args);
    assert!(!ok && err.contains("not the tensors of the model"), "{err}");
    assert_eq!(
        client.list_runs(&Default::default()).unwrap().items.len(),
        1
    );
    let submission = domain::service::ImportSubmission {
        spec: domain::RunSpec::from_toml(&std::fs::read_to_string(&wide).unwrap()).unwrap(),
        analysis: None,
        key: Some("state_dict".into()),
        strip_prefix: Some("module.".into()),
    };
    let bad = client
        .import_run(&submission, Path::new(weights), None)
        .unwrap();
    wait_for("the import to fail", Duration::from_secs(60), || {
        client.run(bad.id).unwrap().status.is_final()
    });
    let bad = client.run(bad.id).unwrap();
    assert_eq!(
        (bad.status, bad.failure_kind),
        (
            JobState::Failed,
            Some(domain::service::FailureKind::Invalid)
        )
    );
    let error = bad.last_error.unwrap_or_default();
    assert!(error.contains("not the tensors of the model"), "{error}");

    // A file that changed in the store after its upload is not imported.
    stack.signal(trainer, "STOP");
    let submission = domain::service::ImportSubmission {
        spec: domain::RunSpec::from_toml(&std::fs::read_to_string(&narrow).unwrap()).unwrap(),
        ..submission
    };
    let changed = client
        .import_run(&submission, Path::new(weights), None)
        .unwrap();
    let stored = stack
        .checkpoint_dir()
        .join(&changed.weights.as_ref().unwrap().path);
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    stack.signal(trainer, "CONT");
    wait_for("the import to fail", Duration::from_secs(60), || {
        client.run(changed.id).unwrap().status.is_final()
    });
    let changed = client.run(changed.id).unwrap();
    assert_eq!(
        changed.failure_kind,
        Some(domain::service::FailureKind::Invalid)
    );
    let error = changed.last_error.unwrap_or_default();
    assert!(error.contains("changed in the checkpoint store"), "{error}");

    // An experiment whose seed 0 is made of the weights and whose seed 1 trains: both
    // analysed, and the claims drawn over both.
    let experiment = work.path().join("mixed.toml");
    std::fs::write(
        &experiment,
        "name = \"mixed\"\nseeds = [0, 1]\n[data]\ndataset = \"tiny10\"\n\
         [train]\nepochs = 3\nbatch_size = 64\n[analysis]\nmax_examples = 64\n\
         [[configs]]\nmodel = { arch = \"resnet\", depth = 8, width = 2 }\n",
    )
    .unwrap();
    let seed0 = format!("resnet-8/0={weights}");
    let mut args = vec!["submit", experiment.to_str().unwrap(), "--weights", &seed0];
    args.extend(reading);
    let (ok, out, err) = stack.stepwise(&args);
    assert!(ok, "{err}");
    assert!(out.contains("mixed/resnet-8/seed0 (imported)"), "{out}");
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    let (ok, out, err) = stack.stepwise(&["watch", &id, "--every", "0.2"]);
    assert!(ok, "watch: {out}\n{err}\n{}", stack.logs());
    let view = client.experiment(id.parse().unwrap()).unwrap();
    let imported: Vec<bool> = view.runs.iter().map(|r| r.weights.is_some()).collect();
    assert_eq!(imported, [true, false]);
    let seed0 = client
        .metrics(view.runs[0].id, Some("accuracy"), Some("test"))
        .unwrap();
    assert_eq!(seed0.iter().map(|m| m.epoch).collect::<Vec<_>>(), [3]);
    assert_eq!(seed0[0].value, local["test_accuracy"].as_f64().unwrap());
    let seed1 = client
        .metrics(view.runs[1].id, Some("accuracy"), Some("test"))
        .unwrap();
    assert_eq!(seed1.iter().map(|m| m.epoch).collect::<Vec<_>>(), [1, 2, 3]);
    let (ok, out, err) = stack.stepwise(&["experiment", "show", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("C1"), "{out}");
    // Its report names the run made of the upload.
    let report = reqwest::blocking::get(format!("{}/v1/experiments/{id}/report.md", stack.api_url))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        report.contains("their weights imported (uploaded to the API): resnet-8 seed 0 from `"),
        "{report}"
    );
    // A part naming no run of the experiment is refused before anything is stored.
    let wrong = "resnet-8/5=/dev/null".to_string();
    let (ok, _, err) =
        stack.stepwise(&["submit", experiment.to_str().unwrap(), "--weights", &wrong]);
    assert!(
        !ok && err.contains("names no run of the experiment"),
        "{err}"
    );
}
