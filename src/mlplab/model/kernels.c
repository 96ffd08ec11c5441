/* The training engine's compiled CPU code (model/kernels.py builds and loads this file on first use).
 *
 * Why C: at batch 128 a training step is ~3 ms of matrix products plus ~40 small element-wise PyTorch ops, each
 * paying ~5-10 us of Python and dispatcher overhead, and dropout masks cost a generator call per element. Here
 * a layer's dropout mask is generated, applied and (in the backward) regenerated inside one loop from a
 * counter-based generator, and for the common nets the whole step is one call (mlplab_train_step, at the end).
 *
 * Exactness contract: the dropout and relu kernels compute exactly what model/masks.py's PyTorch forms compute,
 * bit for bit (tests/test_kernels.py checks it): masks come from the same SplitMix64 words, and the arithmetic is
 * a single IEEE multiply per element (no contraction into FMAs: the build uses -ffp-contract=off). The loss,
 * bias and whole-step code sums and takes exp/log, so it agrees with the PyTorch forms to rounding (bias sums
 * are accumulated in double here).
 *
 * The mask stream of a layer (model/masks.py): word j (j = 0, 1, ...) is SplitMix64's output j + 1 from the state
 * `key`; the words are read as signed 16-bit integers s in memory order (element i: the 16 bits at byte 2i of
 * the word array; on little-endian machines bits 16 (i % 4) .. 16 (i % 4) + 15 of word i / 4), and the unit is
 * kept when s < threshold (threshold = keep_units - 32768, so P(keep) = keep_units / 65536). Kept units are
 * multiplied by `scale` (= 65536 / keep_units as a float), dropped ones by 0 (so a NaN stays NaN, as in
 * PyTorch's multiply).
 */
#include <math.h>
#include <stddef.h>
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

/* STMT for every element i of [0, n) with f = its mask factor (scale if kept, else 0), block by block. */
#define FOR_EACH_MASKED(T, n, key, threshold, scale, STMT)                                               \
    do {                                                                                                 \
        int16_t s_[BLOCK];                                                                               \
        for (int64_t base_ = 0; base_ < (n); base_ += BLOCK) {                                           \
            int64_t m_ = (n) - base_ < BLOCK ? (n) - base_ : BLOCK;                                      \
            mask_block(s_, (key), base_, m_);                                                            \
            for (int64_t j_ = 0; j_ < m_; j_++) {                                                        \
                int64_t i = base_ + j_;                                                                  \
                T f = s_[j_] < (threshold) ? (scale) : (T)0;                                             \
                STMT;                                                                                    \
            }                                                                                            \
        }                                                                                                \
    } while (0)

#define DEFINE_KERNELS(T, SUFFIX)                                                                        \
    /* a <- relu(a) * mask: the forward of a relu layer followed by dropout, in place (NaN stays NaN) */ \
    HOT void mlplab_relu_dropout_forward_##SUFFIX(T *a, int64_t n, uint64_t key, int32_t threshold,    \
                                                  T scale) {                                           \
        FOR_EACH_MASKED(T, n, key, threshold, scale, a[i] = (a[i] < (T)0 ? (T)0 : a[i]) * f);            \
    }                                                                                                    \
    /* out <- a * mask (dropout after an activation whose backward needs the unmasked output) */        \
    HOT void mlplab_dropout_forward_##SUFFIX(const T *a, T *out, int64_t n, uint64_t key,              \
                                             int32_t threshold, T scale) {                             \
        FOR_EACH_MASKED(T, n, key, threshold, scale, out[i] = a[i] * f);                                 \
    }                                                                                                    \
    /* g <- g * mask: dropout's backward, the mask regenerated from its key */                            \
    HOT void mlplab_dropout_backward_##SUFFIX(T *g, int64_t n, uint64_t key, int32_t threshold,        \
                                              T scale) {                                               \
        FOR_EACH_MASKED(T, n, key, threshold, scale, g[i] *= f);                                         \
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
 * softmax is exp(z - max) / sum(exp(z - max)) and the loss log(sum(exp(z - max))) - (z_y - max). A NaN anywhere
 * in a row makes its loss NaN (so divergence is detected). Returns -1, or the first row whose label is outside
 * [0, c) (nothing is read out of bounds; the caller raises). */
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
 * memory (the caller falls back; nothing was changed). */
#define DEFINE_BIAS_SGD(T, SUFFIX)                                                                       \
    static void bias_sgd_core_##SUFFIX(T *p, T *buf, const T *dz, int64_t n, int64_t c, double lr, double mu, \
                                       double wd, int nesterov, int init, double *acc) {                 \
        memset(acc, 0, (size_t)c * sizeof(double));                                                      \
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
    }                                                                                                    \
    int mlplab_bias_sgd_##SUFFIX(T *p, T *buf, const T *dz, int64_t n, int64_t c, double lr, double mu, \
                                 double wd, int nesterov, int init) {                                  \
        double *acc = malloc((size_t)c * sizeof(double));                                                \
        if (acc == NULL) return -1;                                                                      \
        bias_sgd_core_##SUFFIX(p, buf, dz, n, c, lr, mu, wd, nesterov, init, acc);                       \
        free(acc);                                                                                       \
        return 0;                                                                                        \
    }

