//! Dashboard sessions: the API hashes the cookie's secret, the store keeps only the hash,
//! the session's CSRF token and its expiry.

use crate::{Result, Store};
use std::time::Duration;

impl Store {
    /// Stores a new session and drops expired ones.
    pub async fn create_session(
        &self,
        secret_sha256: &[u8],
        csrf: &str,
        ttl: Duration,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at < now()")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (secret_sha256, csrf, expires_at)
             VALUES ($1, $2, now() + $3 * interval '1 second')",
        )
        .bind(secret_sha256)
        .bind(csrf)
        .bind(ttl.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The CSRF token of an unexpired session, if there is one with this secret.
    pub async fn session_csrf(&self, secret_sha256: &[u8]) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT csrf FROM sessions WHERE secret_sha256 = $1 AND expires_at > now()",
        )
        .bind(secret_sha256)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn delete_session(&self, secret_sha256: &[u8]) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE secret_sha256 = $1")
            .bind(secret_sha256)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
