package org.moe4j.simd;

import static org.moe4j.simd.VectorMath.F;
import static org.moe4j.simd.VectorMath.L;
import static org.moe4j.simd.VectorMath.NATIVE;

import java.lang.foreign.MemorySegment;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;
import org.moe4j.Moe4jException;

/**
 * Causal attention of new query rows against a KV cache (inference): query row r sits at absolute position
 * {@code pos[r]} of cache slot {@code slot[r]} and attends the cached keys 0..pos[r] of that slot (its own key
 * included, so the caller appends the new rows' keys and values before calling).
 * <pre>
 *   q, out [rows, H*Dh]     kCache, vCache [slots, Hkv, maxT, Dh]     query head h reads KV head h / (H/Hkv)
 *   out[r, h] = Σ_{j <= pos[r]} softmax_j(q[r,h]·k[slot[r], j, g] / sqrt(Dh)) · v[slot[r], j, g]
 * </pre>
 * The caches are head-major: one (slot, KV head)'s keys are one contiguous block of positions x Dh floats, so a unit
 * streams its keys and values front to back (with position-major rows, [slots, maxT, Hkv*Dh], a unit read Dh floats
 * every Hkv*Dh: at 576 positions the loads of K stalled on cache misses for over a third of a BF16 decode step).
 * {@link #cacheOffset} gives the element offset of (slot, KV head, position).
 * The caches hold F32 or BF16 elements ({@code bf16Cache}): BF16 halves the cache's memory and the bytes a decode
 * step reads from it; each key and value is widened to F32 as it is loaded (exact), and everything else — the
 * dot products, the softmax, the weighted sum — is the F32 computation in the same order, so a BF16 cache gives the
 * F32 cache's result for the bf16-rounded keys and values, bit for bit.
 * Work is split over (row, head) units; each unit owns its output slice, so nothing races. Per-worker score rows are
 * allocated once; a call allocates nothing, and the vector helpers it calls are small ones C2 always inlines (it
 * does not go through VectorMath.exp(FloatVector), which C2 may compile on its own and then refuse to inline). The plain twin is the float64 reference in property-tests.
 */
public final class CachedAttention {
    private final int maxT, heads, kvHeads, headDim, group, qw;
    private final float scale;
    private static final VectorSpecies<Integer> I = Simd.INT;
    private static final VectorSpecies<Short> S = Simd.SHORT_HALF;
    /** Per worker: one score row [maxT] (heap, for VectorMath.expSubInPlace). */
    private final float[][] scores;
    private final Task task = new Task();

    public CachedAttention(int maxT, int heads, int kvHeads, int headDim, int threads) {
        if (maxT < 1 || heads < 1 || kvHeads < 1 || headDim < 1 || threads < 1 || heads % kvHeads != 0)
            throw new Moe4jException("CachedAttention: need maxT, heads, kvHeads, headDim, threads >= 1 and heads a "
                    + "multiple of kvHeads, got maxT=" + maxT + " heads=" + heads + " kvHeads=" + kvHeads
                    + " headDim=" + headDim + " threads=" + threads);
        this.maxT = maxT;
        this.heads = heads;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.group = heads / kvHeads;
        this.qw = heads * headDim;
        this.scale = (float) (1.0 / Math.sqrt(headDim));
        this.scores = new float[threads][maxT];
    }

    /** Element offset of (slot, KV head g, position) in a cache [slots, Hkv, positions, Dh]. */
    public static long cacheOffset(int slot, int g, int pos, int positions, int kvHeads, int headDim) {
        return (((long) slot * kvHeads + g) * positions + pos) * headDim;
    }

    private long cacheOffset(int slot, int g, int pos, int positions) {
        return cacheOffset(slot, g, pos, positions, kvHeads, headDim);
    }

    public int maxT() {
        return maxT;
    }

    /**
     * Rows [0, rows) of q (row stride H*Dh) -> out (same layout); pos[r] and slot[r] per row (see class comment);
     * the caches hold {@code positions} (<= maxT) positions per slot, of BF16 elements when {@code bf16Cache}, else F32.
     */
    public void forward(int rows, int[] pos, int[] slot, MemorySegment q, MemorySegment kCache, MemorySegment vCache,
                        boolean bf16Cache, int positions, MemorySegment out, WorkerPool pool) {
        if (positions < 1 || positions > maxT)
            throw new Moe4jException("CachedAttention: a cache of " + positions + " positions per slot; this kernel takes 1.." + maxT);
        for (int r = 0; r < rows; r++) {
            if (pos[r] < 0 || pos[r] >= positions)
                throw new Moe4jException("CachedAttention: row " + r + " is at position " + pos[r] + ", the cache holds 0.."
                        + (positions - 1));
            long need = cacheOffset(slot[r] + 1, 0, 0, positions) * (bf16Cache ? 2 : Float.BYTES);
            if (slot[r] < 0 || need > kCache.byteSize() || need > vCache.byteSize())
                throw new Moe4jException("CachedAttention: row " + r + " reads slot " + slot[r] + " position " + pos[r]
                        + " beyond the cache (" + kCache.byteSize() + " bytes)");
        }
        Task t = task;
        t.pos = pos;
        t.slot = slot;
        t.q = q;
        t.k = kCache;
        t.v = vCache;
        t.out = out;
        t.positions = positions;
        t.bf16 = bf16Cache;
        // (row, head) units in claimed pieces: a unit's cost grows with its position, and a late worker must not
        // hold up the caller for a whole static half
        int units = rows * heads;
        pool.parallelForPieces(units, Math.min(units, 16 * pool.threads()), t);
    }

