//! What users read of a run: metric series, logs, checkpoints, analyses; and the workers.

use crate::rows::{
    AnalysisRow, AttemptRow, CheckpointRow, LogRow, WorkerRow, ANALYSIS_VIEW, CHECKPOINT_COLUMNS,
};
use crate::runs::{insert_analysis, not_found};
use crate::{Result, Store, StoreError};
use domain::service::{AnalysisView, AttemptView, CheckpointView, JobState, LogLine, WorkerView};
use domain::{AnalysisRecord, AnalysisSpec, BlockId, MetricName, MetricRecord, Split};
use sqlx::types::Json;
use sqlx::QueryBuilder;
use uuid::Uuid;

impl Store {
    /// A run's training metrics, by epoch; optionally one name and one split.
    pub async fn metrics(
        &self,
        run: Uuid,
        name: Option<MetricName>,
        split: Option<Split>,
    ) -> Result<Vec<MetricRecord>> {
        self.run_exists(run).await?;
        // Only the filters given are in the statement: one that reads `$2 IS NULL OR name =
        // $2` gets a generic plan after a few calls that reads the run's whole history and
        // filters it, where `name = $2` reads one series off the index.
        let mut query = QueryBuilder::new(
            "SELECT name, split, epoch, block, block_index, value FROM metrics WHERE run_id = ",
        );
        query.push_bind(run);
        if let Some(name) = name {
            query.push(" AND name = ").push_bind(name.as_str());
        }
        if let Some(split) = split {
            query.push(" AND split = ").push_bind(split.as_str());
        }
        let mut rows: Vec<(String, String, i32, String, Option<i32>, f64)> =
            query.build_query_as().fetch_all(&self.pool).await?;
        // By name, split, block (whole-network first) and epoch, sorted here: Postgres' sort
        // of a 300-epoch history (12,000 rows) took 17-28 ms of a 35 ms request, and the
        // planner prefers it to reading an index in that order.
        rows.sort_unstable_by(|a, b| (&a.0, &a.1, a.4, a.2).cmp(&(&b.0, &b.1, b.4, b.2)));
        rows.into_iter()
            .map(|(name, split, epoch, block, block_index, value)| {
                let parse = |what: &str, v: &str| {
                    StoreError::Invalid(format!("stored {what} {v:?} is not known"))
                };
                Ok(MetricRecord {
                    name: serde_json::from_value(serde_json::Value::String(name.clone()))
                        .map_err(|_| parse("metric", &name))?,
                    split: match split.as_str() {
                        "" => None,
                        s => Some(
                            serde_json::from_value(serde_json::Value::String(s.into()))
                                .map_err(|_| parse("split", s))?,
                        ),
                    },
                    epoch: epoch as u32,
                    block: match block.as_str() {
                        "" => None,
                        b => Some(b.parse::<BlockId>().map_err(|_| parse("block", b))?),
                    },
                    block_index: block_index.map(|i| i as u32),
                    value,
                })
            })
            .collect()
    }

    /// Log lines of a run, oldest first, after line `after` (an id from an earlier page).
    pub async fn logs(&self, run: Uuid, limit: u32) -> Result<Vec<LogLine>> {
        self.run_exists(run).await?;
        let rows: Vec<LogRow> = sqlx::query_as(
            "SELECT at, attempt, level, message FROM
               (SELECT id, at, attempt, level, message FROM logs WHERE run_id = $1
                 ORDER BY id DESC LIMIT $2) newest
              ORDER BY id",
        )
        .bind(run)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Every claim of the run's jobs (training and analyses), oldest first.
    pub async fn attempts(&self, run: Uuid) -> Result<Vec<AttemptView>> {
        self.run_exists(run).await?;
        let rows: Vec<AttemptRow> = sqlx::query_as(
            "SELECT a.job_id, j.kind, an.epoch, a.attempt, a.worker, a.started_at, a.ended_at,
                    a.outcome, a.failure_kind, a.error
               FROM attempts a JOIN jobs j ON j.id = a.job_id
               LEFT JOIN analyses an ON an.id = j.analysis_id
              WHERE j.run_id = $1
              ORDER BY a.started_at, a.attempt",
        )
        .bind(run)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(AttemptRow::view).collect()
    }

    /// The workers seen in the last week, the most recently seen first, with the job each
    /// holds a lease on and how far it is.
    pub async fn workers(&self) -> Result<Vec<WorkerView>> {
        let rows: Vec<WorkerRow> = sqlx::query_as(
            "SELECT DISTINCT ON (w.seen_at, w.name) w.name, w.kinds, w.memory, w.budget_mib,
                    w.seen_at, w.seen_at > now() - $1 * interval '1 second' AS live,
                    j.id AS job_id, j.kind AS job_kind, j.run_id, r.name AS run_name,
                    r.label AS run_label, r.epochs_done, r.epochs,
                    a.id AS analysis_id, a.epoch AS analysis_epoch, a.progress
               FROM workers w
               LEFT JOIN jobs j ON j.worker = w.name AND j.state IN ('running', 'cancelling')
                               AND j.lease_expires_at > now()
               LEFT JOIN runs r ON r.id = j.run_id
               LEFT JOIN analyses a ON a.id = j.analysis_id
              ORDER BY w.seen_at DESC, w.name, j.updated_at DESC",
        )
        .bind(domain::service::WORKER_SEEN_WITHIN.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(WorkerRow::view).collect()
    }

    pub async fn checkpoints(&self, run: Uuid) -> Result<Vec<CheckpointView>> {
        self.run_exists(run).await?;
        let rows: Vec<CheckpointRow> = sqlx::query_as(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE run_id = $1 ORDER BY step, created_at"
        ))
        .bind(run)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(CheckpointRow::view).collect())
    }

