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
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.LrSchedule;
import org.moe4j.engine.train.SyntheticCorpus;
import org.moe4j.engine.train.Trainer;
import org.moe4j.engine.train.distributed.DataParallel;
import org.moe4j.engine.train.distributed.RankShards;
import org.moe4j.nativ.GemmBackends;
import org.moe4j.nativ.mpi.Communicator;
import org.moe4j.nativ.mpi.Mpi;
import org.moe4j.simd.WorkerPool;

/**
 * Hypothesis: on one machine, data parallel over MPI (2 ranks x 1 thread, loopback) trains the same global batch at
 * about the speed of 1 rank x 2 threads, the gradient all-reduce costing a small share of the step; and the bytes
 * each rank all-reduces per step are 4·params + the routing counts, whatever the batch. Measures both configurations
 * side by side in one script: the 1 x 2 run in this JVM, the 2 x 1 run by launching this class under
 * {@code mpirun --oversubscribe -np 2} (which takes the rank branch). Prints per configuration: median ms per
 * optimizer step, tokens/s, and for the MPI run the bytes and collectives per step and the ms per step spent in
 * collectives (rank 0, waiting for the other rank included), and the best of 5 gradient all-reduces run alone after
 * a barrier (the transport's cost).
 *
 * <p>Run: {@code ./moe4j bench-main DistributedBench [--config small|quickstart|tiny] [--routing standard|emo] [--batch B]
 * [--seq T] [--steps N] [--warmup N] [--gemm java|onednn]}; B is per rank (the global batch is 2·B). Needs mpirun
 * on PATH for the second line.
 */
public final class DistributedBench {
    private DistributedBench() {
    }

    record Args(String config, String routing, int batch, int seq, int steps, int warmup, String gemm) {
        static Args parse(String[] a) {
            String config = "small", routing = "standard", gemm = "java";
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
                    default -> throw new IllegalArgumentException("unknown option " + a[i]);
                }
            }
            return new Args(config, routing, batch, seq, steps, warmup, gemm);
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
        System.out.println("| ranks x threads | ms/step (median) | tokens/s | bytes/step per rank | collectives/step | comm ms/step, waiting included |");
        System.out.println("|---|---:|---:|---:|---:|---:|");
        try (WorkerPool pool = new WorkerPool(2)) {
            double[] ms = steps(c, a, pool, null, 2 * a.batch());
            double med = median(ms);
            System.out.printf(Locale.ROOT, "| 1 x 2 | %.1f | %,.0f | - | - | - |%n", med, 2.0 * a.batch() * a.seq() / (med / 1e3));
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
            System.out.println("| 2 x 1 | (mpirun not on PATH: install openmpi-bin) | | | | |");
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
        if (rc != 0 || !out.contains("| 2 x 1")) System.out.println("mpirun exited " + rc + ":\n" + out);
    }

    /** One rank of the 2 x 1 run: batch B of the global 2·B, one thread; rank 0 prints the row. */
    static void rank(Args a) {
        Communicator comm = Mpi.world();
        ModelConfig c = a.model();
        try (WorkerPool pool = new WorkerPool(1)) {
            DataParallel[] dp = new DataParallel[1];
            long[] atWarm = new long[3];
            double[] ms = steps(c, a, pool, comm, a.batch(), dp, atWarm);
            double med = median(ms);
            long steps = a.steps();
            // the gradient all-reduce alone, both ranks lined up by a barrier first: the transport's cost without
            // the wait for a slower rank that "comm ms/step" includes
            long bytes = (dp[0].bytesReduced() - atWarm[0]) / steps, calls = (dp[0].collectives() - atWarm[1]) / steps;
            double commMs = (dp[0].commNanos() - atWarm[2]) / 1e6 / steps;
            long floats;
            try (MoeModel m = new MoeModel(c)) {
                floats = m.layout().total();
            }
            double isolated;
            try (java.lang.foreign.Arena ar = java.lang.foreign.Arena.ofConfined()) {
                java.lang.foreign.MemorySegment g = ar.allocate(floats * 4, 64);
                double best = Double.MAX_VALUE;
                for (int i = 0; i < 5; i++) {
                    comm.barrier();
                    long t0 = System.nanoTime();
                    dp[0].reduceGradients(g, floats);
                    best = Math.min(best, (System.nanoTime() - t0) / 1e6);
                }
                isolated = best;
            }
            if (comm.rank() == 0)
                System.out.printf(Locale.ROOT, "| %d x 1 | %.1f | %,.0f | %,d | %d | %.1f (all-reduce alone: %.1f) |%n",
                        comm.size(), med, (double) comm.size() * a.batch() * a.seq() / (med / 1e3),
                        bytes, calls, commMs, isolated);
            dp[0].close();
        }
        comm.close();
    }

    static double[] steps(ModelConfig c, Args a, WorkerPool pool, Communicator comm, int batch) {
        return steps(c, a, pool, comm, batch, new DataParallel[1], new long[3]);
    }

    /** ms of each timed optimizer step (after the warm-up ones); atWarm gets the traffic counters after the warm-up. */
    static double[] steps(ModelConfig c, Args a, WorkerPool pool, Communicator comm, int batch, DataParallel[] dpOut,
                          long[] atWarm) {
        try (MoeModel m = new MoeModel(c).initRandom(1);
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
                dpOut[0] = new DataParallel(comm, DataParallel.DEFAULT_BUCKET_FLOATS, 0, c.experts() + 1).attach(tr);
                t = new Trainer(tr, opt, RankShards.of(src, comm.rank(), comm.size()), o, null).replicas(dpOut[0]);
            }
            double[] ms = new double[a.steps()];
            for (int s = 0; s < total; s++) {
                if (s == a.warmup() && dpOut[0] != null) {
                    atWarm[0] = dpOut[0].bytesReduced();
                    atWarm[1] = dpOut[0].collectives();
                    atWarm[2] = dpOut[0].commNanos();
                }
                long t0 = System.nanoTime();
                t.step();
                if (s >= a.warmup()) ms[s - a.warmup()] = (System.nanoTime() - t0) / 1e6;
            }
            return ms;
        }
    }

    static double median(double[] x) {
        double[] s = x.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }
}
