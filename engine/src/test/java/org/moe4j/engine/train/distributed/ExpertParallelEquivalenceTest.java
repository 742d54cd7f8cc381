package org.moe4j.engine.train.distributed;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moe4j.engine.train.distributed.DataParallelEquivalenceTest.STEPS;
import static org.moe4j.engine.train.distributed.DataParallelEquivalenceTest.T;

import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.ExpertExecutor;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.LrSchedule;
import org.moe4j.engine.train.SyntheticCorpus;
import org.moe4j.engine.train.Trainer;
import org.moe4j.nativ.mpi.Communicator;
import org.moe4j.nativ.mpi.InProcessCommunicator;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * The expert-parallel property without MPI: W ranks as threads (an {@link InProcessCommunicator} group), each routing
 * its own share (batch B) of every global micro-batch, each layer's routed experts split over the ranks (the rows
 * exchanged with all-to-all-v, forward and backward; the expert gradients kept on their owner; everything else data
 * parallel), give the losses and weights of one process training on the global batch (W·B), within float tolerance,
 * after 20 steps, in standard and EMO routing (pools, global load balance, ERC) and Matryoshka k; a checkpoint written
 * by rank 0 (experts gathered) holds the single-process weights and resumes on another number of ranks. The tiny
 * model has 5 routed experts and a shared one, so the split is uneven and the shared expert stays local. Without the
 * exchange (every rank running every expert over its own rows only) the losses differ: the property can fail.
 */
class ExpertParallelEquivalenceTest {
    static final int B = 2;

    /** One rank's losses and its weights (rank 0: after gathering the experts, as a checkpoint would hold them). */
    record Run(double[] losses, float[] params, float[] m) {
    }

    static Trainer.Options opts(int batch, int accum) {
        return new Trainer.Options(batch, T, accum, new LrSchedule(3e-3, 3, STEPS, 0.1), 1.0, 1000);
    }

    /**
     * Steps [from, to) of one rank (comm null: one process with batch {@code batch}), expert parallel, resuming from
     * {@code resume} and saving to {@code save} (rank 0) when given.
     */
    static Run span(ModelConfig c, Communicator comm, int batch, int accum, int from, int to, Path resume, Path save,
                    boolean exchange) {
        return span(c, comm, 0, batch, accum, from, to, resume, save, exchange);
    }

    /** As above, the experts split over groups of {@code expertRanks} ranks (0: all), the groups being replicas. */
    static Run span(ModelConfig c, Communicator comm, int expertRanks, int batch, int accum, int from, int to,
                    Path resume, Path save, boolean exchange) {
        try (WorkerPool pool = new WorkerPool(1);
             MoeModel m = resume != null ? ModelCheckpoint.load(resume) : new MoeModel(c).initRandom(11);
             MoeTransformer tr = new MoeTransformer(m, batch * T, batch, c.maxRoutedK(), new JavaGemm(pool), pool);
             AdamWOptimizer opt = new AdamWOptimizer(m, pool)) {
            tr.useDefaults(true, 7);
            var src = new SyntheticCorpus(c.vocab(), c.eosId(), 3, 4, 5);
            if (resume != null) {
                var st = ModelCheckpoint.loadState(resume, opt.firstMoment(), opt.secondMoment(), m.layout().total());
                opt.stepCount(st.step());
                src.position(st.dataPosition());
                tr.routingRng().setState(st.routingRngState());
                tr.ercRng().setState(st.ercRngState());
            }
            Trainer tn;
            DataParallel dp = null;
            ExpertParallel ep = null;
            if (comm == null) {
                tn = new Trainer(tr, opt, src, opts(batch, accum), null);
            } else {
                dp = new DataParallel(comm, 1000, 5, c.experts() + 1).attach(tr);
                ep = new ExpertParallel(comm, tr, expertRanks);
                // the broken variant: every expert over the rank's own rows, no exchange (an owner's expert gradient
                // then misses the other ranks' tokens)
                if (!exchange) tr.expertExecutor(ExpertExecutor.LOCAL);
                dp.experts(ep);
                opt.partition(ep.partition());
                tn = new Trainer(tr, opt, RankShards.of(src, comm.rank(), comm.size()), opts(batch, accum), null).replicas(dp);
            }
            double[] losses = new double[to - from];
            for (int s = from; s < to; s++) losses[s - from] = tn.step().loss();
            if (ep != null) ep.gatherForSave(opt);
            if (save != null && (comm == null || comm.rank() == 0))
                ModelCheckpoint.save(save, m, new ModelCheckpoint.TrainState(opt.firstMoment(), opt.secondMoment(),
                        opt.stepCount(), tn.source().position(), tr.routingRng().state(), tr.ercRng().state(), null), null);
            if (comm != null) comm.barrier();
            float[] p = m.params().toArray(ValueLayout.JAVA_FLOAT), mm = opt.firstMoment().toArray(ValueLayout.JAVA_FLOAT);
            if (ep != null) ep.close();
            if (dp != null) dp.close();
            return new Run(losses, p, mm);
        }
    }

