//! Reading CIFAR binary datasets, and the errors for missing, truncated and malformed files.

use cifar::binary::write_cifar10;
use cifar::{DataError, Dataset, Images, IMAGE_BYTES};
use domain::LabelKind;
use std::fs;
use std::path::Path;

fn images(n: usize, classes: u32, salt: u8) -> Images {
    let mut out = Images::default();
    for i in 0..n {
        let pixel = (i as u8).wrapping_mul(31).wrapping_add(salt);
        out.push(&vec![pixel; IMAGE_BYTES], i as u32 % classes);
    }
    out
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class{i}")).collect()
}

fn write10(dir: &Path) {
    write_cifar10(dir, &images(23, 10, 0), &images(7, 10, 1), &names(10)).unwrap();
}

/// CIFAR-100's layout: coarse byte, fine byte, pixels.
fn write100(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let record = |fine: u8| {
        let mut r = vec![fine / 5, fine];
        r.extend(vec![fine; IMAGE_BYTES]);
        r
    };
    let train: Vec<u8> = (0..100u8).flat_map(record).collect();
    let test: Vec<u8> = (0..10u8).map(|i| i * 10).flat_map(record).collect();
    fs::write(dir.join("train.bin"), train).unwrap();
    fs::write(dir.join("test.bin"), test).unwrap();
    fs::write(dir.join("fine_label_names.txt"), names(100).join("\n")).unwrap();
    fs::write(dir.join("coarse_label_names.txt"), names(20).join("\n")).unwrap();
}

#[test]
fn reads_the_cifar10_layout_directly_or_in_its_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("cifar-10-batches-bin");
    write10(&folder);
    for dir in [tmp.path(), folder.as_path()] {
        let ds = Dataset::open(dir, LabelKind::Fine).unwrap();
        assert_eq!(ds.identity.name, "cifar10");
        assert_eq!(
            (ds.identity.train_examples, ds.identity.test_examples),
            (23, 7)
        );
        assert_eq!(ds.identity.classes, 10);
        assert_eq!(ds.train.labels[..3], [0, 1, 2]);
        assert_eq!(ds.train.image(1)[0], 31);
        assert_eq!(ds.class_names[9], "class9");
    }
    let err = Dataset::open(tmp.path(), LabelKind::Coarse).unwrap_err();
    assert!(
        err.to_string()
            .contains("coarse labels exist only in CIFAR-100"),
        "{err}"
    );
}

#[test]
fn reads_cifar100_fine_by_default_and_coarse_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("cifar-100-binary");
    write100(&folder);
    let fine = Dataset::open(tmp.path(), LabelKind::Fine).unwrap();
    assert_eq!(fine.identity.name, "cifar100");
    assert_eq!(fine.identity.classes, 100);
    assert_eq!(fine.train.labels[57], 57);
    let coarse = Dataset::open(tmp.path(), LabelKind::Coarse).unwrap();
    assert_eq!(coarse.identity.classes, 20);
    assert_eq!(coarse.train.labels[57], 11);
    assert_eq!(coarse.test.labels[3], 6);
    assert_eq!(fine.train.pixels, coarse.train.pixels);
}

#[test]
fn the_fingerprint_follows_the_content() {
    let tmp = tempfile::tempdir().unwrap();
    write10(&tmp.path().join("a"));
    write10(&tmp.path().join("b"));
    let a = Dataset::open(&tmp.path().join("a"), LabelKind::Fine)
        .unwrap()
        .identity;
    let b = Dataset::open(&tmp.path().join("b"), LabelKind::Fine)
        .unwrap()
        .identity;
    assert_eq!(a.fingerprint, b.fingerprint);
    let path = tmp.path().join("b/data_batch_3.bin");
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 1;
    fs::write(&path, bytes).unwrap();
    let changed = Dataset::open(&tmp.path().join("b"), LabelKind::Fine)
        .unwrap()
        .identity;
    assert_ne!(a.fingerprint, changed.fingerprint);
}

#[test]
fn a_missing_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    write10(tmp.path());
    fs::remove_file(tmp.path().join("data_batch_4.bin")).unwrap();
    let err = Dataset::open(tmp.path(), LabelKind::Fine).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }));
    assert!(err.to_string().contains("data_batch_4.bin"), "{err}");
    fs::remove_file(tmp.path().join("batches.meta.txt")).unwrap();
    let err = Dataset::open(tmp.path(), LabelKind::Fine).unwrap_err();
    assert!(err.to_string().contains("batches.meta.txt"), "{err}");
}

#[test]
fn a_truncated_file_names_the_byte_offset() {
    let tmp = tempfile::tempdir().unwrap();
    write10(tmp.path());
    let path = tmp.path().join("test_batch.bin");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let err = Dataset::open(tmp.path(), LabelKind::Fine).unwrap_err();
    let record = 3073;
    match &err {
        DataError::Truncated {
            path: p, offset, ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(*offset, 6 * record);
        }
        other => panic!("expected truncation, got {other}"),
    }
    assert!(
        err.to_string()
            .contains("test_batch.bin: truncated at byte offset 18438"),
        "{err}"
    );
}

