/* Exact t-SNE for a few thousand points (inspect/tsne.py builds and loads this file on first use, through
 * model/kernels.py's cache).
 *
 * Why exact and why C: `mlplab dynamics` optimises one map per snapshot (21 epochs x 2 layers of 2,000 points
 * in its benchmark). At that size all N^2 pairs cost less than openTSNE's approximations: one pass over the
 * 4 million pairs is ~1 ms here (AVX2; ~2 ms with SSE2), where openTSNE's FFT gradient took ~10 ms and its
 * Barnes-Hut tree ~17 ms per iteration, and the gradient is the true one rather than an approximation. The
 * same loop in PyTorch ops takes ~10-16 ms (it streams 16 MB matrices through memory several times).
 *
 * What it computes, with openTSNE's conventions (tests/test_dynamics.py checks the gradient against
 * torch.autograd of the KL divergence and the optimiser against openTSNE's on the same input):
 *   q_ij = 1 / (1 + |y_i - y_j|^2),  Z = sum_{i != j} q_ij,
 *   grad_i = sum_j exaggeration * p_ij q_ij (y_i - y_j) - sum_j q_ij^2 (y_i - y_j) / Z
 * (the KL divergence's gradient divided by 4, as openTSNE's), then openTSNE's gradient descent: per-coordinate
 * gains (+0.2 when the gradient's sign flips against the last update, else x0.8 + min_gain), momentum, each
 * point's step clipped to max_step_norm, and the map re-centred after every step.
 * The N^2 loop runs in float32, eight pairs at a time in GCC/Clang vector types; the map, the attractive forces
 * and the optimiser state are float64.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(MLPLAB_NO_CLONES)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

/* Eight pairs at a time in the compiler's vector type (SSE2: two registers; the AVX2 clone: one). Each lane keeps
 * its own sums, so no sum is reordered and no -ffast-math is needed; the lanes are added up in double. */
typedef float v8f __attribute__((vector_size(32)));

/* Repulsion without normalisation: rx[i], ry[i] = sum_j q_ij^2 (y_i - y_j); returns Z = sum_{i != j} q_ij. */
HOT static double repulsion(const float *xs, const float *ys, int64_t n, double *rx, double *ry) {
    const v8f one = {1, 1, 1, 1, 1, 1, 1, 1};
    double z = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float xi = xs[i], yi = ys[i];
        v8f az = {0}, ax = {0}, ay = {0};
        int64_t j = 0;
        for (; j + 8 <= n; j += 8) {
            v8f xj, yj;
            memcpy(&xj, xs + j, sizeof xj);
            memcpy(&yj, ys + j, sizeof yj);
            v8f dx = xi - xj, dy = yi - yj;
            v8f q = one / (one + dx * dx + dy * dy);
            v8f q2 = q * q;
            az += q;
            ax += q2 * dx;
            ay += q2 * dy;
        }
        double sz = 0.0, sx = 0.0, sy = 0.0;
        for (int l = 0; l < 8; l++) {
            sz += az[l];
            sx += ax[l];
            sy += ay[l];
        }
        for (; j < n; j++) {
            float dx = xi - xs[j], dy = yi - ys[j];
            float q = 1.0f / (1.0f + dx * dx + dy * dy);
            float q2 = q * q;
            sz += q;
            sx += q2 * dx;
            sy += q2 * dy;
        }
        z += sz - 1.0; /* q_ii = 1 exactly (the point itself, at distance 0) */
        rx[i] = sx;
        ry[i] = sy;
    }
    return z;
}

/* The gradient (see the top) into gx, gy; xs, ys are float32 copies of y for the N^2 loop. */
static void gradient(const double *y, int64_t n, const int64_t *indptr, const int64_t *indices, const double *p,
                     double exaggeration, float *xs, float *ys, double *gx, double *gy) {
    for (int64_t i = 0; i < n; i++) {
        xs[i] = (float)y[2 * i];
        ys[i] = (float)y[2 * i + 1];
    }
    double z = repulsion(xs, ys, n, gx, gy);
    double inv_z = z > 0.0 ? 1.0 / z : 0.0;
    for (int64_t i = 0; i < n; i++) {
        double ax = 0.0, ay = 0.0;
        const double yi0 = y[2 * i], yi1 = y[2 * i + 1];
        for (int64_t k = indptr[i]; k < indptr[i + 1]; k++) {
            int64_t j = indices[k];
            double dx = yi0 - y[2 * j], dy = yi1 - y[2 * j + 1];
            double w = p[k] / (1.0 + dx * dx + dy * dy);
            ax += w * dx;
            ay += w * dy;
        }
        gx[i] = exaggeration * ax - gx[i] * inv_z;
        gy[i] = exaggeration * ay - gy[i] * inv_z;
    }
}

/* The gradient's work space: xs (2n floats: the map in float32) and g (2n doubles); -1 when memory runs out. */
static int scratch(int64_t n, float **xs, double **g) {
    *xs = malloc(sizeof(float) * 2 * (size_t)n);
    *g = malloc(sizeof(double) * 2 * (size_t)n);
    if (*xs && *g) return 0;
    free(*xs);
    free(*g);
    return -1;
}

/* The gradient alone, for tests: grad (n, 2). Returns 0, or -1 when memory runs out. */
int64_t mlplab_tsne_gradient(const double *y, int64_t n, const int64_t *indptr, const int64_t *indices,
                             const double *p, double exaggeration, double *grad) {
    float *xs;
    double *g;
    if (scratch(n, &xs, &g) != 0) return -1;
    gradient(y, n, indptr, indices, p, exaggeration, xs, xs + n, g, g + n);
    for (int64_t i = 0; i < n; i++) {
        grad[2 * i] = g[i];
        grad[2 * i + 1] = g[n + i];
    }
    free(xs);
    free(g);
    return 0;
}

