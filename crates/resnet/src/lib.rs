//! The paper's pre-activation residual networks in candle.
//!
//! - [`layers`]: convolution, BatchNorm (explicit [`BnMode`]) and linear layers;
//! - [`block`]: a residual block with `residual(h)` and `shortcut(h)` kept apart;
//! - [`model`]: the network, its head, the probed forward exposing every h_i, F_i(h_i) and
//!   ∂L/∂h_i, and PyTorch-style parameter naming;
//! - [`checkpoint`]: the safetensors container, written crash-safe;
//! - [`memory`]: GPU memory estimates, the budget, and out-of-memory errors.

pub mod allocator;
pub mod block;
pub mod checkpoint;
pub mod device;
mod error;
pub mod eval;
mod init;
pub mod layers;
pub mod loss;
pub mod memory;
pub mod model;
pub mod ops;

pub use block::Block;
pub use checkpoint::{Checkpoint, WrittenFile};
pub use device::{candle_device, describe_device, synchronize};
pub use error::{Error, Result};
pub use init::Init;
pub use layers::BnMode;
pub use model::{Dtypes, Param, ParamRole, ProbeOptions, Probed, ResNet};
