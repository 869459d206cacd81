//! Runs and experiments: submission (with idempotency keys), listing, cancel, retry, delete.

use crate::rows::{ExperimentRow, RunRow, RUN_VIEW};
use crate::{Result, Store, StoreError};
use domain::service::{
    ConfigSummary, ExperimentSummary, ExperimentView, ImportSubmission, JobState, Page,
    RunSubmission, RunView, UploadedWeights,
};
use domain::{AnalysisSpec, Arch, ExperimentSpec, RunSpec};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

/// An `Idempotency-Key` and a digest of the request it came with.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: String,
    pub request_sha256: String,
}

/// The result of a submission: created now, or the first response replayed.
#[derive(Clone, Debug, PartialEq)]
pub enum Submitted<T> {
    Created(T),
    Replayed(T),
}

impl<T> Submitted<T> {
    pub fn into_inner(self) -> T {
        match self {
            Self::Created(v) | Self::Replayed(v) => v,
        }
    }
}

/// Filters of `GET /v1/runs`.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub status: Option<JobState>,
    pub arch: Option<Arch>,
    pub tag: Option<String>,
    pub experiment: Option<Uuid>,
    /// The run's name, exactly.
    pub name: Option<String>,
}

type Tx = Transaction<'static, Postgres>;

enum Replay<T> {
    Stored(T),
    New(Tx),
}

