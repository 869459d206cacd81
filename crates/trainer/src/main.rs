//! `stepwise-trainer`: configuration from the environment (see the README), then the claim
//! loop until SIGTERM.

use anyhow::{anyhow, Context};
use client::worker::{claim_loop, shutdown_flag, WorkerConfig};
use domain::service::JobKind;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = WorkerConfig::from_env().map_err(|e| anyhow!(e))?;
    let client = client::Client::new(&config.api_url, config.token.clone())?;
    let shutdown = shutdown_flag().context("installing signal handlers")?;
    // Fail at start, not at the first job, when the device is unusable.
    resnet::candle_device(config.device).context("STEPWISE_DEVICE")?;
    claim_loop(
        &config,
        &client,
        &[JobKind::Train],
        &shutdown,
        |claim, keeper| trainer::run_job(&config, &client, claim, keeper, &shutdown),
    );
    Ok(())
}
