package org.moe4j.engine.model;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import org.moe4j.engine.routing.RoutingRng;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.VectorOps;

/**
 * ERC, the expert-router coupling loss of one layer (ALGORITHMS.md section 3), over the E' kept routed experts:
 * <pre>
 *   eps_i  = min_{j != i} |R_i - R_j| / (2 |R_i|)              (a constant: no gradient)
 *   Rt_i   = R_i * delta_i,  delta_i = 1 + eps_i * u_i,  u uniform in (-1, 1), fresh every step (or pinned)
 *   M[i,j] = |W1_j Rt_i|_2                                       (P_j = Rt W1_j^T, [E', h], one GEMM per expert)
 *   L      = (1/E'^2) sum_i sum_{j != i} relu(M[i,j] - a M[i,i]) + relu(M[j,i] - a M[i,i]),
 *            a = the config's alpha, or 1 (E' <= 64) else 0.5 when it is 0 (LossWeights.ercAlpha(int))
 * </pre>
 * Gradients reach the router rows R (through Rt) and the experts' W1. Scratch is allocated once; calls allocate
 * nothing.
 */
final class ExpertRouterCoupling {
    private final int d, h, maxE;
    private final Gemm gemm;
    private final MemorySegment rt, p, g, dRt;
    private final double[] m, coef, eps, delta;
    private final float[] noise;
    private int[] kept;
    private int n;
    private boolean pinned;
    private double epsMean;
    /** The config's alpha; 0 = the paper's rule over the kept experts of each call. */
    private double alphaSetting;

    ExpertRouterCoupling(int d, int h, int maxRouted, Gemm gemm, Arena arena) {
        this.d = d;
        this.h = h;
        this.maxE = maxRouted;
        this.gemm = gemm;
        this.rt = arena.allocate((long) maxRouted * d * 4, Tensor.ALIGNMENT);
        this.dRt = arena.allocate((long) maxRouted * d * 4, Tensor.ALIGNMENT);
        this.p = arena.allocate((long) maxRouted * maxRouted * h * 4, Tensor.ALIGNMENT);
        this.g = arena.allocate((long) maxRouted * h * 4, Tensor.ALIGNMENT);
        this.m = new double[maxRouted * maxRouted];
        this.coef = new double[maxRouted * maxRouted];
        this.eps = new double[maxRouted];
        this.delta = new double[(int) ((long) maxRouted * d)];
        this.noise = new float[maxRouted * d];
    }

    /** u [E', d] in kept order for the next forward calls (pinned noise); null returns to drawing it. */
    void pinNoise(float[] u) {
        if (u == null) {
            pinned = false;
            return;
        }
        System.arraycopy(u, 0, noise, 0, u.length);
        pinned = true;
    }

    /** ERC's margin alpha from the config ({@code LossWeights.ercAlpha}); 0 = 1 up to 64 kept experts, else 0.5. */
    void alpha(double alpha) {
        this.alphaSetting = alpha;
    }

    double epsMean() {
        return epsMean;
    }

