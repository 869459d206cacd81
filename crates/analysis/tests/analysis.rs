//! The analysis against independent computations: block dropping against a model rebuilt
//! without the block, unrolling with α = 0 against plain inference and on batch statistics
//! against the block so computed, the `skip` gradient against finite differences, and
//! BatchNorm statistics untouched.

use analysis::{analyze, Input};
use candle_core::{DType, Device, Tensor};
use cifar::batch::fixed_subset;
use cifar::synth::{draw, CLASSES};
use cifar::Images;
use domain::{
    AnalysisKind, AnalysisRecord, AnalysisSpec, Arch, BlockKind, DataSpec, GradientKind, Group,
    MetricName as M, ModelSpec, Normalization, RunSpec, Split, Stat, UnrollBn,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use resnet::eval::{evaluate, Inputs};
use resnet::{BnMode, Dtypes, ResNet};
use std::collections::HashMap;

fn images(n: u32, seed: u64) -> Images {
    let mut out = Images::default();
    for i in 0..n {
        let class = i % CLASSES.len() as u32;
        out.push(
            &draw(
                &mut ChaCha8Rng::seed_from_u64(seed * 1000 + i as u64),
                class,
            ),
            class,
        );
    }
    out
}

const NORM: Normalization = Normalization {
    mean: [0.5; 3],
    std: [0.25; 3],
};

fn run_spec(model: ModelSpec) -> RunSpec {
    let mut run = RunSpec::new(model, DataSpec::new("shapes10"));
    run.data.normalization = Some(NORM);
    run
}

/// A model with BatchNorm statistics warmed on some data, so that inference mode is not the
/// identity.
fn model(spec: &ModelSpec, dtype: DType, train: &Images) -> ResNet {
    let m = ResNet::new(
        &spec.layout().unwrap(),
        &mut ChaCha8Rng::seed_from_u64(3),
        &Device::Cpu,
        Dtypes::uniform(dtype),
    )
    .unwrap();
    let inputs = Inputs::new(&NORM, &Device::Cpu).unwrap();
    for (x, _) in train.batches(16).map(|b| inputs.upload(b).unwrap()) {
        m.forward(&x.to_dtype(dtype).unwrap(), BnMode::Train)
            .unwrap();
    }
    m
}

/// A model (BatchNorm statistics warmed on its train images) with its run spec and the
/// `n` train and test images it is analysed on.
struct Fixture {
    model: ResNet,
    run: RunSpec,
    train: Images,
    test: Images,
}

impl Fixture {
    /// Train images from `seed`, test images from `seed + 1`.
    fn new(spec: ModelSpec, dtype: DType, n: u32, seed: u64) -> Self {
        let (train, test) = (images(n, seed), images(n, seed + 1));
        let model = model(&spec, dtype, &train);
        Self {
            model,
            run: run_spec(spec),
            train,
            test,
        }
    }

    /// The input of an analysis of the model after `epoch` epochs.
    fn input(&self, epoch: u32) -> Input<'_> {
        Input {
            model: &self.model,
            run: &self.run,
            epoch,
            train: &self.train,
            test: &self.test,
            stop: None,
            progress: None,
        }
    }
}

fn small(blocks: u32) -> ModelSpec {
    ModelSpec {
        width: Some(4),
        blocks: Some(vec![blocks]),
        ..ModelSpec::new(Arch::Resnet)
    }
}

/// A `single` model of width 4 with three blocks.
fn narrow_single() -> ModelSpec {
    ModelSpec {
        width: Some(4),
        blocks: Some(vec![3]),
        ..ModelSpec::new(Arch::Single)
    }
}

fn spec(metrics: &[AnalysisKind]) -> AnalysisSpec {
    AnalysisSpec {
        metrics: metrics.to_vec(),
        max_examples: 24,
        eval_batch: 10,
        unroll_steps: 3,
        ..AnalysisSpec::default()
    }
}

fn find(records: &[AnalysisRecord], f: impl Fn(&AnalysisRecord) -> bool) -> Vec<&AnalysisRecord> {
    records.iter().filter(|r| f(r)).collect()
}

