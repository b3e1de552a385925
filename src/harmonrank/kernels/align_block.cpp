// The HarmonRank step-1 block (multi-head self-attention over M objective tokens, residual, LayerNorm,
// GELU feed-forward, residual, LayerNorm; post-norm) fused into one pass per tile of 8 candidates.
//
// Why: at M = 6 tokens of d = 16 every PyTorch operator of this block works on tiny inner dimensions
// (dot products of 8 numbers, softmaxes over 6), so a training step spends 80% of its time here at a few
// GFLOP/s (benchmarks/results/train_step.md). Here the 8 candidates of a tile sit in the 8 lanes of one
// SIMD register: every scalar operation of the per-candidate algorithm becomes one vector instruction,
// and all intermediates of a tile stay in L1.
//
// Plain C++ with GCC/Clang vector extensions (no ATen headers: builds in about a second), loaded with
// ctypes by harmonrank/kernels/__init__.py, which also holds the reference semantics (the PyTorch block).
// The backward pass recomputes the tile's forward from x (nothing is saved between the passes) and adds
// the weight gradients into per-lane accumulators that the caller sums.
//
// Layouts: x, y, dy, dx are (B, M, d) row-major float32. Parameters (float32, row-major, nn.Linear's
// (out, in)): wqkv (3d, d) = [q; k; v] weights, bqkv (3d), wo (d, d), bo (d), g1/be1 (d) LayerNorm 1,
// w1 (F, d), b1 (F), w2 (d, F), b2 (d), g2/be2 (d) LayerNorm 2. Head h uses columns h*dh .. h*dh+dh-1
// of each of q, k and v, as nn.MultiheadAttention and harmonrank.models.harmonrank._Attention do.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int T = 8;  // candidates per tile = float lanes of one 256-bit register
typedef float vf __attribute__((vector_size(T * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(T * sizeof(int32_t))));

inline vf splat(float v) { return vf{} + v; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline vf vmin(vf a, vf b) { return a < b ? a : b; }

#define HR_INLINE inline __attribute__((always_inline))

// exp, Cephes' single-precision polynomial (relative error ~1e-7 over the clamped range)
HR_INLINE vf vexp(vf x) {
    x = vmin(vmax(x, splat(-87.3f)), splat(88.3f));
    vf fx = x * 1.44269504088896341f + 0.5f;
    vf t = __builtin_convertvector(__builtin_convertvector(fx, vi), vf);
    vf n = t > fx ? t - 1.0f : t;  // floor
    x = x - n * 0.693359375f - n * -2.12194440e-4f;
    vf z = x * x;
    vf y = ((((1.9875691500e-4f * x + 1.3981999507e-3f) * x + 8.3334519073e-3f) * x + 4.1665795894e-2f) * x
             + 1.6666665459e-1f) * x + 5.0000001201e-1f;
    y = y * z + x + 1.0f;
    vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
    return y * (vf)bits;
}

// 1 / d: the hardware's 12-bit reciprocal and one Newton step (~23 bits), where AVX has it
HR_INLINE vf vrecip(vf d) {
#if defined(__AVX__) && !defined(__AVX512F__)
    vf r = __builtin_ia32_rcpps256(d);
    return r * (2.0f - d * r);
#else
    return 1.0f / d;
#endif
}

// GELU(x) = x Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2, erf by Abramowitz & Stegun 7.1.26 (absolute
// error <= 1.5e-7); GELU'(x) = Phi(x) + x phi(x), and the exp(-x^2/2) of phi is the one erf already needs
HR_INLINE void normal_cdf_pdf(vf x, vf& cdf, vf& pdf) {
    vf a = (x < 0.0f ? -x : x) * 0.70710678118654752f;
    vf t = vrecip(1.0f + 0.3275911f * a);
    vf p = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
    vf e = vexp(-a * a);
    vf half_erfc = 0.5f * p * e;  // (1 - erf(|x|/sqrt 2)) / 2
    cdf = x < 0.0f ? half_erfc : 1.0f - half_erfc;
    pdf = 0.39894228040143268f * e;
}

// 1 / sqrt(x): the hardware's 12-bit estimate and one Newton step (~23 bits), where AVX has it
HR_INLINE vf vrsqrt(vf x) {
#if defined(__AVX__) && !defined(__AVX512F__)
    vf r = __builtin_ia32_rsqrtps256(x);
    return r * (1.5f - 0.5f * x * r * r);
#else
    vf r;
    for (int t = 0; t < T; ++t) r[t] = 1.0f / std::sqrt(x[t]);
    return r;
#endif
}

struct Params {
    const float *wqkv, *bqkv, *wo, *bo, *g1, *be1, *w1, *b1, *w2, *b2, *g2, *be2;
};

// The products below work on blocks of up to MB tokens: each weight is broadcast once per block and
// used for every token of it, and the accumulators of a block (2 x MB vectors) stay in registers.
constexpr int MB = 6;

// out[m][r] = init + sum_k W[r * rs + k * ks] in[m][k] for r < nr, k < nk: the forward product (W as
// stored, rs = nk, ks = 1) and the input gradient (W transposed, rs = 1, ks = nr) in one loop nest. init is
// bias[r] if given, else out[m][r] itself if add, else 0. Two outputs at a time.
HR_INLINE void product(const float* W, int rs, int ks, const float* bias, bool add, const vf* in, vf* out, int M,
                       int nk, int nr) {
    for (int m0 = 0; m0 < M; m0 += MB) {
        const int mb = M - m0 < MB ? M - m0 : MB;
        const vf* x = in + m0 * nk;
        vf* y = out + m0 * nr;
        auto init = [&](int m, int r) { return bias ? splat(bias[r]) : add ? y[m * nr + r] : vf{}; };
        int r = 0;
        for (; r + 2 <= nr; r += 2) {
            vf a0[MB], a1[MB];
            for (int m = 0; m < mb; ++m) {
                a0[m] = init(m, r);
                a1[m] = init(m, r + 1);
            }
            for (int k = 0; k < nk; ++k) {
                vf u0 = splat(W[r * rs + k * ks]), u1 = splat(W[(r + 1) * rs + k * ks]);
                for (int m = 0; m < mb; ++m) {
                    vf xv = x[m * nk + k];
                    a0[m] += u0 * xv;
                    a1[m] += u1 * xv;
                }
            }
            for (int m = 0; m < mb; ++m) {
                y[m * nr + r] = a0[m];
                y[m * nr + r + 1] = a1[m];
            }
        }
        for (; r < nr; ++r) {
            for (int m = 0; m < mb; ++m) {
                vf acc = init(m, r);
                for (int k = 0; k < nk; ++k) acc += W[r * rs + k * ks] * x[m * nk + k];
                y[m * nr + r] = acc;
            }
        }
    }
}

// out[r] += sum_k W[r * nk + k] in[k] for one token: eight outputs at a time, so eight independent FMA chains
// hide the FMA latency (product()'s two chains for one token left the head several times slower)
HR_INLINE void matvec_add(const float* W, const vf* in, vf* out, int nk, int nr) {
    int r = 0;
    for (; r + 8 <= nr; r += 8) {
        vf a[8];
        for (int j = 0; j < 8; ++j) a[j] = out[r + j];
        const float* w = W + static_cast<int64_t>(r) * nk;
        for (int k = 0; k < nk; ++k) {
            const vf xv = in[k];
            for (int j = 0; j < 8; ++j) a[j] += w[j * nk + k] * xv;
        }
        for (int j = 0; j < 8; ++j) out[r + j] = a[j];
    }
    for (; r < nr; ++r) {
        vf acc = out[r];
        for (int k = 0; k < nk; ++k) acc += W[static_cast<int64_t>(r) * nk + k] * in[k];
        out[r] = acc;
    }
}

// out[m][o] = b[o] + sum_i W[o][i] in[m][i]
HR_INLINE void linear(const float* W, const float* b, const vf* in, vf* out, int M, int nin, int nout) {
    product(W, nin, 1, b, false, in, out, M, nin, nout);
}

// din[m][i] (+)= sum_o W[o][i] dout[m][o]
HR_INLINE void linear_back_input(const float* W, const vf* dout, vf* din, int M, int nin, int nout, bool add) {
    product(W, 1, nin, nullptr, add, dout, din, M, nout, nin);
}

// gW[o][i] += sum_m dout[m][o] in[m][i]; gb[o] += sum_m dout[m][o]  (per-lane accumulators); two outputs at a
// time, so each load of in[m][i] feeds two FMAs
HR_INLINE void linear_back_weight(const vf* in, const vf* dout, vf* gW, vf* gb, int M, int nin, int nout) {
    for (int m0 = 0; m0 < M; m0 += MB) {
        const int mb = M - m0 < MB ? M - m0 : MB;
        const vf* x = in + m0 * nin;
        int o = 0;
        for (; o + 2 <= nout; o += 2) {
            vf g0[MB], g1[MB];
            vf s0 = vf{}, s1 = vf{};
            for (int m = 0; m < mb; ++m) {
                g0[m] = dout[(m0 + m) * nout + o];
                g1[m] = dout[(m0 + m) * nout + o + 1];
                s0 += g0[m];
                s1 += g1[m];
            }
            gb[o] += s0;
            gb[o + 1] += s1;
            vf *w0 = gW + o * nin, *w1 = w0 + nin;
            for (int i = 0; i < nin; ++i) {
                vf a0 = w0[i], a1 = w1[i];
                for (int m = 0; m < mb; ++m) {
                    vf xv = x[m * nin + i];
                    a0 += g0[m] * xv;
                    a1 += g1[m] * xv;
                }
                w0[i] = a0;
                w1[i] = a1;
            }
        }
        for (; o < nout; ++o) {
            vf g[MB];
            vf sb = vf{};
            for (int m = 0; m < mb; ++m) {
                g[m] = dout[(m0 + m) * nout + o];
                sb += g[m];
            }
            gb[o] += sb;
            vf* gw = gW + o * nin;
            for (int i = 0; i < nin; ++i) {
                vf acc = gw[i];
                for (int m = 0; m < mb; ++m) acc += g[m] * x[m * nin + i];
                gw[i] = acc;
            }
        }
    }
}

// LayerNorm over the d features of each token: r (M, d) -> n (normalised), rs (M), out = n * g + be
HR_INLINE void layer_norm(const vf* r, vf* n, vf* rs, vf* out, const float* g, const float* be, int M, int d,
                       float eps) {
    float inv_d = 1.0f / static_cast<float>(d);
    for (int m = 0; m < M; ++m) {
        const vf* x = r + m * d;
        vf mu = vf{};
        for (int o = 0; o < d; ++o) mu += x[o];
        mu *= inv_d;
        vf var = vf{};
        for (int o = 0; o < d; ++o) {
            vf c = x[o] - mu;
            var += c * c;
        }
        vf s = vrsqrt(var * inv_d + eps);
        rs[m] = s;
        for (int o = 0; o < d; ++o) {
            vf v = (x[o] - mu) * s;
            n[m * d + o] = v;
            out[m * d + o] = v * g[o] + be[o];
        }
    }
}

// dout (M, d) -> dr (M, d) through out = LN(r) * g + be; gg, gbe accumulate
HR_INLINE void layer_norm_back(const vf* dout, const vf* n, const vf* rs, const float* g, vf* dr, vf* gg, vf* gbe,
                            int M, int d) {
    float inv_d = 1.0f / static_cast<float>(d);
    for (int m = 0; m < M; ++m) {
        vf a = vf{}, b = vf{};
        for (int o = 0; o < d; ++o) {
            vf dy = dout[m * d + o], nv = n[m * d + o];
            gg[o] += dy * nv;
            gbe[o] += dy;
            vf dn = dy * g[o];
            a += dn;
            b += dn * nv;
        }
        a *= inv_d;
        b *= inv_d;
        for (int o = 0; o < d; ++o) dr[m * d + o] = rs[m] * (dout[m * d + o] * g[o] - a - n[m * d + o] * b);
    }
}

#define HR_DIMS                                  \
    const int M = CM ? CM : M_;                  \
    const int d = CD ? CD : d_;                  \
    const int H = CH ? CH : H_;                  \
    const int F = CF ? CF : F_;                  \
    const int dh = d / H;                        \
    (void)H;                                     \
    (void)F;                                     \
    (void)dh;

// CM, CD, CH, CF > 0 fix the token count, width, heads and feed-forward width at compile time (the common
// configurations; the loops then unroll), 0 takes them at run time
template <int CM, int CD, int CH, int CF>
struct Tile {
    int M_, d_, H_, F_;
    float eps, scale;
    // intermediates of one tile (all L1/L2-resident); the backward pass recomputes them from x, which
    // measured as fast as saving them in the forward pass and reading them back (memory traffic)
    std::vector<vf> x, qkv, p, o, r, n1, rs1, x1, hp, ha, cdf, pdf, n2, rs2, y;
    // backward scratch
    std::vector<vf> dr2, dx1, dha, dr1, dO, dqkv, dx, da;

    Tile(int M, int d, int H, int F, float eps_)
        : M_(M), d_(d), H_(H), F_(F), eps(eps_), scale(1.0f / std::sqrt(static_cast<float>(d / H))),
          x(M * d), qkv(M * 3 * d), p(H * M * M), o(M * d), r(M * d), n1(M * d), rs1(M), x1(M * d), hp(M * F),
          ha(M * F), cdf(M * F), pdf(M * F), n2(M * d), rs2(M), y(M * d), dr2(M * d), dx1(M * d), dha(M * F),
          dr1(M * d), dO(M * d), dqkv(M * 3 * d), dx(M * d), da(M) {}

    // GELU's input -> its value, Phi and phi
    void gelu_parts() {
        HR_DIMS
        for (int k = 0; k < M * F; ++k) {
            normal_cdf_pdf(hp[k], cdf[k], pdf[k]);
            ha[k] = hp[k] * cdf[k];
        }
    }



    // (B, M, d) rows of the tile's candidates <-> lane t of each vector (plain scalar moves through a float
    // view: writing one lane of a vector value would be a load-insert-store per element)
    void gather(const float* src, int64_t b0, int64_t B, vf* dst) const {
        HR_DIMS
        const int md = M * d;
        float* out = reinterpret_cast<float*>(dst);
        for (int t = 0; t < T; ++t) {
            int64_t b = b0 + t;
            if (b < B) {
                const float* s = src + b * md;
                for (int k = 0; k < md; ++k) out[k * T + t] = s[k];
            } else {
                for (int k = 0; k < md; ++k) out[k * T + t] = 0.0f;
            }
        }
    }

    void scatter(const std::vector<vf>& src, int64_t b0, int64_t B, float* dst) const {
        HR_DIMS
        const int md = M * d;
        const float* in = reinterpret_cast<const float*>(src.data());
        for (int t = 0; t < T && b0 + t < B; ++t) {
            float* s = dst + (b0 + t) * md;
            for (int k = 0; k < md; ++k) s[k] = in[k * T + t];
        }
    }

    void forward(const Params& P) {
        HR_DIMS
        const int d3 = 3 * d;
        linear(P.wqkv, P.bqkv, x.data(), qkv.data(), M, d, d3);
        for (int h = 0; h < H; ++h) {
            const int c0 = h * dh;
            for (int i = 0; i < M; ++i) {
                vf* pi = p.data() + (h * M + i) * M;
                const vf* q = qkv.data() + i * d3 + c0;
                vf mx = splat(-INFINITY);
                for (int j = 0; j < M; ++j) {
                    const vf* k = qkv.data() + j * d3 + d + c0;
                    vf s = vf{};
                    for (int e = 0; e < dh; ++e) s += q[e] * k[e];
                    s *= scale;
                    pi[j] = s;
                    mx = vmax(mx, s);
                }
                vf sum = vf{};
                for (int j = 0; j < M; ++j) {
                    vf ev = vexp(pi[j] - mx);
                    pi[j] = ev;
                    sum += ev;
                }
                vf inv = 1.0f / sum;
                for (int j = 0; j < M; ++j) pi[j] *= inv;
                vf* oi = o.data() + i * d + c0;
                for (int e = 0; e < dh; ++e) oi[e] = vf{};
                for (int j = 0; j < M; ++j) {
                    const vf* v = qkv.data() + j * d3 + 2 * d + c0;
                    vf a = pi[j];
                    for (int e = 0; e < dh; ++e) oi[e] += a * v[e];
                }
            }
        }
        linear(P.wo, P.bo, o.data(), r.data(), M, d, d);
        for (int k = 0; k < M * d; ++k) r[k] += x[k];
        layer_norm(r.data(), n1.data(), rs1.data(), x1.data(), P.g1, P.be1, M, d, eps);
        linear(P.w1, P.b1, x1.data(), hp.data(), M, d, F);
        gelu_parts();
        linear(P.w2, P.b2, ha.data(), r.data(), M, F, d);
        for (int k = 0; k < M * d; ++k) r[k] += x1[k];
        layer_norm(r.data(), n2.data(), rs2.data(), y.data(), P.g2, P.be2, M, d, eps);
    }

    // dy is in `y` on entry; dx is left in `dx`; weight gradients added to G (per-lane, parameter order)
    void backward(const Params& P, vf* G) {
        HR_DIMS
        const int d3 = 3 * d;
        vf* gWqkv = G;
        vf* gbqkv = gWqkv + d3 * d;
        vf* gWo = gbqkv + d3;
        vf* gbo = gWo + d * d;
        vf* gg1 = gbo + d;
        vf* gbe1 = gg1 + d;
        vf* gW1 = gbe1 + d;
        vf* gb1 = gW1 + F * d;
        vf* gW2 = gb1 + F;
        vf* gb2 = gW2 + d * F;
        vf* gg2 = gb2 + d;
        vf* gbe2 = gg2 + d;

        layer_norm_back(y.data(), n2.data(), rs2.data(), P.g2, dr2.data(), gg2, gbe2, M, d);
        linear_back_weight(ha.data(), dr2.data(), gW2, gb2, M, F, d);
        linear_back_input(P.w2, dr2.data(), dha.data(), M, F, d, false);
        for (int k = 0; k < M * F; ++k) dha[k] *= cdf[k] + hp[k] * pdf[k];
        linear_back_weight(x1.data(), dha.data(), gW1, gb1, M, d, F);
        for (int k = 0; k < M * d; ++k) dx1[k] = dr2[k];
        linear_back_input(P.w1, dha.data(), dx1.data(), M, d, F, true);
        layer_norm_back(dx1.data(), n1.data(), rs1.data(), P.g1, dr1.data(), gg1, gbe1, M, d);
        linear_back_weight(o.data(), dr1.data(), gWo, gbo, M, d, d);
        linear_back_input(P.wo, dr1.data(), dO.data(), M, d, d, false);

        for (int k = 0; k < M * d3; ++k) dqkv[k] = vf{};
        for (int h = 0; h < H; ++h) {
            const int c0 = h * dh;
            for (int i = 0; i < M; ++i) {
                const vf* pi = p.data() + (h * M + i) * M;
                const vf* doi = dO.data() + i * d + c0;
                vf dot = vf{};
                for (int j = 0; j < M; ++j) {
                    const vf* v = qkv.data() + j * d3 + 2 * d + c0;
                    vf* dv = dqkv.data() + j * d3 + 2 * d + c0;
                    vf a = vf{};
                    for (int e = 0; e < dh; ++e) {
                        a += doi[e] * v[e];
                        dv[e] += pi[j] * doi[e];
                    }
                    da[j] = a;
                    dot += pi[j] * a;
                }
                const vf* q = qkv.data() + i * d3 + c0;
                vf* dq = dqkv.data() + i * d3 + c0;
                for (int j = 0; j < M; ++j) {
                    vf ds = pi[j] * (da[j] - dot) * scale;
                    const vf* k = qkv.data() + j * d3 + d + c0;
                    vf* dk = dqkv.data() + j * d3 + d + c0;
                    for (int e = 0; e < dh; ++e) {
                        dq[e] += ds * k[e];
                        dk[e] += ds * q[e];
                    }
                }
            }
        }
        linear_back_weight(x.data(), dqkv.data(), gWqkv, gbqkv, M, d, d3);
        for (int k = 0; k < M * d; ++k) dx[k] = dr1[k];
        linear_back_input(P.wqkv, dqkv.data(), dx.data(), M, d, d3, true);
    }
};

Params params(const float* const* p) {
    return Params{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11]};
}

template <int CM, int CD, int CH, int CF>
void run_forward(int64_t B, int M, int d, int H, int F, float eps, const float* x, const Params& P, float* y,
                 int64_t tile0, int64_t tile1) {
    Tile<CM, CD, CH, CF> tile(M, d, H, F, eps);
    for (int64_t tt = tile0; tt < tile1; ++tt) {
        int64_t b0 = tt * T;
        tile.gather(x, b0, B, tile.x.data());
        tile.forward(P);
        tile.scatter(tile.y, b0, B, y);
    }
}

template <int CM, int CD, int CH, int CF>
void run_backward(int64_t B, int M, int d, int H, int F, float eps, const float* x, const float* dy,
                  const Params& P, float* dx, vf* G, int64_t tile0, int64_t tile1) {
    Tile<CM, CD, CH, CF> tile(M, d, H, F, eps);
    for (int64_t tt = tile0; tt < tile1; ++tt) {
        int64_t b0 = tt * T;
        tile.gather(x, b0, B, tile.x.data());
        tile.forward(P);
        tile.gather(dy, b0, B, tile.y.data());
        tile.backward(P, G);
        tile.scatter(tile.dx, b0, B, dx);
    }
}

// Inference of a whole (folded) HarmonRank net per tile: objective tokens from the standardised logits, the
// step-1 blocks, then step 2 (the user's cross-attention over the aligned tokens, the head MLP, the gate's
// weighted product), so no intermediate leaves the tile. The user terms, constant over a request's
// candidates, come precomputed per distinct user row (harmonrank/models/fused.py):
// U[u] = [query in token space (d) | head's user term (hd) | softplus(gate) (M, if gated)].
struct ScoreNet {
    int K, hd, layers;
    const float *knots, *wtok, *btok;  // (K), (M, K + 1, d), (M, d)
    const Params* blocks;              // `layers` step-1 blocks
    const float *whead, *w2;           // (hd, M d + d), (hd)
    float b2;
    bool gated;
};

template <int CM, int CD, int CH, int CF>
void run_score(int64_t B, int M, int d, int H, int F, float eps, const float* z, const float* logp,
               const int64_t* uidx, const float* U, int nu, const ScoreNet& S, float* out, int64_t tile0,
               int64_t tile1) {
    Tile<CM, CD, CH, CF> tile(M, d, H, F, eps);
    const int Mx = CM ? CM : M, dx = CD ? CD : d;
    const int width = Mx * dx + dx;
    std::vector<vf> zt(Mx), lp(Mx), g(dx), hu(S.hd), gate(Mx), cat(width), h(S.hd), sw(Mx);
    for (int64_t tt = tile0; tt < tile1; ++tt) {
        const int64_t b0 = tt * T;
        // per-lane gathers of the candidate's logits and its user's terms (padding lanes repeat the last row)
        // (through float views: writing one lane of a vector value is a load-insert-store)
        float *zf = reinterpret_cast<float*>(zt.data()), *lf = reinterpret_cast<float*>(lp.data()),
              *gf = reinterpret_cast<float*>(gate.data()), *qf = reinterpret_cast<float*>(g.data()),
              *hf = reinterpret_cast<float*>(hu.data());
        for (int t = 0; t < T; ++t) {
            const int64_t b = b0 + t < B ? b0 + t : B - 1;
            const float* u = U + uidx[b] * nu;
            for (int m = 0; m < Mx; ++m) zf[m * T + t] = z[b * Mx + m];
            if (S.gated)
                for (int m = 0; m < Mx; ++m) {
                    lf[m * T + t] = logp[b * Mx + m];
                    gf[m * T + t] = u[dx + S.hd + m];
                }
            for (int o = 0; o < dx; ++o) qf[o * T + t] = u[o];
            for (int j = 0; j < S.hd; ++j) hf[j * T + t] = u[dx + j];
        }
        // objective tokens: x[m] = btok[m] + wtok[m][0] z + sum_k wtok[m][1 + k] relu(z - knot_k)
        for (int m = 0; m < Mx; ++m) {
            vf* xm = tile.x.data() + m * dx;
            const float* w = S.wtok + static_cast<int64_t>(m) * (S.K + 1) * dx;
            for (int o = 0; o < dx; ++o) xm[o] = splat(S.btok[m * dx + o]) + w[o] * zt[m];
            for (int k = 0; k < S.K; ++k) {
                vf r = zt[m] - S.knots[k];
                r = r > 0.0f ? r : vf{};
                const float* wk = w + (k + 1) * dx;
                for (int o = 0; o < dx; ++o) xm[o] += wk[o] * r;
            }
        }
        for (int l = 0; l < S.layers; ++l) {
            if (l) tile.x.swap(tile.y);
            tile.forward(S.blocks[l]);
        }
        const vf* x = tile.y.data();
        // step 2: softmax over tokens of x[m] . g, the pooled token, then [x, pooled] -> head
        vf mx = splat(-INFINITY);
        for (int m = 0; m < Mx; ++m) {
            vf a = vf{};
            for (int o = 0; o < dx; ++o) a += x[m * dx + o] * g[o];
            sw[m] = a;
            mx = vmax(mx, a);
        }
        vf sum = vf{};
        for (int m = 0; m < Mx; ++m) {
            sw[m] = vexp(sw[m] - mx);
            sum += sw[m];
        }
        vf inv = 1.0f / sum;
        for (int o = 0; o < dx; ++o) cat[Mx * dx + o] = vf{};
        for (int m = 0; m < Mx; ++m) {
            vf a = sw[m] * inv;
            for (int o = 0; o < dx; ++o) {
                cat[m * dx + o] = x[m * dx + o];
                cat[Mx * dx + o] += a * x[m * dx + o];
            }
        }
        for (int j = 0; j < S.hd; ++j) h[j] = hu[j];
        matvec_add(S.whead, cat.data(), h.data(), width, S.hd);
        vf score = splat(S.b2);
        for (int j = 0; j < S.hd; ++j) {
            vf cdf, pdf;
            normal_cdf_pdf(h[j], cdf, pdf);
            score += S.w2[j] * (h[j] * cdf);
        }
        if (S.gated)
            for (int m = 0; m < Mx; ++m) score += gate[m] * lp[m];
        const float* sf = reinterpret_cast<const float*>(&score);
        for (int t = 0; t < T && b0 + t < B; ++t) out[b0 + t] = sf[t];
    }
}

// the default net (6 objectives, d 16, 2 heads, feed-forward 32) and its preference variant (7 tokens)
// get compile-time sizes; anything else runs the same code with run-time sizes
#define HR_DISPATCH(FN, ...)                                                   \
    if (M == 6 && d == 16 && H == 2 && F == 32)                                \
        FN<6, 16, 2, 32>(__VA_ARGS__);                                         \
    else if (M == 7 && d == 16 && H == 2 && F == 32)                           \
        FN<7, 16, 2, 32>(__VA_ARGS__);                                         \
    else                                                                       \
        FN<0, 0, 0, 0>(__VA_ARGS__);

}  // namespace

