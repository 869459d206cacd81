//! Weights written by PyTorch (`fixtures/make.py`): `torch.save` files and safetensors read
//! as PyTorch wrote them, and loaded into the model their names describe.

use candle_core::{DType, Device, Tensor};
use domain::{Arch, ModelSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use resnet::checkpoint::read_weights;
use resnet::{Dtypes, Error, ResNet};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The model of the fixtures: ResNet-8 of width 2.
fn resnet8_w2() -> ResNet {
    let spec = ModelSpec {
        depth: Some(8),
        width: Some(2),
        ..ModelSpec::new(Arch::Resnet)
    };
    ResNet::new(
        &spec.layout().unwrap(),
        &mut ChaCha8Rng::seed_from_u64(1),
        &Device::Cpu,
        Dtypes::uniform(DType::F32),
    )
    .unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn same_tensors(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    let mut names: Vec<_> = a.keys().collect();
    names.sort();
    let mut other: Vec<_> = b.keys().collect();
    other.sort();
    assert_eq!(names, other);
    for name in names {
        let (x, y) = (&a[name], &b[name]);
        assert_eq!(x.dims(), y.dims(), "{name}");
        assert_eq!(x.dtype(), y.dtype(), "{name}");
        assert_eq!(values(x), values(y), "{name}");
    }
}

fn refusal(result: resnet::Result<HashMap<String, Tensor>>) -> String {
    match result {
        Err(e @ Error::BadWeights { .. }) => e.to_string(),
        Err(e) => panic!("not a weights error: {e}"),
        Ok(_) => panic!("read"),
    }
}

#[test]
fn a_torch_save_file_reads_as_the_safetensors_pytorch_wrote_and_loads_into_the_model() {
    let saved = read_weights(&fixture("resnet8-w2.pt"), None, None).unwrap();
    let safetensors = read_weights(&fixture("resnet8-w2.safetensors"), None, None).unwrap();
    same_tensors(&saved, &safetensors);
    assert_eq!(
        saved["head.bn.num_batches_tracked"]
            .to_dtype(DType::I64)
            .unwrap()
            .to_vec0::<i64>()
            .unwrap(),
        7
    );

    let model = resnet8_w2();
    model.load_state_dict(&saved).unwrap();
    let loaded: HashMap<String, Tensor> = model.state_dict().unwrap().into_iter().collect();
    same_tensors(&loaded, &saved);
}

#[test]
fn a_state_dict_saved_inside_a_dict_is_read_under_its_key() {
    let wrapped = fixture("resnet8-w2-wrapped.pt");
    let message = refusal(read_weights(&wrapped, None, None));
    assert!(message.contains("resnet8-w2-wrapped.pt"), "{message}");
    assert!(message.contains("needs its key"), "{message}");

    let under_key = read_weights(&wrapped, Some("state_dict"), None).unwrap();
    assert!(under_key.keys().all(|name| name.starts_with("module.")));
    let unprefixed = read_weights(&wrapped, Some("state_dict"), Some("module.")).unwrap();
    let plain = read_weights(&fixture("resnet8-w2.pt"), None, None).unwrap();
    same_tensors(&unprefixed, &plain);

    let message = refusal(read_weights(&wrapped, Some("model"), None));
    assert!(message.contains("model"), "{message}");
}

#[test]
fn a_file_of_neither_kind_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "not weights at all, but long enough to have a header",
    )
    .unwrap();
    let message = refusal(read_weights(&text, None, None));
    assert!(
        message.starts_with(&text.display().to_string()),
        "{message}"
    );
    assert!(message.contains("neither safetensors nor"), "{message}");

    let message = refusal(read_weights(
        &fixture("resnet8-w2.safetensors"),
        Some("x"),
        None,
    ));
    assert!(message.contains("torch.save files only"), "{message}");

    let missing = dir.path().join("absent.pt");
    match read_weights(&missing, None, None) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("{:?}", other.map(|t| t.len())),
    }
}