    /**
     * params: the flat parameter buffer; routerOff: Wr [E, d]; W1 of expert j [h, d] at element w1Off[j] of w1[j]
     * (the parameters, or an expert-parallel rank's copy of another rank's); kept[0..n) the kept routed experts.
     * Returns L (unweighted).
     */
    double forward(MemorySegment params, long routerOff, MemorySegment[] w1, long[] w1Off, int[] keptExperts,
                   int keptCount, RoutingRng rng) {
        this.kept = keptExperts;
        this.n = keptCount;
        if (n < 2) {
            epsMean = 0;
            return 0;
        }
        // eps_i from the router rows (kept only)
        double epsSum = 0;
        for (int i = 0; i < n; i++) {
            long ri = routerOff + (long) kept[i] * d;
            double ni = Math.sqrt(VectorOps.sumSquares(params, ri, d));
            double best = Double.POSITIVE_INFINITY;
            for (int j = 0; j < n; j++) {
                if (j == i) continue;
                long rj = routerOff + (long) kept[j] * d;
                double s = 0;
                for (int c = 0; c < d; c++) {
                    double diff = params.getAtIndex(Tensor.FLOAT, ri + c) - params.getAtIndex(Tensor.FLOAT, rj + c);
                    s += diff * diff;
                }
                best = Math.min(best, Math.sqrt(s));
            }
            eps[i] = ni > 0 ? best / (2 * ni) : 0;
            epsSum += eps[i];
        }
        epsMean = epsSum / n;
        for (int i = 0; i < n; i++) {
            long ri = routerOff + (long) kept[i] * d;
            for (int c = 0; c < d; c++) {
                if (!pinned) noise[i * d + c] = (float) (2 * rng.nextDouble() - 1);
                double dl = 1 + eps[i] * noise[i * d + c];
                delta[i * d + c] = dl;
                rt.setAtIndex(Tensor.FLOAT, (long) i * d + c, (float) (params.getAtIndex(Tensor.FLOAT, ri + c) * dl));
            }
        }
        // P_j = Rt W1_j^T [n, h]; M[i, j] = |P_j[i]|
        for (int j = 0; j < n; j++) {
            long pj = (long) j * maxE * h;
            MemorySegment w1j = w1[kept[j]];
            if (w1j == null)
                throw new org.moe4j.Moe4jException("ERC: no W1 of expert " + kept[j] + " here (an expert-parallel rank "
                        + "reads the other ranks' W1 from the copy its executor installs)");
            gemm.sgemm(false, true, n, h, d, 1f, rt, 0, d, w1j, w1Off[kept[j]], d, 0f, p, pj, h);
            for (int i = 0; i < n; i++) m[i * n + j] = Math.sqrt(VectorOps.sumSquares(p, pj + (long) i * h, h));
        }
        double alpha = alphaSetting > 0 ? alphaSetting : n <= 64 ? 1.0 : 0.5, loss = 0;
        java.util.Arrays.fill(coef, 0, n * n, 0.0);
        for (int i = 0; i < n; i++) {
            double mii = alpha * m[i * n + i];
            for (int j = 0; j < n; j++) {
                if (j == i) continue;
                double a = m[i * n + j] - mii, b = m[j * n + i] - mii;
                if (a > 0) {
                    loss += a;
                    coef[i * n + j] += 1;
                    coef[i * n + i] -= alpha;
                }
                if (b > 0) {
                    loss += b;
                    coef[j * n + i] += 1;
                    coef[i * n + i] -= alpha;
                }
            }
        }
        double inv = 1.0 / ((double) n * n);
        for (int i = 0; i < n * n; i++) coef[i] *= inv;
        return loss * inv;
    }

    /**
     * Adds weight · dL/dR into the router gradient rows and weight · expertScale · dL/dW1_j into each held expert's W1
     * gradient at element gradOff[j] of grads (expertScale: see {@link ExpertExecutor#ercExpertScale}; gradOff[j] < 0:
     * another rank's expert, whose gradient its owner computes); W1 read as in {@link #forward}.
     */
    void backward(double weight, double expertScale, MemorySegment params, MemorySegment grads, long routerOff,
                  MemorySegment[] w1, long[] w1Off, long[] gradOff) {
        if (n < 2 || weight == 0) return;
        VectorOps.zero(dRt, 0, (long) n * d);
        for (int j = 0; j < n; j++) {
            long pj = (long) j * maxE * h;
            boolean any = false;
            // G_j[i] = weight · coef[i,j] · P_j[i] / M[i,j]
            for (int i = 0; i < n; i++) {
                double c = coef[i * n + j], mij = m[i * n + j];
                float s = (c != 0 && mij > 0) ? (float) (weight * c / mij) : 0f;
                any |= s != 0f;
                VectorOps.scaleCopy(s, p, pj + (long) i * h, g, (long) i * h, h);
            }
            if (!any) continue;
            int e = kept[j];
            if (gradOff[e] >= 0) // dW1_j += G_j^T Rt
                gemm.sgemm(true, false, h, d, n, (float) expertScale, g, 0, h, rt, 0, d, 1f, grads, gradOff[e], d);
            gemm.sgemm(false, false, n, d, h, 1f, g, 0, h, w1[e], w1Off[e], d, 1f, dRt, 0, d); // dRt += G_j W1_j
        }
        for (int i = 0; i < n; i++) {
            long gi = routerOff + (long) kept[i] * d;
            for (int c = 0; c < d; c++) {
                float v = grads.getAtIndex(Tensor.FLOAT, gi + c)
                        + (float) (dRt.getAtIndex(Tensor.FLOAT, (long) i * d + c) * delta[i * d + c]);
                grads.setAtIndex(Tensor.FLOAT, gi + c, v);
            }
        }
    }
}