/// Alongside cosine and ℓ2, dropping reuses their probed forward: the same records, bit for
/// bit, as dropping on its own.
#[test]
fn dropping_alongside_cosine_gives_the_records_of_dropping_alone() {
    let fixture = Fixture::new(small(2), DType::F32, 30, 1);
    let input = fixture.input(1);
    let alone = analyze(&input, &spec(&[AnalysisKind::Drop])).unwrap();
    let together = analyze(
        &input,
        &spec(&[AnalysisKind::Cosine, AnalysisKind::L2, AnalysisKind::Drop]),
    )
    .unwrap();
    let dropping = |r: &&AnalysisRecord| {
        matches!(
            r.name,
            M::Accuracy | M::Loss | M::DropAccuracy | M::DropLoss
        )
    };
    let want: Vec<_> = alone.records.iter().filter(dropping).collect();
    let got: Vec<_> = together.records.iter().filter(dropping).collect();
    assert!(want.len() > 2 * 6);
    assert_eq!(got, want);
}

#[test]
fn dropping_a_block_equals_the_model_rebuilt_without_it() {
    let full_spec = small(3);
    let fixture = Fixture::new(full_spec.clone(), DType::F32, 30, 1);
    let (full, train, test) = (&fixture.model, &fixture.train, &fixture.test);
    let input = fixture.input(1);
    let result = analyze(&input, &spec(&[AnalysisKind::Drop])).unwrap();

    // Rebuild with stage 1 one block shorter, carrying every tensor but s1.b1's over.
    let short_spec = ModelSpec {
        blocks: Some(vec![3, 2, 3]),
        ..full_spec
    };
    let short = model(&short_spec, DType::F32, train);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (k, t) in full.state_dict().unwrap() {
        let renamed = if let Some(rest) = k.strip_prefix("stages.1.blocks.2.") {
            format!("stages.1.blocks.1.{rest}")
        } else if k.starts_with("stages.1.blocks.1.") {
            continue;
        } else {
            k
        };
        tensors.insert(renamed, t);
    }
    short.load_state_dict(&tensors).unwrap();
    for (split, images) in [(Split::Train, train), (Split::Test, test)] {
        let subset = fixed_subset(images, 24, 0, if split == Split::Train { 0 } else { 1 });
        let inputs = Inputs::new(&NORM, &Device::Cpu).unwrap();
        let (want, _) = evaluate(&short, &inputs, subset.batches(10), &[]).unwrap();
        let get = |name| {
            find(&result.records, |r| {
                r.name == name
                    && r.split == split
                    && r.block.map(|b| b.to_string()) == Some("s1.b1".into())
            })[0]
                .value
        };
        assert!((get(M::DropAccuracy) - want.accuracy).abs() < 1e-12);
        assert!(
            (get(M::DropLoss) - want.loss).abs() < 1e-5,
            "{} vs {}",
            get(M::DropLoss),
            want.loss
        );
    }
    // Every block is dropped once per split, projection blocks included, plus the intact
    // network's accuracy and loss.
    let drops = find(&result.records, |r| {
        r.name == M::DropAccuracy && r.split == Split::Test
    });
    assert_eq!(drops.len(), 9);
    assert_eq!(
        drops
            .iter()
            .filter(|r| r.kind == Some(BlockKind::Projection))
            .count(),
        2
    );
    assert_eq!(find(&result.records, |r| r.name == M::Accuracy).len(), 2);
}

#[test]
fn unrolling_with_alpha_zero_is_plain_inference() {
    let fixture = Fixture::new(narrow_single(), DType::F32, 20, 3);
    let input = fixture.input(2);
    let mut s = spec(&[AnalysisKind::Unroll, AnalysisKind::Drop]);
    s.alphas = vec![0.0, 0.5];
    let result = analyze(&input, &s).unwrap();
    for split in [Split::Train, Split::Test] {
        let plain = find(&result.records, |r| r.name == M::Loss && r.split == split)[0].value;
        let zero: Vec<_> = find(&result.records, |r| {
            r.name == M::UnrollLoss
                && r.split == split
                && r.alpha == Some(0.0)
                && r.group == Some(Group::All)
        });
        assert_eq!(zero.len(), 4, "steps 0..=3");
        for r in zero {
            assert!(
                (r.value - plain).abs() < 1e-6,
                "step {:?}: {} vs {plain}",
                r.step,
                r.value
            );
        }
        let cosines = find(&result.records, |r| {
            r.name == M::UnrollCosine && r.split == split && r.group == Some(Group::All)
        });
        assert_eq!(cosines.len(), 8);
    }
    assert!(result.selected_alpha.is_some());
}