/// Stores the response under the idempotency key (if any) and commits the submission.
async fn remember<T: Serialize>(
    mut tx: Tx,
    route: &str,
    idempotency: Option<&Idempotency>,
    response: &T,
) -> Result<()> {
    if let Some(idem) = idempotency {
        sqlx::query(
            "INSERT INTO idempotency_keys (route, key, request_sha256, status, response)
             VALUES ($1, $2, $3, 201, $4)",
        )
        .bind(route)
        .bind(&idem.key)
        .bind(&idem.request_sha256)
        .bind(Json(serde_json::to_value(response)?))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

impl Store {
    /// Stores a run and its train job. With an idempotency key, concurrent and repeated
    /// submissions of the same request create one run; another request under the same key
    /// is refused.
    pub async fn submit_run(
        &self,
        submission: &RunSubmission,
        idempotency: Option<&Idempotency>,
        max_attempts: u32,
    ) -> Result<Submitted<RunView>> {
        let run = NewRun {
            id: Uuid::now_v7(),
            spec: &submission.spec,
            analysis: submission.analysis.as_ref(),
            weights: None,
        };
        self.submit_one("POST /v1/runs", run, idempotency, max_attempts)
            .await
    }

    /// Stores run `id` made of uploaded weights (`POST /v1/runs/import`); its train job
    /// imports them. The API has put the file in place before this commits the run (with
    /// the id it chose for the file's directory); a replayed request returns the first
    /// run, whose file is the first request's.
    pub async fn import_run(
        &self,
        id: Uuid,
        submission: &ImportSubmission,
        weights: &UploadedWeights,
        idempotency: Option<&Idempotency>,
        max_attempts: u32,
    ) -> Result<Submitted<RunView>> {
        let run = NewRun {
            id,
            spec: &submission.spec,
            analysis: submission.analysis.as_ref(),
            weights: Some(weights),
        };
        self.submit_one("POST /v1/runs/import", run, idempotency, max_attempts)
            .await
    }

    async fn submit_one(
        &self,
        route: &str,
        run: NewRun<'_>,
        idempotency: Option<&Idempotency>,
        max_attempts: u32,
    ) -> Result<Submitted<RunView>> {
        let mut tx = match self.replay(route, idempotency).await? {
            Replay::Stored(view) => return Ok(Submitted::Replayed(view)),
            Replay::New(tx) => tx,
        };
        let id = run.id;
        insert_run(&mut tx, None, &run.spec.model.label(), run, max_attempts).await?;
        let view = run_in(&mut tx, id).await?;
        remember(tx, route, idempotency, &view).await?;
        Ok(Submitted::Created(view))
    }

    /// Stores an experiment and one run per configuration and seed, each analysed at its
    /// final checkpoint with the experiment's analysis.
    pub async fn submit_experiment(
        &self,
        spec: &ExperimentSpec,
        idempotency: Option<&Idempotency>,
        max_attempts: u32,
    ) -> Result<Submitted<ExperimentView>> {
        let ids: Vec<Uuid> = spec.runs().iter().map(|_| Uuid::now_v7()).collect();
        let route = "POST /v1/experiments";
        self.store_experiment(route, spec, &ids, &[], idempotency, max_attempts)
            .await
    }

    /// [`Self::submit_experiment`] where some runs are made of uploaded weights
    /// (`POST /v1/experiments/import`): their train jobs import them. The API chose the
    /// runs' ids (`run_ids`, one per run of [`ExperimentSpec::runs`], in its order, as the
    /// experiment lists its runs by id) to place the files in their directories before this
    /// commits the runs, as for [`Self::import_run`].
    pub async fn import_experiment(
        &self,
        spec: &ExperimentSpec,
        run_ids: &[Uuid],
        imported: &[ImportedRun],
        idempotency: Option<&Idempotency>,
        max_attempts: u32,
    ) -> Result<Submitted<ExperimentView>> {
        let route = "POST /v1/experiments/import";
        self.store_experiment(route, spec, run_ids, imported, idempotency, max_attempts)
            .await
    }

    async fn store_experiment(
        &self,
        route: &str,
        spec: &ExperimentSpec,
        run_ids: &[Uuid],
        imported: &[ImportedRun],
        idempotency: Option<&Idempotency>,
        max_attempts: u32,
    ) -> Result<Submitted<ExperimentView>> {
        let runs = spec.runs();
        if run_ids.len() != runs.len() {
            return Err(StoreError::Invalid(format!(
                "{} run ids for the {} runs of experiment {}",
                run_ids.len(),
                runs.len(),
                spec.name
            )));
        }
        let mut tx = match self.replay(route, idempotency).await? {
            Replay::Stored(view) => return Ok(Submitted::Replayed(view)),
            Replay::New(tx) => tx,
        };
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO experiments (id, name, spec) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(&spec.name)
            .bind(Json(spec))
            .execute(&mut *tx)
            .await?;
        let plan = spec.analysis_plan();
        for (index, (run, &run_id)) in runs.iter().zip(run_ids).enumerate() {
            let imported = imported.iter().find(|r| r.index == index);
            let new = NewRun {
                id: run_id,
                spec: &run.spec,
                analysis: Some(&plan),
                weights: imported.map(|r| &r.weights),
            };
            insert_run(&mut tx, Some(id), &run.label, new, max_attempts).await?;
        }
        let view = experiment_in(&mut tx, id).await?;
        remember(tx, route, idempotency, &view).await?;
        Ok(Submitted::Created(view))
    }

    /// Opens the transaction of a submission. Under an idempotency key it first takes an
    /// advisory lock on the key, which serialises concurrent duplicates until the first
    /// commits, and returns the stored response of an earlier request instead.
    async fn replay<T: DeserializeOwned>(
        &self,
        route: &str,
        idempotency: Option<&Idempotency>,
    ) -> Result<Replay<T>> {
        let mut tx = self.pool.begin().await?;
        if let Some(idem) = idempotency {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || $2, 0))")
                .bind(route)
                .bind(&idem.key)
                .execute(&mut *tx)
                .await?;
            let stored: Option<(String, Json<serde_json::Value>)> = sqlx::query_as(
                "SELECT request_sha256, response FROM idempotency_keys
                  WHERE route = $1 AND key = $2",
            )
            .bind(route)
            .bind(&idem.key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((digest, response)) = stored {
                if digest != idem.request_sha256 {
                    return Err(StoreError::IdempotencyMismatch(idem.key.clone()));
                }
                return Ok(Replay::Stored(serde_json::from_value(response.0)?));
            }
        }
        Ok(Replay::New(tx))
    }

    pub async fn run(&self, id: Uuid) -> Result<RunView> {
        let mut conn = self.pool.acquire().await?;
        run_in(&mut conn, id).await
    }

    /// Runs newest first, `limit` per page, after the cursor (a run id) when given.
    pub async fn list_runs(
        &self,
        filter: &RunFilter,
        cursor: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<RunView>> {
        // Only the filters given are in the statement (as in `metrics`): with `$1 IS NULL OR
        // …` for each, the generic plan Postgres settles on after a few calls joins every
        // run and sorts them, where this reads the newest off the primary key.
        let mut query = QueryBuilder::new(format!("{RUN_VIEW} WHERE true"));
        if let Some(cursor) = cursor {
            query.push(" AND r.id < ").push_bind(cursor);
        }
        if let Some(status) = filter.status {
            query.push(" AND r.status = ").push_bind(status.as_str());
        }
        if let Some(arch) = filter.arch {
            query.push(" AND r.arch = ").push_bind(arch.as_str());
        }
        if let Some(tag) = &filter.tag {
            query.push(" AND ").push_bind(tag).push(" = ANY (r.tags)");
        }
        if let Some(experiment) = filter.experiment {
            query.push(" AND r.experiment_id = ").push_bind(experiment);
        }
        if let Some(name) = &filter.name {
            query.push(" AND r.name = ").push_bind(name);
        }
        query
            .push(" ORDER BY r.id DESC LIMIT ")
            .push_bind(limit as i64 + 1);
        let rows: Vec<RunRow> = query.build_query_as().fetch_all(&self.pool).await?;
        let more = rows.len() > limit as usize;
        let items = rows
            .into_iter()
            .take(limit as usize)
            .map(RunRow::view)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if more {
            items.last().map(|r| r.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Experiments newest first (only those named `name`, when given), `limit` per page,
    /// after the cursor (an experiment id).
    pub async fn list_experiments(
        &self,
        name: Option<&str>,
        cursor: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<ExperimentSummary>> {
        let rows: Vec<ExperimentRow> = sqlx::query_as(
            "SELECT e.id, e.name, e.created_at, count(r.id) AS runs,
                        count(r.id) FILTER (WHERE r.status = 'succeeded') AS succeeded,
                        count(r.id) FILTER (WHERE r.status = 'failed') AS failed,
                        count(r.id) FILTER (WHERE r.status IN ('queued', 'running', 'cancelling'))
                          AS active
                   FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.id
                  WHERE ($1::uuid IS NULL OR e.id < $1)
                    AND ($2::text IS NULL OR e.name = $2)
                  GROUP BY e.id
                  ORDER BY e.id DESC
                  LIMIT $3",
        )
        .bind(cursor)
        .bind(name)
        .bind(limit as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit as usize;
        let items: Vec<ExperimentSummary> = rows
            .into_iter()
            .take(limit as usize)
            .map(ExperimentRow::view)
            .collect();
        let next_cursor = more
            .then(|| items.last().map(|e| e.id.to_string()))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    pub async fn experiment(&self, id: Uuid) -> Result<ExperimentView> {
        let mut conn = self.pool.acquire().await?;
        experiment_in(&mut conn, id).await
    }

    /// Cancels a run's unfinished jobs: queued ones at once, running ones at their
    /// worker's next heartbeat (`cancelling`).
    pub async fn cancel_run(&self, id: Uuid) -> Result<RunView> {
        self.act_on_run(id, RunAction::Cancel).await
    }

    /// Queues a failed or cancelled run again; it resumes from its latest checkpoint with
    /// a fresh allowance of attempts.
    pub async fn retry_run(&self, id: Uuid, max_attempts: u32) -> Result<RunView> {
        self.act_on_run(id, RunAction::Retry { max_attempts }).await
    }

    /// Cancels every queued or running run of an experiment, in one transaction.
    pub async fn cancel_experiment(&self, id: Uuid) -> Result<ExperimentView> {
        self.act_on_experiment(id, RunAction::Cancel).await
    }

    /// Queues every failed or cancelled run of an experiment again, in one transaction.
    pub async fn retry_experiment(&self, id: Uuid, max_attempts: u32) -> Result<ExperimentView> {
        self.act_on_experiment(id, RunAction::Retry { max_attempts })
            .await
    }

    async fn act_on_run(&self, id: Uuid, action: RunAction) -> Result<RunView> {
        let mut tx = self.pool.begin().await?;
        action.apply(&mut tx, id).await?;
        let view = run_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(view)
    }

    async fn act_on_experiment(&self, id: Uuid, action: RunAction) -> Result<ExperimentView> {
        let mut tx = self.pool.begin().await?;
        let runs = lock_experiment_runs(&mut tx, id, action.acts_on()).await?;
        if runs.is_empty() {
            return Err(StoreError::Conflict(format!(
                "experiment {id} has no {} runs to {}",
                action.acts_on().join(" or "),
                action.verb()
            )));
        }
        for run in runs {
            action.apply(&mut tx, run).await?;
        }
        let view = experiment_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Deletes a run that is not running, with everything recorded about it. Returns the
    /// run's directory in the checkpoint store, for the caller to remove.
    pub async fn delete_run(&self, id: Uuid) -> Result<String> {
        let mut tx = self.pool.begin().await?;
        lock_run(&mut tx, id).await?;
        refuse_running_jobs(&mut tx, &[id], &format!("run {id} has")).await?;
        sqlx::query("DELETE FROM runs WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(run_directory(id))
    }

    /// Deletes an experiment none of whose runs has a job running, with its runs and
    /// everything recorded about them. Returns the runs' directories in the checkpoint
    /// store, for the caller to remove.
    pub async fn delete_experiment(&self, id: Uuid) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let every_state: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        let runs = lock_experiment_runs(&mut tx, id, &every_state).await?;
        refuse_running_jobs(&mut tx, &runs, &format!("experiment {id} has runs with")).await?;
        sqlx::query("DELETE FROM experiments WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(runs.into_iter().map(run_directory).collect())
    }

    /// Counts of jobs by kind and state, for `/metrics`.
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT kind, state, count(*) FROM jobs GROUP BY kind, state ORDER BY kind, state",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Per job kind with queued jobs, the seconds since the longest-waiting one was queued
    /// (its last change of state): the signal to add workers of that kind, for `/metrics`.
    pub async fn queue_waits(&self) -> Result<Vec<(String, f64)>> {
        Ok(sqlx::query_as(
            "SELECT kind, extract(epoch FROM now() - min(updated_at))::float8 FROM jobs
              WHERE state = 'queued' GROUP BY kind ORDER BY kind",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Counts of the workers seen lately (as a refused job counts them), by the job kind
    /// they take and the memory they compute in, for `/metrics`.
    pub async fn live_worker_counts(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT kind, memory, count(*) FROM workers, unnest(kinds) AS kind
              WHERE seen_at > now() - $1 * interval '1 second'
              GROUP BY kind, memory ORDER BY kind, memory",
        )
        .bind(domain::service::WORKER_SEEN_WITHIN.as_secs_f64())
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A run's directory, relative to the checkpoint store: its attempts' directories, and the
/// weights of a run made of them.
pub fn run_directory(run: Uuid) -> String {
    format!("runs/{run}")
}

/// Where the API stores the weights of a run made of them, relative to the checkpoint
/// store: beside the attempts' directories, and removed with them.
pub fn weights_path(run: Uuid) -> String {
    format!("{}/weights", run_directory(run))
}

/// A run of an experiment made of uploaded weights.
#[derive(Clone, Debug)]
pub struct ImportedRun {
    /// Its place in [`ExperimentSpec::runs`].
    pub index: usize,
    pub weights: UploadedWeights,
}

/// A run to store.
struct NewRun<'a> {
    id: Uuid,
    spec: &'a RunSpec,
    analysis: Option<&'a domain::service::AnalysisPlan>,
    weights: Option<&'a UploadedWeights>,
}

async fn insert_run(
    tx: &mut Tx,
    experiment: Option<Uuid>,
    label: &str,
    run: NewRun<'_>,
    max_attempts: u32,
) -> Result<()> {
    let NewRun {
        id,
        spec,
        analysis,
        weights,
    } = run;
    sqlx::query(
        "INSERT INTO runs (id, experiment_id, label, name, tags, arch, dataset, spec,
                           analysis_plan, weights, status, epochs)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11)",
    )
    .bind(id)
    .bind(experiment)
    .bind(label)
    .bind(&spec.name)
    .bind(&spec.tags)
    .bind(spec.model.arch.as_str())
    .bind(&spec.data.dataset)
    .bind(Json(spec))
    .bind(analysis.map(Json))
    .bind(weights.map(Json))
    .bind(spec.epochs() as i32)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO jobs (id, kind, run_id, state, max_attempts)
         VALUES ($1, 'train', $2, 'queued', $3)",
    )
    .bind(Uuid::now_v7())
    .bind(id)
    .bind(max_attempts as i32)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn run_in(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<RunView> {
    let row: Option<RunRow> = sqlx::query_as(&format!("{RUN_VIEW} WHERE r.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.ok_or_else(|| not_found("run", id))?.view()
}

async fn experiment_in(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<ExperimentView> {
    let row: Option<(String, Json<ExperimentSpec>, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT name, spec, created_at FROM experiments WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let (name, spec, created_at) = row.ok_or_else(|| not_found("experiment", id))?;
    let rows: Vec<RunRow> = sqlx::query_as(&format!(
        "{RUN_VIEW} WHERE r.experiment_id = $1 ORDER BY r.id"
    ))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let runs = rows
        .into_iter()
        .map(RunRow::view)
        .collect::<Result<Vec<_>>>()?;
    let finals: Vec<(Uuid, f64)> = sqlx::query_as(
        "SELECT m.run_id, m.value FROM metrics m JOIN runs r ON r.id = m.run_id
          WHERE r.experiment_id = $1 AND m.name = 'accuracy' AND m.split = 'test'
            AND m.block = '' AND m.epoch = r.epochs",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut configs: Vec<ConfigSummary> = vec![];
    for run in &runs {
        let index = match configs.iter().position(|c| c.label == run.label) {
            Some(i) => i,
            None => {
                configs.push(ConfigSummary {
                    label: run.label.clone(),
                    runs: 0,
                    succeeded: 0,
                    test_accuracy_mean: None,
                    test_accuracy_sd: None,
                });
                configs.len() - 1
            }
        };
        let c = &mut configs[index];
        c.runs += 1;
        c.succeeded += (run.status == JobState::Succeeded) as u32;
    }
    for c in &mut configs {
        let values: Vec<f64> = runs
            .iter()
            .filter(|r| r.label == c.label && r.status == JobState::Succeeded)
            .filter_map(|r| finals.iter().find(|(id, _)| *id == r.id).map(|f| f.1))
            .collect();
        if !values.is_empty() {
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            c.test_accuracy_mean = Some(mean);
            c.test_accuracy_sd = (values.len() > 1).then(|| {
                (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
            });
        }
    }
    Ok(ExperimentView {
        id,
        name,
        spec: spec.0,
        created_at,
        configs,
        runs,
    })
}

/// Locks a run's row for a state change and returns its status.
/// What users do to runs, one at a time or to an experiment's at once.
#[derive(Clone, Copy)]
enum RunAction {
    Cancel,
    Retry { max_attempts: u32 },
}

impl RunAction {
    /// The run states it applies to.
    fn acts_on(self) -> &'static [&'static str] {
        match self {
            Self::Cancel => &["queued", "running"],
            Self::Retry { .. } => &["failed", "cancelled"],
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Retry { .. } => "retry",
        }
    }

    /// Applies it to one run, locked first; a run in another state is a conflict.
    async fn apply(self, tx: &mut Tx, id: Uuid) -> Result<()> {
        let status = lock_run(tx, id).await?;
        match self {
            // A `cancelling` run is being cancelled already: nothing to do.
            Self::Cancel if status.is_final() => Err(StoreError::Conflict(format!(
                "run {id} is {status}; only queued or running runs can be cancelled"
            ))),
            Self::Cancel => {
                sqlx::query(
                    "UPDATE jobs SET state = CASE WHEN state = 'queued' THEN 'cancelled'
                                                  ELSE 'cancelling' END, updated_at = now()
                      WHERE run_id = $1 AND state IN ('queued', 'running')",
                )
                .bind(id)
                .execute(&mut **tx)
                .await?;
                sync_statuses(tx, id).await
            }
            Self::Retry { .. } if !matches!(status, JobState::Failed | JobState::Cancelled) => {
                Err(StoreError::Conflict(format!(
                    "run {id} is {status}; only failed or cancelled runs can be retried"
                )))
            }
            Self::Retry { max_attempts } => {
                sqlx::query(
                    "UPDATE jobs SET state = 'queued', failures = 0, max_attempts = $2,
                            failure_kind = NULL, last_error = NULL, updated_at = now()
                      WHERE run_id = $1 AND state IN ('failed', 'cancelled')",
                )
                .bind(id)
                .bind(max_attempts as i32)
                .execute(&mut **tx)
                .await?;
                sync_statuses(tx, id).await
            }
        }
    }
}

/// A conflict when any job of `runs` is running or being cancelled: its worker may still
/// write files. `who` begins the message ("run … has").
async fn refuse_running_jobs(tx: &mut Tx, runs: &[Uuid], who: &str) -> Result<()> {
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE run_id = ANY ($1) AND state IN ('running', 'cancelling')",
    )
    .bind(runs)
    .fetch_one(&mut **tx)
    .await?;
    if active > 0 {
        return Err(StoreError::Conflict(format!(
            "{who} a job running; cancel it and wait until it stops"
        )));
    }
    Ok(())
}

/// Locks the runs of an experiment in one of `states` (in id order, so that two such
/// transactions cannot deadlock) and returns their ids; 404 when there is no such
/// experiment.
async fn lock_experiment_runs(tx: &mut Tx, id: Uuid, states: &[&str]) -> Result<Vec<Uuid>> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM experiments WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    exists.ok_or_else(|| not_found("experiment", id))?;
    Ok(sqlx::query_scalar(
        "SELECT id FROM runs WHERE experiment_id = $1 AND status = ANY ($2)
          ORDER BY id FOR UPDATE",
    )
    .bind(id)
    .bind(states)
    .fetch_all(&mut **tx)
    .await?)
}

async fn lock_run(tx: &mut Tx, id: Uuid) -> Result<JobState> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM runs WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    crate::rows::state(&status.ok_or_else(|| not_found("run", id))?)
}

/// Copies job states to their run (the train job's) and analyses (their analyze job's).
pub(crate) async fn sync_statuses(conn: &mut sqlx::PgConnection, run: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE runs r SET status = j.state, updated_at = now()
           FROM jobs j WHERE j.run_id = r.id AND j.kind = 'train' AND r.id = $1
            AND r.status <> j.state",
    )
    .bind(run)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE analyses a SET status = j.state,
                finished_at = CASE WHEN j.state IN ('succeeded', 'failed', 'cancelled')
                                   THEN coalesce(a.finished_at, now()) END,
                -- A new claim starts from nothing; a cancelling one is still at work.
                progress = CASE WHEN j.state = 'cancelling' THEN a.progress END
           FROM jobs j WHERE j.analysis_id = a.id AND a.run_id = $1 AND a.status <> j.state",
    )
    .bind(run)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) fn not_found(what: &'static str, id: impl ToString) -> StoreError {
    StoreError::NotFound {
        what,
        id: id.to_string(),
    }
}

/// An analyze job for a checkpoint (the plan's, or one a user asked for), `queued`, or
/// `cancelled` where its run is being cancelled (a retry of the run queues it).
pub(crate) async fn insert_analysis(
    conn: &mut sqlx::PgConnection,
    run: Uuid,
    checkpoint: Uuid,
    epoch: u32,
    spec: &AnalysisSpec,
    max_attempts: u32,
    state: JobState,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO analyses (id, run_id, checkpoint_id, epoch, spec, status, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6 = 'queued' THEN NULL ELSE now() END)",
    )
    .bind(id)
    .bind(run)
    .bind(checkpoint)
    .bind(epoch as i32)
    .bind(Json(spec))
    .bind(state.as_str())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO jobs (id, kind, run_id, analysis_id, state, max_attempts)
         VALUES ($1, 'analyze', $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(run)
    .bind(id)
    .bind(state.as_str())
    .bind(max_attempts as i32)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}
