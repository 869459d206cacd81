//! The `stepwise` binary end to end on tiny data: summaries, spec errors, train, stop with
//! Ctrl-C, resume, evaluate, analyse, an experiment with figures and report.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stepwise"));
    command
        .current_dir(dir)
        .env("STEPWISE_DATA_DIR", dir.join("data"));
    command
}

fn stepwise(dir: &Path, args: &[&str]) -> Output {
    command(dir).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

const TINY: &[&str] = &[
    "--arch", "resnet", "--width", "4", "--blocks", "1", "--batch", "16",
];

fn synth(dir: &Path) {
    synth_into(dir, "data/shapes10");
}

fn synth_into(dir: &Path, out: &str) {
    ok(&stepwise(
        dir,
        &[
            "data", "synth", "--out", out, "--train", "48", "--test", "20",
        ],
    ));
}

#[test]
fn model_summary_reports_the_paper_counts_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let out = json(&ok(&stepwise(
        dir.path(),
        &[
            "model", "summary", "--arch", "resnet", "--depth", "110", "--json",
        ],
    )));
    assert_eq!(out["trainable_params"], 1_734_666);
    assert_eq!(out["keras_params"], 1_742_762);
    assert_eq!(out["depth"], 110);
    let blocks = out["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 54);
    assert_eq!(blocks[18]["id"], "s1.b0");
    assert_eq!(blocks[18]["kind"], "projection");
    assert_eq!(blocks[18]["stage"], 1);
    assert_eq!(blocks[18]["index"], 18);
    assert_eq!(blocks[18]["in_shape"], serde_json::json!([16, 32, 32]));
    let ubn = json(&ok(&stepwise(
        dir.path(),
        &[
            "model",
            "summary",
            "--arch",
            "resnet",
            "--depth",
            "110",
            "--sharing",
            "ubn",
            "--classes",
            "100",
            "--json",
        ],
    )));
    assert_eq!(ubn["trainable_params"], 576_612);
    assert_eq!(ubn["blocks"][5]["shared"], true);
    let text = ok(&stepwise(
        dir.path(),
        &["model", "summary", "--arch", "single"],
    ));
    assert!(text.contains("1825010"), "{text}");
}

#[test]
fn bad_flags_and_specs_name_the_field_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let err = failed(&stepwise(
        dir.path(),
        &["train", "--arch", "resnet", "--depth", "111", "--out", "r"],
    ));
    assert!(err.contains("model.depth") && err.contains("6n+2"), "{err}");
    let err = failed(&stepwise(
        dir.path(),
        &["train", "--arch", "resnet", "--batch", "0", "--out", "r"],
    ));
    assert!(
        err.contains("train.batch_size: 0 is out of range 1..=4096"),
        "{err}"
    );
    let err = failed(&stepwise(
        dir.path(),
        &["train", "--arch", "resnet", "--lr=-1", "--out", "r"],
    ));
    assert!(err.contains("train.schedule.lr"), "{err}");
    let err = failed(&stepwise(dir.path(), &["train", "--depth", "20"]));
    assert!(err.contains("--arch is required"), "{err}");
    let err = failed(&stepwise(
        dir.path(),
        &["model", "summary", "--arch", "vgg"],
    ));
    assert!(err.contains("vgg"), "{err}");
    std::fs::write(
        dir.path().join("bad.toml"),
        "[model]\narch = \"resnet\"\nwidht = 4\n[data]\ndataset = \"shapes10\"\n",
    )
    .unwrap();
    let err = failed(&stepwise(
        dir.path(),
        &["train", "--spec", "bad.toml", "--out", "r"],
    ));
    assert!(
        err.contains("model.widht") && err.contains("unknown field"),
        "{err}"
    );
    let err = failed(&stepwise(
        dir.path(),
        &[
            "train",
            "--arch",
            "resnet",
            "--data",
            "nothing-here",
            "--out",
            "r",
        ],
    ));
    assert!(
        err.contains("nothing-here") && err.contains("stepwise data import"),
        "{err}"
    );
    let err = failed(&stepwise(
        dir.path(),
        &["bench", "train", "--arch", "resnet", "--device", "cuda"],
    ));
    assert!(
        err.contains("without CUDA") || err.contains("CUDA"),
        "{err}"
    );
    assert!(!dir.path().join("r").join("checkpoints").exists());
    // Refused before anything is sent (no API listens here): a spec file's line and
    // column, a bad selection, and a run's analysis flag given with an experiment.
    std::fs::write(dir.path().join("broken.toml"), "[model]\narch = resnet\n").unwrap();
    let submit = |args: &[&str]| {
        let mut all = vec!["--api-url", "http://127.0.0.1:9", "submit"];
        all.extend(args);
        failed(&stepwise(dir.path(), &all))
    };
    let err = submit(&["broken.toml"]);
    assert!(
        err.contains("broken.toml: spec: line 2, column 8: "),
        "{err}"
    );
    let quick = concat!(env!("CARGO_MANIFEST_DIR"), "/../../experiments/quick.toml");
    let err = submit(&[quick, "--analysis", "sometimes"]);
    assert!(
        err.contains("--analysis \"sometimes\": expected final"),
        "{err}"
    );
    let experiment = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../experiments/quick/quick.toml"
    );
    let err = submit(&[experiment, "--analysis", "every:2"]);
    assert!(
        err.contains("analysed as its `analysis_checkpoints`"),
        "{err}"
    );
}

