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
    /* the update from the column sums acc (the bf16 step's fused products compute them in their epilogue) */ \
    static void bias_update_##SUFFIX(T *p, T *buf, const double *acc, int64_t c, double lr, double mu,      \
                                     double wd, int nesterov, int init) {                                \
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
    /* acc[k] <- the column sums of dz (n, c) in double, rows in order */                               \
    static void bias_sums_##SUFFIX(const T *dz, int64_t n, int64_t c, double *acc) {                     \
        memset(acc, 0, (size_t)c * sizeof(double));                                                      \
        for (int64_t i = 0; i < n; i++)                                                                  \
            for (int64_t k = 0; k < c; k++) acc[k] += dz[i * c + k];                                     \
    }                                                                                                    \
    static void bias_sgd_core_##SUFFIX(T *p, T *buf, const T *dz, int64_t n, int64_t c, double lr, double mu, \
                                       double wd, int nesterov, int init, double *acc) {                 \
        bias_sums_##SUFFIX(dz, n, c, acc);                                                               \
        bias_update_##SUFFIX(p, buf, acc, c, lr, mu, wd, nesterov, init);                                \
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
    int32_t fused;                          /* bf16 only: 1 = fuse the element-wise work into the products */
    int32_t weights_rounded;                /* bf16 only, in: weight_bf16 already holds the weights rounded
                                               (the caller vouches nothing wrote them since the last step);
                                               out: whether this step left them so */
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
 * and the weights. The SGD update stays folded into the weight-gradient product, whose float32 output is the
 * master weight itself (beta = 1 - lr wd) or the momentum buffer.
 *
 * With mlplab's own GEMM (and s->fused) the element-wise work runs in the products' epilogues (fused_step_bf16
 * below: the same bits), and the weight products also leave the new weights rounded, which the next step reuses
 * when s->weights_rounded says nothing else wrote them. Otherwise (MKL's GEMM) the loops below run after each
 * product and the weights are rounded at the start of every step. */
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
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define GEMM_MR 6
#define GEMM_NR 64

static int gemm_threads = 1;
void mlplab_gemm_bf16_set_threads(int n) { gemm_threads = n < 1 ? 1 : n; }

/* whether this CPU runs the kernel: AVX512-BF16 (and the AVX-512 subsets the target line names) */
int mlplab_gemm_bf16_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bf16");
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

/* What a product does with each element of its result before storing it: the CBLAS update C = alpha acc + beta C
 * and, for the bf16 step's fused products, the element-wise work that would otherwise be a separate
 * single-threaded pass over memory after it, in the order the separate kernels apply it (so the values are the
 * same bits): a bias row, relu, relu's backward (a gate), a dropout mask, column sums (the bias gradient), an SGD
 * update of the master weights, and a bf16 copy of what was stored (the next product's input). Running it here puts
 * it on the product's threads and on values still in registers. Indices are of the whole C: element (i, j) is
 * i ldc + j in C, gate, rounded, and the SGD operands, and the dropout stream's element i ldc + j. */
enum { SGD_NONE, SGD_MOMENTUM, SGD_GRADIENT };
typedef struct {
    float alpha, beta;        /* v = alpha acc + beta C (beta 0: C not read; alpha 0: acc not used) */
    const float *bias;        /* v += bias[j] */
    int relu;                 /* v = v < 0 ? 0 : v (NaN and -0 kept, as mlplab_relu_dropout_forward) */
    const float *gate;        /* v *= gate[i][j] > 0 ? gate_scale : 0 (relu's backward on the masked output) */
    float gate_scale;
    int dropout;              /* v *= the mask factor (scale if kept, else 0) of element i ldc + j under key */
    uint64_t key;
    int32_t threshold;
    float scale;
    double *colsum;           /* colsum[j] += v, rows in order (the product then splits by columns only) */
    int sgd;                  /* SGD_NONE: C = v. Otherwise C is the momentum buffer, v its product part: */
    float *w;                 /* the float32 master weights, updated as mlplab_train_step_f32's loops do */
    float mu, wd, neg_lr;
    int has_wd, nesterov, init;  /* has_wd: wd != 0 as a double (a wd under float's range still adds 0 W) */
    uint16_t *rounded;        /* rounded[i][j] = bf16 of the stored C (SGD kinds: of the new weight) */
    int plain;                /* set by gemm_ep: nothing but the CBLAS update, alpha != 0 */
} epilogue;

/* 16 lanes of float32 -> bfloat16 exactly as mlplab_to_bf16 (round to nearest even, NaN -> quiet NaN): the integer
 * form, and VCVTNEPS2BF16, which rounds the same way and quiets NaNs the same way but flushes denormal inputs to
 * zero, so those lanes (rare: |x| < 2^-126) take the integer form. Checked equal on all 2^32 inputs; in the
 * epilogues it saves ~5 instructions per 16 values over the integer form alone. */
BF16_TARGET static inline __m256i round16_exact(__m512 x) {
    __m512i u = _mm512_castps_si512(x), hi = _mm512_srli_epi32(u, 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)),
                                 _mm512_and_si512(hi, _mm512_set1_epi32(1)));
    r = _mm512_mask_mov_epi32(_mm512_srli_epi32(r, 16), nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}

BF16_TARGET static inline __m256i round16(__m512 x) {
    __m256i r = (__m256i)_mm512_cvtneps_pbh(x);
    __m512i u = _mm512_castps_si512(x);
    __mmask16 denormal = _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7f800000)) &
                         _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x007fffff));
    if (__builtin_expect(denormal != 0, 0)) r = _mm256_mask_mov_epi16(r, denormal, round16_exact(x));
    return r;
}

