// stepwise's own CUDA kernels (NCHW; sizes below 2³¹ elements, checked by the caller).
// Compiled to PTX by build.rs for the `cuda` feature and loaded once per device.
// Per-channel reductions accumulate in double.
#include <cuda_bf16.h>
#include <stdint.h>

// Sums `a` and `b` over the block; the result is valid in thread 0.
__device__ void block_sum2(double &a, double &b) {
  __shared__ double sa[32], sb[32];
  for (int o = 16; o > 0; o >>= 1) {
    a += __shfl_down_sync(0xffffffffu, a, o);
    b += __shfl_down_sync(0xffffffffu, b, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) { sa[warp] = a; sb[warp] = b; }
  __syncthreads();
  if (warp == 0) {
    const int warps = (blockDim.x + 31) >> 5;
    a = lane < warps ? sa[lane] : 0.0;
    b = lane < warps ? sb[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) {
      a += __shfl_down_sync(0xffffffffu, a, o);
      b += __shfl_down_sync(0xffffffffu, b, o);
    }
  }
}

// Per-channel reductions run on a (splits, channels) grid: each block sums a contiguous
// share of its channel's N·HW elements, writes the partial sums to `partials`, and the last
// block of the channel to finish (counted in `counters`, which it resets to zero) adds the
// partials in split order — so results do not depend on block scheduling.

// A thread's walk over its block's share of a channel's elements: j = begin + threadIdx.x,
// then blockDim.x apart, kept as (image, position) so that finding element j in (N, C, HW)
// takes no integer division per element (one per thread).
struct ChannelWalk {
  uint32_t j, img, pos, step_img, step_pos;
  __device__ ChannelWalk(uint32_t begin, uint32_t hw) {
    j = begin + threadIdx.x;
    img = j / hw;
    pos = j - img * hw;
    step_img = blockDim.x / hw;
    step_pos = blockDim.x - step_img * hw;
  }
  // Element j of channel `ch`.
  __device__ uint32_t index(uint32_t ch, uint32_t c, uint32_t hw) const {
    return (img * c + ch) * hw + pos;
  }
  __device__ void next(uint32_t hw) {
    j += blockDim.x;
    img += step_img;
    pos += step_pos;
    if (pos >= hw) {  // both below hw before: one carry at most
      pos -= hw;
      ++img;
    }
  }
};

// This block's range of its channel's `m` elements.
__device__ __forceinline__ void share(uint32_t m, uint32_t &begin, uint32_t &end) {
  const uint32_t chunk = (m + gridDim.x - 1) / gridDim.x;
  begin = min(m, blockIdx.x * chunk);
  end = min(m, begin + chunk);
}

// After each thread has its partial (a, b): true in thread 0 of the channel's last block,
// with (a, b) the channel totals.
__device__ bool finish_channel(double &a, double &b, double *partials, uint32_t *counters) {
  __shared__ bool last;
  block_sum2(a, b);
  const uint32_t ch = blockIdx.y, splits = gridDim.x;
  double *mine = partials + 2 * ((size_t)ch * splits + blockIdx.x);
  if (threadIdx.x == 0) {
    mine[0] = a;
    mine[1] = b;
    __threadfence();
    last = atomicAdd(&counters[ch], 1u) == splits - 1;
  }
  __syncthreads();
  if (!last || threadIdx.x != 0) return false;
  __threadfence();
  const volatile double *all = partials + 2 * (size_t)ch * splits;
  a = 0.0;
  b = 0.0;
  for (uint32_t k = 0; k < splits; ++k) {
    a += all[2 * k];
    b += all[2 * k + 1];
  }
  counters[ch] = 0;
  return true;
}

// Activations are f32 or bf16 (`T`, converted with `ld`/`st`); statistics, BatchNorm
// parameters and their gradients are f32. Each kernel is a template instantiated under the
// names `<kernel>_f32` and `<kernel>_bf16` (the `INSTANTIATE` lines).
__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T st(float v);
template <> __device__ __forceinline__ float st<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 st<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

// stats[ch] = batch mean, stats[c + ch] = biased batch variance; with `running_mean`
// non-null also the running averages (unbiased variance), as PyTorch.
template <typename T>
__device__ void bn_stats(const T *x, uint32_t n, uint32_t c, uint32_t hw, float *stats,
                         float *running_mean, float *running_var, float momentum,
                         double *partials, uint32_t *counters) {
  const uint32_t ch = blockIdx.y, m = n * hw;
  uint32_t begin, end;
  share(m, begin, end);
  double s = 0.0, ss = 0.0;
  for (ChannelWalk w(begin, hw); w.j < end; w.next(hw)) {
    const double v = ld(x[w.index(ch, c, hw)]);
    s += v;
    ss += v * v;
  }
  if (!finish_channel(s, ss, partials, counters)) return;
  const double mean = s / m;
  const double var = fmax(ss / m - mean * mean, 0.0);
  stats[ch] = (float)mean;
  stats[c + ch] = (float)var;
  if (running_mean != nullptr) {
    const double unbiased = m > 1 ? var * m / (m - 1) : var;
    running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean);
    running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * unbiased);
  }
}

