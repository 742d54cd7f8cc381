package org.moe4j.bench;

import java.lang.management.ManagementFactory;
import java.util.Locale;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.Precision;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.SyntheticCorpus;
import org.moe4j.simd.Bf16Gemm;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.WorkerPool;

/**
 * One whole training step (forward + backward + AdamW) and one forward pass (prefill) of the engine issue's two
 * configs, B 8 x T 256 on the synthetic source, side by side with the FP32 FMA peak measured in the same process:
 * tokens/s, achieved model GFLOP/s (matmul FLOPs counted analytically: forward 2·params-touched per token plus
 * causal attention, training 3x forward), % of peak, and heap bytes allocated per step after warm-up (all threads,
 * from the JVM's per-thread allocation counters). {@code --precision fp32,bf16} runs each backend in both
 * precisions side by side (BF16: the mixed-precision step of {@code train --precision bf16}; its % of peak is still
 * against the FP32 FMA peak, so BF16 can exceed 100% where the CPU's bf16 dot products run faster than FP32 FMA).
 *
 * <p>Run: {@code ./moe4j build && java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED
 * -cp bench/target/benchmarks.jar org.moe4j.bench.StepBench [small|bench ...] [--steps N] [--warmup N]
 * [--backends java,onednn] [--precision fp32,bf16]} (or {@code ./moe4j bench-main StepBench ...}). Compare with
 * {@code bench/torch_moe_step.py} through {@code bench/compare-torch.sh}, which runs both in one script.
 */
public final class StepBench {
    private StepBench() {
    }

    static int WARMUP = 8;

