package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterContainer;
import org.junit.jupiter.api.Test;
import org.moe4j.Moe4jException;
import org.moe4j.reference.RefConvert;
import org.moe4j.reference.RefGemm;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WeightGemm;
import org.moe4j.simd.WorkerPool;

/**
 * WeightGemm (out[M, N] = x[M, K] · W[N, K]ᵀ + beta·out, W F32 or BF16) vs the float64 twin {@link RefGemm}: M on
 * both sides of {@link WeightGemm#smallRows()} (the streaming kernel and the big-GEMM path), N and K odd with tails
 * shorter than a vector, K = 0, row strides larger than the rows, nonzero offsets, beta 0 (NaN in out ignored) and
 * 1, junk around every operand and in out's row padding that must stay untouched. The BF16 twin multiplies the
 * values of the bf16 weights (exact in float64). Tolerance per element: 1e-5 * (sqrt(K) + 1) * max|x| * max|W| +
 * 1e-6 * |beta out| (float32 rounding of a K-term dot product, as GemmProperties). Pools of 1, 2 and 3 threads
 * give identical bits. toBf16 (scalar and bulk) vs the round-to-nearest-even twin {@link RefConvert#bf16Nearest}.
 */
class WeightGemmProperties {
    private static final WorkerPool POOL1 = new WorkerPool(1);
    private static final WorkerPool POOL2 = new WorkerPool(2);
    private static final WorkerPool POOL3 = new WorkerPool(3);
    /** maxK for the small instances; the BF16 large path then dequantises in chunks of ~2^21 / maxK rows. */
    private static final int MAX_K = 1000;
    /** A maxK this large makes the BF16 scratch hold only 16 weight rows, so N > 16 crosses chunk boundaries. */
    private static final int MAX_K_CHUNKY = 1 << 17;
    private static final WeightGemm[] GEMMS = {
        new WeightGemm(POOL1, new JavaGemm(POOL1), MAX_K),
        new WeightGemm(POOL2, new JavaGemm(POOL2), MAX_K),
        new WeightGemm(POOL3, new JavaGemm(POOL3), MAX_K),
    };
    private static final WeightGemm[] CHUNKY = {
        new WeightGemm(POOL1, new JavaGemm(POOL1), MAX_K_CHUNKY),
        new WeightGemm(POOL3, new JavaGemm(POOL3), MAX_K_CHUNKY),
    };
    private static final org.moe4j.simd.Bf16Gemm MIXED_GEMM = org.moe4j.nativ.OneDnn.available()
            && org.moe4j.nativ.OneDnn.bf16Native() ? new org.moe4j.nativ.OneDnnBf16Gemm(2)
            : new org.moe4j.simd.JavaBf16Gemm(new JavaGemm(POOL2), POOL2);
    private static final WeightGemm MIXED = new WeightGemm(POOL2, new JavaGemm(POOL2), MAX_K)
            .manyRowsBf16(new org.moe4j.simd.MixedGemm(MIXED_GEMM, POOL2));
    private static final int PAD = 5;
    private static final float JUNK = 12345f;

    @AfterContainer
    static void closePools() {
        POOL1.close();
        POOL2.close();
        POOL3.close();
    }

    /** One random problem: x, W (as floats and as bf16 bits), out, with strides, offsets and beta. */
    static final class Case {
        final int m;
        final int n;
        final int k;
        final int ldx;
        final int ldw;
        final int ldo;
        final int xOff;
        final int wOff;
        final int oOff;
        final float beta;
        final float[] x;
        final float[] w;
        final short[] wBits;
        final float[] out;