#[test]
fn print_spec_resolves_the_defaults_and_reads_back_as_the_same_spec() {
    let dir = tempfile::tempdir().unwrap();
    let printed = ok(&stepwise(
        dir.path(),
        &[
            "train",
            "--arch",
            "resnet",
            "--depth",
            "20",
            "--epochs",
            "30",
            "--schedule",
            "scaled",
            "--print-spec",
        ],
    ));
    let mut lines = printed.lines();
    assert_eq!(
        lines.next(),
        Some("# resnet-20: 273066 trainable parameters, 9 blocks")
    );
    // The paper's boundaries 80, 120, 200 of 300 epochs, scaled to 30.
    assert_eq!(
        lines.next(),
        Some("# learning rate 0.1 for epochs 1–8, 0.01 for epochs 9–12, 0.001 for epochs 13–20, 0.00001 for epochs 21–30")
    );
    let memory = lines.next().unwrap();
    assert!(
        memory.starts_with("# peak memory on cpu, estimated: training ")
            && memory.contains(" MiB at batch 128, the per-epoch evaluation ")
            && memory.ends_with(" MiB at batch 250"),
        "{memory}"
    );
    assert!(printed.contains("\nwidth = 16\n"), "{printed}");
    // Saved, it is the spec of the same run: printing it again changes nothing.
    std::fs::write(dir.path().join("resolved.toml"), &printed).unwrap();
    let again = ok(&stepwise(
        dir.path(),
        &["train", "--spec", "resolved.toml", "--print-spec"],
    ));
    assert_eq!(again, printed);
    // The estimate is of the device asked for, which need not be there.
    let on_gpu = ok(&stepwise(
        dir.path(),
        &[
            "train",
            "--spec",
            "resolved.toml",
            "--print-spec",
            "--device",
            "cuda",
        ],
    ));
    assert!(
        on_gpu.contains("\n# peak GPU memory on cuda:0, estimated: training "),
        "{on_gpu}"
    );
    // Nothing is trained or written.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // --data names the dataset as training would: a directory by its identity.
    synth(dir.path());
    let printed = ok(&stepwise(
        dir.path(),
        &[
            "train",
            "--spec",
            "resolved.toml",
            "--data",
            "data/shapes10",
            "--print-spec",
        ],
    ));
    assert!(printed.contains("dataset = \"shapes10\""), "{printed}");
    // --schedule replaces a spec's custom schedule, boundaries and values included.
    let quick = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/quick.toml");
    let constant = ok(&stepwise(
        dir.path(),
        &[
            "train",
            "--spec",
            quick.to_str().unwrap(),
            "--schedule",
            "constant",
            "--lr",
            "0.05",
            "--print-spec",
        ],
    ));
    assert!(
        constant.contains("# learning rate 0.05 for epochs 1–6\n")
            && !constant.contains("boundaries"),
        "{constant}"
    );
    let err = failed(&stepwise(
        dir.path(),
        &[
            "train",
            "--spec",
            "resolved.toml",
            "--data",
            "nothing-here",
            "--print-spec",
        ],
    ));
    assert!(err.contains("nothing-here"), "{err}");
}

