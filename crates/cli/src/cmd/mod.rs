pub mod bench;
pub mod data;
pub mod eval;
pub mod model;
pub mod train;

/// Pretty JSON on stdout, for `--json`.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