// sums[ch] = Σ over images and positions of dy: the gradient of a convolution's bias.
template <typename T>
__device__ void channel_sum(const T *dy, uint32_t n, uint32_t c, uint32_t hw, T *sums,
                            double *partials, uint32_t *counters) {
  const uint32_t ch = blockIdx.y;
  uint32_t begin, end;
  share(n * hw, begin, end);
  double s = 0.0, unused = 0.0;
  for (ChannelWalk w(begin, hw); w.j < end; w.next(hw)) s += ld(dy[w.index(ch, c, hw)]);
  if (finish_channel(s, unused, partials, counters)) sums[ch] = st<T>((float)s);
}

// The elementwise kernels over (N, C, HW) run one block per (image, channel) plane,
// blockIdx.x = image·C + channel, its threads over the plane's positions: a thread finds its
// channel and that channel's constants once instead of per element. `total` = N·C·HW (a
// grid of one block for an empty tensor does nothing).

// y = (y + bias[ch]) [+ add]: a convolution's bias and, in a residual block, its shortcut,
// in place on its output.
template <typename T>
__device__ void add_channel_bias(T *y, const T *bias, const T *add, uint32_t c, uint32_t hw,
                                 uint32_t total) {
  const size_t base = (size_t)blockIdx.x * hw;
  if (base >= total) return;
  const float b = ld(bias[blockIdx.x % c]);
  for (uint32_t p = threadIdx.x; p < hw; p += blockDim.x) {
    const size_t i = base + p;
    // (y + bias) + add: the order of the separate additions, so f32 values stay the same.
    float v = ld(y[i]) + b;
    if (add != nullptr) v += ld(add[i]);
    y[i] = st<T>(v);
  }
}

__device__ __forceinline__ float relu(float v) { return v <= 0.f ? 0.f : v; }  // keeps NaN

// y = relu(γ·(x − μ)/√(σ² + ε) + β) with μ = mean[ch], σ² = var[ch]: the batch's statistics
// (the two halves of `bn_stats`' output) or the running ones.
template <typename T>
__device__ void bn_relu_fwd(const T *x, const float *mean, const float *var, const float *gamma,
                            const float *beta, float eps, uint32_t c, uint32_t hw,
                            uint32_t total, T *y) {
  const size_t base = (size_t)blockIdx.x * hw;
  if (base >= total) return;
  const uint32_t ch = blockIdx.x % c;
  const float scale = gamma[ch] / sqrtf(var[ch] + eps);
  const float shift = beta[ch] - mean[ch] * scale;
  for (uint32_t p = threadIdx.x; p < hw; p += blockDim.x) {
    y[base + p] = st<T>(relu(ld(x[base + p]) * scale + shift));
  }
}

// dbeta = Σ dz, dgamma = Σ dz·x̂ with dz = dy where y > 0.
template <typename T>
__device__ void bn_relu_bwd_reduce(const T *x, const T *y, const T *dy, const float *mean,
                                   const float *var, float eps, uint32_t n, uint32_t c,
                                   uint32_t hw, float *dgamma, float *dbeta, double *partials,
                                   uint32_t *counters) {
  const uint32_t ch = blockIdx.y;
  uint32_t begin, end;
  share(n * hw, begin, end);
  const float mu = mean[ch];
  double s = 0.0, dot = 0.0;
  for (ChannelWalk w(begin, hw); w.j < end; w.next(hw)) {
    const uint32_t i = w.index(ch, c, hw);
    const float dz = ld(y[i]) > 0.f ? ld(dy[i]) : 0.f;
    s += dz;
    dot += (double)dz * (ld(x[i]) - mu);
  }
  if (!finish_channel(s, dot, partials, counters)) return;
  dbeta[ch] = (float)s;
  dgamma[ch] = (float)(dot / sqrt((double)var[ch] + eps));
}

// dx of BatchNorm+ReLU; with batch statistics the mean and variance terms included.
template <typename T>
__device__ void bn_relu_bwd_dx(const T *x, const T *y, const T *dy, const float *mean,
                               const float *var, const float *gamma, const float *dgamma,
                               const float *dbeta, float eps, uint32_t c, uint32_t hw,
                               uint32_t total, int batch_stats, T *dx) {
  const size_t base = (size_t)blockIdx.x * hw;
  if (base >= total) return;
  const uint32_t ch = blockIdx.x % c;
  const float m = (float)(total / c);
  const float invstd = 1.f / sqrtf(var[ch] + eps);
  const float k = gamma[ch] * invstd;
  const float mu = mean[ch], dg = dgamma[ch], db_over_m = dbeta[ch] / m;
  for (uint32_t p = threadIdx.x; p < hw; p += blockDim.x) {
    const size_t i = base + p;
    const float dz = ld(y[i]) > 0.f ? ld(dy[i]) : 0.f;
    if (batch_stats) {
      const float xhat = (ld(x[i]) - mu) * invstd;
      dx[i] = st<T>(k * (dz - db_over_m - xhat * dg / m));
    } else {
      dx[i] = st<T>(k * dz);
    }
  }
}

