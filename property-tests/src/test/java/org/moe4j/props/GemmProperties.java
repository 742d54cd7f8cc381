package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterContainer;
import org.junit.jupiter.api.Test;
import org.moe4j.reference.RefGemm;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * JavaGemm vs the float64 twin RefGemm on random shapes (m, n, k in 0..150, some larger, crossing the MR = 8,
 * NR = 48, KC = 256 and MC = 144 block edges), all four transpose combinations, random alpha and beta, leading
 * dimensions larger than the row length, nonzero offsets, and junk around every operand that must stay untouched.
 * Tolerance per element: 1e-5 * (sqrt(k) + 1) * max|A| * max|B| * |alpha| + 1e-6 * |beta C| (float32 rounding of
 * a k-term dot product grows like sqrt(k) ulps for random signs; the bound is ~10x above what is observed).
 * Also: beta == 0 ignores NaN in C, k == 0 gives beta * C, and pools of 1 and 3 threads give identical bits.
 */
class GemmProperties {
    private static final WorkerPool POOL1 = new WorkerPool(1);
    private static final WorkerPool POOL2 = new WorkerPool(2);
    private static final WorkerPool POOL3 = new WorkerPool(3);

    @AfterContainer
    static void closePools() {
        POOL1.close();
        POOL2.close();
        POOL3.close();
    }

    /** One random problem with padded strides and offsets; run() returns C after the kernel. */
    private static final class Problem {
        final boolean transA;
        final boolean transB;
        final int m;
        final int n;
        final int k;
        final int lda;
        final int ldb;
        final int ldc;
        final int aOff;
        final int bOff;
        final int cOff;
        final float alpha;
        final float beta;
        final float[] a;
        final float[] b;
        final float[] c;
        final double scaleA;
        final double scaleB;

        Problem(Random rnd, int m, int n, int k, boolean transA, boolean transB) {
            this.m = m;
            this.n = n;
            this.k = k;
            this.transA = transA;
            this.transB = transB;
            lda = (transA ? m : k) + (rnd.nextBoolean() ? 0 : rnd.nextInt(5) + 1) + (m == 0 || k == 0 ? 1 : 0);
            ldb = (transB ? k : n) + (rnd.nextBoolean() ? 0 : rnd.nextInt(5) + 1) + (n == 0 || k == 0 ? 1 : 0);
            ldc = n + (rnd.nextBoolean() ? 0 : rnd.nextInt(5) + 1) + (n == 0 ? 1 : 0);
            aOff = rnd.nextInt(7);
            bOff = rnd.nextInt(7);
            cOff = rnd.nextInt(7);
            alpha = rnd.nextInt(4) == 0 ? 1f : (float) rnd.nextGaussian();
            int bk = rnd.nextInt(4);
            beta = bk == 0 ? 0f : bk == 1 ? 1f : (float) rnd.nextGaussian();
            scaleA = Math.exp(rnd.nextGaussian());
            scaleB = Math.exp(rnd.nextGaussian());
            a = KernelsSupport.gaussian(rnd, aOff + lda * (transA ? k : m), scaleA);
            b = KernelsSupport.gaussian(rnd, bOff + ldb * (transB ? n : k), scaleB);
            c = KernelsSupport.gaussian(rnd, cOff + ldc * m, 1);
        }