#[test]
fn train_resume_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    // Under a directory name that is not the dataset's own: resume and evaluation find
    // the data by the identity the checkpoint records.
    synth_into(dir.path(), "data/tiny10");
    let mut args = vec![
        "train", "--epochs", "1", "--out", "runs/a", "--json", "--seed", "3", "--data", "tiny10",
    ];
    args.extend(TINY);
    let summary = json(&ok(&stepwise(dir.path(), &args)));
    assert_eq!(summary["outcome"], "finished");
    assert_eq!(summary["epochs_completed"], 1);
    assert_eq!(summary["spec"]["data"]["identity"]["name"], "shapes10");
    let checkpoint = summary["checkpoint"].as_str().unwrap().to_string();
    assert!(
        checkpoint.ends_with("runs/a/checkpoints/epoch-0001.safetensors"),
        "{checkpoint}"
    );
    assert!(dir.path().join("runs/a/spec.toml").exists());

    // Training again into the same directory is refused; resuming extends it.
    let err = failed(&stepwise(dir.path(), &args));
    assert!(
        err.contains("already holds a run: resume it with `stepwise train --resume")
            && err.contains("runs/a/checkpoints/epoch-0001.safetensors`"),
        "{err}"
    );
    // One stopped before its first checkpoint (a full disk, a crash) has nothing to resume.
    std::fs::create_dir_all(dir.path().join("runs/b")).unwrap();
    std::fs::write(dir.path().join("runs/b/metrics.jsonl"), "").unwrap();
    let mut into_b = args.clone();
    into_b[4] = "runs/b";
    let err = failed(&stepwise(dir.path(), &into_b));
    assert!(
        err.contains("runs/b already holds a run that wrote no checkpoint"),
        "{err}"
    );
    let err = failed(&stepwise(
        dir.path(),
        &["train", "--resume", &checkpoint, "--depth", "20"],
    ));
    assert!(err.contains("keeps the spec"), "{err}");
    // While another process writes the directory (holds its lock), resuming is refused
    // before anything is written.
    let lock = std::fs::File::open(dir.path().join("runs/a/.stepwise.lock")).unwrap();
    lock.lock().unwrap();
    let metrics_before = std::fs::read(dir.path().join("runs/a/metrics.jsonl")).unwrap();
    let err = failed(&stepwise(
        dir.path(),
        &["train", "--resume", &checkpoint, "--epochs", "2"],
    ));
    assert!(
        err.contains("being written by another stepwise process"),
        "{err}"
    );
    let metrics_after = std::fs::read(dir.path().join("runs/a/metrics.jsonl")).unwrap();
    assert_eq!(metrics_before, metrics_after);
    drop(lock);
    let resumed = json(&ok(&stepwise(
        dir.path(),
        &["train", "--resume", &checkpoint, "--epochs", "2", "--json"],
    )));
    assert_eq!(resumed["epochs_completed"], 2);
    assert_eq!(resumed["steps"], 6);
    let metrics = std::fs::read_to_string(dir.path().join("runs/a/metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics.lines().map(json).collect();
    assert!(records.iter().any(|r| r["epoch"] == 1) && records.iter().any(|r| r["epoch"] == 2));
    assert!(records
        .iter()
        .any(|r| r["name"] == "intermediate_accuracy" && r["block"] == "s2.b0"));
    // The batch stream it trained on: each epoch visits the 48 examples once, in batches of
    // 16, at the epoch's learning rate; crops lie in the padded image.
    let stream = ok(&stepwise(
        dir.path(),
        &["data", "batches", "--run", "runs/a"],
    ));
    let batches: Vec<serde_json::Value> = stream.lines().map(json).collect();
    assert_eq!(batches.len(), 6);
    for epoch in [1, 2] {
        let of_epoch: Vec<_> = batches.iter().filter(|b| b["epoch"] == epoch).collect();
        let mut seen: Vec<u64> = of_epoch
            .iter()
            .flat_map(|b| b["examples"].as_array().unwrap())
            .map(|e| e.as_u64().unwrap())
            .collect();
        seen.sort();
        assert_eq!(seen, (0..48).collect::<Vec<_>>());
        let lr = records
            .iter()
            .find(|r| r["name"] == "learning_rate" && r["epoch"] == epoch)
            .unwrap();
        assert!(of_epoch.iter().all(|b| b["learning_rate"] == lr["value"]));
    }
    assert!(batches.iter().all(|b| {
        ["crop_y", "crop_x"].iter().all(|k| {
            b[k].as_array()
                .unwrap()
                .iter()
                .all(|c| c.as_u64().unwrap() <= 8)
        }) && b["flip"].as_array().unwrap().len() == 16
    }));
    let second = ok(&stepwise(
        dir.path(),
        &["data", "batches", "--run", "runs/a", "--epochs", "2"],
    ));
    assert_eq!(
        second.lines().collect::<Vec<_>>(),
        stream.lines().skip(3).collect::<Vec<_>>()
    );
    let err = failed(&stepwise(
        dir.path(),
        &["data", "batches", "--run", "runs/a", "--epochs", "3"],
    ));
    assert!(err.contains("the run has epochs 1 to 2"), "{err}");

    let last = resumed["checkpoint"].as_str().unwrap();
    // A checkpoint carries the same stream: its spec travels in it.
    let from_checkpoint = ok(&stepwise(
        dir.path(),
        &["data", "batches", "--checkpoint", last],
    ));
    assert_eq!(from_checkpoint, stream);
    let eval = json(&ok(&stepwise(
        dir.path(),
        &["eval", "--checkpoint", last, "--json"],
    )));
    assert_eq!(eval["n"], 20);
    assert_eq!(eval["split"], "test");
    assert_eq!(eval["dataset"]["name"], "shapes10");
    let acc = eval["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    // The test evaluation equals the one recorded at the end of training.
    assert_eq!(eval["accuracy"], resumed["test_accuracy"]);
    let train_eval = json(&ok(&stepwise(
        dir.path(),
        &["eval", "--checkpoint", last, "--split", "train", "--json"],
    )));
    assert_eq!(train_eval["n"], 48);
    assert!(
        !dir.path().join("data/shapes10").exists(),
        "no default shapes10 generated for a model that never saw it"
    );
    // A damaged checkpoint is refused, naming the newest intact one before it.
    let damaged = dir.path().join(last);
    let mut bytes = std::fs::read(&damaged).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&damaged, bytes).unwrap();
    let err = failed(&stepwise(
        dir.path(),
        &["train", "--resume", last, "--epochs", "3"],
    ));
    assert!(
        err.contains("damaged") && err.contains(&format!("--resume {checkpoint}")),
        "{err}"
    );
}

#[test]
fn work_over_the_cpu_memory_budget_is_refused_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path());
    let budgeted = |args: &[&str]| {
        command(dir.path())
            .env("STEPWISE_CPU_MEMORY", "300MiB")
            .args(args)
            .output()
            .unwrap()
    };
    let tiny = ["--arch", "resnet", "--width", "4", "--blocks", "1"];
    let train = |out: &'static str, batch: &'static str| {
        let head = [
            "train", "--epochs", "1", "--json", "--out", out, "--batch", batch,
        ];
        head.into_iter().chain(tiny).collect::<Vec<_>>()
    };
    let err = failed(&budgeted(&train("runs/big", "4096")));
    assert!(
        err.contains("training at batch size 4096")
            && err.contains("budget of 300 MiB")
            && err.contains("lower train.batch_size (--batch) to ")
            && err.contains("--cpu-memory"),
        "{err}"
    );
    assert!(!dir.path().join("runs/big/checkpoints").exists());
    // So is an evaluation batch over it, before training either.
    let spec = "[model]\narch = \"resnet\"\nwidth = 4\nblocks = [1]\n\n[data]\n\
                dataset = \"shapes10\"\n\n[train]\nepochs = 1\nbatch_size = 16\n\n\
                [train.monitor]\neval_batch_size = 4096\n";
    std::fs::write(dir.path().join("eval-batch.toml"), spec).unwrap();
    let err = failed(&budgeted(&[
        "train",
        "--spec",
        "eval-batch.toml",
        "--out",
        "runs/eval",
    ]));
    assert!(
        err.contains("the per-epoch evaluation at batch size 4096")
            && err.contains("lower train.monitor.eval_batch_size to "),
        "{err}"
    );
    assert!(!dir.path().join("runs/eval/checkpoints").exists());
    // An experiment checks every configuration before it trains the first.
    let experiment = "name = \"mixed\"\n\n[data]\ndataset = \"shapes10\"\n\n[train]\n\
                      epochs = 1\nbatch_size = 16\n\n[[configs]]\n\
                      model = { arch = \"resnet\", width = 4, blocks = [1] }\n\n[[configs]]\n\
                      label = \"big\"\nmodel = { arch = \"resnet\", width = 4, blocks = [1] }\n\
                      train = { epochs = 1, batch_size = 4096 }\n";
    std::fs::write(dir.path().join("mixed.toml"), experiment).unwrap();
    let err = failed(&budgeted(&["run", "mixed.toml", "--out", "exp"]));
    assert!(
        err.contains("configuration big: training at batch size 4096"),
        "{err}"
    );
    assert!(!dir.path().join("exp/runs").exists(), "nothing trained");
    // A batch within the budget trains.
    let summary = json(&ok(&budgeted(&train("runs/small", "16"))));
    let checkpoint = summary["checkpoint"].as_str().unwrap();
    let err = failed(&budgeted(&[
        "analyze",
        "--checkpoint",
        checkpoint,
        "--eval-batch",
        "4096",
    ]));
    assert!(
        err.contains("analysis at batch size 4096") && err.contains("lower analysis.eval_batch"),
        "{err}"
    );
    // bench analyze names its own flag for the batch.
    let mut bench = vec!["bench", "analyze", "--examples", "4096", "--batch", "4096"];
    bench.extend(tiny);
    let err = failed(&budgeted(&bench));
    assert!(
        err.contains("analysis at batch size 4096") && err.contains("lower --batch to "),
        "{err}"
    );
    let evaluate = |batch| budgeted(&["eval", "--checkpoint", checkpoint, "--batch", batch]);
    let err = failed(&evaluate("4096"));
    assert!(
        err.contains("evaluation at batch size 4096") && err.contains("lower --batch to "),
        "{err}"
    );
    ok(&evaluate("64"));
}

