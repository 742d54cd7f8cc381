package org.moe4j.simd;

import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;
import org.moe4j.simd.gemm.GemmKernel;

/**
 * Mixed-precision GEMM: float32 operands are rounded to bf16 (round to nearest even, {@link Convert#f32ToBf16})
 * into packed buffers, bf16 operands are used in place, and a {@link Bf16Gemm} multiplies them with float32
 * accumulation into a float32 C. This is what {@code --precision bf16} training runs every weight product on, and
 * what a BF16 model's prefill can run its many-row products on ({@link #linear}: float32 activations times the
 * stored bf16 weights).
 *
 * <pre>
 * linear:               x [M, K] f32, W [N, K] bf16            -> out [M, N] = bf16(x) · Wᵀ + beta·out
 * linearBackwardInput:  dy [M, K] f32, W [K, N] bf16           -> out [M, N] = bf16(dy) · W + beta·out
 * linearBackwardWeight: dy [K, M] f32, x [K, N] f32            -> g [M, N]   = bf16(dy)ᵀ · bf16(x) + beta·g
 * gemm:                 the general form, either operand f32 (rounded) or bf16 (in place)
 * </pre>
 * Offsets and leading dimensions count elements of each operand's own type. The rounding buffers grow to the
 * largest operands seen and are then reused, so after the first calls of each shape nothing is allocated. Calls are
 * serialised (the buffers are per instance): one instance per calling thread for concurrent use.
 */
public final class MixedGemm implements AutoCloseable {
    private final Bf16Gemm backend;
    private final RowConvert convert;
    private final RowConvert.Buffer aBuf = new RowConvert.Buffer(), bBuf = new RowConvert.Buffer();

    /** backend: the bf16 kernel; pool: the threads that round the float32 operands. */
    public MixedGemm(Bf16Gemm backend, WorkerPool pool) {
        if (backend == null) throw new Moe4jException("MixedGemm: the bf16 GEMM backend must not be null");
        this.backend = backend;
        this.convert = new RowConvert(pool);
    }

    public Bf16Gemm backend() {
        return backend;
    }

    public String name() {
        return backend.name();
    }

    /** Reserves rounding buffers of {@code aElems} and {@code bElems} bf16 elements now (not on a first call). */
    public synchronized MixedGemm reserve(long aElems, long bElems) {
        aBuf.atLeast(aElems * 2);
        bBuf.atLeast(bElems * 2);
        return this;
    }

    // x [M, K] f32 row stride ldx, W [N, K] bf16 row stride ldw -> out [M, N] = bf16(x)·Wᵀ + beta·out
    public void linear(int M, int N, int K, MemorySegment x, long xOff, int ldx, MemorySegment w, long wOff, int ldw,
                       float beta, MemorySegment out, long oOff, int ldo) {
        gemm(false, true, M, N, K, 1f, x, xOff, ldx, false, w, wOff, ldw, true, beta, out, oOff, ldo);
    }

    // dy [M, K] f32 row stride lddy, W [K, N] bf16 row stride ldw -> out [M, N] = bf16(dy)·W + beta·out
    public void linearBackwardInput(int M, int N, int K, MemorySegment dy, long dyOff, int lddy, MemorySegment w,
                                    long wOff, int ldw, float beta, MemorySegment out, long oOff, int ldo) {
        gemm(false, false, M, N, K, 1f, dy, dyOff, lddy, false, w, wOff, ldw, true, beta, out, oOff, ldo);
    }

    // dy [K, M] f32 row stride lddy, x [K, N] f32 row stride ldx -> g [M, N] = bf16(dy)ᵀ·bf16(x) + beta·g
    public void linearBackwardWeight(int M, int N, int K, MemorySegment dy, long dyOff, int lddy, MemorySegment x,
                                     long xOff, int ldx, float beta, MemorySegment g, long gOff, int ldg) {
        gemm(true, false, M, N, K, 1f, dy, dyOff, lddy, false, x, xOff, ldx, false, beta, g, gOff, ldg);
    }

