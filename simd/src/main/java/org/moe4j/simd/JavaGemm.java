package org.moe4j.simd;

import java.lang.foreign.MemorySegment;

/** PLACEHOLDER (replaced by the register-tiled Vector API kernel): plain triple loop. */
public final class JavaGemm implements Gemm {
    private final WorkerPool pool;

    public JavaGemm(WorkerPool pool) {
        this.pool = pool;
    }

    @Override
    public String name() {
        return "java";
    }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                      MemorySegment a, long aOffset, int lda, MemorySegment b, long bOffset, int ldb,
                      float beta, MemorySegment c, long cOffset, int ldc) {
        pool.parallelFor(m, (start, end, w) -> {
            for (int i = start; i < end; i++) {
                for (int j = 0; j < n; j++) {
                    float s = 0;
                    for (int p = 0; p < k; p++) {
                        float av = a.getAtIndex(Tensor.FLOAT, aOffset + (transA ? (long) p * lda + i : (long) i * lda + p));
                        float bv = b.getAtIndex(Tensor.FLOAT, bOffset + (transB ? (long) j * ldb + p : (long) p * ldb + j));
                        s += av * bv;
                    }
                    long ci = cOffset + (long) i * ldc + j;
                    float old = beta == 0f ? 0f : beta * c.getAtIndex(Tensor.FLOAT, ci);
                    c.setAtIndex(Tensor.FLOAT, ci, alpha * s + old);
                }
            }
        });
    }
}
