//! The only crate with SQL. [`Store`] wraps a Postgres pool: the schema (`migrations/`,
//! embedded and applied by [`Store::migrate`]), runs and experiments (`runs`), the job
//! queue with leases (`queue`), the results workers report (`results`) and dashboard
//! sessions (`sessions`). Every method returns the API's views (`domain::service`), so
//! the server only routes.
//!
//! Queries are checked at run time (`sqlx::query_as`), not by the macros, so the crate
//! builds without a database and without prepared query data.

mod queue;
mod results;
mod rows;
mod runs;
mod sessions;

pub use queue::{LeaseConfig, LeasedJob};
pub use runs::{run_directory, weights_path, Idempotency, ImportedRun, RunFilter, Submitted};

use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The request conflicts with the resource's state (cancel a finished run, …).
    #[error("{0}")]
    Conflict(String),
    /// The worker's lease is no longer valid: expired, taken over, or the job ended.
    #[error("the lease of job {0} is not held by this token (expired, reassigned or ended)")]
    LeaseLost(uuid::Uuid),
    /// The same Idempotency-Key was used with a different request body.
    #[error("Idempotency-Key {0:?} was used with a different request")]
    IdempotencyMismatch(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The database of one stepwise deployment.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects with a bounded pool; the first connection is made lazily.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(url)?;
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded migrations (idempotent; concurrent starts are serialised by
    /// sqlx's advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// This database's own id, random and fixed when its schema was made: tells the files
    /// an API writes for it apart from those written for another.
    pub async fn identity(&self) -> Result<Uuid> {
        Ok(sqlx::query_scalar("SELECT id FROM store_identity")
            .fetch_one(&self.pool)
            .await?)
    }
}

/// The schema, embedded at compile time from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");
