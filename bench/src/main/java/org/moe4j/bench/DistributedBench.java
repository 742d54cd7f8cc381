package org.moe4j.bench;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.LrSchedule;
import org.moe4j.engine.train.SyntheticCorpus;
import org.moe4j.engine.train.Trainer;
import org.moe4j.engine.train.distributed.DataParallel;
import org.moe4j.engine.train.distributed.ExpertParallel;
import org.moe4j.engine.train.distributed.RankShards;
import org.moe4j.nativ.GemmBackends;
import org.moe4j.nativ.mpi.Communicator;
import org.moe4j.nativ.mpi.Mpi;
import org.moe4j.simd.WorkerPool;

/**
 * Hypotheses: on one machine, data parallel over MPI (2 ranks x 1 thread, loopback) trains the same global batch at
 * about the speed of 1 rank x 2 threads, the gradient all-reduce costing a small share of the step; overlapping that
 * all-reduce with the backward hides part of the share; the bytes each rank all-reduces per step are 4·params + the
 * routing counts, whatever the batch; and expert parallel all-reduces only the dense parameters and moves the slot
 * rows instead (docs/DISTRIBUTED.md, all-to-all volume). Measures the configurations side by side in one script: the
 * 1 x 2 run in this JVM, then data parallel, data parallel overlapped and expert parallel (or the --variants given, in
 * that order), one after the other in the same two processes launched with {@code mpirun --oversubscribe -np 2} (which takes the rank branch). Prints per
 * configuration: median ms per optimizer step, tokens/s, and for the MPI runs the bytes all-reduced and the bytes
 * handed to all-to-all per step and rank, the collectives per step, and the ms per step the training thread waited for
 * the gradient all-reduce (rank 0, waiting for the other rank included); for data parallel also the best of 5
 * gradient all-reduces run alone after a barrier (the transport's cost). Counted, not timed: each rank's bytes of
 * parameters + gradients + both AdamW moments (16 bytes per parameter held), which expert parallel divides (every rank
 * holds the dense tensors and its own experts only), plus, with ERC on, its copy of the other ranks' W1.
 *
 * <p>Run: {@code ./moe4j bench-main DistributedBench [--config small|quickstart|tiny] [--routing standard|emo] [--batch B]
 * [--seq T] [--steps N] [--warmup N] [--gemm java|onednn] [--variants data,overlapped,expert]}; B is per rank (the global batch is 2·B). Needs mpirun
 * on PATH for the 2 x 1 lines.
 */
public final class DistributedBench {
    private DistributedBench() {
    }

    record Args(String config, String routing, int batch, int seq, int steps, int warmup, String gemm, String[] variants) {
        static Args parse(String[] a) {
            String config = "small", routing = "standard", gemm = "java";
            String[] variants = {"data", "overlapped", "expert"};
            int batch = 4, seq = 128, steps = 6, warmup = 3;
            for (int i = 0; i < a.length; i++) {
                switch (a[i]) {
                    case "--config" -> config = a[++i];
                    case "--routing" -> routing = a[++i];
                    case "--batch" -> batch = Integer.parseInt(a[++i]);
                    case "--seq" -> seq = Integer.parseInt(a[++i]);
                    case "--steps" -> steps = Integer.parseInt(a[++i]);
                    case "--warmup" -> warmup = Integer.parseInt(a[++i]);
                    case "--gemm" -> gemm = a[++i];
                    case "--variants" -> variants = a[++i].split(",");
                    default -> throw new IllegalArgumentException("unknown option " + a[i]);
                }
            }
            for (String v : variants)
                if (!List.of("data", "overlapped", "expert").contains(v))
                    throw new IllegalArgumentException("--variants " + v + ": expected data, overlapped or expert");
            return new Args(config, routing, batch, seq, steps, warmup, gemm, variants);
        }

        ModelConfig model() {
            ModelConfig c = switch (config) {
                case "tiny" -> ModelConfig.tiny();
                // the quickstart's model (TrainCommand): d 128, 4 layers, 8 experts of 256, top-2, vocabulary 2048
                case "quickstart" -> new ModelConfig(2048, 128, 4, 4, 2, 8, 0, 2, 256, 10000.0, false, 1e-6, 256, 0,
                        RoutingConfig.standard(), ModelConfig.small().loss());
                default -> ModelConfig.small();
            };
            return routing.equals("emo") ? c.withRouting(RoutingConfig.emo(c.routedExperts())) : c;
        }
    }