DEFINE_SOFTMAX_XENT(float, f32, expf, logf)
DEFINE_SOFTMAX_XENT(double, f64, exp, log)
DEFINE_BIAS_SGD(float, f32)
DEFINE_BIAS_SGD(double, f64)

/* ---------------------------------------------------------------------------------------------------------------
 * The whole training step of a plain MLP in one call (model/compiled_step.py decides when it applies): hidden
 * layers relu or linear, each optionally followed by dropout, a softmax output with categorical cross-entropy on
 * integer labels, and torch.optim.SGD's update (momentum, Nesterov, weight decay) fused into the backward as
 * model/fused_sgd.py does it. The matrix products go to the BLAS that PyTorch itself uses (its exported
 * Fortran-interface gemm, passed in as a function pointer, so this library links no BLAS); everything else is
 * the kernels above. Why: at batch 128 the step is ~3 ms of products, and calling them from Python one op at a
 * time added ~0.1 ms of interpreter and dispatcher work per step, a few percent that no single op could win back.
 *
 * Row-major (PyTorch) products as column-major BLAS calls: a row-major r x c matrix is its column-major
 * transpose with leading dimension c. So Z = H W^T (H n x d, W u x d) is Z^T = W^T^T H^T: gemm(T, N, u, n, d);
 * dH = dZ W is dH^T = W^T dZ^T: gemm(N, N, d, n, u); W += a dZ^T H is W^T += a H^T dZ: gemm(N, T, d, u, n).
 *
 * The arguments are one mlplab_step (below), mirrored field for field by model/kernels.py's Step and Layer
 * (ctypes.Structure); mlplab_step_layout reports sizes and offsets so a mismatch is refused, never misread.
 * Returns -1, or the first batch row whose label is outside [0, c), or -2 when out of memory (nothing is changed
 * in both cases). */
typedef struct {
    void *weight, *bias;                    /* (u x d), (u) */
    void *weight_momentum, *bias_momentum;  /* NULL without momentum */
    void *scratch;                          /* u x d: the gradient on a first momentum step and with Nesterov */
    void *z;                                /* n x u: the layer's output, activated and masked in place */
    void *dh;                               /* n x d: the gradient w.r.t. its input; NULL for layer 0 */
    int64_t units;                          /* u */
    int32_t flags;                          /* hidden layers: MLPLAB_RELU | MLPLAB_DROPOUT */
    int32_t threshold;                      /* dropout constants and this step's key */
    double scale;
    uint64_t key;
    void *weight_bf16;                      /* bf16 only: u x d, the weights rounded to bf16 for this step */
    void *z_bf16;                           /* bf16 only: n x u, the output rounded (the next product's input) */
    void *dz_bf16;                          /* bf16 only: n x u, the output gradient rounded */
} mlplab_layer;

typedef struct {
    void *gemm;                             /* the BLAS gemm of the step's type (Fortran interface) */
    mlplab_layer *layers;
    const void *x;                          /* n x input_dim */
    const int64_t *y;                       /* n labels */
    void *dz_out;                           /* n x c: the output layer's gradient */
    int64_t n, input_dim;
    double lr, momentum, weight_decay;
    int32_t n_layers, nesterov, init;       /* init: the first momentum step */
    double stats[2];                        /* out: loss sum, correct count */
    void *gemm_bf16;                        /* bf16 only: MKL's cblas_gemm_bf16bf16f32 */
    void *x_bf16;                           /* bf16 only: n x input_dim, the batch rounded */
} mlplab_step;

#define MLPLAB_RELU 1    /* model/activations.py's COMPILED_RELU */
#define MLPLAB_DROPOUT 2 /* and COMPILED_DROPOUT */

