/* Element-wise kernels for the training engine's CPU path (model/kernels.py compiles and loads this file).
 *
 * Why C: at batch 128 a training step is ~3 ms of matrix products plus ~40 small element-wise PyTorch ops,
 * each paying ~5-10 us of Python and dispatcher overhead, and the dropout masks came from a generator call per
 * element. Here the dropout mask of a layer is generated, applied and (in the backward) regenerated inside one
 * loop, from a counter-based generator: no mask tensor, no per-element generator call.
 *
 * Exactness contract: the dropout and relu kernels compute exactly what model/masks.py's PyTorch fallback
 * computes, bit for bit (tests/test_kernels.py checks it): masks come from the same SplitMix64 words, and the
 * arithmetic is a single IEEE multiply per element (no contraction into FMAs: the build uses -ffp-contract=off).
 * The loss and bias kernels sum and take exp/log, so they agree with the PyTorch forms to rounding (sums are
 * accumulated in double here, so they are if anything more accurate).
 *
 * The mask stream of a layer (model/masks.py): word j (j = 0, 1, ...) is SplitMix64's output j + 1 from the
 * state `key`; the words are read as signed 16-bit integers s in memory order (element i: the 16 bits at byte
 * 2i of the word array; on little-endian machines bits 16 (i % 4) .. 16 (i % 4) + 15 of word i / 4), and the unit is kept when s < threshold (threshold = keep_units - 32768, so P(keep) = keep_units / 65536).
 * Kept units are multiplied by `scale` (= 65536 / keep_units as a float), dropped ones by 0 (so a NaN stays
 * NaN, as in PyTorch's multiply).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* On x86-64 Linux each hot function is also built for AVX2 and the loader picks the variant the CPU has at run
 * time (GCC/Clang function multi-versioning), so one cached library is safe on any x86-64 machine. The AVX2
 * variants are ~1.6x faster. model/kernels.py retries with MLPLAB_NO_CLONES defined if a compiler refuses. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(MLPLAB_NO_CLONES)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

static inline uint64_t splitmix64_word(uint64_t key, uint64_t j) {
    uint64_t z = key + (j + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The mask stream in blocks: the words of elements [base, base + m) (base a multiple of BLOCK) into s[0..m) as
 * signed 16-bit integers, in memory order (the same reinterpretation as PyTorch's .view(torch.int16)). Two
 * simple loops (hash, then use) vectorise; the per-element form did not. */
#define BLOCK 256
static inline void mask_block(int16_t *s, uint64_t key, int64_t base, int64_t m) {
    uint64_t w[BLOCK / 4];
    int64_t nw = (m + 3) / 4, j0 = base / 4;
    for (int64_t j = 0; j < nw; j++) w[j] = splitmix64_word(key, (uint64_t)(j0 + j));
    memcpy(s, w, (size_t)nw * sizeof w[0]);
}

#define DEFINE_KERNELS(T, SUFFIX)                                                                        \
    /* a <- relu(a) * mask: the forward of a relu layer followed by dropout, in place */                 \
    HOT void mlplab_relu_dropout_forward_##SUFFIX(T *a, int64_t n, uint64_t key, int32_t threshold,    \
                                                  T scale) {                                           \
        int16_t s[BLOCK];                                                                                \
        for (int64_t base = 0; base < n; base += BLOCK) {                                                \
            int64_t m = n - base < BLOCK ? n - base : BLOCK;                                             \
            mask_block(s, key, base, m);                                                                 \
            T *ab = a + base;                                                                            \
            for (int64_t i = 0; i < m; i++) {                                                            \
                T v = ab[i];                                                                             \
                v = v < (T)0 ? (T)0 : v; /* relu; NaN stays NaN */                                      \
                ab[i] = v * (s[i] < threshold ? scale : (T)0);                                           \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
    /* out <- a * mask (dropout after an activation whose backward needs the unmasked output) */        \
    HOT void mlplab_dropout_forward_##SUFFIX(const T *a, T *out, int64_t n, uint64_t key,              \
                                             int32_t threshold, T scale) {                             \
        int16_t s[BLOCK];                                                                                \
        for (int64_t base = 0; base < n; base += BLOCK) {                                                \
            int64_t m = n - base < BLOCK ? n - base : BLOCK;                                             \
            mask_block(s, key, base, m);                                                                 \
            for (int64_t i = 0; i < m; i++) out[base + i] = a[base + i] * (s[i] < threshold ? scale : (T)0); \
        }                                                                                                \
    }                                                                                                    \
    /* g <- g * mask: dropout's backward, the mask regenerated from its key */                            \
    HOT void mlplab_dropout_backward_##SUFFIX(T *g, int64_t n, uint64_t key, int32_t threshold,        \
                                              T scale) {                                               \
        int16_t s[BLOCK];                                                                                \
        for (int64_t base = 0; base < n; base += BLOCK) {                                                \
            int64_t m = n - base < BLOCK ? n - base : BLOCK;                                             \
            mask_block(s, key, base, m);                                                                 \
            for (int64_t i = 0; i < m; i++) g[base + i] *= s[i] < threshold ? scale : (T)0;               \
        }                                                                                                \
    }                                                                                                    \
    /* g <- g * (a > 0 ? scale : 0): relu's backward (scale 1), or relu + dropout's when a is the       \
       masked output (positive exactly where the unit was active and kept; scale = 1 / keep) */         \
    HOT void mlplab_relu_backward_##SUFFIX(T *g, const T *a, int64_t n, T scale) {                      \
        for (int64_t i = 0; i < n; i++) g[i] *= a[i] > (T)0 ? scale : (T)0;                               \
    }

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)

