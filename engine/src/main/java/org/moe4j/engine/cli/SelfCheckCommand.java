package org.moe4j.engine.cli;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.MemoryEstimate;
import org.moe4j.nativ.GemmBackends;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** Checks the chosen GEMM backend against a plain double-precision product and prints its speed. */
@Command(name = "selfcheck", mixinStandardHelpOptions = true,
        description = "Checks the GEMM backend against a float64 product and prints GFLOP/s.")
public final class SelfCheckCommand implements Callable<Integer> {
    @Option(names = "--size", description = "square GEMM size (default ${DEFAULT-VALUE})")
    int size = 1024;

    @Option(names = "--seconds", description = "timing budget (default ${DEFAULT-VALUE})")
    double seconds = 3;

    @Option(names = "--gemm", description = "GEMM backend: auto, java, onednn, onednn_matmul or cuda "
            + "(default: -Dmoe4j.gemm, $MOE4J_GEMM, else auto)")
    String backend;

    @Override
    public Integer call() {
        if (size < 1) throw new Moe4jException("--size " + size + " must be >= 1");
        if (!(seconds >= 0) || Double.isInfinite(seconds))
            throw new Moe4jException("--seconds " + seconds + " must be a finite number >= 0");
        // three n x n float32 matrices, checked before the first is allocated
        MemoryEstimate.require("--size " + size + " (three " + size + " x " + size + " float32 matrices)",
                3.0 * size * size * Float.BYTES);
        WorkerPool pool = WorkerPool.common();
        GemmBackends.Choice choice = backend == null ? GemmBackends.fromEnvironment(pool)
                : GemmBackends.select(backend, pool);
        Gemm gemm = choice.gemm();
        System.out.println("GEMM backend: " + gemm.name() + " (" + choice.reason() + ")");
        System.out.printf("moe4j self-check: JDK %s, %d threads, GEMM '%s'%n", Runtime.version(), pool.threads(), gemm.name());
        int n = size;
        try (Arena arena = Arena.ofShared()) {
            Tensor a = Tensor.allocate(arena, n, n);
            Tensor b = Tensor.allocate(arena, n, n);
            Tensor c = Tensor.allocate(arena, n, n);
            SplittableRandom rnd = new SplittableRandom(42);
            for (long i = 0; i < a.numel(); i++) {
                a.set(i, (float) rnd.nextDouble(-1, 1));
                b.set(i, (float) rnd.nextDouble(-1, 1));
            }
            gemm.sgemm(false, false, 1f, a, b, 0f, c);
            double maxErr = 0;
            for (int s = 0; s < 64; s++) {
                int i = rnd.nextInt(n), j = rnd.nextInt(n);
                double ref = 0;
                for (int p = 0; p < n; p++) {
                    ref += (double) a.get(i, p) * b.get(p, j);
                }
                maxErr = Math.max(maxErr, Math.abs(ref - c.get(i, j)) / Math.sqrt(n));
            }
            boolean ok = maxErr < 1e-5;
            System.out.printf("correctness: max |error|/sqrt(K) over 64 sampled entries = %.2e (%s)%n", maxErr, ok ? "ok" : "FAIL");
            long reps = 0;
            long t0 = System.nanoTime();
            long budget = (long) (seconds * 1e9);
            while (System.nanoTime() - t0 < budget) {
                gemm.sgemm(false, false, 1f, a, b, 0f, c);
                reps++;
            }
            double secs = (System.nanoTime() - t0) / 1e9;
            double gflops = 2.0 * n * n * n * reps / secs / 1e9;
            System.out.printf("sgemm %dx%dx%d: %.1f GFLOP/s (%d runs in %.2f s)%n", n, n, n, gflops, reps, secs);
            return ok ? 0 : 1;
        }
    }
}
