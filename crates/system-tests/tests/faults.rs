//! Faults with real processes: workers killed, paused past their lease, told to stop (and a
//! Slurm batch job's workers ending as the queue drains), runs cancelled, diverging or too
//! large for the worker's memory.

use domain::service::{
    AnalysisPlan, AnalysisRequest, CheckpointRegistration, CheckpointSelection, FailureKind,
    JobKind, JobState, RunView, WorkerCapacity,
};
use domain::{AnalysisKind, AnalysisSpec, Memory, Split};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use system_tests::{psql, serial, tiny_run, wait_for, Settings, Stack};
use uuid::Uuid;

const MINUTE: Duration = Duration::from_secs(60);

fn epochs_done(stack: &Stack, run: Uuid) -> u32 {
    stack.client().run(run).unwrap().epochs_done
}

/// Waits up to `timeout` for the run to end; its view then.
fn ended(stack: &Stack, run: Uuid, timeout: Duration) -> RunView {
    let client = stack.client();
    wait_for("the run to end", timeout, || {
        client.run(run).unwrap().status.is_final()
    });
    client.run(run).unwrap()
}

/// [`ended`], and it succeeded.
fn succeeded(stack: &Stack, run: Uuid, timeout: Duration) -> RunView {
    let view = ended(stack, run, timeout);
    assert_eq!(
        view.status,
        JobState::Succeeded,
        "{view:?}\n{}",
        stack.logs()
    );
    view
}

