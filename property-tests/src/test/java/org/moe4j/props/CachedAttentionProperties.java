package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterContainer;
import org.moe4j.simd.Bf16;
import org.moe4j.simd.CachedAttention;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * {@link CachedAttention} (new query rows against a KV cache) vs a float64 twin written here: random head counts
 * and groups (GQA), head sizes 1..140 (the vector part in chunks of four vectors and fewer, and scalar tails, at
 * every vector width the pom runs), positions and slots per row, junk after each operand that must stay untouched.
 * Tolerance: 1e-4 · max|v| (inputs scaled so scores are O(1); float32 rounding of the scores and of a convex
 * combination of v is ~1e-6 relative). Pools of 1 and 2 threads give the same bits. A BF16 cache gives, bit for bit,
 * what the F32 cache gives for the bf16-rounded keys and values (so the twin covers it too), on odd head sizes
 * (unaligned BF16 rows) and every vector width.
 */
class CachedAttentionProperties {
    private static final WorkerPool POOL1 = new WorkerPool(1);
    private static final WorkerPool POOL2 = new WorkerPool(2);
    private static final int PAD = 3;

    @AfterContainer
    static void closePools() {
        POOL1.close();
        POOL2.close();
    }

    @Property(tries = 80)
    void matchesFloat64Twin(@ForAll @IntRange(min = 1, max = 3) int kvHeads, @ForAll @IntRange(min = 1, max = 3) int group,
                            @ForAll @IntRange(min = 1, max = 140) int headDim, @ForAll @IntRange(min = 1, max = 5) int rows,
                            @ForAll @IntRange(min = 1, max = 40) int positions, @ForAll long seed) {
        int heads = kvHeads * group, qw = heads * headDim;
        Inputs in = Inputs.random(seed, heads, kvHeads, headDim, rows, positions);
        float[] q = in.q(), k = in.k(), v = in.v();
        int[] pos = in.pos(), slot = in.slot();
        double[] want = twin(q, k, v, pos, slot, rows, heads, kvHeads, headDim, positions);
        float[] got1 = run(POOL1, q, k, v, pos, slot, rows, heads, kvHeads, headDim, positions);
        float[] got2 = run(POOL2, q, k, v, pos, slot, rows, heads, kvHeads, headDim, positions);
        double tol = 1e-4 * GemmCase.maxAbs(v) + 1e-30;
        for (int i = 0; i < want.length; i++) {
            if (!(Math.abs(got1[i] - want[i]) <= tol)) {
                fail("out[" + i / qw + ", " + i % qw + "] = " + got1[i] + ", expected " + want[i] + " (tol " + tol
                        + "; heads " + heads + "/" + kvHeads + ", headDim " + headDim + ", rows " + rows + ", positions "
                        + positions + ")");
            }
        }
        assertArrayEquals(got1, got2, "1 vs 2 threads");
    }

    @Property(tries = 60)
    void bf16CacheIsTheF32CacheOfItsRoundedValues(@ForAll @IntRange(min = 1, max = 3) int kvHeads,
                                                   @ForAll @IntRange(min = 1, max = 3) int group,
                                                   @ForAll @IntRange(min = 1, max = 140) int headDim,
                                                   @ForAll @IntRange(min = 1, max = 5) int rows,
                                                   @ForAll @IntRange(min = 1, max = 40) int positions, @ForAll long seed) {
        int heads = kvHeads * group;
        Inputs in = Inputs.random(seed, heads, kvHeads, headDim, rows, positions);
        float[] q = in.q(), k = in.k(), v = in.v();
        int[] pos = in.pos(), slot = in.slot();
        float[] kr = rounded(k), vr = rounded(v);
        float[] f32 = run(POOL1, q, kr, vr, pos, slot, rows, heads, kvHeads, headDim, positions);
        float[] b1 = runBf16(POOL1, q, k, v, pos, slot, rows, heads, kvHeads, headDim, positions);
        float[] b2 = runBf16(POOL2, q, k, v, pos, slot, rows, heads, kvHeads, headDim, positions);
        assertArrayEquals(f32, b1, "BF16 cache vs F32 cache of the rounded values (heads " + heads + "/" + kvHeads
                + ", headDim " + headDim + ", rows " + rows + ", positions " + positions + ")");
        assertArrayEquals(b1, b2, "BF16 cache, 1 vs 2 threads");
    }

    /**
     * Queries [rows, heads·Dh] and caches [3 slots, Hkv, positions, Dh] scaled so the scores are O(1), and each row's
     * position and slot.
     */
    record Inputs(float[] q, float[] k, float[] v, int[] pos, int[] slot) {
        static Inputs random(long seed, int heads, int kvHeads, int headDim, int rows, int positions) {
            Random rnd = new Random(seed);
            int slots = 3, kw = kvHeads * headDim;
            double s = 1.0 / Math.sqrt(Math.sqrt(headDim));
            float[] q = KernelsSupport.gaussian(rnd, rows * heads * headDim, s);
            float[] k = KernelsSupport.gaussian(rnd, slots * positions * kw, s);
            float[] v = KernelsSupport.gaussian(rnd, slots * positions * kw, 1);
            int[] pos = new int[rows], slot = new int[rows];
            for (int r = 0; r < rows; r++) {
                pos[r] = rnd.nextInt(positions);
                slot[r] = rnd.nextInt(slots);
            }
            return new Inputs(q, k, v, pos, slot);
        }
    }

