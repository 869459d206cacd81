// stepwise's own CUDA kernels, for activations in NCHW or channels-last (NHWC) memory (sizes
// below 2³¹ elements, checked by the caller). Compiled to PTX by build.rs for the `cuda`
// feature and loaded once per device. Per-channel reductions accumulate in double.
#include <cuda_bf16.h>
#include <stdint.h>

// Activations are f32 or bf16 (`T`, converted with `ld`/`st`); statistics, BatchNorm
// parameters and their gradients are f32.
__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T st(float v);
template <> __device__ __forceinline__ float st<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 st<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

// The kernels below are written once against a memory layout `L`, which says which channel a
// thread serves (`ch`, valid when `ok`) and walks the thread's share of that channel's
// elements (`each`, calling f(element index)). Reductions also `finish`: combine the threads'
// partial sums into the channel's totals. All take the sizes (n, c, hw) of an (N, C, H·W)
// tensor; in channels-last memory its N·HW rows of C channels.

// ---- Per-channel reductions ----
// A reduction runs on a (splits, channel groups) grid: each block sums a contiguous share of
// its channels' N·HW elements, writes the partial sums to `partials` (per channel, per
// split), and the last block of its channel group to finish (counted in `counters`, which it
// resets to zero) adds the partials in split order — so results do not depend on block
// scheduling.

// This block's range of the `m` elements (or rows) of its channels.
__device__ __forceinline__ void share(uint32_t m, uint32_t &begin, uint32_t &end) {
  const uint32_t chunk = (m + gridDim.x - 1) / gridDim.x;
  begin = min(m, blockIdx.x * chunk);
  end = min(m, begin + chunk);
}

// Thread (tx, ty)'s sums (a, b) written to its block's partials when it holds its channel's
// block total; returns whether this block is the last of its channel group to get there
// (then the same for every thread of the block).
__device__ bool publish(bool holds_total, uint32_t ch, double a, double b, double *partials,
                        uint32_t *counters) {
  __shared__ bool last;
  const uint32_t splits = gridDim.x;
  if (holds_total) {
    double *mine = partials + 2 * ((size_t)ch * splits + blockIdx.x);
    mine[0] = a;
    mine[1] = b;
    __threadfence();
  }
  __syncthreads();
  if (threadIdx.x == 0 && threadIdx.y == 0) {
    last = atomicAdd(&counters[blockIdx.y], 1u) == splits - 1;
  }
  __syncthreads();
  return last;
}

// In the last block: channel `ch`'s totals, the partials added in split order; the counter
// reset by thread (0, 0).
__device__ void collect(uint32_t ch, double &a, double &b, double *partials,
                        uint32_t *counters) {
  __threadfence();
  const uint32_t splits = gridDim.x;
  const volatile double *all = partials + 2 * (size_t)ch * splits;
  a = 0.0;
  b = 0.0;
  for (uint32_t k = 0; k < splits; ++k) {
    a += all[2 * k];
    b += all[2 * k + 1];
  }
  if (threadIdx.x == 0 && threadIdx.y == 0) counters[blockIdx.y] = 0;
}

// Sums `a` and `b` over a one-dimensional block; the result is valid in thread 0.
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

// NCHW: one channel per block row (blockIdx.y), 256 threads over the block's share of its
// N·HW elements: element j = begin + threadIdx.x, then blockDim.x apart, kept as
// (image, position) so that finding it takes no integer division per element.
struct NchwSum {
  uint32_t ch, c, hw, begin, end;
  bool ok = true;
  __device__ NchwSum(uint32_t n, uint32_t c_, uint32_t hw_) : ch(blockIdx.y), c(c_), hw(hw_) {
    share(n * hw, begin, end);
  }
  template <class F> __device__ void each(F f) const {
    uint32_t j = begin + threadIdx.x, img = j / hw, pos = j - img * hw;
    const uint32_t step_img = blockDim.x / hw, step_pos = blockDim.x - step_img * hw;
    for (; j < end; j += blockDim.x) {
      f((size_t)(img * c + ch) * hw + pos);
      img += step_img;
      pos += step_pos;
      if (pos >= hw) {  // both below hw before: one carry at most
        pos -= hw;
        ++img;
      }
    }
  }
  // True in thread 0 of the channel's last block, with (a, b) the channel totals.
  __device__ bool finish(double &a, double &b, double *partials, uint32_t *counters) const {
    block_sum2(a, b);
    if (!publish(threadIdx.x == 0, ch, a, b, partials, counters) || threadIdx.x != 0) {
      return false;
    }
    collect(ch, a, b, partials, counters);
    return true;
  }
};

