package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.fail;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AddLifecycleHook;
import net.jqwik.api.lifecycle.AfterContainer;
import net.jqwik.api.lifecycle.LifecycleContext;
import net.jqwik.api.lifecycle.SkipExecutionHook;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.moe4j.nativ.Cuda;
import org.moe4j.nativ.CudaGemm;
import org.moe4j.reference.RefGemm;

/**
 * cuBLAS (through {@link CudaGemm}) against the float64 twin RefGemm: the host-operand sgemm on the same random
 * problems as oneDNN (transposes, offsets, padded leading dimensions, alpha/beta, junk that must stay intact);
 * bf16 cublasGemmEx and strided-batched sgemm on device buffers. Without a CUDA device every property is skipped
 * with Cuda.reason() (e.g. "no libcudart found" or "cudaGetDeviceCount returned 35").
 *
 * <p>Tolerances: float32 as for oneDNN, but 1e-4 (TF32 is not enabled — CUBLAS_DEFAULT_MATH — so this is room
 * for a different summation split); bf16 as oneDNN's bf16.
 */
@AddLifecycleHook(CudaGemmProperties.SkipWithoutCuda.class)
class CudaGemmProperties {
    private static CudaGemm gemm;

    /** jqwik counts a failed assumption as a rejected try (and fails when all are): skip the container instead. */
    public static final class SkipWithoutCuda implements SkipExecutionHook {
        @Override
        public SkipResult shouldBeSkipped(LifecycleContext context) {
            return Cuda.available() ? SkipResult.doNotSkip() : SkipResult.skip(Cuda.reason());
        }
    }

    /** Says, in the JUnit report, why the properties below did not run on this machine. */
    @Test
    void cudaPresent() {
        Assumptions.assumeTrue(Cuda.available(), Cuda.reason());
    }

    private static synchronized CudaGemm gemm() {
        Assumptions.assumeTrue(Cuda.available(), Cuda.reason());
        if (gemm == null) {
            gemm = new CudaGemm();
        }
        return gemm;
    }

    @AfterContainer
    static synchronized void close() {
        if (gemm != null) {
            gemm.close();
            gemm = null;
        }
    }

    @Property(tries = 100)
    void sgemmMatchesTwin(@ForAll @IntRange(min = 0, max = 150) int m, @ForAll @IntRange(min = 0, max = 150) int n,
                          @ForAll @IntRange(min = 0, max = 150) int k, @ForAll boolean transA,
                          @ForAll boolean transB, @ForAll long seed) {
        CudaGemm g = gemm();
        GemmCase p = new GemmCase(new Random(seed), m, n, k, transA, transB);
        p.check("cublasSgemm", p.runF32(g, p.c), p.expected(p.a, p.b), 1e-4);
    }

