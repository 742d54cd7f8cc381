package org.moe4j.simd.gemm;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.moe4j.Moe4jException;
import org.moe4j.simd.Simd;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * The blocked, packed SGEMM behind {@link org.moe4j.simd.JavaGemm}: argument checks, the per-call task (static
 * grid partition), packing of A and B into per-thread panels, and the MR x NR register micro-kernel.
 *
 * <p>Layouts. Packed A block: {@code ceil(mc / MR)} panels, panel {@code ip} holds {@code ap[ip*MR*kc + p*MR + r]
 * = op(A)[ic + ip*MR + r, pc + p]} (rows past m are zero). Packed B block: panel {@code jp} holds
 * {@code bp[jp*NR*kc + p*NR + j] = op(B)[pc + p, jc + jp*NR + j]} (columns past n are zero). The micro-kernel then
 * reads MR broadcasts and NR / L vectors per p, all contiguous. A panel of at most 2 or 1 vectors of valid columns
 * (the n edge, or the end of a thread's N slice, which is cut at a multiple of L) runs {@link #kernel2v} or
 * {@link #kernel1v}: same per-element operation order as {@link #kernel}, so the partition (the thread count) does
 * not change bits.
 *
 * <p>Width. The species comes from {@link Simd#FLOAT} (L = 16, 8 or 4 floats at 512, 256 or 128 bits) and the
 * micro-tile is 8 rows x 3 vectors at every width, so NR = 3 L. That is 24 accumulators + 3 B vectors + 1
 * broadcast: it fits the 32 vector registers of AVX-512 (also at 256 bits, where zmm16-31 serve as ymm) and of
 * NEON; on an AVX2-only CPU (16 ymm) C2 spills some accumulators to L1, which costs speed, not correctness.
 */
public final class GemmKernel {
    private GemmKernel() {
    }

    static final VectorSpecies<Float> S = Simd.FLOAT;
    /** Floats per vector. */
    public static final int L = S.length();
    /**
     * Micro-tile: MR rows x NR columns of C in MR * NR / L = 24 vector accumulators (+ 3 B vectors + 1 broadcast of
     * the 32 registers). At 512 bits, measured alone on L1-resident panels, it runs at ~80-83% of the FmaPeakBench
     * rate; 6 x 32 gave the same whole-GEMM rate (the rest goes to packing and the C read-modify-write per K block).
     */
    public static final int MR = 8;
    public static final int NR = 3 * L;
    /**
     * K block: an NR x KC B micro-panel (48 KB) sits in L1/L2 while the A micro-panels (8 KB) stream; KC from 128
     * to 512 measured the same within noise.
     */
    public static final int KC = 256;
    /** M block: the packed A block [MC, KC] (144 KB) lives in L2. */
    public static final int MC = 144;
    /**
     * N block, a multiple of NR at every width (2016 = 42 * 48 = 84 * 24 = 168 * 12): the packed B block [KC, NC]
     * (2 MB) lives in L2/L3.
     */
    public static final int NC = 2016;
    /** Below m * n * k of this, a call runs on the caller thread alone. */
    public static final long PARALLEL_MIN_FLOPS = 64L * 64 * 64;
    /** M-split (whole row slices per thread) once every thread gets at least this many rows; else N slices. */
    static final int MSPLIT_MIN_ROWS = 192;
    /**
     * Skinny path: op(A) [m, k] x B^T with B stored [n, k] and m at most this: dot products straight from the
     * segments, no packing (packing B, k n elements, costs more than the 2 m k n FLOP when m is a few dozen).
     */
    public static final int DOT_MAX_ROWS = 32;
    /** Skinny tile: DR rows of A x DC rows of B, DR * DC vector accumulators over k. */
    static final int DR = 4;
    static final int DC = 4;

    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    /** Per-executing-thread packing buffers (the pool may run any chunk inline, so worker ids can be shared). */
    private static final ThreadLocal<Buffers> BUFFERS = ThreadLocal.withInitial(Buffers::new);

    static final class Buffers {
        final float[] ap = new float[MC * KC];
        final float[] bp = new float[KC * NC];
        final float[] row = new float[Math.max(NC, Math.max(4 * KC, MC))];
        final float[] tile = new float[MR * NR];
        final float[] dotLanes = new float[DR * DC * L];
        final float[] dotSums = new float[DR * DC];
    }

    public static void checkArgs(boolean transA, boolean transB, int m, int n, int k,
                                 MemorySegment a, long aOffset, int lda, MemorySegment b, long bOffset, int ldb,
                                 MemorySegment c, long cOffset, int ldc) {
        if (m < 0 || n < 0 || k < 0) {
            throw new Moe4jException("sgemm: m, n, k must be >= 0, got " + m + ", " + n + ", " + k);
        }
        if (aOffset < 0 || bOffset < 0 || cOffset < 0) {
            throw new Moe4jException("sgemm: offsets must be >= 0, got a " + aOffset + ", b " + bOffset
                    + ", c " + cOffset);
        }
        int aCols = transA ? m : k;
        int bCols = transB ? k : n;
        if (lda < Math.max(1, aCols)) {
            throw new Moe4jException("sgemm: lda " + lda + " < " + aCols + " (A "
                    + (transA ? "[k, m]" : "[m, k]") + ")");
        }
        if (ldb < Math.max(1, bCols)) {
            throw new Moe4jException("sgemm: ldb " + ldb + " < " + bCols + " (B "
                    + (transB ? "[n, k]" : "[k, n]") + ")");
        }
        if (ldc < Math.max(1, n)) {
            throw new Moe4jException("sgemm: ldc " + ldc + " < n = " + n);
        }
        if (m == 0 || n == 0) {
            return;
        }
        checkExtent("C", c, cOffset, m, n, ldc);
        if (k > 0) {
            checkExtent("A", a, aOffset, transA ? k : m, aCols, lda);
            checkExtent("B", b, bOffset, transB ? n : k, bCols, ldb);
        }
    }

    private static void checkExtent(String what, MemorySegment s, long off, int rows, int cols, int ld) {
        long last = off + (long) (rows - 1) * ld + cols; // one past the last element read or written
        if (s == null || last * 4 > s.byteSize()) {
            throw new Moe4jException("sgemm: " + what + " needs " + last + " floats from offset 0 ("
                    + rows + " rows of " + cols + ", ld " + ld + ", offset " + off + "), segment holds "
                    + (s == null ? "null" : String.valueOf(s.byteSize() / 4)));
        }
    }

    /** C[m, n] = beta * C (beta == 0 writes zeros, ignoring NaN in C); the k == 0 case. */
    public static void scale(int m, int n, float beta, MemorySegment c, long cOffset, int ldc) {
        for (int i = 0; i < m; i++) {
            long row = cOffset + (long) i * ldc;
            for (int j = 0; j < n; j++) {
                float v = beta == 0f ? 0f : beta * c.getAtIndex(Tensor.FLOAT, row + j);
                c.setAtIndex(Tensor.FLOAT, row + j, v);
            }
        }
    }

    /** One call's arguments and its static tm x tn grid of sub-problems; reused across calls. */
    public static final class Task implements WorkerPool.RangeTask {
        boolean transA;
        boolean transB;
        int m;
        int n;
        int k;
        float alpha;
        float beta;
        MemorySegment a;
        MemorySegment b;
        MemorySegment c;
        long aOff;
        long bOff;
        long cOff;
        int lda;
        int ldb;
        int ldc;
        int tm;
        int tn;
        boolean dot;

        public void set(boolean transA, boolean transB, int m, int n, int k, float alpha,
                        MemorySegment a, long aOffset, int lda, MemorySegment b, long bOffset, int ldb,
                        float beta, MemorySegment c, long cOffset, int ldc, int threads) {
            this.transA = transA;
            this.transB = transB;
            this.m = m;
            this.n = n;
            this.k = k;
            this.alpha = alpha;
            this.beta = beta;
            this.a = a;
            this.b = b;
            this.c = c;
            this.aOff = aOffset;
            this.bOff = bOffset;
            this.cOff = cOffset;
            this.lda = lda;
            this.ldb = ldb;
            this.ldc = ldc;
            // rows per thread large enough that re-packing all of B per thread is cheap: split M; else split N
            // (each thread packs all of A, which is small then)
            dot = transB && !transA && m <= DOT_MAX_ROWS;
            if (m >= MSPLIT_MIN_ROWS * threads && !dot) {
                tm = threads;
                tn = 1;
            } else {
                tm = 1;
                tn = threads;
            }
        }

        public int chunks() {
            return tm * tn;
        }

        public void clear() {
            a = null;
            b = null;
            c = null;
        }

        @Override
        public void run(int start, int end, int worker) {
            Buffers buf = BUFFERS.get();
            int mPanels = (m + MR - 1) / MR;
            // N slices in whole vectors, not whole NR panels: n = 512 on 2 threads at 512 bits is 256 + 256 (5
            // panels and a 16-column edge each, run by the narrow kernels) rather than 240 + 272 (5 vs 6 panels)
            int nVecs = (n + L - 1) / L;
            for (int ch = start; ch < end; ch++) {
                int ci = ch / tn;
                int cj = ch % tn;
                int i0 = Math.min(m, (int) ((long) mPanels * ci / tm) * MR);
                int i1 = Math.min(m, (int) ((long) mPanels * (ci + 1) / tm) * MR);
                int j0 = Math.min(n, (int) ((long) nVecs * cj / tn) * L);
                int j1 = Math.min(n, (int) ((long) nVecs * (cj + 1) / tn) * L);
                if (i0 < i1 && j0 < j1) {
                    if (dot) {
                        dotBlock(buf, i0, i1, j0, j1);
                    } else {
                        block(buf, i0, i1, j0, j1);
                    }
                }
            }
        }

        /** C[i0:i1, j0:j1] = alpha * op(A)[i0:i1, :] op(B)[:, j0:j1] + beta * C[i0:i1, j0:j1]. */
        private void block(Buffers buf, int i0, int i1, int j0, int j1) {
            float[] ap = buf.ap;
            float[] bp = buf.bp;
            for (int jc = j0; jc < j1; jc += NC) {
                int nc = Math.min(NC, j1 - jc);
                for (int pc = 0; pc < k; pc += KC) {
                    int kc = Math.min(KC, k - pc);
                    float betaEff = pc == 0 ? beta : 1f;
                    packB(buf, pc, kc, jc, nc);
                    for (int ic = i0; ic < i1; ic += MC) {
                        int mc = Math.min(MC, i1 - ic);
                        packA(buf, ic, mc, pc, kc);
                        for (int jr = 0; jr < nc; jr += NR) {
                            int nr = Math.min(NR, nc - jr);
                            int bIdx = jr * kc; // panel jr / NR starts at (jr / NR) * NR * kc
                            for (int ir = 0; ir < mc; ir += MR) {
                                int mr = Math.min(MR, mc - ir);
                                long cIdx = cOff + (long) (ic + ir) * ldc + jc + jr;
                                if (nr > 2 * L) {
                                    kernel(kc, ap, ir * kc, bp, bIdx, c, cIdx, ldc, mr, nr, alpha, betaEff, buf.tile);
                                } else if (nr > L) {
                                    kernel2v(kc, ap, ir * kc, bp, bIdx, c, cIdx, ldc, mr, nr, alpha, betaEff,
                                            buf.tile);
                                } else {
                                    kernel1v(kc, ap, ir * kc, bp, bIdx, c, cIdx, ldc, mr, nr, alpha, betaEff,
                                            buf.tile);
                                }
                            }
                        }
                    }
                }
            }
        }

        // op(A)[ic:ic+mc, pc:pc+kc] -> ap panels [MR] interleaved by p
        private void packA(Buffers buf, int ic, int mc, int pc, int kc) {
            float[] ap = buf.ap;
            float[] row = buf.row;
            if (!transA) {
                // A [m, k]: row r of the panel is contiguous in p
                for (int ir = 0; ir < mc; ir += MR) {
                    int base = ir * kc;
                    int mr = Math.min(MR, mc - ir);
                    int r = 0;
                    for (; r + 4 <= mr; r += 4) {
                        // 4 rows at once: 4 adjacent floats per p land in one cache line
                        long src = (aOff + (long) (ic + ir + r) * lda + pc) * 4;
                        MemorySegment.copy(a, Tensor.FLOAT, src, row, 0, kc);
                        MemorySegment.copy(a, Tensor.FLOAT, src + 4L * lda, row, KC, kc);
                        MemorySegment.copy(a, Tensor.FLOAT, src + 8L * lda, row, 2 * KC, kc);
                        MemorySegment.copy(a, Tensor.FLOAT, src + 12L * lda, row, 3 * KC, kc);
                        for (int p = 0; p < kc; p++) {
                            int d = base + r + p * MR;
                            ap[d] = row[p];
                            ap[d + 1] = row[KC + p];
                            ap[d + 2] = row[2 * KC + p];
                            ap[d + 3] = row[3 * KC + p];
                        }
                    }
                    for (; r < mr; r++) {
                        MemorySegment.copy(a, Tensor.FLOAT, (aOff + (long) (ic + ir + r) * lda + pc) * 4, row, 0, kc);
                        for (int p = 0; p < kc; p++) {
                            ap[base + r + p * MR] = row[p];
                        }
                    }
                    for (; r < MR; r++) { // zero rows past m
                        for (int p = 0, d = base + r; p < kc; p++, d += MR) {
                            ap[d] = 0f;
                        }
                    }
                }
            } else {
                // A stored [k, m]: row p of storage holds op(A)[:, p] contiguous in i
                int mPad = (mc + MR - 1) / MR * MR;
                for (int i = mc; i < mPad; i++) {
                    row[i] = 0f;
                }
                for (int p = 0; p < kc; p++) {
                    MemorySegment.copy(a, Tensor.FLOAT, (aOff + (long) (pc + p) * lda + ic) * 4, row, 0, mc);
                    for (int ir = 0; ir < mPad; ir += MR) {
                        int d = ir * kc + p * MR;
                        for (int r = 0; r < MR; r++) {
                            ap[d + r] = row[ir + r];
                        }
                    }
                }
            }
        }

        // op(B)[pc:pc+kc, jc:jc+nc] -> bp panels [NR] interleaved by p
        private void packB(Buffers buf, int pc, int kc, int jc, int nc) {
            float[] bp = buf.bp;
            float[] row = buf.row;
            if (!transB) {
                // B [k, n]: row p is contiguous in j
                int nPad = (nc + NR - 1) / NR * NR;
                for (int j = nc; j < nPad; j++) {
                    row[j] = 0f;
                }
                for (int p = 0; p < kc; p++) {
                    MemorySegment.copy(b, Tensor.FLOAT, (bOff + (long) (pc + p) * ldb + jc) * 4, row, 0, nc);
                    for (int jr = 0; jr < nPad; jr += NR) {
                        int d = jr * kc + p * NR;
                        for (int v = 0; v < NR; v += L) {
                            FloatVector.fromArray(S, row, jr + v).intoArray(bp, d + v);
                        }
                    }
                }
            } else {
                // B stored [n, k]: row j of storage holds op(B)[:, j] contiguous in p
                for (int jr = 0; jr < nc; jr += NR) {
                    int base = jr * kc;
                    int nr = Math.min(NR, nc - jr);
                    int j = 0;
                    for (; j + 4 <= nr; j += 4) {
                        // 4 rows at once: 4 adjacent floats per p land in one cache line
                        long src = (bOff + (long) (jc + jr + j) * ldb + pc) * 4;
                        MemorySegment.copy(b, Tensor.FLOAT, src, row, 0, kc);
                        MemorySegment.copy(b, Tensor.FLOAT, src + 4L * ldb, row, KC, kc);
                        MemorySegment.copy(b, Tensor.FLOAT, src + 8L * ldb, row, 2 * KC, kc);
                        MemorySegment.copy(b, Tensor.FLOAT, src + 12L * ldb, row, 3 * KC, kc);
                        for (int p = 0; p < kc; p++) {
                            int d = base + j + p * NR;
                            bp[d] = row[p];
                            bp[d + 1] = row[KC + p];
                            bp[d + 2] = row[2 * KC + p];
                            bp[d + 3] = row[3 * KC + p];
                        }
                    }
                    for (; j < nr; j++) {
                        MemorySegment.copy(b, Tensor.FLOAT, (bOff + (long) (jc + jr + j) * ldb + pc) * 4, row, 0, kc);
                        for (int p = 0; p < kc; p++) {
                            bp[base + j + p * NR] = row[p];
                        }
                    }
                    // zero columns past n, up to the vector the kernel for this width reads
                    for (int jEnd = Math.min(NR, (nr + L - 1) / L * L); j < jEnd; j++) {
                        for (int p = 0, d = base + j; p < kc; p++, d += NR) {
                            bp[d] = 0f;
                        }
                    }
                }
            }
        }

        /**
         * Skinny path over C[i0:i1, j0:j1]: C[i, j] = alpha * dot(A[i, :], B[j, :]) + beta * C[i, j], A [m, k] and
         * B [n, k] read in place. Every element is summed in the same order whatever tile it falls in (L lane
         * partial sums over p, then lanes 0..L-1 in order, then the tail), so the partition cannot change bits.
         */
        private void dotBlock(Buffers buf, int i0, int i1, int j0, int j1) {
            float[] lanes = buf.dotLanes;
            float[] sums = buf.dotSums;
            for (int j = j0; j < j1; j += DC) {
                int nc = Math.min(DC, j1 - j);
                for (int i = i0; i < i1; i += DR) {
                    int nrows = Math.min(DR, i1 - i);
                    if (nrows == DR && nc == DC) {
                        dot4x4(a, aOff + (long) i * lda, lda, b, bOff + (long) j * ldb, ldb, k, lanes, sums);
                    } else {
                        for (int r = 0; r < nrows; r++) {
                            for (int q = 0; q < nc; q++) {
                                sums[r * DC + q] = dot1(a, aOff + (long) (i + r) * lda, b, bOff + (long) (j + q) * ldb,
                                        k, lanes);
                            }
                        }
                    }
                    for (int r = 0; r < nrows; r++) {
                        long row = cOff + (long) (i + r) * ldc + j;
                        for (int q = 0; q < nc; q++) {
                            float v = alpha * sums[r * DC + q];
                            if (beta != 0f) {
                                v = v + beta * c.getAtIndex(Tensor.FLOAT, row + q);
                            }
                            c.setAtIndex(Tensor.FLOAT, row + q, v);
                        }
                    }
                }
            }
        }
    }

    /** Sum of lanes[base .. base + L) in lane order, then the scalar tail of the dot product from p = kv. */
    private static float finish(float[] lanes, int base, MemorySegment a, long aRow, MemorySegment b, long bRow,
                                int kv, int k) {
        float s = 0f;
        for (int l = 0; l < L; l++) {
            s += lanes[base + l];
        }
        for (int p = kv; p < k; p++) {
            s += a.getAtIndex(Tensor.FLOAT, aRow + p) * b.getAtIndex(Tensor.FLOAT, bRow + p);
        }
        return s;
    }

    static float dot1(MemorySegment a, long aRow, MemorySegment b, long bRow, int k, float[] lanes) {
        int kv = S.loopBound(k);
        FloatVector acc = FloatVector.zero(S);
        for (int p = 0; p < kv; p += L) {
            acc = FloatVector.fromMemorySegment(S, a, (aRow + p) * 4, NATIVE)
                    .fma(FloatVector.fromMemorySegment(S, b, (bRow + p) * 4, NATIVE), acc);
        }
        acc.intoArray(lanes, 0);
        return finish(lanes, 0, a, aRow, b, bRow, kv, k);
    }

    /** sums[r * 4 + q] = dot(A row aRow0 + r lda, B row bRow0 + q ldb) over k, for r, q < 4. */
    static void dot4x4(MemorySegment a, long aRow0, int lda, MemorySegment b, long bRow0, int ldb, int k,
                       float[] lanes, float[] sums) {
        int kv = S.loopBound(k);
        long a0 = aRow0 * 4;
        long a1 = a0 + 4L * lda;
        long a2 = a1 + 4L * lda;
        long a3 = a2 + 4L * lda;
        long b0 = bRow0 * 4;
        long b1 = b0 + 4L * ldb;
        long b2 = b1 + 4L * ldb;
        long b3 = b2 + 4L * ldb;
        FloatVector c00 = FloatVector.zero(S);
        FloatVector c01 = FloatVector.zero(S);
        FloatVector c02 = FloatVector.zero(S);
        FloatVector c03 = FloatVector.zero(S);
        FloatVector c10 = FloatVector.zero(S);
        FloatVector c11 = FloatVector.zero(S);
        FloatVector c12 = FloatVector.zero(S);
        FloatVector c13 = FloatVector.zero(S);
        FloatVector c20 = FloatVector.zero(S);
        FloatVector c21 = FloatVector.zero(S);
        FloatVector c22 = FloatVector.zero(S);
        FloatVector c23 = FloatVector.zero(S);
        FloatVector c30 = FloatVector.zero(S);
        FloatVector c31 = FloatVector.zero(S);
        FloatVector c32 = FloatVector.zero(S);
        FloatVector c33 = FloatVector.zero(S);
        for (int p = 0; p < kv; p += L) {
            long o = 4L * p;
            FloatVector vb0 = FloatVector.fromMemorySegment(S, b, b0 + o, NATIVE);
            FloatVector vb1 = FloatVector.fromMemorySegment(S, b, b1 + o, NATIVE);
            FloatVector vb2 = FloatVector.fromMemorySegment(S, b, b2 + o, NATIVE);
            FloatVector vb3 = FloatVector.fromMemorySegment(S, b, b3 + o, NATIVE);
            FloatVector va0 = FloatVector.fromMemorySegment(S, a, a0 + o, NATIVE);
            c00 = va0.fma(vb0, c00);
            c01 = va0.fma(vb1, c01);
            c02 = va0.fma(vb2, c02);
            c03 = va0.fma(vb3, c03);
            FloatVector va1 = FloatVector.fromMemorySegment(S, a, a1 + o, NATIVE);
            c10 = va1.fma(vb0, c10);
            c11 = va1.fma(vb1, c11);
            c12 = va1.fma(vb2, c12);
            c13 = va1.fma(vb3, c13);
            FloatVector va2 = FloatVector.fromMemorySegment(S, a, a2 + o, NATIVE);
            c20 = va2.fma(vb0, c20);
            c21 = va2.fma(vb1, c21);
            c22 = va2.fma(vb2, c22);
            c23 = va2.fma(vb3, c23);
            FloatVector va3 = FloatVector.fromMemorySegment(S, a, a3 + o, NATIVE);
            c30 = va3.fma(vb0, c30);
            c31 = va3.fma(vb1, c31);
            c32 = va3.fma(vb2, c32);
            c33 = va3.fma(vb3, c33);
        }
        c00.intoArray(lanes, 0);
        c01.intoArray(lanes, L);
        c02.intoArray(lanes, 2 * L);
        c03.intoArray(lanes, 3 * L);
        c10.intoArray(lanes, 4 * L);
        c11.intoArray(lanes, 5 * L);
        c12.intoArray(lanes, 6 * L);
        c13.intoArray(lanes, 7 * L);
        c20.intoArray(lanes, 8 * L);
        c21.intoArray(lanes, 9 * L);
        c22.intoArray(lanes, 10 * L);
        c23.intoArray(lanes, 11 * L);
        c30.intoArray(lanes, 12 * L);
        c31.intoArray(lanes, 13 * L);
        c32.intoArray(lanes, 14 * L);
        c33.intoArray(lanes, 15 * L);
        for (int r = 0; r < DR; r++) {
            for (int q = 0; q < DC; q++) {
                sums[r * DC + q] = finish(lanes, (r * DC + q) * L, a, aRow0 + (long) r * lda, b, bRow0 + (long) q * ldb,
                        kv, k);
            }
        }
    }

    /**
     * C[mr, nr] (row stride ldc, from element cIdx) = alpha * Apanel[MR, kc] Bpanel[kc, NR] + beta * C, for
     * mr <= MR, nr <= NR; beta == 0 ignores C. Accumulators: 8 rows x 3 vectors; per p, 3 B loads and 8 A
     * broadcasts feed 24 FMAs.
     */
    static void kernel(int kc, float[] ap, int aIdx, float[] bp, int bIdx, MemorySegment c, long cIdx, int ldc,
                       int mr, int nr, float alpha, float beta, float[] tile) {
        FloatVector c00 = FloatVector.zero(S);
        FloatVector c01 = FloatVector.zero(S);
        FloatVector c02 = FloatVector.zero(S);
        FloatVector c10 = FloatVector.zero(S);
        FloatVector c11 = FloatVector.zero(S);
        FloatVector c12 = FloatVector.zero(S);
        FloatVector c20 = FloatVector.zero(S);
        FloatVector c21 = FloatVector.zero(S);
        FloatVector c22 = FloatVector.zero(S);
        FloatVector c30 = FloatVector.zero(S);
        FloatVector c31 = FloatVector.zero(S);
        FloatVector c32 = FloatVector.zero(S);
        FloatVector c40 = FloatVector.zero(S);
        FloatVector c41 = FloatVector.zero(S);
        FloatVector c42 = FloatVector.zero(S);
        FloatVector c50 = FloatVector.zero(S);
        FloatVector c51 = FloatVector.zero(S);
        FloatVector c52 = FloatVector.zero(S);
        FloatVector c60 = FloatVector.zero(S);
        FloatVector c61 = FloatVector.zero(S);
        FloatVector c62 = FloatVector.zero(S);
        FloatVector c70 = FloatVector.zero(S);
        FloatVector c71 = FloatVector.zero(S);
        FloatVector c72 = FloatVector.zero(S);
        for (int p = 0; p < kc; p++) {
            // indices linear in the loop variable, so C2 hoists the range checks out of the loop
            int ai = aIdx + p * MR;
            int bi = bIdx + p * NR;
            FloatVector b0 = FloatVector.fromArray(S, bp, bi);
            FloatVector b1 = FloatVector.fromArray(S, bp, bi + L);
            FloatVector b2 = FloatVector.fromArray(S, bp, bi + 2 * L);
            FloatVector a0 = FloatVector.broadcast(S, ap[ai]);
            c00 = a0.fma(b0, c00);
            c01 = a0.fma(b1, c01);
            c02 = a0.fma(b2, c02);
            FloatVector a1 = FloatVector.broadcast(S, ap[ai + 1]);
            c10 = a1.fma(b0, c10);
            c11 = a1.fma(b1, c11);
            c12 = a1.fma(b2, c12);
            FloatVector a2 = FloatVector.broadcast(S, ap[ai + 2]);
            c20 = a2.fma(b0, c20);
            c21 = a2.fma(b1, c21);
            c22 = a2.fma(b2, c22);
            FloatVector a3 = FloatVector.broadcast(S, ap[ai + 3]);
            c30 = a3.fma(b0, c30);
            c31 = a3.fma(b1, c31);
            c32 = a3.fma(b2, c32);
            FloatVector a4 = FloatVector.broadcast(S, ap[ai + 4]);
            c40 = a4.fma(b0, c40);
            c41 = a4.fma(b1, c41);
            c42 = a4.fma(b2, c42);
            FloatVector a5 = FloatVector.broadcast(S, ap[ai + 5]);
            c50 = a5.fma(b0, c50);
            c51 = a5.fma(b1, c51);
            c52 = a5.fma(b2, c52);
            FloatVector a6 = FloatVector.broadcast(S, ap[ai + 6]);
            c60 = a6.fma(b0, c60);
            c61 = a6.fma(b1, c61);
            c62 = a6.fma(b2, c62);
            FloatVector a7 = FloatVector.broadcast(S, ap[ai + 7]);
            c70 = a7.fma(b0, c70);
            c71 = a7.fma(b1, c71);
            c72 = a7.fma(b2, c72);
        }
        // spill the tile to a small array and update C outside: keeps this method small enough for C2 to inline
        // every Vector API call (a Vector passed to a non-inlined helper is boxed)
        c00.intoArray(tile, 0);
        c01.intoArray(tile, L);
        c02.intoArray(tile, 2 * L);
        c10.intoArray(tile, NR);
        c11.intoArray(tile, NR + L);
        c12.intoArray(tile, NR + 2 * L);
        c20.intoArray(tile, 2 * NR);
        c21.intoArray(tile, 2 * NR + L);
        c22.intoArray(tile, 2 * NR + 2 * L);
        c30.intoArray(tile, 3 * NR);
        c31.intoArray(tile, 3 * NR + L);
        c32.intoArray(tile, 3 * NR + 2 * L);
        c40.intoArray(tile, 4 * NR);
        c41.intoArray(tile, 4 * NR + L);
        c42.intoArray(tile, 4 * NR + 2 * L);
        c50.intoArray(tile, 5 * NR);
        c51.intoArray(tile, 5 * NR + L);
        c52.intoArray(tile, 5 * NR + 2 * L);
        c60.intoArray(tile, 6 * NR);
        c61.intoArray(tile, 6 * NR + L);
        c62.intoArray(tile, 6 * NR + 2 * L);
        c70.intoArray(tile, 7 * NR);
        c71.intoArray(tile, 7 * NR + L);
        c72.intoArray(tile, 7 * NR + 2 * L);
        if (nr % L == 0) {
            storeVectors(tile, c, cIdx, ldc, mr, nr, alpha, beta);
        } else {
            storeEdge(tile, c, cIdx, ldc, mr, nr, alpha, beta);
        }
    }

    /** {@link #kernel} for a panel of at most 2 L valid columns: 8 rows x 2 vectors of accumulators. */
    static void kernel2v(int kc, float[] ap, int aIdx, float[] bp, int bIdx, MemorySegment c, long cIdx, int ldc,
                         int mr, int nr, float alpha, float beta, float[] tile) {
        FloatVector c00 = FloatVector.zero(S);
        FloatVector c01 = FloatVector.zero(S);
        FloatVector c10 = FloatVector.zero(S);
        FloatVector c11 = FloatVector.zero(S);
        FloatVector c20 = FloatVector.zero(S);
        FloatVector c21 = FloatVector.zero(S);
        FloatVector c30 = FloatVector.zero(S);
        FloatVector c31 = FloatVector.zero(S);
        FloatVector c40 = FloatVector.zero(S);
        FloatVector c41 = FloatVector.zero(S);
        FloatVector c50 = FloatVector.zero(S);
        FloatVector c51 = FloatVector.zero(S);
        FloatVector c60 = FloatVector.zero(S);
        FloatVector c61 = FloatVector.zero(S);
        FloatVector c70 = FloatVector.zero(S);
        FloatVector c71 = FloatVector.zero(S);
        for (int p = 0; p < kc; p++) {
            int ai = aIdx + p * MR;
            int bi = bIdx + p * NR;
            FloatVector b0 = FloatVector.fromArray(S, bp, bi);
            FloatVector b1 = FloatVector.fromArray(S, bp, bi + L);
            FloatVector a0 = FloatVector.broadcast(S, ap[ai]);
            c00 = a0.fma(b0, c00);
            c01 = a0.fma(b1, c01);
            FloatVector a1 = FloatVector.broadcast(S, ap[ai + 1]);
            c10 = a1.fma(b0, c10);
            c11 = a1.fma(b1, c11);
            FloatVector a2 = FloatVector.broadcast(S, ap[ai + 2]);
            c20 = a2.fma(b0, c20);
            c21 = a2.fma(b1, c21);
            FloatVector a3 = FloatVector.broadcast(S, ap[ai + 3]);
            c30 = a3.fma(b0, c30);
            c31 = a3.fma(b1, c31);
            FloatVector a4 = FloatVector.broadcast(S, ap[ai + 4]);
            c40 = a4.fma(b0, c40);
            c41 = a4.fma(b1, c41);
            FloatVector a5 = FloatVector.broadcast(S, ap[ai + 5]);
            c50 = a5.fma(b0, c50);
            c51 = a5.fma(b1, c51);
            FloatVector a6 = FloatVector.broadcast(S, ap[ai + 6]);
            c60 = a6.fma(b0, c60);
            c61 = a6.fma(b1, c61);
            FloatVector a7 = FloatVector.broadcast(S, ap[ai + 7]);
            c70 = a7.fma(b0, c70);
            c71 = a7.fma(b1, c71);
        }
        c00.intoArray(tile, 0);
        c01.intoArray(tile, L);
        c10.intoArray(tile, NR);
        c11.intoArray(tile, NR + L);
        c20.intoArray(tile, 2 * NR);
        c21.intoArray(tile, 2 * NR + L);
        c30.intoArray(tile, 3 * NR);
        c31.intoArray(tile, 3 * NR + L);
        c40.intoArray(tile, 4 * NR);
        c41.intoArray(tile, 4 * NR + L);
        c50.intoArray(tile, 5 * NR);
        c51.intoArray(tile, 5 * NR + L);
        c60.intoArray(tile, 6 * NR);
        c61.intoArray(tile, 6 * NR + L);
        c70.intoArray(tile, 7 * NR);
        c71.intoArray(tile, 7 * NR + L);
        if (nr % L == 0) {
            storeVectors(tile, c, cIdx, ldc, mr, nr, alpha, beta);
        } else {
            storeEdge(tile, c, cIdx, ldc, mr, nr, alpha, beta);
        }
    }

    /** {@link #kernel} for a panel of at most L valid columns: 8 rows x 1 vector of accumulators. */
    static void kernel1v(int kc, float[] ap, int aIdx, float[] bp, int bIdx, MemorySegment c, long cIdx, int ldc,
                         int mr, int nr, float alpha, float beta, float[] tile) {
        FloatVector c0 = FloatVector.zero(S);
        FloatVector c1 = FloatVector.zero(S);
        FloatVector c2 = FloatVector.zero(S);
        FloatVector c3 = FloatVector.zero(S);
        FloatVector c4 = FloatVector.zero(S);
        FloatVector c5 = FloatVector.zero(S);
        FloatVector c6 = FloatVector.zero(S);
        FloatVector c7 = FloatVector.zero(S);
        for (int p = 0; p < kc; p++) {
            int ai = aIdx + p * MR;
            FloatVector b0 = FloatVector.fromArray(S, bp, bIdx + p * NR);
            c0 = FloatVector.broadcast(S, ap[ai]).fma(b0, c0);
            c1 = FloatVector.broadcast(S, ap[ai + 1]).fma(b0, c1);
            c2 = FloatVector.broadcast(S, ap[ai + 2]).fma(b0, c2);
            c3 = FloatVector.broadcast(S, ap[ai + 3]).fma(b0, c3);
            c4 = FloatVector.broadcast(S, ap[ai + 4]).fma(b0, c4);
            c5 = FloatVector.broadcast(S, ap[ai + 5]).fma(b0, c5);
            c6 = FloatVector.broadcast(S, ap[ai + 6]).fma(b0, c6);
            c7 = FloatVector.broadcast(S, ap[ai + 7]).fma(b0, c7);
        }
        c0.intoArray(tile, 0);
        c1.intoArray(tile, NR);
        c2.intoArray(tile, 2 * NR);
        c3.intoArray(tile, 3 * NR);
        c4.intoArray(tile, 4 * NR);
        c5.intoArray(tile, 5 * NR);
        c6.intoArray(tile, 6 * NR);
        c7.intoArray(tile, 7 * NR);
        if (nr == L) {
            storeVectors(tile, c, cIdx, ldc, mr, nr, alpha, beta);
        } else {
            storeEdge(tile, c, cIdx, ldc, mr, nr, alpha, beta);
        }
    }

    /**
     * C[mr, nr] = alpha * tile + beta * C (beta == 0: C ignored) for nr a multiple of L, the same operations per
     * element as storeEdge. Two loops: no Vector phi across a branch.
     */
    private static void storeVectors(float[] tile, MemorySegment c, long cIdx, int ldc, int mr, int nr, float alpha,
                                     float beta) {
        if (beta == 0f) {
            for (int r = 0; r < mr; r++) {
                long o = (cIdx + (long) r * ldc) * 4;
                for (int j = 0; j < nr; j += L) {
                    FloatVector.fromArray(S, tile, r * NR + j).mul(alpha).intoMemorySegment(c, o + 4L * j, NATIVE);
                }
            }
        } else {
            for (int r = 0; r < mr; r++) {
                long o = (cIdx + (long) r * ldc) * 4;
                for (int j = 0; j < nr; j += L) {
                    FloatVector.fromArray(S, tile, r * NR + j).mul(alpha)
                            .add(FloatVector.fromMemorySegment(S, c, o + 4L * j, NATIVE).mul(beta))
                            .intoMemorySegment(c, o + 4L * j, NATIVE);
                }
            }
        }
    }

    private static void storeEdge(float[] tile, MemorySegment c, long cIdx, int ldc, int mr, int nr,
                                  float alpha, float beta) {
        for (int r = 0; r < mr; r++) {
            long row = cIdx + (long) r * ldc;
            for (int j = 0; j < nr; j++) {
                float acc = alpha * tile[r * NR + j];
                float v = beta == 0f ? acc : acc + beta * c.getAtIndex(Tensor.FLOAT, row + j);
                c.setAtIndex(Tensor.FLOAT, row + j, v);
            }
        }
    }
}
