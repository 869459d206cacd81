//! Every spec file under experiments/ parses and validates.

#[test]
fn every_experiment_spec_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = domain::RunSpec::from_toml(&text) {
                panic!("{}: {e}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no spec files in {}", dir.display());
}