    /**
     * C = alpha · op(A) · op(B) + beta · C (shapes as in {@link Gemm}) where A is bf16 if {@code aBf16}, else float32
     * rounded to bf16 first, and likewise B; C is float32.
     */
    public synchronized void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                                  MemorySegment a, long aOffset, int lda, boolean aBf16,
                                  MemorySegment b, long bOffset, int ldb, boolean bBf16,
                                  float beta, MemorySegment c, long cOffset, int ldc) {
        checkArgs("MixedGemm", transA, transB, m, n, k, a, aOffset, lda, aBf16 ? 2 : 4, b, bOffset, ldb,
                bBf16 ? 2 : 4, c, cOffset, ldc);
        if (m == 0 || n == 0) return;
        if (k == 0) {
            scale(m, n, beta, c, cOffset, ldc);
            return;
        }
        if (!aBf16) {
            int rows = transA ? k : m, cols = transA ? m : k;
            MemorySegment r = aBuf.atLeast((long) rows * cols * 2);
            convert.f32ToBf16(a, aOffset, lda, rows, cols, r);
            a = r;
            aOffset = 0;
            lda = cols;
        }
        if (!bBf16) {
            int rows = transB ? n : k, cols = transB ? k : n;
            MemorySegment r = bBuf.atLeast((long) rows * cols * 2);
            convert.f32ToBf16(b, bOffset, ldb, rows, cols, r);
            b = r;
            bOffset = 0;
            ldb = cols;
        }
        backend.gemm(transA, transB, m, n, k, alpha, a, aOffset, lda, b, bOffset, ldb, beta, c, cOffset, ldc);
    }

    @Override
    public synchronized void close() {
        aBuf.close();
        bBuf.close();
    }

    /** C[m, n] *= beta (beta == 0: zeros, NaN not kept). */
    static void scale(int m, int n, float beta, MemorySegment c, long cOffset, int ldc) {
        GemmKernel.scale(m, n, beta, c, cOffset, ldc);
    }

    /**
     * Shapes, strides and extents of a GEMM whose A and B elements are {@code aBytes} and {@code bBytes} wide (2 for
     * bf16, 4 for f32) and whose C is f32; throws Moe4jException naming the operand that does not fit.
     */
    public static void checkArgs(String who, boolean transA, boolean transB, int m, int n, int k,
                                 MemorySegment a, long aOffset, int lda, int aBytes,
                                 MemorySegment b, long bOffset, int ldb, int bBytes,
                                 MemorySegment c, long cOffset, int ldc) {
        if (m < 0 || n < 0 || k < 0)
            throw new Moe4jException(who + ": negative dimension m " + m + ", n " + n + ", k " + k);
        if (aOffset < 0 || bOffset < 0 || cOffset < 0)
            throw new Moe4jException(who + ": negative offset A " + aOffset + ", B " + bOffset + ", C " + cOffset);
        int aCols = transA ? m : k, bCols = transB ? k : n;
        if (lda < Math.max(1, aCols) || ldb < Math.max(1, bCols) || ldc < Math.max(1, n))
            throw new Moe4jException(who + ": lda " + lda + " (needs >= " + aCols + "), ldb " + ldb + " (needs >= "
                    + bCols + "), ldc " + ldc + " (needs >= " + n + ")");
        if (m == 0 || n == 0) return;
        extent(who, "C", c, cOffset, m, n, ldc, 4);
        if (k == 0) return;
        extent(who, "A", a, aOffset, transA ? k : m, aCols, lda, aBytes);
        extent(who, "B", b, bOffset, transB ? n : k, bCols, ldb, bBytes);
    }

    private static void extent(String who, String what, MemorySegment s, long off, int rows, int cols, int ld,
                               int bytes) {
        long last = off + (long) (rows - 1) * ld + cols;
        if (s == null || last * bytes > s.byteSize())
            throw new Moe4jException(who + ": operand " + what + " needs " + last + " elements of " + bytes
                    + " bytes (" + rows + " rows of " + cols + ", ld " + ld + ", offset " + off + "), segment holds "
                    + (s == null ? "null" : s.byteSize() + " bytes"));
    }
}
