//! The job queue. A claim takes the oldest queued job (`FOR UPDATE SKIP LOCKED`, so
//! concurrent claims never take the same one) and hands out a lease: a fresh token, an
//! expiry, and the one directory the attempt may write. Every later write checks the token
//! and the expiry under a row lock; the reaper requeues jobs whose lease expired. Claims
//! carry the worker's memory budget: a job a worker refused for want of memory waits for
//! one with more, while one has been seen lately.

use crate::rows::{CheckpointRow, CHECKPOINT_COLUMNS};
use crate::runs::{insert_analysis, run_directory, sync_statuses};
use crate::{Result, Store, StoreError};
use chrono::{DateTime, Utc};
use domain::service::{
    AnalysisPlan, AnalysisResult, AnalysisTask, CheckpointRegistration, CheckpointView, Claim,
    FailureKind, HeartbeatReply, JobKind, JobState, UploadedWeights, WorkerCapacity, WorkerEvent,
    WORKER_SEEN_WITHIN,
};
use domain::Memory;
use sqlx::types::Json;
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// A MiB figure as Postgres's bigint.
fn mib(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Lease settings of the API (from its environment).
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// How long a claim or heartbeat keeps the job.
    pub ttl: Duration,
    /// How often workers are told to heartbeat (well under `ttl`).
    pub heartbeat: Duration,
    /// Attempts of a job failing for infrastructure reasons before it is failed.
    pub max_attempts: u32,
}

/// A job under a valid lease, as a write found it.
#[derive(Clone, Debug)]
pub struct LeasedJob {
    pub id: Uuid,
    pub kind: JobKind,
    pub run_id: Uuid,
    pub analysis_id: Option<Uuid>,
    pub attempt: u32,
    pub state: JobState,
    /// The attempt's directory, relative to the checkpoint store.
    pub directory: String,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    kind: String,
    run_id: Uuid,
    analysis_id: Option<Uuid>,
    attempt: i32,
    state: String,
}

/// SQL over a job `j` and a worker `w`: `w` takes jobs of `j`'s kind and claimed or
/// heartbeat within [`WORKER_SEEN_WITHIN`], whose seconds the query binds as `seconds`.
fn live_worker_of_kind(seconds: &str) -> String {
    format!("j.kind = ANY (w.kinds) AND w.seen_at > now() - {seconds} * interval '1 second'")
}

/// SQL over a job `j` and a worker `w`: `w`'s budget covers what `j` needs of its memory
/// (a job refused only for another memory does not concern it).
const FITS: &str = "coalesce((j.memory_needs ->> w.memory)::bigint <= w.budget_mib, true)";

/// A queued job waiting for a worker with more memory: its needs as (memory, MiB).
#[derive(sqlx::FromRow)]
struct WaitingJob {
    id: Uuid,
    kind: String,
    run_id: Uuid,
    attempt: i32,
    needs: Json<Vec<(String, i64)>>,
}

fn attempt_directory(run: Uuid, attempt: u32) -> String {
    format!("{}/attempt-{attempt}", run_directory(run))
}