        Case(Random rnd, int m, int n, int k) {
            this.m = m;
            this.n = n;
            this.k = k;
            ldx = k + (rnd.nextBoolean() ? 0 : rnd.nextInt(5) + 1);
            ldw = k + (rnd.nextBoolean() ? 0 : rnd.nextInt(5) + 1);
            ldo = n + (rnd.nextBoolean() ? 0 : rnd.nextInt(5) + 1);
            xOff = rnd.nextInt(7);
            wOff = rnd.nextInt(7);
            oOff = rnd.nextInt(7);
            beta = rnd.nextBoolean() ? 0f : 1f;
            x = KernelsSupport.gaussian(rnd, xOff + ldx * m, Math.exp(rnd.nextGaussian()));
            w = KernelsSupport.gaussian(rnd, wOff + ldw * n, Math.exp(rnd.nextGaussian()));
            wBits = new short[w.length];
            for (int i = 0; i < w.length; i++) {
                wBits[i] = WeightGemm.toBf16(w[i]);
            }
            out = KernelsSupport.gaussian(rnd, oOff + ldo * m, 1);
            if (beta == 0f) {
                // beta == 0 must overwrite: NaN in the old out must not reach the result
                for (int i = 0; i < out.length; i += 3) {
                    out[i] = Float.NaN;
                }
            }
        }

        /** Row r alone: the same W (and strides), x's row r at offset 0, out's row r at offset 0. */
        Case row(int r) {
            return new Case(this, r);
        }

        private Case(Case c, int r) {
            m = 1;
            n = c.n;
            k = c.k;
            ldx = c.ldx;
            ldw = c.ldw;
            ldo = c.ldo;
            xOff = 0;
            wOff = c.wOff;
            oOff = 0;
            beta = c.beta;
            x = java.util.Arrays.copyOfRange(c.x, c.xOff + r * c.ldx, c.xOff + r * c.ldx + c.ldx);
            w = c.w;
            wBits = c.wBits;
            out = java.util.Arrays.copyOfRange(c.out, c.oOff + r * c.ldo, c.oOff + r * c.ldo + c.ldo);
        }

        /** The values of the bf16 weights (exact as floats), for the BF16 twin. */
        float[] wBf16Values() {
            float[] v = new float[wBits.length];
            for (int i = 0; i < v.length; i++) {
                v[i] = (float) RefConvert.bf16Value(wBits[i] & 0xFFFF);
            }
            return v;
        }

        /** out (the whole padded array) after the kernel on off-heap copies with junk pads around every operand. */
        float[] run(WeightGemm g, boolean bf16) {
            try (Arena arena = Arena.ofShared()) {
                MemorySegment xs = KernelsSupport.floats(arena, x, PAD);
                MemorySegment os = KernelsSupport.floats(arena, out, PAD);
                MemorySegment ws;
                if (bf16) {
                    ws = arena.allocate((wBits.length + 2L * PAD) * 2, 2);
                    for (int i = 0; i < PAD; i++) {
                        ws.setAtIndex(Tensor.SHORT, i, (short) 0x7FC0);
                        ws.setAtIndex(Tensor.SHORT, PAD + wBits.length + i, (short) 0x7FC0);
                    }
                    MemorySegment.copy(wBits, 0, ws, Tensor.SHORT, 2L * PAD, wBits.length);
                    g.bf16(m, n, k, xs, PAD + xOff, ldx, ws, PAD + wOff, ldw, beta, os, PAD + oOff, ldo);
                } else {
                    ws = KernelsSupport.floats(arena, w, PAD);
                    g.f32(m, n, k, xs, PAD + xOff, ldx, ws, PAD + wOff, ldw, beta, os, PAD + oOff, ldo);
                }
                KernelsSupport.assertPadIntact("out", os, PAD, out.length);
                return KernelsSupport.read(os, PAD, out.length);
            }
        }

        /** Inside the [m, n] window within tolerance of the float64 twin; outside it bit-identical to the input. */
        void check(String what, float[] got, boolean bf16) {
            check(what, got, bf16, x);
        }

