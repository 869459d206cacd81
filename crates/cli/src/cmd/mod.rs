pub mod bench;
pub mod data;
pub mod eval;
pub mod model;
pub mod train;

/// Pretty JSON on stdout, for `--json`. A closed pipe (`| head`) is not an error.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value)?;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