/* Softmax + categorical cross-entropy on integer labels, the engine's usual output layer, in one pass:
 * dz <- (softmax(z) - onehot(y)) * inv_n (the gradient of the mean loss), stats[0] <- sum_i -log softmax(z_i)[y_i],
 * stats[1] <- how many rows have argmax softmax(z_i) == y_i (the first maximum on ties, as torch.argmax).
 * softmax is exp(z - max) / sum(exp(z - max)), the loss log(sum(exp(z - max))) - (z_y - max). A NaN anywhere in a row makes its
 * loss NaN (so divergence is detected). Returns -1, or the first row whose label is outside [0, c) (nothing
 * is read out of bounds; the caller raises). */
#define DEFINE_SOFTMAX_XENT(T, SUFFIX, EXP, LOG)                                                         \
    int64_t mlplab_softmax_xent_##SUFFIX(const T *z, const int64_t *y, T *dz, int64_t n, int64_t c,    \
                                         T inv_n, double *stats) {                                     \
        double loss = 0.0, correct = 0.0;                                                                \
        for (int64_t i = 0; i < n; i++) {                                                                \
            const T *zr = z + i * c;                                                                     \
            T *dr = dz + i * c;                                                                          \
            int64_t label = y[i];                                                                        \
            if (label < 0 || label >= c) return i;                                                       \
            T m = zr[0];                                                                                 \
            for (int64_t k = 1; k < c; k++)                                                              \
                if (zr[k] > m || zr[k] != zr[k]) m = zr[k]; /* a NaN wins, so it propagates */           \
            T s = 0;                                                                                     \
            for (int64_t k = 0; k < c; k++) s += (dr[k] = EXP(zr[k] - m)); /* dz row as scratch */        \
            T lse = LOG(s);                                                                              \
            int64_t best = 0;                                                                            \
            T best_p = -1;                                                                               \
            for (int64_t k = 0; k < c; k++) {                                                            \
                T p = dr[k] / s;                                                                         \
                if (p > best_p) { best_p = p; best = k; }                                                \
                dr[k] = (k == label ? p - (T)1 : p) * inv_n;                                             \
            }                                                                                            \
            loss -= (double)((zr[label] - m) - lse);                                                     \
            correct += best == label;                                                                    \
        }                                                                                                \
        stats[0] = loss;                                                                                 \
        stats[1] = correct;                                                                              \
        return -1;                                                                                       \
    }

/* One torch.optim.SGD step (dampening 0) of a bias p (c,) whose gradient is the column sum of dz (n, c), summed in
 * double: g <- sum + wd p; with momentum: buf <- g on the first step (init = 1), else mu buf + g; Nesterov uses
 * g + mu buf, plain momentum buf; p <- p - lr g. buf is NULL without momentum. Returns 0, or -1 when out of
 * memory (the caller falls back). */
#define DEFINE_BIAS_SGD(T, SUFFIX)                                                                       \
    int mlplab_bias_sgd_##SUFFIX(T *p, T *buf, const T *dz, int64_t n, int64_t c, double lr, double mu, \
                                 double wd, int nesterov, int init) {                                  \
        double *acc = calloc((size_t)c, sizeof(double));                                                 \
        if (acc == NULL) return -1;                                                                      \
        for (int64_t i = 0; i < n; i++)                                                                  \
            for (int64_t k = 0; k < c; k++) acc[k] += dz[i * c + k];                                     \
        for (int64_t k = 0; k < c; k++) {                                                                \
            T g = (T)acc[k];                                                                             \
            if (wd != 0.0) g = g + (T)wd * p[k];                                                         \
            if (buf != NULL) {                                                                           \
                buf[k] = init ? g : (T)mu * buf[k] + g;                                                  \
                g = nesterov ? g + (T)mu * buf[k] : buf[k];                                              \
            }                                                                                            \
            p[k] = p[k] - (T)lr * g;                                                                     \
        }                                                                                                \
        free(acc);                                                                                       \
        return 0;                                                                                        \
    }

DEFINE_SOFTMAX_XENT(float, f32, expf, logf)
DEFINE_SOFTMAX_XENT(double, f64, exp, log)
DEFINE_BIAS_SGD(float, f32)
DEFINE_BIAS_SGD(double, f64)

/* The library's version: model/kernels.py refuses a build whose number differs from its own. */
int mlplab_kernels_version(void) { return 3; }