        /** As {@link #check(String, float[], boolean)} with the activations xv in the twin (bf16-rounded ones). */
        void check(String what, float[] got, boolean bf16, float[] xv) {
            float[] x = xv;
            float[] wv = bf16 ? wBf16Values() : w;
            double[] want = RefGemm.gemm(false, true, m, n, k, 1.0, x, xOff, ldx, wv, wOff, ldw, beta, out, oOff, ldo);
            double tolDot = 1e-5 * (Math.sqrt(k) + 1) * GemmCase.maxAbs(x) * GemmCase.maxAbs(wv);
            for (int i = 0; i < out.length; i++) {
                int rel = i - oOff;
                int row = rel < 0 ? -1 : rel / ldo;
                int col = rel < 0 ? -1 : rel % ldo;
                if (rel < 0 || row >= m || col >= n) {
                    if (Float.floatToRawIntBits(got[i]) != Float.floatToRawIntBits(out[i])) {
                        fail(what + ": wrote out element " + i + " outside the [m, n] window (" + this + ")");
                    }
                    continue;
                }
                double e = want[row * n + col];
                double tol = tolDot + (beta == 0f ? 0 : 1e-6 * Math.abs(beta * out[i])) + 1e-30;
                if (!(Math.abs(got[i] - e) <= tol)) {
                    fail(what + ": out[" + row + ", " + col + "] = " + got[i] + ", expected " + e + " (tol " + tol
                            + ", " + this + ")");
                }
            }
        }

        @Override
        public String toString() {
            return "M " + m + " N " + n + " K " + k + " ldx " + ldx + " ldw " + ldw + " ldo " + ldo + " offsets "
                    + xOff + "/" + wOff + "/" + oOff + " beta " + beta;
        }
    }

    /** Checks against the twin on the 2-thread pool, then 1 and 3 threads give the same bits. */
    private static void checkAllPools(Case c, boolean bf16, WeightGemm[] gemms) {
        String what = bf16 ? "bf16" : "f32";
        float[] first = c.run(gemms[0], bf16);
        c.check(what, first, bf16);
        for (int p = 1; p < gemms.length; p++) {
            assertArrayEquals(first, c.run(gemms[p], bf16), what + ": pool " + p + " vs pool 0 (" + c + ")");
        }
    }

    @Property(tries = 200)
    void f32MatchesTwin(@ForAll @IntRange(min = 1, max = 40) int m, @ForAll @IntRange(min = 1, max = 70) int n,
                        @ForAll @IntRange(min = 0, max = 130) int k, @ForAll long seed) {
        checkAllPools(new Case(new Random(seed), m, n, k), false, GEMMS);
    }

    @Property(tries = 200)
    void bf16MatchesTwin(@ForAll @IntRange(min = 1, max = 40) int m, @ForAll @IntRange(min = 1, max = 70) int n,
                         @ForAll @IntRange(min = 0, max = 130) int k, @ForAll long seed) {
        checkAllPools(new Case(new Random(seed), m, n, k), true, GEMMS);
    }

    /**
     * A row's result does not depend on the rows it shares a call with (a decode batch must not change a sequence's
     * logits): every row of an M-row streaming call has the bits of a one-row call on that row, F32 and BF16 (4 x 4,
     * 2 x 4, 1 x 4 and 1 x 1 kernels), with K a whole number of 2L blocks and not.
     */
    @Property(tries = 150)
    void everyRowHasTheBitsOfItsOwnCall(@ForAll @IntRange(min = 2, max = 16) int m, @ForAll @IntRange(min = 1, max = 40) int n,
                                        @ForAll @IntRange(min = 1, max = 12) int blocks, @ForAll boolean wholeBlocks,
                                        @ForAll boolean bf16, @ForAll long seed) {
        Random rnd = new Random(seed);
        int twoL = 2 * org.moe4j.simd.Simd.FLOAT.length();
        int k = wholeBlocks ? blocks * twoL : blocks * twoL - 1 - rnd.nextInt(twoL - 1);
        Case c = new Case(rnd, m, n, k);
        assertEveryRowAsAlone(c, c.run(GEMMS[1], bf16), bf16, "a call");
    }

    /** Larger K and N (more vector steps, work for every thread), M right at and around the threshold. */
    @Property(tries = 30)
    void largerShapesMatchTwin(@ForAll @IntRange(min = 0, max = 5) int mPick,
                               @ForAll @IntRange(min = 1, max = 300) int n,
                               @ForAll @IntRange(min = 200, max = 1000) int k, @ForAll boolean bf16,
                               @ForAll long seed) {
        int small = GEMMS[0].smallRows();
        int m = new int[] {1, 3, 8, small - 1, small, small + 1}[mPick];
        checkAllPools(new Case(new Random(seed), m, n, k), bf16, GEMMS);
    }