    /**
     * Σ a[i]·b[i] over a F32 row a and a BF16 row b (element offsets), in {@link VectorOps#dot}'s order (two chains over
     * 2L blocks, then an L block, the lane sum, the scalar tail); b widened exactly as it is loaded.
     */
    static float dotBf16(MemorySegment a, long aOff, MemorySegment b, long bOff, int n) {
        FloatVector s0 = FloatVector.zero(F);
        FloatVector s1 = FloatVector.zero(F);
        int i = 0;
        for (int b2 = n - 2 * L; i <= b2; i += 2 * L) {
            FloatVector b0 = ((IntVector) ShortVector.fromMemorySegment(S, b, (bOff + i) * 2L, NATIVE)
                    .convertShape(VectorOperators.S2I, I, 0)).lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
            FloatVector b1 = ((IntVector) ShortVector.fromMemorySegment(S, b, (bOff + i + L) * 2L, NATIVE)
                    .convertShape(VectorOperators.S2I, I, 0)).lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
            s0 = FloatVector.fromMemorySegment(F, a, (aOff + i) * 4L, NATIVE).fma(b0, s0);
            s1 = FloatVector.fromMemorySegment(F, a, (aOff + i + L) * 4L, NATIVE).fma(b1, s1);
        }
        for (int bd = F.loopBound(n); i < bd; i += L) {
            FloatVector b0 = ((IntVector) ShortVector.fromMemorySegment(S, b, (bOff + i) * 2L, NATIVE)
                    .convertShape(VectorOperators.S2I, I, 0)).lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
            s0 = FloatVector.fromMemorySegment(F, a, (aOff + i) * 4L, NATIVE).fma(b0, s0);
        }
        float s = VectorMath.sum(s0.add(s1));
        for (; i < n; i++) {
            s += a.getAtIndex(Tensor.FLOAT, aOff + i) * Bf16.toFloat(b.getAtIndex(Tensor.SHORT, bOff + i));
        }
        return s;
    }

    private final class Task implements WorkerPool.RangeTask {
        int[] pos, slot;
        int positions;
        boolean bf16;
        MemorySegment q, k, v, out;

        @Override
        public void run(int u0, int u1, int worker) {
            float[] sc = scores[worker];
            for (int u = u0; u < u1; u++) {
                int r = u / heads, h = u % heads, g = h / group;
                int n = pos[r] + 1;
                long qo = (long) r * qw + (long) h * headDim;
                long base = cacheOffset(slot[r], g, 0, positions);
                float max = Float.NEGATIVE_INFINITY;
                if (bf16) {
                    for (int j = 0; j < n; j++) {
                        float x = scale * dotBf16(q, qo, k, base + (long) j * headDim, headDim);
                        sc[j] = x;
                        max = Math.max(max, x);
                    }
                } else {
                    for (int j = 0; j < n; j++) {
                        float x = scale * VectorOps.dot(q, qo, k, base + (long) j * headDim, headDim);
                        sc[j] = x;
                        max = Math.max(max, x);
                    }
                }
                // softmax over the row: the exponential written out over whole vectors (expSubInPlace), the scalar
                // twin for the tail — the operations and order of Softmax.forward, so the same bits. Not
                // Softmax.forward itself: it calls VectorMath.exp(FloatVector), which C2 sometimes compiles on its
                // own first and then refuses to inline, boxing a vector per (row, head) unit — measured 3,072 B and
                // about half the speed per decoded token in those JVMs.
                int nv = n - n % VectorMath.L;
                float sum = VectorMath.expSubInPlace(sc, 0, nv, max);
                for (int j = nv; j < n; j++) {
                    float e = VectorMath.exp(sc[j] - max);
                    sc[j] = e;
                    sum += e;
                }
                float inv = 1f / sum;
                if (bf16) weightedValuesBf16(sc, inv, n, base, qo);
                else weightedValues(sc, inv, n, base, qo);
            }
        }

