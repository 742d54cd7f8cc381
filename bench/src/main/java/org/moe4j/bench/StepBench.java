package org.moe4j.bench;

import java.lang.management.ManagementFactory;
import java.util.Locale;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.Precision;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.PhaseTimer;
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
 *
 * <p>Profiling and scaling options (issue 14):
 * <ul>
 *   <li>{@code --phases}: also prints where a training step's wall time goes, per phase ({@link PhaseTimer}; the
 *       JVM property {@code moe4j.phaseTimes} is set before any engine class loads), with the matmul FLOPs of each
 *       GEMM phase counted as in the main table. The timer adds one {@code nanoTime} per phase change.</li>
 *   <li>{@code --experts 16,32,64,128,256}: the bench config with E routed experts, k 4 and expert width 512 fixed
 *       (same active FLOPs per token), one training-step row per E.</li>
 *   <li>{@code --tokens 256,512,1024,2048}: tokens per step (sequences of 256 tokens, B = tokens / 256).</li>
 *   <li>{@code --erc}: keeps the ERC loss on (the default table runs with ERC and the output z-loss off).</li>
 *   <li>{@code --no-forward}: only the training-step row.</li>
 *   <li>{@code --unfused-optimizer}: zero the gradients and (BF16) round the weights' copy in passes of their own
 *   (before the optimizer did both in its pass; for A/B runs).</li>
 * </ul>
 */
public final class StepBench {
    private StepBench() {
    }

    static int WARMUP = 4;

