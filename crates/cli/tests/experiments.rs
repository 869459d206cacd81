//! Every spec file under experiments/ parses and validates: files in experiments/ itself
//! are run specs (`stepwise train --spec`), files in its subfolders experiment specs
//! (`stepwise run`).

use std::path::{Path, PathBuf};

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_spec_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let runs = toml_files(&root);
    for path in &runs {
        let text = std::fs::read_to_string(path).unwrap();
        if let Err(e) = domain::RunSpec::from_toml(&text) {
            panic!("{}: {e}", path.display());
        }
    }
    let mut experiments = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for path in toml_files(&dir) {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = domain::ExperimentSpec::from_toml(&text) {
                panic!("{}: {e}", path.display());
            }
            experiments += 1;
        }
    }
    assert!(
        !runs.is_empty() && experiments > 0,
        "no spec files in {}",
        root.display()
    );
}
