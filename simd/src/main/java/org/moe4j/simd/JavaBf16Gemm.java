package org.moe4j.simd;

import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;

/**
 * The {@link Bf16Gemm} for a CPU or build without oneDNN's bf16 matmul: A and B are widened to float32 (exact: a
 * shift) into packed buffers and multiplied by a float32 {@link Gemm}. The result is the product of the same bf16
 * inputs as a native bf16 kernel's, so a run gives the same answers (to float32 accumulation order) on either.
 *
 * <p>It is not faster than float32 training: the Vector API has no bf16 dot-product operation (vdpbf16ps), so a
 * Java micro-kernel would widen every element in registers, which costs as much as the float32 FMA it feeds. Its
 * job is to keep {@code --precision bf16} correct, not fast, where oneDNN is absent.
 *
 * <p>Widening buffers grow to the largest operands seen and are then reused: nothing is allocated per call after
 * that. Calls are serialised.
 */
public final class JavaBf16Gemm implements Bf16Gemm, AutoCloseable {
    private final Gemm f32;
    private final RowConvert convert;
    private final RowConvert.Buffer aBuf = new RowConvert.Buffer(), bBuf = new RowConvert.Buffer();

    /** f32: the GEMM that multiplies the widened operands; pool: the threads that widen them. */
    public JavaBf16Gemm(Gemm f32, WorkerPool pool) {
        if (f32 == null) throw new Moe4jException("JavaBf16Gemm: the float32 GEMM must not be null");
        this.f32 = f32;
        this.convert = new RowConvert(pool);
    }

    @Override
    public String name() {
        return "java_bf16(" + f32.name() + ")";
    }

    /** A JavaBf16Gemm of its own on the float32 GEMM's one-thread twin (null when it has none). */
    @Override
    public Bf16Gemm forOneThread() {
        Gemm one = f32.forOneThread();
        return one == null ? null : new JavaBf16Gemm(one, new WorkerPool(1));
    }

    @Override
    public synchronized void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                                  MemorySegment a, long aOffset, int lda, MemorySegment b, long bOffset, int ldb,
                                  float beta, MemorySegment c, long cOffset, int ldc) {
        MixedGemm.checkArgs("JavaBf16Gemm", transA, transB, m, n, k, a, aOffset, lda, 2, b, bOffset, ldb, 2, c, cOffset,
                ldc);
        if (m == 0 || n == 0) return;
        if (k == 0) {
            MixedGemm.scale(m, n, beta, c, cOffset, ldc);
            return;
        }
        int aRows = transA ? k : m, aCols = transA ? m : k;
        int bRows = transB ? n : k, bCols = transB ? k : n;
        MemorySegment aw = aBuf.atLeast((long) aRows * aCols * 4), bw = bBuf.atLeast((long) bRows * bCols * 4);
        convert.bf16ToF32(a, aOffset, lda, aRows, aCols, aw);
        convert.bf16ToF32(b, bOffset, ldb, bRows, bCols, bw);
        f32.sgemm(transA, transB, m, n, k, alpha, aw, 0, aCols, bw, 0, bCols, beta, c, cOffset, ldc);
    }

    @Override
    public synchronized void close() {
        aBuf.close();
        bBuf.close();
    }
}