    static Run[] ranks(int w, java.util.function.Function<Communicator, Run> body) throws Exception {
        Run[] out = new Run[w];
        DataParallelEquivalenceTest.onRanks(w, comm -> out[comm.rank()] = body.apply(comm));
        return out;
    }

    static void assertClose(Run one, Run r, String what) {
        for (int s = 0; s < one.losses().length; s++)
            assertEquals(one.losses()[s], r.losses()[s], 2e-4 * Math.max(1, Math.abs(one.losses()[s])),
                    what + ": loss of step " + s);
        double maxDiff = 0, maxM = 0;
        for (int i = 0; i < one.params().length; i++) {
            maxDiff = Math.max(maxDiff, Math.abs(one.params()[i] - r.params()[i]));
            maxM = Math.max(maxM, Math.abs(one.m()[i] - r.m()[i]));
        }
        assertTrue(maxDiff < 2e-4, what + ": max weight difference " + maxDiff);
        assertTrue(maxM < 2e-4, what + ": max AdamW first-moment difference " + maxM);
    }

    @ParameterizedTest
    @ValueSource(strings = {"standard", "emo", "matryoshka"})
    void twoExpertParallelRanksEqualOneOnTheGlobalBatch(String routing) throws Exception {
        ModelConfig c = DataParallelEquivalenceTest.config(routing);
        Run one = span(c, null, 2 * B, 1, 0, STEPS, null, null, true);
        Run[] two = ranks(2, comm -> span(c, comm, B, 1, 0, STEPS, null, null, true));
        assertClose(one, two[0], routing + ", 2 expert-parallel ranks, rank 0 (experts gathered)");
        // the dense parameters are bit-identical on both ranks; rank 1's copies of rank 0's experts are stale
        ParamLayout lay = new ParamLayout(c);
        for (ParamLayout.Entry e : lay.entries()) {
            if (e.name().contains(".mlp.experts.") && !e.name().contains(".experts." + (c.experts() - 1) + "."))
                continue;
            int o = (int) e.offset(), n = (int) e.numel();
            assertTrue(Arrays.equals(two[0].params(), o, o + n, two[1].params(), o, o + n),
                    routing + ": " + e.name() + " differs between the ranks");
        }
        // the split is real: rank 1 never updated its copy of expert 0 (rank 0's), so it is still the initial one
        ParamLayout.Entry w2 = lay.entry(ParamLayout.downProj(0, 0));
        int o = (int) w2.offset(), n = (int) w2.numel();
        assertFalse(Arrays.equals(two[0].params(), o, o + n, two[1].params(), o, o + n), routing + ": expert 0 on rank 1");
    }

    /**
     * Expert parallel combined with data parallel: 4 ranks as 2 replicas x 2 expert-parallel ranks (each expert's
     * gradient summed over its 2 owners), and 2 ranks as 2 replicas x 1 (every rank owns every expert: data parallel
     * through the expert-parallel path) equal one process on the global batch; with ERC and EMO's pools.
     */
    @ParameterizedTest
    @ValueSource(strings = {"standard", "emo"})
    void replicasOfExpertGroupsEqualOne(String routing) throws Exception {
        ModelConfig c = DataParallelEquivalenceTest.config(routing);
        Run one = span(c, null, 4 * B, 1, 0, STEPS, null, null, true);
        Run[] grid = ranks(4, comm -> span(c, comm, 2, B, 1, 0, STEPS, null, null, true));
        assertClose(one, grid[0], routing + ", 2 replicas x 2 expert ranks, rank 0");
        // rank 2 is rank 0's replica: it owns the same experts, and holds the same weights for them
        ParamLayout lay = new ParamLayout(c);
        ParamLayout.Entry w2 = lay.entry(ParamLayout.downProj(1, 0));
        int o = (int) w2.offset(), n = (int) w2.numel();
        assertTrue(Arrays.equals(grid[0].params(), o, o + n, grid[2].params(), o, o + n), routing + ": replicas of expert 0");
        Run onePair = span(c, null, 2 * B, 1, 0, STEPS, null, null, true);
        Run[] pair = ranks(2, comm -> span(c, comm, 1, B, 1, 0, STEPS, null, null, true));
        assertClose(onePair, pair[0], routing + ", 2 replicas x 1 expert rank, rank 0");
    }