    /** BF16 above the threshold with a scratch of 16 weight rows: the dequantise-then-GEMM path over many chunks. */
    @Property(tries = 30)
    void bf16ChunkedLargePathMatchesTwin(@ForAll @IntRange(min = 17, max = 40) int m,
                                         @ForAll @IntRange(min = 1, max = 70) int n,
                                         @ForAll @IntRange(min = 1, max = 90) int k, @ForAll long seed) {
        checkAllPools(new Case(new Random(seed), m, n, k), true, CHUNKY);
    }

    /**
     * BF16 weights with {@link WeightGemm#manyRowsBf16}: above smallRows() the activation rows are rounded to bf16 and
     * multiplied on the mixed-precision GEMM (oneDNN's bf16 matmul where the CPU has native bf16, else the Java bf16
     * GEMM, the same code path in WeightGemm), so the twin multiplies bf16(x) by the bf16 weights; at or below it the
     * streaming kernel keeps F32 activations.
     */
    @Property(tries = 80)
    void bf16ManyRowsOnTheMixedGemmMatchesTwinOfRoundedActivations(@ForAll @IntRange(min = 1, max = 70) int m,
                                                                    @ForAll @IntRange(min = 1, max = 90) int n,
                                                                    @ForAll @IntRange(min = 0, max = 300) int k,
                                                                    @ForAll long seed) {
        Case c = new Case(new Random(seed), m, n, k);
        float[] got = c.run(MIXED, true);
        float[] xv = c.x;
        if (m > MIXED.smallRows()) {
            xv = new float[c.x.length];
            for (int i = 0; i < xv.length; i++) xv[i] = (float) RefConvert.bf16Value(RefConvert.bf16Nearest(c.x[i]) & 0xFFFF);
        }
        c.check("bf16 on " + MIXED_GEMM.name(), got, true, xv);
    }

    /**
     * grouped: several products of one weight shape in one pass give each group the bits of its own call, F32 and
     * BF16, on 1, 2 and 3 threads; groups of 0 rows, more than smallRows() rows (their own calls), and more than 64
     * rows in all (every group its own call) included. Shared x, w and out buffers with each group at its own
     * offsets, as an MoE layer's experts.
     */
    @Property(tries = 120)
    void groupedEqualsOneCallPerGroup(@ForAll @IntRange(min = 1, max = 7) int groups,
                                      @ForAll @IntRange(min = 1, max = 70) int n, @ForAll @IntRange(min = 1, max = 200) int k,
                                      @ForAll boolean bf16, @ForAll boolean manyRows, @ForAll long seed) {
        Random rnd = new Random(seed);
        int[] rows = new int[groups];
        long[] xo = new long[groups], wo = new long[groups], oo = new long[groups];
        int xr = 0;
        for (int i = 0; i < groups; i++) {
            rows[i] = manyRows ? rnd.nextInt(30) : rnd.nextInt(5);
            xo[i] = (long) xr * k;
            oo[i] = (long) xr * n;
            wo[i] = (long) i * n * k;
            xr += rows[i];
        }
        float[] x = KernelsSupport.gaussian(rnd, Math.max(1, xr * k), 1);
        float[] w = KernelsSupport.gaussian(rnd, groups * n * k, 1);
        float[] out0 = KernelsSupport.gaussian(rnd, Math.max(1, xr * n), 1);
        float beta = rnd.nextBoolean() ? 0f : 1f;
        float[] want = null;
        for (WeightGemm g : GEMMS) {
            float[] perCall = runGroups(g, false, groups, rows, xo, wo, oo, n, k, x, w, out0, beta, bf16);
            float[] one = runGroups(g, true, groups, rows, xo, wo, oo, n, k, x, w, out0, beta, bf16);
            assertArrayEquals(perCall, one, "grouped vs one call per group (rows " + java.util.Arrays.toString(rows)
                    + ", n " + n + ", k " + k + ", bf16 " + bf16 + ")");
            if (want == null) want = one;
            else assertArrayEquals(want, one, "pools differ");
        }
    }

