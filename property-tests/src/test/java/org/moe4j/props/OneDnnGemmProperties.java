package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterContainer;
import org.junit.jupiter.api.Test;
import org.moe4j.nativ.NativeLibraryException;
import org.moe4j.nativ.OneDnn;
import org.moe4j.nativ.OneDnnGemm;
import org.moe4j.nativ.OneDnnMatmul;
import org.moe4j.simd.DType;

/**
 * oneDNN against the float64 twin RefGemm, on the shapes GemmProperties uses for the Java kernel: m, n, k in
 * 0..150 (some up to 600), all four transpose combinations, random alpha and beta, padded leading dimensions,
 * nonzero offsets, junk around every operand.
 *
 * <ul>
 *   <li>{@code dnnl_sgemm} ({@link OneDnnGemm}) and the f32 matmul primitive ({@link OneDnnMatmul}): float32
 *   tolerance, 1e-5 * (sqrt(k) + 1) * max|A| max|B| |alpha| (as for JavaGemm).</li>
 *   <li>bf16 matmul: against the twin fed the bf16-rounded A and B, the float32 tolerance x 4 (the products of
 *   bf16 numbers are exact in float32; only the float32 accumulation order differs); and against the unrounded
 *   inputs, the bf16 tolerance 2^-7 * (sqrt(k) + 1) * max|A| max|B| |alpha| (each input rounds by up to 2^-9
 *   relative, random signs).</li>
 * </ul>
 * Also: beta == 0 ignores NaN in C, and per-expert calls with one shape reuse one primitive.
 */
class OneDnnGemmProperties {
    private static OneDnnGemm sgemm;
    private static OneDnnMatmul matmul;

    private static synchronized OneDnnGemm sgemm() {
        if (sgemm == null) {
            assertTrue(OneDnn.available(), OneDnn.reason());
            sgemm = new OneDnnGemm(2);
        }
        return sgemm;
    }

    private static synchronized OneDnnMatmul matmul() {
        if (matmul == null) {
            assertTrue(OneDnn.available(), OneDnn.reason());
            matmul = new OneDnnMatmul(2);
        }
        return matmul;
    }

    @AfterContainer
    static synchronized void close() {
        if (matmul != null) {
            matmul.close();
            matmul = null;
        }
    }

    /** The dnnl jar is a dependency of this build, so on linux-x86_64 oneDNN must load. */
    @Test
    void oneDnnLoads() {
        assertTrue(OneDnn.available(), OneDnn.reason());
    }

    @Property(tries = 150)
    void sgemmMatchesTwin(@ForAll @IntRange(min = 0, max = 150) int m, @ForAll @IntRange(min = 0, max = 150) int n,
                          @ForAll @IntRange(min = 0, max = 150) int k, @ForAll boolean transA,
                          @ForAll boolean transB, @ForAll long seed) {
        GemmCase p = new GemmCase(new Random(seed), m, n, k, transA, transB);
        p.check("dnnl_sgemm", p.runF32(sgemm(), p.c), p.expected(p.a, p.b), 1e-5);
    }

    @Property(tries = 10)
    void sgemmMatchesTwinLarge(@ForAll @IntRange(min = 1, max = 420) int m, @ForAll @IntRange(min = 1, max = 300) int n,
                               @ForAll @IntRange(min = 200, max = 600) int k, @ForAll boolean transA,
                               @ForAll boolean transB, @ForAll long seed) {
        GemmCase p = new GemmCase(new Random(seed), m, n, k, transA, transB);
        p.check("dnnl_sgemm large", p.runF32(sgemm(), p.c), p.expected(p.a, p.b), 1e-5);
    }

