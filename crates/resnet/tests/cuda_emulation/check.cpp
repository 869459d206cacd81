// kernels.cu's kernels run under the CPU emulation of cuda_bf16.h (beside this file) against
// plain references: every BatchNorm and bias kernel, f32 and bf16, against values computed in
// double from the same stored inputs, each reduction twice (its counters must be reset); the
// SGD kernel against the same float formula, exactly. Reads one case per line from stdin, the
// launches' grid and block (x y z each) as ops/launch.rs gives them:
//   bn LAYOUT N C HW ELEMENTWISE-GRID ELEMENTWISE-BLOCK REDUCTION-GRID REDUCTION-BLOCK
//   sgd TENSORS LENGTH... GRID BLOCK
// and prints each failure; exits non-zero on any. Built and run by tests/cuda_kernels.rs.
#include "cuda_bf16.h"
#include "../../src/ops/cuda/kernels.cu"

#include <cstdio>
#include <string>

enum Layout { NCHW, NHWC };

struct Shape {
  uint32_t n, c, hw;
};

// A launch's (grid, block).
using Launch = std::pair<dim3, dim3>;

// Where element (image, channel, position) lies.
static size_t at(Layout l, Shape s, uint32_t i, uint32_t ch, uint32_t p) {
  return l == NCHW ? ((size_t)i * s.c + ch) * s.hw + p : ((size_t)i * s.hw + p) * s.c + ch;
}

template <class T> struct Kernels {
  void (*stats)(const T *, uint32_t, uint32_t, uint32_t, float *, float *, float *, float,
                double *, uint32_t *);
  void (*sum)(const T *, uint32_t, uint32_t, uint32_t, T *, double *, uint32_t *);
  void (*bias)(T *, const T *, const T *, uint32_t, uint32_t, uint32_t);
  void (*fwd)(const T *, const float *, const float *, const float *, const float *, float,
              uint32_t, uint32_t, uint32_t, T *);
  void (*reduce)(const T *, const T *, const T *, const float *, const float *, float, uint32_t,
                 uint32_t, uint32_t, float *, float *, double *, uint32_t *);
  void (*dx)(const T *, const T *, const T *, const float *, const float *, const float *,
             const float *, const float *, float, uint32_t, uint32_t, uint32_t, int, T *);
};
static const Kernels<float> f32[2] = {
    {bn_stats_f32, channel_sum_f32, add_channel_bias_f32, bn_relu_fwd_f32,
     bn_relu_bwd_reduce_f32, bn_relu_bwd_dx_f32},
    {bn_stats_nhwc_f32, channel_sum_nhwc_f32, add_channel_bias_nhwc_f32, bn_relu_fwd_nhwc_f32,
     bn_relu_bwd_reduce_nhwc_f32, bn_relu_bwd_dx_nhwc_f32}};
static const Kernels<__nv_bfloat16> bf16[2] = {
    {bn_stats_bf16, channel_sum_bf16, add_channel_bias_bf16, bn_relu_fwd_bf16,
     bn_relu_bwd_reduce_bf16, bn_relu_bwd_dx_bf16},
    {bn_stats_nhwc_bf16, channel_sum_nhwc_bf16, add_channel_bias_nhwc_bf16,
     bn_relu_fwd_nhwc_bf16, bn_relu_bwd_reduce_nhwc_bf16, bn_relu_bwd_dx_nhwc_bf16}};

static int failures = 0, checks = 0;

// |got − want| ≤ tolerance·scale for every element.
static void expect(const std::string &what, const std::vector<double> &got,
                   const std::vector<double> &want, double tolerance, double scale) {
  ++checks;
  double worst = 0.0;
  size_t where = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(got[i] - want[i]);
    if (!(e <= worst)) {
      worst = e;
      where = i;
    }
  }
  if (!(worst <= tolerance * scale)) {
    ++failures;
    std::printf("FAIL %s: element %zu is %g, expected %g (error %g > %g)\n", what.c_str(),
                where, got[where], want[where], worst, tolerance * scale);
  }
}

