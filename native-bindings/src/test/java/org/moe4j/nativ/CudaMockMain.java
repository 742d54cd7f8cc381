package org.moe4j.nativ;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import org.moe4j.simd.Bf16;

/**
 * Run by CudaMockTest in a fresh JVM whose -Dmoe4j.cuda.libdir holds the CPU stand-in libraries built from
 * src/test/c/fakecuda.c: drives CudaGemm's host path (row-major to column-major operand swap, dense packing with
 * 2-D copies, C's row padding left alone), the bf16 GemmEx and strided-batched device paths against a plain
 * float64 row-major product. Prints "CUDA-MOCK OK" or throws.
 */
public final class CudaMockMain {
    private CudaMockMain() {
    }

    /** Row-major reference: op(A) [m, k] from A stored with stride lda (transposed: [k, m]), likewise B. */
    static double ref(boolean ta, boolean tb, float[] a, int aOff, int lda, float[] b, int bOff, int ldb, int i, int j,
                      int k) {
        double s = 0;
        for (int p = 0; p < k; p++) {
            double av = ta ? a[aOff + p * lda + i] : a[aOff + i * lda + p];
            double bv = tb ? b[bOff + j * ldb + p] : b[bOff + p * ldb + j];
            s += av * bv;
        }
        return s;
    }