BF16_TARGET static void to_bf16_avx512(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(dst + i), round16(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, round16(_mm512_maskz_loadu_ps(m, src + i)));
    }
}

/* exported for the tests: the vector rounding against mlplab_to_bf16 on every kind of float */
BF16_TARGET void mlplab_to_bf16_avx512(const float *src, uint16_t *dst, int64_t n) { to_bf16_avx512(src, dst, n); }

/* the same on the GEMM's threads: the batch's rounding (128 x 784 at the notebook's size) was the largest
 * single-threaded part left in the fused step, ~10 us with the second core idle */
BF16_TARGET static void to_bf16_threads(const float *src, uint16_t *dst, int64_t n) {
    int threads = n >= (int64_t)1 << 15 ? gemm_threads : 1;
    int64_t chunks = (n + 1023) / 1024;
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t lo = c * 1024, len = n - lo < 1024 ? n - lo : 1024;
        to_bf16_avx512(src + lo, dst + lo, len);
    }
}

/* the dropout stream's 16-bit draws of elements [base, base + 64) at s[0..64) (s points into out[96]): SplitMix64
 * words base / 4 ... (24 of them, 8 per vector), as mask_block computes them one at a time */
BF16_TARGET static inline const int16_t *mask_draws(uint64_t key, int64_t base, int16_t out[96]) {
    __m512i j = _mm512_add_epi64(_mm512_set1_epi64((long long)(base / 4 + 1)), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    const __m512i golden = _mm512_set1_epi64((long long)0x9e3779b97f4a7c15ULL);
    const __m512i m1 = _mm512_set1_epi64((long long)0xbf58476d1ce4e5b9ULL);
    const __m512i m2 = _mm512_set1_epi64((long long)0x94d049bb133111ebULL);
    const __m512i vk = _mm512_set1_epi64((long long)key), eight = _mm512_set1_epi64(8);
    for (int q = 0; q < 3; q++) {
        __m512i z = _mm512_add_epi64(vk, _mm512_mullo_epi64(j, golden));
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), m1);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), m2);
        _mm512_storeu_si512(out + 32 * q, _mm512_xor_si512(z, _mm512_srli_epi64(z, 31)));
        j = _mm512_add_epi64(j, eight);
    }
    return out + (base & 3);
}