    /// A checkpoint and its path relative to the checkpoint store.
    pub async fn checkpoint_file(&self, id: Uuid) -> Result<(CheckpointView, String)> {
        let row: Option<CheckpointRow> = sqlx::query_as(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or_else(|| not_found("checkpoint", id))?;
        Ok((row.view(), row.reference().path()))
    }

    /// Queues an analysis of the run's checkpoint after `epoch` (default: the latest
    /// epoch checkpoint).
    pub async fn request_analysis(
        &self,
        run: Uuid,
        epoch: Option<u32>,
        spec: &AnalysisSpec,
        max_attempts: u32,
    ) -> Result<AnalysisView> {
        self.run_exists(run).await?;
        let mut tx = self.pool.begin().await?;
        let checkpoint: Option<(Uuid, i32)> = sqlx::query_as(
            "SELECT id, epoch FROM checkpoints
              WHERE run_id = $1 AND batch = 0 AND NOT removed AND ($2::int IS NULL OR epoch = $2)
              ORDER BY epoch DESC, created_at DESC LIMIT 1",
        )
        .bind(run)
        .bind(epoch.map(|e| e as i32))
        .fetch_optional(&mut *tx)
        .await?;
        let (checkpoint, epoch) = checkpoint.ok_or_else(|| {
            StoreError::Conflict(match epoch {
                Some(e) => format!("run {run} has no checkpoint after epoch {e} on disk"),
                None => format!("run {run} has no epoch checkpoint yet"),
            })
        })?;
        let id = insert_analysis(
            &mut tx,
            run,
            checkpoint,
            epoch as u32,
            spec,
            max_attempts,
            JobState::Queued,
        )
        .await?;
        tx.commit().await?;
        self.analysis(id).await
    }

    pub async fn analysis(&self, id: Uuid) -> Result<AnalysisView> {
        let row: Option<AnalysisRow> = sqlx::query_as(&format!("{ANALYSIS_VIEW} WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let row = row.ok_or_else(|| not_found("analysis", id))?;
        let records = self.analysis_records(id).await?;
        row.view(records)
    }

    /// A run's analyses, oldest epoch first, without their records.
    pub async fn analyses_of_run(&self, run: Uuid) -> Result<Vec<AnalysisView>> {
        self.run_exists(run).await?;
        let rows: Vec<AnalysisRow> = sqlx::query_as(&format!(
            "{ANALYSIS_VIEW} WHERE a.run_id = $1 ORDER BY a.epoch, a.id"
        ))
        .bind(run)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| r.view(vec![])).collect()
    }

    /// The succeeded analysis of the highest epoch of a run, with its records.
    pub async fn latest_analysis(&self, run: Uuid) -> Result<Option<AnalysisView>> {
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM analyses WHERE run_id = $1 AND status = 'succeeded'
              ORDER BY epoch DESC, finished_at DESC LIMIT 1",
        )
        .bind(run)
        .fetch_optional(&self.pool)
        .await?;
        match id {
            Some(id) => Ok(Some(self.analysis(id).await?)),
            None => Ok(None),
        }
    }

    /// Block means on the test split of the metrics `names`, from the run's latest succeeded
    /// analysis at each analysed epoch, by epoch: its blocks over training. Only analyses
    /// whose gradient is that of [`Self::latest_analysis`] count (a `skip` cosine is
    /// another quantity).
    pub async fn analysis_history(
        &self,
        run: Uuid,
        names: &[MetricName],
    ) -> Result<Vec<AnalysisRecord>> {
        let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        let rows: Vec<Json<AnalysisRecord>> = sqlx::query_scalar(
            "WITH latest AS (
                 SELECT spec ->> 'gradient' AS gradient FROM analyses
                  WHERE run_id = $1 AND status = 'succeeded'
                  ORDER BY epoch DESC, finished_at DESC LIMIT 1),
             chosen AS (
                 SELECT DISTINCT ON (a.epoch) a.id, a.epoch FROM analyses a, latest
                  WHERE a.run_id = $1 AND a.status = 'succeeded'
                    AND a.spec ->> 'gradient' = latest.gradient
                  ORDER BY a.epoch, a.finished_at DESC)
             SELECT r.record FROM analysis_records r JOIN chosen c ON c.id = r.analysis_id
              WHERE r.record ->> 'name' = ANY ($2) AND r.record ->> 'split' = 'test'
                AND r.record ->> 'stat' = 'mean'
              ORDER BY c.epoch, r.seq",
        )
        .bind(run)
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|j| j.0).collect())
    }

    async fn analysis_records(&self, id: Uuid) -> Result<Vec<AnalysisRecord>> {
        let rows: Vec<Json<AnalysisRecord>> = sqlx::query_scalar(
            "SELECT record FROM analysis_records WHERE analysis_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|j| j.0).collect())
    }

    async fn run_exists(&self, run: Uuid) -> Result<()> {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM runs WHERE id = $1)")
            .bind(run)
            .fetch_one(&self.pool)
            .await?;
        if exists {
            Ok(())
        } else {
            Err(not_found("run", run))
        }
    }
}
