//! A `shapes10` run submitted over HTTP is trained, checkpointed and analysed by the real
//! workers, and its metrics and figures are served — driven by the README's curl
//! walk-through, run verbatim.

use domain::service::JobState;
use domain::MetricName;
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
    let svg = std::fs::read_to_string(work.path().join("fig2_cosine.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg:.200}");

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
fn stepwise(stack: &Stack, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(system_tests::binary("stepwise"))
        .args(args)
        .env("STEPWISE_API_URL", &stack.api_url)
        .env("STEPWISE_DATA_DIR", stack.data_dir())
        .output()
        .expect("stepwise runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
    let (ok, out, err) = stepwise(
        &stack,
        &[
            "submit",
            path,
            "--analysis",
            "every:1",
            "--analysis-examples",
            "64",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    let (ok, out, err) = stepwise(&stack, &["watch", &id, "--every", "0.2"]);
    assert!(ok, "watch: {out}\n{err}\n{}", stack.logs());
    assert!(out.contains("status    succeeded"), "{out}");
    assert!(err.contains("of epoch 2: succeeded"), "{err}");
    let (ok, out, _) = stepwise(
        &stack,
        &[
            "metrics", &id, "--name", "accuracy", "--split", "test", "--csv",
        ],
    );
    assert!(ok);
    assert_eq!(out.lines().count(), 3, "header and two epochs: {out}");
    let (ok, out, _) = stepwise(&stack, &["list", "--status", "succeeded"]);
    assert!(ok && out.contains(&id), "{out}");
    let (ok, out, _) = stepwise(&stack, &["status", &id]);
    assert!(ok && out.contains("epoch 2/2"), "{out}");
    let figures = specs.path().join("figures");
    let (ok, out, err) = stepwise(
        &stack,
        &["figures", &id, "--out", figures.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert!(out.contains("fig2_cosine.svg"), "{out}");
    // A finished run can be neither cancelled nor retried; the error says why.
    let (ok, _, err) = stepwise(&stack, &["cancel", &id]);
    assert!(
        !ok && err.contains("409") && err.contains("only queued or running"),
        "{err}"
    );
    let (ok, _, err) = stepwise(&stack, &["retry", &id]);
    assert!(!ok && err.contains("only failed or cancelled"), "{err}");
    let (ok, _, err) = stepwise(&stack, &["status", "not-an-id"]);
    assert!(!ok && err.contains("not a run or experiment id"), "{err}");

    // An experiment: two seeds of one configuration, figures over both.
    let experiment = specs.path().join("experiment.toml");
    std::fs::write(
        &experiment,
        "name = \"cli\"\nseeds = [0, 1]\n[data]\ndataset = \"tiny10\"\n[train]\nepochs = 1\n\
         batch_size = 64\n[analysis]\nmax_examples = 64\nmetrics = [\"cosine\", \"l2\"]\n\
         [[configs]]\nmodel = { arch = \"resnet\", depth = 8, width = 4 }\n",
    )
    .unwrap();
    let (ok, out, err) = stepwise(&stack, &["submit", experiment.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    let experiment_id = view["id"].as_str().unwrap().to_string();
    let runs: Vec<String> = view["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        let (ok, out, err) = stepwise(&stack, &["watch", run, "--every", "0.2"]);
        assert!(ok, "{out}\n{err}");
    }
    let figures = specs.path().join("experiment-figures");
    let (ok, out, err) = stepwise(
        &stack,
        &[
            "figures",
            &experiment_id,
            "--out",
            figures.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("fig3_l2_ratio.svg"), "{out}");
    let client = stack.client();
    let summary = client.experiment(experiment_id.parse().unwrap()).unwrap();
    assert_eq!(summary.configs[0].succeeded, 2);
    assert!(summary.configs[0].test_accuracy_sd.is_some());
}
