//! The `stepwise` command line: local training, evaluation, benchmarks, datasets and model
//! summaries, and the client commands of the API. Each sub-command lives in `cmd`; this file only parses and dispatches.

mod args;
mod cmd;
mod lock;
mod progress;

use args::{AnalysisCommand, CheckpointCommand, Cli, Command, ExperimentCommand};
use clap::Parser;
use std::process::ExitCode;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    use resnet::memory::{set_budget, Memory};
    set_budget(Memory::Gpu, cli.gpu_memory.map(|b| b.as_u64()));
    set_budget(Memory::Host, cli.cpu_memory.map(|b| b.as_u64()));
    let api = cmd::remote::Api {
        url: cli.api_url.clone(),
        token: cli.token.clone(),
    };
    let result = match cli.command {
        Command::Model(cmd) => cmd::model::run(cmd, &cli.data_dir),
        Command::Data(cmd) => cmd::data::run(cmd, &cli.data_dir),
        Command::Train(cmd) => cmd::train::run(*cmd, &cli.data_dir),
        Command::Eval(cmd) => cmd::eval::run(cmd, &cli.data_dir),
        Command::Analyze(cmd) => cmd::analyze::run(*cmd, &cli.data_dir),
        Command::Bench(cmd) => cmd::bench::run(cmd),
        Command::Selftest { device, json } => cmd::selftest::run(device, json),
        Command::Figures { targets, out, .. } if !targets.is_empty() => {
            cmd::remote::figures(&api, &targets, &out)
        }
        Command::Figures { run, out, .. } => cmd::figures::run(&run, &out),
        Command::Submit(args) => cmd::remote::submit(&api, args),
        Command::List(args) => cmd::remote::list(&api, args),
        Command::Status { run, json } => cmd::remote::status(&api, &run, json),
        Command::Watch { run, every } => cmd::remote::watch(&api, &run, every),
        Command::Metrics {
            run,
            name,
            split,
            csv,
        } => cmd::remote::metrics(&api, &run, name.as_deref(), split.as_deref(), csv),
        Command::Cancel { run } => cmd::remote::cancel(&api, &run),
        Command::Retry { run } => cmd::remote::retry(&api, &run),
        Command::Delete { run } => cmd::remote::delete(&api, &run),
        Command::Logs { run, limit } => cmd::remote::logs(&api, &run, limit),
        Command::Workers { json } => cmd::remote::workers(&api, json),
        Command::Experiment(ExperimentCommand::List { limit, json }) => {
            cmd::remote::experiment::list(&api, limit, json)
        }
        Command::Experiment(ExperimentCommand::Show {
            experiment,
            blocks,
            json,
        }) => cmd::remote::experiment::show(&api, &experiment, blocks, json),
        Command::Analysis(AnalysisCommand::List { run, json }) => {
            cmd::remote::analysis::list(&api, &run, json)
        }
        Command::Analysis(AnalysisCommand::Show {
            analysis,
            csv,
            json,
            filter,
        }) => cmd::remote::analysis::show(&api, &analysis, csv, json, &filter.filter()),
        Command::Analysis(AnalysisCommand::Request(args)) => {
            cmd::remote::analysis::request(&api, *args)
        }
        Command::Checkpoint(CheckpointCommand::List { run, json }) => {
            cmd::remote::checkpoint::list(&api, &run, json)
        }
        Command::Checkpoint(CheckpointCommand::Download { run, epoch, out }) => {
            cmd::remote::checkpoint::download(&api, &run, epoch, out)
        }
        Command::Run(cmd) => cmd::run::run(cmd, &cli.data_dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", causes(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, joined by ": ". A cause whose text the message before it
/// already quotes is left out: the libraries' I/O and HTTP errors name their source in
/// their own message, and anyhow's `{:#}` would print it twice.
fn causes(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::causes;

    #[test]
    fn a_cause_already_quoted_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let quoting = anyhow::Error::new(io).context("x.safetensors: no such file");
        let wrapped = quoting.context("downloading");
        assert_eq!(causes(&wrapped), "downloading: x.safetensors: no such file");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(causes(&plain), "outer: inner");
    }
}