// Channels-last: 32×8 threads per block, x over a group of 32 adjacent channels (blockIdx.y
// picks the group), so that a warp reads 32 neighbouring values of one row; y over the
// block's share of the N·HW rows, 8 apart.
#define GROUP_CHANNELS 32
#define GROUP_ROWS 8
struct NhwcSum {
  uint32_t ch, c, begin, end;
  bool ok;
  __device__ NhwcSum(uint32_t n, uint32_t c_, uint32_t hw) : c(c_) {
    ch = blockIdx.y * GROUP_CHANNELS + threadIdx.x;
    ok = ch < c;
    share(n * hw, begin, end);
  }
  template <class F> __device__ void each(F f) const {
    if (!ok) return;
    for (uint32_t r = begin + threadIdx.y; r < end; r += GROUP_ROWS) f((size_t)r * c + ch);
  }
  // True in the threads of row 0 of the channel group's last block that serve a channel, with
  // (a, b) their channel's totals.
  __device__ bool finish(double &a, double &b, double *partials, uint32_t *counters) const {
    __shared__ double sa[GROUP_ROWS][GROUP_CHANNELS], sb[GROUP_ROWS][GROUP_CHANNELS];
    const uint32_t x = threadIdx.x, y = threadIdx.y;
    sa[y][x] = a;
    sb[y][x] = b;
    __syncthreads();
    if (y == 0) {
      for (uint32_t k = 1; k < GROUP_ROWS; ++k) {
        a += sa[k][x];
        b += sb[k][x];
      }
    }
    if (!publish(y == 0 && ok, ch, a, b, partials, counters) || y != 0 || !ok) return false;
    collect(ch, a, b, partials, counters);
    return true;
  }
};

// ---- Elementwise kernels ----
// NCHW: one block per (image, channel) plane, blockIdx.x = image·C + channel, its threads
// over the plane's positions: a thread finds its channel and that channel's constants once
// instead of per element. (A grid of one block for an empty tensor does nothing.)
struct NchwPlane {
  uint32_t ch, hw;
  size_t base;
  bool ok;
  __device__ NchwPlane(uint32_t n, uint32_t c, uint32_t hw_) : hw(hw_) {
    base = (size_t)blockIdx.x * hw;
    ok = base < (size_t)n * c * hw;
    ch = blockIdx.x % c;
  }
  template <class F> __device__ void each(F f) const {
    for (uint32_t p = threadIdx.x; p < hw; p += blockDim.x) f(base + p);
  }
};

// Channels-last: blocks of 32×8 threads as in `NhwcSum`, over all rows (grid-stride).
struct NhwcRows {
  uint32_t ch, c, rows;
  bool ok;
  __device__ NhwcRows(uint32_t n, uint32_t c_, uint32_t hw) : c(c_), rows(n * hw) {
    ch = blockIdx.y * GROUP_CHANNELS + threadIdx.x;
    ok = ch < c;
  }
  template <class F> __device__ void each(F f) const {
    for (uint32_t r = blockIdx.x * GROUP_ROWS + threadIdx.y; r < rows;
         r += gridDim.x * GROUP_ROWS) {
      f((size_t)r * c + ch);
    }
  }
};