        double[] expected() {
            return RefGemm.gemm(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
        }

        /** C (the whole padded array) after JavaGemm on the given pool; checks the junk pads are intact. */
        float[] run(WorkerPool pool, float[] cInit) {
            int pad = 5;
            try (Arena arena = Arena.ofShared()) {
                MemorySegment as = KernelsSupport.floats(arena, a, pad);
                MemorySegment bs = KernelsSupport.floats(arena, b, pad);
                MemorySegment cs = KernelsSupport.floats(arena, cInit, pad);
                // the segments start at the junk pad: offsets count it
                new JavaGemm(pool).sgemm(transA, transB, m, n, k, alpha, as, pad + aOff, lda, bs, pad + bOff, ldb,
                        beta, cs, pad + cOff, ldc);
                KernelsSupport.assertPadIntact("C", cs, pad, cInit.length);
                return KernelsSupport.read(cs, pad, cInit.length);
            }
        }

        void check(String what, float[] cOut, double[] expected) {
            double maxA = maxAbs(a);
            double maxB = maxAbs(b);
            double tolDot = 1e-5 * (Math.sqrt(k) + 1) * maxA * maxB * Math.abs(alpha);
            for (int i = 0; i < c.length; i++) {
                int rel = i - cOff;
                int row = rel < 0 ? -1 : rel / ldc;
                int col = rel < 0 ? -1 : rel % ldc;
                boolean inside = rel >= 0 && row < m && col < n;
                if (!inside) {
                    if (Float.floatToRawIntBits(cOut[i]) != Float.floatToRawIntBits(c[i])) {
                        fail(what + ": wrote C element " + i + " outside the [m, n] window (ldc " + ldc + ")");
                    }
                    continue;
                }
                double e = expected[row * n + col];
                double tol = tolDot + 1e-6 * Math.abs(beta * c[i]) + 1e-30;
                if (!(Math.abs(cOut[i] - e) <= tol)) {
                    fail(what + ": C[" + row + ", " + col + "] = " + cOut[i] + ", expected " + e + " (tol " + tol
                            + ", m " + m + " n " + n + " k " + k + " transA " + transA + " transB " + transB
                            + " alpha " + alpha + " beta " + beta + ")");
                }
            }
        }
    }

    static double maxAbs(float[] v) {
        double mx = 0;
        for (float x : v) {
            mx = Math.max(mx, Math.abs(x));
        }
        return mx;
    }

    @Property(tries = 150)
    void matchesTwin(@ForAll @IntRange(min = 0, max = 150) int m, @ForAll @IntRange(min = 0, max = 150) int n,
                     @ForAll @IntRange(min = 0, max = 150) int k, @ForAll boolean transA, @ForAll boolean transB,
                     @ForAll long seed) {
        Problem pr = new Problem(new Random(seed), m, n, k, transA, transB);
        pr.check("pool2", pr.run(POOL2, pr.c), pr.expected());
    }

    /** Shapes crossing KC = 256 (two K blocks: beta applied once), MC = 144 and the M-split threshold. */
    @Property(tries = 12)
    void matchesTwinLarge(@ForAll @IntRange(min = 1, max = 420) int m, @ForAll @IntRange(min = 1, max = 300) int n,
                          @ForAll @IntRange(min = 200, max = 600) int k, @ForAll boolean transA,
                          @ForAll boolean transB, @ForAll long seed) {
        Problem pr = new Problem(new Random(seed), m, n, k, transA, transB);
        pr.check("pool2 large", pr.run(POOL2, pr.c), pr.expected());
    }

    /** The skinny path (B^T, m <= 32: dot products from the segments) at k around the 16-lane edges. */
    @Property(tries = 40)
    void skinnyTransBMatchesTwin(@ForAll @IntRange(min = 1, max = 40) int m, @ForAll @IntRange(min = 1, max = 90) int n,
                                 @ForAll @IntRange(min = 1, max = 300) int k, @ForAll long seed) {
        Problem pr = new Problem(new Random(seed), m, n, k, false, true);
        float[] one = pr.run(POOL1, pr.c);
        pr.check("skinny", one, pr.expected());
        assertArrayEquals(one, pr.run(POOL3, pr.c), "skinny: 3 threads vs 1");
    }

    /**
     * N slices end on 16-column boundaries, so a thread's last panel is often 16 or 32 columns wide and runs the
     * 8 x 16 or 8 x 32 kernel; n next to multiples of 16 and of NR = 48, m below the M-split threshold (so 2 and 3
     * threads split N), all four transposes: matches the twin, and 1, 2 and 3 threads give the same bits.
     */
    @Property(tries = 40)
    void narrowPanelsMatchTwin(@ForAll @IntRange(min = 1, max = 70) int m, @ForAll @IntRange(min = 1, max = 20) int n16,
                               @ForAll @IntRange(min = -1, max = 1) int nDelta,
                               @ForAll @IntRange(min = 1, max = 300) int k, @ForAll boolean transA,
                               @ForAll boolean transB, @ForAll long seed) {
        int n = Math.max(1, 16 * n16 + nDelta);
        Problem pr = new Problem(new Random(seed), m, n, k, transA, transB);
        float[] one = pr.run(POOL1, pr.c);
        pr.check("narrow panels", one, pr.expected());
        assertArrayEquals(one, pr.run(POOL2, pr.c), "narrow panels: 2 threads vs 1");
        assertArrayEquals(one, pr.run(POOL3, pr.c), "narrow panels: 3 threads vs 1");
    }