#define DEFINE_STEP(T, SUFFIX)                                                                            \
    typedef void (*gemm_##SUFFIX##_t)(const char *, const char *, const int *, const int *, const int *,  \
                                      const T *, const T *, const int *, const T *, const int *, const T *, \
                                      T *, const int *);                                                 \
    static void gemm_call_##SUFFIX(gemm_##SUFFIX##_t g, char ta, char tb, int64_t m, int64_t n_, int64_t k, \
                                   double alpha, const T *a, int64_t lda, const T *b, int64_t ldb,        \
                                   double beta, T *c, int64_t ldc) {                                      \
        int mi = (int)m, ni = (int)n_, ki = (int)k, la = (int)lda, lb = (int)ldb, lc = (int)ldc;          \
        T al = (T)alpha, be = (T)beta;                                                                    \
        g(&ta, &tb, &mi, &ni, &ki, &al, a, &la, b, &lb, &be, c, &lc);                                     \
    }                                                                                                     \
    int64_t mlplab_train_step_##SUFFIX(mlplab_step *s) {                                                \
        gemm_##SUFFIX##_t g = (gemm_##SUFFIX##_t)s->gemm;                                                 \
        mlplab_layer *ly = s->layers;                                                                     \
        int32_t L = s->n_layers, nesterov = s->nesterov, init = s->init;                                  \
        int64_t n = s->n, c = ly[L - 1].units;                                                            \
        double lr = s->lr, mu = s->momentum, wd = s->weight_decay;                                        \
        const T *x = (const T *)s->x;                                                                     \
        const int64_t *y = s->y;                                                                          \
        T *dz_out = (T *)s->dz_out;                                                                       \
        for (int64_t i = 0; i < n; i++)                                                                   \
            if (y[i] < 0 || y[i] >= c) return i; /* checked first: a bad label changes nothing */         \
        int64_t widest = 0;                                                                               \
        for (int32_t l = 0; l < L; l++) widest = ly[l].units > widest ? ly[l].units : widest;             \
        double *acc = malloc((size_t)widest * sizeof(double)); /* bias gradient sums */                   \
        if (acc == NULL) return -2; /* before anything changed */                                        \
        const T *h = x;                                                                                   \
        for (int32_t l = 0; l < L; l++) { /* forward */                                                   \
            int64_t d = l == 0 ? s->input_dim : ly[l - 1].units, u = ly[l].units;                         \
            const T *W = (const T *)ly[l].weight, *b = (const T *)ly[l].bias;                             \
            T *z = (T *)ly[l].z;                                                                          \
            for (int64_t i = 0; i < n; i++) memcpy(z + i * u, b, (size_t)u * sizeof(T));                  \
            gemm_call_##SUFFIX(g, 'T', 'N', u, n, d, 1.0, W, d, h, d, 1.0, z, u);                         \
            if (l < L - 1) {                                                                              \
                int relu = ly[l].flags & MLPLAB_RELU, drop = ly[l].flags & MLPLAB_DROPOUT;                \
                if (relu && drop)                                                                         \
                    mlplab_relu_dropout_forward_##SUFFIX(z, n * u, ly[l].key, ly[l].threshold, (T)ly[l].scale); \
                else if (drop) /* linear: the backward needs nothing from the output, mask in place */    \
                    mlplab_dropout_backward_##SUFFIX(z, n * u, ly[l].key, ly[l].threshold, (T)ly[l].scale); \
                else if (relu)                                                                            \
                    for (int64_t i = 0; i < n * u; i++) z[i] = z[i] < (T)0 ? (T)0 : z[i];                 \
            }                                                                                             \
            h = z;                                                                                        \
        }                                                                                                 \
        mlplab_softmax_xent_##SUFFIX((const T *)ly[L - 1].z, y, dz_out, n, c, (T)(1.0 / (double)n),     \
                                     s->stats);                                                           \
        T *dz = dz_out;                                                                                   \
        for (int32_t l = L - 1; l >= 0; l--) { /* backward, each layer stepped once its dh is taken */    \
            int64_t d = l == 0 ? s->input_dim : ly[l - 1].units, u = ly[l].units;                         \
            T *W = (T *)ly[l].weight, *b = (T *)ly[l].bias;                                               \
            T *wbuf = (T *)ly[l].weight_momentum, *bbuf = (T *)ly[l].bias_momentum, *G = (T *)ly[l].scratch; \
            T *dh = (T *)ly[l].dh;                                                                        \
            const T *h_in = l == 0 ? x : (const T *)ly[l - 1].z;                                          \
            int64_t wn = u * d;                                                                           \
            if (l > 0) gemm_call_##SUFFIX(g, 'N', 'N', d, n, u, 1.0, W, d, dz, u, 0.0, dh, d);            \
            if (mu == 0.0) { /* p <- (1 - lr wd) p - lr G: one product */                                 \
                gemm_call_##SUFFIX(g, 'N', 'T', d, u, n, -lr, h_in, d, dz, u, 1.0 - lr * wd, W, d);       \
            } else if (!init && !nesterov) { /* buf <- mu buf + G (+ wd p); p <- p - lr buf */            \
                gemm_call_##SUFFIX(g, 'N', 'T', d, u, n, 1.0, h_in, d, dz, u, mu, wbuf, d);               \
                if (wd != 0.0)                                                                            \
                    for (int64_t i = 0; i < wn; i++) wbuf[i] = wbuf[i] + (T)wd * W[i];                    \
                for (int64_t i = 0; i < wn; i++) W[i] = W[i] + (T)(-lr) * wbuf[i];                        \
            } else { /* the first momentum step, or Nesterov: the gradient itself is needed */            \
                gemm_call_##SUFFIX(g, 'N', 'T', d, u, n, 1.0, h_in, d, dz, u, 0.0, G, d);                 \
                /* bias_sgd_core's update, written out: sharing a per-element helper with it stopped GCC   \
                   from vectorising this loop (-fopt-info-vec), and Nesterov runs it every step */         \
                for (int64_t i = 0; i < wn; i++) {                                                        \
                    T gi = wd != 0.0 ? G[i] + (T)wd * W[i] : G[i];                                        \
                    wbuf[i] = init ? gi : (T)mu * wbuf[i] + gi;                                           \
                    gi = nesterov ? gi + (T)mu * wbuf[i] : wbuf[i];                                       \
                    W[i] = W[i] + (T)(-lr) * gi;                                                          \
                }                                                                                         \
            }                                                                                             \
            bias_sgd_core_##SUFFIX(b, mu == 0.0 ? NULL : bbuf, dz, n, u, lr, mu, wd, nesterov, init, acc); \
            if (l == 0) break;                                                                            \
            const mlplab_layer *prev = &ly[l - 1];                                                        \
            int relu = prev->flags & MLPLAB_RELU, drop = prev->flags & MLPLAB_DROPOUT;                    \
            const T *a = (const T *)prev->z;                                                              \
            if (relu) /* a is the masked output: positive exactly where active and kept */               \
                mlplab_relu_backward_##SUFFIX(dh, a, d * n, drop ? (T)prev->scale : (T)1);                \
            else if (drop)                                                                                \
                mlplab_dropout_backward_##SUFFIX(dh, d * n, prev->key, prev->threshold, (T)prev->scale);  \
            dz = dh;                                                                                      \
        }                                                                                                 \
        free(acc);                                                                                        \
        return -1;                                                                                        \
    }

