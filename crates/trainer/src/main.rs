//! `stepwise-trainer`: configuration from the environment (see the README), then the
//! claim loop until SIGTERM.

use domain::service::JobKind;

#[global_allocator]
static GLOBAL: resnet::allocator::MiMalloc = resnet::allocator::MiMalloc;

fn main() -> anyhow::Result<()> {
    resnet::allocator::keep_freed_memory();
    client::worker::run(
        JobKind::Train,
        |config| {
            use resnet::memory::{set_budget, Memory};
            set_budget(Memory::Gpu, config.gpu_memory);
            set_budget(Memory::Host, config.cpu_memory);
            resnet::candle_device(config.device)
                .map(drop)
                .map_err(|e| format!("STEPWISE_DEVICE: {e}"))
        },
        trainer::run_job,
    )
    .map_err(anyhow::Error::msg)
}
