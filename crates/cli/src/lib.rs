//! The `stepwise` command line: local training, evaluation, benchmarks, datasets and model
//! summaries. Each sub-command lives in [`cmd`]; this file only parses and dispatches.

mod args;
mod cmd;
mod progress;

use args::{Cli, Command};
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
    let result = match cli.command {
        Command::Model(cmd) => cmd::model::run(cmd),
        Command::Data(cmd) => cmd::data::run(cmd, &cli.data_dir),
        Command::Train(cmd) => cmd::train::run(*cmd, &cli.data_dir),
        Command::Eval(cmd) => cmd::eval::run(cmd, &cli.data_dir),
        Command::Analyze(cmd) => cmd::analyze::run(*cmd, &cli.data_dir),
        Command::Bench(cmd) => cmd::bench::run(cmd),
        Command::Selftest { device, json } => cmd::selftest::run(device, json),
        Command::Figures { run, out } => cmd::figures::run(&run, &out),
        Command::Run(cmd) => cmd::run::run(cmd, &cli.data_dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