DEFINE_STEP(float, f32)
DEFINE_STEP(double, f64)

/* ---------------------------------------------------------------------------------------------------------------
 * The same whole step in bf16 mixed precision (float32 only): every matrix product takes bfloat16 inputs and
 * accumulates into float32 (mlplab_gemm_bf16 below, or MKL's cblas_gemm_bf16bf16f32 where that is the faster: passed
 * in as gemm_bf16, see kernels.py);
 * the weights, momentum buffers, biases, activations, masks, loss and softmax stay float32, exactly as in the
 * float32 step. The inputs of each product are rounded to bf16 just before it (round to nearest even, as
 * PyTorch's .to(torch.bfloat16)): the batch, each layer's output (after relu and dropout), each output gradient,
 * and the weights once per step. The SGD update stays folded into the weight-gradient product, whose float32
 * output is the master weight itself (beta = 1 - lr wd) or the momentum buffer. */
typedef void (*gemm_bf16_t)(int layout, int transa, int transb, int m, int n, int k, float alpha, const uint16_t *a,
                            int lda, const uint16_t *b, int ldb, float beta, float *c, int ldc);
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 }; /* CBLAS's enum values */

/* float32 -> bfloat16, round to nearest even; NaN stays a (quiet) NaN */
HOT void mlplab_to_bf16(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], sizeof u);
        dst[i] = (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40u)
                                                : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * A bf16 GEMM with float32 accumulation and output, on AVX512-BF16's dot-product instruction (VDPBF16PS), with
 * CBLAS's row-major interface (cblas_gemm_bf16bf16f32's arguments): C = alpha op(A) op(B) + beta C.
 *
 * Why our own: MKL's cblas_gemm_bf16bf16f32 in PyTorch's library does not use the bf16 instructions on AMD CPUs
 * (measured here on an EPYC with avx512_bf16: 155 GFLOP/s, the float32 sgemm's speed, against 500-680 for
 * oneDNN's bf16 matmul), and oneDNN's float32-output bf16 GEMM is not exported. VDPBF16PS takes, in each 32-bit
 * lane, a pair of bf16 values along k from each operand: B is packed once per call into pairs of rows ("VNNI"
 * layout, P[kp][j] = B[2kp][j] | B[2kp + 1][j] << 16, columns padded to a multiple of 64), and A's pairs are
 * broadcast straight from A when A is not transposed (its rows hold them side by side) or from a packed copy when
 * it is. A 6 x 64 block of C is held in 24 registers while k runs; blocks are split between OpenMP threads.
 * The sums are float32 in a fixed order (pairs of products, then along k), so results are deterministic for a
 * given thread count and shape, but not bit-equal to MKL's or oneDNN's orders. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(MLPLAB_NO_CLONES) && (defined(__clang__) || __GNUC__ >= 10)
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define GEMM_MR 6
#define GEMM_NR 64

static int gemm_threads = 1;
void mlplab_gemm_bf16_set_threads(int n) { gemm_threads = n < 1 ? 1 : n; }

/* whether this CPU runs the kernel: AVX512-BF16 (and the AVX-512 subsets the target line names) */
int mlplab_gemm_bf16_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

/* dst[j] = r0[j] | r1[j] << 16 for j < n (r1 NULL: zeros) */
BF16_TARGET static void pair_rows(const uint16_t *r0, const uint16_t *r1, uint32_t *dst, int64_t n) {
    static const uint16_t order[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i idx = _mm512_loadu_si512(order);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m256i lo = _mm256_loadu_si256((const __m256i *)(r0 + j));
        __m256i hi = r1 ? _mm256_loadu_si256((const __m256i *)(r1 + j)) : _mm256_setzero_si256();
        __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        _mm512_storeu_si512(dst + j, _mm512_permutexvar_epi16(idx, both));
    }
    for (; j < n; j++) dst[j] = (uint32_t)r0[j] | (r1 ? (uint32_t)r1[j] << 16 : 0u);
}

/* columns [j0, j1) of P (ceil(k/2) x np words) from op(B) (k x n): pairs of consecutive k for each column, zero
 * padding past n (up to j1 <= np) */
BF16_TARGET static void pack_b(int transb, int64_t n, int64_t k, const uint16_t *b, int64_t ldb, uint32_t *p,
                               int64_t np, int64_t j0, int64_t j1) {
    int64_t kc = (k + 1) / 2, jn = j1 < n ? j1 : n; /* columns [j0, jn) hold data, [jn, j1) zeros */
    const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int64_t kp = 0; kp < kc; kp++) {
        uint32_t *row = p + kp * np;
        int full = 2 * kp + 1 < k;
        if (!transb) {
            if (jn > j0) pair_rows(b + 2 * kp * ldb + j0, full ? b + (2 * kp + 1) * ldb + j0 : NULL, row + j0, jn - j0);
        } else if (full && n * ldb < (int64_t)1 << 30) { /* op(B)[kk][j] = b[j ldb + kk]: a pair is one word */
            const __m512i step = _mm512_mullo_epi32(lanes, _mm512_set1_epi32((int)ldb));
            const uint16_t *base = b + 2 * kp;
            int64_t j = j0;
            for (; j + 16 <= jn; j += 16)
                _mm512_storeu_si512(row + j, _mm512_i32gather_epi32(step, (const void *)(base + j * ldb), 2));
            if (j < jn) {
                __mmask16 m = (__mmask16)((1u << (jn - j)) - 1);
                __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, step,
                                                        (const void *)(base + j * ldb), 2);
                _mm512_mask_storeu_epi32(row + j, m, v);
            }
        } else {
            for (int64_t j = j0; j < jn; j++)
                row[j] = (uint32_t)b[j * ldb + 2 * kp] | (full ? (uint32_t)b[j * ldb + 2 * kp + 1] << 16 : 0u);
        }
        for (int64_t j = jn > j0 ? jn : j0; j < j1; j++) row[j] = 0;
    }
}

