package org.moe4j.nativ;

import java.lang.foreign.MemorySegment;
import org.moe4j.simd.Bf16Gemm;
import org.moe4j.simd.DType;

/**
 * {@link Bf16Gemm} on oneDNN's bf16 matmul primitive ({@link OneDnnMatmul}: bf16 A and B, f32 C and accumulation,
 * one cached primitive per shape).
 *
 * <p>MoE expert products have a token count that changes every step (the rows routed to an expert), and a primitive
 * costs about 2 ms to create. So m and k are each cut into power-of-two pieces (m = 300 runs as 256 + 32 + 8 + 4
 * rows; a k piece after the first accumulates with beta = 1): every piece has one of ~16 sizes per dimension, the
 * cache stops growing after the first steps, and a step creates no primitive. n is never cut (it is a model width
 * at every call site). A power-of-two m and k (the batch's token count, the model widths) run as one call.
 */
public final class OneDnnBf16Gemm implements Bf16Gemm, AutoCloseable {
    private final OneDnnMatmul matmul;

    /** threads: OpenMP threads for oneDNN (normally the engine's thread count). */
    public OneDnnBf16Gemm(int threads) {
        this.matmul = new OneDnnMatmul(threads);
    }

    @Override
    public String name() {
        return "onednn_bf16";
    }

    /** A matmul of its own on one OpenMP thread (its primitives are made for one thread). */
    @Override
    public Bf16Gemm forOneThread() {
        return new OneDnnBf16Gemm(1);
    }

    /** Primitives created so far (tests and benchmarks: a step must not add any once warmed up). */
    public long primitivesCreated() {
        return matmul.primitivesCreated();
    }

    @Override
    public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                     MemorySegment a, long aOffset, int lda, MemorySegment b, long bOffset, int ldb,
                     float beta, MemorySegment c, long cOffset, int ldc) {
        if (m <= 0 || n <= 0 || k <= 0 || Integer.bitCount(m) == 1 && Integer.bitCount(k) == 1) {
            // one call; it also does every argument check and the m, n or k == 0 cases
            matmul.matmul(DType.BF16, transA, transB, m, n, k, alpha, a, aOffset, lda, b, bOffset, ldb, beta, c,
                    cOffset, ldc);
            return;
        }
        // the whole problem's extents are checked up front, so a bad argument fails before any piece writes C
        org.moe4j.simd.MixedGemm.checkArgs("oneDNN bf16 matmul", transA, transB, m, n, k, a, aOffset, lda, 2, b,
                bOffset, ldb, 2, c, cOffset, ldc);
        for (int i0 = 0, mRest = m; mRest > 0; ) {
            int mc = Integer.highestOneBit(mRest);
            // rows i0.. of op(A): row offset i0 * lda when A is [m, k], column offset i0 when stored [k, m]
            long aRow = transA ? i0 : (long) i0 * lda;
            float bt = beta;
            for (int p0 = 0, kRest = k; kRest > 0; ) {
                int kc = Integer.highestOneBit(kRest);
                long aAt = aOffset + aRow + (transA ? (long) p0 * lda : p0);
                long bAt = bOffset + (transB ? p0 : (long) p0 * ldb);
                matmul.matmul(DType.BF16, transA, transB, mc, n, kc, alpha, a, aAt, lda, b, bAt, ldb, bt, c,
                        cOffset + (long) i0 * ldc, ldc);
                bt = 1f;
                p0 += kc;
                kRest -= kc;
            }
            i0 += mc;
            mRest -= mc;
        }
    }

    @Override
    public void close() {
        matmul.close();
    }
}