    /** Each value rounded to bf16 (nearest even) and back. */
    static float[] rounded(float[] x) {
        float[] r = new float[x.length];
        for (int i = 0; i < x.length; i++) r[i] = Bf16.toFloat(Bf16.fromFloat(x[i]));
        return r;
    }

    /** The values as bf16 bits with PAD junk shorts on each side (odd byte offsets of rows come with odd head sizes). */
    static MemorySegment shorts(Arena arena, float[] x) {
        MemorySegment m = arena.allocate((x.length + 2L * PAD) * 2, 2);
        for (int i = 0; i < PAD; i++) {
            m.setAtIndex(Tensor.SHORT, i, (short) 0x7FC1);
            m.setAtIndex(Tensor.SHORT, PAD + x.length + i, (short) 0x7FC1);
        }
        for (int i = 0; i < x.length; i++) m.setAtIndex(Tensor.SHORT, PAD + i, Bf16.fromFloat(x[i]));
        return m;
    }

    static float[] runBf16(WorkerPool pool, float[] q, float[] k, float[] v, int[] pos, int[] slot, int rows, int heads,
                           int kvHeads, int headDim, int positions) {
        try (Arena arena = Arena.ofShared()) {
            MemorySegment qs = KernelsSupport.floats(arena, q, PAD);
            MemorySegment ks = shorts(arena, k), vs = shorts(arena, v);
            float[] junk = new float[rows * heads * headDim];
            java.util.Arrays.fill(junk, Float.NaN);
            MemorySegment os = KernelsSupport.floats(arena, junk, PAD);
            CachedAttention a = new CachedAttention(positions, heads, kvHeads, headDim, pool.threads());
            a.forward(rows, pos, slot, qs.asSlice(PAD * 4L), ks.asSlice(PAD * 2L), vs.asSlice(PAD * 2L), true, positions,
                    os.asSlice(PAD * 4L), pool);
            KernelsSupport.assertPadIntact("out", os, PAD, junk.length);
            return KernelsSupport.read(os, PAD, junk.length);
        }
    }

    static float[] run(WorkerPool pool, float[] q, float[] k, float[] v, int[] pos, int[] slot, int rows, int heads,
                       int kvHeads, int headDim, int positions) {
        try (Arena arena = Arena.ofShared()) {
            MemorySegment qs = KernelsSupport.floats(arena, q, PAD);
            MemorySegment ks = KernelsSupport.floats(arena, k, PAD);
            MemorySegment vs = KernelsSupport.floats(arena, v, PAD);
            float[] junk = new float[rows * heads * headDim];
            java.util.Arrays.fill(junk, Float.NaN);
            MemorySegment os = KernelsSupport.floats(arena, junk, PAD);
            CachedAttention a = new CachedAttention(positions, heads, kvHeads, headDim, pool.threads());
            a.forward(rows, pos, slot, qs.asSlice(PAD * 4L), ks.asSlice(PAD * 4L), vs.asSlice(PAD * 4L), false, positions,
                    os.asSlice(PAD * 4L), pool);
            KernelsSupport.assertPadIntact("out", os, PAD, junk.length);
            return KernelsSupport.read(os, PAD, junk.length);
        }
    }

    /** out[r, h] = Σ_{j <= pos[r]} softmax_j(q·k_j / sqrt(Dh)) v_j over slot[r]'s cache, KV head h / group. */
    static double[] twin(float[] q, float[] k, float[] v, int[] pos, int[] slot, int rows, int heads, int kvHeads,
                         int headDim, int positions) {
        int group = heads / kvHeads, qw = heads * headDim;
        double[] out = new double[rows * qw];
        for (int r = 0; r < rows; r++) {
            for (int h = 0; h < heads; h++) {
                int g = h / group, n = pos[r] + 1;
                double[] sc = new double[n];
                double max = Double.NEGATIVE_INFINITY;
                for (int j = 0; j < n; j++) {
                    int ko = ((slot[r] * kvHeads + g) * positions + j) * headDim; // head-major [slots, Hkv, T, Dh]
                    double d = 0;
                    for (int c = 0; c < headDim; c++) d += (double) q[r * qw + h * headDim + c] * k[ko + c];
                    sc[j] = d / Math.sqrt(headDim);
                    max = Math.max(max, sc[j]);
                }
                double sum = 0;
                for (int j = 0; j < n; j++) {
                    sc[j] = Math.exp(sc[j] - max);
                    sum += sc[j];
                }
                for (int j = 0; j < n; j++) {
                    int vo = ((slot[r] * kvHeads + g) * positions + j) * headDim;
                    for (int c = 0; c < headDim; c++) out[r * qw + h * headDim + c] += sc[j] / sum * v[vo + c];
                }
            }
        }
        return out;
    }
}
