//! The API's configuration, from the environment (documented in the README).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use store::LeaseConfig;

#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `STEPWISE_BIND` (default `127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// `STEPWISE_API_TOKEN`: bearer token of users. Without it the API is open and binds
    /// to loopback only.
    pub api_token: Option<String>,
    /// `STEPWISE_WORKER_TOKEN`: bearer token of the workers (same rule).
    pub worker_token: Option<String>,
    /// `STEPWISE_CHECKPOINT_DIR` (default `checkpoints`): the checkpoint store the workers
    /// write; the API verifies registered files, serves and deletes them.
    pub checkpoint_dir: PathBuf,
    /// `STEPWISE_DATA_DIR` (default `data`): datasets that submissions may name.
    pub data_dir: PathBuf,
    /// `STEPWISE_LEASE_TTL_SECS` (60), `STEPWISE_HEARTBEAT_SECS` (10),
    /// `STEPWISE_MAX_ATTEMPTS` (3).
    pub lease: LeaseConfig,
    /// `STEPWISE_REAPER_SECS` (5): how often expired leases and stranded jobs are looked for.
    pub reaper_interval: Duration,
    /// `STEPWISE_REQUEST_TIMEOUT_SECS` (30).
    pub request_timeout: Duration,
    /// `STEPWISE_UPLOAD_TIMEOUT_SECS` (600): `POST /v1/runs/import`, whose file may be large.
    pub upload_timeout: Duration,
    /// `STEPWISE_MAX_BODY_BYTES` (1 MiB): user request bodies; worker reports (analysis
    /// results) may be 64 times larger.
    pub max_body_bytes: usize,
    /// `STEPWISE_MAX_UPLOAD_BYTES` (1 GiB): weights uploaded with `POST /v1/runs/import`.
    pub max_upload_bytes: usize,
    /// `STEPWISE_SESSION_HOURS` (12): how long a dashboard login lasts.
    pub session_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ConfigError {
    name: &'static str,
    message: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The configuration from any variable lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let text = |name: &'static str| get(name).filter(|v| !v.trim().is_empty());
        fn parsed<T: std::str::FromStr>(
            name: &'static str,
            value: Option<String>,
            default: T,
        ) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            match value {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError {
                    name,
                    message: format!("{v:?}: {e}"),
                }),
            }
        }
        let seconds = |name: &'static str, default: f64| -> Result<Duration, ConfigError> {
            let s: f64 = parsed(name, text(name), default)?;
            if !(s.is_finite() && s > 0.0 && s < 1e7) {
                return Err(ConfigError {
                    name,
                    message: format!("{s} is not a positive number of seconds"),
                });
            }
            Ok(Duration::from_secs_f64(s))
        };
        let lease = LeaseConfig {
            ttl: seconds("STEPWISE_LEASE_TTL_SECS", 60.0)?,
            heartbeat: seconds("STEPWISE_HEARTBEAT_SECS", 10.0)?,
            max_attempts: parsed("STEPWISE_MAX_ATTEMPTS", text("STEPWISE_MAX_ATTEMPTS"), 3)?,
        };
        if lease.heartbeat >= lease.ttl {
            return Err(ConfigError {
                name: "STEPWISE_HEARTBEAT_SECS",
                message: "must be shorter than STEPWISE_LEASE_TTL_SECS".into(),
            });
        }
        if lease.max_attempts == 0 {
            return Err(ConfigError {
                name: "STEPWISE_MAX_ATTEMPTS",
                message: "must be at least 1".into(),
            });
        }
        let hours: f64 = parsed(
            "STEPWISE_SESSION_HOURS",
            text("STEPWISE_SESSION_HOURS"),
            12.0,
        )?;
        if !(hours.is_finite() && hours > 0.0 && hours <= 24.0 * 366.0) {
            return Err(ConfigError {
                name: "STEPWISE_SESSION_HOURS",
                message: format!("{hours} is not a number of hours between 0 and a year"),
            });
        }
        let session_ttl = Duration::from_secs_f64(hours * 3600.0);
        Ok(Self {
            database_url: text("DATABASE_URL").ok_or(ConfigError {
                name: "DATABASE_URL",
                message: "is not set (postgres://user:password@host/database)".into(),
            })?,
            bind: parsed(
                "STEPWISE_BIND",
                text("STEPWISE_BIND"),
                SocketAddr::from(([127, 0, 0, 1], 8080)),
            )?,
            api_token: text("STEPWISE_API_TOKEN"),
            worker_token: text("STEPWISE_WORKER_TOKEN"),
            checkpoint_dir: text("STEPWISE_CHECKPOINT_DIR")
                .map_or("checkpoints".into(), PathBuf::from),
            data_dir: text("STEPWISE_DATA_DIR").map_or("data".into(), PathBuf::from),
            lease,
            reaper_interval: seconds("STEPWISE_REAPER_SECS", 5.0)?,
            request_timeout: seconds("STEPWISE_REQUEST_TIMEOUT_SECS", 30.0)?,
            upload_timeout: seconds("STEPWISE_UPLOAD_TIMEOUT_SECS", 600.0)?,
            max_body_bytes: parsed(
                "STEPWISE_MAX_BODY_BYTES",
                text("STEPWISE_MAX_BODY_BYTES"),
                1 << 20,
            )?,
            max_upload_bytes: parsed(
                "STEPWISE_MAX_UPLOAD_BYTES",
                text("STEPWISE_MAX_UPLOAD_BYTES"),
                1 << 30,
            )?,
            session_ttl,
        })
    }

    /// The address to listen on: without both tokens, loopback only (same port).
    pub fn effective_bind(&self) -> SocketAddr {
        if self.is_open() && !self.bind.ip().is_loopback() {
            SocketAddr::from(([127, 0, 0, 1], self.bind.port()))
        } else {
            self.bind
        }
    }

    /// Whether some endpoints are served without a token.
    pub fn is_open(&self) -> bool {
        self.api_token.is_none() || self.worker_token.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_loopback_without_tokens() {
        let c = config(&[
            ("DATABASE_URL", "postgres://x"),
            ("STEPWISE_BIND", "0.0.0.0:9000"),
        ])
        .unwrap();
        assert_eq!(c.lease.ttl, Duration::from_secs(60));
        assert_eq!(c.effective_bind().to_string(), "127.0.0.1:9000");
        let c = config(&[
            ("DATABASE_URL", "postgres://x"),
            ("STEPWISE_BIND", "0.0.0.0:9000"),
            ("STEPWISE_API_TOKEN", "u"),
            ("STEPWISE_WORKER_TOKEN", "w"),
        ])
        .unwrap();
        assert_eq!(c.effective_bind().to_string(), "0.0.0.0:9000");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("DATABASE_URL", "x"), ("STEPWISE_LEASE_TTL_SECS", "-1")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("STEPWISE_LEASE_TTL_SECS"), "{err}");
        let err = config(&[]).unwrap_err().to_string();
        assert!(err.starts_with("DATABASE_URL"), "{err}");
        let err = config(&[
            ("DATABASE_URL", "x"),
            ("STEPWISE_LEASE_TTL_SECS", "5"),
            ("STEPWISE_HEARTBEAT_SECS", "5"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("shorter"), "{err}");
    }
}
