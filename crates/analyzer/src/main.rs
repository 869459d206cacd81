//! `stepwise-analyzer`: configuration from the environment (see the README), then the
//! claim loop until SIGTERM.

use domain::service::JobKind;

#[global_allocator]
static GLOBAL: resnet::allocator::MiMalloc = resnet::allocator::MiMalloc;

fn main() -> anyhow::Result<()> {
    resnet::allocator::keep_freed_memory();
    client::worker::run(
        JobKind::Analyze,
        |config| {
            resnet::memory::prepare_worker(config.device, config.gpu_memory, config.cpu_memory)
        },
        analyzer::run_job,
    )
    .map_err(anyhow::Error::msg)
}