        /**
         * out[qo .. qo + Dh) = Σ_j (sc[j] · inv) · v[base + j·Dh ..]: the output row kept in up to four vector
         * registers over all positions and stored once (an axpy per position reloaded and stored it every time, a
         * serial chain through memory). Per element the same fused multiply-adds in the same order, from 0, as
         * zero-then-axpy; the scalar tail as axpy's ({@code y + a·x}).
         */
        private void weightedValues(float[] sc, float inv, int n, long base, long qo) {
            MemorySegment v = this.v, out = this.out;
            int hv = headDim - headDim % L;
            for (int c = 0; c < hv; c += 4 * L) {
                long vo = (base + c) * 4L, oo = (qo + c) * 4L, stride = (long) headDim * 4;
                if (hv - c >= 4 * L) {
                    FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0;
                    for (int j = 0; j < n; j++) {
                        FloatVector p = FloatVector.broadcast(F, sc[j] * inv);
                        long e = vo + j * stride;
                        a0 = FloatVector.fromMemorySegment(F, v, e, NATIVE).fma(p, a0);
                        a1 = FloatVector.fromMemorySegment(F, v, e + 4L * L, NATIVE).fma(p, a1);
                        a2 = FloatVector.fromMemorySegment(F, v, e + 8L * L, NATIVE).fma(p, a2);
                        a3 = FloatVector.fromMemorySegment(F, v, e + 12L * L, NATIVE).fma(p, a3);
                    }
                    a0.intoMemorySegment(out, oo, NATIVE);
                    a1.intoMemorySegment(out, oo + 4L * L, NATIVE);
                    a2.intoMemorySegment(out, oo + 8L * L, NATIVE);
                    a3.intoMemorySegment(out, oo + 12L * L, NATIVE);
                } else {
                    for (int t = 0; t < (hv - c) / L; t++) {
                        FloatVector a = FloatVector.zero(F);
                        for (int j = 0; j < n; j++)
                            a = FloatVector.fromMemorySegment(F, v, vo + 4L * L * t + j * stride, NATIVE)
                                    .fma(FloatVector.broadcast(F, sc[j] * inv), a);
                        a.intoMemorySegment(out, oo + 4L * L * t, NATIVE);
                    }
                }
            }
            for (int i = hv; i < headDim; i++) {
                float o = 0f;
                for (int j = 0; j < n; j++) o = o + (sc[j] * inv) * v.getAtIndex(Tensor.FLOAT, base + (long) j * headDim + i);
                out.setAtIndex(Tensor.FLOAT, qo + i, o);
            }
        }
    
        /**
         * {@link #weightedValues} over a BF16 value cache: each value vector widened as it is loaded (the shorts
         * sign-extended to ints and shifted into the upper half: exact), the same fused multiply-adds in the same
         * order.
         */
        private void weightedValuesBf16(float[] sc, float inv, int n, long base, long qo) {
            MemorySegment v = this.v, out = this.out;
            int hv = headDim - headDim % L;
            for (int c = 0; c < hv; c += 4 * L) {
                long vo = (base + c) * 2L, oo = (qo + c) * 4L, stride = (long) headDim * 2;
                if (hv - c >= 4 * L) {
                    FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0;
                    for (int j = 0; j < n; j++) {
                        FloatVector p = FloatVector.broadcast(F, sc[j] * inv);
                        long e = vo + j * stride;
                        a0 = ((IntVector) ShortVector.fromMemorySegment(S, v, e, NATIVE).convertShape(VectorOperators.S2I, I, 0))
                                .lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().fma(p, a0);
                        a1 = ((IntVector) ShortVector.fromMemorySegment(S, v, e + 2L * L, NATIVE).convertShape(VectorOperators.S2I, I, 0))
                                .lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().fma(p, a1);
                        a2 = ((IntVector) ShortVector.fromMemorySegment(S, v, e + 4L * L, NATIVE).convertShape(VectorOperators.S2I, I, 0))
                                .lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().fma(p, a2);
                        a3 = ((IntVector) ShortVector.fromMemorySegment(S, v, e + 6L * L, NATIVE).convertShape(VectorOperators.S2I, I, 0))
                                .lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().fma(p, a3);
                    }
                    a0.intoMemorySegment(out, oo, NATIVE);
                    a1.intoMemorySegment(out, oo + 4L * L, NATIVE);
                    a2.intoMemorySegment(out, oo + 8L * L, NATIVE);
                    a3.intoMemorySegment(out, oo + 12L * L, NATIVE);
                } else {
                    for (int t = 0; t < (hv - c) / L; t++) {
                        FloatVector a = FloatVector.zero(F);
                        for (int j = 0; j < n; j++)
                            a = ((IntVector) ShortVector.fromMemorySegment(S, v, vo + 2L * L * t + j * stride, NATIVE)
                                    .convertShape(VectorOperators.S2I, I, 0)).lanewise(VectorOperators.LSHL, 16)
                                    .reinterpretAsFloats().fma(FloatVector.broadcast(F, sc[j] * inv), a);
                        a.intoMemorySegment(out, oo + 4L * L * t, NATIVE);
                    }
                }
            }
            for (int i = hv; i < headDim; i++) {
                float o = 0f;
                for (int j = 0; j < n; j++)
                    o = o + (sc[j] * inv) * Bf16.toFloat(v.getAtIndex(Tensor.SHORT, base + (long) j * headDim + i));
                out.setAtIndex(Tensor.FLOAT, qo + i, o);
            }
        }
    }
}
