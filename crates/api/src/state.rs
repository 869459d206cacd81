//! What every handler shares.

use crate::config::Config;
use crate::telemetry::Telemetry;
use std::sync::Arc;
use store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub telemetry: Arc<Telemetry>,
}

impl AppState {
    pub fn new(store: Store, config: Config) -> Self {
        Self {
            store,
            config: Arc::new(config),
            telemetry: Arc::new(Telemetry::new()),
        }
    }
}
