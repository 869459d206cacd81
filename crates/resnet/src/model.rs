//! The network: stem, stages of blocks, head; forward passes (plain, inference, probed) and
//! the PyTorch-style state dict (`stem.weight`, `stages.S.blocks.B.bn1.running_mean`,
//! `stages.S.shared.conv1.weight`, `head.fc.bias`, …).

use crate::block::Block;
use crate::layers::{BatchNorm, BnMode, Conv2d, Linear};
use crate::ops::{ConvMath, MemoryFormat};
use crate::{Error, Init, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use domain::layout::{HEAD_POOL, INPUT_CHANNELS};
use domain::{ModelLayout, Precision, Sharing};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::sync::Arc;

/// Parameter and computation dtypes: f32/f32, f32 parameters with bf16 compute, or f64
/// throughout (tests against finite differences); how convolutions may multiply; and the
/// memory format of the activations in the model's own passes (training and inference; its
/// public tensors are NCHW either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dtypes {
    pub params: DType,
    pub compute: DType,
    pub conv_math: ConvMath,
    pub memory_format: MemoryFormat,
}

impl Dtypes {
    /// NCHW activations.
    pub fn for_precision(precision: Precision) -> Self {
        let (compute, conv_math) = match precision {
            Precision::F32 => (DType::F32, ConvMath::Exact),
            Precision::Tf32 => (DType::F32, ConvMath::Tf32),
            Precision::Bf16 => (DType::BF16, ConvMath::Exact),
        };
        Self {
            params: DType::F32,
            compute,
            conv_math,
            memory_format: MemoryFormat::Nchw,
        }
    }

    /// The dtypes of `precision` in the fastest memory format on `device`: channels-last
    /// for bf16 on CUDA, where convolutions run on tensor cores (as PyTorch's
    /// `channels_last`); NCHW otherwise.
    pub fn for_precision_on(precision: Precision, device: &Device) -> Self {
        let memory_format = if precision == Precision::Bf16 && device.is_cuda() {
            MemoryFormat::ChannelsLast
        } else {
            MemoryFormat::Nchw
        };
        Self {
            memory_format,
            ..Self::for_precision(precision)
        }
    }

    pub fn uniform(dtype: DType) -> Self {
        Self {
            params: dtype,
            compute: dtype,
            conv_math: ConvMath::Exact,
            memory_format: MemoryFormat::Nchw,
        }
    }
}

/// The classifier: BN → ReLU → AvgPool(8×8, stride 8) → flatten → Linear. It accepts any
/// hidden state shaped like the last block's output.
pub struct Head {
    pub bn: BatchNorm,
    pub fc: Linear,
}

impl Head {
    /// Logits in the parameter dtype.
    pub fn forward(&self, h: &Tensor, mode: BnMode) -> Result<Tensor> {
        self.forward_in(MemoryFormat::Nchw, h, mode)
    }

    /// [`Self::forward`] of `h` in memory `format`: the pooling reads channels-last through
    /// an NCHW view.
    fn forward_in(&self, format: MemoryFormat, h: &Tensor, mode: BnMode) -> Result<Tensor> {
        let a = format.to_nchw(&self.bn.forward_relu_in(format, h, mode)?)?;
        let pooled = a.avg_pool2d(HEAD_POOL as usize)?.flatten_from(1)?;
        let logits = self.fc.forward(&pooled)?;
        Ok(logits.to_dtype(self.fc.weight.dtype())?)
    }
}

/// Conv weights (and, under naive sharing, BatchNorm) shared by a stage's later blocks.
struct SharedSet {
    conv1: Arc<Conv2d>,
    conv2: Arc<Conv2d>,
    bn: Option<(Arc<BatchNorm>, Arc<BatchNorm>)>,
}

struct Stage {
    pool_before: bool,
    blocks: Vec<Block>,
    shared: Option<SharedSet>,
}

pub struct ResNet {
    layout: ModelLayout,
    stem: Conv2d,
    stages: Vec<Stage>,
    head: Head,
    dtypes: Dtypes,
    device: Device,
}