    /** 1, 2 and 3 threads partition differently (M vs N slices) but every element sums in the same order. */
    @Property(tries = 30)
    void threadCountDoesNotChangeBits(@ForAll @IntRange(min = 1, max = 700) int m,
                                      @ForAll @IntRange(min = 1, max = 200) int n,
                                      @ForAll @IntRange(min = 1, max = 300) int k, @ForAll boolean transA,
                                      @ForAll boolean transB, @ForAll long seed) {
        Problem pr = new Problem(new Random(seed), m, n, k, transA, transB);
        float[] one = pr.run(POOL1, pr.c);
        assertArrayEquals(one, pr.run(POOL2, pr.c), "2 threads vs 1");
        assertArrayEquals(one, pr.run(POOL3, pr.c), "3 threads vs 1");
        pr.check("pool1", one, pr.expected());
    }

    @Property(tries = 40)
    void betaZeroIgnoresNaN(@ForAll @IntRange(min = 1, max = 80) int m, @ForAll @IntRange(min = 1, max = 80) int n,
                            @ForAll @IntRange(min = 0, max = 80) int k, @ForAll boolean transA,
                            @ForAll boolean transB, @ForAll long seed) {
        Random rnd = new Random(seed);
        Problem pr;
        do {
            pr = new Problem(rnd, m, n, k, transA, transB);
        } while (pr.beta != 0f);
        float[] nanC = pr.c.clone();
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                nanC[pr.cOff + i * pr.ldc + j] = rnd.nextBoolean() ? Float.NaN : Float.POSITIVE_INFINITY;
            }
        }
        float[] out = pr.run(POOL2, nanC);
        double[] exp = pr.expected();
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                float v = out[pr.cOff + i * pr.ldc + j];
                if (!Float.isFinite(v) || Math.abs(v - exp[i * n + j]) > 1e-3 * (1 + Math.abs(exp[i * n + j]))) {
                    fail("beta == 0: C[" + i + ", " + j + "] = " + v + ", expected " + exp[i * n + j]);
                }
            }
        }
    }

    @Test
    void kZeroScalesC() {
        Random rnd = new Random(7);
        Problem pr = new Problem(rnd, 9, 37, 0, false, true);
        float[] out = pr.run(POOL2, pr.c);
        for (int i = 0; i < 9; i++) {
            for (int j = 0; j < 37; j++) {
                int idx = pr.cOff + i * pr.ldc + j;
                assertEquals(pr.beta * pr.c[idx], out[idx], 0f, "C[" + i + ", " + j + "]");
            }
        }
    }

    @Test
    void exactOnSmallIntegers() {
        // integer-valued inputs make every product and partial sum exact in float: the result must be exact
        Random rnd = new Random(3);
        int m = 50;
        int n = 70;
        int k = 300;
        float[] a = new float[m * k];
        float[] b = new float[k * n];
        for (int i = 0; i < a.length; i++) {
            a[i] = rnd.nextInt(7) - 3;
        }
        for (int i = 0; i < b.length; i++) {
            b[i] = rnd.nextInt(7) - 3;
        }
        double[] exp = RefGemm.gemm(false, false, m, n, k, 1, a, 0, k, b, 0, n, 0, new float[m * n], 0, n);
        try (Arena arena = Arena.ofShared()) {
            Tensor ta = Tensor.allocate(arena, m, k);
            Tensor tb = Tensor.allocate(arena, k, n);
            Tensor tc = Tensor.allocate(arena, m, n);
            MemorySegment.copy(a, 0, ta.segment(), Tensor.FLOAT, 0, a.length);
            MemorySegment.copy(b, 0, tb.segment(), Tensor.FLOAT, 0, b.length);
            new JavaGemm(POOL2).sgemm(false, false, 1f, ta, tb, 0f, tc);
            float[] out = KernelsSupport.read(tc.segment(), 0, m * n);
            for (int i = 0; i < out.length; i++) {
                assertEquals(exp[i], out[i], 0.0, "C element " + i);
            }
        }
    }
}
