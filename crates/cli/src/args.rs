//! Command-line arguments. Every model and training flag maps onto one field of the run
//! spec (domain::RunSpec); ranges are checked by the spec's validation, which names the field.

use analysis::bench::BLOCK_PASS;
use clap::{Args, Parser, Subcommand, ValueEnum};
use domain::{
    service::JobState, AnalysisKind, AnalysisSpec, Arch, BlockId, DeviceSpec, GradientKind, Group,
    MetricName, ModelSpec, Precision, RecordFilter, SchedulePreset, Sharing, Split, Stat, UnrollBn,
};
use resnet::ops::MemoryFormat;
use std::path::PathBuf;

/// The heading of the flags every command takes, apart from each command's own.
const GLOBAL: &str = "Global options";

#[derive(Parser)]
#[command(
    name = "stepwise",
    version,
    about = "Block-wise study of residual networks (Jastrzębski et al., ICLR 2018)"
)]
pub struct Cli {
    /// Where datasets are looked up by name (shapes10 is generated here on first use).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "STEPWISE_DATA_DIR",
        default_value = "data"
    )]
    pub data_dir: PathBuf,
    /// The stepwise API, for the client commands (submit, list, status, watch, …).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "STEPWISE_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub api_url: String,
    /// Bearer token of the API's users.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "STEPWISE_API_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// GPU memory this process may use (e.g. `20GiB`, `12000MiB`; default: the device's
    /// total): a batch estimated to need more is refused before work starts.
    #[arg(long, global = true, help_heading = GLOBAL, env = "STEPWISE_GPU_MEMORY")]
    pub gpu_memory: Option<bytesize::ByteSize>,
    /// Host memory this process may use when it computes on the CPU (default: what is
    /// available at its start, within a container's limit): a batch estimated to need more
    /// is refused before work starts.
    #[arg(long, global = true, help_heading = GLOBAL, env = "STEPWISE_CPU_MEMORY")]
    pub cpu_memory: Option<bytesize::ByteSize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Inspect a model (parameter counts, blocks, tensors), or import weights trained elsewhere.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Create, download or import datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train a model (or resume a run) and write checkpoints and metrics.
    Train(Box<TrainArgs>),
    /// Loss and accuracy of a checkpoint on a split.
    Eval(EvalArgs),
    /// Block-wise metrics of a checkpoint, or of every checkpoint of a run.
    Analyze(Box<AnalyzeArgs>),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// An experiment end to end: train every configuration × seed (resuming where a
    /// previous invocation stopped), analyse, draw the figures, write report.md.
    Run(RunArgs),
    /// The paper's figures as SVG and PNG: of an experiment or a run on the API, of several
    /// together, or from local run directories. Runs of one configuration are drawn as
    /// mean ± standard deviation over seeds (runs whose specs differ only in the seed;
    /// other configurations of one model are labelled by their runs' names, a local run's
    /// being its directory's). Beside them blocks.csv, and of one experiment on the API its
    /// report.md (Table 1, the claims, the figures), as `run` writes it.
    Figures {
        /// Experiments or runs on the API, by id or name: one is drawn as its page draws
        /// it; several together, every run of them (an experiment's all), runs of one
        /// configuration as seeds (as local runs are).
        #[arg(required_unless_present = "run", conflicts_with = "run")]
        targets: Vec<String>,
        /// A local run directory (repeat for several runs).
        #[arg(long)]
        run: Vec<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = "figures")]
        out: PathBuf,
    },
    /// Submit a run or an experiment (a TOML spec file) to the API.
    Submit(SubmitArgs),
    /// List runs on the API, newest first: id, name (an unnamed run's label in parentheses;
    /// such a run goes by its id), dataset, state, progress, best test accuracy and the
    /// analyses still pending.
    List(ListArgs),
    /// A run's state on the API.
    Status {
        /// The run: its id or its name.
        run: String,
        /// Print the run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a run on the API, or every run of an experiment, with progress bars until
    /// training and analyses end; fails unless every run succeeded.
    Watch {
        /// The run or the experiment: its id or its name.
        run: String,
        /// Seconds between polls.
        #[arg(long, default_value_t = 1.0)]
        every: f64,
    },
    /// A run's per-epoch metric series from the API.
    Metrics {
        /// The run: its id or its name.
        run: String,
        /// loss, accuracy, intermediate_accuracy, grad_norm_ratio, …
        #[arg(long)]
        name: Option<String>,
        /// train or test
        #[arg(long)]
        split: Option<String>,
        /// CSV instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// Cancel a run on the API, or every queued or running run of an experiment (a running
    /// one checkpoints and stops at its next step).
    Cancel {
        /// The run or the experiment: its id or its name.
        run: String,
    },
    /// Queue a failed or cancelled run again, or every such run of an experiment; each
    /// resumes from its latest checkpoint.
    Retry {
        /// The run or the experiment: its id or its name.
        run: String,
    },
    /// Delete a run on the API that is not running, with its checkpoints and results; or
    /// an experiment none of whose runs is running, with all its runs.
    Delete {
        /// The run or the experiment: its id or its name.
        run: String,
    },
    /// A run's log on the API: what its workers reported, oldest first.
    Logs {
        /// The run: its id or its name.
        run: String,
        /// The newest lines to print, 1 to 10,000.
        #[arg(long, default_value_t = 200)]
        limit: u32,
    },
    /// The workers the API has seen in the last week: the jobs they take, their memory
    /// budget, when they last claimed or heartbeat, and the job each holds and how far it is.
    Workers {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Experiments on the API: list them, or show one's configurations over seeds and the
    /// paper's claims.
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// A run's block-wise analyses on the API: list them, read one, ask for another.
    #[command(subcommand)]
    Analysis(AnalysisCommand),
    /// A run's checkpoints on the API: list them, or download one.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Check a device: every op against the CPU kernels, then a short run that must learn.
    Selftest {
        /// `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ExperimentCommand {
    /// Experiments, newest first, with their runs by outcome.
    List {
        /// Experiments to list at most.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print the page of experiments as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One experiment: per configuration its runs and final test accuracy (mean ± sd over
    /// seeds), then paper.md's claims C1–C7 over its analysed runs.
    Show {
        /// The experiment: its id or its name.
        experiment: String,
        /// Also every block's mean cosine, ℓ2 ratio and accuracy with the block dropped, per
        /// configuration as mean ± sd over its seeds (the numbers behind Figs. 2–4; every
        /// metric and split: `stepwise figures`' blocks.csv).
        #[arg(long)]
        blocks: bool,
        /// Print the experiment and its claims (and, with --blocks, its block summaries) as
        /// JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AnalysisCommand {
    /// A run's analyses, oldest epoch first: id, checkpoint epoch, state, examples.
    List {
        /// The run: its id or its name.
        run: String,
        /// Print the analyses (without their records) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One analysis: per block of each analysed split the mean cosine, ℓ2 ratio and the
    /// accuracy with the block dropped, then its notes; or every record with --csv. With a
    /// filter flag (--name, --group, …), the records every given flag matches, as CSV (or
    /// JSON with --json).
    Show {
        /// The analysis's id.
        analysis: String,
        /// Every record (all metrics, statistics and splits) as CSV.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// Print the analysis with its records as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        filter: RecordFilterArgs,
    },
    /// Ask for an analysis of one of a run's epoch checkpoints; an analyzer computes it.
    Request(Box<AnalysisRequestArgs>),
}

/// Which of an analysis' records to show: each flag given must match.
#[derive(Args)]
pub struct RecordFilterArgs {
    /// Only this metric's records: cosine, l2_ratio, drop_accuracy, unroll_first_order, …
    #[arg(long)]
    pub name: Option<MetricName>,
    /// Only this split's records.
    #[arg(long, value_enum)]
    pub split: Option<SplitArg>,
    /// Only this block's records, such as s2.b1.
    #[arg(long)]
    pub block: Option<BlockId>,
    /// Only this group's records (of the margin at a path's start).
    #[arg(long, value_enum)]
    pub group: Option<GroupArg>,
    /// Only the records of this unrolling step size.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Only the records at this position along a path (0 = its start).
    #[arg(long)]
    pub step: Option<u32>,
    /// Only this summary's records.
    #[arg(long, value_enum)]
    pub stat: Option<StatArg>,
}

impl RecordFilterArgs {
    pub fn filter(&self) -> RecordFilter {
        RecordFilter {
            name: self.name,
            split: self.split.map(Into::into),
            block: self.block,
            group: self.group.map(Into::into),
            alpha: self.alpha,
            step: self.step,
            stat: self.stat.map(Into::into),
        }
    }
}

#[derive(Args)]
pub struct AnalysisRequestArgs {
    /// The run: its id or its name.
    pub run: String,
    /// The checkpoints after these epochs, comma-separated (default: the latest epoch
    /// checkpoint).
    #[arg(long, value_delimiter = ',', conflicts_with = "all_epochs")]
    pub epoch: Vec<u32>,
    /// Every epoch checkpoint still on disk: how the metrics evolve over training.
    #[arg(long)]
    pub all_epochs: bool,
    #[command(flatten)]
    pub analysis: AnalysisSpecArgs,
    /// Wait until the analyses end, then show each as `analysis show` does.
    #[arg(long)]
    pub wait: bool,
    /// Seconds between polls while waiting.
    #[arg(long, default_value_t = 1.0)]
    pub every: f64,
    /// Print the analyses as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum CheckpointCommand {
    /// A run's checkpoints, oldest first: epoch, batch within the epoch (0 at an epoch's
    /// end), size, whether the retention policy removed it.
    List {
        /// The run: its id or its name.
        run: String,
        /// Print the checkpoints as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a run's epoch checkpoint, checked against its registered sha256 before it
    /// is renamed into place; `stepwise eval` and `analyze` read it.
    Download {
        /// The run: its id or its name.
        run: String,
        /// The checkpoint after this epoch (default: the latest epoch checkpoint).
        #[arg(long)]
        epoch: Option<u32>,
        /// The file to write (default: the checkpoint's file name in the current directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Trainable and Keras-style parameter counts and the list of blocks.
    Summary {
        #[command(flatten)]
        model: ModelArgs,
        /// Also list the tensors of its state dict: names (PyTorch's) and shapes.
        #[arg(long)]
        tensors: bool,
        /// Print the summary as JSON (the tensors always included).
        #[arg(long)]
        json: bool,
    },
    /// Make weights trained elsewhere a run directory that `eval`, `analyze` and `figures`
    /// take: a checkpoint after the spec's last epoch, with the weights' test metrics. The
    /// weights are a state dict under stepwise's tensor names (`model summary --tensors`),
    /// as safetensors or as a `torch.save` file.
    Import(Box<ImportArgs>),
}

#[derive(Args)]
pub struct ImportArgs {
    /// The weights: a safetensors file, or a `torch.save` file of a state dict.
    #[arg(long)]
    pub weights: PathBuf,
    /// A TOML run spec saying what the weights are: the model, the data they were trained
    /// on (with `data.normalization` where the inputs were not normalised by the train
    /// split's per-channel mean and std) and the recipe; flags override its fields.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Instead of a spec, a run of this experiment (TOML): the weights become that run in
    /// the experiment's output directory `--out` (`OUT/runs/<label>-seed<seed>`), where
    /// `stepwise run` then analyses and reports them as a finished run.
    #[arg(long, conflicts_with = "spec")]
    pub experiment: Option<PathBuf>,
    /// With --experiment: the configuration, by its label (default: the only one).
    #[arg(long, requires = "experiment")]
    pub config: Option<String>,
    /// With --experiment: the seed of the run (default: the experiment's first).
    #[arg(long, requires = "experiment")]
    pub seed: Option<u64>,
    /// Dataset name (looked up in the data directory) or a dataset directory (default: the
    /// spec's).
    #[arg(long)]
    pub data: Option<String>,
    /// Epochs the weights were trained for (default: the spec's).
    #[arg(long, conflicts_with = "experiment")]
    pub epochs: Option<u32>,
    #[command(flatten)]
    pub reading: WeightsReading,
    /// The run directory to create (new or empty): spec.toml, metrics.jsonl, checkpoints/;
    /// with --experiment, the experiment's output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Where to evaluate the weights: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where the state dict is in a weights file.
#[derive(Args)]
pub struct WeightsReading {
    /// In a `torch.save` file of a dict holding the state dict, its key (e.g. `state_dict`).
    #[arg(long, requires = "weights")]
    pub key: Option<String>,
    /// A prefix to strip from every tensor name (e.g. `module.` of `DataParallel`).
    #[arg(long, requires = "weights")]
    pub strip_prefix: Option<String>,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Generate the synthetic shapes10 dataset in the CIFAR-10 binary layout.
    Synth {
        /// Dataset directory to create.
        #[arg(long)]
        out: PathBuf,
        /// Training images.
        #[arg(long, default_value_t = 10_000)]
        train: u32,
        /// Test images.
        #[arg(long, default_value_t = 2_000)]
        test: u32,
        /// Seed of the generator: the same seed gives the same files.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print the dataset's identity as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download an official binary release, verify its size and MD5, unpack it.
    Fetch {
        /// The release to fetch.
        #[arg(value_enum)]
        dataset: FetchName,
        /// Default: `DATA_DIR/<dataset>`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// A mirror of the same archive (it must still match the published size and MD5).
        #[arg(long)]
        url: Option<String>,
    },
    /// The training batches a run sees: per batch, one JSON line with its learning rate, its
    /// examples (indices into the train split) in order, and each one's crop (top-left
    /// corner in the image padded by 4 pixels) and flip. Enough to train another
    /// implementation on exactly stepwise's batch stream.
    Batches {
        /// A run directory (its `spec.toml`, written when training starts).
        #[arg(
            long,
            required_unless_present = "checkpoint",
            conflicts_with = "checkpoint"
        )]
        run: Option<PathBuf>,
        /// A checkpoint of the run instead (its spec travels in it; a downloaded one will do).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Epochs (1-based, comma-separated; default: every epoch of the run).
        #[arg(long, value_delimiter = ',')]
        epochs: Vec<u32>,
    },
    /// Convert image folders (`train/<class>/*`, `test/<class>/*`; PNG or JPEG, 32×32).
    Import {
        /// Folder holding `train/<class>/` and `test/<class>/` image folders.
        #[arg(long)]
        from: PathBuf,
        /// Dataset directory to create.
        #[arg(long)]
        out: PathBuf,
        /// Dataset name recorded with every run (default: the --out folder's name).
        #[arg(long)]
        name: Option<String>,
        /// Print the dataset's identity as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FetchName {
    Cifar10,
    Cifar100,
}

impl FetchName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cifar10 => "cifar10",
            Self::Cifar100 => "cifar100",
        }
    }
}

/// Model flags; each overrides the same field of a spec file.
#[derive(Args, Clone, Default)]
pub struct ModelArgs {
    /// Architecture: `resnet` (depth 6n+2), or the paper's `single`, `avgpool` or `wide`.
    #[arg(long, value_enum)]
    pub arch: Option<ArchArg>,
    /// Depth 6n+2 (resnet).
    #[arg(long)]
    pub depth: Option<u32>,
    /// Classes of the head: 10 (CIFAR-10, shapes10) or 100 (CIFAR-100).
    #[arg(long)]
    pub classes: Option<u32>,
    /// Channels of the first stage (default: the paper's for the architecture).
    #[arg(long)]
    pub width: Option<u32>,
    /// Blocks per stage: one number for all stages, or a comma-separated list.
    #[arg(long, value_delimiter = ',')]
    pub blocks: Option<Vec<u32>>,
    /// Weight sharing between the blocks of a stage: `naive` shares convolutions and
    /// BatchNorm, `ubn` shares the convolutions and keeps a BatchNorm per block.
    #[arg(long, value_enum)]
    pub sharing: Option<SharingArg>,
    /// Unshared blocks at the start of every stage (with --sharing).
    #[arg(long)]
    pub unshared: Option<u32>,
    /// `f32`, `tf32` (f32 with TF32 tensor-core convolutions on CUDA; exactly f32 on the
    /// CPU) or `bf16`.
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
}

impl ModelArgs {
    /// Whether any model flag is given.
    pub fn any(&self) -> bool {
        self.arch.is_some()
            || self.depth.is_some()
            || self.classes.is_some()
            || self.width.is_some()
            || self.blocks.is_some()
            || self.sharing.is_some()
            || self.unshared.is_some()
            || self.dtype.is_some()
    }

    /// Applies the flags to `spec` (which may come from a spec file).
    pub fn apply(&self, spec: &mut ModelSpec) {
        if let Some(a) = self.arch {
            spec.arch = a.into();
        }
        if self.depth.is_some() {
            spec.depth = self.depth;
        }
        if let Some(c) = self.classes {
            spec.classes = c;
        }
        if self.width.is_some() {
            spec.width = self.width;
        }
        if self.blocks.is_some() {
            spec.blocks = self.blocks.clone();
        }
        if let Some(s) = self.sharing {
            spec.sharing = s.into();
        }
        if let Some(u) = self.unshared {
            spec.unshared_blocks = u;
        }
        if let Some(d) = self.dtype {
            spec.dtype = d.into();
        }
    }

    /// A model spec from the flags alone.
    pub fn to_spec(&self) -> anyhow::Result<ModelSpec> {
        let arch = self.arch.ok_or_else(|| {
            anyhow::anyhow!("--arch is required (resnet, single, avgpool or wide)")
        })?;
        let mut spec = ModelSpec::new(arch.into());
        self.apply(&mut spec);
        Ok(spec)
    }
}

macro_rules! value_enum {
    ($arg:ident => $domain:ident { $($variant:ident),* }) => {
        #[derive(Clone, Copy, ValueEnum)]
        pub enum $arg { $($variant),* }
        impl From<$arg> for $domain {
            fn from(a: $arg) -> Self {
                match a { $($arg::$variant => $domain::$variant),* }
            }
        }
    };
}

value_enum!(ArchArg => Arch { Resnet, Single, Avgpool, Wide });
value_enum!(SharingArg => Sharing { None, Naive, Ubn });
value_enum!(DtypeArg => Precision { F32, Tf32, Bf16 });
value_enum!(ScheduleArg => SchedulePreset { Paper, Scaled, Constant });
value_enum!(SplitArg => Split { Train, Test });
value_enum!(GroupArg => Group { All, Borderline, Correct, Misclassified });
value_enum!(StatArg => Stat { Mean, Median });
value_enum!(GradientArg => GradientKind { Full, Skip });
value_enum!(UnrollBnArg => UnrollBn { Running, Batch });
value_enum!(MemoryFormatArg => MemoryFormat { Nchw, ChannelsLast });

#[derive(Args)]
pub struct TrainArgs {
    /// A TOML run spec; flags override its fields.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Dataset name (looked up in the data directory) or a dataset directory.
    #[arg(long)]
    pub data: Option<String>,
    /// Epochs to train (default: the paper's for the architecture).
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Seed of the initialisation, the shuffling and the augmentation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Examples per step.
    #[arg(long)]
    pub batch: Option<u32>,
    /// Initial learning rate (presets scale their values by lr / 0.1).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning-rate schedule preset (custom schedules go in a spec file).
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Linear learning-rate warm-up from 0 over this many epochs.
    #[arg(long)]
    pub warmup_epochs: Option<u32>,
    /// SGD momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// L2 weight decay of the convolution and linear weights (`train.decay_on = "all"` in a
    /// spec file decays every parameter).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Turn off crop and flip augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// A name for the run, recorded in its spec.
    #[arg(long)]
    pub name: Option<String>,
    /// A tag recorded in the spec (repeat for several).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Run directory: checkpoints/, metrics.jsonl, spec.toml. Default: `runs/<arch><depth>-seed<seed>`,
    /// or the run directory of --resume.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from this checkpoint (its spec is used; --epochs may extend the run).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Print the spec this would train — spec file, flags and defaults resolved, with
    /// the model's parameter count, the learning rate per epoch and the peak memory
    /// estimated on --device — and exit.
    #[arg(long, conflicts_with = "resume")]
    pub print_spec: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Print a JSON summary on stdout and no progress bar.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The checkpoint to evaluate.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Dataset name or directory (default: the dataset the checkpoint was trained on).
    #[arg(long)]
    pub data: Option<String>,
    /// The split to evaluate.
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,
    /// Examples per forward pass; bounds memory.
    #[arg(long, default_value_t = 250)]
    pub batch: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Print loss and accuracy as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Training steps per second (forward, backward, SGD) on random data on the device.
    Train {
        #[command(flatten)]
        model: ModelArgs,
        /// Examples per step.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Untimed steps first (cuDNN's algorithm search, allocations, graph capture).
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Also time each kernel (convolution, BatchNorm+ReLU, SGD) within the timed steps;
        /// on CUDA by events on the stream around each (GPU time, no synchronisation).
        #[arg(long)]
        profile: bool,
        /// CUDA: time the trainer's graph steps — forward, backward and update captured
        /// once as a CUDA graph and replayed, the loss and hits read after each replay.
        #[arg(long)]
        cuda_graph: bool,
        /// The activations' memory format; by default training's: channels-last for bf16
        /// on CUDA, NCHW otherwise (channels-last elsewhere runs through NCHW copies).
        #[arg(long, value_enum)]
        memory_format: Option<MemoryFormatArg>,
        /// Print the measurement as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Examples per second of an analysis on random images through a fresh model: by default
    /// the per-block pass (cosine and ℓ2 ratio with the full gradient, block dropping).
    Analyze {
        #[command(flatten)]
        pass: PassBenchArgs,
        /// The metrics to compute, e.g. `unroll` (its default 20 steps of 5 step sizes).
        #[arg(long, value_delimiter = ',', default_values_t = BLOCK_PASS)]
        metrics: Vec<AnalysisKind>,
    },
    /// Examples per second of evaluation (loss and accuracy in inference mode; each batch's
    /// bytes copied to the device and normalised there, as in training's per-epoch
    /// evaluation) on random images.
    Eval(PassBenchArgs),
}

#[derive(Args)]
pub struct PassBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Examples per timed pass.
    #[arg(long, default_value_t = 1000)]
    pub examples: usize,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 250)]
    pub batch: usize,
    /// Timed repeats after one warm-up (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Time each kernel (on CUDA by events around each) and list them per pass.
    #[arg(long)]
    pub profile: bool,
    /// Print the measurement as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct AnalyzeArgs {
    /// One checkpoint.
    #[arg(long, required_unless_present = "run", conflicts_with = "run")]
    pub checkpoint: Option<PathBuf>,
    /// Every epoch checkpoint of a run directory, in order (those analysed before with the
    /// same settings kept).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Dataset name or directory (default: the one the model was trained on).
    #[arg(long)]
    pub data: Option<String>,
    #[command(flatten)]
    pub analysis: AnalysisSpecArgs,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Output directory (default: the run directory's analysis/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the analyses as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The flags of an analysis spec, shared by `analyze` and `analysis request`.
#[derive(Args)]
pub struct AnalysisSpecArgs {
    /// Analyses to run (default: all): cosine, l2, drop, intermediate, borderline, unroll,
    /// sharing, taylor.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Option<Vec<AnalysisKind>>,
    /// Splits to analyse, comma-separated.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = [SplitArg::Train, SplitArg::Test])]
    pub splits: Vec<SplitArg>,
    /// Examples per split (a fixed seeded subset).
    #[arg(long, default_value_t = AnalysisSpec::default().max_examples)]
    pub max_examples: u32,
    /// Examples per forward pass; bounds memory.
    #[arg(long, default_value_t = AnalysisSpec::default().eval_batch)]
    pub eval_batch: u32,
    /// Gradient of the cosine: of the full network, or of the network without the block.
    #[arg(long, value_enum, default_value_t = GradientArg::Full)]
    pub gradient: GradientArg,
    /// Blocks at the end of the network followed by the borderline analysis.
    #[arg(long, default_value_t = AnalysisSpec::default().window)]
    pub window: u32,
    /// Times the last block is applied again by the unrolling.
    #[arg(long, default_value_t = AnalysisSpec::default().unroll_steps)]
    pub unroll_steps: u32,
    /// Step sizes α of the unrolling (h ← h + α·F(h)), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = AnalysisSpec::default().alphas)]
    pub alphas: Vec<f64>,
    /// BatchNorm statistics of the re-applied block: the running ones (inference mode, as
    /// every other metric), or each batch's at the unrolled state.
    #[arg(long, value_enum, default_value_t = UnrollBnArg::Running)]
    pub unroll_bn: UnrollBnArg,
    /// Borderline margin threshold: |p_y − max other p| below it is borderline.
    #[arg(long, default_value_t = AnalysisSpec::default().margin)]
    pub margin: f64,
    /// Seed of the example subsets.
    #[arg(long, default_value_t = AnalysisSpec::default().seed)]
    pub seed: u64,
}

impl AnalysisSpecArgs {
    /// The analysis spec of the flags (whose defaults are paper.md's, as a spec file's).
    pub fn spec(&self) -> AnalysisSpec {
        AnalysisSpec {
            metrics: self
                .metrics
                .clone()
                .unwrap_or_else(|| AnalysisSpec::default().metrics),
            splits: self.splits.iter().map(|&x| x.into()).collect(),
            max_examples: self.max_examples,
            eval_batch: self.eval_batch,
            gradient: self.gradient.into(),
            window: self.window,
            unroll_steps: self.unroll_steps,
            alphas: self.alphas.clone(),
            unroll_bn: self.unroll_bn.into(),
            margin: self.margin,
            seed: self.seed,
        }
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// Experiment spec (TOML): configurations, seeds, data, training, analysis.
    pub spec: PathBuf,
    /// Output directory: runs/, figures/, summary.csv, report.md.
    #[arg(long)]
    pub out: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

#[derive(Args)]
pub struct SubmitArgs {
    /// A run spec (like experiments/*.toml) or an experiment spec (with `[[configs]]`).
    pub spec: PathBuf,
    /// Which checkpoints of a run are analysed besides the final one: final, every:K or
    /// epochs:A,B,… (epoch 0: the initial weights). An experiment's runs follow its own
    /// `analysis_checkpoints`.
    #[arg(long, default_value = "final", conflicts_with = "no_analysis")]
    pub analysis: String,
    /// Analyse no checkpoint of the run.
    #[arg(long)]
    pub no_analysis: bool,
    /// Examples per split of each analysis.
    #[arg(long)]
    pub analysis_examples: Option<u32>,
    /// Makes the submission safe to repeat: the same key never creates a second run.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Weights trained elsewhere (a state dict as safetensors or a `torch.save` file) to
    /// make a run of — checked here against the spec's model, uploaded with it, then
    /// evaluated and checkpointed by a trainer as after the spec's epochs and analysed, as
    /// `model import` does locally. For a run spec, the file; for an experiment,
    /// `LABEL/SEED=FILE` for each run made of weights (repeated; the others train).
    #[arg(long)]
    pub weights: Vec<String>,
    #[command(flatten)]
    pub reading: WeightsReading,
    /// Print the created run or experiment as JSON.
    #[arg(long)]
    pub json: bool,
    /// Then follow it as `watch` does, failing unless every run succeeds.
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only runs in this state: queued, running, cancelling, succeeded, failed, cancelled.
    #[arg(long)]
    pub status: Option<JobState>,
    /// Only runs of this architecture (resnet, single, avgpool, wide).
    #[arg(long)]
    pub arch: Option<String>,
    /// Only runs with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Only the runs of this experiment (its id or name).
    #[arg(long)]
    pub experiment: Option<String>,
    /// Runs to list at most.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Print the page of runs as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyze(flags: &[&str]) -> AnalysisSpec {
        let argv = ["stepwise", "analyze", "--checkpoint", "c.safetensors"];
        let cli = Cli::try_parse_from(argv.iter().chain(flags)).unwrap();
        match cli.command {
            Command::Analyze(args) => args.analysis.spec(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn analyze_without_flags_is_the_default_analysis_spec() {
        assert_eq!(analyze(&[]), AnalysisSpec::default());
    }

    #[test]
    fn analyze_flags_set_their_fields() {
        let spec = analyze(&[
            "--splits",
            "test",
            "--alphas",
            "0.5,0.1",
            "--gradient",
            "skip",
            "--window",
            "3",
            "--metrics",
            "cosine,l2",
            "--unroll-bn",
            "batch",
        ]);
        assert_eq!(spec.splits, [Split::Test]);
        assert_eq!(spec.unroll_bn, UnrollBn::Batch);
        assert_eq!(spec.alphas, [0.5, 0.1]);
        assert_eq!(spec.gradient, GradientKind::Skip);
        assert_eq!(spec.window, 3);
        assert_eq!(spec.metrics, [AnalysisKind::Cosine, AnalysisKind::L2]);
        assert_eq!(spec.max_examples, AnalysisSpec::default().max_examples);
    }
}
