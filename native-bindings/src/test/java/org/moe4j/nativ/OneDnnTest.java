package org.moe4j.nativ;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.moe4j.simd.Convert;
import org.moe4j.simd.DType;

/**
 * oneDNN from the org.bytedeco:dnnl jar on this build's class path: it loads, and small examples of each entry point
 * give the products a triple loop gives. (Random shapes against the float64 twin are in property-tests.)
 */
class OneDnnTest {
    @Test
    void loadsFromTheJar() {
        assertTrue(OneDnn.available(), OneDnn.reason());
        assertTrue(OneDnn.version().startsWith("3."), OneDnn.version());
        System.out.println("oneDNN: " + OneDnn.reason() + ", bf16 native: " + OneDnn.bf16Native());
    }

    /** The GEMM objects give oneDNN their thread count on each calling thread (an OpenMP per-thread setting). */
    @Test
    void threadCountAppliesPerCallingThread() throws Exception {
        try (Arena arena = Arena.ofShared()) {
            MemorySegment s = arena.allocate(64);
            for (int threads : new int[] {1, 3}) {
                int[] seen = new int[1];
                Thread t = new Thread(() -> {
                    new OneDnnGemm(threads).sgemm(false, false, 2, 2, 2, 1f, s, 0, 2, s, 0, 2, 0f, s, 8, 2);
                    seen[0] = OneDnn.maxThreadsForCallingThread();
                });
                t.start();
                t.join();
                assertEquals(threads, seen[0]);
            }
        }
    }

    static float[] naive(boolean ta, boolean tb, int m, int n, int k, float[] a, int lda, float[] b, int ldb) {
        float[] c = new float[m * n];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int p = 0; p < k; p++) {
                    s += (double) (ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
                }
                c[i * n + j] = (float) s;
            }
        }
        return c;
    }

    static float[] random(Random r, int len) {
        float[] v = new float[len];
        for (int i = 0; i < len; i++) {
            v[i] = (float) r.nextGaussian();
        }
        return v;
    }

    @Test
    void sgemmAllTransposes() {
        Random r = new Random(1);
        int m = 7;
        int n = 5;
        int k = 9;
        OneDnnGemm g = new OneDnnGemm(2);
        for (int t = 0; t < 4; t++) {
            boolean ta = (t & 1) != 0;
            boolean tb = (t & 2) != 0;
            float[] a = random(r, m * k);
            float[] b = random(r, k * n);
            int lda = ta ? m : k;
            int ldb = tb ? k : n;
            float[] exp = naive(ta, tb, m, n, k, a, lda, b, ldb);
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment as = arena.allocateFrom(ValueLayout.JAVA_FLOAT, a);
                MemorySegment bs = arena.allocateFrom(ValueLayout.JAVA_FLOAT, b);
                MemorySegment cs = arena.allocate(4L * m * n);
                g.sgemm(ta, tb, m, n, k, 1f, as, 0, lda, bs, 0, ldb, 0f, cs, 0, n);
                float[] got = cs.toArray(ValueLayout.JAVA_FLOAT);
                for (int i = 0; i < exp.length; i++) {
                    assertEquals(exp[i], got[i], 1e-4f, "sgemm " + (ta ? "T" : "N") + (tb ? "T" : "N") + " at " + i);
                }
            }
        }
    }

    @Test
    void matmulF32AndBf16ReusePrimitives() {
        Random r = new Random(2);
        int m = 6;
        int n = 11;
        int k = 13;
        try (OneDnnMatmul mm = new OneDnnMatmul(2); Arena arena = Arena.ofConfined()) {
            for (int rep = 0; rep < 3; rep++) {
                float[] a = random(r, m * k);
                float[] b = random(r, n * k);
                float[] exp = naive(false, true, m, n, k, a, k, b, k);
                MemorySegment as = arena.allocateFrom(ValueLayout.JAVA_FLOAT, a);
                MemorySegment bs = arena.allocateFrom(ValueLayout.JAVA_FLOAT, b);
                MemorySegment cs = arena.allocate(4L * m * n);
                mm.sgemm(false, true, m, n, k, 1f, as, 0, k, bs, 0, k, 0f, cs, 0, n);
                float[] got = cs.toArray(ValueLayout.JAVA_FLOAT);
                for (int i = 0; i < exp.length; i++) {
                    assertEquals(exp[i], got[i], 1e-4f, "matmul f32 at " + i);
                }
                MemorySegment ab = arena.allocate(2L * m * k);
                MemorySegment bb = arena.allocate(2L * n * k);
                Convert.f32ToBf16(as, 0, ab, 0, (long) m * k);
                Convert.f32ToBf16(bs, 0, bb, 0, (long) n * k);
                mm.matmul(DType.BF16, false, true, m, n, k, 1f, ab, 0, k, bb, 0, k, 0f, cs, 0, n);
                got = cs.toArray(ValueLayout.JAVA_FLOAT);
                for (int i = 0; i < exp.length; i++) {
                    assertEquals(exp[i], got[i], 0.05f * Math.sqrt(k), "matmul bf16 at " + i);
                }
            }
            assertEquals(2, mm.primitivesCreated(), "one f32 and one bf16 primitive, reused");
        }
    }
}