    public static void main(String[] args) {
        int steps = 5;
        String[] backends = {"java"};
        String[] precisions = {"fp32"};
        java.util.List<String> configs = new java.util.ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--steps")) steps = Integer.parseInt(args[++i]);
            else if (args[i].equals("--backends")) backends = args[++i].split(",");
            else if (args[i].equals("--warmup")) WARMUP = Integer.parseInt(args[++i]);
            else if (args[i].equals("--precision")) precisions = args[++i].split(",");
            else configs.add(args[i]);
        }
        if (configs.isEmpty()) configs = java.util.List.of("small", "bench");
        WorkerPool pool = WorkerPool.common();
        double peak = fmaPeak(pool);
        System.out.printf(Locale.ROOT, "FP32 FMA peak, %d threads: %.1f GFLOP/s (JDK %s)%n", pool.threads(), peak,
                Runtime.version());
        Gemm[] gemms = new Gemm[backends.length];
        for (int i = 0; i < backends.length; i++) {
            var choice = org.moe4j.nativ.GemmBackends.select(backends[i], pool);
            gemms[i] = choice.gemm();
            System.out.println("backend " + backends[i] + ": " + choice.gemm().name() + " (" + choice.reason() + ")");
        }
        Bf16Gemm[] bf16 = new Bf16Gemm[backends.length];
        for (String p : precisions) {
            if (Precision.parse(p, "--precision") != Precision.BF16) continue;
            for (int i = 0; i < backends.length; i++) {
                var choice = org.moe4j.nativ.GemmBackends.bf16(gemms[i], pool);
                bf16[i] = choice.gemm();
                System.out.println("bf16 with " + backends[i] + ": " + choice.gemm().name() + " (" + choice.reason() + ")");
            }
        }
        System.out.println("| config | GEMM | precision | phase | tokens/s | ms/step | model GFLOP/s | % of FP32 peak | heap B/step |");
        System.out.println("|---|---|---|---|---:|---:|---:|---:|---:|");
        for (String name : configs) {
            ModelConfig c = name.equals("bench") ? ModelConfig.bench() : ModelConfig.small();
            for (int i = 0; i < gemms.length; i++)
                for (String p : precisions) {
                    boolean b16 = Precision.parse(p, "--precision") == Precision.BF16;
                    run(name, c, 8, 256, steps, pool, gemms[i], b16 ? bf16[i] : null, peak);
                }
        }
    }

    /** Forward matmul FLOPs per token of a sequence of T tokens (attention over T/2 keys on average). */
    static double forwardFlopsPerToken(ModelConfig c, int T) {
        int d = c.d(), qw = c.heads() * c.headSize(), kw = c.kvHeads() * c.headSize();
        double attnProj = 2.0 * d * (qw + 2 * kw) + 2.0 * qw * d;
        double attn = 2.0 * 2 * qw * (T + 1) / 2.0;
        double router = 2.0 * d * c.experts();
        double experts = (double) c.k() * 6.0 * d * c.expertHidden();
        double head = 2.0 * d * c.vocab();
        return c.layers() * (attnProj + attn + router + experts) + head;
    }

    static void run(String name, ModelConfig c, int B, int T, int steps, WorkerPool pool, Gemm gemm, Bf16Gemm bf16,
                    double peak) {
        c = c.withLoss(new org.moe4j.engine.config.LossWeights(c.loss().lb(), c.loss().routerZ(), 0.0, 0.0));
        int[] tokens = new int[B * T];
        SyntheticCorpus src = new SyntheticCorpus(c.vocab(), c.eosId(), 4, 4, 1);
        try (MoeModel m = new MoeModel(c).initRandom(1);
             MoeTransformer tr = new MoeTransformer(m, B * T, B, c.maxRoutedK(), gemm, bf16, pool);
             AdamWOptimizer opt = new AdamWOptimizer(m, pool)) {
            src.next(tokens, B, T);
            tr.setBatch(tokens, B, T);
            Runnable train = () -> {
                m.zeroGrads();
                tr.forward();
                tr.backward();
                opt.step(1e-4, 1.0, 1);
                tr.weightsChanged(); // BF16: the next forward re-rounds its weight copy, as in training
            };
            Runnable fwd = tr::forward;
            double flopTok = forwardFlopsPerToken(c, T);
            String label = name + " | " + gemm.name() + " | " + tr.precision().label();
            report(label, "train step", train, steps, B * T, 3 * flopTok, peak);
            report(label, "forward", fwd, steps, B * T, flopTok, peak);
        }
    }

    static void report(String name, String phase, Runnable step, int steps, int tokens, double flopPerToken, double peak) {
        for (int i = 0; i < WARMUP; i++) step.run(); // warm-up (JIT compiles the kernels, first touch of buffers)
        long probe0 = allocatedBytes();
        long bytes0 = allocatedBytes();
        long probe = bytes0 - probe0; // what one reading of the counters allocates itself
        long t0 = System.nanoTime();
        for (int i = 0; i < steps; i++) step.run();
        long ns = System.nanoTime() - t0;
        long bytes = Math.max(0, allocatedBytes() - bytes0 - probe);
        double sec = ns * 1e-9 / steps;
        double gflops = tokens * flopPerToken / sec / 1e9;
        System.out.printf(Locale.ROOT, "| %s | %s | %,.0f | %.1f | %.1f | %.1f%% | %,d |%n", name, phase, tokens / sec,
                sec * 1e3, gflops, 100 * gflops / peak, bytes / steps);
    }

    private static long[] engineThreads;

    /**
     * Bytes allocated on the heap so far by the threads that run the step: this one and the worker pool's
     * (JVM service threads — JFR, cleaners, JMX — are not the engine's and are left out).
     */
    static long allocatedBytes() {
        var mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        if (engineThreads == null) {
            engineThreads = Thread.getAllStackTraces().keySet().stream()
                    .filter(t -> t == Thread.currentThread() || t.getName().startsWith("moe4j-worker"))
                    .mapToLong(Thread::threadId).toArray();
        }
        long s = 0;
        for (long id : engineThreads) s += mx.getThreadAllocatedBytes(id);
        return s;
    }

    /**
     * FmaPeakBench's kernel on every pool thread, GFLOP/s summed over threads: warmed up for about two seconds
     * (the kernel is one long loop that C2 compiles on-stack; measured before that it reads 4-5x low), then the
     * best of five rounds of at least 0.3 s each.
     */
    static double fmaPeak(WorkerPool pool) {
        FmaPeakBench k = new FmaPeakBench();
        int[] reps = {8};
        WorkerPool.RangeTask task = (s, e, w) -> {
            float sink = 0;
            for (int i = 0; i < reps[0]; i++) sink += k.fma16();
            if (sink == 42f) System.out.print("");
        };
        long warm = System.nanoTime();
        while (System.nanoTime() - warm < 2_000_000_000L) pool.parallelFor(pool.threads(), task);
        double best = 0;
        for (int round = 0; round < 5; round++) {
            long t0 = System.nanoTime();
            pool.parallelFor(pool.threads(), task);
            double sec = (System.nanoTime() - t0) * 1e-9;
            if (sec < 0.3) {
                reps[0] = (int) Math.min(1 << 20, reps[0] * Math.ceil(0.3 / Math.max(sec, 1e-4)));
                round--;
                continue;
            }
            best = Math.max(best, pool.threads() * reps[0] * FmaPeakBench.FLOP_PER_OP / sec / 1e9);
        }
        return best;
    }
}
