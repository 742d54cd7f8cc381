package org.moe4j.reference;

/**
 * Float64 twin of sgemm, row-major: {@code C = alpha * op(A) op(B) + beta * C} with op(A) [m, k], op(B) [k, n],
 * A stored [m, k] (or [k, m] when transA) with row stride lda from element aOff, B stored [k, n] (or [n, k] when
 * transB) with stride ldb from bOff, C [m, n] with stride ldc from cOff. beta == 0 ignores the old C (NaN too).
 * Returns the dense [m, n] result; shares no code with the kernel.
 */
public final class RefGemm {
    private RefGemm() {
    }

    public static double[] gemm(boolean transA, boolean transB, int m, int n, int k, double alpha,
                                float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                                double beta, float[] c, int cOff, int ldc) {
        double[] out = new double[m * n];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int p = 0; p < k; p++) {
                    double av = transA ? a[aOff + p * lda + i] : a[aOff + i * lda + p];
                    double bv = transB ? b[bOff + j * ldb + p] : b[bOff + p * ldb + j];
                    s += av * bv;
                }
                double old = beta == 0 ? 0 : beta * c[cOff + i * ldc + j];
                out[i * n + j] = alpha * s + old;
            }
        }
        return out;
    }
}