/// The SVG of the figure named `name…` that `stepwise figures` listed.
fn listed_svg(dir: &Path, listing: &str, name: &str) -> String {
    let file = listing
        .lines()
        .find(|l| l.contains(name) && l.ends_with(".svg"))
        .unwrap_or_else(|| panic!("no {name}… in {listing}"));
    std::fs::read_to_string(dir.join(file)).unwrap()
}

/// The unrolling on batch statistics is said where its results are shown: the analysis'
/// printout and settings, and Figure 7.
#[test]
fn unrolling_on_batch_statistics_says_so() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path());
    let model = [
        "--arch", "resnet", "--width", "4", "--blocks", "2", "--batch", "16",
    ];
    let mut args = vec!["train", "--epochs", "1", "--out", "runs/u"];
    args.extend(model);
    ok(&stepwise(dir.path(), &args));
    let analysed = stepwise(
        dir.path(),
        &[
            "analyze",
            "--run",
            "runs/u",
            "--metrics",
            "unroll",
            "--max-examples",
            "12",
            "--eval-batch",
            "6",
            "--unroll-steps",
            "2",
            "--unroll-bn",
            "batch",
        ],
    );
    ok(&analysed);
    let stderr = String::from_utf8_lossy(&analysed.stderr);
    // The selected α's train loss before and after, beside its first order.
    let unrolling = stderr
        .lines()
        .find(|l| l.contains("unrolling: selected α = "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        unrolling.contains("(the block on batch statistics): train loss ")
            && unrolling.contains(" (first order ")
            && unrolling.ends_with(") over 2 steps"),
        "{unrolling}"
    );
    // Under it, every α of the sweep with the course of its train loss and test cosine.
    let table: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.contains("first order   "))
        .take_while(|l| l.ends_with(" of 2 steps") || l.contains("negative for"))
        .collect();
    assert_eq!(table.len(), 6, "{stderr}");
    for (row, alpha) in table[1..]
        .iter()
        .zip(["1 ", "0.5 ", "0.25 ", "0.1 ", "0.05 "])
    {
        assert!(row.trim_start().starts_with(alpha), "{row}");
    }
    assert!(
        stderr.contains(
            "settings: eval_batch = 6; max_examples = 12; metrics = [\"unroll\"]; \
             unroll_bn = \"batch\"; unroll_steps = 2"
        ),
        "{stderr}"
    );
    let written = dir.path().join("runs/u/analysis/epoch-0001/analysis.json");
    let analysis = json(&std::fs::read_to_string(written).unwrap());
    assert_eq!(analysis["spec"]["unroll_bn"], "batch");
    let listing = ok(&stepwise(
        dir.path(),
        &["figures", "--run", "runs/u", "--out", "figs"],
    ));
    let svg = listed_svg(dir.path(), &listing, "fig7_unrolling_");
    assert!(svg.contains("Fig. 7; the block on batch statistics"));
    // The fourth panel: the selected α's loss change per step against its first order.
    let alpha = analysis["selected_alpha"].as_f64().unwrap();
    let panel = format!("train-loss change per step at α = {alpha} (ours; the block on batch");
    assert!(svg.contains(&panel), "{panel}");
}