#define INSTANTIATE(T, SUFFIX)                                                                \
  extern "C" __global__ void bn_stats_##SUFFIX(const T *x, uint32_t n, uint32_t c,           \
                                               uint32_t hw, float *stats, float *rm,          \
                                               float *rv, float momentum, double *partials,   \
                                               uint32_t *counters) {                          \
    bn_stats<T>(x, n, c, hw, stats, rm, rv, momentum, partials, counters);                    \
  }                                                                                           \
  extern "C" __global__ void channel_sum_##SUFFIX(const T *dy, uint32_t n, uint32_t c,       \
                                                  uint32_t hw, T *sums, double *partials,     \
                                                  uint32_t *counters) {                       \
    channel_sum<T>(dy, n, c, hw, sums, partials, counters);                                   \
  }                                                                                           \
  extern "C" __global__ void add_channel_bias_##SUFFIX(T *y, const T *bias, const T *add,    \
                                                       uint32_t c, uint32_t hw,               \
                                                       uint32_t total) {                      \
    add_channel_bias<T>(y, bias, add, c, hw, total);                                          \
  }                                                                                           \
  extern "C" __global__ void bn_relu_fwd_##SUFFIX(const T *x, const float *mean,              \
                                                  const float *var, const float *gamma,       \
                                                  const float *beta, float eps, uint32_t c,   \
                                                  uint32_t hw, uint32_t total, T *y) {        \
    bn_relu_fwd<T>(x, mean, var, gamma, beta, eps, c, hw, total, y);                          \
  }                                                                                           \
  extern "C" __global__ void bn_relu_bwd_reduce_##SUFFIX(                                     \
      const T *x, const T *y, const T *dy, const float *mean, const float *var, float eps,    \
      uint32_t n, uint32_t c, uint32_t hw, float *dgamma, float *dbeta, double *partials,     \
      uint32_t *counters) {                                                                   \
    bn_relu_bwd_reduce<T>(x, y, dy, mean, var, eps, n, c, hw, dgamma, dbeta, partials,        \
                          counters);                                                          \
  }                                                                                           \
  extern "C" __global__ void bn_relu_bwd_dx_##SUFFIX(                                         \
      const T *x, const T *y, const T *dy, const float *mean, const float *var,               \
      const float *gamma, const float *dgamma, const float *dbeta, float eps, uint32_t c,     \
      uint32_t hw, uint32_t total, int batch_stats, T *dx) {                                  \
    bn_relu_bwd_dx<T>(x, y, dy, mean, var, gamma, dgamma, dbeta, eps, c, hw, total,           \
                      batch_stats, dx);                                                       \
  }

INSTANTIATE(float, f32)
INSTANTIATE(__nv_bfloat16, bf16)

// PyTorch's SGD step in place: d = g + wd·p; buf = μ·buf + d; p −= lr·(nesterov ? d + μ·buf : buf).
// Up to SGD_MAX_TENSORS parameter tensors per launch, passed by value (1,408 bytes of
// kernel parameters); the layout matches `SgdTensors` in mod.rs. blockIdx.y picks the tensor.
#define SGD_MAX_TENSORS 32
struct SgdTensors {
  float *p[SGD_MAX_TENSORS];
  const float *g[SGD_MAX_TENSORS];
  float *buf[SGD_MAX_TENSORS];
  uint32_t n[SGD_MAX_TENSORS];
  float lr[SGD_MAX_TENSORS];
  float momentum[SGD_MAX_TENSORS];
  float wd[SGD_MAX_TENSORS];
  int32_t nesterov[SGD_MAX_TENSORS];
};

// With `lr_on_device` the learning rate is read from there (a captured graph's replays then
// follow the schedule); with `loss` nothing is updated when it is not finite.
extern "C" __global__ void sgd_momentum_f32(const SgdTensors t, const float *lr_on_device,
                                            const float *loss) {
  if (loss != nullptr && !isfinite(*loss)) return;
  const uint32_t k = blockIdx.y;
  float *p = t.p[k], *buf = t.buf[k];
  const float *g = t.g[k];
  const float lr = lr_on_device != nullptr ? *lr_on_device : t.lr[k];
  const float momentum = t.momentum[k], wd = t.wd[k];
  const bool nesterov = t.nesterov[k] != 0;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < t.n[k];
       i += gridDim.x * blockDim.x) {
    const float d = g[i] + wd * p[i];
    const float b = momentum * buf[i] + d;
    if (momentum != 0.f) buf[i] = b;  // PyTorch keeps no buffer without momentum
    p[i] -= lr * (nesterov ? d + momentum * b : b);
  }
}