/* acc[r][v] += A's pair w[r] (two bf16 in one word) . B's pairs for the 64 columns of the packed row pk */
BF16_TARGET static inline __attribute__((always_inline)) void accumulate_pairs(__m512 acc[GEMM_MR][4],
                                                                             const uint32_t *pk,
                                                                             const uint32_t w[GEMM_MR]) {
    __m512bh b0 = (__m512bh)_mm512_loadu_si512(pk), b1 = (__m512bh)_mm512_loadu_si512(pk + 16);
    __m512bh b2 = (__m512bh)_mm512_loadu_si512(pk + 32), b3 = (__m512bh)_mm512_loadu_si512(pk + 48);
#pragma GCC unroll 6
    for (int r = 0; r < GEMM_MR; r++) {
        __m512bh av = (__m512bh)_mm512_set1_epi32((int)w[r]);
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
        acc[r][2] = _mm512_dpbf16_ps(acc[r][2], av, b2);
        acc[r][3] = _mm512_dpbf16_ps(acc[r][3], av, b3);
    }
}

/* one block of C: rows [0, mr) (mr <= 6) x columns [0, nc) (nc <= 64) of the block at c; A's pair kp of row r
 * is the 32-bit word at a + r rs + kp ks (in bf16 units), B's panel at p with row stride np words */
