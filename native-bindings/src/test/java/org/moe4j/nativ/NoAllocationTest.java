package org.moe4j.nativ;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.management.ManagementFactory;
import org.junit.jupiter.api.Test;
import org.moe4j.simd.DType;
import org.moe4j.simd.Gemm;

/**
 * The per-call paths allocate nothing on the Java heap once compiled: dnnl_sgemm, and a cached matmul primitive
 * (f32 and bf16) fed new data handles. Measured with the thread's allocated-bytes counter over 20,000 calls of a
 * tiny product after 60,000 warm-up calls (a bound of 2 B/call leaves room for a stray JIT-time object, not for
 * one per call, which would be >= 16 B).
 */
class NoAllocationTest {
    static long allocated() {
        return ((com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean()).getCurrentThreadAllocatedBytes();
    }

    interface Call {
        void run();
    }

    static double bytesPerCall(Call c) {
        for (int i = 0; i < 60_000; i++) {
            c.run();
        }
        long before = allocated();
        int n = 20_000;
        for (int i = 0; i < n; i++) {
            c.run();
        }
        return (double) (allocated() - before) / n;
    }

    @Test
    void sgemmAndCachedMatmulDoNotAllocate() {
        assertTrue(OneDnn.available(), OneDnn.reason());
        try (Arena arena = Arena.ofConfined(); OneDnnMatmul mm = new OneDnnMatmul(1)) {
            MemorySegment a = arena.allocate(4 * 64);
            MemorySegment b = arena.allocate(4 * 64);
            MemorySegment c = arena.allocate(4 * 64);
            Gemm g = new OneDnnGemm(1);
            double sg = bytesPerCall(() -> g.sgemm(false, true, 4, 4, 4, 1f, a, 0, 4, b, 0, 4, 0f, c, 0, 4));
            double mf = bytesPerCall(() -> mm.sgemm(false, true, 4, 4, 4, 0.5f, a, 0, 4, b, 0, 4, 1f, c, 0, 4));
            double mb = bytesPerCall(() -> mm.matmul(DType.BF16, false, true, 4, 4, 4, 1f, a, 0, 4, b, 0, 4, 0f, c, 0,
                    4));
            String msg = "B/call: dnnl_sgemm " + sg + ", matmul f32 " + mf + ", matmul bf16 " + mb;
            System.out.println(msg);
            assertTrue(sg < 2 && mf < 2 && mb < 2, msg);
        }
    }

    /**
     * The mixed-precision path of {@code --precision bf16}: float32 A rounded into the reused buffer, bf16 B in place,
     * on oneDNN's bf16 matmul with m = 7 and k = 12 (blocked into 4 + 2 + 1 rows and 8 + 4 columns, the second k
     * piece accumulating: six cached primitives) and on the Java fallback (widen, then JavaGemm).
     */
    @Test
    void mixedPrecisionGemmDoesNotAllocate() {
        assertTrue(OneDnn.available(), OneDnn.reason());
        try (Arena arena = Arena.ofConfined(); org.moe4j.simd.WorkerPool pool = new org.moe4j.simd.WorkerPool(1);
             org.moe4j.simd.JavaBf16Gemm java = new org.moe4j.simd.JavaBf16Gemm(new org.moe4j.simd.JavaGemm(pool), pool);
             org.moe4j.simd.MixedGemm onJava = new org.moe4j.simd.MixedGemm(java, pool)) {
            MemorySegment a = arena.allocate(4 * 7 * 12);
            MemorySegment b = arena.allocate(2 * 6 * 12);
            MemorySegment c = arena.allocate(4 * 7 * 6);
            double mj = bytesPerCall(() -> onJava.linear(7, 6, 12, a, 0, 12, b, 0, 12, 0f, c, 0, 6));
            double md = 0;
            if (OneDnn.bf16Native()) {
                try (OneDnnBf16Gemm dnnl = new OneDnnBf16Gemm(1);
                     org.moe4j.simd.MixedGemm onDnnl = new org.moe4j.simd.MixedGemm(dnnl, pool)) {
                    md = bytesPerCall(() -> onDnnl.linear(7, 6, 12, a, 0, 12, b, 0, 12, 0f, c, 0, 6));
                    assertTrue(dnnl.primitivesCreated() == 6, "primitives: " + dnnl.primitivesCreated());
                }
            }
            String msg = "B/call: mixed on java " + mj + ", mixed on oneDNN bf16 " + md;
            System.out.println(msg);
            assertTrue(mj < 2 && md < 2, msg);
        }
    }
}