/// Files of an attempt's directory.
fn files(stack: &Stack, run: Uuid, attempt: u32) -> BTreeSet<String> {
    let dir = stack
        .checkpoint_dir()
        .join(format!("runs/{run}/attempt-{attempt}"));
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// With two API replicas reaping the expired leases: each kill costs one attempt, however
/// many reapers saw it, and the trainers that resume talk to the other replica.
#[test]
fn trainers_killed_and_a_damaged_checkpoint_leave_the_run_as_if_uninterrupted() {
    let _serial = serial();
    let mut stack = Stack::start(Settings::default());
    let second = stack.add_api();
    stack.synth("tiny10", 1024, 256);
    let client = stack.client();
    // An epoch takes ~0.2 s here: enough of them after the second kill (at 5) that a fast
    // machine cannot finish the run between the poll that sees epoch 5 and the kill.
    let epochs = 12;
    let run = client
        .submit_run(&tiny_run("tiny10", epochs), None)
        .unwrap()
        .id;
    let mut trainer = stack.spawn_worker("stepwise-trainer");
    let mut damaged = None;
    for kill_after in [2, 5] {
        wait_for("epochs to pass", MINUTE, || {
            epochs_done(&stack, run) >= kill_after
        });
        stack.signal(trainer, "KILL");
        stack.wait_worker(trainer, MINUTE);
        if kill_after == 5 {
            // The second attempt's newest checkpoint is damaged while no trainer runs: the
            // third resumes from the one before.
            let newest = client
                .checkpoints(run)
                .unwrap()
                .into_iter()
                .filter(|c| c.attempt == 2 && !c.removed)
                .max_by_key(|c| c.step)
                .unwrap();
            let path = stack
                .checkpoint_dir()
                .join(format!("runs/{run}/attempt-2"))
                .join(&newest.file_name);
            let mut bytes = std::fs::read(&path).unwrap();
            *bytes.last_mut().unwrap() ^= 1;
            std::fs::write(&path, bytes).unwrap();
            damaged = Some(newest);
        }
        trainer = stack.spawn_worker_with("stepwise-trainer", &[("STEPWISE_API_URL", &second)]);
    }
    let view = succeeded(&stack, run, 3 * MINUTE);
    assert_eq!(view.attempts, 3);
    assert_eq!(view.failure_kind, Some(FailureKind::Infrastructure));
    // Every epoch recorded once.
    let accuracy = client.metrics(run, Some("accuracy"), Some("test")).unwrap();
    let recorded: Vec<u32> = accuracy.iter().map(|m| m.epoch).collect();
    assert_eq!(recorded, (1..=epochs).collect::<Vec<_>>());
    // Later attempts resumed instead of starting over: their first checkpoint is past epoch
    // 1; the third from before the damaged checkpoint, which it wrote again.
    let checkpoints = client.checkpoints(run).unwrap();
    for attempt in [2, 3] {
        let first = checkpoints.iter().find(|c| c.attempt == attempt).unwrap();
        assert!(
            first.epoch > 1,
            "attempt {attempt} started over: {checkpoints:?}"
        );
    }
    let damaged = damaged.unwrap();
    let third = checkpoints.iter().find(|c| c.attempt == 3).unwrap();
    assert!(third.step <= damaged.step, "{damaged:?}\n{checkpoints:?}");
    let log = client.logs_text(run, 1000).unwrap();
    assert!(
        log.contains("passed over for resuming") && log.contains(&damaged.file_name),
        "{log}"
    );
    // And the result is the uninterrupted run's, bit for bit (same machine, same threads).
    let reference = client
        .submit_run(&tiny_run("tiny10", epochs), None)
        .unwrap()
        .id;
    ended(&stack, reference, 3 * MINUTE);
    let expected = client
        .metrics(reference, Some("accuracy"), Some("test"))
        .unwrap();
    assert_eq!(accuracy, expected);
    let loss = |r| client.metrics(r, Some("loss"), Some("train")).unwrap();
    assert_eq!(loss(run), loss(reference));
}

#[test]
fn a_trainer_paused_past_its_lease_writes_nothing_when_it_wakes() {
    let _serial = serial();
    let mut stack = Stack::start(Settings {
        lease_ttl_secs: 2.0,
        ..Settings::default()
    });
    stack.synth("tiny10", 1024, 256);
    let client = stack.client();
    let run = client.submit_run(&tiny_run("tiny10", 10), None).unwrap().id;
    let paused = stack.spawn_worker("stepwise-trainer");
    wait_for("a first epoch", MINUTE, || epochs_done(&stack, run) >= 1);
    stack.signal(paused, "STOP");
    let before = files(&stack, run, 1);
    let registered = |attempt| {
        client
            .checkpoints(run)
            .unwrap()
            .iter()
            .filter(|c| c.attempt == attempt)
            .count()
    };
    let rows_before = registered(1);
    // The lease expires, the reaper requeues the job and another trainer takes it over.
    let successor = stack.spawn_worker("stepwise-trainer");
    wait_for("the second attempt", MINUTE, || {
        client.run(run).unwrap().attempts == 2
    });
    stack.signal(paused, "CONT");
    wait_for("the woken trainer to give up the job", MINUTE, || {
        stack.worker_log(paused).contains("abandoned")
    });
    succeeded(&stack, run, 3 * MINUTE);
    let _ = successor;
    assert_eq!(
        registered(1),
        rows_before,
        "rows written by the woken worker"
    );
    // A write in progress at the pause may complete (the rename of its temporary file);
    // nothing else may appear.
    let in_progress: BTreeSet<String> = before
        .iter()
        .filter(|f| f.starts_with('.'))
        .flat_map(|_| files(&stack, run, 1))
        .collect();
    let after = files(&stack, run, 1);
    let new: Vec<&String> = after
        .difference(&before)
        .filter(|f| !in_progress.contains(*f))
        .collect();
    assert!(new.is_empty(), "files written after waking: {new:?}");
    let metrics = client.metrics(run, Some("accuracy"), Some("test")).unwrap();
    assert_eq!(metrics.len(), 10);
}

/// A trainer killed while it imports uploaded weights (evaluating them, before their
/// checkpoint): the next trainer imports them again into its own attempt's directory and
/// the run ends as a run of those weights, its one checkpoint the second attempt's.
#[test]
fn a_trainer_killed_while_importing_leaves_the_import_to_the_next() {
    let _serial = serial();
    let mut stack = Stack::start(Settings::default());
    // A large test set: evaluating the weights takes seconds, the window for the kill.
    stack.synth("tiny10", 256, 20_000);
    let client = stack.client();
    let weights = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../resnet/tests/fixtures/resnet8-w2-wrapped.pt"
    );
    let spec = "[model]\narch = \"resnet\"\ndepth = 8\nwidth = 2\n[data]\n\
                dataset = \"tiny10\"\n[train]\nepochs = 3\n";
    let submission = domain::service::ImportSubmission {
        spec: domain::RunSpec::from_toml(spec).unwrap(),
        analysis: None,
        key: Some("state_dict".into()),
        strip_prefix: Some("module.".into()),
    };
    let run = client
        .import_run(&submission, std::path::Path::new(weights), None)
        .unwrap()
        .id;
    let first = stack.spawn_worker("stepwise-trainer");
    wait_for("the import to start", MINUTE, || {
        client
            .logs_text(run, 100)
            .unwrap()
            .contains("importing resnet8-w2-wrapped.pt")
    });
    stack.signal(first, "KILL");
    assert!(
        client.checkpoints(run).unwrap().is_empty(),
        "killed before the import's checkpoint"
    );
    stack.spawn_worker("stepwise-trainer");
    let view = succeeded(&stack, run, 2 * MINUTE);
    assert_eq!((view.attempts, view.epochs_done), (2, 3));
    let checkpoints = client.checkpoints(run).unwrap();
    assert_eq!(
        checkpoints
            .iter()
            .map(|c| (c.attempt, c.epoch))
            .collect::<Vec<_>>(),
        [(2, 3)]
    );
    let accuracy = client.metrics(run, Some("accuracy"), Some("test")).unwrap();
    assert_eq!(accuracy.len(), 1, "{accuracy:?}");
    let log = client.logs_text(run, 1000).unwrap();
    assert_eq!(
        log.matches("importing resnet8-w2-wrapped.pt").count(),
        2,
        "{log}"
    );
}