    @Test
    void expertRanksMustDivideTheRanks() throws Exception {
        ModelConfig c = DataParallelEquivalenceTest.config("standard");
        String[] msg = new String[3];
        ranks(3, comm -> {
            try (WorkerPool pool = new WorkerPool(1);
                 MoeModel m = new MoeModel(c).initRandom(1);
                 MoeTransformer tr = new MoeTransformer(m, T, 1, c.maxRoutedK(), new JavaGemm(pool), pool)) {
                msg[comm.rank()] = assertThrows(Moe4jException.class, () -> new ExpertParallel(comm, tr, 2)).getMessage();
            }
            return null;
        });
        assertTrue(msg[1].contains("--expert-ranks 2: must divide the 3 ranks"), msg[1]);
    }

    @Test
    void threeRanksWithAccumulationEqualOne() throws Exception {
        ModelConfig c = DataParallelEquivalenceTest.config("emo");
        Run one = span(c, null, 3 * B, 2, 0, STEPS, null, null, true);
        Run[] three = ranks(3, comm -> span(c, comm, B, 2, 0, STEPS, null, null, true));
        assertClose(one, three[0], "emo, 3 expert-parallel ranks, 2 micro-batches, rank 0");
    }

    @Test
    void withoutTheExchangeTheLossesDiffer() throws Exception {
        ModelConfig c = DataParallelEquivalenceTest.config("standard");
        Run one = span(c, null, 2 * B, 1, 0, STEPS, null, null, true);
        Run[] two = ranks(2, comm -> span(c, comm, B, 1, 0, STEPS, null, null, false));
        assertThrows(AssertionError.class, () -> assertClose(one, two[0], "no exchange"));
    }

    /**
     * A checkpoint of 2 expert-parallel ranks resumes on 1 rank and on 3 expert-parallel ranks, and a 1-rank one on 2,
     * each continuing with the losses of 20 straight steps (EMO routing).
     */
    @Test
    void checkpointsResumeWithAnotherNumberOfRanks(@TempDir Path dir) throws Exception {
        ModelConfig c = DataParallelEquivalenceTest.config("emo");
        int half = STEPS / 2;
        double[] straight = span(c, null, 2 * B, 1, 0, STEPS, null, null, true).losses();
        Path fromTwo = dir.resolve("from-two"), fromOne = dir.resolve("from-one");
        ranks(2, comm -> span(c, comm, B, 1, 0, half, null, fromTwo, true));
        double[] onOne = span(c, null, 2 * B, 1, half, STEPS, fromTwo, null, true).losses();
        span(c, null, 2 * B, 1, 0, half, null, fromOne, true);
        Run[] onTwo = ranks(2, comm -> span(c, comm, B, 1, half, STEPS, fromOne, null, true));
        for (int s = half; s < STEPS; s++) {
            double tol = 2e-4 * Math.max(1, straight[s]);
            assertEquals(straight[s], onOne[s - half], tol, "2 ranks -> 1 rank: loss of step " + s);
            assertEquals(straight[s], onTwo[0].losses()[s - half], tol, "1 rank -> 2 ranks: loss of step " + s);
        }
    }

    @Test
    void moreRanksThanRoutedExpertsIsRefused() {
        ModelConfig c = DataParallelEquivalenceTest.config("standard");
        InProcessCommunicator[] cs = InProcessCommunicator.group(c.routedExperts() + 1);
        try (WorkerPool pool = new WorkerPool(1);
             MoeModel m = new MoeModel(c).initRandom(1);
             MoeTransformer tr = new MoeTransformer(m, T, 1, c.maxRoutedK(), new JavaGemm(pool), pool)) {
            Moe4jException e = assertThrows(Moe4jException.class, () -> new ExpertParallel(cs[0], tr));
            assertTrue(e.getMessage().contains("at least one expert per rank"), e.getMessage());
            assertFalse(e.getMessage().isEmpty());
        }
    }
}