static double max_abs(const std::vector<double> &v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

template <class T> static T store(double v);
template <> float store<float>(double v) { return (float)v; }
template <> __nv_bfloat16 store<__nv_bfloat16>(double v) { return __float2bfloat16((float)v); }

// A tensor of `s` in layout `l`: its stored values, and the same values in NCHW order.
template <class T> struct Tensor {
  std::vector<T> stored;
  std::vector<double> nchw;
  Tensor(Layout l, Shape s, std::mt19937_64 &rng, double scale, double shift) {
    std::normal_distribution<double> normal;
    stored.resize((size_t)s.n * s.c * s.hw);
    nchw.resize(stored.size());
    for (uint32_t i = 0; i < s.n; ++i)
      for (uint32_t ch = 0; ch < s.c; ++ch)
        for (uint32_t p = 0; p < s.hw; ++p) {
          const T v = store<T>(normal(rng) * scale + shift + 0.1 * ch);
          stored[at(l, s, i, ch, p)] = v;
          nchw[at(NCHW, s, i, ch, p)] = ld(v);
        }
  }
};

// Stored values of layout `l` in NCHW order.
template <class T> static std::vector<double> as_nchw(Layout l, Shape s, const std::vector<T> &v) {
  std::vector<double> out(v.size());
  for (uint32_t i = 0; i < s.n; ++i)
    for (uint32_t ch = 0; ch < s.c; ++ch)
      for (uint32_t p = 0; p < s.hw; ++p) out[at(NCHW, s, i, ch, p)] = ld(v[at(l, s, i, ch, p)]);
  return out;
}

template <class T> static std::vector<double> doubles(const std::vector<T> &v) {
  std::vector<double> out;
  for (const T &x : v) out.push_back(ld(x));
  return out;
}

template <class T>
static void check(const char *dtype, const Kernels<T> &k, Layout l, Shape s,
                  Launch elementwise, Launch reduction, double tol, uint64_t seed) {
  const std::string name = std::string(dtype) + (l == NCHW ? " nchw " : " nhwc ") +
                           std::to_string(s.n) + "x" + std::to_string(s.c) + "x" +
                           std::to_string(s.hw) + ": ";
  std::mt19937_64 rng(seed);
  const uint32_t n = s.n, c = s.c, hw = s.hw, m = n * hw;
  const size_t len = (size_t)n * c * hw;
  Tensor<T> x(l, s, rng, 3.0, 2.0), dy(l, s, rng, 1.0, 0.0), add(l, s, rng, 1.0, 0.0);
  auto [egrid, eblock] = elementwise;
  auto [rgrid, rblock] = reduction;
  std::vector<double> partials(std::max<size_t>(2 * c * rgrid.x, 4096));
  std::vector<uint32_t> counters(std::max(c, 1024u));
  auto reduce = [&](auto kernel) {
    for (int run = 0; run < 2; ++run) emulation::launch(rgrid, rblock, seed + run, kernel);
  };
  const float eps = 1e-5f, momentum = 0.1f;

  // Batch statistics and the running update (run twice: the update applies twice).
  std::vector<double> mean(c), var(c);
  for (uint32_t ch = 0; ch < c; ++ch) {
    double sum = 0, sq = 0;
    for (uint32_t i = 0; i < n; ++i)
      for (uint32_t p = 0; p < hw; ++p) {
        const double v = x.nchw[at(NCHW, s, i, ch, p)];
        sum += v;
        sq += v * v;
      }
    mean[ch] = sum / m;
    var[ch] = std::max(sq / m - mean[ch] * mean[ch], 0.0);
  }
  std::vector<float> stats(2 * c), rm(c, 0.5f), rv(c, 2.0f);
  reduce([&] {
    k.stats(x.stored.data(), n, c, hw, stats.data(), rm.data(), rv.data(), momentum,
            partials.data(), counters.data());
  });
  std::vector<double> want_stats(mean), want_rm(c), want_rv(c);
  want_stats.insert(want_stats.end(), var.begin(), var.end());
  for (uint32_t ch = 0; ch < c; ++ch) {
    const double unbiased = m > 1 ? var[ch] * m / (m - 1) : var[ch];
    double a = 0.5, b = 2.0;
    for (int run = 0; run < 2; ++run) {
      a = (float)((1.0 - momentum) * a + momentum * mean[ch]);
      b = (float)((1.0 - momentum) * b + momentum * unbiased);
    }
    want_rm[ch] = a;
    want_rv[ch] = b;
  }
  expect(name + "batch mean and variance", doubles(stats), want_stats, 1e-6, max_abs(want_stats));
  expect(name + "running mean", doubles(rm), want_rm, 1e-6, max_abs(want_rm));
  expect(name + "running variance", doubles(rv), want_rv, 1e-6, max_abs(want_rv));

  // Channel sums (a bias gradient), stored in T.
  std::vector<T> sums(c);
  reduce([&] {
    k.sum(dy.stored.data(), n, c, hw, sums.data(), partials.data(), counters.data());
  });
  std::vector<double> want_sums(c, 0.0);
  double dy_mass = 0.0;
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t ch = 0; ch < c; ++ch)
      for (uint32_t p = 0; p < hw; ++p) {
        want_sums[ch] += dy.nchw[at(NCHW, s, i, ch, p)];
        dy_mass += std::fabs(dy.nchw[at(NCHW, s, i, ch, p)]) / c;
      }
  expect(name + "channel sums", doubles(sums), want_sums, tol, std::max(max_abs(want_sums), 1e-3 * dy_mass));

  // The bias add, with and without an addend, in place.
  std::vector<T> bias(c);
  for (uint32_t ch = 0; ch < c; ++ch) bias[ch] = store<T>(0.25 * ch - 1.0);
  for (bool adding : {false, true}) {
    std::vector<T> y = x.stored;
    emulation::launch(egrid, eblock, seed, [&] {
      k.bias(y.data(), bias.data(), adding ? add.stored.data() : nullptr, n, c, hw);
    });
    std::vector<double> want(len);
    for (uint32_t i = 0; i < n; ++i)
      for (uint32_t ch = 0; ch < c; ++ch)
        for (uint32_t p = 0; p < hw; ++p) {
          const size_t e = at(NCHW, s, i, ch, p);
          float v = (float)x.nchw[e] + ld(bias[ch]);
          if (adding) v += (float)add.nchw[e];
          want[e] = ld(store<T>(v));
        }
    expect(name + (adding ? "bias and addend" : "bias"), as_nchw(l, s, y), want, 0.0, 1.0);
  }

  // BatchNorm+ReLU forward with the batch statistics, then its backward.
  std::vector<float> gamma(c), beta(c);
  for (uint32_t ch = 0; ch < c; ++ch) {
    gamma[ch] = 0.5f + 0.1f * ch;
    beta[ch] = 0.3f - 0.05f * ch;
  }
  const float *mu = stats.data(), *sigma2 = stats.data() + c;
  std::vector<T> y(len);
  emulation::launch(egrid, eblock, seed, [&] {
    k.fwd(x.stored.data(), mu, sigma2, gamma.data(), beta.data(), eps, n, c, hw, y.data());
  });
  std::vector<double> want_y(len), xhat(len);
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t ch = 0; ch < c; ++ch)
      for (uint32_t p = 0; p < hw; ++p) {
        const size_t e = at(NCHW, s, i, ch, p);
        xhat[e] = (x.nchw[e] - mu[ch]) / std::sqrt((double)sigma2[ch] + eps);
        want_y[e] = std::max(gamma[ch] * xhat[e] + beta[ch], 0.0);
      }
  // The kernels compute x·scale + shift, which cancels where the variance is ~0 and the scale
  // large: errors are relative to the largest |x·scale| too.
  double scaled = 0.0;
  for (size_t e = 0; e < len; ++e) {
    const uint32_t ch = (uint32_t)(e / hw % c);
    scaled = std::max(scaled, std::fabs(x.nchw[e] * gamma[ch] / std::sqrt((double)sigma2[ch] + eps)));
  }
  const std::vector<double> got_y = as_nchw(l, s, y);
  expect(name + "batch-norm+relu forward", got_y, want_y, tol, std::max(max_abs(want_y), scaled));

  std::vector<float> params(2 * c);
  float *dgamma = params.data(), *dbeta = params.data() + c;
  reduce([&] {
    k.reduce(x.stored.data(), y.data(), dy.stored.data(), mu, sigma2, eps, n, c, hw, dgamma,
             dbeta, partials.data(), counters.data());
  });
  // The reference takes the kernel's own ReLU mask (y > 0), which rounding may move.
  std::vector<double> dz(len), want_params(2 * c, 0.0);
  for (size_t e = 0; e < len; ++e) dz[e] = got_y[e] > 0 ? dy.nchw[e] : 0.0;
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t ch = 0; ch < c; ++ch)
      for (uint32_t p = 0; p < hw; ++p) {
        const size_t e = at(NCHW, s, i, ch, p);
        want_params[ch] += dz[e] * xhat[e];
        want_params[c + ch] += dz[e];
      }
  expect(name + "gamma and beta gradients", doubles(params), want_params, 1e-4,
         std::max(max_abs(want_params), 1e-3 * dy_mass));
  for (int batch_stats : {0, 1}) {
    std::vector<T> dx(len);
    emulation::launch(egrid, eblock, seed, [&] {
      k.dx(x.stored.data(), y.data(), dy.stored.data(), mu, sigma2, gamma.data(), dgamma, dbeta,
           eps, n, c, hw, batch_stats, dx.data());
    });
    std::vector<double> want(len);
    for (uint32_t i = 0; i < n; ++i)
      for (uint32_t ch = 0; ch < c; ++ch)
        for (uint32_t p = 0; p < hw; ++p) {
          const size_t e = at(NCHW, s, i, ch, p);
          const double k_ = gamma[ch] / std::sqrt((double)sigma2[ch] + eps);
          want[e] = batch_stats ? k_ * (dz[e] - dbeta[ch] / m - xhat[e] * dgamma[ch] / m)
                                : k_ * dz[e];
        }
    expect(name + (batch_stats ? "input gradient (batch statistics)" : "input gradient"),
           as_nchw(l, s, dx), want, tol, max_abs(want));
  }
}