/* n_iter steps of openTSNE's gradient descent on y (n, 2), carrying update and gains (n, 2) in and out;
 * p is the joint affinity matrix in CSR form (rows indptr, columns indices), summing to 1. Returns 0, or -1
 * when memory runs out (y is then unchanged). */
int64_t mlplab_tsne_optimize(double *y, double *update, double *gains, int64_t n, const int64_t *indptr,
                             const int64_t *indices, const double *p, int64_t n_iter, double exaggeration,
                             double momentum, double learning_rate, double max_step_norm, double min_gain) {
    float *xs;
    double *g;
    if (scratch(n, &xs, &g) != 0) return -1;
    float *ys = xs + n;
    double *gx = g, *gy = g + n;
    for (int64_t it = 0; it < n_iter; it++) {
        gradient(y, n, indptr, indices, p, exaggeration, xs, ys, gx, gy);
        double mx = 0.0, my = 0.0;
        for (int64_t i = 0; i < n; i++) {
            double gr[2] = {gx[i], gy[i]};
            for (int d = 0; d < 2; d++) {
                int64_t c = 2 * i + d;
                /* openTSNE: np.sign(update) != np.sign(gradient) */
                int su = (update[c] > 0) - (update[c] < 0), sg = (gr[d] > 0) - (gr[d] < 0);
                gains[c] = su != sg ? gains[c] + 0.2 : gains[c] * 0.8 + min_gain;
                update[c] = momentum * update[c] - learning_rate * gains[c] * gr[d];
            }
            double norm = sqrt(update[2 * i] * update[2 * i] + update[2 * i + 1] * update[2 * i + 1]);
            if (max_step_norm > 0.0 && norm > max_step_norm) {
                update[2 * i] = update[2 * i] / norm * max_step_norm;
                update[2 * i + 1] = update[2 * i + 1] / norm * max_step_norm;
            }
            y[2 * i] += update[2 * i];
            y[2 * i + 1] += update[2 * i + 1];
            mx += y[2 * i];
            my += y[2 * i + 1];
        }
        mx /= (double)n;
        my /= (double)n;
        for (int64_t i = 0; i < n; i++) {
            y[2 * i] -= mx;
            y[2 * i + 1] -= my;
        }
    }
    free(xs);
    free(g);
    return 0;
}

/* Conditional affinities p_{j|i} = exp(-beta_i d2_ij) / sum_j exp(-beta_i d2_ij) over each row's k neighbours
 * (d2: (n, k) squared distances), beta_i found by bisection so that the row's entropy is log(perplexity)
 * within tol (as openTSNE's compute_gaussian_perplexity; distances are taken relative to the row's nearest,
 * which changes no probability but keeps exp() from underflowing for far-away rows). Returns the number of
 * rows that did not reach tol in max_iter steps (they keep the last beta). */
int64_t mlplab_tsne_perplexity(const double *d2, int64_t n, int64_t k, double perplexity, double tol,
                               int64_t max_iter, double *p) {
    const double target = log(perplexity);
    int64_t unconverged = 0;
    for (int64_t i = 0; i < n; i++) {
        const double *d = d2 + i * k;
        double *pi = p + i * k;
        double lo = d[0];
        for (int64_t j = 1; j < k; j++) lo = d[j] < lo ? d[j] : lo;
        double beta = 1.0, beta_min = -INFINITY, beta_max = INFINITY;
        int done = 0;
        for (int64_t it = 0; it < max_iter; it++) {
            double sum = 0.0, dot = 0.0;
            for (int64_t j = 0; j < k; j++) {
                double s = d[j] - lo;
                double e = exp(-beta * s);
                pi[j] = e;
                sum += e;
                dot += s * e;
            }
            double entropy = log(sum) + beta * dot / sum;
            double diff = entropy - target;
            for (int64_t j = 0; j < k; j++) pi[j] /= sum;
            if (fabs(diff) <= tol) {
                done = 1;
                break;
            }
            if (diff > 0) {
                beta_min = beta;
                beta = isinf(beta_max) ? beta * 2.0 : (beta + beta_max) / 2.0;
            } else {
                beta_max = beta;
                beta = isinf(beta_min) ? beta / 2.0 : (beta + beta_min) / 2.0;
            }
        }
        unconverged += !done;
    }
    return unconverged;
}

/* Trustworthiness ranks: ranks[i k + c] = 1 + the number of points l with d[i n + l] < d[i n + idx[i k + c]],
 * i.e. the 1-based rank, in row i of the feature distances d (n, n; the diagonal +inf), of each of the point's
 * k map neighbours idx (n, k). Row i stays in cache for its k counts; eight comparisons at a time. */
typedef int32_t v8i __attribute__((vector_size(32)));

HOT void mlplab_rank_count(const float *d, int64_t n, const int64_t *idx, int64_t k, int64_t *ranks) {
    for (int64_t i = 0; i < n; i++) {
        const float *row = d + i * n;
        for (int64_t c = 0; c < k; c++) {
            const float dj = row[idx[i * k + c]];
            const v8f djv = {dj, dj, dj, dj, dj, dj, dj, dj};
            v8i acc = {0};
            int64_t l = 0;
            for (; l + 8 <= n; l += 8) {
                v8f v;
                memcpy(&v, row + l, sizeof v);
                acc -= (v8i)(v < djv); /* a true comparison is -1 in its lane */
            }
            int64_t count = 0;
            for (int q = 0; q < 8; q++) count += acc[q];
            for (; l < n; l++) count += row[l] < dj;
            ranks[i * k + c] = count + 1;
        }
    }
}

/* The library's version: inspect/tsne.py refuses a build whose number differs from its own. */
int mlplab_tsne_version(void) { return 1; }
