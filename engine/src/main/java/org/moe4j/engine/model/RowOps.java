package org.moe4j.engine.model;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.moe4j.simd.CrossEntropy;
import org.moe4j.simd.RmsNorm;
import org.moe4j.simd.Rope;
import org.moe4j.simd.SwiGlu;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.VectorOps;
import org.moe4j.simd.WorkerPool;

/**
 * The row-parallel kernel calls of one model step, each a reusable task object on the worker pool: the fields are
 * set, the pool runs the rows, the call returns. Nothing is allocated per call. Offsets count floats.
 */
final class RowOps {
    private static final ValueLayout.OfFloat F = Tensor.FLOAT;
    private final WorkerPool pool;
    /**
     * Rows per reduction block. Sums over rows (norm-weight gradients, the cross-entropy) are taken per fixed block
     * of rows and the blocks added in order, so their bits do not depend on how many threads split the rows.
     */
    static final int BLOCK = 32;
    /** Partial norm-weight gradients [blocks, maxWidth] and loss sums [blocks]. */
    private final MemorySegment dwPartial;
    private final int maxWidth, maxBlocks;
    private final double[] partial;

    RowOps(WorkerPool pool, int maxWidth, int maxRows, Arena arena) {
        this.pool = pool;
        this.maxWidth = maxWidth;
        this.maxBlocks = Math.max(1, (maxRows + BLOCK - 1) / BLOCK);
        this.dwPartial = arena.allocate((long) maxBlocks * maxWidth * Float.BYTES, Tensor.ALIGNMENT);
        this.partial = new double[maxBlocks];
    }

    private int blocks(int rows) {
        int nb = (rows + BLOCK - 1) / BLOCK;
        if (nb > maxBlocks)
            throw new org.moe4j.Moe4jException("RowOps: " + rows + " rows, built for at most " + maxBlocks * BLOCK);
        return nb;
    }

    WorkerPool pool() {
        return pool;
    }

    // ------------------------------------------------------------------------------------------------ RMSNorm

    private final class NormFwd implements WorkerPool.RangeTask {
        MemorySegment x, w, y, rstd;
        long xo, wo, yo, ro;
        int d;
        float eps;

        @Override
        public void run(int s, int e, int worker) {
            RmsNorm.forward(x, xo, w, wo, y, yo, rstd, ro, d, eps, s, e);
        }
    }

    private final NormFwd normFwd = new NormFwd();

    /** x [rows, d], w [d] -> y [rows, d], rstd [rows]. */
    void rmsNorm(MemorySegment x, long xo, MemorySegment w, long wo, MemorySegment y, long yo, MemorySegment rstd,
                 long ro, int d, float eps, int rows) {
        NormFwd t = normFwd;
        t.x = x; t.xo = xo; t.w = w; t.wo = wo; t.y = y; t.yo = yo; t.rstd = rstd; t.ro = ro; t.d = d; t.eps = eps;
        pool.parallelFor(rows, t);
    }

    private final class NormBwd implements WorkerPool.RangeTask {
        MemorySegment dy, x, w, rstd, dx;
        long dyo, xo, wo, ro, dxo;
        boolean acc;
        int d;

        int rows;

        @Override
        public void run(int b0, int b1, int worker) {
            for (int b = b0; b < b1; b++) {
                long base = (long) b * maxWidth;
                VectorOps.zero(dwPartial, base, d);
                RmsNorm.backward(dy, dyo, x, xo, w, wo, rstd, ro, dx, dxo, acc, dwPartial, base, d, b * BLOCK,
                        Math.min(rows, (b + 1) * BLOCK));
            }
        }
    }

    private final NormBwd normBwd = new NormBwd();

    /** dy, x [rows, d], w [d], rstd [rows] -> dx [rows, d] (written or added), dw [d] += (reduced over row blocks). */
    void rmsNormBackward(MemorySegment dy, long dyo, MemorySegment x, long xo, MemorySegment w, long wo,
                         MemorySegment rstd, long ro, MemorySegment dx, long dxo, boolean accumulateDx,
                         MemorySegment dw, long dwo, int d, int rows) {
        NormBwd t = normBwd;
        t.dy = dy; t.dyo = dyo; t.x = x; t.xo = xo; t.w = w; t.wo = wo; t.rstd = rstd; t.ro = ro; t.dx = dx;
        t.dxo = dxo; t.acc = accumulateDx; t.d = d; t.rows = rows;
        int chunks = blocks(rows);
        pool.parallelFor(chunks, t);
        for (int k = 0; k < chunks; k++) {
            long base = (long) k * maxWidth;
            for (int i = 0; i < d; i++)
                dw.setAtIndex(F, dwo + i, dw.getAtIndex(F, dwo + i) + dwPartial.getAtIndex(F, base + i));
        }
    }

