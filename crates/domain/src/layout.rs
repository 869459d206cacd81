//! The resolved structure of a model: stages, blocks, shapes. Built from a [`ModelSpec`]
//! (see `ModelSpec::layout`), used by the model builder, summaries, analysis and figures.
//!
//! [`ModelSpec`]: crate::ModelSpec

use crate::spec::{Arch, Sharing};
use crate::BlockId;
use serde::{Deserialize, Serialize};

/// Input images are 3×32×32.
pub const INPUT_CHANNELS: u32 = 3;
pub const INPUT_SIZE: u32 = 32;
/// The head average-pools with an 8×8 window and stride 8.
pub const HEAD_POOL: u32 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// `h + F(h)`: the metrics of paper.md are defined for these.
    Identity,
    /// `P(h) + F(h)` with a 1×1 convolution shortcut `P` (channel change and/or stride 2).
    Projection,
}

impl BlockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Projection => "projection",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageLayout {
    pub channels: u32,
    pub blocks: u32,
    /// Height (= width) of the feature maps inside the stage.
    pub resolution: u32,
    /// Stride of the first block's first convolution and shortcut.
    pub stride: u32,
    /// Whether the first block is a projection block.
    pub projection: bool,
    /// Whether a 2×2 average pool (stride 2) precedes the stage (`avgpool` architecture).
    pub pool_before: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelLayout {
    pub arch: Arch,
    pub classes: u32,
    pub stem_channels: u32,
    pub stages: Vec<StageLayout>,
    pub sharing: Sharing,
    /// With sharing, blocks `0..unshared_blocks` of every stage have their own weights and
    /// the rest share one set per stage.
    pub unshared_blocks: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    pub id: BlockId,
    /// 0-based position over all blocks of the network.
    pub index: u32,
    pub kind: BlockKind,
    /// Whether the block's convolutions are the stage's shared set.
    pub shared: bool,
    /// `[channels, height, width]` of the block input h_i.
    pub in_shape: [u32; 3],
    pub out_shape: [u32; 3],
}

impl ModelLayout {
    /// Whether block `block` of a stage uses the stage's shared weights.
    pub fn is_shared(&self, block: u32) -> bool {
        self.sharing != Sharing::None && block >= self.unshared_blocks
    }

    /// Whether any stage has shared blocks.
    pub fn has_shared_blocks(&self) -> bool {
        self.stages.iter().any(|s| self.is_shared(s.blocks - 1))
    }

    pub fn last_stage(&self) -> u32 {
        self.stages.len() as u32 - 1
    }

    pub fn block_count(&self) -> usize {
        self.stages.iter().map(|s| s.blocks as usize).sum()
    }

    /// Features entering the classifier: channels × (resolution / 8)².
    pub fn head_features(&self) -> u32 {
        let last = self.stages.last().expect("a layout has at least one stage");
        let side = last.resolution / HEAD_POOL;
        last.channels * side * side
    }

    /// Input channels of every stage (the stem's, then the previous stage's).
    pub fn stage_input_channels(&self, stage: usize) -> u32 {
        if stage == 0 {
            self.stem_channels
        } else {
            self.stages[stage - 1].channels
        }
    }

    /// Trainable parameters, counted from the layout alone (for the API, which builds no
    /// model; the resnet crate's tests hold it to the built model's count): convolution
    /// weights and biases, BatchNorm γ and β, the classifier. A stage's shared convolutions
    /// count once; their BatchNorms once with `naive` sharing, once per step with `ubn`.
    pub fn trainable_parameters(&self) -> u64 {
        let conv = |inputs: u32, outputs: u32, k: u64| {
            let (inputs, outputs) = (u64::from(inputs), u64::from(outputs));
            inputs * outputs * k * k + outputs
        };
        let batch_norm = |channels: u32| 2 * u64::from(channels);
        let mut total = conv(INPUT_CHANNELS, self.stem_channels, 3);
        let mut shared_counted = std::collections::HashSet::new();
        for block in self.blocks() {
            let (inputs, outputs) = (block.in_shape[0], block.out_shape[0]);
            let mut convs = conv(inputs, outputs, 3) + conv(outputs, outputs, 3);
            if block.kind == BlockKind::Projection {
                convs += conv(inputs, outputs, 1);
            }
            let norms = batch_norm(inputs) + batch_norm(outputs);
            if !block.shared {
                total += convs + norms;
                continue;
            }
            let first_step = shared_counted.insert(block.id.stage);
            if first_step {
                total += convs;
            }
            if first_step || self.sharing == Sharing::Ubn {
                total += norms;
            }
        }
        let last = self.stages.last().expect("a layout has at least one stage");
        let classes = u64::from(self.classes);
        total + batch_norm(last.channels) + u64::from(self.head_features()) * classes + classes
    }

    /// Every block in forward order with its id, kind and shapes.
    pub fn blocks(&self) -> Vec<BlockInfo> {
        let mut out = Vec::with_capacity(self.block_count());
        let mut channels = self.stem_channels;
        let mut resolution = INPUT_SIZE;
        for (s, stage) in self.stages.iter().enumerate() {
            if stage.pool_before {
                resolution /= 2;
            }
            for b in 0..stage.blocks {
                let first = b == 0;
                let in_shape = [channels, resolution, resolution];
                if first {
                    resolution /= stage.stride;
                    channels = stage.channels;
                }
                out.push(BlockInfo {
                    id: BlockId::new(s as u32, b),
                    index: out.len() as u32,
                    kind: if first && stage.projection {
                        BlockKind::Projection
                    } else {
                        BlockKind::Identity
                    },
                    shared: self.is_shared(b),
                    in_shape,
                    out_shape: [channels, resolution, resolution],
                });
            }
        }
        out
    }
}
