//! The queue against a real Postgres: one fresh database per test (`#[sqlx::test]`, needs
//! DATABASE_URL with a role that may create databases; `scripts/postgres start` gives one).

use domain::service::{
    AnalysisPlan, AnalysisResult, CheckpointRef, CheckpointRegistration, CheckpointSelection,
    FailureKind, JobKind, JobState, RunSubmission, WorkerCapacity, WorkerEvent,
};
use domain::{
    Arch, DataSpec, ExperimentSpec, Memory, MetricName, MetricRecord, ModelSpec, RunSpec, Split,
};
use sqlx::PgPool;
use std::collections::HashSet;
use std::time::Duration;
use store::{Idempotency, LeaseConfig, RunFilter, Store, StoreError, Submitted};

/// A worker with far more memory than any test job needs.
const CPU: WorkerCapacity = WorkerCapacity {
    memory: Memory::Host,
    budget_mib: 1 << 20,
};

fn lease(ttl_ms: u64) -> LeaseConfig {
    LeaseConfig {
        ttl: Duration::from_millis(ttl_ms),
        heartbeat: Duration::from_millis(ttl_ms / 3),
        max_attempts: 3,
    }
}

fn submission(epochs: u32, plan: Option<AnalysisPlan>) -> RunSubmission {
    let mut model = ModelSpec::new(Arch::Resnet);
    model.depth = Some(8);
    model.width = Some(4);
    let mut spec = RunSpec::new(model, DataSpec::new("shapes10"));
    spec.train.epochs = Some(epochs);
    spec.tags = vec!["demo".into()];
    RunSubmission {
        spec,
        analysis: plan,
    }
}

/// A run of `epochs` submitted without an idempotency key.
async fn submit(
    store: &Store,
    epochs: u32,
    plan: Option<AnalysisPlan>,
    max_attempts: u32,
) -> domain::service::RunView {
    store
        .submit_run(&submission(epochs, plan), None, max_attempts)
        .await
        .unwrap()
        .into_inner()
}

/// The next training job for `worker` (with [`CPU`]), if any.
async fn claim_training(
    store: &Store,
    worker: &str,
    lease: &LeaseConfig,
) -> Option<domain::service::Claim> {
    store
        .claim(&[JobKind::Train], worker, CPU, lease)
        .await
        .unwrap()
}

fn registration(token: uuid::Uuid, epoch: u32) -> CheckpointRegistration {
    CheckpointRegistration {
        lease_token: token,
        file_name: format!("epoch-{epoch:04}.safetensors"),
        epoch,
        batch: 0,
        step: epoch as u64 * 10,
        sha256: "00".repeat(32),
        size: 1,
    }
}

/// A run of three epochs, each analysed, and the claim of its train job.
async fn every_epoch_analysed(
    store: &Store,
    lease: &LeaseConfig,
) -> (domain::service::RunView, domain::service::Claim) {
    let plan = AnalysisPlan {
        checkpoints: CheckpointSelection::Every(1),
        ..Default::default()
    };
    let run = submit(store, 3, Some(plan), 3).await;
    (run, claim_training(store, "w1", lease).await.unwrap())
}