// stats[ch] = batch mean, stats[c + ch] = biased batch variance; with `running_mean`
// non-null also the running averages (unbiased variance), as PyTorch.
template <typename T, typename L>
__device__ void bn_stats(const T *x, uint32_t n, uint32_t c, uint32_t hw, float *stats,
                         float *running_mean, float *running_var, float momentum,
                         double *partials, uint32_t *counters) {
  const L e(n, c, hw);
  double s = 0.0, ss = 0.0;
  e.each([&](size_t i) {
    const double v = ld(x[i]);
    s += v;
    ss += v * v;
  });
  if (!e.finish(s, ss, partials, counters)) return;
  const uint32_t ch = e.ch, m = n * hw;
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
template <typename T, typename L>
__device__ void channel_sum(const T *dy, uint32_t n, uint32_t c, uint32_t hw, T *sums,
                            double *partials, uint32_t *counters) {
  const L e(n, c, hw);
  double s = 0.0, unused = 0.0;
  e.each([&](size_t i) { s += ld(dy[i]); });
  if (e.finish(s, unused, partials, counters)) sums[e.ch] = st<T>((float)s);
}

// y = (y + bias[ch]) [+ add]: a convolution's bias and, in a residual block, its shortcut,
// in place on its output.
template <typename T, typename L>
__device__ void add_channel_bias(T *y, const T *bias, const T *add, uint32_t n, uint32_t c,
                                 uint32_t hw) {
  const L e(n, c, hw);
  if (!e.ok) return;
  const float b = ld(bias[e.ch]);
  e.each([&](size_t i) {
    // (y + bias) + add: the order of the separate additions, so f32 values stay the same.
    float v = ld(y[i]) + b;
    if (add != nullptr) v += ld(add[i]);
    y[i] = st<T>(v);
  });
}

__device__ __forceinline__ float relu(float v) { return v <= 0.f ? 0.f : v; }  // keeps NaN

// y = relu(γ·(x − μ)/√(σ² + ε) + β) with μ = mean[ch], σ² = var[ch]: the batch's statistics
// (the two halves of `bn_stats`' output) or the running ones.
template <typename T, typename L>
__device__ void bn_relu_fwd(const T *x, const float *mean, const float *var, const float *gamma,
                            const float *beta, float eps, uint32_t n, uint32_t c, uint32_t hw,
                            T *y) {
  const L e(n, c, hw);
  if (!e.ok) return;
  const uint32_t ch = e.ch;
  const float scale = gamma[ch] / sqrtf(var[ch] + eps);
  const float shift = beta[ch] - mean[ch] * scale;
  e.each([&](size_t i) { y[i] = st<T>(relu(ld(x[i]) * scale + shift)); });
}

// dbeta = Σ dz, dgamma = Σ dz·x̂ with dz = dy where y > 0.
template <typename T, typename L>
__device__ void bn_relu_bwd_reduce(const T *x, const T *y, const T *dy, const float *mean,
                                   const float *var, float eps, uint32_t n, uint32_t c,
                                   uint32_t hw, float *dgamma, float *dbeta, double *partials,
                                   uint32_t *counters) {
  const L e(n, c, hw);
  const float mu = e.ok ? mean[e.ch] : 0.f;
  double s = 0.0, dot = 0.0;
  e.each([&](size_t i) {
    const float dz = ld(y[i]) > 0.f ? ld(dy[i]) : 0.f;
    s += dz;
    dot += (double)dz * (ld(x[i]) - mu);
  });
  if (!e.finish(s, dot, partials, counters)) return;
  dbeta[e.ch] = (float)s;
  dgamma[e.ch] = (float)(dot / sqrt((double)var[e.ch] + eps));
}

// dx of BatchNorm+ReLU; with batch statistics the mean and variance terms included.
template <typename T, typename L>
__device__ void bn_relu_bwd_dx(const T *x, const T *y, const T *dy, const float *mean,
                               const float *var, const float *gamma, const float *dgamma,
                               const float *dbeta, float eps, uint32_t n, uint32_t c,
                               uint32_t hw, int batch_stats, T *dx) {
  const L e(n, c, hw);
  if (!e.ok) return;
  const uint32_t ch = e.ch;
  const float m = (float)(n * hw);
  const float invstd = 1.f / sqrtf(var[ch] + eps);
  const float k = gamma[ch] * invstd;
  const float mu = mean[ch], dg = dgamma[ch], db_over_m = dbeta[ch] / m;
  e.each([&](size_t i) {
    const float dz = ld(y[i]) > 0.f ? ld(dy[i]) : 0.f;
    if (batch_stats) {
      const float xhat = (ld(x[i]) - mu) * invstd;
      dx[i] = st<T>(k * (dz - db_over_m - xhat * dg / m));
    } else {
      dx[i] = st<T>(k * dz);
    }
  });
}

// Each kernel instantiated under the names `<kernel>_<dtype>` (NCHW) and
// `<kernel>_nhwc_<dtype>` (channels-last), dtype f32 or bf16.
#define INSTANTIATE(T, SUM, ELEMENTWISE, SUFFIX)                                              \
  extern "C" __global__ void bn_stats_##SUFFIX(const T *x, uint32_t n, uint32_t c,           \
                                               uint32_t hw, float *stats, float *rm,          \
                                               float *rv, float momentum, double *partials,   \
                                               uint32_t *counters) {                          \
    bn_stats<T, SUM>(x, n, c, hw, stats, rm, rv, momentum, partials, counters);               \
  }                                                                                           \
  extern "C" __global__ void channel_sum_##SUFFIX(const T *dy, uint32_t n, uint32_t c,       \
                                                  uint32_t hw, T *sums, double *partials,     \
                                                  uint32_t *counters) {                       \
    channel_sum<T, SUM>(dy, n, c, hw, sums, partials, counters);                              \
  }                                                                                           \
  extern "C" __global__ void add_channel_bias_##SUFFIX(T *y, const T *bias, const T *add,    \
                                                       uint32_t n, uint32_t c, uint32_t hw) { \
    add_channel_bias<T, ELEMENTWISE>(y, bias, add, n, c, hw);                                 \
  }                                                                                           \
  extern "C" __global__ void bn_relu_fwd_##SUFFIX(                                            \
      const T *x, const float *mean, const float *var, const float *gamma, const float *beta, \
      float eps, uint32_t n, uint32_t c, uint32_t hw, T *y) {                                 \
    bn_relu_fwd<T, ELEMENTWISE>(x, mean, var, gamma, beta, eps, n, c, hw, y);                 \
  }                                                                                           \
  extern "C" __global__ void bn_relu_bwd_reduce_##SUFFIX(                                     \
      const T *x, const T *y, const T *dy, const float *mean, const float *var, float eps,    \
      uint32_t n, uint32_t c, uint32_t hw, float *dgamma, float *dbeta, double *partials,     \
      uint32_t *counters) {                                                                   \
    bn_relu_bwd_reduce<T, SUM>(x, y, dy, mean, var, eps, n, c, hw, dgamma, dbeta, partials,   \
                               counters);                                                     \
  }                                                                                           \
  extern "C" __global__ void bn_relu_bwd_dx_##SUFFIX(                                         \
      const T *x, const T *y, const T *dy, const float *mean, const float *var,               \
      const float *gamma, const float *dgamma, const float *dbeta, float eps, uint32_t n,     \
      uint32_t c, uint32_t hw, int batch_stats, T *dx) {                                      \
    bn_relu_bwd_dx<T, ELEMENTWISE>(x, y, dy, mean, var, gamma, dgamma, dbeta, eps, n, c, hw,  \
                                   batch_stats, dx);                                          \
  }

INSTANTIATE(float, NchwSum, NchwPlane, f32)
INSTANTIATE(__nv_bfloat16, NchwSum, NchwPlane, bf16)
INSTANTIATE(float, NhwcSum, NhwcRows, nhwc_f32)
INSTANTIATE(__nv_bfloat16, NhwcSum, NhwcRows, nhwc_bf16)

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