/* The fused epilogue for the rows [0, mr) x columns [0, nc) of one block: acc holds the products, (i0, j0) is the
 * block's first element in C. Each step runs over a row's 4 vectors at once (a vector past nc has an empty mask:
 * its loads read nothing and its stores write nothing), so a step that does not apply costs one branch per row. A
 * function of its own, called once per block: inlined and unrolled into block() its code crowded the k loop's
 * (plain products measured 3-12% slower), and plain products do not come here (block's own store loop). The
 * settings are copied to locals first: read through ep they would be reloaded after every float store. */
BF16_TARGET static __attribute__((noinline)) void finish(const epilogue *ep, __m512 acc[GEMM_MR][4], int mr,
                                                        int64_t nc, int64_t i0, int64_t j0, float *c, int64_t ldc) {
    const float alpha = ep->alpha, beta = ep->beta;
    const float *const bias = ep->bias, *const gate = ep->gate;
    const int relu = ep->relu, dropout = ep->dropout, sgd = ep->sgd;
    double *const colsum = ep->colsum;
    float *const w = ep->w;
    uint16_t *const rounded = ep->rounded;
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta), zero = _mm512_setzero_ps();
    const __m512 gate_scale = _mm512_set1_ps(ep->gate_scale), scale = _mm512_set1_ps(ep->scale);
    const __m512 vmu = _mm512_set1_ps(ep->mu), vwd = _mm512_set1_ps(ep->wd), neg_lr = _mm512_set1_ps(ep->neg_lr);
    const __m512i threshold = _mm512_set1_epi32(ep->threshold);
    const uint64_t key = ep->key;
    const int wd = ep->has_wd, nesterov = ep->nesterov, init = ep->init;
    __mmask16 m[4];
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++) {
        int64_t left = nc - 16 * v;
        m[v] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
    }
    int16_t draws[96];
#pragma GCC unroll 1
    for (int r = 0; r < mr; r++) {
        int64_t e = (i0 + r) * ldc + j0; /* the row's first element in C */
        __m512 out[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) out[v] = _mm512_mul_ps(va, acc[r][v]);
        /* beta 0: C is not read (it may hold anything, NaN included), as in BLAS; alpha 0 (lr 0): acc is not
           used and v = beta C exactly, as mlplab_gemm_bf16's shortcut computes it (-0 stays -0) */
        if (beta != 0.0f)
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                __m512 bc = _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m[v], c + e + 16 * v));
                out[v] = alpha != 0.0f ? _mm512_add_ps(out[v], bc) : bc;
            }
        else if (alpha == 0.0f)
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) out[v] = zero;
        if (bias)
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) out[v] = _mm512_add_ps(out[v], _mm512_maskz_loadu_ps(m[v], bias + j0 + 16 * v));
        if (relu)
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) out[v] = _mm512_mask_mov_ps(out[v], _mm512_cmp_ps_mask(out[v], zero, _CMP_LT_OQ), zero);
        if (gate)
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                __mmask16 on = _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(m[v], gate + e + 16 * v), zero, _CMP_GT_OQ);
                out[v] = _mm512_mul_ps(out[v], _mm512_maskz_mov_ps(on, gate_scale));
            }
        if (dropout) {
            const int16_t *s = mask_draws(key, e, draws);
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                __m512i d = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(s + 16 * v)));
                out[v] = _mm512_mul_ps(out[v], _mm512_maskz_mov_ps(_mm512_cmplt_epi32_mask(d, threshold), scale));
            }
        }
        if (colsum)
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                double *cs = colsum + j0 + 16 * v;
                __mmask8 lo = (__mmask8)(m[v] & 0xff), hi = (__mmask8)(m[v] >> 8);
                _mm512_mask_storeu_pd(cs, lo, _mm512_add_pd(_mm512_maskz_loadu_pd(lo, cs),
                                                            _mm512_cvtps_pd(_mm512_castps512_ps256(out[v]))));
                _mm512_mask_storeu_pd(cs + 8, hi, _mm512_add_pd(_mm512_maskz_loadu_pd(hi, cs + 8),
                                                                _mm512_cvtps_pd(_mm512_extractf32x8_ps(out[v], 1))));
            }
        if (sgd != SGD_NONE) { /* mlplab_train_step_f32's momentum loops, element for element */
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                __m512 wv = _mm512_maskz_loadu_ps(m[v], w + e + 16 * v);
                __m512 g = wd ? _mm512_add_ps(out[v], _mm512_mul_ps(vwd, wv)) : out[v];
                __m512 buf = g; /* SGD_MOMENTUM: out already holds mu buf + G */
                if (sgd == SGD_GRADIENT) {
                    if (!init) buf = _mm512_add_ps(_mm512_mul_ps(vmu, _mm512_maskz_loadu_ps(m[v], c + e + 16 * v)), g);
                    g = nesterov ? _mm512_add_ps(g, _mm512_mul_ps(vmu, buf)) : buf;
                }
                _mm512_mask_storeu_ps(c + e + 16 * v, m[v], buf);
                out[v] = _mm512_add_ps(wv, _mm512_mul_ps(neg_lr, g)); /* the new weight: stored and rounded */
                _mm512_mask_storeu_ps(w + e + 16 * v, m[v], out[v]);
            }
        } else {
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) _mm512_mask_storeu_ps(c + e + 16 * v, m[v], out[v]);
        }
        if (rounded)
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) _mm256_mask_storeu_epi16(rounded + e + 16 * v, m[v], round16(out[v]));
    }
}