#[test]
fn analyze_a_run_writes_every_epoch_and_a_combined_table() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path());
    let mut args = vec!["train", "--epochs", "2", "--out", "runs/c", "--json"];
    args.extend(TINY);
    ok(&stepwise(dir.path(), &args));
    let out = json(&ok(&stepwise(
        dir.path(),
        &[
            "analyze",
            "--run",
            "runs/c",
            "--max-examples",
            "12",
            "--eval-batch",
            "6",
            "--unroll-steps",
            "2",
            "--json",
        ],
    )));
    let analyses = out.as_array().unwrap();
    assert_eq!(analyses.len(), 2);
    assert_eq!(analyses[1]["epoch"], 2);
    assert_eq!(analyses[0]["examples"][0]["examples"], 12);
    for epoch in ["epoch-0001", "epoch-0002"] {
        let d = dir.path().join("runs/c/analysis").join(epoch);
        let text = std::fs::read_to_string(d.join("analysis.json")).unwrap();
        assert!(json(&text)["records"].as_array().unwrap().len() > 10);
        assert!(d.join("analysis.csv").exists());
    }
    let table = std::fs::read_to_string(dir.path().join("runs/c/analysis/analysis.csv")).unwrap();
    assert!(table.starts_with("name,split,epoch,block,"));
    assert!(table
        .lines()
        .any(|l| l.starts_with("cosine,test,2,s0.b0,0,identity")));
    // Two analysed epochs: the figures follow the blocks over training.
    let listing = ok(&stepwise(
        dir.path(),
        &["figures", "--run", "runs/c", "--out", "figs"],
    ));
    let svg = listed_svg(dir.path(), &listing, "blocks_over_training_");
    assert!(svg.contains("cosine loss per block over training"));
    // Beside the figures, the numbers of their blocks: the latest analysis (epoch 2), one
    // run of one seed.
    assert!(listing.lines().any(|l| l == "figs/blocks.csv"), "{listing}");
    let blocks = std::fs::read_to_string(dir.path().join("figs/blocks.csv")).unwrap();
    let first = blocks
        .lines()
        .find(|l| l.starts_with("resnet-8,2,cosine,test,s0.b0,0,identity,1,"))
        .unwrap_or_else(|| panic!("{blocks}"));
    let epoch2 = table
        .lines()
        .find(|l| l.starts_with("cosine,test,2,s0.b0,0,identity,,,,mean,"))
        .unwrap_or_else(|| panic!("{table}"));
    let value = |line: &str, column: usize| line.split(',').nth(column).unwrap().to_string();
    assert_eq!(value(first, 8), value(epoch2, 10), "{blocks}");
    // Another seed, analysed only at epoch 1: a seed of the same configuration, left out of
    // the blocks (and figures) of epoch 2 until it is analysed there.
    let mut args = vec!["train", "--epochs", "2", "--out", "runs/d", "--seed", "1"];
    args.extend(TINY);
    ok(&stepwise(dir.path(), &args));
    let epoch1 = "runs/d/checkpoints/epoch-0001.safetensors";
    let analyse = [
        "analyze",
        "--checkpoint",
        epoch1,
        "--metrics",
        "cosine",
        "--max-examples",
        "12",
    ];
    ok(&stepwise(dir.path(), &analyse));
    let seeds = [
        "figures", "--run", "runs/c", "--run", "runs/d", "--out", "seeds",
    ];
    let drawn = stepwise(dir.path(), &seeds);
    ok(&drawn);
    let said = String::from_utf8_lossy(&drawn.stderr);
    assert!(
        said.contains(
            "runs/d: left out of resnet-8's block-wise figures, claims and blocks.csv: \
             analysed only up to epoch 1, behind another seed's epoch 2"
        ),
        "{said}"
    );
    let blocks = std::fs::read_to_string(dir.path().join("seeds/blocks.csv")).unwrap();
    let pooled = blocks
        .lines()
        .find(|l| l.starts_with("resnet-8,2,cosine,test,s0.b0,0,identity,"))
        .unwrap_or_else(|| panic!("{blocks}"));
    assert_eq!(value(pooled, 7), "1", "one seed at epoch 2: {blocks}");
    // Epoch 2 analysed again with the skip gradient: epoch 1's full-gradient cosines are
    // another quantity, so there is no history left to draw.
    ok(&stepwise(
        dir.path(),
        &[
            "analyze",
            "--checkpoint",
            "runs/c/checkpoints/epoch-0002.safetensors",
            "--metrics",
            "cosine",
            "--gradient",
            "skip",
            "--max-examples",
            "12",
            "--eval-batch",
            "6",
        ],
    ));
    let listing = ok(&stepwise(
        dir.path(),
        &["figures", "--run", "runs/c", "--out", "figs-skip"],
    ));
    assert!(!listing.contains("blocks_over_training_"), "{listing}");
    // The other seed analysed at epoch 2 too, with the full gradient: one seed each way, the
    // first listed decides, and the other is left out as measuring another cosine.
    ok(&stepwise(
        dir.path(),
        &[
            "analyze",
            "--checkpoint",
            "runs/d/checkpoints/epoch-0002.safetensors",
            "--metrics",
            "cosine",
            "--max-examples",
            "12",
        ],
    ));
    let seeds = [
        "figures",
        "--run",
        "runs/c",
        "--run",
        "runs/d",
        "--out",
        "seeds-skip",
    ];
    let drawn = stepwise(dir.path(), &seeds);
    let listing = ok(&drawn);
    let said = String::from_utf8_lossy(&drawn.stderr);
    assert!(
        said.contains("runs/d: left out of resnet-8's block-wise figures, claims and blocks.csv: analysed with other settings"),
        "{said}"
    );
    // Nor are its full-gradient cosines of epochs 1 and 2 drawn over training beside the
    // skip seed's one epoch.
    assert!(!listing.contains("blocks_over_training_"), "{listing}");
    let blocks = std::fs::read_to_string(dir.path().join("seeds-skip/blocks.csv")).unwrap();
    let pooled = blocks
        .lines()
        .find(|l| l.starts_with("resnet-8,2,cosine,test,s0.b0,0,identity,"))
        .unwrap_or_else(|| panic!("{blocks}"));
    assert_eq!(value(pooled, 7), "1", "the skip seed alone: {blocks}");
    let err = failed(&stepwise(
        dir.path(),
        &["analyze", "--run", "runs/c", "--metrics", "cosin"],
    ));
    assert!(err.contains("\"cosin\" is not one of cosine, l2"), "{err}");
    let err = failed(&stepwise(
        dir.path(),
        &["analyze", "--run", "runs/c", "--alphas", "20"],
    ));
    assert!(
        err.contains("invalid analysis: alphas: 20 is out of range"),
        "{err}"
    );
}

#[test]
fn the_smoke_experiment_trains_analyses_draws_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    // Its shapes10 under another directory name: the analyses must find it there.
    synth_into(dir.path(), "data/tiny10");
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/smoke/smoke.toml");
    let smoke = std::fs::read_to_string(smoke).unwrap();
    std::fs::write(
        dir.path().join("smoke.toml"),
        smoke.replace("dataset = \"shapes10\"", "dataset = \"tiny10\""),
    )
    .unwrap();
    let spec = "smoke.toml";
    ok(&stepwise(dir.path(), &["run", spec, "--out", "exp"]));
    assert!(!dir.path().join("data/shapes10").exists());
    let out = dir.path().join("exp");
    // Both epochs analysed (`analysis_checkpoints`), their checkpoints kept from pruning.
    for run in ["resnet-8-seed0", "single-narrow-seed0"] {
        for epoch in ["epoch-0001", "epoch-0002"] {
            let analysis = out
                .join("runs")
                .join(run)
                .join(format!("analysis/{epoch}/analysis.json"));
            assert!(analysis.exists(), "{}", analysis.display());
        }
    }
    for name in [
        "curves",
        "fig2_cosine",
        "fig3_l2_ratio",
        "fig4_drop",
        "fig5_intermediate_single-narrow",
        "blocks_over_training_resnet-8",
    ] {
        for ext in ["svg", "png"] {
            let f = out.join("figures").join(format!("{name}.{ext}"));
            assert!(
                std::fs::metadata(&f).unwrap().len() > 1000,
                "{}",
                f.display()
            );
        }
    }
    let svg = std::fs::read_to_string(out.join("figures/fig2_cosine.svg")).unwrap();
    assert!(
        svg.contains("single-narrow (test)"),
        "the legend names the configuration"
    );
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 3, "{summary}");
    let blocks = std::fs::read_to_string(out.join("blocks.csv")).unwrap();
    for configuration in ["resnet-8", "single-narrow"] {
        let cosine = format!("\n{configuration},2,cosine,test,s0.b0,0,identity,1,");
        assert!(blocks.contains(&cosine), "{blocks}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("[blocks.csv](blocks.csv)"), "{report}");
    assert!(report.contains("| resnet-8 | 5250 |"), "{report}");
    assert!(
        report.contains("fewer epochs than the paper (epochs of the paper's): resnet-8 2 of 300"),
        "{report}"
    );
    assert!(report.contains("| C1 | single-narrow |"), "{report}");
    assert!(report.contains("![figures/fig2_cosine.svg](figures/fig2_cosine.svg)"));
    // A second invocation finds the runs finished and only redraws.
    let again = stepwise(dir.path(), &["run", spec, "--out", "exp"]);
    ok(&again);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(stderr.matches("finished earlier").count(), 2, "{stderr}");
    // A damaged final checkpoint is passed over: the run trains on from the one before and
    // writes the same weights again.
    let last = out.join("runs/resnet-8-seed0/checkpoints/epoch-0002.safetensors");
    let tensors_sha256 = |path: &Path| {
        let checkpoint = resnet::checkpoint::read(path).unwrap();
        checkpoint.metadata[resnet::checkpoint::TENSORS_SHA256_KEY].clone()
    };
    let trained = tensors_sha256(&last);
    let mut bytes = std::fs::read(&last).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&last, bytes).unwrap();
    let healed = stepwise(dir.path(), &["run", spec, "--out", "exp"]);
    ok(&healed);
    let stderr = String::from_utf8_lossy(&healed.stderr);
    assert!(
        stderr.contains("passed over for resuming") && stderr.contains("set aside as"),
        "{stderr}"
    );
    assert!(out
        .join("runs/resnet-8-seed0/checkpoints/epoch-0002.safetensors.damaged")
        .exists());
    assert_eq!(stderr.matches("finished earlier").count(), 1, "{stderr}");
    assert_eq!(tensors_sha256(&last), trained);
    // The same output directory with a changed experiment is refused, not mixed.
    let changed = std::fs::read_to_string(dir.path().join(spec))
        .unwrap()
        .replace("epochs = 2", "epochs = 3");
    std::fs::write(dir.path().join("changed.toml"), changed).unwrap();
    let err = failed(&stepwise(
        dir.path(),
        &["run", "changed.toml", "--out", "exp"],
    ));
    assert!(err.contains("different spec"), "{err}");
}