    public static void main(String[] args) {
        int steps = 5;
        String[] backends = {"java"};
        String[] precisions = {"fp32"};
        java.util.List<String> configs = new java.util.ArrayList<>();
        int[] expertSweep = null;
        int[] tokenSweep = {8 * 256};
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--steps")) steps = Integer.parseInt(args[++i]);
            else if (args[i].equals("--phases")) PHASES = true;
            else if (args[i].equals("--erc")) ERC = true;
            else if (args[i].equals("--no-forward")) FORWARD = false;
            else if (args[i].equals("--unfused-optimizer")) FUSED_OPTIMIZER = false;
            else if (args[i].equals("--experts")) expertSweep = ints(args[++i]);
            else if (args[i].equals("--tokens")) tokenSweep = ints(args[++i]);
            else if (args[i].equals("--backends")) backends = args[++i].split(",");
            else if (args[i].equals("--warmup")) WARMUP = Integer.parseInt(args[++i]);
            else if (args[i].equals("--precision")) precisions = args[++i].split(",");
            else if (args[i].equals("small") || args[i].equals("bench")) configs.add(args[i]);
            else {
                System.err.println((args[i].equals("--help") || args[i].equals("-h") ? "" : "StepBench: unknown argument '"
                        + args[i] + "'\n") + "usage: StepBench [small] [bench] [--steps N] [--warmup N] [--backends java,onednn,...]"
                        + " [--precision fp32,bf16] [--phases] [--no-forward] [--erc] [--unfused-optimizer]"
                        + " [--experts 16,32,...] [--tokens 256,512,...]");
                System.exit(args[i].equals("--help") || args[i].equals("-h") ? 0 : 2);
            }
        }
        if (configs.isEmpty()) configs = java.util.List.of("small", "bench");
        // before any engine class loads: PhaseTimer.ON is a static final read once
        if (PHASES) System.setProperty("moe4j.phaseTimes", "true");
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
            ModelConfig base = name.equals("bench") ? ModelConfig.bench() : ModelConfig.small();
            int[] es = expertSweep == null ? new int[] {base.experts()} : expertSweep;
            for (int E : es) {
                ModelConfig c = E == base.experts() ? base : withExperts(base, E);
                String label = expertSweep == null ? name : name + " E" + E;
                for (int tokens : tokenSweep) {
                    int T = Math.min(256, tokens), B = tokens / T;
                    if (B * T != tokens) throw new IllegalArgumentException("--tokens " + tokens + ": need a multiple of 256");
                    String l = tokenSweep.length == 1 && tokens == 2048 ? label : label + " N" + tokens;
                    for (int i = 0; i < gemms.length; i++)
                        for (String p : precisions) {
                            boolean b16 = Precision.parse(p, "--precision") == Precision.BF16;
                            run(l, c, B, T, steps, pool, gemms[i], b16 ? bf16[i] : null, peak);
                        }
                }
            }
        }
        if (PHASES) printPhases();
    }

    static boolean PHASES, ERC, FORWARD = true;
    /** The optimizer zeroes the gradients and (BF16) writes the weights' bf16 copy in its pass, as the Trainer's does. */
    static boolean FUSED_OPTIMIZER = true;

    static int[] ints(String list) {
        return java.util.Arrays.stream(list.split(",")).mapToInt(Integer::parseInt).toArray();
    }

    /** The config with E experts (none shared), k and expert width unchanged: the same active FLOPs per token. */
    static ModelConfig withExperts(ModelConfig c, int E) {
        return new ModelConfig(c.vocab(), c.d(), c.layers(), c.heads(), c.kvHeads(), E, 0, c.k(), c.expertHidden(),
                c.ropeTheta(), c.qkNorm(), c.normEps(), c.maxSeq(), c.eosId(), c.routing(), c.loss());
    }

    private static final java.util.List<String> PHASE_TABLES = new java.util.ArrayList<>();

    /**
     * Records the phase times of the timed training steps of one run: % of the step, ms per step, and GFLOP/s for
     * the phases that are matmuls (forward FLOPs as in {@link #forwardFlopsPerToken}, backward twice that).
     */
    static void recordPhases(String name, ModelConfig c, int B, int T, int steps, double peak) {
        int N = B * T, d = c.d(), qw = c.heads() * c.headSize(), kw = c.kvHeads() * c.headSize();
        double attn = c.layers() * N * (2.0 * d * (qw + 2 * kw) + 2.0 * qw * d + 2.0 * 2 * qw * (T + 1) / 2.0);
        double router = c.layers() * N * 2.0 * d * c.experts();
        double experts = c.layers() * N * (double) c.k() * 6.0 * d * c.expertHidden();
        double head = N * 2.0 * d * c.vocab();
        long total = 0;
        for (PhaseTimer.Phase p : PhaseTimer.Phase.values()) total += PhaseTimer.nanos(p);
        StringBuilder sb = new StringBuilder();
        sb.append(String.format(Locale.ROOT, "%n### %s, B %d x T %d: %.1f ms per training step, FMA peak %.1f GFLOP/s%n%n",
                name, B, T, total * 1e-6 / steps, peak));
        sb.append("| phase | % of step | ms/step | GFLOP/s | % of peak | heap B/step (stepping thread) |").append(System.lineSeparator());
        sb.append("|---|---:|---:|---:|---:|---:|").append(System.lineSeparator());
        for (PhaseTimer.Phase p : PhaseTimer.Phase.values()) {
            long ns = PhaseTimer.nanos(p);
            if (ns == 0) continue;
            double flop = switch (p) {
                case ATTENTION -> attn;
                case ATTENTION_BWD -> 2 * attn;
                case ROUTER_GEMM -> router;
                case EXPERTS -> experts;
                case EXPERTS_BWD -> 2 * experts;
                case HEAD -> head;
                case HEAD_BWD -> 2 * head;
                default -> 0;
            };
            double sec = ns * 1e-9 / steps;
            String gf = flop == 0 ? "" : String.format(Locale.ROOT, "%.1f | %.0f%%", flop / sec / 1e9,
                    100 * flop / sec / 1e9 / peak);
            sb.append(String.format(Locale.ROOT, "| %s | %.1f%% | %.1f | %s | %,d |%n", p.label, 100.0 * ns / total,
                    sec * 1e3, flop == 0 ? " | " : gf, PhaseTimer.bytes(p) / steps));
        }
        PHASE_TABLES.add(sb.toString());
    }

    static void printPhases() {
        System.out.println();
        System.out.println("Per-phase wall time of the timed training steps (the router GEMM row includes the MoE "
                + "RMSNorm; the backward router row includes both router GEMMs and the RMSNorm backward):");
        for (String t : PHASE_TABLES) System.out.print(t);
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
        if (!ERC) c = c.withLoss(new org.moe4j.engine.config.LossWeights(c.loss().lb(), c.loss().routerZ(), 0.0, 0.0));
        int[] tokens = new int[B * T];
        SyntheticCorpus src = new SyntheticCorpus(c.vocab(), c.eosId(), 4, 4, 1);
        try (MoeModel m = new MoeModel(c).initRandom(1);
             MoeTransformer tr = new MoeTransformer(m, B * T, B, c.maxRoutedK(), gemm, bf16, pool);
             AdamWOptimizer opt = new AdamWOptimizer(m, pool)) {
            src.next(tokens, B, T);
            tr.setBatch(tokens, B, T);
            if (FUSED_OPTIMIZER) org.moe4j.engine.train.Trainer.fuseOptimizer(tr, opt); // as the Trainer does
            Runnable train = () -> {
                PhaseTimer.enter(PhaseTimer.Phase.OPTIMIZER);
                tr.zeroGrads();
                tr.forward();
                tr.backward();
                PhaseTimer.enter(PhaseTimer.Phase.OPTIMIZER);
                opt.step(1e-4, 1.0, 1);
                PhaseTimer.stop();
                tr.weightsChanged(opt.writesBf16Copy()); // BF16: re-round the weight copy unless the step wrote it
            };
            Runnable fwd = tr::forward;
            double flopTok = forwardFlopsPerToken(c, T);
            String label = name + " | " + gemm.name() + " | " + tr.precision().label();
            report(label, "train step", train, steps, B * T, 3 * flopTok, peak);
            if (PHASES) recordPhases(label, c, B, T, steps, peak);
            if (FORWARD) report(label, "forward", fwd, steps, B * T, flopTok, peak);
        }
    }

    static void report(String name, String phase, Runnable step, int steps, int tokens, double flopPerToken, double peak) {
        warmUp(step);
        long probe0 = allocatedBytes();
        long bytes0 = allocatedBytes();
        long probe = bytes0 - probe0; // what one reading of the counters allocates itself
        PhaseTimer.reset();
        long t0 = System.nanoTime();
        for (int i = 0; i < steps; i++) step.run();
        long ns = System.nanoTime() - t0;
        long bytes = Math.max(0, allocatedBytes() - bytes0 - probe);
        double sec = ns * 1e-9 / steps;
        double gflops = tokens * flopPerToken / sec / 1e9;
        System.out.printf(Locale.ROOT, "| %s | %s | %,.0f | %.1f | %.1f | %.1f%% | %,d |%n", name, phase, tokens / sec,
                sec * 1e3, gflops, 100 * gflops / peak, bytes / steps);
    }

    /** Warm-up ends at the earliest after this long, and at the latest after MAX_WARMUP_NANOS. */
    static final long QUIET_NANOS = 10_000_000_000L, MAX_WARMUP_NANOS = 180_000_000_000L;

    /**
     * At least {@code --warmup} steps (JIT compiles the kernels, first touch of buffers), then more until a step
     * allocates nothing with the JIT idle for 1.5 s, or the JIT has compiled nothing for QUIET_NANOS (a step that
     * still allocates when compiled must not hold the run: its bytes are then what the table shows), at most
     * MAX_WARMUP_NANOS (then said on stderr). A step that allocated a few hundred bytes used to end the warm-up
     * (the bound was 1 KB); some of those rows then read 70-312 B per step.
     * A fixed count was too short for the first config of a process: its C2 was still compiling and the Vector API
     * ran its allocating fallback (6.4 MB per step in the timed steps).
     */
    static void warmUp(Runnable step) {
        var jit = ManagementFactory.getCompilationMXBean();
        long start = System.nanoTime(), quietSince = start, compiled = jit.getTotalCompilationTime();
        for (int i = 0; ; i++) {
            long b0 = allocatedBytes();
            step.run();
            long bytes = allocatedBytes() - b0;
            long now = System.nanoTime(), ct = jit.getTotalCompilationTime();
            if (ct != compiled) {
                compiled = ct;
                quietSince = now;
            }
            if (i + 1 < WARMUP) continue;
            long quiet = now - quietSince;
            if ((bytes == 0 && quiet >= 1_500_000_000L) || quiet >= QUIET_NANOS) return;
            if (now - start >= MAX_WARMUP_NANOS) {
                System.err.printf(Locale.ROOT, "StepBench: warm-up stopped after %.0f s with the JIT still compiling "
                        + "(last step allocated %,d B): the row may include unoptimised kernels%n", (now - start) * 1e-9, bytes);
                return;
            }
        }
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
