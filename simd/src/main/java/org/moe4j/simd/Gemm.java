package org.moe4j.simd;

import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;

/**
 * Single-precision GEMM, row-major: {@code C = alpha * op(A) * op(B) + beta * C}.
 *
 * <p>Shapes: op(A) is [m, k] and op(B) is [k, n]; C is [m, n] with row stride {@code ldc}. Without transpose A is
 * stored [m, k] with row stride {@code lda} (>= k); transposed, A is stored [k, m] with row stride lda (>= m).
 * Likewise B is stored [k, n] (ldb >= n) or, transposed, [n, k] (ldb >= k). Offsets and strides count
 * float elements, not bytes. With {@code beta == 0} C is overwritten (NaNs in C do not propagate).
 *
 * <p>Implementations: the Java Vector API kernel in this module, oneDNN and cuBLAS in native-bindings.
 */
public interface Gemm {
    /** A short name for logs and benchmark tables: "java", "onednn", "cuda". */
    String name();

    void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
               MemorySegment a, long aOffset, int lda,
               MemorySegment b, long bOffset, int ldb,
               float beta, MemorySegment c, long cOffset, int ldc);

    /**
     * A GEMM for products whose shapes come back every call (a training step's dense layers: the same m, n, k each
     * step), which may cache a plan per shape and serialises its calls. The caller owns what this returns and closes
     * it when it is AutoCloseable and not this object. Default: this backend. oneDNN answers with its matmul
     * primitive, which runs the weight gradient {@code dyᵀ · x} (transposed A) at about 80% of the FMA peak where
     * {@code dnnl_sgemm} manages about 45% (bench/RESULTS.md).
     */
    default Gemm forRepeatedShapes() {
        return this;
    }

    /**
     * A backend of its own that runs every call on the calling thread alone, for independent products run
     * concurrently one per thread (a layer's experts in training); null when this backend has none (the caller then
     * runs the products one after another here). The caller closes it when it is {@link AutoCloseable}.
     */
    default Gemm forOneThread() {
        return null;
    }

    /**
     * Runs every group of {@code groups} (independent products, see {@link GemmGroups}); C holds each group's
     * {@link #sgemm} result, to the bit. This default runs them one after another; the Java backend spreads small
     * groups over its threads, one whole group per thread, instead of splitting each small product.
     */
    default void sgemmGrouped(GemmGroups groups) {
        for (int g = 0; g < groups.count(); g++) groups.runOne(this, g);
    }

    /** Tensor form for whole 2-D tensors: C[m,n] = alpha * op(A) * op(B) + beta * C. */
    default void sgemm(boolean transA, boolean transB, float alpha, Tensor a, Tensor b, float beta, Tensor c) {
        int m = transA ? a.dim(1) : a.dim(0);
        int k = transA ? a.dim(0) : a.dim(1);
        int kb = transB ? b.dim(1) : b.dim(0);
        int n = transB ? b.dim(0) : b.dim(1);
        if (k != kb || c.dim(0) != m || c.dim(1) != n) {
            throw new Moe4jException("sgemm shape mismatch: op(A) " + m + "x" + k + ", op(B) " + kb + "x" + n
                    + ", C " + c.dim(0) + "x" + c.dim(1));
        }
        sgemm(transA, transB, m, n, k, alpha, a.segment(), 0, a.dim(1), b.segment(), 0, b.dim(1), beta,
                c.segment(), 0, c.dim(1));
    }
}
