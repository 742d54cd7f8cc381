package org.moe4j.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Locale;
import java.util.Random;
import org.moe4j.nativ.GemmBackends;
import org.moe4j.simd.Bf16Gemm;
import org.moe4j.simd.Convert;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.MixedGemm;
import org.moe4j.simd.WeightGemm;
import org.moe4j.simd.WorkerPool;

/**
 * Question: how much faster is a weight product with bf16 inputs ({@link MixedGemm}: float32 activations rounded to
 * bf16, bf16 weights, float32 accumulation) than the float32 GEMM, on the shapes of the bench config's training step
 * and of a prefill — and than what a BF16 model's prefill does today ({@link WeightGemm#bf16} for many rows:
 * dequantise W to float32, then the float32 GEMM)?
 *
 * <p>Per shape {@code out[M, N] = x[M, K] · W[N, K]ᵀ}: the float32 backend's sgemm, MixedGemm on the chosen bf16
 * backend (rounding of x included), and WeightGemm.bf16; GFLOP/s (2·M·N·K per call) and % of the FP32 FMA peak
 * measured in the same process. Each figure is the best of 5 rounds of at least 0.3 s.
 *
 * <p>Run: {@code ./moe4j bench-main Bf16GemmBench [--backend onednn|java]}.
 */
public final class Bf16GemmBench {
    private Bf16GemmBench() {
    }

    public static void main(String[] args) {
        String backend = "onednn";
        for (int i = 0; i < args.length; i++) if (args[i].equals("--backend")) backend = args[++i];
        WorkerPool pool = WorkerPool.common();
        double peak = StepBench.fmaPeak(pool);
        Gemm f32 = GemmBackends.select(backend, pool).gemm();
        Bf16Gemm bf16 = GemmBackends.bf16(f32, pool).gemm();
        System.out.printf(Locale.ROOT, "FP32 FMA peak, %d threads: %.1f GFLOP/s; float32 GEMM %s, bf16 GEMM %s%n",
                pool.threads(), peak, f32.name(), bf16.name());
        System.out.println("| shape | M x N x K | f32 sgemm GFLOP/s | mixed bf16 GFLOP/s | WeightGemm.bf16 (dequant) GFLOP/s | "
                + "bf16 / f32 | % of FP32 peak (bf16) |");
        System.out.println("|---|---|---:|---:|---:|---:|---:|");
        int[][] shapes = {{2048, 1024, 512}, {2048, 512, 512}, {128, 1024, 512}, {2048, 8192, 512}, {512, 2048, 2048}};
        String[] names = {"expert W1;W3, all rows", "attention q", "expert W1;W3, 128 rows", "LM head", "prefill 512 rows"};
        try (Arena arena = Arena.ofShared(); MixedGemm mixed = new MixedGemm(bf16, pool)) {
            for (int s = 0; s < shapes.length; s++) {
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                MemorySegment x = random(arena, (long) M * K, 1), w = random(arena, (long) N * K, 2);
                MemorySegment w16 = arena.allocate((long) N * K * 2, 64), out = arena.allocate((long) M * N * 4, 64);
                Convert.f32ToBf16(w, 0, w16, 0, (long) N * K);
                WeightGemm wg = new WeightGemm(pool, f32, K);
                double flop = 2.0 * M * N * K;
                double a = rate(flop, () -> f32.sgemm(false, true, M, N, K, 1f, x, 0, K, w, 0, K, 0f, out, 0, N));
                double b = rate(flop, () -> mixed.linear(M, N, K, x, 0, K, w16, 0, K, 0f, out, 0, N));
                double c = rate(flop, () -> wg.bf16(M, N, K, x, 0, K, w16, 0, K, 0f, out, 0, N));
                System.out.printf(Locale.ROOT, "| %s | %d x %d x %d | %.1f | %.1f | %.1f | %.2f | %.1f%% |%n", names[s], M,
                        N, K, a, b, c, b / a, 100 * b / peak);
            }
        }
        if (bf16 instanceof AutoCloseable ac) {
            try {
                ac.close();
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        }
    }

    private static MemorySegment random(Arena arena, long n, long seed) {
        MemorySegment s = arena.allocate(n * 4, 64);
        Random r = new Random(seed);
        for (long i = 0; i < n; i++) s.setAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT, i, (float) r.nextGaussian());
        return s;
    }

    /** GFLOP/s: best of 5 rounds of at least 0.3 s after a 0.5 s warm-up. */
    private static double rate(double flopPerCall, Runnable call) {
        long t0 = System.nanoTime();
        while (System.nanoTime() - t0 < 500_000_000L) call.run();
        double best = 0;
        for (int round = 0; round < 5; round++) {
            int calls = 0;
            long s = System.nanoTime();
            long e;
            do {
                call.run();
                calls++;
                e = System.nanoTime();
            } while (e - s < 300_000_000L);
            best = Math.max(best, calls * flopPerCall / ((e - s) * 1e-9) / 1e9);
        }
        return best;
    }
}