BF16_TARGET static void block(int64_t k, const uint16_t *a, int64_t rs, int64_t ks, const uint32_t *p, int64_t np,
                              int mr, int64_t nc, float alpha, float beta, float *c, int64_t ldc) {
    __m512 acc[GEMM_MR][4];
    const uint16_t *ar[GEMM_MR];
#pragma GCC unroll 6
    for (int r = 0; r < GEMM_MR; r++) {
        ar[r] = a + (r < mr ? r : mr - 1) * rs; /* rows past the end repeat the last one (not stored) */
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_ps();
    }
    int64_t kh = k / 2;
    uint32_t w[GEMM_MR];
    for (int64_t kp = 0; kp < kh; kp++) {
#pragma GCC unroll 6
        for (int r = 0; r < GEMM_MR; r++) memcpy(&w[r], ar[r] + kp * ks, sizeof w[r]);
        accumulate_pairs(acc, p + kp * np, w);
    }
    if (k & 1) { /* the last k alone: a 16-bit read of A (its pair's other half may lie past A's end) */
#pragma GCC unroll 6
        for (int r = 0; r < GEMM_MR; r++) w[r] = ar[r][kh * ks];
        accumulate_pairs(acc, p + kh * np, w);
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 6
    for (int r = 0; r < GEMM_MR; r++) {
        if (r >= mr) break;
        float *cr = c + r * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            int64_t left = nc - 16 * v;
            if (left <= 0) break;
            __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
            __m512 out = _mm512_mul_ps(va, acc[r][v]);
            if (beta != 0.0f) /* beta 0: C is not read (it may hold anything, NaN included), as in BLAS */
                out = _mm512_add_ps(out, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, cr + 16 * v)));
            _mm512_mask_storeu_ps(cr + 16 * v, m, out);
        }
    }
}

/* per-thread packing space, kept between calls (a fresh allocation of this size costs page faults each call) */
static __thread uint32_t *pack_space = NULL;
static __thread size_t pack_words = 0;

static uint32_t *packing_space(size_t words) {
    if (words > pack_words) {
        free(pack_space);
        pack_space = malloc(words * sizeof(uint32_t));
        pack_words = pack_space ? words : 0;
    }
    return pack_space;
}

/* One thread's share of C: column panels [jb0, jb1) x row blocks [ib0, ib1), packing what it reads itself. */
BF16_TARGET static int gemm_part(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t *a,
                                 int64_t lda, const uint16_t *b, int64_t ldb, float beta, float *c, int64_t ldc,
                                 int64_t jb0, int64_t jb1, int64_t ib0, int64_t ib1) {
    if (jb0 >= jb1 || ib0 >= ib1) return 0;
    int64_t kc = (k + 1) / 2, np = (jb1 - jb0) * GEMM_NR; /* this share's panels only */
    int64_t rows = (ib1 - ib0) * GEMM_MR, i_first = ib0 * GEMM_MR;
    if (rows > m - i_first) rows = m - i_first;
    uint32_t *p = packing_space((size_t)(kc * np + (ta ? kc * rows : 0)));
    if (p == NULL) return 1;
    /* P holds columns [jb0 NR, jb1 NR) of op(B), shifted to start at 0 */
    pack_b(tb, n - jb0 * GEMM_NR, k, tb ? b + jb0 * GEMM_NR * ldb : b + jb0 * GEMM_NR, ldb, p, np, 0, np);
    const uint16_t *abase = a + i_first * (ta ? 1 : lda);
    int64_t rs = lda, ks = 2;
    if (ta) { /* op(A)[i][kk] = a[kk lda + i]: pair rows 2kp and 2kp + 1 of a (this share's rows), as for B */
        uint32_t *q = p + kc * np;
        for (int64_t kp = 0; kp < kc; kp++)
            pair_rows(a + 2 * kp * lda + i_first, 2 * kp + 1 < k ? a + (2 * kp + 1) * lda + i_first : NULL,
                      q + kp * rows, rows);
        abase = (const uint16_t *)q;
        rs = 2;
        ks = 2 * rows;
    }
    for (int64_t jb = jb0; jb < jb1; jb++) {
        int64_t j0 = jb * GEMM_NR, nc = n - j0 < GEMM_NR ? n - j0 : GEMM_NR;
        for (int64_t ib = ib0; ib < ib1; ib++) {
            int64_t i0 = ib * GEMM_MR;
            int mr = (int)(m - i0 < GEMM_MR ? m - i0 : GEMM_MR);
            block(k, abase + (i0 - i_first) * rs, rs, ks, p + (j0 - jb0 * GEMM_NR), np, mr, nc, alpha, beta,
                  c + i0 * ldc + j0, ldc);
        }
    }
    return 0;
}

