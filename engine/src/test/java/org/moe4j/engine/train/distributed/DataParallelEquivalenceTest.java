package org.moe4j.engine.train.distributed;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.LrSchedule;
import org.moe4j.engine.train.SyntheticCorpus;
import org.moe4j.engine.train.Trainer;
import org.moe4j.nativ.mpi.Communicator;
import org.moe4j.nativ.mpi.InProcessCommunicator;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * The data-parallel property without MPI: W ranks as threads of this process (an {@link InProcessCommunicator}
 * group), each training on its share (batch B) of every global micro-batch, give the losses and weights of one
 * process training on the global batch (W·B), within float tolerance, after 20 steps: standard routing with global
 * and with local load balance, EMO (document pools with sampled sizes, global LB, ERC), Matryoshka k, and with
 * gradient accumulation. Without the routing hooks (counts all-reduced, pool sizes drawn in global document order)
 * global-LB and EMO runs drift apart; {@link #withoutRoutingHooksEmoDiffers} shows the property can fail.
 */
class DataParallelEquivalenceTest {
    static final int STEPS = 20, B = 2, T = 16;

    static ModelConfig config(String routing) {
        ModelConfig t = ModelConfig.tiny();
        return switch (routing) {
            case "standard" -> t.withRouting(RoutingConfig.standard());
            case "local" -> t.withRouting(withScope(RoutingConfig.standard(), LbScope.LOCAL));
            case "emo" -> t.withRouting(RoutingConfig.emo(t.routedExperts()));
            case "matryoshka" -> t.withRouting(RoutingConfig.matryoshka(1, Math.min(t.routedExperts(), 3)));
            default -> throw new IllegalArgumentException(routing);
        };
    }

    static RoutingConfig withScope(RoutingConfig r, LbScope s) {
        return new RoutingConfig(r.normalizeTopK(), r.softmaxOverAll(), r.pool(), r.matryoshka(), r.capacityFactor(),
                r.evalCapacityFactor(), s);
    }

    /** Losses per step, then the final parameters, of one rank (comm null: a single process with batch `batch`). */
    record Run(double[] losses, float[] params) {
    }

    static Run train(ModelConfig c, Communicator comm, int batch, int accum, boolean hooks) {
        return train(c, comm, batch, accum, hooks, false, null);
    }

    /** As above; {@code overlap}: the all-reduce overlapped with the backward, its bucket count into overlapped[rank]. */
    static Run train(ModelConfig c, Communicator comm, int batch, int accum, boolean hooks, boolean overlap,
                     long[] overlapped) {
        try (WorkerPool pool = new WorkerPool(1);
             MoeModel m = new MoeModel(c).initRandom(11);
             MoeTransformer tr = new MoeTransformer(m, batch * T, batch, c.maxRoutedK(), new JavaGemm(pool), pool);
             AdamWOptimizer opt = new AdamWOptimizer(m, pool)) {
            tr.useDefaults(true, 7);
            var src = new SyntheticCorpus(c.vocab(), c.eosId(), 3, 4, 5);
            Trainer tn;
            DataParallel dp = null;
            if (comm == null) {
                tn = new Trainer(tr, opt, src, opts(batch, accum), null);
            } else {
                dp = new DataParallel(comm, 1000, hooks ? 5 : 0, c.experts() + 1);
                if (hooks) dp.attach(tr);
                dp.overlap(overlap);
                tn = new Trainer(tr, opt, RankShards.of(src, comm.rank(), comm.size()), opts(batch, accum), null).replicas(dp);
            }
            double[] losses = new double[STEPS];
            for (int s = 0; s < STEPS; s++) losses[s] = tn.step().loss();
            float[] p = new float[(int) m.layout().total()];
            java.lang.foreign.MemorySegment.copy(m.params(), java.lang.foreign.ValueLayout.JAVA_FLOAT, 0, p, 0, p.length);
            if (dp != null) {
                if (overlapped != null) overlapped[comm.rank()] = dp.overlappedBuckets();
                dp.close();
            }
            return new Run(losses, p);
        }
    }

    static Trainer.Options opts(int batch, int accum) {
        return new Trainer.Options(batch, T, accum, new LrSchedule(3e-3, 3, STEPS, 0.1), 1.0, 1000);
    }

    /** Runs W ranks on threads; returns each rank's run. */
    static Run[] ranks(ModelConfig c, int w, int accum, boolean hooks) throws Exception {
        InProcessCommunicator[] cs = InProcessCommunicator.group(w);
        Run[] out = new Run[w];
        AtomicReference<Throwable> fail = new AtomicReference<>();
        List<Thread> ts = new ArrayList<>();
        for (int r = 0; r < w; r++) {
            int rr = r;
            Thread t = new Thread(() -> {
                try {
                    out[rr] = train(c, cs[rr], B, accum, hooks);
                } catch (Throwable e) {
                    fail.compareAndSet(null, e);
                    try {
                        cs[rr].abort(String.valueOf(e), 1);
                    } catch (RuntimeException ignored) {
                        // abort throws in-process; the first failure is the one reported
                    }
                }
            });
            t.start();
            ts.add(t);
        }
        for (Thread t : ts) t.join();
        if (fail.get() instanceof Exception e) throw e;
        if (fail.get() instanceof Error e) throw e;
        return out;
    }

    static void assertClose(Run one, Run r, String what) {
        for (int s = 0; s < STEPS; s++)
            assertEquals(one.losses()[s], r.losses()[s], 2e-4 * Math.max(1, Math.abs(one.losses()[s])),
                    what + ": loss of step " + s);
        double maxDiff = 0;
        for (int i = 0; i < one.params().length; i++) maxDiff = Math.max(maxDiff, Math.abs(one.params()[i] - r.params()[i]));
        assertTrue(maxDiff < 2e-4, what + ": max weight difference " + maxDiff);
    }

    @ParameterizedTest
    @ValueSource(strings = {"standard", "local", "emo", "matryoshka"})
    void twoRanksEqualOneOnTheGlobalBatch(String routing) throws Exception {
        ModelConfig c = config(routing);
        Run one = train(c, null, 2 * B, 1, true);
        Run[] two = ranks(c, 2, 1, true);
        assertClose(one, two[0], routing + " rank 0");
        // the replicas hold bit-identical weights (the sums are taken in the same order on every rank)
        assertTrue(java.util.Arrays.equals(two[0].params(), two[1].params()), routing + ": rank 1's weights differ from rank 0's");
    }

    /**
     * The all-reduce overlapped with the backward (buckets of 1,000 floats handed to the reducing thread as the
     * layers finish) gives the same result: 2 ranks, EMO, 2 micro-batches, bit-identical replicas; and buckets were
     * really reduced before the backward ended.
     */
    @Test
    void overlappedAllReduceEqualsOneRank() throws Exception {
        ModelConfig c = config("emo");
        Run one = train(c, null, 2 * B, 2, true);
        long[] overlapped = new long[2];
        Run[] two = new Run[2];
        onRanks(2, comm -> two[comm.rank()] = train(c, comm, B, 2, true, true, overlapped));
        assertClose(one, two[0], "emo, overlapped all-reduce, rank 0");
        assertTrue(java.util.Arrays.equals(two[0].params(), two[1].params()), "overlap: rank 1's weights differ from rank 0's");
        // the tiny model has 8,464 parameters: 8 full buckets a step, queued as their layers finish; the rest after
        assertEquals(STEPS * 8L, overlapped[0], "buckets handed over during the backward");
        assertEquals(overlapped[0], overlapped[1], "both ranks cut the same buckets");
    }

    @Test
    void threeRanksWithAccumulationEqualOne() throws Exception {
        ModelConfig c = config("emo");
        Run one = train(c, null, 3 * B, 2, true);
        Run[] three = ranks(c, 3, 2, true);
        assertClose(one, three[2], "emo, 3 ranks, 2 micro-batches, rank 2");
    }

    /**
     * Steps [from, to) of one rank (comm null: a single process), resuming from {@code resume} when given and saving
     * to {@code save} (rank 0 only) after the last; returns the losses of those steps.
     */
    static double[] span(ModelConfig c, Communicator comm, int batch, int from, int to, Path resume, Path save) {
        try (WorkerPool pool = new WorkerPool(1);
             MoeModel m = resume != null ? ModelCheckpoint.load(resume) : new MoeModel(c).initRandom(11);
             MoeTransformer tr = new MoeTransformer(m, batch * T, batch, c.maxRoutedK(), new JavaGemm(pool), pool);
             AdamWOptimizer opt = new AdamWOptimizer(m, pool)) {
            tr.useDefaults(true, 7);
            var src = new SyntheticCorpus(c.vocab(), c.eosId(), 3, 4, 5);
            if (resume != null) {
                // the moments through loadState; the counters from the JSON file, whose keys are the format's
                ModelCheckpoint.loadState(resume, opt.firstMoment(), opt.secondMoment(), m.layout().total());
                com.fasterxml.jackson.databind.JsonNode st;
                try {
                    st = new com.fasterxml.jackson.databind.ObjectMapper().readTree(
                            resume.resolve(ModelCheckpoint.STATE_JSON).toFile());
                } catch (java.io.IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
                opt.stepCount(st.get("step").asLong());
                src.position(st.get("data_position").asLong());
                tr.routingRng().setState(st.get("routing_rng_state").asLong());
                tr.ercRng().setState(st.get("erc_rng_state").asLong());
            }
            Trainer tn;
            DataParallel dp = null;
            Trainer.Options o = new Trainer.Options(batch, T, 1, new LrSchedule(3e-3, 3, STEPS, 0.1), 1.0, 1000);
            if (comm == null) {
                tn = new Trainer(tr, opt, src, o, null);
            } else {
                dp = new DataParallel(comm, 1000, 5, c.experts() + 1).attach(tr);
                tn = new Trainer(tr, opt, RankShards.of(src, comm.rank(), comm.size()), o, null).replicas(dp);
            }
            double[] losses = new double[to - from];
            for (int s = from; s < to; s++) losses[s - from] = tn.step().loss();
            if (save != null && (comm == null || comm.rank() == 0))
                ModelCheckpoint.save(save, m, new ModelCheckpoint.TrainState(opt.firstMoment(), opt.secondMoment(),
                        opt.stepCount(), tn.source().position(), tr.routingRng().state(), tr.ercRng().state(), null), null);
            if (comm != null) comm.barrier(); // the other ranks wait for rank 0's checkpoint
            if (dp != null) dp.close();
            return losses;
        }
    }

    /** Runs body(rank communicator) on W threads. */
    static void onRanks(int w, java.util.function.Consumer<Communicator> body) throws Exception {
        InProcessCommunicator[] cs = InProcessCommunicator.group(w);
        AtomicReference<Throwable> fail = new AtomicReference<>();
        List<Thread> ts = new ArrayList<>();
        for (int r = 0; r < w; r++) {
            int rr = r;
            Thread t = new Thread(() -> {
                try {
                    body.accept(cs[rr]);
                } catch (Throwable e) {
                    fail.compareAndSet(null, e);
                    try {
                        cs[rr].abort(String.valueOf(e), 1);
                    } catch (RuntimeException ignored) {
                        // abort throws in-process; the first failure is the one reported
                    }
                }
            });
            t.start();
            ts.add(t);
        }
        for (Thread t : ts) t.join();
        if (fail.get() instanceof Exception e) throw e;
        if (fail.get() instanceof Error e) throw e;
    }

    /**
     * A checkpoint written by rank 0 of 2 resumes on 1 rank (global batch kept), and a 1-rank checkpoint on 2
     * ranks: both continue with the losses of 20 straight steps (EMO routing: pools, global LB, ERC).
     */
    @Test
    void checkpointsResumeWithAnotherNumberOfRanks(@TempDir Path dir) throws Exception {
        ModelConfig c = config("emo");
        int half = STEPS / 2;
        double[] straight = span(c, null, 2 * B, 0, STEPS, null, null);
        Path fromTwo = dir.resolve("from-two"), fromOne = dir.resolve("from-one");
        onRanks(2, comm -> span(c, comm, B, 0, half, null, fromTwo));
        double[] onOne = span(c, null, 2 * B, half, STEPS, fromTwo, null);
        span(c, null, 2 * B, 0, half, null, fromOne);
        double[][] onTwo = new double[2][];
        onRanks(2, comm -> onTwo[comm.rank()] = span(c, comm, B, half, STEPS, fromOne, null));
        for (int s = half; s < STEPS; s++) {
            double tol = 2e-4 * Math.max(1, straight[s]);
            assertEquals(straight[s], onOne[s - half], tol, "2 ranks -> 1 rank: loss of step " + s);
            assertEquals(straight[s], onTwo[0][s - half], tol, "1 rank -> 2 ranks: loss of step " + s);
        }
    }

    @Test
    void withoutRoutingHooksEmoDiffers() throws Exception {
        ModelConfig c = config("emo");
        Run one = train(c, null, 2 * B, 1, true);
        Run[] two = ranks(c, 2, 1, false);
        assertThrows(AssertionError.class, () -> assertClose(one, two[0], "emo without hooks"));
    }
}