    // ------------------------------------------------------------------------------------------------ SwiGLU

    private final class GluFwd implements WorkerPool.RangeTask {
        MemorySegment a13, out;
        long ao, oo;
        int h;

        @Override
        public void run(int s, int e, int worker) {
            SwiGlu.forward(a13, ao, 2 * h, a13, ao + h, 2 * h, out, oo, h, h, s, e);
        }
    }

    private final GluFwd gluFwd = new GluFwd();

    /** a13 [rows, 2h] = [W1 x | W3 x] -> out [rows, h] = silu(W1 x) * W3 x. */
    void swiGlu(MemorySegment a13, long ao, MemorySegment out, long oo, int h, int rows) {
        GluFwd t = gluFwd;
        t.a13 = a13; t.ao = ao; t.out = out; t.oo = oo; t.h = h;
        pool.parallelFor(rows, t);
    }

    private final class GluBwd implements WorkerPool.RangeTask {
        MemorySegment dout, a13, d13;
        long doo, ao, d13o;
        int h;

        @Override
        public void run(int s, int e, int worker) {
            SwiGlu.backward(dout, doo, h, a13, ao, 2 * h, a13, ao + h, 2 * h, d13, d13o, 2 * h, d13, d13o + h, 2 * h,
                    h, s, e);
        }
    }

    private final GluBwd gluBwd = new GluBwd();

    /** dout [rows, h], a13 [rows, 2h] -> d13 [rows, 2h] (may be a13 itself). */
    void swiGluBackward(MemorySegment dout, long doo, MemorySegment a13, long ao, MemorySegment d13, long d13o, int h,
                        int rows) {
        GluBwd t = gluBwd;
        t.dout = dout; t.doo = doo; t.a13 = a13; t.ao = ao; t.d13 = d13; t.d13o = d13o; t.h = h;
        pool.parallelFor(rows, t);
    }

    // ------------------------------------------------------------------------------------------------ RoPE

    private final class RopeTask implements WorkerPool.RangeTask {
        Rope rope;
        MemorySegment x;
        int width, heads;
        int[] pos;
        boolean inverse;

        @Override
        public void run(int s, int e, int worker) {
            for (int r = s; r < e; r++) rope.rotate(x, (long) r * width, heads, pos[r], inverse);
        }
    }

    private final RopeTask ropeTask = new RopeTask();

    /** In place on x [rows, heads*Dh]; row r at position pos[r]. */
    void rope(Rope rope, MemorySegment x, int heads, int[] pos, int rows, boolean inverse) {
        RopeTask t = ropeTask;
        t.rope = rope; t.x = x; t.heads = heads; t.width = heads * rope.headDim(); t.pos = pos; t.inverse = inverse;
        pool.parallelFor(rows, t);
    }

    // ------------------------------------------------------------------------------------------------ cross-entropy

    private final class CeFwd implements WorkerPool.RangeTask {
        MemorySegment logits, targets, lse;
        int vocab, rows;

        @Override
        public void run(int b0, int b1, int worker) {
            for (int b = b0; b < b1; b++)
                partial[b] = CrossEntropy.forward(logits, 0, targets, 0, -1, lse, 0, null, 0, vocab, b * BLOCK,
                        Math.min(rows, (b + 1) * BLOCK));
        }
    }

    private final CeFwd ceFwd = new CeFwd();

    /** Σ CE over label rows (target -1 = no label); lse [rows] written. */
    double crossEntropy(MemorySegment logits, MemorySegment targets, MemorySegment lse, int vocab, int rows) {
        CeFwd t = ceFwd;
        t.logits = logits; t.targets = targets; t.lse = lse; t.vocab = vocab; t.rows = rows;
        int nb = blocks(rows);
        pool.parallelFor(nb, t);
        double s = 0;
        for (int b = 0; b < nb; b++) s += partial[b];
        return s;
    }

    private final class CeBwd implements WorkerPool.RangeTask {
        MemorySegment logits, targets, lse;
        float scale, zWeight;
        int vocab;