// Four SGD steps of `lengths.size()` tensors in one launch each, with momentum and weight
// decay, Nesterov, and no momentum; the learning rate from the host, then from device
// memory; a non-finite loss must leave everything as it is, a finite one not.
static void check_sgd(const std::vector<uint32_t> &lengths, Launch launch) {
  const size_t tensors = lengths.size();
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal;
  std::vector<std::vector<float>> p(tensors), g(tensors), buf(tensors);
  SgdTensors t{};
  for (size_t k = 0; k < tensors; ++k) {
    for (uint32_t i = 0; i < lengths[k]; ++i) {
      p[k].push_back(normal(rng));
      buf[k].push_back(0.f);
    }
    g[k].resize(lengths[k]);
    t.p[k] = p[k].data();
    t.g[k] = g[k].data();
    t.buf[k] = buf[k].data();
    t.n[k] = lengths[k];
    t.lr[k] = 0.1f;
    t.momentum[k] = k % 3 == 2 ? 0.f : 0.9f;
    t.wd[k] = k % 3 == 1 ? 0.f : 5e-4f;
    t.nesterov[k] = k % 3 == 1;
  }
  auto want_p = p, want_buf = buf;
  float lr_on_device = 0.05f;
  for (int step = 0; step < 4; ++step) {
    for (size_t k = 0; k < tensors; ++k)
      for (float &v : g[k]) v = normal(rng);
    // Step 2 passes a NaN loss, step 3 a finite one; steps 1–3 read the device's rate.
    const float loss = step == 2 ? NAN : 1.f;
    const float *lr = step == 0 ? nullptr : &lr_on_device;
    emulation::launch(launch.first, launch.second, 11 + step,
                      [&] { sgd_momentum_f32(t, lr, step >= 2 ? &loss : nullptr); });
    if (step == 2) continue;
    for (size_t k = 0; k < tensors; ++k) {
      const float rate = lr ? *lr : t.lr[k];
      for (uint32_t i = 0; i < lengths[k]; ++i) {
        const float d = g[k][i] + t.wd[k] * want_p[k][i];
        const float b = t.momentum[k] * want_buf[k][i] + d;
        if (t.momentum[k] != 0.f) want_buf[k][i] = b;
        want_p[k][i] -= rate * (t.nesterov[k] ? d + t.momentum[k] * b : b);
      }
    }
  }
  for (size_t k = 0; k < tensors; ++k) {
    const std::string name = "sgd tensor " + std::to_string(k) + " of " + std::to_string(lengths[k]);
    expect(name + ": parameters", doubles(p[k]), doubles(want_p[k]), 0.0, 1.0);
    expect(name + ": momentum", doubles(buf[k]), doubles(want_buf[k]), 0.0, 1.0);
  }
}