#[test]
fn a_run_whose_last_checkpoint_was_registered_before_its_trainer_died_finishes() {
    let _serial = serial();
    let mut stack = Stack::start(Settings::default());
    stack.synth("tiny10", 256, 64);
    let client = stack.client();
    let submission = tiny_run("tiny10", 1);
    // The run's last checkpoint, as a trainer writes it: the same spec trained locally.
    let local = tempfile::tempdir().unwrap();
    let spec = local.path().join("spec.toml");
    std::fs::write(&spec, submission.spec.to_toml()).unwrap();
    let out = local.path().join("run");
    let (ok, _, err) = stack.stepwise(&[
        "train",
        "--spec",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let last = out.join("checkpoints/epoch-0001.safetensors");
    // A worker claims the job, writes and registers that checkpoint, and dies before
    // completing the job: its lease runs out and the job is queued again.
    let run = client.submit_run(&submission, None).unwrap().id;
    let worker = stack.worker_client();
    let capacity = WorkerCapacity {
        memory: Memory::Host,
        budget_mib: 1024,
    };
    let claim = worker
        .claim(&[JobKind::Train], "dies-at-the-end", capacity)
        .unwrap()
        .expect("the run's job");
    let dir = stack.checkpoint_dir().join(&claim.directory);
    std::fs::create_dir_all(&dir).unwrap();
    let file_name = "epoch-0001.safetensors";
    std::fs::copy(&last, dir.join(file_name)).unwrap();
    let bytes = std::fs::read(&last).unwrap();
    let registration = CheckpointRegistration {
        lease_token: claim.lease_token,
        file_name: file_name.into(),
        epoch: 1,
        batch: 0,
        step: 4,
        sha256: format!("{:x}", Sha256::digest(&bytes)),
        size: bytes.len() as u64,
    };
    worker
        .register_checkpoint(claim.job_id, &registration)
        .unwrap();
    // The next trainer finds the run at its end: finished, with nothing trained again.
    let trainer = stack.spawn_worker("stepwise-trainer");
    let view = succeeded(&stack, run, MINUTE);
    assert_eq!(view.attempts, 2, "{view:?}");
    assert!(
        files(&stack, run, 2).is_empty(),
        "{:?}",
        files(&stack, run, 2)
    );
    let checkpoints = client.checkpoints(run).unwrap();
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    let log = client.logs_text(run, 1000).unwrap();
    assert!(
        log.contains("ends the run (an earlier attempt wrote it): finished"),
        "{log}\n{}",
        stack.worker_log(trainer)
    );
}

#[test]
fn a_checkpoint_an_analysis_waits_for_is_kept_from_pruning() {
    let _serial = serial();
    // No heartbeat of the lease thread while training: the trainer asks for the epochs to
    // keep when it prunes.
    let mut stack = Stack::start(Settings {
        lease_ttl_secs: 600.0,
        heartbeat_secs: 200.0,
        ..Settings::default()
    });
    // A large test set: each epoch's evaluation takes seconds, time to ask for an analysis.
    stack.synth("tiny10", 256, 20_000);
    let client = stack.client();
    let mut submission = tiny_run("tiny10", 3);
    submission.spec.train.checkpoint.keep_last = 1;
    let run = client.submit_run(&submission, None).unwrap().id;
    stack.spawn_worker("stepwise-trainer");
    let registered = |epoch| {
        client
            .checkpoints(run)
            .unwrap()
            .into_iter()
            .find(|c| c.epoch == epoch && c.batch == 0)
    };
    wait_for("epoch 1's checkpoint", MINUTE, || registered(1).is_some());
    // Asked of an epoch the run does not keep, with no analyzer running yet.
    let request = AnalysisRequest {
        epoch: Some(1),
        spec: AnalysisSpec {
            metrics: vec![AnalysisKind::Cosine],
            splits: vec![Split::Test],
            max_examples: 32,
            ..AnalysisSpec::default()
        },
    };
    client.request_analysis(run, &request).unwrap();
    succeeded(&stack, run, 3 * MINUTE);
    // keep_last = 1 pruned epoch 2's checkpoint, not the one the analysis waits for.
    assert!(
        registered(2).unwrap().removed,
        "{:?}",
        client.checkpoints(run)
    );
    assert!(
        !registered(1).unwrap().removed,
        "{:?}",
        client.checkpoints(run)
    );
    stack.spawn_worker("stepwise-analyzer");
    wait_for("the analysis", MINUTE, || {
        client.analyses(run).unwrap()[0].status.is_final()
    });
    let analysis = &client.analyses(run).unwrap()[0];
    assert_eq!(analysis.status, JobState::Succeeded, "{analysis:?}");
    assert_eq!(analysis.epoch, 1);
}

/// `deploy/slurm/stepwise-workers.sbatch` run as Slurm would run it (its `srun` a stand-in
/// that starts `SLURM_NTASKS` tasks with their `SLURM_PROCID`): its two trainers, named by
/// job and task, take every queued run, each running longer than the idle limit, and exit
/// once none came for it — and with them the batch job, successfully.
#[test]
fn the_slurm_batch_script_runs_workers_until_the_queue_drains() {
    let _serial = serial();
    let stack = Stack::start(Settings::default());
    stack.synth("tiny10", 1024, 256);
    let client = stack.client();
    // An epoch takes ~0.2 s here: each run outlasts the limit of 1 s.
    let runs: Vec<Uuid> = (0..3)
        .map(|_| client.submit_run(&tiny_run("tiny10", 12), None).unwrap().id)
        .collect();
    let stand_in = stack.dir.path().join("bin");
    std::fs::create_dir_all(&stand_in).unwrap();
    let srun = stand_in.join("srun");
    std::fs::write(
        &srun,
        "#!/usr/bin/env bash\nshift  # --kill-on-bad-exit=0\n\
         for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i SLURM_LOCALID=$i \"$@\" & done\n\
         wait\n",
    )
    .unwrap();
    std::fs::set_permissions(&srun, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/slurm/stepwise-workers.sbatch");
    let path = format!("{}:{}", stand_in.display(), std::env::var("PATH").unwrap());
    let log = std::fs::File::create(stack.dir.path().join("logs/slurm.log")).unwrap();
    let mut job = Command::new("bash")
        .arg(&script)
        .env_clear()
        .env("PATH", &path)
        .env("SLURM_JOB_ID", "42")
        .env("SLURM_NTASKS", "2")
        .env("STEPWISE_API_URL", &stack.api_url)
        .env("STEPWISE_CHECKPOINT_DIR", stack.checkpoint_dir())
        .env("STEPWISE_DATA_DIR", stack.data_dir())
        .env("STEPWISE_BIN", system_tests::binary("stepwise-trainer"))
        .env("STEPWISE_DEVICE", "cpu")
        .env("STEPWISE_IDLE_EXIT_SECS", "1")
        .env("STEPWISE_POLL_SECS", "0.2")
        .env("RAYON_NUM_THREADS", "1")
        .stderr(log.try_clone().unwrap())
        .stdout(log)
        .spawn()
        .unwrap();
    let mut exited = None;
    wait_for("the batch job to end", 2 * MINUTE, || {
        exited = job.try_wait().unwrap();
        exited.is_some()
    });
    let log = std::fs::read_to_string(stack.dir.path().join("logs/slurm.log")).unwrap();
    assert!(exited.unwrap().success(), "{log}");
    for run in runs {
        assert_eq!(
            client.run(run).unwrap().status,
            JobState::Succeeded,
            "{log}"
        );
    }
    assert_eq!(
        log.matches("no job for 1 s (STEPWISE_IDLE_EXIT_SECS): exiting")
            .count(),
        2,
        "{log}"
    );
    let mut names: Vec<String> = client
        .workers()
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    names.sort();
    assert_eq!(names, ["slurm-42-0", "slurm-42-1"]);

    // On a node whose tasks each see all its GPUs, a task takes the one at its index; bound
    // to one, it keeps `cuda` (the stand-in worker prints what it was given).
    let worker = stand_in.join("worker");
    std::fs::write(
        &worker,
        "#!/usr/bin/env bash\necho \"$STEPWISE_WORKER_NAME $STEPWISE_DEVICE\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&worker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let devices = |visible: &str| {
        let out = Command::new("bash")
            .arg(&script)
            .env_clear()
            .env("PATH", &path)
            .env("SLURM_JOB_ID", "7")
            .env("SLURM_NTASKS", "2")
            .env("STEPWISE_API_URL", "http://api")
            .env("STEPWISE_CHECKPOINT_DIR", "/shared/checkpoints")
            .env("STEPWISE_DATA_DIR", "/shared/data")
            .env("STEPWISE_BIN", &worker)
            .env("CUDA_VISIBLE_DEVICES", visible)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(devices("0,1"), ["slurm-7-0 cuda:0", "slurm-7-1 cuda:1"]);
    assert_eq!(devices("3"), ["slurm-7-0 cuda", "slurm-7-1 cuda"]);
    // Without the API's address it starts nothing and says what is missing.
    let out = Command::new("bash")
        .arg(&script)
        .env_clear()
        .env("PATH", &path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("STEPWISE_API_URL: the address of the API"),
        "{err}"
    );
}

#[test]
fn sigterm_checkpoints_and_releases_and_cancel_stops_at_the_next_step() {
    let _serial = serial();
    let mut stack = Stack::start(Settings::default());
    stack.synth("tiny10", 1024, 256);
    let client = stack.client();
    let run = client.submit_run(&tiny_run("tiny10", 50), None).unwrap().id;
    let first = stack.spawn_worker("stepwise-trainer");
    wait_for("a first epoch", MINUTE, || epochs_done(&stack, run) >= 1);
    stack.signal(first, "TERM");
    assert!(
        stack.wait_worker(first, MINUTE),
        "the trainer exits cleanly"
    );
    let view = client.run(run).unwrap();
    assert_eq!((view.status, view.failure_kind), (JobState::Queued, None));
    let last = client.checkpoints(run).unwrap().pop().unwrap();
    assert_eq!(last.attempt, 1);
    assert_eq!(
        last.step, view.step,
        "the stop checkpoint is the latest position"
    );

    // The next trainer resumes from that checkpoint; a cancel then stops it.
    stack.spawn_worker("stepwise-trainer");
    wait_for("the second attempt to train", MINUTE, || {
        let v = client.run(run).unwrap();
        v.attempts == 2 && v.step > last.step
    });
    assert_eq!(client.cancel(run).unwrap().status, JobState::Cancelling);
    wait_for("the cancel to land", MINUTE, || {
        client.run(run).unwrap().status == JobState::Cancelled
    });
    let checkpoints = client.checkpoints(run).unwrap();
    let stop = checkpoints.last().unwrap();
    assert_eq!(stop.attempt, 2, "cancel checkpoints before stopping");
    assert_eq!(stop.step, client.run(run).unwrap().step);
    // The trainer lives on for the next job.
    let next = client.submit_run(&tiny_run("tiny10", 1), None).unwrap().id;
    wait_for("the next job", MINUTE, || {
        client.run(next).unwrap().status == JobState::Succeeded
    });
    // And the cancelled run can be retried from where it stopped.
    assert_eq!(client.retry(run).unwrap().status, JobState::Queued);
}

#[test]
fn cancel_stops_a_running_analysis_at_its_next_batch() {
    let _serial = serial();
    let mut stack = Stack::start(Settings::default());
    stack.synth("tiny10", 256, 10_000);
    let client = stack.client();
    let mut submission = tiny_run("tiny10", 50);
    // Every epoch analysed, each analysis half a minute long (one example per batch).
    submission.analysis = Some(AnalysisPlan {
        checkpoints: CheckpointSelection::Every(1),
        spec: AnalysisSpec {
            max_examples: 10_000,
            eval_batch: 1,
            splits: vec![Split::Test],
            ..AnalysisSpec::default()
        },
    });
    let run = client.submit_run(&submission, None).unwrap().id;
    stack.spawn_worker("stepwise-trainer");
    stack.spawn_worker("stepwise-analyzer");
    wait_for("an analysis to run", MINUTE, || {
        client
            .analyses(run)
            .unwrap()
            .iter()
            .any(|a| a.status == JobState::Running)
    });
    assert_eq!(client.cancel(run).unwrap().status, JobState::Cancelling);
    // Without the stop the analysis would finish, and succeed.
    wait_for("the run and its analyses to end", MINUTE, || {
        client.run(run).unwrap().status.is_final()
            && client
                .analyses(run)
                .unwrap()
                .iter()
                .all(|a| a.status.is_final())
    });
    assert_eq!(client.run(run).unwrap().status, JobState::Cancelled);
    for analysis in client.analyses(run).unwrap() {
        assert_eq!(analysis.status, JobState::Cancelled, "{analysis:?}");
        assert!(analysis.records.is_empty());
    }
}

#[test]
fn a_diverging_run_fails_as_diverged_and_is_not_retried() {
    let _serial = serial();
    let mut stack = Stack::start(Settings::default());
    stack.synth("tiny10", 256, 64);
    let client = stack.client();
    let mut submission = tiny_run("tiny10", 2);
    // A user's mistake that overflows every activation: the loss is NaN at once.
    submission.spec.data.normalization = Some(domain::Normalization {
        mean: [0.0; 3],
        std: [1e-37; 3],
    });
    let run = client.submit_run(&submission, None).unwrap().id;
    stack.spawn_worker("stepwise-trainer");
    ended(&stack, run, MINUTE);
    std::thread::sleep(Duration::from_secs(1));
    let view = client.run(run).unwrap();
    assert_eq!(view.status, JobState::Failed);
    assert_eq!(view.failure_kind, Some(FailureKind::Diverged));
    assert_eq!(view.attempts, 1, "not retried");
    assert!(view.last_error.unwrap().contains("NaN"));
}

#[test]
fn a_batch_over_the_trainers_memory_fails_as_invalid_before_training() {
    let _serial = serial();
    let mut stack = Stack::start(Settings::default());
    stack.synth("tiny10", 256, 64);
    let client = stack.client();
    let mut submission = tiny_run("tiny10", 2);
    submission.spec.train.batch_size = 4096;
    let run = client.submit_run(&submission, None).unwrap().id;
    // A CPU trainer with 300 MiB: the estimate of a batch of 4096 is far above it.
    stack.spawn_worker_with("stepwise-trainer", &[("STEPWISE_CPU_MEMORY", "300MiB")]);
    let view = ended(&stack, run, MINUTE);
    assert_eq!(view.status, JobState::Failed);
    assert_eq!(view.failure_kind, Some(FailureKind::Invalid));
    assert_eq!(view.attempts, 1, "not retried");
    let error = view.last_error.unwrap();
    assert!(
        error.contains("batch size 4096")
            && error.contains("budget of 300 MiB")
            && error.contains("lower train.batch_size (--batch) to ")
            && error.contains("no worker seen in the last 10 minutes has "),
        "{error}"
    );
    assert_eq!(epochs_done(&stack, run), 0);
    assert!(
        client.checkpoints(run).unwrap().is_empty(),
        "nothing written"
    );
}

#[test]
fn a_run_too_large_for_one_trainer_waits_for_a_larger_one() {
    let _serial = serial();
    let mut stack = Stack::start(Settings::default());
    stack.synth("tiny10", 256, 64);
    let client = stack.client();
    // A trainer with the machine's memory shows itself by polling, then is paused, so that
    // the run goes to the small one first.
    let large = stack.spawn_worker("stepwise-trainer");
    let seen = "SELECT count(*) FROM workers WHERE name = 'stepwise-trainer-0'";
    wait_for("the large trainer's first claim", MINUTE, || {
        psql(&stack.database_url, seen) == "1"
    });
    stack.signal(large, "STOP");
    let run = client.submit_run(&tiny_run("tiny10", 2), None).unwrap().id;
    // 150 MiB is less than a CPU process's fixed part: no batch fits.
    stack.spawn_worker_with("stepwise-trainer", &[("STEPWISE_CPU_MEMORY", "150MiB")]);
    let attempts = format!(
        "SELECT string_agg(a.attempt || ' ' || a.worker || ' ' || coalesce(a.outcome, 'running'), \
         ', ' ORDER BY a.attempt) FROM attempts a JOIN jobs j ON j.id = a.job_id \
         WHERE j.run_id = '{run}'"
    );
    wait_for("the small trainer's refusal", MINUTE, || {
        psql(&stack.database_url, &attempts) == "1 stepwise-trainer-1 queued"
    });
    let view = client.run(run).unwrap();
    assert_eq!((view.status, view.failure_kind), (JobState::Queued, None));
    let note = view.last_error.unwrap();
    assert!(
        note.contains("even a batch of one example does not fit")
            && note
                .contains("queued again for a worker with more (seen lately: stepwise-trainer-0"),
        "{note}"
    );
    let (ok, out, err) = stack.stepwise(&["status", &run.to_string()]);
    assert!(
        ok && out.contains("last error ") && out.contains("queued again"),
        "{out}{err}"
    );
    // The command line shows who is there, with their budgets.
    let (ok, out, err) = stack.stepwise(&["workers"]);
    assert!(ok, "{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
    };
    assert!(
        line("stepwise-trainer-1 ").contains("150 MiB host"),
        "{out}"
    );
    assert!(line("stepwise-trainer-0 ").contains("train"), "{out}");
    stack.signal(large, "CONT");
    succeeded(&stack, run, MINUTE);
    assert_eq!(
        psql(&stack.database_url, &attempts),
        "1 stepwise-trainer-1 queued, 2 stepwise-trainer-0 succeeded",
        "the small trainer passed over the run"
    );
    assert_eq!(epochs_done(&stack, run), 2);
}