/// For a short step the mean train loss's change over each unrolling step is its
/// first-order prediction α·⟨F(h), ∇ℓ(h)⟩, up to O(α²); none is recorded after the last step.
/// The groups' predictions, weighted by their sizes, add up to all examples'.
#[test]
fn the_unrollings_first_order_predicts_a_short_steps_loss_change() {
    let fixture = Fixture::new(narrow_single(), DType::F64, 20, 3);
    let input = fixture.input(2);
    let alpha = 1e-3;
    let mut s = spec(&[AnalysisKind::Unroll]);
    s.alphas = vec![alpha];
    let result = analyze(&input, &s).unwrap();
    for split in [Split::Train, Split::Test] {
        let series = |name| -> Vec<f64> {
            let mut records = find(&result.records, |r| {
                r.name == name && r.split == split && r.group == Some(Group::All)
            });
            records.sort_by_key(|r| r.step);
            records.iter().map(|r| r.value).collect()
        };
        let (loss, predicted) = (series(M::UnrollLoss), series(M::UnrollFirstOrder));
        assert_eq!((loss.len(), predicted.len()), (4, 3), "{split}");
        for (k, p) in predicted.iter().enumerate() {
            let actual = loss[k + 1] - loss[k];
            assert!(
                p.abs() > 1e-7,
                "{split} step {k}: a prediction of {p} says nothing"
            );
            assert!(
                (actual - p).abs() < 0.01 * p.abs(),
                "{split} step {k}: actual {actual} vs first-order {p}"
            );
            let at_step = |group| {
                find(&result.records, |r| {
                    r.name == M::UnrollFirstOrder
                        && r.split == split
                        && r.step == Some(k as u32)
                        && r.group == Some(group)
                })
            };
            let all = at_step(Group::All);
            let parts: Vec<_> = [Group::Misclassified, Group::Borderline, Group::Correct]
                .into_iter()
                .flat_map(at_step)
                .collect();
            assert!(parts.len() >= 2, "{split} step {k}: {parts:?}");
            let n: u32 = parts.iter().map(|r| r.n).sum();
            let sum: f64 = parts.iter().map(|r| r.value * r.n as f64).sum();
            assert_eq!(n, all[0].n);
            assert!(
                (sum / n as f64 - p).abs() < 1e-9 * p.abs(),
                "{split} step {k}"
            );
        }
    }
}