    public static void main(String[] argv) throws IOException, InterruptedException {
        Args a = Args.parse(argv);
        if (Mpi.launched()) {
            rank(a);
            return;
        }
        ModelConfig c = a.model();
        long params;
        try (MoeModel m = new MoeModel(c)) {
            params = m.layout().total();
        }
        System.out.printf(Locale.ROOT, "DistributedBench: %s (%,d parameters), %s routing, global batch 2 x %d x %d, %d steps "
                        + "after %d warm-up, GEMM %s, JDK %s, %d cores%n", a.config(), params, a.routing(),
                a.batch(), a.seq(), a.steps(), a.warmup(), a.gemm(), Runtime.version(), Runtime.getRuntime().availableProcessors());
        System.out.println("| ranks x threads | ms/step (median) | tokens/s | all-reduced bytes/step per rank | all-to-all bytes/step per rank | collectives/step | ms/step in all-reduce and gather calls, waiting included | parameter + gradient + AdamW moment bytes per rank (+ ERC's W1 copy) |");
        System.out.println("|---|---:|---:|---:|---:|---:|---:|---:|");
        try (WorkerPool pool = new WorkerPool(2)) {
            Traffic one = new Traffic();
            double[] ms = steps(c, a, pool, null, 2 * a.batch(), "data", one);
            double med = median(ms);
            System.out.printf(Locale.ROOT, "| 1 x 2 | %.1f | %,.0f | - | - | - | - | %,d |%n", med,
                    2.0 * a.batch() * a.seq() / (med / 1e3), one.stateBytes);
        }
        Path mpirun = null;
        for (String d : System.getenv().getOrDefault("PATH", "").split(":")) {
            // the first one on PATH, as a shell finds it (mpirun derives its prefix from its path: /bin/mpirun fails)
            if (java.nio.file.Files.isExecutable(Path.of(d.isEmpty() ? "." : d, "mpirun"))) {
                mpirun = Path.of(d, "mpirun");
                break;
            }
        }
        if (mpirun == null) {
            System.out.println("| 2 x 1 | (mpirun not on PATH: install openmpi-bin) | | | | | | |");
            return;
        }
        List<String> cmd = new ArrayList<>(List.of(mpirun.toString(), "--oversubscribe", "-np", "2", "--mca", "btl",
                "self,vader,tcp", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo",
                "--mca", "mpi_yield_when_idle", "1")); // 2 ranks on 2 cores: a rank waiting in a collective yields
        if ("root".equals(System.getProperty("user.name"))) cmd.add(1, "--allow-run-as-root");
        cmd.addAll(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "--add-modules",
                "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-XX:+UseParallelGC", "-Dmoe4j.threads=1",
                "-cp", System.getProperty("java.class.path"), DistributedBench.class.getName()));
        cmd.addAll(Arrays.asList(argv));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        int rc = p.waitFor();
        out.lines().filter(l -> l.startsWith("| 2 x 1")).forEach(System.out::println);
        if (rc == 0) System.out.println("(bytes per rank per step; the all-to-all figure counts the rows sent to the other rank and the "
                + "results sent back, forward and backward, and the counts)");
        if (rc != 0 || !out.contains("| 2 x 1")) System.out.println("mpirun exited " + rc + ":\n" + out);
    }

    /** One rank of the 2 x 1 runs: batch B of the global 2·B, one thread; rank 0 prints the rows. */
    static void rank(Args a) {
        Communicator comm = Mpi.world();
        ModelConfig c = a.model();
        try (WorkerPool pool = new WorkerPool(1)) {
            for (String variant : a.variants()) {
                Traffic tr = new Traffic();
                double[] ms = steps(c, a, pool, comm, a.batch(), variant, tr);
                double med = median(ms);
                long steps = a.steps();
                double isolated = Double.NaN;
                if (variant.equals("data")) {
                    // the gradient all-reduce alone, both ranks lined up by a barrier first: the transport's cost
                    // without the wait for a slower rank that "comm ms/step" includes
                    long floats;
                    try (MoeModel m = new MoeModel(c)) {
                        floats = m.layout().total();
                    }
                    try (java.lang.foreign.Arena ar = java.lang.foreign.Arena.ofConfined();
                         DataParallel dp = new DataParallel(comm, DataParallel.DEFAULT_BUCKET_FLOATS, 0, c.experts() + 1)) {
                        java.lang.foreign.MemorySegment g = ar.allocate(floats * 4, 64);
                        double best = Double.MAX_VALUE;
                        for (int i = 0; i < 5; i++) {
                            comm.barrier();
                            long t0 = System.nanoTime();
                            dp.reduceGradients(g, floats);
                            best = Math.min(best, (System.nanoTime() - t0) / 1e6);
                        }
                        isolated = best;
                    }
                }
                // every rank's held bytes, gathered to rank 0 (an uneven expert split holds unequal shares)
                String held = heldBytes(comm, tr);
                if (comm.rank() == 0)
                    System.out.printf(Locale.ROOT, "| %d x 1 %s | %.1f | %,.0f | %,d | %,d | %d | %.1f%s | %s |%n", comm.size(),
                            variant, med, (double) comm.size() * a.batch() * a.seq() / (med / 1e3), tr.reduced / steps,
                            tr.exchanged / steps, tr.calls / steps, tr.waitNanos / 1e6 / steps,
                            Double.isNaN(isolated) ? "" : String.format(Locale.ROOT, " (all-reduce alone: %.1f)", isolated),
                            held + (tr.receiveWorst == 0 ? "" : String.format(Locale.ROOT,
                                    "; rank 0's receive buffers %,d after the run (worst case %,d)", tr.receiveNow,
                                    tr.receiveWorst)));
                comm.barrier();
            }
        }
        comm.close();
    }

    /**
     * What one rank handed to collectives over the timed steps, and what it held: the bytes of its parameters,
     * gradients and both AdamW moments, and (expert parallel with ERC) of its copy of the other ranks' W1.
     */
    static final class Traffic {
        long reduced, exchanged, calls, waitNanos, stateBytes, w1CopyBytes, receiveNow, receiveWorst;
    }

    /**
     * ms of each timed optimizer step (after the warm-up ones); {@code out} gets the traffic of the timed steps.
     * variant: "data", "overlapped" (data parallel, all-reduce beside the backward) or "expert" (experts split over
     * the ranks, the rest data parallel).
     */
    static double[] steps(ModelConfig c, Args a, WorkerPool pool, Communicator comm, int batch, String variant,
                          Traffic out) {
        DataParallel dp = null;
        ExpertParallel ep = null;
        // expert parallel: the rank's model holds the dense tensors and its own experts (its rank-local layout)
        ParamLayout lay = comm != null && variant.equals("expert")
                ? ExpertParallel.rankLayout(c, comm.rank(), comm.size(), 0) : new ParamLayout(c);
        try (MoeModel m = new MoeModel(lay, true).initRandom(1);
             MoeTransformer tr = new MoeTransformer(m, batch * a.seq(), batch, GemmBackends.select(a.gemm(), pool).gemm(), pool);
             AdamWOptimizer opt = new AdamWOptimizer(m, pool)) {
            tr.useDefaults(true, 1);
            var src = new SyntheticCorpus(c.vocab(), c.eosId(), 4, 4, 1);
            int total = a.steps() + a.warmup();
            Trainer.Options o = new Trainer.Options(batch, a.seq(), 1, new LrSchedule(1e-3, 2, total, 0.1), 1.0, 1000);
            Trainer t;
            if (comm == null) {
                t = new Trainer(tr, opt, src, o, null);
            } else {
                dp = new DataParallel(comm, DataParallel.DEFAULT_BUCKET_FLOATS, 0, c.experts() + 1).attach(tr);
                if (variant.equals("overlapped")) dp.overlap(true);
                if (variant.equals("expert")) {
                    ep = new ExpertParallel(comm, tr);
                    dp.experts(ep);
                    opt.partition(ep.partition());
                }
                t = new Trainer(tr, opt, RankShards.of(src, comm.rank(), comm.size()), o, null).replicas(dp);
            }
            out.stateBytes = m.params().byteSize() + m.grads().byteSize() + opt.firstMoment().byteSize()
                    + opt.secondMoment().byteSize();
            out.w1CopyBytes = ep == null ? 0 : ep.w1CopyBytes();
            double[] ms = new double[a.steps()];
            for (int s = 0; s < total; s++) {
                if (s == a.warmup() && dp != null) {
                    out.reduced = -dp.bytesReduced();
                    out.exchanged = ep == null ? 0 : -ep.bytesSent();
                    out.calls = -dp.collectives() - (ep == null ? 0 : ep.collectives());
                    out.waitNanos = -dp.commNanos();
                }
                long t0 = System.nanoTime();
                t.step();
                if (s >= a.warmup()) ms[s - a.warmup()] = (System.nanoTime() - t0) / 1e6;
            }
            if (ep != null) {
                long[] rb = ep.receiveBytes();
                out.receiveNow = rb[0];
                out.receiveWorst = rb[1];
            }
            if (dp != null) {
                out.reduced += dp.bytesReduced();
                out.exchanged += ep == null ? 0 : ep.bytesSent();
                out.calls += dp.collectives() + (ep == null ? 0 : ep.collectives());
                out.waitNanos += dp.commNanos();
            }
            return ms;
        } finally {
            if (ep != null) ep.close();
            if (dp != null) dp.close();
        }
    }

    /**
     * "rank 0 / rank 1 / ..." bytes of parameters + gradients + AdamW moments per rank, with ERC's W1 copy added after
     * a "+" where there is one. Collective.
     */
    static String heldBytes(Communicator comm, Traffic tr) {
        int n = comm.size();
        try (java.lang.foreign.Arena ar = java.lang.foreign.Arena.ofConfined()) {
            java.lang.foreign.MemorySegment all = ar.allocate(16L * n, 8);
            all.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, 2L * comm.rank(), tr.stateBytes);
            all.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, 2L * comm.rank() + 1, tr.w1CopyBytes);
            comm.allGather(all, 16L * comm.rank(), 16, all, 0);
            StringBuilder sb = new StringBuilder();
            for (int r = 0; r < n; r++) {
                long state = all.getAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, 2L * r);
                long w1 = all.getAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, 2L * r + 1);
                sb.append(r == 0 ? "" : " / ").append(String.format(Locale.ROOT, "%,d", state));
                if (w1 > 0) sb.append(String.format(Locale.ROOT, " + %,d", w1));
            }
            return sb.toString();
        }
    }

    static double median(double[] x) {
        double[] s = x.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }
}
