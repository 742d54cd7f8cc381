package org.moe4j.simd;

import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;

/**
 * A batch of independent SGEMMs for {@link Gemm#sgemmGrouped}: the grouped GEMM of a MoE layer, one product per
 * expert over its contiguous rows. Every group shares the transposes, alpha, beta, the three segments and their
 * leading dimensions; each has its own m, n, k and offsets (forward: m = the expert's rows; weight gradients: k =
 * the expert's rows). Group g computes, as {@link Gemm#sgemm} would:
 * <pre>
 *   C[cOff_g: m_g x n_g, ldc] = alpha * op(A[aOff_g]) [m_g, k_g] * op(B[bOff_g]) [k_g, n_g] + beta * C
 * </pre>
 * Groups must not write overlapping parts of C (they may run at the same time). Sized once ({@code capacity}
 * groups), refilled per call with {@link #clear} and {@link #add}: nothing is allocated per call.
 */
public final class GemmGroups {
    boolean transA, transB;
    float alpha, beta;
    MemorySegment a, b, c;
    int lda, ldb, ldc;
    int count;
    final int[] m, n, k;
    final long[] aOff, bOff, cOff;

    public GemmGroups(int capacity) {
        if (capacity < 1) throw new Moe4jException("GemmGroups: capacity " + capacity + " must be >= 1");
        m = new int[capacity];
        n = new int[capacity];
        k = new int[capacity];
        aOff = new long[capacity];
        bOff = new long[capacity];
        cOff = new long[capacity];
    }

    /** Starts a new batch with the settings every group shares; drops the groups of the previous batch. */
    public GemmGroups clear(boolean transA, boolean transB, float alpha, MemorySegment a, int lda, MemorySegment b,
                            int ldb, float beta, MemorySegment c, int ldc) {
        this.transA = transA;
        this.transB = transB;
        this.alpha = alpha;
        this.beta = beta;
        this.a = a;
        this.b = b;
        this.c = c;
        this.lda = lda;
        this.ldb = ldb;
        this.ldc = ldc;
        count = 0;
        return this;
    }

    /** Adds group {@code count()}: op(A) [m, k] from aOffset, op(B) [k, n] from bOffset, C [m, n] from cOffset. */
    public GemmGroups add(int m, int n, int k, long aOffset, long bOffset, long cOffset) {
        if (count == this.m.length)
            throw new Moe4jException("GemmGroups: more than its capacity of " + this.m.length + " groups");
        int g = count++;
        this.m[g] = m;
        this.n[g] = n;
        this.k[g] = k;
        aOff[g] = aOffset;
        bOff[g] = bOffset;
        cOff[g] = cOffset;
        return this;
    }

    public int count() {
        return count;
    }

    /** Drops the segment references (so a finished batch does not keep an arena's memory reachable). */
    public void release() {
        a = null;
        b = null;
        c = null;
        count = 0;
    }

    /** Group g as one {@link Gemm#sgemm} call on {@code gemm}: the plain form of a grouped call. */
    public void runOne(Gemm gemm, int g) {
        gemm.sgemm(transA, transB, m[g], n[g], k[g], alpha, a, aOff[g], lda, b, bOff[g], ldb, beta, c, cOff[g], ldc);
    }

    /** m * n * k of group g: its share of the batch's work. */
    long volume(int g) {
        return (long) m[g] * n[g] * k[g];
    }
}