BF16_TARGET void mlplab_gemm_bf16(int layout, int transa, int transb, int m, int n, int k, float alpha,
                                  const uint16_t *a, int lda, const uint16_t *b, int ldb, float beta, float *c,
                                  int ldc) {
    (void)layout; /* row-major only, as every caller here */
    int ta = transa == 112, tb = transb == 112;
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0f) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return;
    }
    int64_t mb = ((int64_t)m + GEMM_MR - 1) / GEMM_MR, nb = ((int64_t)n + GEMM_NR - 1) / GEMM_NR;
    int threads = gemm_threads;
    if ((int64_t)m * n * k < (int64_t)1 << 20) threads = 1; /* small products: a thread team costs more */
    /* One parallel region per call and no barrier inside it: each thread packs the part of B it reads (and of A
     * when A is transposed) and computes its blocks. Split by column panels where there are enough of them (B is
     * then packed once in all), else by row blocks (each thread packs all of B: only when B is narrow). On a
     * machine busy with other processes every barrier waits for a descheduled thread, so fewer is faster. Each
     * block is one thread's, summed in a fixed order: the result does not depend on the thread count. */
    int by_columns = nb >= threads || nb >= mb, failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1) reduction(| : failed)
    {
        int t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        int64_t parts = by_columns ? nb : mb, lo = parts * t / nt, hi = parts * (t + 1) / nt;
        failed |= by_columns ? gemm_part(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, lo, hi, 0, mb)
                             : gemm_part(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, 0, nb, lo, hi);
    }
    if (failed) abort(); /* out of memory for a few MB of packing: BLAS's signature has no way to report it */
}
#else
int mlplab_gemm_bf16_available(void) { return 0; }
void mlplab_gemm_bf16_set_threads(int n) { (void)n; }
void mlplab_gemm_bf16(int layout, int transa, int transb, int m, int n, int k, float alpha, const uint16_t *a,
                      int lda, const uint16_t *b, int ldb, float beta, float *c, int ldc) {
    (void)layout; (void)transa; (void)transb; (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)lda;
    (void)b; (void)ldb; (void)beta; (void)c; (void)ldc;
    abort(); /* never called: mlplab_gemm_bf16_available() said no */
}
#endif

int64_t mlplab_train_step_bf16(mlplab_step *s) {
    gemm_bf16_t g = (gemm_bf16_t)s->gemm_bf16;
    mlplab_layer *ly = s->layers;
    int32_t L = s->n_layers, nesterov = s->nesterov, init = s->init;
    int64_t n = s->n, c = ly[L - 1].units;
    double lr = s->lr, mu = s->momentum, wd = s->weight_decay;
    const int64_t *y = s->y;
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= c) return i; /* checked first: a bad label changes nothing */
    int64_t widest = 0;
    for (int32_t l = 0; l < L; l++) widest = ly[l].units > widest ? ly[l].units : widest;
    double *acc = malloc((size_t)widest * sizeof(double)); /* bias gradient sums */
    if (acc == NULL) return -2;
    mlplab_to_bf16((const float *)s->x, (uint16_t *)s->x_bf16, n * s->input_dim);
    const uint16_t *h = (const uint16_t *)s->x_bf16;
    for (int32_t l = 0; l < L; l++) { /* forward */
        int64_t d = l == 0 ? s->input_dim : ly[l - 1].units, u = ly[l].units;
        const float *b = (const float *)ly[l].bias;
        float *z = (float *)ly[l].z;
        uint16_t *wb = (uint16_t *)ly[l].weight_bf16;
        mlplab_to_bf16((const float *)ly[l].weight, wb, u * d);
        for (int64_t i = 0; i < n; i++) memcpy(z + i * u, b, (size_t)u * sizeof(float));
        /* Z (n x u) += Hb (n x d) Wb^T */
        g(ROW_MAJOR, NO_TRANS, TRANS, (int)n, (int)u, (int)d, 1.0f, h, (int)d, wb, (int)d, 1.0f, z, (int)u);
        if (l < L - 1) {
            int relu = ly[l].flags & MLPLAB_RELU, drop = ly[l].flags & MLPLAB_DROPOUT;
            if (relu && drop)
                mlplab_relu_dropout_forward_f32(z, n * u, ly[l].key, ly[l].threshold, (float)ly[l].scale);
            else if (drop)
                mlplab_dropout_backward_f32(z, n * u, ly[l].key, ly[l].threshold, (float)ly[l].scale);
            else if (relu)
                for (int64_t i = 0; i < n * u; i++) z[i] = z[i] < 0.0f ? 0.0f : z[i];
            mlplab_to_bf16(z, (uint16_t *)ly[l].z_bf16, n * u);
            h = (const uint16_t *)ly[l].z_bf16;
        }
    }
    float *dz = (float *)s->dz_out;
    mlplab_softmax_xent_f32((const float *)ly[L - 1].z, y, dz, n, c, (float)(1.0 / (double)n), s->stats);
    for (int32_t l = L - 1; l >= 0; l--) { /* backward, each layer stepped once its dh is taken */
        int64_t d = l == 0 ? s->input_dim : ly[l - 1].units, u = ly[l].units;
        float *W = (float *)ly[l].weight, *b = (float *)ly[l].bias;
        float *wbuf = (float *)ly[l].weight_momentum, *bbuf = (float *)ly[l].bias_momentum;
        float *G = (float *)ly[l].scratch, *dh = (float *)ly[l].dh;
        const uint16_t *hb = l == 0 ? (const uint16_t *)s->x_bf16 : (const uint16_t *)ly[l - 1].z_bf16;
        uint16_t *dzb = (uint16_t *)ly[l].dz_bf16;
        int64_t wn = u * d;
        mlplab_to_bf16(dz, dzb, n * u);
        /* dH (n x d) = dZb (n x u) Wb (u x d), with the weights as they were in the forward */
        if (l > 0)
            g(ROW_MAJOR, NO_TRANS, NO_TRANS, (int)n, (int)d, (int)u, 1.0f, dzb, (int)u,
              (const uint16_t *)ly[l].weight_bf16, (int)d, 0.0f, dh, (int)d);
        /* the weight gradient dZb^T (u x n) Hb (n x d) */
        if (mu == 0.0) { /* W <- (1 - lr wd) W - lr G: one product into the float32 master weights */
            g(ROW_MAJOR, TRANS, NO_TRANS, (int)u, (int)d, (int)n, (float)-lr, dzb, (int)u, hb, (int)d,
              (float)(1.0 - lr * wd), W, (int)d);
        } else if (!init && !nesterov) { /* buf <- mu buf + G (+ wd W); W <- W - lr buf */
            g(ROW_MAJOR, TRANS, NO_TRANS, (int)u, (int)d, (int)n, 1.0f, dzb, (int)u, hb, (int)d, (float)mu, wbuf,
              (int)d);
            if (wd != 0.0)
                for (int64_t i = 0; i < wn; i++) wbuf[i] = wbuf[i] + (float)wd * W[i];
            for (int64_t i = 0; i < wn; i++) W[i] = W[i] + (float)(-lr) * wbuf[i];
        } else { /* the first momentum step, or Nesterov: the gradient itself is needed */
            g(ROW_MAJOR, TRANS, NO_TRANS, (int)u, (int)d, (int)n, 1.0f, dzb, (int)u, hb, (int)d, 0.0f, G, (int)d);
            for (int64_t i = 0; i < wn; i++) {
                float gi = wd != 0.0 ? G[i] + (float)wd * W[i] : G[i];
                wbuf[i] = init ? gi : (float)mu * wbuf[i] + gi;
                gi = nesterov ? gi + (float)mu * wbuf[i] : wbuf[i];
                W[i] = W[i] + (float)(-lr) * gi;
            }
        }
        bias_sgd_core_f32(b, mu == 0.0 ? NULL : bbuf, dz, n, u, lr, mu, wd, nesterov, init, acc);
        if (l == 0) break;
        const mlplab_layer *prev = &ly[l - 1];
        int relu = prev->flags & MLPLAB_RELU, drop = prev->flags & MLPLAB_DROPOUT;
        if (relu) /* the float32 masked output: positive exactly where active and kept */
            mlplab_relu_backward_f32(dh, (const float *)prev->z, d * n, drop ? (float)prev->scale : 1.0f);
        else if (drop)
            mlplab_dropout_backward_f32(dh, d * n, prev->key, prev->threshold, (float)prev->scale);
        dz = dh;
    }
    free(acc);
    return -1;
}