impl Store {
    /// Claims the oldest queued job of one of `kinds` that is not known to need more memory
    /// than `capacity`, or returns `None`. Either way the worker is recorded as seen.
    pub async fn claim(
        &self,
        kinds: &[JobKind],
        worker: &str,
        capacity: WorkerCapacity,
        lease: &LeaseConfig,
    ) -> Result<Option<Claim>> {
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO workers (name, kinds, memory, budget_mib) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE
                SET kinds = excluded.kinds, memory = excluded.memory,
                    budget_mib = excluded.budget_mib, seen_at = now()",
        )
        .bind(worker)
        .bind(&kinds)
        .bind(capacity.memory.as_str())
        .bind(mib(capacity.budget_mib))
        .execute(&mut *tx)
        .await?;
        if kinds.contains(&JobKind::Analyze.as_str()) {
            fail_analyses_of_pruned(&mut tx, None).await?;
        }
        let token = Uuid::new_v4();
        let row: Option<JobRow> = sqlx::query_as(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_token = $2,
                    lease_expires_at = now() + $3 * interval '1 millisecond', worker = $4,
                    updated_at = now()
              WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND kind = ANY ($1)
                             AND coalesce((memory_needs ->> $5)::bigint <= $6, true)
                           ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
              RETURNING id, kind, run_id, analysis_id, attempt, state",
        )
        .bind(&kinds)
        .bind(token)
        .bind(lease.ttl.as_millis() as f64)
        .bind(worker)
        .bind(capacity.memory.as_str())
        .bind(mib(capacity.budget_mib))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(job) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let kind: JobKind = job
            .kind
            .parse()
            .map_err(|_| StoreError::Invalid(job.kind.clone()))?;
        let attempt = job.attempt as u32;
        type Run = (
            Json<domain::RunSpec>,
            Option<Json<AnalysisPlan>>,
            i32,
            Option<Json<UploadedWeights>>,
        );
        let (spec, plan, epochs, weights): Run =
            sqlx::query_as("SELECT spec, analysis_plan, epochs, weights FROM runs WHERE id = $1")
                .bind(job.run_id)
                .fetch_one(&mut *tx)
                .await?;
        let (resume_from, analysis) = match kind {
            JobKind::Train => (resume_candidates(&mut tx, job.run_id).await?, None),
            JobKind::Analyze => {
                let analysis_id = job
                    .analysis_id
                    .ok_or_else(|| StoreError::Invalid("analyze job without analysis".into()))?;
                let (checkpoint_id, spec): (Uuid, Json<domain::AnalysisSpec>) =
                    sqlx::query_as("SELECT checkpoint_id, spec FROM analyses WHERE id = $1")
                        .bind(analysis_id)
                        .fetch_one(&mut *tx)
                        .await?;
                let checkpoint: CheckpointRow = sqlx::query_as(&format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE id = $1"
                ))
                .bind(checkpoint_id)
                .fetch_one(&mut *tx)
                .await?;
                let task = AnalysisTask {
                    analysis_id,
                    checkpoint: checkpoint.reference(),
                    spec: spec.0,
                };
                (vec![], Some(task))
            }
        };
        if kind == JobKind::Train {
            sqlx::query(
                "UPDATE runs SET attempt_started_at = NULL, attempt_start_step = NULL WHERE id = $1",
            )
            .bind(job.run_id)
            .execute(&mut *tx)
            .await?;
        }
        sync_statuses(&mut tx, job.run_id).await?;
        sqlx::query("INSERT INTO attempts (job_id, attempt, worker) VALUES ($1, $2, $3)")
            .bind(job.id)
            .bind(job.attempt)
            .bind(worker)
            .execute(&mut *tx)
            .await?;
        log(
            &mut tx,
            job.run_id,
            job.id,
            attempt,
            "info",
            &format!("{kind} job claimed by {worker}"),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Claim {
            job_id: job.id,
            kind,
            run_id: job.run_id,
            attempt,
            lease_token: token,
            lease_ttl_seconds: lease.ttl.as_secs_f64(),
            heartbeat_seconds: lease.heartbeat.as_secs_f64(),
            directory: attempt_directory(job.run_id, attempt),
            keep_epochs: plan.map_or(vec![], |p| p.0.epochs(epochs as u32)),
            spec: spec.0,
            resume_from,
            analysis,
            weights: weights.filter(|_| kind == JobKind::Train).map(|w| w.0),
        }))
    }

    /// Checks a lease without changing anything (before the caller touches files).
    pub async fn check_lease(&self, job: Uuid, token: Uuid) -> Result<LeasedJob> {
        let mut conn = self.pool.acquire().await?;
        leased(&mut conn, job, token, false).await
    }

    /// Extends the lease; says whether the user asked to cancel.
    pub async fn heartbeat(
        &self,
        job: Uuid,
        token: Uuid,
        lease: &LeaseConfig,
    ) -> Result<HeartbeatReply> {
        let mut tx = self.pool.begin().await?;
        let leased = leased(&mut tx, job, token, true).await?;
        let expires: DateTime<Utc> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = now() + $2 * interval '1 millisecond'
              WHERE id = $1 RETURNING lease_expires_at",
        )
        .bind(job)
        .bind(lease.ttl.as_millis() as f64)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE workers SET seen_at = now()
              WHERE name = (SELECT worker FROM jobs WHERE id = $1)",
        )
        .bind(job)
        .execute(&mut *tx)
        .await?;
        let keep_epochs: Vec<i32> = if leased.kind == JobKind::Train {
            sqlx::query_scalar(
                "SELECT DISTINCT c.epoch FROM analyses a JOIN checkpoints c ON c.id = a.checkpoint_id
                  WHERE c.directory = $1 AND c.batch = 0 AND NOT c.removed
                    AND a.status IN ('queued', 'running')
                  ORDER BY c.epoch",
            )
            .bind(&leased.directory)
            .fetch_all(&mut *tx)
            .await?
        } else {
            vec![]
        };
        tx.commit().await?;
        Ok(HeartbeatReply {
            cancel: leased.state == JobState::Cancelling,
            lease_expires_at: expires,
            keep_epochs: keep_epochs.into_iter().map(|e| e as u32).collect(),
        })
    }

    /// Records what a worker reported: resolved spec, progress, epoch metrics, logs.
    pub async fn record_events(
        &self,
        job: Uuid,
        token: Uuid,
        events: &[WorkerEvent],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let leased = leased(&mut tx, job, token, true).await?;
        let run = leased.run_id;
        for event in events {
            match event {
                WorkerEvent::Started {
                    resolved_spec,
                    step,
                    total_steps,
                } => {
                    sqlx::query(
                        "UPDATE runs SET resolved_spec = $2, step = $3, total_steps = $4,
                                attempt_started_at = now(), attempt_start_step = $3,
                                progress_at = now(), updated_at = now()
                          WHERE id = $1",
                    )
                    .bind(run)
                    .bind(Json(resolved_spec))
                    .bind(*step as i64)
                    .bind(*total_steps as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                WorkerEvent::Progress {
                    step, total_steps, ..
                } => {
                    sqlx::query(
                        "UPDATE runs SET step = $2, total_steps = $3, progress_at = now()
                          WHERE id = $1",
                    )
                    .bind(run)
                    .bind(*step as i64)
                    .bind(*total_steps as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                WorkerEvent::Epoch { epoch, records } => {
                    insert_metrics(&mut tx, run, records).await?;
                    sqlx::query(
                        "UPDATE runs SET epochs_done = greatest(epochs_done, $2), updated_at = now()
                          WHERE id = $1",
                    )
                    .bind(run)
                    .bind(*epoch as i32)
                    .execute(&mut *tx)
                    .await?;
                }
                WorkerEvent::Log { level, message } => {
                    log(&mut tx, run, job, leased.attempt, level, message).await?;
                }
                WorkerEvent::CheckpointRemoved { file_name } => {
                    sqlx::query(
                        "UPDATE checkpoints SET removed = true
                          WHERE directory = $1 AND file_name = $2",
                    )
                    .bind(&leased.directory)
                    .bind(file_name)
                    .execute(&mut *tx)
                    .await?;
                    fail_analyses_of_pruned(&mut tx, Some(run)).await?;
                }
                WorkerEvent::Analysing { progress } => {
                    let analysis = leased.analysis_id.ok_or_else(|| {
                        StoreError::Invalid("only analyze jobs report an analysis' progress".into())
                    })?;
                    if progress.pass.is_empty() || progress.batch > progress.batches {
                        return Err(StoreError::Invalid(format!(
                            "an analysis' progress names its pass and a batch within its split's: {progress:?}"
                        )));
                    }
                    sqlx::query("UPDATE analyses SET progress = $2 WHERE id = $1")
                        .bind(analysis)
                        .bind(Json(progress))
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Registers a checkpoint the caller has verified on disk; queues the analyses the
    /// run's plan asks of it. The row is the commit point: unregistered files are ignored.
    pub async fn register_checkpoint(
        &self,
        job: Uuid,
        registration: &CheckpointRegistration,
        lease: &LeaseConfig,
    ) -> Result<CheckpointView> {
        let mut tx = self.pool.begin().await?;
        let leased = leased(&mut tx, job, registration.lease_token, true).await?;
        if leased.kind != JobKind::Train {
            return Err(StoreError::Conflict(
                "only train jobs write checkpoints".into(),
            ));
        }
        let row: CheckpointRow = sqlx::query_as(&format!(
            "INSERT INTO checkpoints (id, run_id, attempt, directory, file_name, epoch, batch,
                                      step, sha256, size)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (directory, file_name) DO UPDATE
                SET epoch = excluded.epoch, batch = excluded.batch, step = excluded.step,
                    sha256 = excluded.sha256, size = excluded.size, removed = false
             RETURNING {CHECKPOINT_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(leased.run_id)
        .bind(leased.attempt as i32)
        .bind(&leased.directory)
        .bind(&registration.file_name)
        .bind(registration.epoch as i32)
        .bind(registration.batch as i32)
        .bind(registration.step as i64)
        .bind(&registration.sha256)
        .bind(registration.size as i64)
        .fetch_one(&mut *tx)
        .await?;
        let (plan, epochs): (Option<Json<AnalysisPlan>>, i32) =
            sqlx::query_as("SELECT analysis_plan, epochs FROM runs WHERE id = $1")
                .bind(leased.run_id)
                .fetch_one(&mut *tx)
                .await?;
        // An epoch's checkpoint registered again (an attempt passed over the first as damaged
        // and trained on from an earlier one) serves that epoch's analyses still queued, and
        // the plan's analysis runs again on it where it failed, maybe on the damaged file.
        // Mid-epoch checkpoints hold other weights: they serve no analysis.
        let epoch = registration.epoch;
        if registration.batch == 0 {
            sqlx::query(
                "UPDATE analyses SET checkpoint_id = $3
                  WHERE run_id = $1 AND epoch = $2 AND status = 'queued'",
            )
            .bind(leased.run_id)
            .bind(epoch as i32)
            .bind(row.id)
            .execute(&mut *tx)
            .await?;
            if let Some(plan) = plan.filter(|p| p.0.wants(epoch, epochs as u32)) {
                let done: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM analyses
                                     WHERE run_id = $1 AND epoch = $2 AND status <> 'failed')",
                )
                .bind(leased.run_id)
                .bind(epoch as i32)
                .fetch_one(&mut *tx)
                .await?;
                if !done {
                    // The trainer's last checkpoint before it stops for a cancel: the run is
                    // being cancelled, and its analyses with it.
                    let state = if leased.state == JobState::Cancelling {
                        JobState::Cancelled
                    } else {
                        JobState::Queued
                    };
                    insert_analysis(
                        &mut tx,
                        leased.run_id,
                        row.id,
                        epoch,
                        &plan.0.spec,
                        lease.max_attempts,
                        state,
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(row.view())
    }

    /// Ends a job whose work is done: `succeeded`, also where the user cancelled it after
    /// the worker's last look (its results are whole, and kept). A worker that stops early
    /// for a cancel releases the job instead ([`Store::release`]).
    pub async fn complete(
        &self,
        job: Uuid,
        token: Uuid,
        analysis: Option<&AnalysisResult>,
    ) -> Result<JobState> {
        let mut tx = self.pool.begin().await?;
        let leased = leased(&mut tx, job, token, true).await?;
        match (leased.kind, leased.analysis_id, analysis) {
            (JobKind::Analyze, Some(id), Some(result)) => {
                store_analysis(&mut tx, id, result).await?
            }
            (JobKind::Analyze, _, None) => {
                return Err(StoreError::Invalid(
                    "an analyze job completes with its results".into(),
                ))
            }
            (JobKind::Train, _, Some(_)) => {
                return Err(StoreError::Invalid(
                    "a train job has no analysis results".into(),
                ))
            }
            _ => {}
        }
        end_job(&mut tx, &leased, JobState::Succeeded, None, None).await?;
        tx.commit().await?;
        Ok(JobState::Succeeded)
    }

    /// Ends a job that failed; `infrastructure` failures are requeued while attempts remain.
    pub async fn fail(
        &self,
        job: Uuid,
        token: Uuid,
        kind: FailureKind,
        error: &str,
    ) -> Result<JobState> {
        let mut tx = self.pool.begin().await?;
        let leased = leased(&mut tx, job, token, true).await?;
        let state = if leased.state == JobState::Cancelling {
            JobState::Cancelled
        } else if kind.is_retried() {
            retry_state(&mut tx, job).await?
        } else {
            JobState::Failed
        };
        end_job(&mut tx, &leased, state, Some(kind), Some(error)).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// Gives back a job that does not fit its worker: it needs `need_mib` of `memory`, more
    /// than the worker's budget. The need is kept on the job, so that claims with less pass
    /// over it; the job is queued again while another worker seen within
    /// [`WORKER_SEEN_WITHIN`] has enough, and failed as invalid otherwise (a pool of alike
    /// workers: none can ever take it).
    pub async fn refuse(
        &self,
        job: Uuid,
        token: Uuid,
        memory: Memory,
        need_mib: u64,
        error: &str,
    ) -> Result<JobState> {
        let mut tx = self.pool.begin().await?;
        let leased = leased(&mut tx, job, token, true).await?;
        if leased.state == JobState::Cancelling {
            end_job(&mut tx, &leased, JobState::Cancelled, None, Some(error)).await?;
            tx.commit().await?;
            return Ok(JobState::Cancelled);
        }
        sqlx::query(
            "UPDATE jobs SET memory_needs = memory_needs || jsonb_build_object($2::text,
                    greatest(coalesce((memory_needs ->> $2)::bigint, 0), $3))
              WHERE id = $1",
        )
        .bind(job)
        .bind(memory.as_str())
        .bind(mib(need_mib))
        .execute(&mut *tx)
        .await?;
        let taker: Option<(String, String, i64)> = sqlx::query_as(&format!(
            "SELECT w.name, w.memory, w.budget_mib FROM workers w, jobs j
              WHERE j.id = $1 AND w.name <> j.worker AND {} AND {FITS}
              ORDER BY w.seen_at DESC LIMIT 1",
            live_worker_of_kind("$2")
        ))
        .bind(job)
        .bind(WORKER_SEEN_WITHIN.as_secs_f64())
        .fetch_optional(&mut *tx)
        .await?;
        let state = match taker {
            Some((name, memory, budget)) => {
                let capacity = crate::rows::capacity(&memory, budget)?;
                let note = format!(
                    "{error}; queued again for a worker with more (seen lately: {name}, with \
                     {capacity})"
                );
                end_job(&mut tx, &leased, JobState::Queued, None, Some(&note)).await?;
                JobState::Queued
            }
            None => {
                let minutes = WORKER_SEEN_WITHIN.as_secs() / 60;
                let note = format!(
                    "{error}; no worker seen in the last {minutes} minutes has {need_mib} MiB \
                     of {memory}"
                );
                let kind = Some(FailureKind::Invalid);
                end_job(&mut tx, &leased, JobState::Failed, kind, Some(&note)).await?;
                JobState::Failed
            }
        };
        tx.commit().await?;
        Ok(state)
    }

    /// Gives a job back without counting a failure (a worker that stopped early: shutting
    /// down after it checkpointed, or told to cancel): it is queued again, or cancelled if
    /// the user cancelled it.
    pub async fn release(&self, job: Uuid, token: Uuid) -> Result<JobState> {
        let mut tx = self.pool.begin().await?;
        let leased = leased(&mut tx, job, token, true).await?;
        let state = if leased.state == JobState::Cancelling {
            JobState::Cancelled
        } else {
            JobState::Queued
        };
        end_job(&mut tx, &leased, state, None, None).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// Fails, as invalid, queued jobs that wait for a worker with more memory (a refusal
    /// queued them again) once no worker seen within [`WORKER_SEEN_WITHIN`] has it while
    /// others of their kind have been seen: the larger worker they waited for is gone, and
    /// the pool left cannot take them. With no worker of their kind seen at all (the pool is
    /// down or restarting) they keep waiting. Returns the jobs failed.
    pub async fn fail_stranded(&self) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let live = live_worker_of_kind("$1");
        let stranded: Vec<WaitingJob> = sqlx::query_as(&format!(
            "SELECT j.id, j.kind, j.run_id, j.attempt,
                    (SELECT jsonb_agg(jsonb_build_array(key, value::bigint) ORDER BY key)
                       FROM jsonb_each_text(j.memory_needs)) AS needs
               FROM jobs j
              WHERE j.state = 'queued' AND j.memory_needs <> '{{}}'::jsonb
                AND EXISTS (SELECT 1 FROM workers w WHERE {live})
                AND NOT EXISTS (SELECT 1 FROM workers w WHERE {live} AND {FITS})
              FOR UPDATE OF j SKIP LOCKED"
        ))
        .bind(WORKER_SEEN_WITHIN.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        let minutes = WORKER_SEEN_WITHIN.as_secs() / 60;
        for job in &stranded {
            let needs = job
                .needs
                .iter()
                .map(|(memory, need)| {
                    let need = crate::rows::capacity(memory, *need)?;
                    Ok(format!("{} MiB of {}", need.budget_mib, need.memory))
                })
                .collect::<Result<Vec<_>>>()?
                .join(" or ");
            let error = format!(
                "it waited for a worker with more memory, and none seen in the last {minutes} \
                 minutes has {needs}"
            );
            sqlx::query(
                "UPDATE jobs SET state = 'failed', failure_kind = $2, last_error = $3,
                        updated_at = now()
                  WHERE id = $1",
            )
            .bind(job.id)
            .bind(FailureKind::Invalid.as_str())
            .bind(&error)
            .execute(&mut *tx)
            .await?;
            let message = format!("{} job failed (invalid): {error}", job.kind);
            log(
                &mut tx,
                job.run_id,
                job.id,
                job.attempt as u32,
                "error",
                &message,
            )
            .await?;
            sync_statuses(&mut tx, job.run_id).await?;
        }
        tx.commit().await?;
        Ok(stranded.len() as u64)
    }

    /// Requeues (or fails) jobs whose lease expired: their worker is gone or stalled. A
    /// stalled worker that wakes finds its token refused. Returns the jobs reaped. Also
    /// forgets workers not seen for a week.
    pub async fn reap_expired(&self) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let expired: Vec<JobRow> = sqlx::query_as(
            "SELECT id, kind, run_id, analysis_id, attempt, state FROM jobs
              WHERE state IN ('running', 'cancelling') AND lease_expires_at < now()
              FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await?;
        for job in &expired {
            let leased = job_of(job)?;
            if leased.state == JobState::Cancelling {
                end_job(&mut tx, &leased, JobState::Cancelled, None, None).await?;
            } else {
                let error = "the lease expired: the worker was lost or stalled";
                let state = retry_state(&mut tx, job.id).await?;
                let kind = Some(FailureKind::Infrastructure);
                end_job(&mut tx, &leased, state, kind, Some(error)).await?;
            }
        }
        sqlx::query("DELETE FROM workers WHERE seen_at < now() - interval '7 days'")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(expired.len() as u64)
    }
}

/// `queued` if an infrastructure failure leaves attempts, else `failed`; counts it.
async fn retry_state(conn: &mut PgConnection, job: Uuid) -> Result<JobState> {
    let (failures, max): (i32, i32) = sqlx::query_as(
        "UPDATE jobs SET failures = failures + 1 WHERE id = $1 RETURNING failures, max_attempts",
    )
    .bind(job)
    .fetch_one(conn)
    .await?;
    Ok(if failures < max {
        JobState::Queued
    } else {
        JobState::Failed
    })
}

/// Fails the queued analyses whose checkpoint training has pruned (one a user asked for of
/// an epoch the plan does not keep), of `run` or of every run: no analyzer could read it,
/// and retrying would not bring it back. Called when a trainer reports a removal, and
/// before an analyzer claims (an analysis queued again after its analyzer was lost may
/// have lost its file since). Analyses running read the whole file when they began.
async fn fail_analyses_of_pruned(conn: &mut PgConnection, run: Option<Uuid>) -> Result<()> {
    let failed: Vec<(Uuid, Uuid, i32, String)> = sqlx::query_as(
        "UPDATE jobs j SET state = 'failed', failure_kind = 'invalid', updated_at = now(),
                last_error = 'its checkpoint ' || c.file_name || ' was pruned by training (the \
                 spec''s keep_last) before an analyzer took it: ask again for a checkpoint \
                 still on disk, or plan the epoch''s analysis with the run \
                 (analysis_checkpoints) so that training keeps it'
           FROM analyses a JOIN checkpoints c ON c.id = a.checkpoint_id
          WHERE j.kind = 'analyze' AND j.state = 'queued' AND a.id = j.analysis_id
            AND c.removed AND ($1::uuid IS NULL OR j.run_id = $1)
          RETURNING j.id, j.run_id, j.attempt, j.last_error",
    )
    .bind(run)
    .fetch_all(&mut *conn)
    .await?;
    let mut runs = vec![];
    for (job, run, attempt, error) in failed {
        let message = format!("analyze job failed (invalid): {error}");
        log(conn, run, job, attempt as u32, "error", &message).await?;
        if !runs.contains(&run) {
            runs.push(run);
        }
    }
    for run in runs {
        sync_statuses(conn, run).await?;
    }
    Ok(())
}

/// Ends the job's lease in `state`, recording on the job and its attempt why: a failure's
/// kind and error, or only an error (a refusal that leaves it queued).
async fn end_job(
    conn: &mut PgConnection,
    job: &LeasedJob,
    state: JobState,
    failure_kind: Option<FailureKind>,
    error: Option<&str>,
) -> Result<()> {
    let kind = failure_kind.map(|k| k.as_str());
    sqlx::query(
        "UPDATE jobs SET state = $2, lease_token = NULL, lease_expires_at = NULL,
                failure_kind = coalesce($3, failure_kind), last_error = coalesce($4, last_error),
                updated_at = now()
          WHERE id = $1",
    )
    .bind(job.id)
    .bind(state.as_str())
    .bind(kind)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE attempts SET ended_at = now(), outcome = $3, failure_kind = $4, error = $5
          WHERE job_id = $1 AND attempt = $2",
    )
    .bind(job.id)
    .bind(job.attempt as i32)
    .bind(state.as_str())
    .bind(kind)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    let (level, message) = match (failure_kind, error) {
        (Some(kind), Some(error)) => (
            "error",
            format!("{} job {state} ({kind}): {error}", job.kind),
        ),
        (_, Some(error)) => ("warn", format!("{} job {state}: {error}", job.kind)),
        _ => ("info", format!("{} job {state}", job.kind)),
    };
    log(conn, job.run_id, job.id, job.attempt, level, &message).await?;
    sync_statuses(conn, job.run_id).await
}

fn job_of(row: &JobRow) -> Result<LeasedJob> {
    Ok(LeasedJob {
        id: row.id,
        kind: row
            .kind
            .parse()
            .map_err(|_| StoreError::Invalid(row.kind.clone()))?,
        run_id: row.run_id,
        analysis_id: row.analysis_id,
        attempt: row.attempt as u32,
        state: crate::rows::state(&row.state)?,
        directory: attempt_directory(row.run_id, row.attempt as u32),
    })
}

/// The job, if `token` holds its unexpired lease; locks the row when `lock`.
async fn leased(conn: &mut PgConnection, job: Uuid, token: Uuid, lock: bool) -> Result<LeasedJob> {
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "SELECT id, kind, run_id, analysis_id, attempt, state FROM jobs
          WHERE id = $1 AND lease_token = $2 AND lease_expires_at > now()
            AND state IN ('running', 'cancelling'){}",
        if lock { " FOR UPDATE" } else { "" }
    ))
    .bind(job)
    .bind(token)
    .fetch_optional(conn)
    .await?;
    match row {
        Some(row) => job_of(&row),
        None => Err(StoreError::LeaseLost(job)),
    }
}

/// The run's newest registered checkpoint that is still on disk.
/// The run's registered checkpoints not pruned, newest first: where a train job resumes.
async fn resume_candidates(
    conn: &mut PgConnection,
    run: Uuid,
) -> Result<Vec<domain::service::CheckpointRef>> {
    let rows: Vec<CheckpointRow> = sqlx::query_as(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE run_id = $1 AND NOT removed
          ORDER BY step DESC, created_at DESC"
    ))
    .bind(run)
    .fetch_all(conn)
    .await?;
    Ok(rows.iter().map(CheckpointRow::reference).collect())
}

async fn insert_metrics(
    conn: &mut PgConnection,
    run: Uuid,
    records: &[domain::MetricRecord],
) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    let splits: Vec<&str> = records
        .iter()
        .map(|r| r.split.map_or("", |s| s.as_str()))
        .collect();
    let epochs: Vec<i32> = records.iter().map(|r| r.epoch as i32).collect();
    let blocks: Vec<String> = records
        .iter()
        .map(|r| r.block.map_or(String::new(), |b| b.to_string()))
        .collect();
    let indices: Vec<Option<i32>> = records
        .iter()
        .map(|r| r.block_index.map(|i| i as i32))
        .collect();
    let values: Vec<f64> = records.iter().map(|r| r.value).collect();
    sqlx::query(
        "INSERT INTO metrics (run_id, name, split, epoch, block, block_index, value)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int[], $5::text[], $6::int[],
                                  $7::float8[])
         ON CONFLICT (run_id, name, split, block, epoch) DO UPDATE SET value = excluded.value",
    )
    .bind(run)
    .bind(&names)
    .bind(&splits)
    .bind(&epochs)
    .bind(&blocks)
    .bind(&indices)
    .bind(&values)
    .execute(conn)
    .await?;
    Ok(())
}

async fn store_analysis(conn: &mut PgConnection, id: Uuid, result: &AnalysisResult) -> Result<()> {
    sqlx::query(
        "UPDATE analyses SET selected_alpha = $2, notes = $3, examples = $4, seconds = $5,
                passes = $6
          WHERE id = $1",
    )
    .bind(id)
    .bind(result.selected_alpha)
    .bind(Json(&result.notes))
    .bind(Json(&result.examples))
    .bind(result.seconds)
    .bind(Json(&result.passes))
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM analysis_records WHERE analysis_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let seqs: Vec<i32> = (0..result.records.len() as i32).collect();
    let records: Vec<serde_json::Value> = result
        .records
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    sqlx::query(
        "INSERT INTO analysis_records (analysis_id, seq, record)
         SELECT $1, * FROM unnest($2::int[], $3::jsonb[])",
    )
    .bind(id)
    .bind(&seqs)
    .bind(&records)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn log(
    conn: &mut PgConnection,
    run: Uuid,
    job: Uuid,
    attempt: u32,
    level: &str,
    message: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO logs (run_id, job_id, attempt, level, message) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(run)
    .bind(job)
    .bind(attempt as i32)
    .bind(level)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}