/* Prefetch the rows [i0, i0 + mr) x columns [j0, j0 + nc) of a float32 matrix that a block's epilogue will read.
 * Issued before the block's k loop, the loads arrive while it computes: the epilogue's reads of C, the master
 * weights and the gate are strided rows that the hardware prefetcher does not predict, and waiting for them made
 * the fused step ~70 us (8%) slower. */
BF16_TARGET static inline void prefetch_rows(const float *base, int64_t ld, int64_t i0, int64_t j0, int mr,
                                             int64_t nc) {
    for (int r = 0; r < mr; r++) {
        const char *row = (const char *)(base + (i0 + r) * ld + j0);
        for (int64_t off = 0; off < nc * (int64_t)sizeof(float); off += 64) _mm_prefetch(row + off, _MM_HINT_T0);
    }
}

/* one block of C: rows [i0, i0 + mr) (mr <= 6) x columns [j0, j0 + nc) (nc <= 64); A's pair kp of the block's row
 * r is the 32-bit word at a + r rs + kp ks (in bf16 units), B's panel at p with row stride np words */
BF16_TARGET static void block(int64_t k, const uint16_t *a, int64_t rs, int64_t ks, const uint32_t *p, int64_t np,
                              int mr, int64_t nc, int64_t i0, int64_t j0, float *c, int64_t ldc,
                              const epilogue *ep) {
    __m512 acc[GEMM_MR][4];
    const uint16_t *ar[GEMM_MR];
#pragma GCC unroll 6
    for (int r = 0; r < GEMM_MR; r++) {
        ar[r] = a + (r < mr ? r : mr - 1) * rs; /* rows past the end repeat the last one (not stored) */
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_ps();
    }
    if (ep->beta != 0.0f || (ep->sgd == SGD_GRADIENT && !ep->init)) prefetch_rows(c, ldc, i0, j0, mr, nc);
    if (ep->sgd != SGD_NONE) prefetch_rows(ep->w, ldc, i0, j0, mr, nc);
    if (ep->gate) prefetch_rows(ep->gate, ldc, i0, j0, mr, nc);
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
    if (!ep->plain) { /* a copy, so that acc's address does not escape (acc would then live in memory) */
        __m512 sums[GEMM_MR][4];
#pragma GCC unroll 6
        for (int r = 0; r < GEMM_MR; r++)
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) sums[r][v] = acc[r][v];
        finish(ep, sums, mr, nc, i0, j0, c, ldc);
        return;
    }
    const __m512 va = _mm512_set1_ps(ep->alpha), vb = _mm512_set1_ps(ep->beta);
    const int read_c = ep->beta != 0.0f; /* beta 0: C is not read (it may hold anything, NaN included), as in BLAS */