    /**
     * {@link WeightGemm#streamAllRows} (a decode step): calls of any number of rows stream, and every row keeps the bits
     * of a one-row call — across the BF16 paired-row buffer's 64-row passes too, and with the mixed-precision GEMM
     * set (it must not take the rows); single calls and a grouped call of large groups; within tolerance of the twin.
     */
    @Property(tries = 40)
    void streamAllRowsGivesEveryRowTheBitsOfItsOwnCall(@ForAll @IntRange(min = 17, max = 150) int m,
                                                      @ForAll @IntRange(min = 1, max = 40) int n,
                                                      @ForAll @IntRange(min = 1, max = 140) int k, @ForAll boolean bf16,
                                                      @ForAll boolean mixedSet, @ForAll long seed) {
        Random rnd = new Random(seed);
        WeightGemm g = new WeightGemm(POOL2, new JavaGemm(POOL2), MAX_K);
        if (mixedSet) g.manyRowsBf16(new org.moe4j.simd.MixedGemm(MIXED_GEMM, POOL2));
        g.streamAllRows(true);
        assertEquals(Integer.MAX_VALUE, g.smallRows());
        Case c = new Case(rnd, m, n, k);
        float[] all = c.run(g, bf16);
        c.check(bf16 ? "bf16" : "f32", all, bf16);
        assertEveryRowAsAlone(c, all, bf16, "a streamed call");
        // grouped: groups of up to 40 rows (more than 16 each, more than 64 in all) equal one call per group
        int groups = 2 + rnd.nextInt(3);
        int[] rows = new int[groups];
        long[] xo = new long[groups], wo = new long[groups], oo = new long[groups];
        int xr = 0;
        for (int i = 0; i < groups; i++) {
            rows[i] = 1 + rnd.nextInt(40);
            xo[i] = (long) xr * k;
            oo[i] = (long) xr * n;
            wo[i] = (long) i * n * k;
            xr += rows[i];
        }
        float[] x = KernelsSupport.gaussian(rnd, xr * k, 1);
        float[] w = KernelsSupport.gaussian(rnd, groups * n * k, 1);
        float[] out0 = KernelsSupport.gaussian(rnd, xr * n, 1);
        float[] grouped = runGroups(g, true, groups, rows, xo, wo, oo, n, k, x, w, out0, 0f, bf16);
        // row by row on a plain instance: the bits of one-row calls
        float[] byRow = out0.clone();
        for (int i = 0; i < groups; i++) {
            for (int r = 0; r < rows[i]; r++) {
                long xOff = xo[i] + (long) r * k, oOff = oo[i] + (long) r * n;
                float[] xr1 = java.util.Arrays.copyOfRange(x, (int) xOff, (int) xOff + k);
                float[] o1 = runGroups(GEMMS[1], false, 1, new int[] {1}, new long[] {0},
                        new long[] {wo[i]}, new long[] {0}, n, k, xr1, w, new float[n], 0f, bf16);
                System.arraycopy(o1, 0, byRow, (int) oOff, n);
            }
        }
        assertArrayEquals(byRow, grouped, "grouped with streamAllRows vs one-row calls (rows "
                + java.util.Arrays.toString(rows) + ", n " + n + ", k " + k + ", bf16 " + bf16 + ")");
    }

    /** Every row of {@code all} (case c run in one call) has the bits of that row run alone on the plain 2-thread instance. */
    private static void assertEveryRowAsAlone(Case c, float[] all, boolean bf16, String call) {
        for (int r = 0; r < c.m; r++) {
            Case one = c.row(r);
            float[] alone = one.run(GEMMS[1], bf16);
            for (int j = 0; j < c.n; j++) {
                float a = all[c.oOff + r * c.ldo + j], b = alone[one.oOff + j];
                if (Float.floatToRawIntBits(a) != Float.floatToRawIntBits(b))
                    fail((bf16 ? "bf16" : "f32") + ": row " + r + " column " + j + " = " + a + " in " + call + " of "
                            + c.m + " rows, " + b + " alone (" + c + ")");
            }
        }
    }

