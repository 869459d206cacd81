//! Trainable and Keras-style parameter counts against paper.md's table, for every row and
//! both class counts. A builder that misses one tensor is structurally wrong.

use candle_core::Device;
use domain::{Arch, ModelLayout, ModelSpec, Sharing};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use resnet::{Dtypes, ResNet};

fn build(spec: &ModelSpec) -> (ResNet, ModelLayout) {
    let layout = spec.layout().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let model = ResNet::new(
        &layout,
        &mut rng,
        &Device::Cpu,
        Dtypes::for_precision(spec.dtype),
    )
    .unwrap();
    (model, layout)
}

fn spec(arch: Arch, depth: Option<u32>, sharing: Sharing, classes: u32) -> ModelSpec {
    ModelSpec {
        depth,
        sharing,
        classes,
        ..ModelSpec::new(arch)
    }
}

/// BatchNorm channels counted from the layout alone (independently of the builder): two
/// BNs per block (input and inner channels), one in the head; a naively shared pair once.
fn bn_channels(layout: &ModelLayout) -> usize {
    let mut naive_counted = std::collections::HashSet::new();
    let mut total = layout.stages.last().unwrap().channels as usize;
    for b in layout.blocks() {
        if b.shared && layout.sharing == Sharing::Naive && !naive_counted.insert(b.id.stage) {
            continue;
        }
        total += (b.in_shape[0] + b.out_shape[0]) as usize;
    }
    total
}

fn check(spec: ModelSpec, trainable: usize, keras: Option<usize>) {
    let (model, layout) = build(&spec);
    let name = format!(
        "{:?} depth {:?} {:?} C{}",
        spec.arch, spec.depth, spec.sharing, spec.classes
    );
    assert_eq!(model.trainable_count(), trainable, "{name}: trainable");
    assert_eq!(
        layout.trainable_parameters(),
        trainable as u64,
        "{name}: trainable, counted from the layout"
    );
    let keras = keras.unwrap_or(trainable + 2 * bn_channels(&layout));
    assert_eq!(model.keras_count(), keras, "{name}: keras-style");
}

#[test]
fn resnet_rows() {
    let rows = [
        (32, 467_946, 473_796),
        (38, 565_386, 571_236),
        (56, 857_706, 863_556),
        (110, 1_734_666, 1_740_516),
    ];
    for (depth, c10, c100) in rows {
        let keras = |c: u32| match (depth, c) {
            (110, 10) => Some(1_742_762),
            (110, 100) => Some(1_748_612),
            _ => None,
        };
        check(
            spec(Arch::Resnet, Some(depth), Sharing::None, 10),
            c10,
            keras(10),
        );
        check(
            spec(Arch::Resnet, Some(depth), Sharing::None, 100),
            c100,
            keras(100),
        );
    }
}

/// paper.md gives CIFAR-10 counts for these; CIFAR-100 adds 90 × (features + 1).
fn check_both(arch: Arch, c10: usize, keras_c10: usize) {
    check(spec(arch, None, Sharing::None, 10), c10, Some(keras_c10));
    let features = spec(arch, None, Sharing::None, 10)
        .layout()
        .unwrap()
        .head_features() as usize;
    let extra = 90 * (features + 1);
    check(
        spec(arch, None, Sharing::None, 100),
        c10 + extra,
        Some(keras_c10 + extra),
    );
}

#[test]
fn single_representation() {
    check_both(Arch::Single, 1_825_010, 1_829_210);
}

#[test]
fn avgpool() {
    check_both(Arch::Avgpool, 12_183_010, 12_201_310);
}

#[test]
fn wide() {
    check_both(Arch::Wide, 45_711_050, 45_732_842);
}

#[test]
fn wide_with_the_symmetric_first_stage_would_not_match() {
    let symmetric = ModelSpec {
        blocks: Some(vec![5, 5, 5]),
        ..ModelSpec::new(Arch::Wide)
    };
    assert_eq!(build(&symmetric).0.trainable_count(), 46_172_810);
}

#[test]
fn naive_sharing_equals_resnet_38() {
    check(
        spec(Arch::Resnet, Some(110), Sharing::Naive, 10),
        565_386,
        None,
    );
    check(
        spec(Arch::Resnet, Some(110), Sharing::Naive, 100),
        571_236,
        None,
    );
}

#[test]
fn unshared_batchnorm_rows() {
    let rows = [
        (110, 570_762, 576_612),
        (146, 573_450, 579_300),
        (182, 576_138, 581_988),
    ];
    for (depth, c10, c100) in rows {
        check(spec(Arch::Resnet, Some(depth), Sharing::Ubn, 10), c10, None);
        check(
            spec(Arch::Resnet, Some(depth), Sharing::Ubn, 100),
            c100,
            None,
        );
    }
}