/// Sends `child` `signal` (`INT`, `TERM`) once `ready` holds (within two minutes) and waits
/// for it to exit with 130; its stderr.
#[cfg(unix)]
fn interrupted_when(child: std::process::Child, signal: &str, ready: impl Fn() -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        assert!(Instant::now() < deadline, "not ready in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    stderr
}

#[cfg(unix)]
#[test]
fn ctrl_c_checkpoints_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path());
    let mut args = vec!["train", "--epochs", "500", "--out", "runs/b"];
    args.extend(TINY);
    let child = Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args(&args)
        .current_dir(dir.path())
        .env("STEPWISE_DATA_DIR", dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = dir.path().join("runs/b/metrics.jsonl");
    // Once an epoch finished.
    let stderr = interrupted_when(child, "INT", || {
        std::fs::read_to_string(&metrics).is_ok_and(|m| !m.is_empty())
    });
    let checkpoint = stderr
        .lines()
        .find_map(|l| l.split("resume with: stepwise train --resume ").nth(1))
        .unwrap_or_else(|| panic!("no resume hint in: {stderr}"))
        .trim()
        .to_string();
    assert!(dir.path().join(&checkpoint).exists(), "{checkpoint}");
    // The signal lands after however many tiny epochs the machine ran by then (the checkpoint
    // may be mid-epoch): resume for two more than the checkpoint's completed epochs.
    let saved: u32 = checkpoint
        .rsplit_once("epoch-")
        .and_then(|(_, name)| name.split(['-', '.']).next()?.parse().ok())
        .unwrap_or_else(|| panic!("no epoch in {checkpoint}"));
    let epochs = (saved + 2).to_string();
    let done = json(&ok(&stepwise(
        dir.path(),
        &[
            "train",
            "--resume",
            &checkpoint,
            "--epochs",
            &epochs,
            "--json",
        ],
    )));
    assert_eq!(done["outcome"], "finished");
    assert_eq!(done["epochs_completed"], saved + 2);
}

/// SIGTERM (a batch system's time limit, as Ctrl-C does) during an experiment's analysis ends
/// it at the next batch, writing nothing, where it would otherwise run for half a minute.
#[cfg(unix)]
#[test]
fn sigterm_stops_an_experiments_analysis_as_ctrl_c_does() {
    let dir = tempfile::tempdir().unwrap();
    ok(&stepwise(
        dir.path(),
        &[
            "data",
            "synth",
            "--out",
            "data/shapes10",
            "--train",
            "48",
            "--test",
            "10000",
        ],
    ));
    std::fs::write(
        dir.path().join("slow.toml"),
        "name = \"slow\"\nseeds = [0]\n[data]\ndataset = \"shapes10\"\n\
         [train]\nepochs = 1\nbatch_size = 16\n\
         [analysis]\nmax_examples = 10000\neval_batch = 1\nsplits = [\"test\"]\n\
         [[configs]]\nmodel = { arch = \"resnet\", depth = 8, width = 4 }\n",
    )
    .unwrap();
    let child = command(dir.path())
        .args(["run", "slow.toml", "--out", "exp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = dir.path().join("exp/runs/resnet-8-seed0");
    // Once training is done (the analysis starts right after).
    let stderr = interrupted_when(child, "TERM", || {
        run.join("checkpoints/epoch-0001.safetensors").exists()
    });
    assert!(
        stderr.contains("stopped; run the same command again to continue"),
        "{stderr}"
    );
    assert!(!run.join("analysis").exists(), "{stderr}");
}

/// `deploy/slurm/stepwise-run.sbatch`, run as Slurm runs a batch script (it becomes
/// `stepwise run` itself, which a time limit's SIGTERM stops as above): an experiment to its
/// report; without its spec it starts nothing and says what is missing.
#[test]
fn the_slurm_run_script_runs_an_experiment_to_its_report() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path());
    std::fs::write(
        dir.path().join("tiny.toml"),
        "name = \"tiny\"\nseeds = [0]\n[data]\ndataset = \"shapes10\"\n\
         [train]\nepochs = 1\nbatch_size = 16\n[analysis]\nmax_examples = 20\n\
         [[configs]]\nmodel = { arch = \"resnet\", depth = 8, width = 4 }\n",
    )
    .unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/slurm/stepwise-run.sbatch");
    let job = |spec: Option<&str>| {
        let mut job = Command::new("bash");
        job.arg(&script)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("OUT", "exp")
            .env("STEPWISE_BIN", env!("CARGO_BIN_EXE_stepwise"))
            .env("STEPWISE_DEVICE", "cpu")
            .env("STEPWISE_DATA_DIR", dir.path().join("data"));
        if let Some(spec) = spec {
            job.env("SPEC", spec);
        }
        job.output().unwrap()
    };
    ok(&job(Some("tiny.toml")));
    let report = std::fs::read_to_string(dir.path().join("exp/report.md")).unwrap();
    assert!(report.starts_with("# Experiment `tiny`"), "{report}");
    assert!(report.contains("| C1 | resnet-8 |"), "{report}");
    let err = failed(&job(None));
    assert!(err.contains("SPEC: the experiment spec file"), "{err}");
}