/// Registers `claim`'s checkpoints after `epochs`.
async fn register_epochs(
    store: &Store,
    claim: &domain::service::Claim,
    epochs: &[u32],
    lease: &LeaseConfig,
) {
    for &epoch in epochs {
        store
            .register_checkpoint(claim.job_id, &registration(claim.lease_token, epoch), lease)
            .await
            .unwrap();
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_run_is_claimed_trained_and_analysed_by_plan(pool: PgPool) {
    let store = Store::from_pool(pool);
    let lease = lease(60_000);
    let plan = AnalysisPlan {
        checkpoints: CheckpointSelection::Every(2),
        ..Default::default()
    };
    let run = submit(&store, 3, Some(plan), 3).await;
    assert_eq!(run.status, JobState::Queued);
    assert!(store
        .claim(&[JobKind::Analyze], "w", CPU, &lease)
        .await
        .unwrap()
        .is_none());
    let claim = claim_training(&store, "w", &lease).await.unwrap();
    assert_eq!(claim.run_id, run.id);
    assert_eq!(claim.attempt, 1);
    assert_eq!(claim.directory, format!("runs/{}/attempt-1", run.id));
    assert_eq!(claim.keep_epochs, [2, 3]);
    assert!(claim.resume_from.is_empty());
    assert_eq!(store.run(run.id).await.unwrap().status, JobState::Running);

    let token = claim.lease_token;
    for epoch in 1..=3 {
        let records = [MetricRecord::new(
            MetricName::Accuracy,
            Some(Split::Test),
            epoch,
            0.5 + epoch as f64 / 10.0,
        )];
        let events = [WorkerEvent::Epoch {
            epoch,
            records: records.to_vec(),
        }];
        // Sent twice (a retried request): still one row per epoch.
        store
            .record_events(claim.job_id, token, &events)
            .await
            .unwrap();
        store
            .record_events(claim.job_id, token, &events)
            .await
            .unwrap();
        store
            .register_checkpoint(claim.job_id, &registration(token, epoch), &lease)
            .await
            .unwrap();
    }
    assert_eq!(
        store.complete(claim.job_id, token, None).await.unwrap(),
        JobState::Succeeded
    );
    let run = store.run(run.id).await.unwrap();
    assert_eq!(run.status, JobState::Succeeded);
    assert_eq!(run.epochs_done, 3);
    assert_eq!(run.best_test_accuracy, Some(0.8));
    let metrics = store
        .metrics(run.id, Some(MetricName::Accuracy), Some(Split::Test))
        .await
        .unwrap();
    assert_eq!(
        metrics.iter().map(|m| m.epoch).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(store.checkpoints(run.id).await.unwrap().len(), 3);

    // The plan asked for epochs 2 and 3: two analyze jobs.
    let analysed = analyse_queued(&store, &lease, |_| -0.1).await;
    assert_eq!(analysed.iter().map(|c| c.epoch).collect::<Vec<_>>(), [2, 3]);
    let latest = store.latest_analysis(run.id).await.unwrap().unwrap();
    assert_eq!(latest.epoch, 3);
    assert_eq!(latest.status, JobState::Succeeded);
    assert_eq!(latest.records.len(), 4);

    // The blocks over training: the test split's means of the names asked for, by epoch.
    let history = |names: &'static [MetricName]| {
        let store = store.clone();
        async move {
            let records = store.analysis_history(run.id, names).await.unwrap();
            records
                .iter()
                .map(|r| (r.name, r.epoch, r.value))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        history(&[MetricName::Cosine, MetricName::L2Ratio]).await,
        [
            (MetricName::Cosine, 2, -0.1),
            (MetricName::L2Ratio, 2, 0.5),
            (MetricName::Cosine, 3, -0.1),
            (MetricName::L2Ratio, 3, 0.5)
        ]
    );
    // A later analysis with the skip gradient is the latest: a full-gradient cosine is
    // another quantity, so only it remains.
    let spec = domain::AnalysisSpec {
        gradient: domain::GradientKind::Skip,
        ..Default::default()
    };
    store
        .request_analysis(run.id, None, &spec, 3)
        .await
        .unwrap();
    let job = store
        .claim(&[JobKind::Analyze], "a", CPU, &lease)
        .await
        .unwrap()
        .unwrap();
    complete_analysis(&store, &job, block_records(3, -0.3)).await;
    assert_eq!(
        history(&[MetricName::Cosine]).await,
        [(MetricName::Cosine, 3, -0.3)]
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_plan_may_analyse_the_initial_weights_as_epoch_zero(pool: PgPool) {
    let store = Store::from_pool(pool);
    let lease = lease(60_000);
    let plan = AnalysisPlan {
        checkpoints: CheckpointSelection::Epochs(vec![0]),
        ..Default::default()
    };
    let run = submit(&store, 2, Some(plan), 3).await;
    let claim = claim_training(&store, "w", &lease).await.unwrap();
    // The trainer is told to keep (and so to write) the checkpoint before the first step.
    assert_eq!(claim.keep_epochs, [0, 2]);
    register_epochs(&store, &claim, &[0, 1, 2], &lease).await;
    store
        .complete(claim.job_id, claim.lease_token, None)
        .await
        .unwrap();
    let analysed = analyse_queued(&store, &lease, |epoch| -0.1 * epoch as f64).await;
    assert_eq!(analysed.iter().map(|c| c.epoch).collect::<Vec<_>>(), [0, 2]);
    let history = store
        .analysis_history(run.id, &[MetricName::Cosine])
        .await
        .unwrap();
    let by_epoch: Vec<_> = history.iter().map(|r| (r.epoch, r.value)).collect();
    assert_eq!(by_epoch, [(0, 0.0), (2, -0.2)]);
}

/// A block's cosine (mean and median, test and train) and ℓ2 ratio (test mean) at `epoch`.
fn block_records(epoch: u32, cosine: f64) -> Vec<domain::AnalysisRecord> {
    use domain::{AnalysisRecord, BlockId, BlockKind, Stat};
    let at = |name, split, value, stat| {
        AnalysisRecord::new(name, split, epoch, value, 10)
            .at_block(BlockId::new(0, 0), 0, BlockKind::Identity)
            .with_stat(stat)
    };
    vec![
        at(MetricName::Cosine, Split::Test, cosine, Stat::Mean),
        at(MetricName::Cosine, Split::Test, 0.0, Stat::Median),
        at(MetricName::Cosine, Split::Train, 0.0, Stat::Mean),
        at(MetricName::L2Ratio, Split::Test, 0.5, Stat::Mean),
    ]
}

/// Claims and completes every queued analysis, each with [`block_records`] of the cosine
/// `cosine(epoch)`; returns the checkpoints analysed, in the order claimed.
async fn analyse_queued(
    store: &Store,
    lease: &LeaseConfig,
    cosine: impl Fn(u32) -> f64,
) -> Vec<CheckpointRef> {
    let mut analysed = vec![];
    while let Some(job) = store
        .claim(&[JobKind::Analyze], "a", CPU, lease)
        .await
        .unwrap()
    {
        let checkpoint = job.analysis.as_ref().unwrap().checkpoint.clone();
        complete_analysis(
            store,
            &job,
            block_records(checkpoint.epoch, cosine(checkpoint.epoch)),
        )
        .await;
        analysed.push(checkpoint);
    }
    analysed
}

async fn complete_analysis(
    store: &Store,
    job: &domain::service::Claim,
    records: Vec<domain::AnalysisRecord>,
) {
    let result = AnalysisResult {
        selected_alpha: Some(0.5),
        notes: vec![],
        examples: vec![],
        seconds: 1.0,
        passes: vec![],
        records,
    };
    store
        .complete(job.job_id, job.lease_token, Some(&result))
        .await
        .unwrap();
}

/// An analyze job reports where its analysis is; the view shows it while the job runs and
/// forgets it when the lease expires (the next claim starts afresh) and when the job ends.
/// Only analyze jobs report it, and only a pass with a batch within its split's.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_analysis_shows_where_it_is_only_while_it_runs(pool: PgPool) {
    use domain::{AnalysisKind, AnalysisProgress};
    let store = Store::from_pool(pool);
    let (long, short) = (lease(60_000), lease(200));
    let (run, training) = every_epoch_analysed(&store, &long).await;
    register_epochs(&store, &training, &[1], &long).await;
    let at = |batch| AnalysisProgress {
        split: Split::Train,
        pass: vec![AnalysisKind::Unroll],
        batch,
        batches: 8,
    };
    let report = |job: &domain::service::Claim, progress| {
        let events = [WorkerEvent::Analysing { progress }];
        let (store, job) = (store.clone(), job.clone());
        async move {
            store
                .record_events(job.job_id, job.lease_token, &events)
                .await
        }
    };
    let progress = || async {
        let analyses = store.analyses_of_run(run.id).await.unwrap();
        assert_eq!(analyses.len(), 1);
        let view = store.analysis(analyses[0].id).await.unwrap();
        assert_eq!(view.progress, analyses[0].progress);
        view.progress
    };
    let err = report(&training, at(3)).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let pending = || async { store.run(run.id).await.unwrap().analyses_pending };
    assert_eq!(pending().await, 1, "queued");

    let first = store
        .claim(&[JobKind::Analyze], "a1", CPU, &short)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(progress().await, None);
    report(&first, at(3)).await.unwrap();
    assert_eq!(progress().await, Some(at(3)));
    for bad in [
        at(9),
        AnalysisProgress {
            pass: vec![],
            ..at(1)
        },
    ] {
        let err = report(&first, bad).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    }
    assert_eq!(progress().await, Some(at(3)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.reap_expired().await.unwrap(), 1);
    assert_eq!(progress().await, None);

    let second = store
        .claim(&[JobKind::Analyze], "a2", CPU, &long)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempt, 2);
    report(&second, at(1)).await.unwrap();
    assert_eq!(progress().await, Some(at(1)));
    assert_eq!(pending().await, 1, "running");
    complete_analysis(&store, &second, block_records(1, 0.5)).await;
    assert_eq!(progress().await, None);
    assert_eq!(pending().await, 0, "done");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_expired_lease_is_refused_reaped_and_resumed_until_attempts_run_out(pool: PgPool) {
    let store = Store::from_pool(pool);
    let short = lease(200);
    let run = submit(&store, 5, None, 2).await;
    let first = claim_training(&store, "w1", &short).await.unwrap();
    register_epochs(&store, &first, &[1, 2], &short).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The stalled worker wakes: every write is refused, before and after the reaper ran.
    let err = store
        .heartbeat(first.job_id, first.lease_token, &short)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err}");
    assert_eq!(store.reap_expired().await.unwrap(), 1);
    let err = store
        .register_checkpoint(first.job_id, &registration(first.lease_token, 3), &short)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err}");
    let view = store.run(run.id).await.unwrap();
    assert_eq!(view.status, JobState::Queued);
    assert_eq!(view.failure_kind, Some(FailureKind::Infrastructure));

    let second = claim_training(&store, "w2", &short).await.unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(second.directory, format!("runs/{}/attempt-2", run.id));
    // Every checkpoint of the first attempt, newest first, with the sha256 to check it by.
    let resume: Vec<_> = second
        .resume_from
        .iter()
        .map(|c| (c.directory.as_str(), c.epoch, c.sha256.as_str()))
        .collect();
    let sha256 = registration(first.lease_token, 1).sha256;
    assert_eq!(
        resume,
        [
            (first.directory.as_str(), 2, sha256.as_str()),
            (first.directory.as_str(), 1, sha256.as_str())
        ]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.reap_expired().await.unwrap();
    // Two infrastructure failures with max_attempts 2: failed, not queued again.
    assert_eq!(store.run(run.id).await.unwrap().status, JobState::Failed);
    // Each claim is an attempt with its worker, outcome and failure.
    let attempts = store.attempts(run.id).await.unwrap();
    let summary: Vec<_> = attempts
        .iter()
        .map(|a| (a.attempt, a.worker.as_str(), a.outcome, a.failure_kind))
        .collect();
    assert_eq!(
        summary,
        [
            (
                1,
                "w1",
                Some(JobState::Queued),
                Some(FailureKind::Infrastructure)
            ),
            (
                2,
                "w2",
                Some(JobState::Failed),
                Some(FailureKind::Infrastructure)
            ),
        ]
    );
    assert!(attempts.iter().all(|a| a.ended_at.is_some()
        && a.error
            .as_deref()
            .is_some_and(|e| e.contains("lease expired"))));
    assert!(claim_training(&store, "w3", &short).await.is_none());
    // A retry queues it again with a fresh allowance.
    let retried = store.retry_run(run.id, 2).await.unwrap();
    assert_eq!(retried.status, JobState::Queued);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_epoch_checkpoint_registered_again_serves_its_queued_analysis_and_reruns_a_failed_one(
    pool: PgPool,
) {
    let store = Store::from_pool(pool);
    let lease = lease(60_000);
    let (run, first) = every_epoch_analysed(&store, &lease).await;
    register_epochs(&store, &first, &[1, 2], &lease).await;
    // Epoch 1's analysis fails on its (damaged) file; epoch 2's waits.
    let analyse = store
        .claim(&[JobKind::Analyze], "a", CPU, &lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(analyse.analysis.as_ref().unwrap().checkpoint.epoch, 1);
    let failure = "not a valid checkpoint: the file is damaged";
    store
        .fail(
            analyse.job_id,
            analyse.lease_token,
            FailureKind::Internal,
            failure,
        )
        .await
        .unwrap();
    store
        .release(first.job_id, first.lease_token)
        .await
        .unwrap();
    // The next attempt trains epochs 1 and 2 again and registers their checkpoints, then
    // one in the middle of epoch 3, which serves no analysis.
    let second = claim_training(&store, "w2", &lease).await.unwrap();
    register_epochs(&store, &second, &[1, 2], &lease).await;
    let middle = CheckpointRegistration {
        file_name: "epoch-0002-batch-00007.safetensors".into(),
        batch: 7,
        step: 27,
        ..registration(second.lease_token, 2)
    };
    store
        .register_checkpoint(second.job_id, &middle, &lease)
        .await
        .unwrap();
    let mut analysed: Vec<_> = analyse_queued(&store, &lease, |_| -0.1)
        .await
        .into_iter()
        .map(|checkpoint| {
            assert_eq!(checkpoint.batch, 0, "{checkpoint:?}");
            (checkpoint.epoch, checkpoint.directory)
        })
        .collect();
    analysed.sort();
    let again = second.directory.clone();
    assert_eq!(analysed, [(1, again.clone()), (2, again)]);
    let statuses: Vec<_> = store
        .analyses_of_run(run.id)
        .await
        .unwrap()
        .iter()
        .map(|a| (a.epoch, a.status))
        .collect();
    assert_eq!(
        statuses,
        [
            (1, JobState::Failed),
            (1, JobState::Succeeded),
            (2, JobState::Succeeded)
        ]
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_checkpoint_analyses_wait_for_is_kept_from_pruning_or_fails_them_once_pruned(
    pool: PgPool,
) {
    let store = Store::from_pool(pool);
    let lease = lease(60_000);
    let run = submit(&store, 5, None, 3).await;
    let training = claim_training(&store, "w1", &lease).await.unwrap();
    register_epochs(&store, &training, &[1, 2], &lease).await;
    // A user asks for the analyses of epochs 1 and 2; before an analyzer takes them,
    // training prunes epoch 1's checkpoint (its keep_last).
    let spec = domain::AnalysisSpec::default();
    for epoch in [1, 2] {
        store
            .request_analysis(run.id, Some(epoch), &spec, 3)
            .await
            .unwrap();
    }
    // Training is told to keep their checkpoints while they wait; a trainer that pruned
    // before its next heartbeat had not been told.
    let keep = || async {
        store
            .heartbeat(training.job_id, training.lease_token, &lease)
            .await
            .unwrap()
            .keep_epochs
    };
    assert_eq!(keep().await, [1, 2]);
    // What the trainer reports when it prunes a checkpoint.
    let pruned = |file: &str| {
        let removed = WorkerEvent::CheckpointRemoved {
            file_name: file.into(),
        };
        async {
            store
                .record_events(training.job_id, training.lease_token, &[removed])
                .await
                .unwrap()
        }
    };
    pruned("epoch-0001.safetensors").await;
    let analyses = store.analyses_of_run(run.id).await.unwrap();
    let statuses: Vec<_> = analyses.iter().map(|a| (a.epoch, a.status)).collect();
    assert_eq!(statuses, [(1, JobState::Failed), (2, JobState::Queued)]);
    assert_eq!(keep().await, [2]);
    let failed = &analyses[0];
    assert_eq!(failed.failure_kind, Some(FailureKind::Invalid));
    let error = failed.last_error.as_deref().unwrap();
    assert!(
        error.contains("epoch-0001.safetensors was pruned by training"),
        "{error}"
    );
    let logs = store.logs(run.id, 100).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.level == "error" && l.message.contains(error)),
        "{logs:?}"
    );
    // The other is served. Training prunes its checkpoint while it runs (the analyzer has
    // read it), and the analyzer is lost: queued again, it fails before the next claim.
    let analyse = store
        .claim(&[JobKind::Analyze], "a", CPU, &lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(analyse.analysis.as_ref().unwrap().checkpoint.epoch, 2);
    assert_eq!(keep().await, [2], "kept while it runs");
    let beat = store
        .heartbeat(analyse.job_id, analyse.lease_token, &lease)
        .await
        .unwrap();
    assert!(beat.keep_epochs.is_empty(), "an analyze job keeps nothing");
    pruned("epoch-0002.safetensors").await;
    let lost = "the lease expired: the worker was lost or stalled";
    let requeued = store
        .fail(
            analyse.job_id,
            analyse.lease_token,
            FailureKind::Infrastructure,
            lost,
        )
        .await
        .unwrap();
    assert_eq!(requeued, JobState::Queued);
    assert!(store
        .claim(&[JobKind::Analyze], "a", CPU, &lease)
        .await
        .unwrap()
        .is_none());
    let analyses = store.analyses_of_run(run.id).await.unwrap();
    assert_eq!(analyses[1].status, JobState::Failed);
    let error = analyses[1].last_error.as_deref().unwrap();
    assert!(
        error.contains("epoch-0002.safetensors was pruned by training (the spec's keep_last)"),
        "{error}"
    );
    // The training goes on.
    assert_eq!(store.run(run.id).await.unwrap().status, JobState::Running);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn divergence_fails_at_once_and_release_does_not_count(pool: PgPool) {
    let store = Store::from_pool(pool);
    let lease = lease(60_000);
    let run = submit(&store, 2, None, 1).await;
    let claim = claim_training(&store, "w", &lease).await.unwrap();
    // A graceful shutdown gives the job back; with max_attempts 1 it still runs again.
    assert_eq!(
        store
            .release(claim.job_id, claim.lease_token)
            .await
            .unwrap(),
        JobState::Queued
    );
    let claim = claim_training(&store, "w", &lease).await.unwrap();
    assert_eq!(claim.attempt, 2);
    let state = store
        .fail(
            claim.job_id,
            claim.lease_token,
            FailureKind::Diverged,
            "loss is NaN",
        )
        .await
        .unwrap();
    assert_eq!(state, JobState::Failed);
    let view = store.run(run.id).await.unwrap();
    assert_eq!(view.failure_kind, Some(FailureKind::Diverged));
    assert_eq!(view.last_error.as_deref(), Some("loss is NaN"));
    let logs = store.logs(run.id, 100).await.unwrap();
    assert!(
        logs.iter().any(|l| l.message.contains("diverged")),
        "{logs:?}"
    );
}

fn gpu(budget_mib: u64) -> WorkerCapacity {
    WorkerCapacity {
        memory: Memory::Gpu,
        budget_mib,
    }
}

/// Makes worker `name` last seen `minutes` ago.
async fn last_seen(pool: &PgPool, name: &str, minutes: i32) {
    sqlx::query("UPDATE workers SET seen_at = now() - $2 * interval '1 minute' WHERE name = $1")
        .bind(name)
        .bind(minutes)
        .execute(pool)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_job_too_large_for_its_worker_waits_for_a_larger_one_seen_lately(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let lease = lease(60_000);
    let (big, small) = (gpu(80_000), gpu(16_000));
    let mut runs = vec![];
    for _ in 0..3 {
        let run = store
            .submit_run(&submission(1, None), None, 3)
            .await
            .unwrap();
        runs.push(run.into_inner().id);
    }
    let train = [JobKind::Train];
    let first = store
        .claim(&train, "big", big, &lease)
        .await
        .unwrap()
        .unwrap();
    let second = store
        .claim(&train, "small", small, &lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.run_id, second.run_id), (runs[0], runs[1]));

    // The small worker refuses; the big one, seen just now, could take the job.
    let error = "training at batch size 4096 needs an estimated 30000 MiB of GPU memory";
    let state = store
        .refuse(
            second.job_id,
            second.lease_token,
            Memory::Gpu,
            30_000,
            error,
        )
        .await
        .unwrap();
    assert_eq!(state, JobState::Queued);
    let view = store.run(runs[1]).await.unwrap();
    assert_eq!((view.status, view.failure_kind), (JobState::Queued, None));
    let note = view.last_error.unwrap();
    assert!(
        note.starts_with(error) && note.contains("seen lately: big, with 80000 MiB GPU)"),
        "{note}"
    );
    let attempts = store.attempts(runs[1]).await.unwrap();
    assert_eq!(attempts[0].outcome, Some(JobState::Queued));
    assert_eq!(attempts[0].error.as_deref(), Some(note.as_str()));

    // Claims with less pass over it, to the next job; the big worker takes it.
    let third = store
        .claim(&train, "small", small, &lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.run_id, runs[2]);
    assert!(store
        .claim(&train, "small", small, &lease)
        .await
        .unwrap()
        .is_none());
    let retaken = store
        .claim(&train, "big", big, &lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((retaken.run_id, retaken.attempt), (runs[1], 2));
    // Users see both workers, each with its budget and the job it holds.
    let workers = store.workers().await.unwrap();
    let names: Vec<&str> = workers.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["big", "small"], "most recently seen first");
    assert_eq!(workers[0].capacity, big);
    assert!(workers.iter().all(|w| w.live && w.kinds == train));
    let job = |i: usize| workers[i].job.as_ref().map(|j| (j.job_id, j.run_id));
    assert_eq!(job(0), Some((retaken.job_id, runs[1])));
    assert_eq!(job(1), Some((third.job_id, runs[2])));

    // A heartbeat keeps a busy worker seen; one gone quiet for longer than the window no
    // longer counts, nor does a worker of another job kind.
    let quiet = |name| last_seen(&pool, name, 11);
    quiet("big").await;
    store
        .heartbeat(retaken.job_id, retaken.lease_token, &lease)
        .await
        .unwrap();
    let state = store
        .refuse(third.job_id, third.lease_token, Memory::Gpu, 30_000, error)
        .await
        .unwrap();
    assert_eq!(state, JobState::Queued, "the big worker heartbeat");
    assert_eq!(
        store.fail_stranded().await.unwrap(),
        0,
        "the big worker is live"
    );
    let again = store
        .claim(&train, "big", big, &lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.run_id, runs[2]);
    quiet("big").await;
    let analyzer = [JobKind::Analyze];
    assert!(store
        .claim(&analyzer, "huge", gpu(1 << 20), &lease)
        .await
        .unwrap()
        .is_none());
    let state = store
        .refuse(again.job_id, again.lease_token, Memory::Gpu, 90_000, error)
        .await
        .unwrap();
    assert_eq!(state, JobState::Failed);
    // A refuser never counts as the worker to wait for, even where its need, in whole MiB,
    // does not exceed its own budget.
    let fourth = store
        .submit_run(&submission(1, None), None, 3)
        .await
        .unwrap();
    let claim = store
        .claim(&train, "small", small, &lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.run_id, fourth.into_inner().id);
    let state = store
        .refuse(claim.job_id, claim.lease_token, Memory::Gpu, 16_000, error)
        .await
        .unwrap();
    assert_eq!(state, JobState::Failed);
    let big_now = store.workers().await.unwrap();
    let big_now = big_now.iter().find(|w| w.name == "big").unwrap();
    assert!(!big_now.live);
    let view = store.run(runs[2]).await.unwrap();
    assert_eq!(view.failure_kind, Some(FailureKind::Invalid));
    let note = view.last_error.unwrap();
    assert!(
        note.ends_with("no worker seen in the last 10 minutes has 90000 MiB of GPU memory"),
        "{note}"
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_job_waiting_for_a_larger_worker_that_is_gone_fails_while_the_pool_lives(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let lease = lease(60_000);
    let (big, small) = (gpu(80_000), gpu(16_000));
    let train = [JobKind::Train];
    let mut runs = vec![];
    for _ in 0..2 {
        let run = store.submit_run(&submission(1, None), None, 3).await;
        runs.push(run.unwrap().into_inner().id);
    }
    // The big worker takes the first run; the small one refuses the second, which then
    // waits for the big one.
    store.claim(&train, "big", big, &lease).await.unwrap();
    let claim = store
        .claim(&train, "small", small, &lease)
        .await
        .unwrap()
        .unwrap();
    let run = claim.run_id;
    assert_eq!(run, runs[1]);
    let error = "training at batch size 4096 needs an estimated 30000 MiB of GPU memory";
    let state = store
        .refuse(claim.job_id, claim.lease_token, Memory::Gpu, 30_000, error)
        .await
        .unwrap();
    assert_eq!(state, JobState::Queued);
    // Every worker quiet: the pool is down (or restarting), and the job keeps waiting.
    last_seen(&pool, "big", 11).await;
    last_seen(&pool, "small", 11).await;
    assert_eq!(store.fail_stranded().await.unwrap(), 0);
    assert_eq!(store.run(run).await.unwrap().status, JobState::Queued);
    // The small worker polls on, the big one stays gone: nothing live can take the job.
    assert!(store
        .claim(&train, "small", small, &lease)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.fail_stranded().await.unwrap(), 1);
    let view = store.run(run).await.unwrap();
    assert_eq!(
        (view.status, view.failure_kind),
        (JobState::Failed, Some(FailureKind::Invalid))
    );
    let note = view.last_error.unwrap();
    assert_eq!(
        note,
        "it waited for a worker with more memory, and none seen in the last 10 minutes has \
         30000 MiB of GPU memory"
    );
    let logs = store.logs(run, 10).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.message == format!("train job failed (invalid): {note}")),
        "{logs:?}"
    );
    assert_eq!(store.fail_stranded().await.unwrap(), 0, "failed once");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn cancel_is_immediate_when_queued_and_seen_at_the_heartbeat_when_running(pool: PgPool) {
    let store = Store::from_pool(pool);
    let lease = lease(60_000);
    let queued = submit(&store, 2, None, 3).await;
    let running = submit(&store, 2, None, 3).await;
    let finishing = submit(&store, 2, None, 3).await;
    let claim = claim_training(&store, "w", &lease).await.unwrap();
    assert_eq!(claim.run_id, queued.id, "oldest first");
    // Cancel the other (queued) one, and the claimed one.
    assert_eq!(
        store.cancel_run(running.id).await.unwrap().status,
        JobState::Cancelled
    );
    assert_eq!(
        store.cancel_run(queued.id).await.unwrap().status,
        JobState::Cancelling
    );
    assert!(
        store
            .heartbeat(claim.job_id, claim.lease_token, &lease)
            .await
            .unwrap()
            .cancel
    );
    // The worker stops early and releases the job.
    assert_eq!(
        store
            .release(claim.job_id, claim.lease_token)
            .await
            .unwrap(),
        JobState::Cancelled
    );
    assert!(matches!(
        store.cancel_run(queued.id).await,
        Err(StoreError::Conflict(_))
    ));
    // A cancel that comes after the worker's last look finds the work done: the job
    // completes and succeeds.
    let last = claim_training(&store, "w", &lease).await.unwrap();
    assert_eq!(last.run_id, finishing.id);
    assert_eq!(
        store.cancel_run(finishing.id).await.unwrap().status,
        JobState::Cancelling
    );
    assert_eq!(
        store
            .complete(last.job_id, last.lease_token, None)
            .await
            .unwrap(),
        JobState::Succeeded
    );
    assert_eq!(
        store.run(finishing.id).await.unwrap().status,
        JobState::Succeeded
    );
    assert_eq!(
        store.retry_run(queued.id, 3).await.unwrap().status,
        JobState::Queued
    );
    let dir = store.delete_run(running.id).await.unwrap();
    assert_eq!(dir, format!("runs/{}", running.id));
    assert!(matches!(
        store.run(running.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_checkpoint_registered_while_the_run_is_cancelled_queues_no_analysis_until_a_retry(
    pool: PgPool,
) {
    let store = Store::from_pool(pool);
    let lease = lease(60_000);
    let (run, claim) = every_epoch_analysed(&store, &lease).await;
    register_epochs(&store, &claim, &[1], &lease).await;
    store.cancel_run(run.id).await.unwrap();
    // The trainer checkpoints at the end of epoch 2 before it sees the cancel, and stops.
    register_epochs(&store, &claim, &[2], &lease).await;
    store
        .release(claim.job_id, claim.lease_token)
        .await
        .unwrap();
    let analyses = store.analyses_of_run(run.id).await.unwrap();
    let states: Vec<_> = analyses.iter().map(|a| (a.epoch, a.status)).collect();
    assert_eq!(states, [(1, JobState::Cancelled), (2, JobState::Cancelled)]);
    assert!(analyses.iter().all(|a| a.finished_at.is_some()));
    assert!(store
        .claim(&[JobKind::Analyze], "a", CPU, &lease)
        .await
        .unwrap()
        .is_none());
    // A retry queues both with the run.
    store.retry_run(run.id, 3).await.unwrap();
    let states: Vec<_> = store
        .analyses_of_run(run.id)
        .await
        .unwrap()
        .iter()
        .map(|a| (a.epoch, a.status))
        .collect();
    assert_eq!(states, [(1, JobState::Queued), (2, JobState::Queued)]);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn idempotency_keys_replay_or_refuse(pool: PgPool) {
    let store = Store::from_pool(pool);
    let key = |digest: &str| Idempotency {
        key: "k1".into(),
        request_sha256: digest.into(),
    };
    let sub = submission(2, None);
    let first = store.submit_run(&sub, Some(&key("a")), 3).await.unwrap();
    let again = store.submit_run(&sub, Some(&key("a")), 3).await.unwrap();
    let (Submitted::Created(first), Submitted::Replayed(again)) = (first, again) else {
        panic!("expected created then replayed");
    };
    assert_eq!(first, again);
    assert!(matches!(
        store.submit_run(&sub, Some(&key("b")), 3).await,
        Err(StoreError::IdempotencyMismatch(_))
    ));
    // Concurrent duplicates make one run.
    let mut tasks = vec![];
    for _ in 0..20 {
        let store = store.clone();
        let sub = sub.clone();
        tasks.push(tokio::spawn(async move {
            let idem = Idempotency {
                key: "k2".into(),
                request_sha256: "c".into(),
            };
            store
                .submit_run(&sub, Some(&idem), 3)
                .await
                .unwrap()
                .into_inner()
                .id
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1);
    let page = store
        .list_runs(&RunFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn concurrent_claims_never_share_a_job_and_pages_cover_every_run(pool: PgPool) {
    let store = Store::from_pool(pool);
    let lease = lease(60_000);
    for _ in 0..40 {
        store
            .submit_run(&submission(1, None), None, 3)
            .await
            .unwrap();
    }
    let mut tasks = vec![];
    for w in 0..6 {
        let store = store.clone();
        let lease = lease.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = vec![];
            while let Some(c) = claim_training(&store, &format!("w{w}"), &lease).await {
                got.push(c.job_id);
            }
            got
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (40, 40));

    let mut seen = HashSet::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_runs(&RunFilter::default(), cursor, 7)
            .await
            .unwrap();
        assert!(page.items.len() <= 7);
        seen.extend(page.items.iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c.parse().unwrap()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 40);
    let filtered = RunFilter {
        status: Some(JobState::Queued),
        ..Default::default()
    };
    assert!(store
        .list_runs(&filtered, None, 100)
        .await
        .unwrap()
        .items
        .is_empty());
}

/// Each filter of the run list keeps the runs it names, alone and together, newest first,
/// and the cursor pages through what they keep.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_run_list_keeps_what_each_filter_names(pool: PgPool) {
    let store = Store::from_pool(pool);
    let submit_as = |arch: Arch, tags: &[&str], name: &str| {
        let mut run = submission(1, None);
        run.spec.model = ModelSpec::new(arch);
        run.spec.tags = tags.iter().map(|t| t.to_string()).collect();
        run.spec.name = Some(name.into());
        let store = store.clone();
        async move {
            store
                .submit_run(&run, None, 3)
                .await
                .unwrap()
                .into_inner()
                .id
        }
    };
    let a = submit_as(Arch::Resnet, &["baseline"], "a").await;
    let b = submit_as(Arch::Wide, &["baseline", "wide"], "b").await;
    let c = submit_as(Arch::Wide, &[], "c").await;
    let d = submit_as(Arch::Resnet, &["wide"], "a").await;
    store.cancel_run(c).await.unwrap();
    let listed = |filter: RunFilter, cursor: Option<uuid::Uuid>, limit: u32| {
        let store = store.clone();
        async move {
            let page = store.list_runs(&filter, cursor, limit).await.unwrap();
            let ids: Vec<_> = page.items.iter().map(|r| r.id).collect();
            (
                ids,
                page.next_cursor.map(|c| c.parse::<uuid::Uuid>().unwrap()),
            )
        }
    };
    let arch = |arch| RunFilter {
        arch: Some(arch),
        ..Default::default()
    };
    let tag = |tag: &str| RunFilter {
        tag: Some(tag.into()),
        ..Default::default()
    };
    assert_eq!(listed(RunFilter::default(), None, 10).await.0, [d, c, b, a]);
    assert_eq!(listed(arch(Arch::Wide), None, 10).await.0, [c, b]);
    assert_eq!(listed(tag("wide"), None, 10).await.0, [d, b]);
    assert_eq!(listed(tag("baseline"), None, 10).await.0, [b, a]);
    let named = RunFilter {
        name: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(listed(named, None, 10).await.0, [d, a]);
    let cancelled = RunFilter {
        status: Some(JobState::Cancelled),
        ..Default::default()
    };
    assert_eq!(listed(cancelled, None, 10).await.0, [c]);
    let both = RunFilter {
        arch: Some(Arch::Wide),
        tag: Some("wide".into()),
        status: Some(JobState::Queued),
        ..Default::default()
    };
    assert_eq!(listed(both, None, 10).await.0, [b]);
    assert!(listed(arch(Arch::Single), None, 10).await.0.is_empty());
    // Pages of one through the wide-tagged runs, then nothing after the last.
    let (first, cursor) = listed(tag("wide"), None, 1).await;
    assert_eq!((first, cursor), (vec![d], Some(d)));
    assert_eq!(listed(tag("wide"), Some(d), 1).await, (vec![b], None));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_experiment_is_configurations_times_seeds(pool: PgPool) {
    let store = Store::from_pool(pool);
    let spec = ExperimentSpec::from_toml(
        r#"
name = "demo"
seeds = [0, 1]
analysis_checkpoints = { every = 1 }
[data]
dataset = "shapes10"
[train]
epochs = 2
[[configs]]
model = { arch = "resnet", depth = 8, width = 4 }
[[configs]]
label = "narrow"
model = { arch = "resnet", depth = 8, width = 2 }
"#,
    )
    .unwrap();
    let view = store
        .submit_experiment(&spec, None, 3)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.runs.len(), 4);
    let labels: Vec<_> = view
        .configs
        .iter()
        .map(|c| (c.label.as_str(), c.runs))
        .collect();
    assert_eq!(labels, [("resnet-8", 2), ("narrow", 2)]);
    // Every run's plan is the experiment's: both epochs analysed.
    assert!(view
        .runs
        .iter()
        .all(|r| r.analysis.as_ref().map(|p| p.epochs(2)) == Some(vec![1, 2])));
    let filter = RunFilter {
        experiment: Some(view.id),
        ..Default::default()
    };
    assert_eq!(
        store
            .list_runs(&filter, None, 10)
            .await
            .unwrap()
            .items
            .len(),
        4
    );
    // Runs and experiments by name, exactly.
    let by_name = |name: &str| RunFilter {
        name: Some(name.into()),
        ..Default::default()
    };
    let named = store
        .list_runs(&by_name("demo/narrow/seed1"), None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].label, "narrow");
    assert_eq!(named[0].spec.train.seed, 1);
    assert!(store
        .list_runs(&by_name("demo/narrow"), None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
    let experiments = |name| store.list_experiments(Some(name), None, 10);
    assert_eq!(experiments("demo").await.unwrap().items[0].id, view.id);
    assert!(experiments("dem").await.unwrap().items.is_empty());
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_runs_metrics_come_by_name_split_block_index_and_epoch_filtered_as_asked(pool: PgPool) {
    let store = Store::from_pool(pool);
    let lease = lease(60_000);
    let run = submit(&store, 2, None, 3).await;
    let claim = claim_training(&store, "w", &lease).await.unwrap();
    // Reported out of order; block s2.b10 (index 12) sorts after s2.b9 (index 11) by index,
    // before it by name.
    let at = |name, split, epoch, block: Option<(u32, u32)>| {
        let record = MetricRecord::new(name, split, epoch, f64::from(epoch));
        match block {
            Some((b, index)) => record.at_block(domain::BlockId::new(2, b), index),
            None => record,
        }
    };
    for epoch in [2, 1] {
        let records = vec![
            at(MetricName::Loss, Some(Split::Train), epoch, None),
            at(
                MetricName::IntermediateAccuracy,
                Some(Split::Test),
                epoch,
                Some((10, 12)),
            ),
            at(
                MetricName::IntermediateAccuracy,
                Some(Split::Test),
                epoch,
                Some((9, 11)),
            ),
            at(MetricName::Accuracy, Some(Split::Train), epoch, None),
            at(MetricName::Accuracy, Some(Split::Test), epoch, None),
            at(MetricName::GradNormRatio, None, epoch, None),
        ];
        store
            .record_events(
                claim.job_id,
                claim.lease_token,
                &[WorkerEvent::Epoch { epoch, records }],
            )
            .await
            .unwrap();
    }
    let listed = |records: Vec<MetricRecord>| -> Vec<String> {
        records
            .iter()
            .map(|r| {
                let split = r.split.map_or("-", |s| s.as_str());
                let block = r.block.map(|b| b.to_string()).unwrap_or_default();
                format!("{} {split} {block} {}", r.name.as_str(), r.epoch)
            })
            .collect()
    };
    let all = store.metrics(run.id, None, None).await.unwrap();
    assert_eq!(
        listed(all),
        [
            "accuracy test  1",
            "accuracy test  2",
            "accuracy train  1",
            "accuracy train  2",
            "grad_norm_ratio -  1",
            "grad_norm_ratio -  2",
            "intermediate_accuracy test s2.b9 1",
            "intermediate_accuracy test s2.b9 2",
            "intermediate_accuracy test s2.b10 1",
            "intermediate_accuracy test s2.b10 2",
            "loss train  1",
            "loss train  2",
        ]
    );
    let accuracy = store
        .metrics(run.id, Some(MetricName::Accuracy), None)
        .await
        .unwrap();
    assert_eq!(listed(accuracy).len(), 4);
    let train = store
        .metrics(run.id, None, Some(Split::Train))
        .await
        .unwrap();
    assert_eq!(
        listed(train),
        [
            "accuracy train  1",
            "accuracy train  2",
            "loss train  1",
            "loss train  2"
        ]
    );
    let one = store
        .metrics(run.id, Some(MetricName::Loss), Some(Split::Train))
        .await
        .unwrap();
    assert_eq!(listed(one), ["loss train  1", "loss train  2"]);
}

/// Every foreign key has an index that leads with its columns (not a partial one): without
/// it, each delete of a referenced row scans the referencing table, and joins along it scan
/// too (bench/db-scale.sh: deleting a run took 1.5 s at 1,000 runs).
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn every_foreign_key_is_indexed_on_its_referencing_side(pool: PgPool) {
    let unindexed: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c
          WHERE c.contype = 'f'
            AND NOT EXISTS (SELECT 1 FROM pg_index i
                             WHERE i.indrelid = c.conrelid AND i.indpred IS NULL
                               AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] = c.conkey)
          ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(unindexed, []);
    let checked: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_constraint WHERE contype = 'f'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(checked >= 11, "the schema's foreign keys: {checked}");
}
