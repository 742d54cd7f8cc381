package org.moe4j.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Locale;
import java.util.Random;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.GemmGroups;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * Question: do the expert GEMMs of one MoE layer run faster as one grouped call (each expert's product whole on one
 * thread, {@link Gemm#sgemmGrouped}) than as one call per expert split over the threads (what MoeBlock does)?
 *
 * <p>Shapes: the bench config's MoE layer (N 2048 tokens, k 4, d 512, h 512) with E experts, the N k slots spread
 * over the experts by a seeded uniform random routing; per expert, the forward's [W1;W3] and W2 products and the
 * backward's four (dAct, dW2, dW13, dXe), as MoeBlock runs them. Each round times the whole set per-call, then
 * grouped (alternating, so host drift hits both alike); it prints GFLOP/s of each, the grouped/per-call ratio per
 * round and the median ratio, with the FMA peak of the same process.
 *
 * <p>Run: {@code ./moe4j bench-main ExpertGemmBench [--experts 16,32,64] [--rounds 5] [--tokens 2048]}.
 */
public final class ExpertGemmBench {
    private ExpertGemmBench() {
    }

    public static void main(String[] args) {
        int[] experts = {16, 32, 64};
        int rounds = 5, N = 2048, k = 4, d = 512, h = 512;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--experts" -> experts = StepBench.ints(args[++i]);
                case "--rounds" -> rounds = Integer.parseInt(args[++i]);
                case "--tokens" -> N = Integer.parseInt(args[++i]);
                default -> throw new IllegalArgumentException("ExpertGemmBench: unknown option " + args[i]);
            }
        }
        WorkerPool pool = WorkerPool.common();
        double peak = StepBench.fmaPeak(pool);
        System.out.printf(Locale.ROOT, "FP32 FMA peak, %d threads: %.1f GFLOP/s (JDK %s)%n", pool.threads(), peak,
                Runtime.version());
        System.out.println("| E | rows/expert | per-call GFLOP/s | grouped GFLOP/s | per-call % peak | grouped % peak "
                + "| grouped / per-call (median of rounds) |");
        System.out.println("|---:|---:|---:|---:|---:|---:|---:|");
        JavaGemm gemm = new JavaGemm(pool);
        for (int E : experts) run(gemm, E, N, k, d, h, rounds, peak);
    }

    static void run(JavaGemm gemm, int E, int N, int k, int d, int h, int rounds, double peak) {
        int S = N * k;
        int[] off = new int[E + 1];
        Random rnd = new Random(E);
        for (int s = 0; s < S; s++) off[rnd.nextInt(E) + 1]++;
        for (int e = 0; e < E; e++) off[e + 1] += off[e];
        try (Arena arena = Arena.ofShared()) {
            MemorySegment w13 = fill(arena, (long) E * 2 * h * d, rnd), w2 = fill(arena, (long) E * d * h, rnd);
            MemorySegment g13 = fill(arena, (long) E * 2 * h * d, rnd), g2 = fill(arena, (long) E * d * h, rnd);
            MemorySegment xe = fill(arena, (long) S * d, rnd), a13 = fill(arena, (long) S * 2 * h, rnd);
            MemorySegment act = fill(arena, (long) S * h, rnd), ye = fill(arena, (long) S * d, rnd);
            MemorySegment dye = fill(arena, (long) S * d, rnd), dact = fill(arena, (long) S * h, rnd);
            MemorySegment dxe = fill(arena, (long) S * d, rnd);
            GemmGroups[] set = new GemmGroups[6];
            for (int i = 0; i < 6; i++) set[i] = new GemmGroups(E);
            set[0].clear(false, true, 1f, xe, d, w13, d, 0f, a13, 2 * h);       // a13 = xe W13^T
            set[1].clear(false, true, 1f, act, h, w2, h, 0f, ye, d);           // ye = act W2^T
            set[2].clear(false, false, 1f, dye, d, w2, h, 0f, dact, h);        // dact = dye W2
            set[3].clear(true, false, 1f, dye, d, act, h, 1f, g2, h);          // dW2 += dye^T act
            set[4].clear(true, false, 1f, a13, 2 * h, xe, d, 1f, g13, d);      // dW13 += da13^T xe
            set[5].clear(false, false, 1f, a13, 2 * h, w13, d, 0f, dxe, d);    // dxe = da13 W13
            for (int e = 0; e < E; e++) {
                int s = off[e], n = off[e + 1] - s;
                long w13e = (long) e * 2 * h * d, w2e = (long) e * d * h;
                set[0].add(n, 2 * h, d, (long) s * d, w13e, (long) s * 2 * h);
                set[1].add(n, d, h, (long) s * h, w2e, (long) s * d);
                set[2].add(n, h, d, (long) s * d, w2e, (long) s * h);
                set[3].add(d, h, n, (long) s * d, (long) s * h, w2e);
                set[4].add(2 * h, d, n, (long) s * 2 * h, (long) s * d, w13e);
                set[5].add(n, d, 2 * h, (long) s * 2 * h, w13e, (long) s * d);
            }
            double flop = 3.0 * 2 * S * (3.0 * d * h); // forward 2 S 3dh, backward twice that
            Runnable perCall = () -> {
                for (GemmGroups g : set) for (int i = 0; i < g.count(); i++) g.runOne(gemm, i);
            };
            Runnable grouped = () -> {
                for (GemmGroups g : set) gemm.sgemmGrouped(g);
            };
            long until = System.nanoTime() + 2_000_000_000L;
            while (System.nanoTime() < until) { // warm-up: both paths compiled
                perCall.run();
                grouped.run();
            }
            double[] ratio = new double[rounds];
            double bestA = 0, bestB = 0;
            for (int r = 0; r < rounds; r++) {
                double a = time(perCall), b = time(grouped);
                bestA = Math.max(bestA, flop / a / 1e9);
                bestB = Math.max(bestB, flop / b / 1e9);
                ratio[r] = a / b;
            }
            java.util.Arrays.sort(ratio);
            System.out.printf(Locale.ROOT, "| %d | %d | %.1f | %.1f | %.0f%% | %.0f%% | %.2fx (%.2f-%.2f) |%n", E, S / E,
                    bestA, bestB, 100 * bestA / peak, 100 * bestB / peak, ratio[rounds / 2], ratio[0],
                    ratio[rounds - 1]);
        }
    }

    private static double time(Runnable r) {
        long t0 = System.nanoTime();
        r.run();
        return (System.nanoTime() - t0) * 1e-9;
    }

    private static MemorySegment fill(Arena arena, long n, Random rnd) {
        MemorySegment s = arena.allocate(n * 4, 64);
        for (long i = 0; i < n; i++) s.setAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT, i, rnd.nextFloat() - 0.5f);
        return s;
    }
}
