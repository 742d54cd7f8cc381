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
import org.moe4j.simd.GemmGroups;
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

    /** C (the whole padded array) after JavaGemm on the given pool; checks the junk pads are intact. */
    private static float[] run(GemmCase pr, WorkerPool pool, float[] cInit) {
        return pr.runF32(new JavaGemm(pool), cInit);
    }

    private static void check(GemmCase pr, String what, float[] cOut) {
        pr.check(what, cOut, pr.expected(), 1e-5);
    }

    @Property(tries = 150)
    void matchesTwin(@ForAll @IntRange(min = 0, max = 150) int m, @ForAll @IntRange(min = 0, max = 150) int n,
                     @ForAll @IntRange(min = 0, max = 150) int k, @ForAll boolean transA, @ForAll boolean transB,
                     @ForAll long seed) {
        GemmCase pr = new GemmCase(new Random(seed), m, n, k, transA, transB);
        check(pr, "pool2", run(pr, POOL2, pr.c));
    }

    /** Shapes crossing KC = 256 (two K blocks: beta applied once), MC = 144 and the M-split threshold. */
    @Property(tries = 12)
    void matchesTwinLarge(@ForAll @IntRange(min = 1, max = 420) int m, @ForAll @IntRange(min = 1, max = 300) int n,
                          @ForAll @IntRange(min = 200, max = 600) int k, @ForAll boolean transA,
                          @ForAll boolean transB, @ForAll long seed) {
        GemmCase pr = new GemmCase(new Random(seed), m, n, k, transA, transB);
        check(pr, "pool2 large", run(pr, POOL2, pr.c));
    }

    /** The skinny path (B^T, m <= 32: dot products from the segments) at k around the 16-lane edges. */
    @Property(tries = 40)
    void skinnyTransBMatchesTwin(@ForAll @IntRange(min = 1, max = 40) int m, @ForAll @IntRange(min = 1, max = 90) int n,
                                 @ForAll @IntRange(min = 1, max = 300) int k, @ForAll long seed) {
        GemmCase pr = new GemmCase(new Random(seed), m, n, k, false, true);
        float[] one = run(pr, POOL1, pr.c);
        check(pr, "skinny", one);
        assertArrayEquals(one, run(pr, POOL3, pr.c), "skinny: 3 threads vs 1");
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
        GemmCase pr = new GemmCase(new Random(seed), m, n, k, transA, transB);
        float[] one = run(pr, POOL1, pr.c);
        check(pr, "narrow panels", one);
        assertArrayEquals(one, run(pr, POOL2, pr.c), "narrow panels: 2 threads vs 1");
        assertArrayEquals(one, run(pr, POOL3, pr.c), "narrow panels: 3 threads vs 1");
    }

    /** 1, 2 and 3 threads partition differently (M vs N slices) but every element sums in the same order. */
    @Property(tries = 30)
    void threadCountDoesNotChangeBits(@ForAll @IntRange(min = 1, max = 700) int m,
                                      @ForAll @IntRange(min = 1, max = 200) int n,
                                      @ForAll @IntRange(min = 1, max = 300) int k, @ForAll boolean transA,
                                      @ForAll boolean transB, @ForAll long seed) {
        GemmCase pr = new GemmCase(new Random(seed), m, n, k, transA, transB);
        float[] one = run(pr, POOL1, pr.c);
        assertArrayEquals(one, run(pr, POOL2, pr.c), "2 threads vs 1");
        assertArrayEquals(one, run(pr, POOL3, pr.c), "3 threads vs 1");
        check(pr, "pool1", one);
    }

    @Property(tries = 40)
    void betaZeroIgnoresNaN(@ForAll @IntRange(min = 1, max = 80) int m, @ForAll @IntRange(min = 1, max = 80) int n,
                            @ForAll @IntRange(min = 0, max = 80) int k, @ForAll boolean transA,
                            @ForAll boolean transB, @ForAll long seed) {
        Random rnd = new Random(seed);
        GemmCase pr;
        do {
            pr = new GemmCase(rnd, m, n, k, transA, transB);
        } while (pr.beta != 0f);
        float[] nanC = pr.c.clone();
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                nanC[pr.cOff + i * pr.ldc + j] = rnd.nextBoolean() ? Float.NaN : Float.POSITIVE_INFINITY;
            }
        }
        float[] out = run(pr, POOL2, nanC);
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
        GemmCase pr = new GemmCase(rnd, 9, 37, 0, false, true);
        float[] out = run(pr, POOL2, pr.c);
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

    /**
     * Grouped GEMM (one product per expert, each on one thread, big groups split over all threads): random batches
     * of 1..12 groups with their own m, n, k (0 included, one group sometimes far larger than the rest, as a
     * popular expert is), every transpose, one shared alpha and beta, groups at gaps in shared segments. C must be
     * bit-identical to one {@code sgemm} call per group (on 1 thread and on 2 and 3), each group must match the
     * float64 twin, and the floats between groups must stay untouched.
     */
    @Property(tries = 60)
    void groupedMatchesOneCallPerGroup(@ForAll @IntRange(min = 1, max = 12) int groups, @ForAll boolean transA,
                                       @ForAll boolean transB, @ForAll boolean oneBig, @ForAll long seed) {
        Random rnd = new Random(seed);
        int[] m = new int[groups], n = new int[groups], k = new int[groups];
        for (int g = 0; g < groups; g++) {
            m[g] = rnd.nextInt(8) == 0 ? 0 : 1 + rnd.nextInt(70);
            n[g] = 1 + rnd.nextInt(70);
            k[g] = rnd.nextInt(10) == 0 ? 0 : 1 + rnd.nextInt(90);
        }
        if (oneBig) {
            int g = rnd.nextInt(groups);
            m[g] = 150 + rnd.nextInt(150);
            n[g] = 60 + rnd.nextInt(60);
            k[g] = 200 + rnd.nextInt(100);
        }
        int lda = 0, ldb = 0, ldc = 0;
        for (int g = 0; g < groups; g++) {
            lda = Math.max(lda, transA ? m[g] : k[g]);
            ldb = Math.max(ldb, transB ? k[g] : n[g]);
            ldc = Math.max(ldc, n[g]);
        }
        lda += 1 + rnd.nextInt(3);
        ldb += 1 + rnd.nextInt(3);
        ldc += 1 + rnd.nextInt(3);
        long[] aOff = new long[groups], bOff = new long[groups], cOff = new long[groups];
        long aLen = 0, bLen = 0, cLen = 0;
        for (int g = 0; g < groups; g++) {
            aOff[g] = aLen + rnd.nextInt(5);
            aLen = aOff[g] + (long) Math.max(1, transA ? k[g] : m[g]) * lda;
            bOff[g] = bLen + rnd.nextInt(5);
            bLen = bOff[g] + (long) Math.max(1, transB ? n[g] : k[g]) * ldb;
            cOff[g] = cLen + rnd.nextInt(5);
            cLen = cOff[g] + (long) Math.max(1, m[g]) * ldc;
        }
        float alpha = rnd.nextBoolean() ? 1f : (float) (rnd.nextGaussian());
        float beta = rnd.nextInt(3) == 0 ? 0f : rnd.nextBoolean() ? 1f : (float) rnd.nextGaussian();
        float[] a = randoms(rnd, (int) aLen), b = randoms(rnd, (int) bLen), c0 = randoms(rnd, (int) cLen);
        try (Arena arena = Arena.ofShared()) {
            MemorySegment sa = arena.allocate(aLen * 4, 64), sb = arena.allocate(bLen * 4, 64);
            MemorySegment sc = arena.allocate(cLen * 4, 64);
            MemorySegment.copy(a, 0, sa, Tensor.FLOAT, 0, a.length);
            MemorySegment.copy(b, 0, sb, Tensor.FLOAT, 0, b.length);
            // one call per group on one thread: the reference bits
            MemorySegment.copy(c0, 0, sc, Tensor.FLOAT, 0, c0.length);
            JavaGemm one = new JavaGemm(POOL1);
            for (int g = 0; g < groups; g++) {
                one.sgemm(transA, transB, m[g], n[g], k[g], alpha, sa, aOff[g], lda, sb, bOff[g], ldb, beta, sc,
                        cOff[g], ldc);
            }
            float[] expected = KernelsSupport.read(sc, 0, (int) cLen);
            for (int g = 0; g < groups; g++) {
                double[] twin = RefGemm.gemm(transA, transB, m[g], n[g], k[g], alpha, a, (int) aOff[g], lda, b,
                        (int) bOff[g], ldb, beta, c0, (int) cOff[g], ldc);
                double maxA = 0, maxB = 0;
                for (float v : a) maxA = Math.max(maxA, Math.abs(v));
                for (float v : b) maxB = Math.max(maxB, Math.abs(v));
                for (int i = 0; i < m[g]; i++) {
                    for (int j = 0; j < n[g]; j++) {
                        int idx = (int) cOff[g] + i * ldc + j;
                        double tol = 1e-5 * (Math.sqrt(k[g]) + 1) * maxA * maxB * Math.abs(alpha)
                                + 1e-6 * Math.abs(beta * c0[idx]) + 1e-30;
                        if (!(Math.abs(expected[idx] - twin[i * n[g] + j]) <= tol)) {
                            fail("group " + g + " C[" + i + ", " + j + "] = " + expected[idx] + ", twin "
                                    + twin[i * n[g] + j]);
                        }
                    }
                }
            }
            for (WorkerPool pool : new WorkerPool[] {POOL1, POOL2, POOL3}) {
                MemorySegment.copy(c0, 0, sc, Tensor.FLOAT, 0, c0.length);
                GemmGroups gr = new GemmGroups(groups).clear(transA, transB, alpha, sa, lda, sb, ldb, beta, sc, ldc);
                for (int g = 0; g < groups; g++) gr.add(m[g], n[g], k[g], aOff[g], bOff[g], cOff[g]);
                new JavaGemm(pool).sgemmGrouped(gr);
                assertArrayEquals(expected, KernelsSupport.read(sc, 0, (int) cLen),
                        "grouped on " + pool.threads() + " threads vs one sgemm per group");
            }
        }
    }

    private static float[] randoms(Random rnd, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) rnd.nextGaussian();
        return x;
    }
}