/// `analyze --run` keeps the epochs analysed before with the same settings (a stopped one
/// continues), and analyses again those made with others.
#[test]
fn analyze_run_keeps_the_epochs_analysed_with_the_same_settings() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path());
    let mut args = vec!["train", "--epochs", "2", "--out", "runs/k"];
    args.extend(TINY);
    ok(&stepwise(dir.path(), &args));
    let analyse = |examples: &str| {
        let out = stepwise(
            dir.path(),
            &[
                "analyze",
                "--run",
                "runs/k",
                "--metrics",
                "cosine",
                "--max-examples",
                examples,
            ],
        );
        ok(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let kept = "analysed earlier with these settings, kept";
    assert!(!analyse("12").contains(kept));
    let all = dir.path().join("runs/k/analysis/analysis.csv");
    let first = std::fs::read_to_string(&all).unwrap();
    let again = analyse("12");
    assert_eq!(again.matches(kept).count(), 2, "{again}");
    assert_eq!(std::fs::read_to_string(&all).unwrap(), first);
    let other = analyse("10");
    assert!(!other.contains(kept), "{other}");
    assert_ne!(std::fs::read_to_string(&all).unwrap(), first);
}

#[test]
fn a_failed_download_reports_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let err = failed(&stepwise(
        dir.path(),
        &["data", "fetch", "cifar10", "--out", "d", "--url", &url],
    ));
    assert!(err.contains(&url), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("d"))
        .map(|r| r.count())
        .into_iter()
        .collect();
    assert!(left.is_empty() || left == [0], "{left:?}");
}

/// `stepwise bench train --profile --json` of a tiny model with `extra` flags, optionally on
/// candle's own ops.
fn bench_train_profile(reference_ops: bool, extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let mut command = command(dir.path());
    if reference_ops {
        command.env("STEPWISE_REFERENCE_OPS", "1");
    }
    let args = [
        "bench",
        "train",
        "--arch",
        "resnet",
        "--width",
        "4",
        "--blocks",
        "1",
        "--batch",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--profile",
        "--json",
    ];
    json(&ok(&command.args(args).args(extra).output().unwrap()))
}

#[test]
fn bench_train_profiles_the_cpu_kernels() {
    let r = bench_train_profile(false, &[]);
    assert_eq!(r["memory_format"], "nchw", "{r}");
    assert_eq!(r["device"], "cpu", "{r}");
    let kernels = r["kernels"].as_array().unwrap();
    let calls = |name: &str| {
        kernels.iter().find(|k| k["kernel"] == name).unwrap()["calls"]
            .as_u64()
            .unwrap()
    };
    // One block per stage: stem + 3·2 convolutions + 2 projections, each run forward once
    // per step; the stem's input gradient is not needed.
    assert_eq!(calls("conv_forward"), 9, "{r}");
    assert_eq!(calls("conv_backward_filter"), 9, "{r}");
    assert_eq!(calls("conv_backward_data"), 8, "{r}");
    assert_eq!(calls("sgd_update"), 1, "{r}");
    assert!(kernels.iter().any(|k| k["kernel"] == "other"));
    let total: f64 = kernels.iter().map(|k| k["ms"].as_f64().unwrap()).sum();
    let mean_step = r["ms_per_step"].as_f64().unwrap();
    assert!(total > 0.0 && total < 3.0 * mean_step, "{r}");
}