/* The library's version: model/kernels.py refuses a build whose number differs from its own. */
int mlplab_kernels_version(void) { return 7; }

/* sizeof(mlplab_layer), sizeof(mlplab_step), then every field's offset in declaration order (kernels.py's
 * _layout() computes the same from its ctypes.Structures); returns how many were written, or -1 if `cap` is short. */
int64_t mlplab_step_layout(int64_t *out, int64_t cap) {
    const int64_t v[] = {
        sizeof(mlplab_layer), sizeof(mlplab_step),
        offsetof(mlplab_layer, weight), offsetof(mlplab_layer, bias), offsetof(mlplab_layer, weight_momentum),
        offsetof(mlplab_layer, bias_momentum), offsetof(mlplab_layer, scratch), offsetof(mlplab_layer, z),
        offsetof(mlplab_layer, dh), offsetof(mlplab_layer, units), offsetof(mlplab_layer, flags),
        offsetof(mlplab_layer, threshold), offsetof(mlplab_layer, scale), offsetof(mlplab_layer, key),
        offsetof(mlplab_layer, weight_bf16), offsetof(mlplab_layer, z_bf16), offsetof(mlplab_layer, dz_bf16),
        offsetof(mlplab_step, gemm), offsetof(mlplab_step, layers), offsetof(mlplab_step, x), offsetof(mlplab_step, y),
        offsetof(mlplab_step, dz_out), offsetof(mlplab_step, n), offsetof(mlplab_step, input_dim),
        offsetof(mlplab_step, lr), offsetof(mlplab_step, momentum), offsetof(mlplab_step, weight_decay),
        offsetof(mlplab_step, n_layers), offsetof(mlplab_step, nesterov), offsetof(mlplab_step, init),
        offsetof(mlplab_step, stats), offsetof(mlplab_step, gemm_bf16), offsetof(mlplab_step, x_bf16),
    };
    int64_t m = (int64_t)(sizeof v / sizeof v[0]);
    if (cap < m) return -1;
    for (int64_t i = 0; i < m; i++) out[i] = v[i];
    return m;
}
