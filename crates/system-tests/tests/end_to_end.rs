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