#[test]
fn reference_ops_from_the_environment_bypass_the_kernels() {
    let r = bench_train_profile(true, &[]);
    let kernel_calls: u64 = r["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["calls"].as_u64().unwrap())
        .sum();
    assert_eq!(kernel_calls, 0, "candle's ops ran instead: {r}");
}

/// Channels-last (bf16's format on CUDA) asked for on the CPU: every layer serves it through
/// its NCHW kernels, the same calls as in NCHW.
#[test]
fn bench_train_in_channels_last_runs_the_nchw_kernels_on_the_cpu() {
    let r = bench_train_profile(false, &["--memory-format", "channels-last"]);
    assert_eq!(r["memory_format"], "channels-last", "{r}");
    let kernels = r["kernels"].as_array().unwrap();
    let conv = kernels.iter().find(|k| k["kernel"] == "conv_forward");
    assert_eq!(conv.unwrap()["calls"], 9, "{r}");
}

/// `stepwise bench PASS` (`eval` or `analyze`) of a tiny model on 6 examples in batches of
/// 4, with `extra` flags, as JSON: the output and its value.
fn bench_tiny_pass(pass: &str, extra: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let tiny = ["--arch", "resnet", "--width", "4", "--blocks", "1"];
    let sizes = ["--examples", "6", "--batch", "4", "--json"];
    let args: Vec<&str> = ["bench", pass]
        .into_iter()
        .chain(tiny)
        .chain(sizes)
        .chain(extra.iter().copied())
        .collect();
    let out = ok(&stepwise(dir.path(), &args));
    let value = json(&out);
    (out, value)
}

#[test]
fn bench_eval_profiles_the_kernels_of_a_pass() {
    let (_, r) = bench_tiny_pass("eval", &["--repeats", "2", "--profile"]);
    let kernels = r["kernels"].as_array().unwrap();
    let kernel = |name: &str| kernels.iter().find(|k| k["kernel"] == name).unwrap();
    // Two batches of stem + 3·2 convolutions + 2 projections, nothing backward.
    assert_eq!(kernel("conv_forward")["calls"], 18, "{r}");
    assert_eq!(kernel("conv_backward_data")["calls"], 0, "{r}");
    let total: f64 = kernels.iter().map(|k| k["ms"].as_f64().unwrap()).sum();
    let pass_ms = 1e3 * r["seconds"].as_f64().unwrap();
    assert!(kernel("conv_forward")["ms"].as_f64().unwrap() > 0.0, "{r}");
    assert!(total > 0.0 && total < 3.0 * pass_ms, "{r}");
}

#[test]
fn bench_analyze_times_the_block_pass_or_the_metrics_it_is_given() {
    let (out, r) = bench_tiny_pass("analyze", &["--repeats", "1"]);
    assert_eq!(r["examples"], 6, "{out}");
    assert_eq!(r["batch"], 4);
    assert_eq!(r["depth"], 8);
    let (seconds, rate) = (
        r["seconds"].as_f64().unwrap(),
        r["examples_per_second"].as_f64().unwrap(),
    );
    assert!(
        seconds > 0.0 && (rate * seconds - 6.0).abs() < 1e-6,
        "{out}"
    );
    assert_eq!(r["metrics"], serde_json::json!(["cosine", "l2", "drop"]));
    assert!(r["graph_mib"].as_f64().unwrap() > 0.0, "{out}");
    // The unrolling on its own: no probed pass, so no graph of one.
    let (out, r) = bench_tiny_pass("analyze", &["--repeats", "1", "--metrics", "unroll"]);
    assert_eq!(r["metrics"], serde_json::json!(["unroll"]), "{out}");
    assert!(r["seconds"].as_f64().unwrap() > 0.0, "{out}");
    assert!(r.get("graph_mib").is_none(), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let err = failed(&stepwise(
        dir.path(),
        &["bench", "analyze", "--arch", "resnet", "--examples", "0"],
    ));
    assert!(err.contains("--examples"), "{err}");
}

#[test]
fn weights_saved_by_pytorch_import_as_a_run_that_analyses() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path());
    // What the import expects: the model's state dict, by PyTorch's names.
    let summary = json(&ok(&stepwise(
        dir.path(),
        &[
            "model", "summary", "--arch", "resnet", "--depth", "8", "--width", "2", "--json",
        ],
    )));
    let tensors = summary["tensors"].as_array().unwrap();
    assert_eq!(tensors[0]["name"], "stem.weight");
    assert_eq!(tensors[0]["shape"], serde_json::json!([2, 3, 3, 3]));
    assert!(
        tensors
            .iter()
            .any(|t| t["name"] == "head.bn.num_batches_tracked"
                && t["shape"] == serde_json::json!([]))
    );

    // The resnet crate's fixture: a ResNet-8 of width 2 saved by `torch.save`.
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../resnet/tests/fixtures/resnet8-w2.pt")
        .display()
        .to_string();
    let import = |out: &str, depth: &str, extra: &[&str]| {
        let mut args = vec!["model", "import", "--weights", &weights, "--out", out];
        args.extend(["--arch", "resnet", "--depth", depth, "--width", "2"]);
        args.extend(extra);
        stepwise(dir.path(), &args)
    };
    let done = json(&ok(&import(
        "runs/torch",
        "8",
        &["--epochs", "3", "--json"],
    )));
    let accuracy = done["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{done}");
    assert_eq!(done["imported"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(done["spec"]["data"]["identity"]["name"], "shapes10");
    let run = dir.path().join("runs/torch");
    assert!(run.join("checkpoints/epoch-0003.safetensors").exists());
    let spec = std::fs::read_to_string(run.join("spec.toml")).unwrap();
    assert!(spec.contains("epochs = 3"), "{spec}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains(r#""name":"accuracy","split":"test","epoch":3"#),
        "{metrics}"
    );

    // Evaluated and analysed as a run of stepwise's own.
    let eval = json(&ok(&stepwise(
        dir.path(),
        &[
            "eval",
            "--checkpoint",
            "runs/torch/checkpoints/epoch-0003.safetensors",
            "--json",
        ],
    )));
    assert_eq!(eval["accuracy"].as_f64(), Some(accuracy));
    ok(&stepwise(
        dir.path(),
        &[
            "analyze",
            "--run",
            "runs/torch",
            "--metrics",
            "cosine,l2",
            "--max-examples",
            "12",
        ],
    ));
    assert!(run.join("analysis/epoch-0003/analysis.json").exists());

    // Refusals leave nothing behind and touch no run.
    let err = failed(&import("runs/deeper", "14", &[]));
    assert!(
        err.contains("resnet8-w2.pt: not the tensors of the model"),
        "{err}"
    );
    assert!(
        err.contains("missing 42 (stages.0.blocks.1.bn1.bias"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        ["torch"],
        "nothing but the first run, no staging directory"
    );
    let err = failed(&import("runs/torch", "8", &[]));
    assert!(err.contains("already holds a run"), "{err}");
    std::fs::create_dir_all(dir.path().join("notes")).unwrap();
    std::fs::write(dir.path().join("notes/todo.txt"), "keep").unwrap();
    let err = failed(&import("notes", "8", &[]));
    assert!(err.contains("notes is not empty"), "{err}");
    assert!(dir.path().join("notes/todo.txt").exists());

    // As a run of an experiment: `stepwise run` takes it as finished, analyses and reports it.
    let experiment = r#"
name = "imported"
seeds = [0]

[data]
dataset = "shapes10"

[train]
epochs = 1

[analysis]
max_examples = 12
unroll_steps = 2
alphas = [1.0, 0.1]

[[configs]]
model = { arch = "resnet", depth = 8, width = 2 }
"#;
    std::fs::write(dir.path().join("imported.toml"), experiment).unwrap();
    let into_experiment = |extra: &[&str]| {
        let mut args = vec!["model", "import", "--weights", &weights];
        args.extend(["--experiment", "imported.toml", "--out", "exp"]);
        args.extend(extra);
        stepwise(dir.path(), &args)
    };
    let err = failed(&into_experiment(&["--seed", "4"]));
    assert!(
        err.contains("no run of configuration \"resnet-8\" with seed 4"),
        "{err}"
    );
    let err = failed(&into_experiment(&["--width", "4"]));
    assert!(err.contains("the model is the configuration's"), "{err}");
    ok(&into_experiment(&[]));
    let out = command(dir.path())
        .args(["run", "imported.toml", "--out", "exp"])
        .output()
        .unwrap();
    ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("finished earlier"), "{log}");
    let report = std::fs::read_to_string(dir.path().join("exp/report.md")).unwrap();
    assert!(
        report.contains("weights imported (`stepwise model import`): resnet-8 seed 0 from"),
        "{report}"
    );
    let row = "| resnet-8 | 1438 | — | ";
    assert!(report.contains(row), "{report}");
    assert!(dir
        .path()
        .join("exp/runs/resnet-8-seed0/analysis/epoch-0001/analysis.json")
        .exists());
}