#pragma GCC unroll 6
    for (int r = 0; r < GEMM_MR; r++) {
        if (r >= mr) break;
        float *cr = c + (i0 + r) * ldc + j0;
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            int64_t left = nc - 16 * v;
            if (left <= 0) break;
            __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
            __m512 out = _mm512_mul_ps(va, acc[r][v]);
            if (read_c) out = _mm512_add_ps(out, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, cr + 16 * v)));
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
        /* 64-byte aligned: each packed row of a panel is then whole cache lines (with malloc's 16-byte alignment
           every load of B in the k loop could straddle two lines; the product's speed then varied ~10% between
           processes with where malloc put the buffer) */
        void *q = NULL;
        pack_space = posix_memalign(&q, 64, words * sizeof(uint32_t)) == 0 ? q : NULL;
        pack_words = pack_space ? words : 0;
    }
    return pack_space;
}

/* One thread's share of C: column panels [jb0, jb1) x row blocks [ib0, ib1), packing what it reads itself. Within
 * a column panel the row blocks run in order, so an epilogue's column sums add rows in order. */
BF16_TARGET static int gemm_part(int ta, int tb, int64_t m, int64_t n, int64_t k, const uint16_t *a, int64_t lda,
                                 const uint16_t *b, int64_t ldb, float *c, int64_t ldc, const epilogue *ep,
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
            block(k, abase + (i0 - i_first) * rs, rs, ks, p + (j0 - jb0 * GEMM_NR), np, mr, nc, i0, j0, c, ldc, ep);
        }
    }
    return 0;
}

/* C (m x n, row-major) = op(A) op(B) finished by ep, k >= 1 */
BF16_TARGET static void gemm_ep(int ta, int tb, int64_t m, int64_t n, int64_t k, const uint16_t *a, int64_t lda,
                                const uint16_t *b, int64_t ldb, float *c, int64_t ldc, const epilogue *settings) {
    epilogue copy = *settings, *ep = &copy;
    copy.plain = copy.alpha != 0.0f && !copy.bias && !copy.relu && !copy.gate && !copy.dropout && !copy.colsum &&
                 copy.sgd == SGD_NONE && !copy.rounded;
    int64_t mb = (m + GEMM_MR - 1) / GEMM_MR, nb = (n + GEMM_NR - 1) / GEMM_NR;
    int threads = gemm_threads;
    /* small products: a thread team costs more; but a fused epilogue's work grows with C alone (the output
     * layer's dH at batch 128: k = 10, C 128 x 512, relu's gate, the bias sums and the rounding per element) */
    if (m * n * k < (int64_t)1 << 20 && (ep->plain || m * n < (int64_t)1 << 14)) threads = 1;
    /* One parallel region per call and no barrier inside it: each thread packs the part of B it reads (and of A
     * when A is transposed) and computes its blocks. Split by column panels where there are enough of them (B is
     * then packed once in all) or where column sums need whole columns, else by row blocks (each thread packs all
     * of B: only when B is narrow). On a machine busy with other processes every barrier waits for a descheduled
     * thread, so fewer is faster. Each block is one thread's, summed in a fixed order: the result does not depend
     * on the thread count. */
    int by_columns = nb >= threads || nb >= mb || ep->colsum != NULL, failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1) reduction(| : failed)
    {
        int t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        int64_t parts = by_columns ? nb : mb, lo = parts * t / nt, hi = parts * (t + 1) / nt;
        failed |= by_columns ? gemm_part(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, ep, lo, hi, 0, mb)
                             : gemm_part(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, ep, 0, nb, lo, hi);
    }
    if (failed) abort(); /* out of memory for a few MB of packing: BLAS's signature has no way to report it */
}