/// What a trainable tensor is, for weight decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamRole {
    /// Convolution or linear weight.
    Weight,
    Bias,
    BnWeight,
    BnBias,
}

pub struct Param {
    pub name: String,
    pub var: Var,
    pub role: ParamRole,
}

/// How [`ResNet::walk`] runs the blocks.
#[derive(Clone, Copy)]
enum Pass {
    /// Building the autograd graph, BatchNorm in this mode.
    Graph(BnMode),
    /// Inference mode through the fused inference kernels, keeping no graph.
    Inference,
}

/// What the probed forward computes and keeps.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub mode: BnMode,
    /// Global indices of blocks whose residual branch is skipped (`h_{i+1} = shortcut(h_i)`).
    pub skip: Vec<usize>,
    /// Keep the graph so that one backward pass ([`Probed::backward`]) yields every
    /// ∂L/∂h_i. Without it the pass keeps no graph.
    pub gradients: bool,
}

impl ProbeOptions {
    pub fn eval() -> Self {
        Self {
            mode: BnMode::Eval,
            skip: vec![],
            gradients: false,
        }
    }

    pub fn with_gradients(mut self) -> Self {
        self.gradients = true;
        self
    }
}

/// Every block's input h_i, residual F_i(h_i) and output, in global block order.
pub struct Probed {
    pub logits: Tensor,
    pub inputs: Vec<Tensor>,
    /// `None` for skipped blocks.
    pub residuals: Vec<Option<Tensor>>,
    /// The block's output (before the next stage's pooling, if any); the last one is the
    /// hidden state entering the head.
    pub outputs: Vec<Tensor>,
    gradients: bool,
}

impl Probed {
    /// `loss.backward()`, keeping the gradients at every block input and at the head's
    /// input (candle keeps those of variables only; PyTorch's `retain_grad`).
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        if !self.gradients {
            return Err(Error::StateDict(
                "gradients need ProbeOptions::gradients".into(),
            ));
        }
        let retained: Vec<&Tensor> = self.inputs.iter().chain(self.outputs.last()).collect();
        Ok(loss.backward_retaining(&retained)?)
    }

    /// ∂L/∂h_i for every block, from the gradients of [`Self::backward`].
    pub fn input_gradients(&self, grads: &GradStore) -> Result<Vec<Tensor>> {
        self.inputs.iter().map(|h| gradient(h, grads)).collect()
    }

    /// ∂L/∂h of the hidden state entering the head (the last block's output).
    pub fn output_gradient(&self, grads: &GradStore) -> Result<Tensor> {
        let h = self.outputs.last().expect("a model has blocks");
        gradient(h, grads)
    }
}

/// The retained gradient of `h`; zero where the loss does not depend on it.
fn gradient(h: &Tensor, grads: &GradStore) -> Result<Tensor> {
    match grads.get(h) {
        Some(g) => Ok(g.clone()),
        None => Ok(h.zeros_like()?),
    }
}