#[test]
fn a_label_out_of_range_names_the_byte_offset() {
    let tmp = tempfile::tempdir().unwrap();
    write10(tmp.path());
    let path = tmp.path().join("data_batch_2.bin");
    let mut bytes = fs::read(&path).unwrap();
    bytes[2 * 3073] = 42;
    fs::write(&path, bytes).unwrap();
    let err = Dataset::open(tmp.path(), LabelKind::Fine).unwrap_err();
    assert!(
        err.to_string()
            .contains("data_batch_2.bin: byte offset 6146: label 42 is out of range"),
        "{err}"
    );
}

#[test]
fn a_directory_without_a_dataset_says_what_it_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Dataset::open(tmp.path(), LabelKind::Fine).unwrap_err();
    assert!(matches!(err, DataError::NotADataset { .. }), "{err}");
    let err = Dataset::open(&tmp.path().join("nope"), LabelKind::Fine).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err}");
}

#[test]
fn names_resolve_under_the_data_directory_and_shapes10_is_generated_once() {
    let tmp = tempfile::tempdir().unwrap();
    let err = cifar::locate("cifar10", tmp.path()).unwrap_err();
    assert!(
        err.to_string().contains("stepwise data fetch cifar10"),
        "{err}"
    );
    let err = cifar::locate("mine", tmp.path()).unwrap_err();
    assert!(err.to_string().contains("stepwise data import"), "{err}");
    write10(&tmp.path().join("mine"));
    assert_eq!(
        cifar::locate("mine", tmp.path()).unwrap(),
        tmp.path().join("mine")
    );
    let explicit = tmp.path().join("mine");
    assert_eq!(
        cifar::locate(explicit.to_str().unwrap(), Path::new("/nonexistent")).unwrap(),
        explicit
    );
}

#[test]
fn a_run_s_data_is_found_by_its_identity_under_another_directory_name() {
    let tmp = tempfile::tempdir().unwrap();
    let synth = |dir: &str, seed: u64| {
        let config = cifar::synth::SynthConfig {
            train: 20,
            test: 10,
            seed,
        };
        cifar::synth::generate(&tmp.path().join(dir), &config).unwrap();
        Dataset::open(&tmp.path().join(dir), LabelKind::Fine).unwrap()
    };
    // Two shapes10 of different content; a model trained on the second records the name
    // `shapes10` and the second's fingerprint.
    synth("a-other", 1);
    let trained_on = synth("tiny10", 2).identity;
    assert_eq!(trained_on.name, "shapes10");
    let found =
        cifar::open_trained_on("shapes10", Some(&trained_on), tmp.path(), LabelKind::Fine).unwrap();
    assert_eq!(found.dir, tmp.path().join("tiny10"));
    assert!(
        !tmp.path().join("shapes10").exists(),
        "no default shapes10 generated"
    );
    // Under the name it was submitted with, directly.
    let found =
        cifar::open_trained_on("tiny10", Some(&trained_on), tmp.path(), LabelKind::Fine).unwrap();
    assert_eq!(found.identity, trained_on);
    // Data nobody has: the error names what the name resolved to.
    let mut lost = trained_on.clone();
    lost.fingerprint = "sha256:0".into();
    let err =
        cifar::open_trained_on("tiny10", Some(&lost), tmp.path(), LabelKind::Fine).unwrap_err();
    assert!(matches!(err, DataError::NotTrainedOn { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("sha256:0") && text.contains("tiny10 holds"),
        "{text}"
    );
    // An official release has no manifest: it is named by its layout.
    write10(&tmp.path().join("cifar-10"));
    let cifar = Dataset::open(&tmp.path().join("cifar-10"), LabelKind::Fine).unwrap();
    assert_eq!(cifar.identity.name, "cifar10");
    let found = cifar::open_trained_on(
        "cifar10",
        Some(&cifar.identity),
        tmp.path(),
        LabelKind::Fine,
    )
    .unwrap();
    assert_eq!(found.dir, tmp.path().join("cifar-10"));
    // Without an identity (a spec never trained), the name alone decides.
    let found = cifar::open_trained_on("a-other", None, tmp.path(), LabelKind::Fine).unwrap();
    assert_eq!(found.dir, tmp.path().join("a-other"));
}

#[test]
fn synthetic_data_is_deterministic_and_balanced() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = cifar::synth::SynthConfig {
        train: 40,
        test: 20,
        seed: 3,
    };
    cifar::synth::generate(&tmp.path().join("a"), &cfg).unwrap();
    cifar::synth::generate(&tmp.path().join("b"), &cfg).unwrap();
    let a = Dataset::open(&tmp.path().join("a"), LabelKind::Fine).unwrap();
    let b = Dataset::open(&tmp.path().join("b"), LabelKind::Fine).unwrap();
    assert_eq!(a.identity.fingerprint, b.identity.fingerprint);
    assert_eq!(a.identity.name, "shapes10");
    assert_eq!(a.class_names[0], "circle");
    for class in 0..10 {
        assert_eq!(a.train.labels.iter().filter(|&&l| l == class).count(), 4);
    }
    let err = cifar::synth::generate(&tmp.path().join("a"), &cfg).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let other = cifar::synth::SynthConfig { seed: 4, ..cfg };
    cifar::synth::generate(&tmp.path().join("c"), &other).unwrap();
    let c = Dataset::open(&tmp.path().join("c"), LabelKind::Fine).unwrap();
    assert_ne!(a.identity.fingerprint, c.identity.fingerprint);
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
