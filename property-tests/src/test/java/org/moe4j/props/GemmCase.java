package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.fail;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import org.moe4j.reference.RefGemm;
import org.moe4j.simd.Bf16;
import org.moe4j.simd.Gemm;

/**
 * One random GEMM problem for the native backends' properties (oneDNN, cuBLAS): padded leading dimensions,
 * nonzero offsets, random alpha and beta (0, 1 or Gaussian), operands scaled by e^N(0,1), junk around every
 * operand that must stay untouched, and C's row padding (between n and ldc) that must stay untouched too.
 * Expected values come from the float64 twin {@link RefGemm}.
 */
final class GemmCase {
    final boolean transA;
    final boolean transB;
    final int m;
    final int n;
    final int k;
    final int lda;
    final int ldb;
    final int ldc;
    final int aOff;
    final int bOff;
    final int cOff;
    final float alpha;
    final float beta;
    final float[] a;
    final float[] b;
    final float[] c;

    GemmCase(Random rnd, int m, int n, int k, boolean transA, boolean transB) {
        this.m = m;
        this.n = n;
        this.k = k;
        this.transA = transA;
        this.transB = transB;
        lda = (transA ? m : k) + (rnd.nextBoolean() ? 0 : rnd.nextInt(5) + 1) + (m == 0 || k == 0 ? 1 : 0);
        ldb = (transB ? k : n) + (rnd.nextBoolean() ? 0 : rnd.nextInt(5) + 1) + (n == 0 || k == 0 ? 1 : 0);
        ldc = n + (rnd.nextBoolean() ? 0 : rnd.nextInt(5) + 1) + (n == 0 ? 1 : 0);
        aOff = rnd.nextInt(7);
        bOff = rnd.nextInt(7);
        cOff = rnd.nextInt(7);
        alpha = rnd.nextInt(4) == 0 ? 1f : (float) rnd.nextGaussian();
        int bk = rnd.nextInt(4);
        beta = bk == 0 ? 0f : bk == 1 ? 1f : (float) rnd.nextGaussian();
        a = KernelsSupport.gaussian(rnd, aOff + lda * (transA ? k : m), Math.exp(rnd.nextGaussian()));
        b = KernelsSupport.gaussian(rnd, bOff + ldb * (transB ? n : k), Math.exp(rnd.nextGaussian()));
        c = KernelsSupport.gaussian(rnd, cOff + ldc * m, 1);
    }

    /** The same problem with A and B rounded to bf16 (what a bf16 kernel multiplies). */
    float[] aBf16Rounded() {
        return roundBf16(a);
    }

    float[] bBf16Rounded() {
        return roundBf16(b);
    }

    static float[] roundBf16(float[] v) {
        float[] r = new float[v.length];
        for (int i = 0; i < v.length; i++) {
            r[i] = Bf16.toFloat(Bf16.fromFloat(v[i]));
        }
        return r;
    }

    /** The float64 expectation of this problem. */
    double[] expected() {
        return expected(a, b);
    }

    double[] expected(float[] aIn, float[] bIn) {
        return RefGemm.gemm(transA, transB, m, n, k, alpha, aIn, aOff, lda, bIn, bOff, ldb, beta, c, cOff, ldc);
    }

    /** C (the whole padded array) after {@code gemm.sgemm} on off-heap copies with junk pads around them. */
    float[] runF32(Gemm gemm, float[] cInit) {
        int pad = 5;
        try (Arena arena = Arena.ofShared()) {
            MemorySegment as = KernelsSupport.floats(arena, a, pad);
            MemorySegment bs = KernelsSupport.floats(arena, b, pad);
            MemorySegment cs = KernelsSupport.floats(arena, cInit, pad);
            gemm.sgemm(transA, transB, m, n, k, alpha, as, pad + aOff, lda, bs, pad + bOff, ldb, beta, cs, pad + cOff,
                    ldc);
            KernelsSupport.assertPadIntact("C", cs, pad, cInit.length);
            return KernelsSupport.read(cs, pad, cInit.length);
        }
    }

    /** A bf16 product: A and B as bf16 segments (offsets in bf16 elements), C float32. */
    interface Bf16Gemm {
        void run(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, long aOff, int lda,
                 MemorySegment b, long bOff, int ldb, float beta, MemorySegment c, long cOff, int ldc);
    }

    float[] runBf16(Bf16Gemm gemm) {
        int pad = 5;
        try (Arena arena = Arena.ofShared()) {
            MemorySegment as = bf16(arena, a, pad);
            MemorySegment bs = bf16(arena, b, pad);
            MemorySegment cs = KernelsSupport.floats(arena, c, pad);
            gemm.run(transA, transB, m, n, k, alpha, as, pad + aOff, lda, bs, pad + bOff, ldb, beta, cs, pad + cOff, ldc);
            KernelsSupport.assertPadIntact("C", cs, pad, c.length);
            return KernelsSupport.read(cs, pad, c.length);
        }
    }

    private static MemorySegment bf16(Arena arena, float[] v, int pad) {
        MemorySegment s = arena.allocate((v.length + 2L * pad) * 2 + 2, 2);
        for (int i = 0; i < v.length; i++) {
            s.setAtIndex(ValueLayout.JAVA_SHORT, pad + i, Bf16.fromFloat(v[i]));
        }
        return s;
    }

    static double maxAbs(float[] v) {
        double mx = 0;
        for (float x : v) {
            mx = Math.max(mx, Math.abs(x));
        }
        return mx;
    }

    /**
     * Compares C after the kernel with the float64 expectation: inside the [m, n] window within
     * {@code relDot * (sqrt(k) + 1) * max|A| * max|B| * |alpha| + 1e-6 * |beta C|}; outside it bit-identical.
     */
    void check(String what, float[] cOut, double[] expected, double relDot) {
        double tolDot = relDot * (Math.sqrt(k) + 1) * maxAbs(a) * maxAbs(b) * Math.abs(alpha);
        for (int i = 0; i < c.length; i++) {
            int rel = i - cOff;
            int row = rel < 0 ? -1 : rel / ldc;
            int col = rel < 0 ? -1 : rel % ldc;
            boolean inside = rel >= 0 && row < m && col < n;
            if (!inside) {
                if (Float.floatToRawIntBits(cOut[i]) != Float.floatToRawIntBits(c[i])) {
                    fail(what + ": wrote C element " + i + " outside the [m, n] window (ldc " + ldc + ")");
                }
                continue;
            }
            double e = expected[row * n + col];
            double tol = tolDot + 1e-6 * Math.abs(beta * c[i]) + 1e-30;
            if (!(Math.abs(cOut[i] - e) <= tol)) {
                fail(what + ": C[" + row + ", " + col + "] = " + cOut[i] + ", expected " + e + " (tol " + tol + ", "
                        + this + ")");
            }
        }
    }

    @Override
    public String toString() {
        return "m " + m + " n " + n + " k " + k + " transA " + transA + " transB " + transB + " lda " + lda + " ldb "
                + ldb + " ldc " + ldc + " offsets " + aOff + "/" + bOff + "/" + cOff + " alpha " + alpha + " beta "
                + beta;
    }
}