    private static float[] runGroups(WeightGemm g, boolean grouped, int groups, int[] rows, long[] xo, long[] wo,
                                     long[] oo, int n, int k, float[] x, float[] w, float[] out0, float beta, boolean bf16) {
        try (Arena arena = Arena.ofShared()) {
            MemorySegment xs = KernelsSupport.floats(arena, x, 0);
            MemorySegment os = KernelsSupport.floats(arena, out0, 0);
            MemorySegment ws;
            if (bf16) {
                ws = arena.allocate(2L * w.length, 2);
                for (int i = 0; i < w.length; i++) ws.setAtIndex(Tensor.SHORT, i, WeightGemm.toBf16(w[i]));
            } else {
                ws = KernelsSupport.floats(arena, w, 0);
            }
            if (grouped) {
                g.grouped(bf16, groups, rows, xo, wo, oo, n, k, xs, k, ws, k, beta, os, n);
            } else {
                for (int i = 0; i < groups; i++) {
                    if (bf16) g.bf16(rows[i], n, k, xs, xo[i], k, ws, wo[i], k, beta, os, oo[i], n);
                    else g.f32(rows[i], n, k, xs, xo[i], k, ws, wo[i], k, beta, os, oo[i], n);
                }
            }
            return KernelsSupport.read(os, 0, out0.length);
        }
    }

    @Test
    void smallRowsIsAtLeastSixteen() {
        assertTrue(GEMMS[0].smallRows() >= 16, "smallRows " + GEMMS[0].smallRows());
    }

    /** K = 0: out = beta * out, so beta = 0 writes zeros over NaN and beta = 1 leaves out as it was. */
    @Test
    void zeroKScalesOut() {
        for (int m : new int[] {1, 5, 30}) {
            for (boolean bf16 : new boolean[] {false, true}) {
                for (long seed = 0; seed < 4; seed++) {
                    Case c = new Case(new Random(seed), m, 9, 0);
                    float[] got = c.run(GEMMS[1], bf16);
                    c.check("K = 0", got, bf16);
                    for (int r = 0; r < m; r++) {
                        for (int j = 0; j < 9; j++) {
                            int e = c.oOff + r * c.ldo + j;
                            assertEquals(c.beta == 0f ? 0f : c.out[e], got[e], "K = 0 out[" + r + ", " + j + "]");
                        }
                    }
                }
            }
        }
    }