BF16_TARGET void mlplab_gemm_bf16(int layout, int transa, int transb, int m, int n, int k, float alpha,
                                  const uint16_t *a, int lda, const uint16_t *b, int ldb, float beta, float *c,
                                  int ldc) {
    (void)layout; /* row-major only, as every caller here */
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0f) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return;
    }
    epilogue ep = {.alpha = alpha, .beta = beta};
    gemm_ep(transa == TRANS, transb == TRANS, m, n, k, a, lda, b, ldb, c, ldc, &ep);
}

/* The bf16 step with its element-wise work fused into the products' epilogues (the step's comment says what it
 * computes; this computes the same bits). Per step it leaves one single-threaded pass over the batch (its
 * rounding) and the output layer's softmax and bias. The rounded weights are the weight products' epilogue output,
 * so the next step reuses them when the caller says nothing else wrote the weights (s->weights_rounded). */
BF16_TARGET static void fused_step_bf16(mlplab_step *s, double *acc) {
    mlplab_layer *ly = s->layers;
    int32_t L = s->n_layers;
    int64_t n = s->n, c = ly[L - 1].units;
    double lr = s->lr, mu = s->momentum, wd = s->weight_decay;
    to_bf16_threads((const float *)s->x, (uint16_t *)s->x_bf16, n * s->input_dim);
    const uint16_t *h = (const uint16_t *)s->x_bf16;
    for (int32_t l = 0; l < L; l++) { /* forward: Z (n x u) = Hb (n x d) Wb^T + b, activated, masked, rounded */
        int64_t d = l == 0 ? s->input_dim : ly[l - 1].units, u = ly[l].units;
        uint16_t *wb = (uint16_t *)ly[l].weight_bf16;
        if (!s->weights_rounded) to_bf16_threads((const float *)ly[l].weight, wb, u * d);
        epilogue ep = {.alpha = 1.0f, .bias = (const float *)ly[l].bias};
        if (l < L - 1) {
            ep.relu = ly[l].flags & MLPLAB_RELU;
            ep.dropout = (ly[l].flags & MLPLAB_DROPOUT) != 0;
            ep.key = ly[l].key, ep.threshold = ly[l].threshold, ep.scale = (float)ly[l].scale;
            ep.rounded = (uint16_t *)ly[l].z_bf16;
        }
        gemm_ep(0, 1, n, u, d, h, d, wb, d, (float *)ly[l].z, u, &ep);
        h = (const uint16_t *)ly[l].z_bf16;
    }
    float *dz = (float *)s->dz_out;
    mlplab_softmax_xent_f32((const float *)ly[L - 1].z, s->y, dz, n, c, (float)(1.0 / (double)n), s->stats);
    to_bf16_avx512(dz, (uint16_t *)ly[L - 1].dz_bf16, n * c);
    bias_sums_f32(dz, n, c, acc);
    for (int32_t l = L - 1; l >= 0; l--) { /* backward; acc holds this layer's bias gradient sums */
        int64_t d = l == 0 ? s->input_dim : ly[l - 1].units, u = ly[l].units;
        const uint16_t *hb = l == 0 ? (const uint16_t *)s->x_bf16 : (const uint16_t *)ly[l - 1].z_bf16;
        const uint16_t *dzb = (const uint16_t *)ly[l].dz_bf16;
        bias_update_f32((float *)ly[l].bias, mu == 0.0 ? NULL : (float *)ly[l].bias_momentum, acc, u, lr, mu, wd,
                        s->nesterov, s->init);
        if (l > 0) { /* dH (n x d) = dZb Wb, with the weights as they were in the forward; then the previous
                        layer's backward (relu's gate or its dropout mask), its bias sums, and its rounding */
            const mlplab_layer *prev = &ly[l - 1];
            int relu = prev->flags & MLPLAB_RELU, drop = (prev->flags & MLPLAB_DROPOUT) != 0;
            epilogue ep = {.alpha = 1.0f, .colsum = acc, .rounded = (uint16_t *)prev->dz_bf16};
            if (relu) { /* the float32 masked output: positive exactly where active and kept */
                ep.gate = (const float *)prev->z;
                ep.gate_scale = drop ? (float)prev->scale : 1.0f;
            } else if (drop) {
                ep.dropout = 1, ep.key = prev->key, ep.threshold = prev->threshold, ep.scale = (float)prev->scale;
            }
            memset(acc, 0, (size_t)d * sizeof(double));
            gemm_ep(0, 0, n, d, u, dzb, u, (const uint16_t *)ly[l].weight_bf16, d, (float *)ly[l].dh, d, &ep);
        }
        /* the weight gradient dZb^T (u x n) Hb (n x d), finished by the SGD update; the new weights rounded */
        epilogue ep = {.alpha = 1.0f, .rounded = (uint16_t *)ly[l].weight_bf16};
        float *out = (float *)ly[l].weight;
        if (mu == 0.0) { /* W <- (1 - lr wd) W - lr G */
            ep.alpha = (float)-lr, ep.beta = (float)(1.0 - lr * wd);
        } else {
            out = (float *)ly[l].weight_momentum;
            ep.w = (float *)ly[l].weight, ep.mu = (float)mu, ep.wd = (float)wd, ep.neg_lr = (float)(-lr);
            ep.has_wd = wd != 0.0;
            ep.nesterov = s->nesterov, ep.init = s->init;
            if (!s->init && !s->nesterov) /* buf <- mu buf + G (+ wd W); W <- W - lr buf */
                ep.sgd = SGD_MOMENTUM, ep.beta = (float)mu;
            else /* the first momentum step, or Nesterov */
                ep.sgd = SGD_GRADIENT;
        }
        gemm_ep(1, 0, u, d, n, dzb, u, hb, d, out, d, &ep);
    }
    s->weights_rounded = 1;
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
static void fused_step_bf16(mlplab_step *s, double *acc) { (void)s; (void)acc; abort(); /* never called */ }
void mlplab_to_bf16_avx512(const float *src, uint16_t *dst, int64_t n) { mlplab_to_bf16(src, dst, n); }
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
    if (s->fused && g == mlplab_gemm_bf16) {
        fused_step_bf16(s, acc);
        free(acc);
        return -1;
    }
    mlplab_to_bf16((const float *)s->x, (uint16_t *)s->x_bf16, n * s->input_dim);
    const uint16_t *h = (const uint16_t *)s->x_bf16;
    for (int32_t l = 0; l < L; l++) { /* forward */
        int64_t d = l == 0 ? s->input_dim : ly[l - 1].units, u = ly[l].units;
        const float *b = (const float *)ly[l].bias;
        float *z = (float *)ly[l].z;
        uint16_t *wb = (uint16_t *)ly[l].weight_bf16;
        if (!s->weights_rounded) mlplab_to_bf16((const float *)ly[l].weight, wb, u * d);
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
    s->weights_rounded = 0; /* the weights changed after their rounding */
    return -1;
}

/* The library's version: model/kernels.py refuses a build whose number differs from its own. */
int mlplab_kernels_version(void) { return 8; }

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
        offsetof(mlplab_step, stats), offsetof(mlplab_step, gemm_bf16), offsetof(mlplab_step, x_bf16), offsetof(mlplab_step, fused),
        offsetof(mlplab_step, weights_rounded),
    };
    int64_t m = (int64_t)(sizeof v / sizeof v[0]);
    if (cap < m) return -1;
    for (int64_t i = 0; i < m; i++) out[i] = v[i];
    return m;
}
