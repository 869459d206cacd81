//! Launch geometry of stepwise's CUDA kernels (`cuda/kernels.cu`) as (grid, block)
//! dimensions. Outside the `cuda` feature so that the kernels' CPU emulation
//! (`tests/cuda_kernels.rs`) launches them exactly as the device does.

use super::MemoryFormat;

/// (grid, block), each (x, y, z).
pub type Dims = ([u32; 3], [u32; 3]);

/// Channels-last kernels: a block's threads are `GROUP_CHANNELS` adjacent channels by
/// `GROUP_ROWS` rows (kernels.cu's constants of the same names).
pub const GROUP_CHANNELS: usize = 32;
pub const GROUP_ROWS: usize = 8;

/// Channels-last blocks over `c` channels (at least one).
fn channel_groups(c: usize) -> u32 {
    c.div_ceil(GROUP_CHANNELS).max(1) as u32
}

/// The elementwise kernels over an (N, C, HW) tensor. NCHW: one block per (image, channel)
/// plane, its threads over the plane's positions. Channels-last: channel groups by row
/// blocks, the rows grid-strided. Sizes below 2³¹ elements (checked by the caller); one
/// block does nothing when the tensor is empty.
pub fn elementwise(format: MemoryFormat, (n, c, hw): (usize, usize, usize)) -> Dims {
    match format {
        MemoryFormat::Nchw => (
            [(n * c).max(1) as u32, 1, 1],
            [hw.next_multiple_of(32).clamp(32, 256) as u32, 1, 1],
        ),
        MemoryFormat::ChannelsLast => (
            [
                (n * hw).div_ceil(GROUP_ROWS).clamp(1, 2048) as u32,
                channel_groups(c),
                1,
            ],
            [GROUP_CHANNELS as u32, GROUP_ROWS as u32, 1],
        ),
    }
}

/// The SGD update of `tensors` parameter tensors in one launch (blockIdx.y picks the tensor),
/// the largest of `largest` elements: up to 256 blocks of 256 threads per tensor, grid-strided.
pub fn sgd(largest: usize, tensors: usize) -> Dims {
    let blocks = largest.div_ceil(256).clamp(1, 256) as u32;
    ([blocks, tensors as u32, 1], [256, 1, 1])
}

/// A reduction over `c` channels of `m` elements each: enough splits per channel (the grid's
/// x) to fill the GPU, each of at least a few thousand elements; per split one block per
/// channel (NCHW) or per group of channels (channels-last).
pub fn reduction(format: MemoryFormat, c: usize, m: usize) -> Dims {
    let splits = (m / 4096).clamp(1, 128) as u32;
    match format {
        MemoryFormat::Nchw => ([splits, c.max(1) as u32, 1], [256, 1, 1]),
        MemoryFormat::ChannelsLast => (
            [splits, channel_groups(c), 1],
            [GROUP_CHANNELS as u32, GROUP_ROWS as u32, 1],
        ),
    }
}