    @Test
    void rejectsBadArguments() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment x = arena.allocate(4L * 2 * 8);
            MemorySegment w = arena.allocate(4L * 3 * 8);
            MemorySegment out = arena.allocate(4L * 2 * 3);
            WeightGemm g = GEMMS[0];
            g.f32(2, 3, 8, x, 0, 8, w, 0, 8, 0f, out, 0, 3); // fits exactly
            assertThrows(Moe4jException.class, () -> g.f32(2, 3, 8, x, 1, 8, w, 0, 8, 0f, out, 0, 3), "x too short");
            assertThrows(Moe4jException.class, () -> g.f32(2, 3, 8, x, 0, 8, w, 0, 9, 0f, out, 0, 3), "w too short");
            assertThrows(Moe4jException.class, () -> g.f32(2, 3, 8, x, 0, 8, w, 0, 8, 0f, out, 0, 4), "out short");
            assertThrows(Moe4jException.class, () -> g.f32(2, 3, 8, x, 0, 7, w, 0, 8, 0f, out, 0, 3), "ldx < K");
            assertThrows(Moe4jException.class, () -> g.bf16(2, 3, 8, x, 0, 8, w, 0, 7, 0f, out, 0, 3), "ldw < K");
            assertThrows(Moe4jException.class, () -> g.f32(-1, 3, 8, x, 0, 8, w, 0, 8, 0f, out, 0, 3), "M < 0");
            MemorySegment big = arena.allocate(4L * 2 * (MAX_K + 1));
            MemorySegment bigW = arena.allocate(4L * 3 * (MAX_K + 1));
            Moe4jException e = assertThrows(Moe4jException.class,
                    () -> g.f32(2, 3, MAX_K + 1, big, 0, MAX_K + 1, bigW, 0, MAX_K + 1, 0f, out, 0, 3));
            assertTrue(e.getMessage().contains("maxK"), e.getMessage());
        }
        assertThrows(Moe4jException.class, () -> new WeightGemm(POOL1, new JavaGemm(POOL1), 0));
    }

    private static final int[] SPECIAL = {0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001,
        0xFFBFFFFF, 0x7FFFFFFF, 0x00000001, 0x80000001, 0x007FFFFF, 0x00008000, 0x00018000, 0x00017FFF,
        0x7F7F8000, 0x7F7FFFFF, 0x7F7F7FFF, 0xFF7F8000, 0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001};

    /** A float32 pattern: a special value, a rounding tie (low 16 bits 0x8000), or random bits. */
    private static float pattern(Random rnd) {
        return switch (rnd.nextInt(4)) {
            case 0 -> Float.intBitsToFloat(SPECIAL[rnd.nextInt(SPECIAL.length)]);
            case 1 -> Float.intBitsToFloat((rnd.nextInt() & 0xFFFF0000) | 0x8000);
            case 2 -> Float.intBitsToFloat(rnd.nextInt() & 0x807FFFFF); // subnormals
            default -> Float.intBitsToFloat(rnd.nextInt());
        };
    }

    private static void assertRoundsLikeTwin(float f, short got) {
        int want = RefConvert.bf16Nearest(f);
        String what = "toBf16(0x" + Integer.toHexString(Float.floatToRawIntBits(f)) + ") = 0x"
                + Integer.toHexString(got & 0xFFFF);
        if (want < 0) {
            assertTrue(Float.isNaN(WeightGemm.fromBf16(got)), what + ": NaN must stay NaN");
        } else {
            assertEquals(want, got & 0xFFFF, what);
            float back = WeightGemm.fromBf16(got);
            assertEquals(RefConvert.bf16Value(want), back, 0.0, what + ": fromBf16");
        }
    }

    @Property(tries = 100)
    void toBf16RoundsToNearestEven(@ForAll long seed) {
        Random rnd = new Random(seed);
        for (int i = 0; i < 200; i++) {
            float f = pattern(rnd);
            assertRoundsLikeTwin(f, WeightGemm.toBf16(f));
        }
    }

    @Test
    void toBf16Specials() {
        for (int bits : SPECIAL) {
            assertRoundsLikeTwin(Float.intBitsToFloat(bits), WeightGemm.toBf16(Float.intBitsToFloat(bits)));
        }
        assertEquals((short) 0x3F80, WeightGemm.toBf16(1f));
        assertEquals((short) 0x3F80, WeightGemm.toBf16(Float.intBitsToFloat(0x3F808000))); // tie, even stays
        assertEquals((short) 0x3F82, WeightGemm.toBf16(Float.intBitsToFloat(0x3F818000))); // tie, odd rounds up
        assertEquals((short) 0x7F80, WeightGemm.toBf16(Float.intBitsToFloat(0x7F7F8000))); // overflows to +inf
    }

    /** Bulk conversion agrees bit for bit with the scalar one, at any length (tails) and offsets. */
    @Property(tries = 100)
    void bulkToBf16MatchesScalar(@ForAll @IntRange(min = 0, max = 200) int n, @ForAll @IntRange(min = 0, max = 9) int srcOff,
                                 @ForAll @IntRange(min = 0, max = 9) int dstOff, @ForAll long seed) {
        Random rnd = new Random(seed);
        float[] v = new float[srcOff + n];
        for (int i = 0; i < v.length; i++) {
            v[i] = pattern(rnd);
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment src = arena.allocate(4L * v.length + 4, 4);
            MemorySegment.copy(v, 0, src, Tensor.FLOAT, 0, v.length);
            MemorySegment dst = arena.allocate(2L * (dstOff + n + 3), 2);
            dst.fill((byte) 0x55);
            WeightGemm.toBf16(src, srcOff, dst, dstOff, n);
            for (int i = 0; i < dstOff + n + 3; i++) {
                short got = dst.getAtIndex(Tensor.SHORT, i);
                if (i < dstOff || i >= dstOff + n) {
                    assertEquals((short) 0x5555, got, "bulk toBf16 wrote element " + i + " outside its range");
                } else {
                    assertEquals(WeightGemm.toBf16(v[srcOff + i - dstOff]), got, "bulk toBf16 element " + i);
                }
            }
            assertThrows(Moe4jException.class, () -> WeightGemm.toBf16(src, srcOff, dst, dstOff + 4, n));
        }
    }
}