    @Property(tries = 100)
    void matmulF32MatchesTwin(@ForAll @IntRange(min = 0, max = 150) int m, @ForAll @IntRange(min = 0, max = 150) int n,
                              @ForAll @IntRange(min = 0, max = 150) int k, @ForAll boolean transA,
                              @ForAll boolean transB, @ForAll long seed) {
        GemmCase p = new GemmCase(new Random(seed), m, n, k, transA, transB);
        p.check("matmul f32", p.runF32(matmul(), p.c), p.expected(p.a, p.b), 1e-5);
    }

    @Property(tries = 100)
    void matmulBf16MatchesTwin(@ForAll @IntRange(min = 0, max = 150) int m, @ForAll @IntRange(min = 0, max = 150) int n,
                               @ForAll @IntRange(min = 0, max = 300) int k, @ForAll boolean transA,
                               @ForAll boolean transB, @ForAll long seed) {
        GemmCase p = new GemmCase(new Random(seed), m, n, k, transA, transB);
        OneDnnMatmul mm = matmul();
        float[] out;
        try {
            out = p.runBf16((ta, tb, mm2, nn, kk, al, a, ao, lda, b, bo, ldb, be, c, co, ldc) ->
                    mm.matmul(DType.BF16, ta, tb, mm2, nn, kk, al, a, ao, lda, b, bo, ldb, be, c, co, ldc));
        } catch (NativeLibraryException e) {
            // a CPU without bf16 support may have no bf16 matmul at all: that is reported, not a wrong answer
            if (!OneDnn.bf16Native() && e.getMessage().contains("dnnl_unimplemented")) {
                return;
            }
            throw e;
        }
        p.check("matmul bf16 vs rounded inputs", out, p.expected(p.aBf16Rounded(), p.bBf16Rounded()), 4e-5);
        p.check("matmul bf16 vs float inputs", out, p.expected(p.a, p.b), 0x1p-7);
    }

    @Property(tries = 30)
    void betaZeroIgnoresNaN(@ForAll @IntRange(min = 1, max = 80) int m, @ForAll @IntRange(min = 1, max = 80) int n,
                            @ForAll @IntRange(min = 0, max = 80) int k, @ForAll boolean transA,
                            @ForAll boolean transB, @ForAll boolean viaMatmul, @ForAll long seed) {
        Random rnd = new Random(seed);
        GemmCase p;
        do {
            p = new GemmCase(rnd, m, n, k, transA, transB);
        } while (p.beta != 0f);
        float[] nanC = p.c.clone();
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                nanC[p.cOff + i * p.ldc + j] = rnd.nextBoolean() ? Float.NaN : Float.POSITIVE_INFINITY;
            }
        }
        float[] out = p.runF32(viaMatmul ? matmul() : sgemm(), nanC);
        double[] exp = p.expected(p.a, p.b);
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                float v = out[p.cOff + i * p.ldc + j];
                if (!Float.isFinite(v) || Math.abs(v - exp[i * n + j]) > 1e-3 * (1 + Math.abs(exp[i * n + j]))) {
                    fail((viaMatmul ? "matmul" : "sgemm") + " beta == 0: C[" + i + ", " + j + "] = " + v
                            + ", expected " + exp[i * n + j]);
                }
            }
        }
    }

    /** E experts of one shape (new data handles each call) create one primitive, and each product is right. */
    @Property(tries = 5)
    void expertsReuseOnePrimitive(@ForAll @IntRange(min = 1, max = 64) int rows, @ForAll long seed) {
        try (OneDnnMatmul mm = new OneDnnMatmul(2)) {
            Random rnd = new Random(seed);
            for (int e = 0; e < 8; e++) {
                GemmCase p = new GemmCase(rnd, rows, 48, 32, false, true);
                while (p.ldb != 32 || p.lda != 32 || p.ldc != 48 || p.alpha != 1f || p.beta != 0f) {
                    p = new GemmCase(rnd, rows, 48, 32, false, true);
                }
                p.check("expert " + e, p.runF32(mm, p.c), p.expected(p.a, p.b), 1e-5);
            }
            assertEquals(1, mm.primitivesCreated());
        }
    }
}