    /** bf16 A, B uploaded densely (ld = stored row length), C float32 on the device with ldc = n. */
    @Property(tries = 30)
    void gemmExBf16MatchesTwin(@ForAll @IntRange(min = 1, max = 100) int m, @ForAll @IntRange(min = 1, max = 100) int n,
                               @ForAll @IntRange(min = 1, max = 200) int k, @ForAll boolean transA,
                               @ForAll boolean transB, @ForAll long seed) {
        CudaGemm g = gemm();
        GemmCase p = new GemmCase(new Random(seed), m, n, k, transA, transB);
        float[] ar = p.aBf16Rounded();
        float[] br = p.bBf16Rounded();
        int aRows = transA ? k : m;
        int aCols = transA ? m : k;
        int bRows = transB ? n : k;
        int bCols = transB ? k : n;
        try (Arena arena = Arena.ofConfined();
             Cuda.DeviceBuffer da = Cuda.allocate(2L * aRows * aCols);
             Cuda.DeviceBuffer db = Cuda.allocate(2L * bRows * bCols);
             Cuda.DeviceBuffer dc = Cuda.allocate(4L * m * n)) {
            da.copyFromHost(denseBf16(arena, p.a, p.aOff, p.lda, aRows, aCols), 0, 0, 2L * aRows * aCols);
            db.copyFromHost(denseBf16(arena, p.b, p.bOff, p.ldb, bRows, bCols), 0, 0, 2L * bRows * bCols);
            MemorySegment c = arena.allocate(4L * m * n);
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < n; j++) {
                    c.setAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT, (long) i * n + j, p.c[p.cOff + i * p.ldc + j]);
                }
            }
            dc.copyFromHost(c, 0, 0, 4L * m * n);
            g.gemmBf16Device(transA, transB, m, n, k, p.alpha, da.address(), aCols, db.address(), bCols, p.beta,
                    dc.address(), n);
            g.synchronize();
            dc.copyToHost(0, c, 0, 4L * m * n);
            double[] exp = p.expected(ar, br);
            double tol = 4e-5 * (Math.sqrt(k) + 1) * GemmCase.maxAbs(p.a) * GemmCase.maxAbs(p.b)
                    * Math.abs(p.alpha);
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < n; j++) {
                    float v = c.getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT, (long) i * n + j);
                    double t = tol + 1e-6 * Math.abs(p.beta * p.c[p.cOff + i * p.ldc + j]) + 1e-30;
                    if (!(Math.abs(v - exp[i * n + j]) <= t)) {
                        fail("cublasGemmEx bf16: C[" + i + ", " + j + "] = " + v + ", expected " + exp[i * n + j]
                                + " (" + p + ")");
                    }
                }
            }
        }
    }

    /** batch products of [m, k] x [k, n]^T (the expert layout), strides between them padded by 3 elements. */
    @Property(tries = 20)
    void stridedBatchedMatchesTwin(@ForAll @IntRange(min = 1, max = 64) int m, @ForAll @IntRange(min = 1, max = 64) int n,
                                   @ForAll @IntRange(min = 1, max = 64) int k, @ForAll @IntRange(min = 1, max = 6) int batch,
                                   @ForAll long seed) {
        CudaGemm g = gemm();
        Random rnd = new Random(seed);
        long sa = (long) m * k + 3;
        long sb = (long) n * k + 3;
        long sc = (long) m * n + 3;
        float[] a = KernelsSupport.gaussian(rnd, (int) (sa * batch), 1);
        float[] b = KernelsSupport.gaussian(rnd, (int) (sb * batch), 1);
        try (Arena arena = Arena.ofConfined();
             Cuda.DeviceBuffer da = Cuda.allocate(4L * a.length);
             Cuda.DeviceBuffer db = Cuda.allocate(4L * b.length);
             Cuda.DeviceBuffer dc = Cuda.allocate(4L * sc * batch)) {
            da.copyFromHost(KernelsSupport.floats(arena, a, 0), 0, 0, 4L * a.length);
            db.copyFromHost(KernelsSupport.floats(arena, b, 0), 0, 0, 4L * b.length);
            g.sgemmStridedBatchedDevice(false, true, m, n, k, 1f, da.address(), k, sa, db.address(), k, sb, 0f,
                    dc.address(), n, sc, batch);
            g.synchronize();
            MemorySegment c = arena.allocate(4L * sc * batch);
            dc.copyToHost(0, c, 0, 4L * sc * batch);
            float[] out = KernelsSupport.read(c, 0, (int) (sc * batch));
            for (int e = 0; e < batch; e++) {
                double[] exp = RefGemm.gemm(false, true, m, n, k, 1, a, (int) (e * sa), k, b, (int) (e * sb), k, 0,
                        new float[m * n], 0, n);
                for (int i = 0; i < m * n; i++) {
                    double got = out[(int) (e * sc) + i];
                    if (!(Math.abs(got - exp[i]) <= 1e-4 * (Math.sqrt(k) + 1) * 25)) {
                        fail("strided batch " + e + ": element " + i + " = " + got + ", expected " + exp[i]);
                    }
                }
            }
        }
    }

    /** The stored [rows, cols] window of v (row stride ld, from off) as dense bf16. */
    private static MemorySegment denseBf16(Arena arena, float[] v, int off, int ld, int rows, int cols) {
        MemorySegment s = arena.allocate(2L * rows * cols + 2, 2);
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                s.setAtIndex(java.lang.foreign.ValueLayout.JAVA_SHORT, (long) r * cols + c,
                        org.moe4j.simd.Bf16.fromFloat(v[off + r * ld + c]));
            }
        }
        return s;
    }
}