        @Override
        public void run(int s, int e, int worker) {
            CrossEntropy.backward(logits, 0, targets, 0, -1, lse, 0, scale, zWeight, logits, 0, vocab, s, e);
        }
    }

    private final CeBwd ceBwd = new CeBwd();

    /** logits -> dlogits in place: d(scale·Σ(CE + zWeight·lse²))/dlogits. */
    void crossEntropyBackward(MemorySegment logits, MemorySegment targets, MemorySegment lse, float scale,
                              float zWeight, int vocab, int rows) {
        CeBwd t = ceBwd;
        t.logits = logits; t.targets = targets; t.lse = lse; t.scale = scale; t.zWeight = zWeight; t.vocab = vocab;
        pool.parallelFor(rows, t);
    }

    // ------------------------------------------------------------------------------------------------ dispatch

    private final class Gather implements WorkerPool.RangeTask {
        MemorySegment src, dst;
        int[] perm;
        int kTot, d;

        @Override
        public void run(int s, int e, int worker) {
            long bytes = (long) d * Float.BYTES;
            for (int r = s; r < e; r++) {
                int t = perm[r] / kTot;
                MemorySegment.copy(src, (long) t * bytes, dst, (long) r * bytes, bytes);
            }
        }
    }

    private final Gather gather = new Gather();

    /** dst[r] = src[token of slot perm[r]] for r in [0, rows): the expert-contiguous input rows. */
    void gather(MemorySegment src, MemorySegment dst, int[] perm, int kTot, int d, int rows) {
        Gather t = gather;
        t.src = src; t.dst = dst; t.perm = perm; t.kTot = kTot; t.d = d;
        pool.parallelFor(rows, t);
    }

    private final class Combine implements WorkerPool.RangeTask {
        MemorySegment ye, out;
        int[] rowOfSlot;
        float[] gate;
        int kTot, d;

        @Override
        public void run(int s, int e, int worker) {
            for (int t = s; t < e; t++) {
                for (int j = 0; j < kTot; j++) {
                    int r = rowOfSlot[t * kTot + j];
                    if (r >= 0) VectorOps.axpy(gate == null ? 1f : gate[t * kTot + j], ye, (long) r * d, out, (long) t * d, d);
                }
            }
        }
    }

    private final Combine combine = new Combine();

    /** out[t] += Σ_j gate[t,j] · ye[rowOfSlot[t,j]] over the token's kept slots (-1 = none); gate null = 1. */
    void combine(MemorySegment ye, MemorySegment out, int[] rowOfSlot, float[] gate, int kTot, int d, int tokens) {
        Combine t = combine;
        t.ye = ye; t.out = out; t.rowOfSlot = rowOfSlot; t.gate = gate; t.kTot = kTot; t.d = d;
        pool.parallelFor(tokens, t);
    }

    private final class CombineBwd implements WorkerPool.RangeTask {
        MemorySegment ye, dy, dye;
        int[] perm;
        float[] gate, dGate;
        int kTot, d;

        @Override
        public void run(int s, int e, int worker) {
            for (int r = s; r < e; r++) {
                int slot = perm[r], t = slot / kTot;
                dGate[slot] = VectorOps.dot(ye, (long) r * d, dy, (long) t * d, d);
                VectorOps.scaleCopy(gate[slot], dy, (long) t * d, dye, (long) r * d, d);
            }
        }
    }

    private final CombineBwd combineBwd = new CombineBwd();

    /** Per kept row r (slot perm[r] of token t): dGate[slot] = ye[r]·dy[t]; dye[r] = gate[slot]·dy[t]. */
    void combineBackward(MemorySegment ye, MemorySegment dy, MemorySegment dye, int[] perm, float[] gate,
                         float[] dGate, int kTot, int d, int rows) {
        CombineBwd t = combineBwd;
        t.ye = ye; t.dy = dy; t.dye = dye; t.perm = perm; t.gate = gate; t.dGate = dGate; t.kTot = kTot; t.d = d;
        pool.parallelFor(rows, t);
    }

    /** dx[t] += Σ_j dxe[rowOfSlot[t,j]] (the gather's backward, race-free per token). */
    void scatterAdd(MemorySegment dxe, MemorySegment dx, int[] rowOfSlot, int kTot, int d, int tokens) {
        combine(dxe, dx, rowOfSlot, null, kTot, d, tokens);
    }
}