static bool read_dims(std::initializer_list<dim3 *> dims) {
  for (dim3 *d : dims) {
    if (std::scanf("%u %u %u", &d->x, &d->y, &d->z) != 3) return false;
  }
  return true;
}

int main() {
  char kind[8];
  uint64_t seed = 1;
  while (std::scanf("%7s", kind) == 1) {
    Launch elementwise, reduction;
    if (std::string(kind) == "bn") {
      int layout;
      Shape s;
      if (std::scanf("%d %u %u %u", &layout, &s.n, &s.c, &s.hw) != 4 ||
          !read_dims({&elementwise.first, &elementwise.second, &reduction.first, &reduction.second})) {
        return 2;
      }
      const Layout l = layout == 0 ? NCHW : NHWC;
      check("f32", f32[l], l, s, elementwise, reduction, 1e-5, seed++);
      check("bf16", bf16[l], l, s, elementwise, reduction, 2e-2, seed++);
    } else if (std::string(kind) == "sgd") {
      size_t tensors;
      if (std::scanf("%zu", &tensors) != 1 || tensors > SGD_MAX_TENSORS) return 2;
      std::vector<uint32_t> lengths(tensors);
      for (uint32_t &n : lengths) {
        if (std::scanf("%u", &n) != 1) return 2;
      }
      if (!read_dims({&elementwise.first, &elementwise.second})) return 2;
      check_sgd(lengths, elementwise);
    } else {
      return 2;
    }
  }
  std::printf("%d of %d checks failed\n", failures, checks);
  return failures == 0 && checks > 0 ? 0 : 1;
}
