use crate::args::BenchCommand;
use analysis::bench::bench_analysis;
use anyhow::Result;
use resnet::candle_device;
use std::process::ExitCode;
use train::bench::bench_train;

pub fn run(cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Train {
            model,
            batch,
            steps,
            warmup,
            device,
            profile,
            json,
        } => {
            anyhow::ensure!(steps > 0, "--steps must be at least 1");
            anyhow::ensure!(batch > 0, "--batch must be at least 1");
            let spec = model.to_spec()?;
            let device = candle_device(device)?;
            let r = bench_train(&spec, batch, warmup, steps, profile, &device)?;
            if json {
                return super::print_json(&r).map(|()| ExitCode::SUCCESS);
            }
            let mut text = format!(
                "{} depth {} {} batch {} on {}: {:.1} ms/step (median of {}), {:.0} images/s",
                r.arch,
                r.depth,
                r.dtype,
                r.batch,
                r.device,
                r.ms_per_step,
                r.steps,
                r.images_per_second
            );
            for k in r.kernels.iter().flatten() {
                text += &format!(
                    "\n  {:<26} {:>8.1} ms/step {:>5.1}%  ({} calls)",
                    k.kernel,
                    k.ms,
                    100.0 * k.ms / r.ms_per_step.max(f64::MIN_POSITIVE),
                    k.calls
                );
            }
            super::print_text(&text)?;
        }
        BenchCommand::Analyze {
            model,
            examples,
            batch,
            repeats,
            device,
            json,
        } => {
            anyhow::ensure!(examples > 0, "--examples must be at least 1");
            anyhow::ensure!(batch > 0, "--batch must be at least 1");
            anyhow::ensure!(repeats > 0, "--repeats must be at least 1");
            let spec = model.to_spec()?;
            let device = candle_device(device)?;
            let r = bench_analysis(&spec, examples, batch, repeats, &device)?;
            if json {
                return super::print_json(&r).map(|()| ExitCode::SUCCESS);
            }
            super::print_text(&format!(
                "{} depth {} analysis (cosine, l2, drop) of {} examples in batches of {} on {}: \
                 {:.2} s (median of {}), {:.0} examples/s",
                r.arch,
                r.depth,
                r.examples,
                r.batch,
                r.device,
                r.seconds,
                r.repeats,
                r.examples_per_second
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
