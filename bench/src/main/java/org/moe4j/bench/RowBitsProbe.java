package org.moe4j.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.IntConsumer;
import org.moe4j.nativ.OneDnn;
import org.moe4j.nativ.OneDnnBf16Gemm;
import org.moe4j.nativ.OneDnnGemm;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.MixedGemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WeightGemm;
import org.moe4j.simd.WorkerPool;

/**
 * Question: does a GEMM backend give a row of {@code x · Wᵀ} the same bits whatever the number of rows M it is
 * computed with? (If not, a sequence's logits depend on what else is in its batch.)
 *
 * <p>For each backend and weight shape [N, K] of the engine's products, row 0 of the product is computed with
 * M = 1, 2, 3 ... 1024 rows (the same first row, other rows random) and compared bit for bit with the M = 1 result;
 * the line lists the M whose row 0 differs and in how many of its N elements. Backends: the Java GEMM on 2 threads
 * and on one (its per-expert lane), oneDNN's sgemm on 2 threads and on one, oneDNN's bf16 matmul (activations
 * rounded to bf16; with native bf16 only), and {@link WeightGemm} with {@code streamAllRows} (the decode path), which
 * must list nothing.
 *
 * <p>Result (2026-12-07, Sapphire Rapids VM, oneDNN 3.13): every GEMM backend has M regimes — the Java GEMM's row
 * changes between M = 32 and 33, oneDNN's sgemm between M = 1, 2..12 and 16+ (on one thread as on two), its bf16
 * matmul between 1 and 2 — and the streaming kernel has none. Hence the Generator's rules: one prefill forward per prompt, and every product of a
 * decode step on the streaming kernel.
 *
 * <p>Run: {@code ./moe4j bench-main RowBitsProbe}.
 */
public final class RowBitsProbe {
    private RowBitsProbe() {
    }

    public static void main(String[] args) {
        int[][] shapes = {{1024, 512}, {512, 512}, {8192, 512}, {512, 256}, {96, 40}};
        int[] ms = {1, 2, 3, 5, 8, 9, 12, 16, 17, 24, 25, 32, 33, 48, 64, 65, 100, 250, 513, 1024};
        int maxM = ms[ms.length - 1];
        try (WorkerPool pool = new WorkerPool(2); Arena arena = Arena.ofShared()) {
            MixedGemm mixed = OneDnn.available() && OneDnn.bf16Native() ? new MixedGemm(new OneDnnBf16Gemm(2), pool) : null;
            for (int[] sh : shapes) {
                int n = sh[0], k = sh[1];
                MemorySegment x = arena.allocate(4L * maxM * k, 64), w = arena.allocate(4L * n * k, 64);
                MemorySegment w16 = arena.allocate(2L * n * k, 64), out = arena.allocate(4L * maxM * n, 64);
                SplittableRandom r = new SplittableRandom(n * 31L + k);
                for (long i = 0; i < (long) maxM * k; i++) x.setAtIndex(Tensor.FLOAT, i, (float) r.nextGaussian());
                for (long i = 0; i < (long) n * k; i++) w.setAtIndex(Tensor.FLOAT, i, (float) r.nextGaussian());
                WeightGemm.toBf16(w, 0, w16, 0, (long) n * k);
                WeightGemm stream = new WeightGemm(pool, new JavaGemm(pool), k);
                stream.streamAllRows(true);
                Map<String, IntConsumer> backends = new LinkedHashMap<>();
                backends.put("java, 2 threads", sgemm(new JavaGemm(pool), x, w, out, n, k));
                backends.put("java, 1 thread", sgemm(new JavaGemm(pool).forOneThread(), x, w, out, n, k));
                if (OneDnn.available()) {
                    backends.put("onednn sgemm, 2 threads", sgemm(new OneDnnGemm(2), x, w, out, n, k));
                    backends.put("onednn sgemm, 1 thread", sgemm(new OneDnnGemm(2).forOneThread(), x, w, out, n, k));
                }
                if (mixed != null) backends.put("onednn bf16 matmul", m -> mixed.linear(m, n, k, x, 0, k, w16, 0, k, 0f, out, 0, n));
                backends.put("WeightGemm.streamAllRows", m -> stream.f32(m, n, k, x, 0, k, w, 0, k, 0f, out, 0, n));
                for (Map.Entry<String, IntConsumer> b : backends.entrySet()) {
                    float[] ref = null;
                    StringBuilder sb = new StringBuilder();
                    for (int m : ms) {
                        b.getValue().accept(m);
                        float[] row = new float[n];
                        MemorySegment.copy(out, Tensor.FLOAT, 0, row, 0, n);
                        if (ref == null) ref = row;
                        int diff = 0;
                        for (int j = 0; j < n; j++)
                            if (Float.floatToRawIntBits(row[j]) != Float.floatToRawIntBits(ref[j])) diff++;
                        if (diff > 0) sb.append(String.format(Locale.ROOT, " M %d: %d;", m, diff));
                    }
                    System.out.printf(Locale.ROOT, "N %d K %d, %s: %s%n", n, k, b.getKey(),
                            sb.length() == 0 ? "row 0 the same for every M" : "row 0 differs from M = 1 at" + sb);
                }
            }
            if (!OneDnn.available()) System.out.println("oneDNN: not available (" + OneDnn.reason() + ")");
            if (mixed != null) mixed.close();
        }
    }

    private static IntConsumer sgemm(Gemm g, MemorySegment x, MemorySegment w, MemorySegment out, int n, int k) {
        return m -> g.sgemm(false, true, m, n, k, 1f, x, 0, k, w, 0, k, 0f, out, 0, n);
    }
}