extern "C" {

int hr_align_lanes() { return T; }

// y[b] = block(x[b]) for the candidates of tiles [tile0, tile1)
void hr_align_forward(int64_t B, int M, int d, int H, int F, float eps, const float* x, const float* const* p,
                      float* y, int64_t tile0, int64_t tile1) {
    Params P = params(p);
    HR_DISPATCH(run_forward, B, M, d, H, F, eps, x, P, y, tile0, tile1)
}

// dx[b] = d block / d x[b] applied to dy[b] (the tile's forward pass recomputed from x); grads (n_params x T
// floats, zeroed by the caller) accumulates the parameter gradients per lane, in the order wqkv, bqkv, wo,
// bo, g1, be1, w1, b1, w2, b2, g2, be2
void hr_align_backward(int64_t B, int M, int d, int H, int F, float eps, const float* x, const float* dy,
                       const float* const* p, float* dx, float* grads, int64_t tile0, int64_t tile1) {
    Params P = params(p);
    vf* G = reinterpret_cast<vf*>(grads);
    HR_DISPATCH(run_backward, B, M, d, H, F, eps, x, dy, P, dx, G, tile0, tile1)
}

// out[b] = the folded net's score of candidate b, for the candidates of tiles [tile0, tile1). z, logp: (B, M)
// standardised logits and clipped log-probabilities (logp unused unless gated); uidx (B): row of U (n, nu)
// holding b's user terms; p: 12 pointers per block (hr_align_forward's order), `layers` blocks; knots (K),
// wtok (M, K + 1, d), btok (M, d), whead (hd, M d + d), w2 (hd), b2
void hr_score_forward(int64_t B, int M, int d, int H, int F, float eps, int K, int hd, int layers, int gated,
                      const float* z, const float* logp, const int64_t* uidx, const float* U, int nu,
                      const float* const* p, const float* knots, const float* wtok, const float* btok,
                      const float* whead, const float* w2, float b2, float* out, int64_t tile0, int64_t tile1,
                      int parts) {
    std::vector<Params> blocks;
    for (int l = 0; l < layers; ++l) blocks.push_back(params(p + 12 * l));
    ScoreNet S{K, hd, layers, knots, wtok, btok, blocks.data(), whead, w2, b2, gated != 0};
    // `parts` contiguous tile ranges: on OpenMP threads where built with it (the caller's process shares
    // torch's OpenMP runtime, so the threads torch's own operators just used take the parts), else in turn
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int k = 0; k < parts; ++k) {
        const int64_t a = tile0 + (tile1 - tile0) * k / parts, b = tile0 + (tile1 - tile0) * (k + 1) / parts;
        HR_DISPATCH(run_score, B, M, d, H, F, eps, z, logp, uidx, U, nu, S, out, a, b)
    }
}

// 1 if built with OpenMP (hr_score_forward's parts then run in parallel)
int hr_openmp() {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

}  // extern "C"
