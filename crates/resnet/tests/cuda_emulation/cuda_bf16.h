// The CUDA built-ins kernels.cu uses, emulated on the CPU so that its kernels run as C++
// (tests/cuda_kernels.rs). A launch runs its blocks one after another, in an order shuffled by
// a seed; a block's threads are fibers on the calling thread, switched round-robin whenever
// one waits at a barrier (`__syncthreads`, and a warp's barrier around each shuffle), so a
// thread runs until it must wait, one at a time. Shared memory
// is static storage, which one block at a time uses. Included by kernels.cu in place of
// CUDA's own `cuda_bf16.h`.
#pragma once
#include <math.h>
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <random>
#include <utility>
#include <vector>

#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
  uint32_t x = 1, y = 1, z = 1;
};
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emulation {
// A block's thread. Switching saves and restores registers only (_setjmp/_longjmp; a fiber
// starts once per launch through makecontext), with no system call per switch.
struct Fiber {
  ucontext_t start;
  jmp_buf resume;
  std::unique_ptr<char[]> stack{new char[64 * 1024]};  // left uninitialised: never read before written
  dim3 index;
  bool started = false, done = false;
};
inline jmp_buf scheduler;
inline Fiber *current = nullptr;
inline const std::function<void()> *kernel_body = nullptr;
inline std::vector<std::pair<uint32_t, uint32_t>> order;
inline size_t block_number = 0;

inline void yield() {
  if (!_setjmp(current->resume)) _longjmp(scheduler, 1);
}

// `size` fibers meet here; each waits (yielding) until the last one arrives, which first
// runs `on_complete`.
struct Barrier {
  uint32_t size, arrived = 0;
  uint64_t generation = 0;
  void wait(void (*on_complete)() = nullptr) {
    const uint64_t g = generation;
    if (++arrived == size) {
      arrived = 0;
      if (on_complete != nullptr) on_complete();
      ++generation;
      return;
    }
    while (generation == g) yield();
  }
};
inline Barrier block_barrier;
inline std::vector<Barrier> warp_barriers;
inline double exchange[1024];
inline uint32_t linear_thread() { return threadIdx.x + threadIdx.y * blockDim.x; }

inline void next_block() {
  if (++block_number < order.size()) blockIdx = {order[block_number].first, order[block_number].second, 0};
}

// A thread's life: the kernel for every block of the grid, the block's threads meeting at
// its end, the last of them moving the grid on.
inline void run_current() {
  while (block_number < order.size()) {
    (*kernel_body)();
    block_barrier.wait(next_block);
  }
  current->done = true;
  _longjmp(scheduler, 1);
}

// Runs `kernel` on a grid of `grid` blocks of `block` threads, the blocks in an order
// shuffled by `seed` (results must not depend on it).
template <class Kernel> void launch(dim3 grid, dim3 block, uint64_t seed, Kernel kernel) {
  gridDim = grid;
  blockDim = block;
  const uint32_t threads = block.x * block.y * block.z;
  order.clear();
  for (uint32_t y = 0; y < grid.y; ++y)
    for (uint32_t x = 0; x < grid.x; ++x) order.emplace_back(x, y);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
  block_number = 0;
  blockIdx = {order[0].first, order[0].second, 0};
  const std::function<void()> body = kernel;
  kernel_body = &body;
  block_barrier = Barrier{threads};
  warp_barriers.clear();
  for (uint32_t w = 0; w < (threads + 31) / 32; ++w) {
    warp_barriers.push_back(Barrier{std::min(32u, threads - 32 * w)});
  }
  // Kept from launch to launch with their stacks.
  static std::vector<Fiber> pool;
  if (pool.size() < threads) pool.resize(threads);
  const std::span<Fiber> fibers(pool.data(), threads);
  ucontext_t here;
  for (uint32_t t = 0; t < threads; ++t) {
    Fiber &f = fibers[t];
    f.index = {t % block.x, t / block.x % block.y, t / (block.x * block.y)};
    f.started = f.done = false;
    getcontext(&f.start);
    f.start.uc_stack.ss_sp = f.stack.get();
    f.start.uc_stack.ss_size = 64 * 1024;
    f.start.uc_link = nullptr;
    makecontext(&f.start, run_current, 0);
  }
  for (uint32_t live = threads; live > 0;) {
    live = 0;
    for (Fiber &f : fibers) {
      if (f.done) continue;
      current = &f;
      threadIdx = f.index;
      if (!_setjmp(scheduler)) {
        if (f.started) _longjmp(f.resume, 1);
        f.started = true;
        swapcontext(&here, &f.start);
      }
      live += !f.done;
    }
  }
}
}  // namespace emulation

inline void __syncthreads() { emulation::block_barrier.wait(); }
inline void __threadfence() {}
inline uint32_t atomicAdd(uint32_t *p, uint32_t v) {
  const uint32_t old = *p;
  *p = old + v;
  return old;
}
template <class T> T min(T a, T b) { return b < a ? b : a; }

inline double __shfl_down_sync(unsigned, double v, int offset) {
  const uint32_t me = emulation::linear_thread(), lane = me % 32, warp = me / 32;
  emulation::exchange[me] = v;
  emulation::warp_barriers[warp].wait();
  const double r = lane + offset < 32 ? emulation::exchange[me + offset] : v;
  emulation::warp_barriers[warp].wait();
  return r;
}

struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 v) {
  const uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round to nearest even, as the device's conversion.
inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return {0x7fc0};
  u += 0x7fff + ((u >> 16) & 1);
  return {uint16_t(u >> 16)};
}