/// With `unroll_bn = "batch"` the re-applied block normalises with each batch's statistics:
/// the head's readout before unrolling is the same, the block's ℓ2 ratio there is that of
/// F computed so over the batch (one batch of the whole split here), and the running
/// statistics are left as they were.
#[test]
fn unrolling_with_batch_statistics_normalises_each_batch_and_keeps_the_running_ones() {
    let fixture = Fixture::new(narrow_single(), DType::F32, 20, 3);
    let m = &fixture.model;
    let input = fixture.input(2);
    let running = AnalysisSpec {
        splits: vec![Split::Test],
        eval_batch: 20,
        ..spec(&[AnalysisKind::Unroll])
    };
    let batch = AnalysisSpec {
        unroll_bn: UnrollBn::Batch,
        ..running.clone()
    };
    let before = running_stats(m);
    let (with_running, with_batch) = (
        analyze(&input, &running).unwrap(),
        analyze(&input, &batch).unwrap(),
    );
    assert_eq!(before, running_stats(m));
    let at_start = |result: &analysis::Analysis, name| {
        find(&result.records, |r| {
            r.name == name
                && r.step == Some(0)
                && r.alpha == Some(1.0)
                && r.group == Some(Group::All)
        })[0]
            .value
    };
    assert_eq!(
        at_start(&with_running, M::UnrollLoss),
        at_start(&with_batch, M::UnrollLoss)
    );
    let x = Inputs::new(&NORM, &Device::Cpu)
        .unwrap()
        .upload(fixture.test.batches(20).next().unwrap())
        .unwrap()
        .0;
    let last = m.blocks().count() - 1;
    let h = m.infer_tapped(&x, &[last]).unwrap().1.remove(0);
    let mean_ratio = |mode| {
        let f = m.block(last).unwrap().residual(&h, mode).unwrap();
        let per_example = |t: &Tensor| {
            t.flatten_from(1)
                .unwrap()
                .sqr()
                .unwrap()
                .sum(1)
                .unwrap()
                .sqrt()
                .unwrap()
        };
        (per_example(&f) / per_example(&h))
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    for (result, mode) in [
        (&with_running, BnMode::Eval),
        (&with_batch, BnMode::BatchStats),
    ] {
        let ratio = at_start(result, M::UnrollL2Ratio);
        assert!((ratio - mean_ratio(mode)).abs() < 1e-5, "{mode:?}: {ratio}");
    }
    assert!(
        (at_start(&with_running, M::UnrollL2Ratio) - at_start(&with_batch, M::UnrollL2Ratio)).abs()
            > 1e-3
    );
}

#[test]
fn the_skip_gradient_matches_finite_differences() {
    let spec_model = ModelSpec {
        width: Some(3),
        blocks: Some(vec![2]),
        ..ModelSpec::new(Arch::Single)
    };
    let fixture = Fixture::new(spec_model, DType::F64, 8, 5);
    let (m, test) = (&fixture.model, &fixture.test);
    let input = fixture.input(1);
    let mut s = spec(&[AnalysisKind::Cosine]);
    s.splits = vec![Split::Test];
    s.max_examples = 1;
    s.gradient = GradientKind::Skip;
    let result = analyze(&input, &s).unwrap();
    let cos = |block: &str| {
        find(&result.records, |r| {
            r.name == M::Cosine
                && r.stat == Some(Stat::Mean)
                && r.block.unwrap().to_string() == block
        })[0]
            .value
    };

    // The same cosine from a finite-difference gradient of the network without block 0.
    let subset = fixed_subset(test, 1, 0, 1);
    let inputs = Inputs::new(&NORM, &Device::Cpu).unwrap();
    let (x, y) = inputs.upload(subset.batches(1).next().unwrap()).unwrap();
    let x = x.to_dtype(DType::F64).unwrap();
    let h = m.stem(&x).unwrap();
    let f = m.block(0).unwrap().residual(&h, BnMode::Eval).unwrap();
    let loss = |h: &Tensor| -> f64 {
        let logits = m.forward_after(0, h, BnMode::Eval).unwrap();
        resnet::loss::cross_entropy_per_example(&logits, &y)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let base = h.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let fv = f.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let eps = 1e-6;
    let grad: Vec<f64> = (0..base.len())
        .map(|k| {
            let at = |d: f64| {
                let mut v = base.clone();
                v[k] += d;
                loss(&Tensor::from_vec(v, h.shape(), &Device::Cpu).unwrap())
            };
            (at(eps) - at(-eps)) / (2.0 * eps)
        })
        .collect();
    let dot: f64 = grad.iter().zip(&fv).map(|(a, b)| a * b).sum();
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let want = dot / (norm(&grad) * norm(&fv));
    assert!(
        (cos("s0.b0") - want).abs() < 1e-6,
        "{} vs {want}",
        cos("s0.b0")
    );
}

fn running_stats(m: &ResNet) -> Vec<Vec<f32>> {
    m.state_dict()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.contains("running") || k.contains("num_batches"))
        .map(|(_, t)| {
            t.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect()
}

#[test]
fn every_analysis_runs_and_leaves_batchnorm_statistics_unchanged() {
    let spec_model = ModelSpec {
        sharing: domain::Sharing::Ubn,
        unshared_blocks: 1,
        ..small(3)
    };
    let fixture = Fixture::new(spec_model, DType::F32, 30, 7);
    let m = &fixture.model;
    let before = running_stats(m);
    let input = fixture.input(4);
    let result = analyze(&input, &spec(&AnalysisKind::ALL)).unwrap();
    assert_eq!(before, running_stats(m));
    assert!(result
        .records
        .iter()
        .all(|r| r.value.is_finite() && r.epoch == 4));
    assert_eq!(result.examples.len(), 2);
    assert_eq!(result.examples[0].examples, 24);
    // One timed pass per family of metrics (cosine, ℓ2 and dropping share one), both splits
    // in each, in the order they ran, together within the whole.
    let passes: Vec<String> = result
        .passes
        .iter()
        .map(|p| {
            let names: Vec<&str> = p.metrics.iter().map(|m| m.as_str()).collect();
            names.join("+")
        })
        .collect();
    assert_eq!(
        passes,
        [
            "cosine+l2+drop",
            "intermediate",
            "borderline",
            "unroll",
            "sharing",
            "taylor"
        ]
    );
    let timed: f64 = result.passes.iter().map(|p| p.seconds).sum();
    assert!(
        result.passes.iter().all(|p| p.seconds > 0.0) && timed <= result.seconds,
        "{:?} within {}",
        result.passes,
        result.seconds
    );
    let dropping = analyze(&input, &spec(&[AnalysisKind::Drop])).unwrap();
    assert_eq!(dropping.passes.len(), 1);
    assert_eq!(dropping.passes[0].metrics, [AnalysisKind::Drop]);
    // Projection blocks are reported, marked as such.
    let projection_cos = find(&result.records, |r| {
        r.name == M::Cosine && r.kind == Some(BlockKind::Projection)
    });
    assert_eq!(
        projection_cos.len(),
        2 * 2 * 2,
        "2 blocks × mean/median × 2 splits"
    );
    // The borderline window is the last stage's blocks the head can take (2 of 3 here).
    let window: Vec<_> = result.window.iter().map(|b| b.to_string()).collect();
    assert_eq!(window, ["s2.b1", "s2.b2"]);
    for name in [
        M::L2Ratio,
        M::IntermediateAccuracy,
        M::BorderlineEntropy,
        M::UnrollL2Ratio,
        M::UnrollFirstOrder,
        M::GradNormRatio,
        M::ActivationNorm,
        M::TaylorPredicted,
    ] {
        assert!(
            result.records.iter().any(|r| r.name == name),
            "{name} missing"
        );
    }
    // Borderline, correct and misclassified examples partition all of them.
    let size = |g| {
        find(&result.records, |r| {
            r.name == M::BorderlineLoss
                && r.split == Split::Test
                && r.step == Some(0)
                && r.group == Some(g)
        })
        .first()
        .map_or(0, |r| r.n)
    };
    assert_eq!(
        size(Group::All),
        size(Group::Borderline) + size(Group::Correct) + size(Group::Misclassified)
    );
    assert_eq!(size(Group::All), 24);
    let csv = domain::csv::analysis_csv(&result.records);
    assert!(
        csv.starts_with("name,split,epoch,block,block_index,kind,group,alpha,step,stat,value,n\n")
    );
    assert_eq!(csv.lines().count(), result.records.len() + 1);
}

#[test]
fn a_projection_last_block_is_noted_not_unrolled() {
    let fixture = Fixture::new(small(1), DType::F32, 10, 9);
    let input = fixture.input(1);
    let result = analyze(
        &input,
        &spec(&[
            AnalysisKind::Unroll,
            AnalysisKind::Borderline,
            AnalysisKind::Taylor,
        ]),
    )
    .unwrap();
    assert!(
        result
            .notes
            .iter()
            .any(|n| n.contains("s2.b0 is a projection block")),
        "{:?}",
        result.notes
    );
    assert!(result.notes.iter().any(|n| n.starts_with("borderline:")));
    assert!(result.records.is_empty());
}

/// A last block whose convolutions are scaled by 10 grows the unrolled hidden state ~40× per
/// step of α = 1 until it overflows: that α is recorded up to its last finite state (the
/// first-order change of each step taken from one, too) and noted, its final loss keeps it
/// out of the selection, and α = 0 beside it keeps every step.
#[test]
fn an_unrolling_that_overflows_is_recorded_up_to_its_last_finite_step() {
    let fixture = Fixture::new(small(3), DType::F32, 20, 5);
    let weights: HashMap<String, Tensor> = fixture
        .model
        .state_dict()
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let scaled = name.starts_with("stages.2.blocks.2.conv") && name.ends_with("weight");
            let t = if scaled { t * 10.0 } else { t.copy() };
            (name, t.unwrap())
        })
        .collect();
    fixture.model.load_state_dict(&weights).unwrap();
    let input = fixture.input(1);
    let mut s = spec(&[AnalysisKind::Unroll]);
    s.alphas = vec![1.0, 0.0];
    s.unroll_steps = 30;
    let result = analyze(&input, &s).unwrap();
    for split in [Split::Train, Split::Test] {
        let steps = |name, alpha| -> Vec<u32> {
            let mut steps: Vec<u32> = find(&result.records, |r| {
                r.name == name
                    && r.split == split
                    && r.alpha == Some(alpha)
                    && r.group == Some(Group::All)
            })
            .iter()
            .map(|r| r.step.unwrap())
            .collect();
            steps.sort();
            steps
        };
        let kept = steps(M::UnrollLoss, 1.0);
        let last = *kept.last().expect("step 0 is finite");
        assert!(last < 30, "{split}: α = 1 never overflowed");
        assert_eq!(kept, (0..=last).collect::<Vec<_>>(), "{split}");
        // The step from the last finite state was taken (it overflowed).
        assert_eq!(steps(M::UnrollFirstOrder, 1.0), kept, "{split}");
        // ‖F(h)‖ may overflow one step before h does: its cosine is then not recorded.
        let cosines = steps(M::UnrollCosine, 1.0);
        assert!(
            cosines == kept || cosines == kept[..kept.len() - 1],
            "{split}: {cosines:?}"
        );
        assert_eq!(steps(M::UnrollLoss, 0.0), (0..=30).collect::<Vec<_>>());
    }
    let note = "unroll: with α = 1 the hidden state stopped being finite";
    assert!(result.notes.iter().any(|n| n == note), "{:?}", result.notes);
    assert_eq!(result.selected_alpha, Some(0.0));
}

/// A margin of 0 leaves the borderline group (|m| < 0) empty on both paths: no records of
/// it, and a note per path and split that says so.
#[test]
fn an_empty_borderline_group_is_noted() {
    let fixture = Fixture::new(narrow_single(), DType::F32, 20, 11);
    let input = fixture.input(1);
    let mut s = spec(&[AnalysisKind::Unroll, AnalysisKind::Borderline]);
    s.margin = 0.0;
    let result = analyze(&input, &s).unwrap();
    assert!(find(&result.records, |r| r.group == Some(Group::Borderline)).is_empty());
    assert!(!find(&result.records, |r| r.group == Some(Group::All)).is_empty());
    for path in ["borderline", "unroll"] {
        for split in ["train", "test"] {
            let note = format!("{path}: no {split} example is borderline (|margin| < 0)");
            assert!(
                result.notes.iter().any(|n| n.starts_with(&note)),
                "{note} in {:?}",
                result.notes
            );
        }
    }
}

/// The progress hook hears each pass start and each batch it uploads, split by split; a pass
/// that runs the network through its own loop (intermediate) only its start.
#[test]
fn progress_follows_the_passes_and_their_batches() {
    let fixture = Fixture::new(small(2), DType::F32, 24, 3);
    let heard = std::sync::Mutex::new(vec![]);
    let hear = |p: &domain::AnalysisProgress| {
        let pass: Vec<&str> = p.pass.iter().map(|m| m.as_str()).collect();
        let line = format!("{} {} {}/{}", p.split, pass.join("+"), p.batch, p.batches);
        heard.lock().unwrap().push(line);
    };
    let input = Input {
        progress: Some(&hear),
        ..fixture.input(1)
    };
    let metrics = [
        AnalysisKind::Cosine,
        AnalysisKind::Intermediate,
        AnalysisKind::Unroll,
    ];
    analyze(&input, &spec(&metrics)).unwrap();
    let mut expected = vec![];
    for split in ["train", "test"] {
        for (pass, batches) in [("cosine", 3), ("intermediate", 0), ("unroll", 3)] {
            for batch in 0..=batches {
                expected.push(format!("{split} {pass} {batch}/3"));
            }
        }
    }
    assert_eq!(*heard.lock().unwrap(), expected);
}

/// Every metric sees a stop before its passes over the data, and the analysis ends with
/// `Stopped` and no results.
#[test]
fn every_analysis_ends_at_a_stop() {
    let fixture = Fixture::new(small(2), DType::F32, 30, 3);
    let stop = std::sync::atomic::AtomicBool::new(true);
    let input = Input {
        stop: Some(&stop),
        ..fixture.input(1)
    };
    for kind in AnalysisKind::ALL {
        let result = analyze(&input, &spec(&[kind]));
        assert!(
            matches!(result, Err(analysis::Error::Stopped)),
            "{kind:?}: {result:?}"
        );
    }
}
