//! Training steps on CUDA as a captured graph: the step's few hundred kernels replayed with
//! one launch instead of being queued one by one from the host, which at batch 128 takes
//! longer than the GPU needs to run them.
//!
//! A graph reads and writes fixed buffers, so full batches are copied into input buffers,
//! the learning rate is a device scalar the update kernel reads (the schedule may change it
//! every step), the update skips itself on a non-finite loss (the loop's host check, moved
//! to the device), and the loss and hits land in an output buffer read after the replay.
//! The first full batch runs the same step eagerly, with candle's capture cache on (which
//! also finds every cuDNN plan and sizes every workspace); the second is captured and every
//! later one replayed. A capture that fails logs why and leaves the loop's own step in
//! charge. Batches of another size (an epoch's last) take the loop's step.

use crate::trainer::train_step;
use crate::{Result, Sgd};
use candle_core::{DType, Tensor, D};
use resnet::loss::cross_entropy;
use resnet::ops::cuda::graph::{self, Graph};
use resnet::ops::OnDevice;
use resnet::{BnMode, ResNet};

/// The step's fixed buffers.
struct Buffers {
    x: Tensor,
    y: Tensor,
    /// The learning rate, one f32.
    lr: Tensor,
    /// (loss, hits) of the last step, f32.
    outputs: Tensor,
}

enum State {
    /// No full batch yet.
    Cold,
    /// One full batch ran eagerly through the buffers.
    Warm(Buffers),
    Captured {
        buffers: Buffers,
        graph: Graph,
        /// What one step adds to every BatchNorm's `num_batches_tracked` (host counters,
        /// which a replay does not run).
        batches_tracked: Vec<i64>,
    },
    /// Capture failed: the loop's step from here on.
    Off,
}

/// A trainer's steps on CUDA (see the module comment).
pub(crate) struct GraphSteps {
    state: State,
}

impl GraphSteps {
    pub(crate) fn new() -> Self {
        Self { state: State::Cold }
    }

    /// One training step on the full batch `(x, y)`: (loss, hits), the update skipped when
    /// the loss is not finite.
    pub(crate) fn step(
        &mut self,
        model: &ResNet,
        optimizer: &mut Sgd,
        (x, y): (&Tensor, &Tensor),
        lr: f64,
    ) -> Result<(f64, usize)> {
        let device = model.device().clone();
        match std::mem::replace(&mut self.state, State::Off) {
            State::Off => train_step(model, optimizer, x, y, lr),
            State::Cold => {
                let buffers = Buffers {
                    x: x.copy()?,
                    y: y.copy()?,
                    lr: Tensor::zeros(1, DType::F32, &device)?,
                    outputs: Tensor::zeros(2, DType::F32, &device)?,
                };
                write_lr(&buffers, lr)?;
                graph::with_capture_cache(&device, || queue(model, optimizer, &buffers))??;
                let result = read(&buffers);
                self.state = State::Warm(buffers);
                result
            }
            State::Warm(buffers) => {
                let before = model.batches_tracked();
                let captured = graph::capture(&device, || queue(model, optimizer, &buffers));
                let after = model.batches_tracked();
                // Capturing ran the host code, not the kernels.
                model.set_batches_tracked(&before);
                match captured {
                    Ok(graph) => {
                        let batches_tracked = after.iter().zip(&before).map(|(a, b)| a - b);
                        self.state = State::Captured {
                            buffers,
                            graph,
                            batches_tracked: batches_tracked.collect(),
                        };
                        self.step(model, optimizer, (x, y), lr)
                    }
                    Err(e) => {
                        tracing::warn!(
                            "capturing the training step as a CUDA graph failed, continuing \
                             without: {e}"
                        );
                        train_step(model, optimizer, x, y, lr)
                    }
                }
            }
            State::Captured {
                buffers,
                graph,
                batches_tracked,
            } => {
                buffers.x.slice_set(x, 0, 0)?;
                buffers.y.slice_set(y, 0, 0)?;
                write_lr(&buffers, lr)?;
                graph.launch()?;
                let counts = model.batches_tracked().into_iter().zip(&batches_tracked);
                model.set_batches_tracked(&counts.map(|(c, d)| c + d).collect::<Vec<_>>());
                let result = read(&buffers);
                self.state = State::Captured {
                    buffers,
                    graph,
                    batches_tracked,
                };
                result
            }
        }
    }
}

fn write_lr(buffers: &Buffers, lr: f64) -> Result<()> {
    let value = Tensor::new(&[lr as f32], buffers.lr.device())?;
    Ok(buffers.lr.slice_set(&value, 0, 0)?)
}

/// The step on the buffers, without host reads: forward, loss, backward, the update (the
/// learning rate and the finiteness check read on the device), loss and hits into
/// `outputs`. What it allocates it frees, so a graph of it replays.
fn queue(model: &ResNet, optimizer: &mut Sgd, buffers: &Buffers) -> Result<()> {
    let logits = model.forward(&buffers.x, BnMode::Train)?;
    let loss = cross_entropy(&logits, &buffers.y)?.reshape(1)?;
    let grads = loss.backward()?;
    let on_device = OnDevice {
        lr: &buffers.lr,
        loss: &loss,
    };
    optimizer.step_on_device(&grads, on_device)?;
    let hits = logits
        .argmax(D::Minus1)?
        .eq(&buffers.y)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .reshape(1)?;
    buffers
        .outputs
        .slice_set(&Tensor::cat(&[&loss, &hits], 0)?, 0, 0)?;
    Ok(())
}

/// (loss, hits) of the step just queued (waits for it).
fn read(buffers: &Buffers) -> Result<(f64, usize)> {
    let outputs = buffers.outputs.to_vec1::<f32>()?;
    Ok((f64::from(outputs[0]), outputs[1] as usize))
}
