use crate::args::{BenchCommand, PassBenchArgs};
use analysis::bench::{bench_analysis, bench_eval, PassBench, PassSettings};
use anyhow::Result;
use resnet::candle_device;
use resnet::ops::profile::KernelTime;
use std::process::ExitCode;
use train::bench::{bench_train, StepMode};

pub fn run(cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Train {
            model,
            batch,
            steps,
            warmup,
            device,
            profile,
            cuda_graph,
            memory_format,
            json,
        } => {
            anyhow::ensure!(steps > 0, "--steps must be at least 1");
            anyhow::ensure!(batch > 0, "--batch must be at least 1");
            let spec = model.to_spec()?;
            let device = candle_device(device)?;
            anyhow::ensure!(
                !(profile && cuda_graph),
                "--profile times each kernel call, which a CUDA graph's replays do not make; \
                 it does not combine with --cuda-graph"
            );
            let mode = match (profile, cuda_graph) {
                (true, _) => StepMode::Profiled,
                (_, true) => StepMode::CudaGraph,
                _ => StepMode::Loop,
            };
            let format = memory_format.map(Into::into);
            let r = bench_train(&spec, (batch, warmup, steps), mode, format, &device)?;
            if json {
                return super::print_json(&r).map(|()| ExitCode::SUCCESS);
            }
            let text = format!(
                "{} depth {} {} ({}) batch {} on {}: {:.1} ms/step (median of {}), {:.0} images/s{}",
                r.arch,
                r.depth,
                r.dtype,
                r.memory_format,
                r.batch,
                r.device,
                r.ms_per_step,
                r.steps,
                r.images_per_second,
                kernel_lines(r.kernels.as_deref(), r.ms_per_step, "step"),
            );
            super::print_text(&text)?;
        }
        BenchCommand::Analyze { pass, metrics } => {
            let names: Vec<&str> = metrics.iter().map(|m| m.as_str()).collect();
            let what = format!("analysis ({})", names.join(", "));
            bench_pass(pass, &what, |model, settings, device| {
                bench_analysis(model, &metrics, settings, device)
            })?
        }
        BenchCommand::Eval(args) => bench_pass(args, "evaluation", bench_eval)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_pass(
    args: PassBenchArgs,
    what: &str,
    pass: impl FnOnce(
        &domain::ModelSpec,
        PassSettings,
        &candle_core::Device,
    ) -> analysis::Result<PassBench>,
) -> Result<()> {
    let PassBenchArgs {
        model,
        examples,
        batch,
        repeats,
        device,
        profile,
        json,
    } = args;
    anyhow::ensure!(examples > 0, "--examples must be at least 1");
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    anyhow::ensure!(repeats > 0, "--repeats must be at least 1");
    let spec = model.to_spec()?;
    let device = candle_device(device)?;
    let settings = PassSettings {
        examples,
        batch,
        repeats,
        profile,
    };
    let r = pass(&spec, settings, &device)?;
    if json {
        return super::print_json(&r);
    }
    super::print_text(&format!(
        "{} depth {} {} {what} of {} examples in batches of {} on {}: \
         {:.2} s (median of {}), {:.0} examples/s{}",
        r.arch,
        r.depth,
        r.dtype,
        r.examples,
        r.batch,
        r.device,
        r.seconds,
        r.repeats,
        r.examples_per_second,
        kernel_lines(r.kernels.as_deref(), r.seconds * 1e3, "pass"),
    ))
}

/// One line per profiled kernel: its milliseconds per `unit` (a step or a pass), its share
/// of `unit_ms`, its calls. Left out: kernels that never ran, such as the BatchNorm
/// statistics on the CPU (part of its forward kernel there).
fn kernel_lines(kernels: Option<&[KernelTime]>, unit_ms: f64, unit: &str) -> String {
    let ran = kernels.into_iter().flatten();
    ran.filter(|k| k.calls > 0 || k.kernel == "other")
        .map(|k| {
            format!(
                "\n  {:<26} {:>8.1} ms/{unit} {:>5.1}%  ({} calls)",
                k.kernel,
                k.ms,
                100.0 * k.ms / unit_ms.max(f64::MIN_POSITIVE),
                k.calls
            )
        })
        .collect()
}
