package org.moe4j.simd;

import java.lang.foreign.MemorySegment;

/**
 * GEMM with bfloat16 inputs and float32 accumulation and output, row-major as in {@link Gemm}:
 * {@code C = alpha * op(A) * op(B) + beta * C}.
 *
 * <pre>
 * // A [m, k] (stored [k, m] when transA), B [k, n] (stored [n, k] when transB): bf16; C [m, n]: f32.
 * // Offsets and leading dimensions count elements of the operand's own type (2 bytes for A and B, 4 for C).
 * </pre>
 *
 * Every product of two bf16 numbers is exact in float32, so an implementation differs from the float64 product of
 * the same bf16 inputs only by its float32 accumulation order. With {@code beta == 0} C is overwritten (NaN in C
 * does not propagate).
 *
 * <p>Implementations: oneDNN's bf16 matmul primitive (native-bindings, {@code OneDnnBf16Gemm}) where the CPU has
 * bf16 support, else {@link JavaBf16Gemm} (widen to float32, then a {@link Gemm}). {@link MixedGemm} puts
 * float32 activations in front of either.
 */
public interface Bf16Gemm {
    /** A short name for logs and benchmark tables. */
    String name();

    /**
     * A backend of its own that runs every call on the calling thread alone, for independent products run
     * concurrently one per thread (a layer's experts in training); null when this backend has none (the caller then
     * runs the products one after another here). The caller closes it when it is {@link AutoCloseable}.
     */
    default Bf16Gemm forOneThread() {
        return null;
    }

    void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
              MemorySegment a, long aOffset, int lda,
              MemorySegment b, long bOffset, int ldb,
              float beta, MemorySegment c, long cOffset, int ldc);
}
