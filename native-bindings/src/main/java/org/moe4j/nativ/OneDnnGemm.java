package org.moe4j.nativ;

import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.gemm.GemmKernel;

/**
 * {@link Gemm} on oneDNN's {@code dnnl_sgemm} (row-major, 'N'/'T'; see {@link Gemm} for the contract). One FFM
 * downcall per product, no primitive to create or cache, safe to call from several threads at once. oneDNN
 * parallelises inside the call on its OpenMP pool with {@code threads} threads (see {@link OmpThreads}).
 *
 * <p>Operands must be native (off-heap) segments: their addresses go to C. m == 0, n == 0 and k == 0 are handled
 * here (k == 0 is C = beta * C), as is beta == 0 ignoring NaN in C.
 */
public final class OneDnnGemm implements Gemm {
    private static final byte N = 'N';
    private static final byte T = 'T';
    private final OneDnn.Bindings dnnl;
    private final OmpThreads omp;
    private final Gemm heapFallback;

    /** @param threads OpenMP threads for oneDNN calls, normally the engine's thread count; 0 = OpenMP default. */
    public OneDnnGemm(int threads) {
        this(threads, null);
    }

    /**
     * @param threads      OpenMP threads for oneDNN calls; 0 = OpenMP default
     * @param heapFallback runs products whose operands include a heap segment (C cannot read those); null: such
     *                     calls throw Moe4jException
     */
    public OneDnnGemm(int threads, Gemm heapFallback) {
        this.dnnl = OneDnn.bindings();
        this.omp = new OmpThreads(threads);
        this.heapFallback = heapFallback;
    }

    @Override
    public String name() {
        return "onednn";
    }

    public int threads() {
        return omp.threads();
    }

    /** A new {@link OneDnnMatmul} on as many threads (a primitive per shape; the caller closes it). */
    @Override
    public Gemm forRepeatedShapes() {
        return new OneDnnMatmul(omp.threads());
    }

    /** dnnl_sgemm on one OpenMP thread (nothing to close). */
    @Override
    public Gemm forOneThread() {
        return new OneDnnGemm(1, heapFallback);
    }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                      MemorySegment a, long aOffset, int lda, MemorySegment b, long bOffset, int ldb,
                      float beta, MemorySegment c, long cOffset, int ldc) {
        GemmKernel.checkArgs(transA, transB, m, n, k, a, aOffset, lda, b, bOffset, ldb, c, cOffset, ldc);
        if (m == 0 || n == 0) {
            return;
        }
        if (k == 0) {
            GemmKernel.scale(m, n, beta, c, cOffset, ldc);
            return;
        }
        if (heapFallback != null && !(a.isNative() && b.isNative() && c.isNative())) {
            heapFallback.sgemm(transA, transB, m, n, k, alpha, a, aOffset, lda, b, bOffset, ldb, beta, c, cOffset, ldc);
            return;
        }
        requireNative(a, "GEMM operand A");
        requireNative(b, "GEMM operand B");
        requireNative(c, "GEMM operand C");
        omp.applyToCallingThread();
        int status;
        try {
            status = (int) dnnl.sgemm.invokeExact(transA ? T : N, transB ? T : N, (long) m, (long) n, (long) k, alpha,
                    a.address() + aOffset * 4, (long) lda, b.address() + bOffset * 4, (long) ldb, beta,
                    c.address() + cOffset * 4, (long) ldc);
        } catch (Throwable t) {
            throw OneDnn.rethrow(t);
        }
        if (status != OneDnn.SUCCESS) {
            throw new NativeLibraryException("dnnl_sgemm(" + (transA ? 'T' : 'N') + ", " + (transB ? 'T' : 'N')
                    + ", m " + m + ", n " + n + ", k " + k + ", lda " + lda + ", ldb " + ldb + ", ldc " + ldc
                    + ") failed: " + OneDnn.statusName(status));
        }
    }

    static void requireNative(MemorySegment s, String what) {
        if (!s.isNative()) {
            throw new Moe4jException(what + " is a heap segment; the native GEMM backends (oneDNN, CUDA) need off-heap "
                    + "(Arena-allocated or mapped) segments");
        }
    }
}