    static float[] gauss(Random r, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) r.nextGaussian();
        }
        return v;
    }

    public static void main(String[] args) {
        if (!Cuda.available()) {
            throw new IllegalStateException("stand-in CUDA not loaded: " + Cuda.reason());
        }
        System.out.println("reason=" + Cuda.reason());
        Random r = new Random(7);
        try (CudaGemm g = new CudaGemm()) {
            for (int t = 0; t < 300; t++) {
                int m = r.nextInt(40);
                int n = r.nextInt(40);
                int k = r.nextInt(40);
                boolean ta = r.nextBoolean();
                boolean tb = r.nextBoolean();
                int lda = (ta ? m : k) + r.nextInt(3) + 1;
                int ldb = (tb ? k : n) + r.nextInt(3) + 1;
                int ldc = n + r.nextInt(3) + 1;
                int aOff = r.nextInt(5);
                int bOff = r.nextInt(5);
                int cOff = r.nextInt(5);
                float alpha = r.nextBoolean() ? 1f : (float) r.nextGaussian();
                float beta = switch (r.nextInt(3)) {
                    case 0 -> 0f;
                    case 1 -> 1f;
                    default -> (float) r.nextGaussian();
                };
                float[] a = gauss(r, aOff + lda * (ta ? k : m) + 1);
                float[] b = gauss(r, bOff + ldb * (tb ? n : k) + 1);
                float[] c = gauss(r, cOff + ldc * m + 1);
                try (Arena arena = Arena.ofConfined()) {
                    MemorySegment as = arena.allocateFrom(ValueLayout.JAVA_FLOAT, a);
                    MemorySegment bs = arena.allocateFrom(ValueLayout.JAVA_FLOAT, b);
                    MemorySegment cs = arena.allocateFrom(ValueLayout.JAVA_FLOAT, c);
                    g.sgemm(ta, tb, m, n, k, alpha, as, aOff, lda, bs, bOff, ldb, beta, cs, cOff, ldc);
                    float[] out = cs.toArray(ValueLayout.JAVA_FLOAT);
                    for (int x = 0; x < c.length; x++) {
                        int rel = x - cOff;
                        int i = rel < 0 ? -1 : rel / ldc;
                        int j = rel < 0 ? -1 : rel % ldc;
                        if (rel < 0 || i >= m || j >= n) {
                            if (Float.floatToRawIntBits(out[x]) != Float.floatToRawIntBits(c[x])) {
                                throw new AssertionError("sgemm wrote outside C's window at " + x + " (problem " + t
                                        + ")");
                            }
                            continue;
                        }
                        double e = alpha * ref(ta, tb, a, aOff, lda, b, bOff, ldb, i, j, k)
                                + (beta == 0 ? 0 : beta * (double) c[x]);
                        if (Math.abs(out[x] - e) > 1e-4 * (1 + Math.abs(e))) {
                            throw new AssertionError("sgemm C[" + i + ", " + j + "] = " + out[x] + ", expected " + e
                                    + " (m " + m + " n " + n + " k " + k + " ta " + ta + " tb " + tb + ")");
                        }
                    }
                }
            }
            bf16AndBatched(g, r);
        }
        System.out.println("CUDA-MOCK OK");
    }

    static void bf16AndBatched(CudaGemm g, Random r) {
        for (int t = 0; t < 50; t++) {
            int m = 1 + r.nextInt(20);
            int n = 1 + r.nextInt(20);
            int k = 1 + r.nextInt(20);
            boolean ta = r.nextBoolean();
            boolean tb = r.nextBoolean();
            int lda = ta ? m : k;
            int ldb = tb ? k : n;
            float[] a = gauss(r, m * k);
            float[] b = gauss(r, k * n);
            for (int i = 0; i < a.length; i++) {
                a[i] = Bf16.toFloat(Bf16.fromFloat(a[i]));
            }
            for (int i = 0; i < b.length; i++) {
                b[i] = Bf16.toFloat(Bf16.fromFloat(b[i]));
            }
            try (Arena arena = Arena.ofConfined();
                 Cuda.DeviceBuffer da = Cuda.allocate(2L * a.length);
                 Cuda.DeviceBuffer db = Cuda.allocate(2L * b.length);
                 Cuda.DeviceBuffer dc = Cuda.allocate(4L * m * n)) {
                MemorySegment ha = arena.allocate(2L * a.length);
                MemorySegment hb = arena.allocate(2L * b.length);
                for (int i = 0; i < a.length; i++) {
                    ha.setAtIndex(ValueLayout.JAVA_SHORT, i, Bf16.fromFloat(a[i]));
                }
                for (int i = 0; i < b.length; i++) {
                    hb.setAtIndex(ValueLayout.JAVA_SHORT, i, Bf16.fromFloat(b[i]));
                }
                da.copyFromHost(ha, 0, 0, ha.byteSize());
                db.copyFromHost(hb, 0, 0, hb.byteSize());
                g.gemmBf16Device(ta, tb, m, n, k, 1.5f, da.address(), lda, db.address(), ldb, 0f, dc.address(), n);
                g.synchronize();
                MemorySegment hc = arena.allocate(4L * m * n);
                dc.copyToHost(0, hc, 0, hc.byteSize());
                for (int i = 0; i < m; i++) {
                    for (int j = 0; j < n; j++) {
                        double e = 1.5 * ref(ta, tb, a, 0, lda, b, 0, ldb, i, j, k);
                        float v = hc.getAtIndex(ValueLayout.JAVA_FLOAT, (long) i * n + j);
                        if (Math.abs(v - e) > 1e-4 * (1 + Math.abs(e))) {
                            throw new AssertionError("gemmEx bf16 C[" + i + ", " + j + "] = " + v + ", expected " + e);
                        }
                    }
                }
            }
        }
        // strided batch: 3 experts, x [m, k] W^T [k, n] with 2 elements of slack between them
        int m = 5;
        int n = 7;
        int k = 6;
        int batch = 3;
        long sa = m * k + 2;
        long sb = n * k + 2;
        long sc = m * n + 2;
        float[] a = gauss(r, (int) (sa * batch));
        float[] b = gauss(r, (int) (sb * batch));
        try (Arena arena = Arena.ofConfined();
             Cuda.DeviceBuffer da = Cuda.allocate(4L * a.length);
             Cuda.DeviceBuffer db = Cuda.allocate(4L * b.length);
             Cuda.DeviceBuffer dc = Cuda.allocate(4L * sc * batch)) {
            da.copyFromHost(arena.allocateFrom(ValueLayout.JAVA_FLOAT, a), 0, 0, 4L * a.length);
            db.copyFromHost(arena.allocateFrom(ValueLayout.JAVA_FLOAT, b), 0, 0, 4L * b.length);
            g.sgemmStridedBatchedDevice(false, true, m, n, k, 1f, da.address(), k, sa, db.address(), k, sb, 0f,
                    dc.address(), n, sc, batch);
            g.synchronize();
            MemorySegment hc = arena.allocate(4L * sc * batch);
            dc.copyToHost(0, hc, 0, hc.byteSize());
            for (int e = 0; e < batch; e++) {
                for (int i = 0; i < m; i++) {
                    for (int j = 0; j < n; j++) {
                        double x = ref(false, true, a, (int) (e * sa), k, b, (int) (e * sb), k, i, j, k);
                        float v = hc.getAtIndex(ValueLayout.JAVA_FLOAT, e * sc + (long) i * n + j);
                        if (Math.abs(v - x) > 1e-4 * (1 + Math.abs(x))) {
                            throw new AssertionError("strided batch " + e + " C[" + i + ", " + j + "] = " + v
                                    + ", expected " + x);
                        }
                    }
                }
            }
        }
    }
}