enum Module<'a> {
    Conv(&'a Conv2d),
    Bn(&'a BatchNorm),
    Linear(&'a Linear),
}

impl ResNet {
    /// Builds and initialises a model, drawing every initial value from `rng`.
    pub fn new(
        layout: &ModelLayout,
        rng: &mut ChaCha8Rng,
        device: &Device,
        dtypes: Dtypes,
    ) -> Result<Self> {
        let mut init = Init::new(rng, device, dtypes);
        let stem = Conv2d::new(
            &mut init,
            INPUT_CHANNELS as usize,
            layout.stem_channels as usize,
            3,
            1,
        )?;
        let infos = layout.blocks();
        let mut infos = infos.into_iter();
        let mut stages = Vec::with_capacity(layout.stages.len());
        for (s, st) in layout.stages.iter().enumerate() {
            let ch = st.channels as usize;
            let mut shared: Option<SharedSet> = None;
            let mut blocks = Vec::with_capacity(st.blocks as usize);
            for b in 0..st.blocks {
                let info = infos.next().expect("layout lists every block");
                let first = b == 0;
                let c_in = if first {
                    layout.stage_input_channels(s) as usize
                } else {
                    ch
                };
                let stride = if first { st.stride as usize } else { 1 };
                let block = if info.shared {
                    if shared.is_none() {
                        shared = Some(SharedSet {
                            conv1: Arc::new(Conv2d::new(&mut init, ch, ch, 3, 1)?),
                            conv2: Arc::new(Conv2d::new(&mut init, ch, ch, 3, 1)?),
                            bn: match layout.sharing {
                                Sharing::Naive => Some((
                                    Arc::new(BatchNorm::new(&mut init, ch, 1.0)?),
                                    Arc::new(BatchNorm::new(&mut init, ch, 1.0)?),
                                )),
                                _ => None,
                            },
                        });
                    }
                    let set = shared.as_ref().expect("created above");
                    let (bn1, bn2) = match &set.bn {
                        Some((bn1, bn2)) => (bn1.clone(), bn2.clone()),
                        // UBN: every shared step has its own statistics and γ = 0.1, β.
                        None => (
                            Arc::new(BatchNorm::new(&mut init, ch, 0.1)?),
                            Arc::new(BatchNorm::new(&mut init, ch, 0.1)?),
                        ),
                    };
                    Block {
                        info,
                        bn1,
                        conv1: set.conv1.clone(),
                        bn2,
                        conv2: set.conv2.clone(),
                        projection: None,
                    }
                } else {
                    let bn1 = Arc::new(BatchNorm::new(&mut init, c_in, 1.0)?);
                    let conv1 = Arc::new(Conv2d::new(&mut init, c_in, ch, 3, stride)?);
                    let bn2 = Arc::new(BatchNorm::new(&mut init, ch, 1.0)?);
                    let conv2 = Arc::new(Conv2d::new(&mut init, ch, ch, 3, 1)?);
                    let projection = if first && st.projection {
                        Some(Conv2d::new(&mut init, c_in, ch, 1, stride)?)
                    } else {
                        None
                    };
                    Block {
                        info,
                        bn1,
                        conv1,
                        bn2,
                        conv2,
                        projection,
                    }
                };
                blocks.push(block);
            }
            stages.push(Stage {
                pool_before: st.pool_before,
                blocks,
                shared,
            });
        }
        let last = layout.stages.last().expect("at least one stage");
        let head = Head {
            bn: BatchNorm::new(&mut init, last.channels as usize, 1.0)?,
            fc: Linear::new(
                &mut init,
                layout.head_features() as usize,
                layout.classes as usize,
            )?,
        };
        Ok(Self {
            layout: layout.clone(),
            stem,
            stages,
            head,
            dtypes,
            device: device.clone(),
        })
    }

    pub fn layout(&self) -> &ModelLayout {
        &self.layout
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtypes(&self) -> Dtypes {
        self.dtypes
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Every block in forward order (global index = position).
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.stages.iter().flat_map(|s| s.blocks.iter())
    }

    pub fn block(&self, index: usize) -> Option<&Block> {
        self.blocks().nth(index)
    }

    /// The stem's output h_0 for a batch of normalised images (N, 3, 32, 32).
    pub fn stem(&self, x: &Tensor) -> Result<Tensor> {
        self.stem.forward(&x.to_dtype(self.dtypes.compute)?)
    }

    /// h_0 in the model's memory format. The stem itself runs in NCHW: three input channels
    /// are no shape for tensor cores, and its output is small.
    fn stem_own(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.dtypes.memory_format.from_nchw(&self.stem(x)?)?)
    }

    /// Logits with the full autograd graph (training).
    pub fn forward(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        Ok(self.walk(self.stem_own(x)?, 0, Pass::Graph(mode), &[])?.0)
    }

    /// Inference-mode logits, keeping no graph so that memory stays bounded by one block's
    /// activations.
    pub fn infer(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.walk(self.stem_own(x)?, 0, Pass::Inference, &[])?.0)
    }

    /// Inference-mode logits plus the outputs of the blocks listed in `taps` (global
    /// indices), keeping no graph.
    pub fn infer_tapped(&self, x: &Tensor, taps: &[usize]) -> Result<(Tensor, Vec<Tensor>)> {
        self.walk(self.stem_own(x)?, 0, Pass::Inference, taps)
    }

    /// Logits of the network run from block `start` on, given that block's input `h`
    /// (already pooled if the block opens a pooled stage), with the full graph.
    pub fn forward_from(&self, start: usize, h: &Tensor, mode: BnMode) -> Result<Tensor> {
        let block = self
            .block(start)
            .ok_or_else(|| Error::StateDict(format!("no block {start}")))?;
        self.forward_after(start, &block.forward(h, mode)?, mode)
    }

    /// Logits of the network continued after block `index`, given that block's output.
    pub fn forward_after(&self, index: usize, output: &Tensor, mode: BnMode) -> Result<Tensor> {
        let h = self.dtypes.memory_format.from_nchw(output)?;
        Ok(self.walk(h, index + 1, Pass::Graph(mode), &[])?.0)
    }

    /// Like [`Self::forward_after`] in inference mode, keeping no graph.
    pub fn infer_after(&self, index: usize, output: &Tensor) -> Result<Tensor> {
        let h = self.dtypes.memory_format.from_nchw(output)?;
        Ok(self.walk(h, index + 1, Pass::Inference, &[])?.0)
    }

    /// Runs the blocks from `start` on, `h` (in the model's memory format) being what enters
    /// that position (pooled there if the block opens a pooled stage), then the head. The
    /// tapped outputs are NCHW (views of channels-last tensors).
    fn walk(
        &self,
        mut h: Tensor,
        start: usize,
        pass: Pass,
        taps: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let keep = |t: Tensor| match pass {
            Pass::Graph(_) => t,
            Pass::Inference => t.detach(),
        };
        let format = self.dtypes.memory_format;
        let mut tapped = Vec::with_capacity(taps.len());
        h = keep(h);
        for (index, (pool, block)) in self.blocks_with_pooling().enumerate().skip(start) {
            if pool {
                h = format.from_nchw(&format.to_nchw(&h)?.avg_pool2d(2)?)?;
            }
            h = keep(match pass {
                Pass::Graph(mode) => block.forward_in(format, &h, mode)?,
                Pass::Inference => block.infer_in(format, &h)?,
            });
            if taps.contains(&index) {
                tapped.push(format.to_nchw(&h)?);
            }
        }
        let mode = match pass {
            Pass::Graph(mode) => mode,
            Pass::Inference => BnMode::Eval,
        };
        Ok((keep(self.head.forward_in(format, &h, mode)?), tapped))
    }

    /// Every block with whether a 2×2 average pool precedes it.
    fn blocks_with_pooling(&self) -> impl Iterator<Item = (bool, &Block)> {
        self.stages.iter().flat_map(|s| {
            s.blocks
                .iter()
                .enumerate()
                .map(move |(b, block)| (b == 0 && s.pool_before, block))
        })
    }

    /// A forward pass that records every block's input, residual and output, optionally
    /// skipping blocks and keeping the graph for input gradients.
    pub fn forward_probed(&self, x: &Tensor, opts: &ProbeOptions) -> Result<Probed> {
        let n = self.layout.block_count();
        let keep = |t: Tensor| if opts.gradients { t } else { t.detach() };
        let mut inputs = Vec::with_capacity(n);
        let mut residuals = Vec::with_capacity(n);
        let mut outputs = Vec::with_capacity(n);
        let mut h = keep(self.stem(x)?);
        if opts.gradients && !h.track_op() {
            // Frozen parameters and constant images build no graph: h_0 becomes the leaf
            // the gradients flow back to.
            h = Var::from_tensor(&h)?.into_inner();
        }
        for (index, (pool, block)) in self.blocks_with_pooling().enumerate() {
            if pool {
                h = h.avg_pool2d(2)?;
            }
            let next = if opts.skip.contains(&index) {
                residuals.push(None);
                block.forward_skipped(&h)?
            } else {
                let f = if opts.gradients || opts.mode != BnMode::Eval {
                    block.residual(&h, opts.mode)?
                } else {
                    block.infer_residual(&h)?
                };
                let f = keep(f);
                let next = (block.shortcut(&h)? + &f)?;
                residuals.push(Some(f));
                next
            };
            inputs.push(h);
            h = keep(next);
            outputs.push(h.clone());
        }
        Ok(Probed {
            logits: self.head.forward(&h, opts.mode)?,
            inputs,
            residuals,
            outputs,
            gradients: opts.gradients,
        })
    }

    fn modules(&self) -> Vec<(String, Module<'_>)> {
        let mut m = vec![("stem".to_string(), Module::Conv(&self.stem))];
        let naive = self.layout.sharing == Sharing::Naive;
        for (s, stage) in self.stages.iter().enumerate() {
            for (b, block) in stage.blocks.iter().enumerate() {
                let p = format!("stages.{s}.blocks.{b}");
                let shared_conv = block.info.shared;
                let shared_bn = shared_conv && naive;
                if !shared_bn {
                    m.push((format!("{p}.bn1"), Module::Bn(&block.bn1)));
                }
                if !shared_conv {
                    m.push((format!("{p}.conv1"), Module::Conv(&block.conv1)));
                }
                if !shared_bn {
                    m.push((format!("{p}.bn2"), Module::Bn(&block.bn2)));
                }
                if !shared_conv {
                    m.push((format!("{p}.conv2"), Module::Conv(&block.conv2)));
                }
                if let Some(proj) = &block.projection {
                    m.push((format!("{p}.shortcut"), Module::Conv(proj)));
                }
            }
            if let Some(set) = &stage.shared {
                let p = format!("stages.{s}.shared");
                if let Some((bn1, _)) = &set.bn {
                    m.push((format!("{p}.bn1"), Module::Bn(bn1)));
                }
                m.push((format!("{p}.conv1"), Module::Conv(&set.conv1)));
                if let Some((_, bn2)) = &set.bn {
                    m.push((format!("{p}.bn2"), Module::Bn(bn2)));
                }
                m.push((format!("{p}.conv2"), Module::Conv(&set.conv2)));
            }
        }
        m.push(("head.bn".to_string(), Module::Bn(&self.head.bn)));
        m.push(("head.fc".to_string(), Module::Linear(&self.head.fc)));
        m
    }

    /// Trainable tensors, each shared tensor once, in a fixed order.
    pub fn parameters(&self) -> Vec<Param> {
        let mut out = vec![];
        for (prefix, module) in self.modules() {
            let mut add = |suffix: &str, var: &Var, role| {
                out.push(Param {
                    name: format!("{prefix}.{suffix}"),
                    var: var.clone(),
                    role,
                })
            };
            match module {
                Module::Conv(c) => {
                    add("weight", &c.weight, ParamRole::Weight);
                    add("bias", &c.bias, ParamRole::Bias);
                }
                Module::Linear(l) => {
                    add("weight", &l.weight, ParamRole::Weight);
                    add("bias", &l.bias, ParamRole::Bias);
                }
                Module::Bn(bn) => {
                    add("weight", &bn.weight, ParamRole::BnWeight);
                    add("bias", &bn.bias, ParamRole::BnBias);
                }
            }
        }
        out
    }

    /// Number of trainable scalars.
    pub fn trainable_count(&self) -> usize {
        self.parameters()
            .iter()
            .map(|p| p.var.as_tensor().elem_count())
            .sum()
    }

    /// Keras-style total: trainable plus BatchNorm running means and variances.
    pub fn keras_count(&self) -> usize {
        let running: usize = self.batch_norms().iter().map(|bn| 2 * bn.channels()).sum();
        self.trainable_count() + running
    }

    /// Every BatchNorm, in [`Self::modules`] order (a shared one once per name it has).
    fn batch_norms(&self) -> Vec<&BatchNorm> {
        self.modules()
            .into_iter()
            .filter_map(|(_, m)| match m {
                Module::Bn(bn) => Some(bn),
                _ => None,
            })
            .collect()
    }

    /// Every BatchNorm's `num_batches_tracked`, in a fixed order (a shared BatchNorm once per
    /// name it has).
    pub fn batches_tracked(&self) -> Vec<i64> {
        self.batch_norms()
            .iter()
            .map(|bn| bn.num_batches_tracked())
            .collect()
    }

    /// Sets what [`Self::batches_tracked`] returns, in its order.
    pub fn set_batches_tracked(&self, counts: &[i64]) {
        for (bn, &n) in self.batch_norms().into_iter().zip(counts) {
            bn.set_num_batches_tracked(n);
        }
    }

    /// Parameters and buffers under PyTorch names (BatchNorm's `num_batches_tracked` as an
    /// i64 scalar), so `load_state_dict(strict=True)` of an equivalent module accepts them.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![];
        for (prefix, module) in self.modules() {
            let mut add =
                |suffix: &str, t: &Tensor| out.push((format!("{prefix}.{suffix}"), t.clone()));
            match module {
                Module::Conv(c) => {
                    add("weight", c.weight.as_tensor());
                    add("bias", c.bias.as_tensor());
                }
                Module::Linear(l) => {
                    add("weight", l.weight.as_tensor());
                    add("bias", l.bias.as_tensor());
                }
                Module::Bn(bn) => {
                    add("weight", bn.weight.as_tensor());
                    add("bias", bn.bias.as_tensor());
                    add("running_mean", bn.running_mean.as_tensor());
                    add("running_var", bn.running_var.as_tensor());
                    let tracked = Tensor::new(bn.num_batches_tracked(), &self.device)?;
                    add("num_batches_tracked", &tracked);
                }
            }
        }
        Ok(out)
    }

    /// Loads every tensor of [`Self::state_dict`] from `tensors`; a missing tensor, a wrong
    /// shape or an unexpected `stem`/`stages`/`head` key is an error.
    pub fn load_state_dict(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let mut expected = 0;
        for (prefix, module) in self.modules() {
            let get = |suffix: &str| -> Result<&Tensor> {
                let key = format!("{prefix}.{suffix}");
                tensors
                    .get(&key)
                    .ok_or_else(|| Error::StateDict(format!("missing tensor {key}")))
            };
            let mut set = |suffix: &str, var: &Var| -> Result<()> {
                let src = get(suffix)?;
                if src.dims() != var.dims() {
                    return Err(Error::StateDict(format!(
                        "{prefix}.{suffix}: shape {:?}, expected {:?}",
                        src.dims(),
                        var.dims()
                    )));
                }
                var.set(&src.to_device(&self.device)?.to_dtype(var.dtype())?)?;
                expected += 1;
                Ok(())
            };
            match module {
                Module::Conv(c) => {
                    set("weight", &c.weight)?;
                    set("bias", &c.bias)?;
                }
                Module::Linear(l) => {
                    set("weight", &l.weight)?;
                    set("bias", &l.bias)?;
                }
                Module::Bn(bn) => {
                    set("weight", &bn.weight)?;
                    set("bias", &bn.bias)?;
                    set("running_mean", &bn.running_mean)?;
                    set("running_var", &bn.running_var)?;
                    let tracked = get("num_batches_tracked")?;
                    let n = tracked
                        .to_dtype(DType::I64)
                        .and_then(|t| t.flatten_all()?.to_vec1::<i64>())?;
                    match n.as_slice() {
                        [n] => bn.set_num_batches_tracked(*n),
                        _ => {
                            return Err(Error::StateDict(format!(
                                "{prefix}.num_batches_tracked: expected a scalar"
                            )))
                        }
                    }
                    expected += 1;
                }
            }
        }
        let model_keys = tensors
            .keys()
            .filter(|k| {
                k.starts_with("stem.") || k.starts_with("stages.") || k.starts_with("head.")
            })
            .count();
        if model_keys != expected {
            let known: std::collections::HashSet<String> =
                self.state_dict()?.into_iter().map(|(k, _)| k).collect();
            let mut extra: Vec<_> = tensors
                .keys()
                .filter(|k| {
                    (k.starts_with("stem.") || k.starts_with("stages.") || k.starts_with("head."))
                        && !known.contains(*k)
                })
                .cloned()
                .collect();
            extra.sort();
            return Err(Error::StateDict(format!(
                "unexpected tensors for this model: {}",
                extra.join(", ")
            )));
        }
        Ok(())
    }
}
