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
import org.moe4j.engine.model.ExpertSlots;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.CheckpointImage;
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
 * model has 5 routed experts and a shared one, so the split is uneven and the shared expert stays local. Each rank's
 * model holds the dense tensors and its own experts only (its rank-local layout). Without the exchange (every rank
 * running its own experts over its own rows only, the others' rows dropped) the losses differ: the property can fail.
 */
class ExpertParallelEquivalenceTest {
    static final int B = 2;

    /**
     * One rank's losses, its weights and AdamW first moment in {@code layout} (rank 0: the whole model gathered from its
     * group, as a checkpoint holds it; the other ranks: their own rank-local buffers).
     */
    record Run(double[] losses, float[] params, float[] m, ParamLayout layout, long receiveBytes) {
        Run(double[] losses, float[] params, float[] m, ParamLayout layout) {
            this(losses, params, m, layout, 0);
        }

        /** The values of tensor {@code name}. */
        float[] tensor(String name) {
            ParamLayout.Entry e = layout.entry(name);
            return Arrays.copyOfRange(params, (int) e.offset(), (int) (e.offset() + e.numel()));
        }
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
        return span(c, comm, expertRanks, batch, accum, from, to, resume, save, exchange, -1);
    }

    /** As above, the owners' receive buffers first sized for {@code initialRows} rows (-1: the default). */
    static Run span(ModelConfig c, Communicator comm, int expertRanks, int batch, int accum, int from, int to,
                    Path resume, Path save, boolean exchange, int initialRows) {
        // expert parallel: this rank's model holds the dense tensors and its own experts (from the checkpoint: that slice)
        java.util.function.Function<ModelConfig, ParamLayout> layoutOf = comm == null ? ParamLayout::new
                : cfg -> ExpertParallel.rankLayout(cfg, comm.rank(), comm.size(), expertRanks);
        try (WorkerPool pool = new WorkerPool(1);
             MoeModel m = resume != null ? ModelCheckpoint.load(resume, null, layoutOf)
                     : new MoeModel(layoutOf.apply(c), true).initRandom(11);
             MoeTransformer tr = new MoeTransformer(m, batch * T, batch, c.maxRoutedK(), new JavaGemm(pool), pool);
             AdamWOptimizer opt = new AdamWOptimizer(m, pool)) {
            tr.useDefaults(true, 7);
            var src = new SyntheticCorpus(c.vocab(), c.eosId(), 3, 4, 5);
            if (resume != null) {
                var st = ModelCheckpoint.loadState(resume, opt.firstMoment(), opt.secondMoment(), m.layout());
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
                ep = new ExpertParallel(comm, tr, expertRanks, initialRows);
                // the broken variant: the rank's own experts over its own rows, no exchange (the other experts' rows
                // are dropped, and an owner's expert gradient misses the other ranks' tokens)
                if (!exchange) tr.expertExecutor(ownRowsOnly(ep.firstExpert(), ep.owned()));
                dp.experts(ep);
                opt.partition(ep.partition());
                tn = new Trainer(tr, opt, RankShards.of(src, comm.rank(), comm.size()), opts(batch, accum), null).replicas(dp);
            }
            double[] losses = new double[to - from];
            for (int s = from; s < to; s++) losses[s - from] = tn.step().loss();
            Run run;
            try (CheckpointImage img = ep != null ? ep.gather(opt) : CheckpointImage.live(m, opt)) {
                if (save != null && img != null)
                    ModelCheckpoint.save(save, img.model(), new ModelCheckpoint.TrainState(img.firstMoment(),
                            img.secondMoment(), opt.stepCount(), tn.source().position(), tr.routingRng().state(),
                            tr.ercRng().state(), null), null);
                long received = ep == null ? 0 : ep.receiveBytes()[0];
                run = img != null
                        ? new Run(losses, img.model().params().toArray(ValueLayout.JAVA_FLOAT),
                                img.firstMoment().toArray(ValueLayout.JAVA_FLOAT), img.model().layout(), received)
                        : new Run(losses, m.params().toArray(ValueLayout.JAVA_FLOAT),
                                opt.firstMoment().toArray(ValueLayout.JAVA_FLOAT), m.layout(), received);
            }
            if (comm != null) comm.barrier();
            if (ep != null) ep.close();
            if (dp != null) dp.close();
            return run;
        }
    }

    /**
     * The broken executor: experts first .. first + owned - 1 (and the shared ones) over this rank's own rows, the
     * rows of the other routed experts giving 0 forward and backward.
     */
    static ExpertExecutor ownRowsOnly(int first, int owned) {
        return new ExpertExecutor() {
            @Override
            public void forward(ExpertSlots s) {
                int[] o = s.offsets();
                s.ye().asSlice(0, (long) o[s.routed()] * s.d() * 4).fill((byte) 0);
                s.forward(o, first, first + owned, 0, s.xe(), s.a13(), s.act(), s.ye());
                s.forward(o, s.routed(), s.experts(), 0, s.xe(), s.a13(), s.act(), s.ye());
            }

            @Override
            public void backward(ExpertSlots s) {
                int[] o = s.offsets();
                long row = s.d() * 4L;
                s.dye().asSlice(0, o[first] * row).fill((byte) 0);
                s.dye().asSlice(o[first + owned] * row, (o[s.routed()] - o[first + owned]) * row).fill((byte) 0);
                s.backward(o, first, first + owned, 0, s.xe(), s.a13(), s.act(), s.dye(), s.dact(), s.dye());
                s.backward(o, s.routed(), s.experts(), 0, s.xe(), s.a13(), s.act(), s.dye(), s.dact(), s.dye());
            }
        };
    }

    static Run[] ranks(int w, java.util.function.Function<Communicator, Run> body) throws Exception {
        Run[] out = new Run[w];
        DataParallelEquivalenceTest.onRanks(w, comm -> out[comm.rank()] = body.apply(comm));
        return out;
    }

    static void assertClose(Run one, Run r, String what) {
        assertTrue(one.layout().isWhole() && r.layout().isWhole(), what + ": compare whole models");
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
        // every tensor rank 1 holds (the dense ones, the shared expert and its own routed experts 2..4) is bit-identical
        // to what rank 0 gathered; rank 1 does not hold rank 0's experts at all
        ParamLayout mine = two[1].layout();
        assertFalse(mine.isWhole());
        for (ParamLayout.Entry e : mine.entries())
            assertTrue(Arrays.equals(two[0].tensor(e.name()), two[1].tensor(e.name())),
                    routing + ": " + e.name() + " differs between the ranks");
        assertFalse(mine.has(ParamLayout.downProj(0, 0)), routing + ": rank 1 holds expert 0");
        assertTrue(mine.has(ParamLayout.downProj(0, 2)) && mine.has(ParamLayout.downProj(0, c.experts() - 1)));
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
        assertTrue(Arrays.equals(grid[0].tensor(ParamLayout.downProj(1, 0)), grid[2].tensor(ParamLayout.downProj(1, 0))),
                routing + ": replicas of expert 0");
        assertFalse(grid[2].layout().has(ParamLayout.downProj(1, 2)), routing + ": rank 2 holds rank 1's expert 2");
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

    /**
     * The owners' receive buffers grow with what arrives: started empty, every one is grown by the routing (to the rows
     * received plus a quarter) inside the forward, and the run still equals one process (EMO, 3 ranks, accumulation).
     */
    @Test
    void receiveBuffersGrownFromNothingGiveTheSameRun() throws Exception {
        ModelConfig c = DataParallelEquivalenceTest.config("emo");
        Run one = span(c, null, 3 * B, 2, 0, STEPS, null, null, true);
        Run[] three = ranks(3, comm -> span(c, comm, 0, B, 2, 0, STEPS, null, null, true, 0));
        assertClose(one, three[0], "emo, 3 expert-parallel ranks, receive buffers grown from 0 rows, rank 0");
        for (int r = 0; r < 3; r++) // 4 bytes for each empty buffer: (3 per layer + staging) x layers + 2 scratch
            assertTrue(three[r].receiveBytes() > 4L * (4 * c.layers() + 2), "rank " + r + ": buffers grown");
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
     * A checkpoint of 2 expert-parallel ranks (each holding its own experts; rank 0 gathers them for the save) resumes
     * on 1 rank and on 3 expert-parallel ranks (each loading only its slice, split another way: 2 | 3 experts become
     * 1 | 2 | 2), and a 1-rank one on 2, each continuing with the losses of 20 straight steps and ending with their
     * weights and AdamW moments (EMO routing, ERC on; a global batch of 6 = 2 x 3 = 3 x 2).
     */
    @Test
    void checkpointsResumeWithAnotherNumberOfRanks(@TempDir Path dir) throws Exception {
        ModelConfig c = DataParallelEquivalenceTest.config("emo");
        int half = STEPS / 2, global = 6;
        Run straight = span(c, null, global, 1, 0, STEPS, null, null, true);
        Path fromTwo = dir.resolve("from-two"), fromOne = dir.resolve("from-one");
        ranks(2, comm -> span(c, comm, global / 2, 1, 0, half, null, fromTwo, true));
        Run onOne = span(c, null, global, 1, half, STEPS, fromTwo, null, true);
        Run[] onThree = ranks(3, comm -> span(c, comm, global / 3, 1, half, STEPS, fromTwo, null, true));
        span(c, null, global, 1, 0, half, null, fromOne, true);
        Run[] onTwo = ranks(2, comm -> span(c, comm, global / 2, 1, half, STEPS, fromOne, null, true));
        Run tail = new Run(Arrays.copyOfRange(straight.losses(), half, STEPS), straight.params(), straight.m(),
                straight.layout());
        assertClose(tail, onOne, "2 ranks -> 1 rank");
        assertClose(tail, onThree[0], "2 ranks -> 3 ranks, rank 0 (experts gathered)");
        assertClose(tail, onTwo[0], "1 rank -> 2 ranks, rank 0 (experts gathered)");
        assertEquals(1, onThree[1].layout().firstExpert(), "3 ranks: rank 1 holds experts 1..2");
        assertEquals(2, onThree[1].layout().heldExperts(), "3 ranks: rank 1 holds experts 1..2");
    }

    /**
     * The memory division: each rank's parameters, gradients and both AdamW moments hold the dense tensors (counted
     * here from the config's shapes) plus its own routed experts, ⌊(r+1)·E'/W⌋ - ⌊r·E'/W⌋ of 3·h·d floats per layer,
     * for W = 2 and 3 over the tiny model's 5 routed experts (uneven splits); every routed expert is held by exactly
     * one rank of the group; and ERC's copy of the other ranks' W1 takes (E' - owned)·h·d floats per layer.
     */
    @ParameterizedTest
    @ValueSource(ints = {2, 3})
    void eachRankHoldsTheDenseTensorsAndItsOwnExperts(int w) throws Exception {
        ModelConfig c = DataParallelEquivalenceTest.config("emo");
        int d = c.d(), h = c.expertHidden(), L = c.layers(), routed = c.routedExperts(), dh = c.headSize();
        long qw = (long) c.heads() * dh, kw = (long) c.kvHeads() * dh, expert = 3L * h * d;
        long perLayer = d + qw * d + 2 * kw * d + d * qw + (c.qkNorm() ? qw + kw : 0) + d + (long) c.experts() * d
                + (long) c.sharedExperts() * expert;
        long dense = (long) c.vocab() * d + L * perLayer + d + (c.tied() ? 0 : (long) c.vocab() * d);
        assertEquals(new ParamLayout(c).total(), dense + L * routed * expert, "the whole model's arithmetic");
        assertTrue(c.loss().erc() > 0, "the config has ERC on (the W1 copy is checked)");
        long[][] held = new long[w][];
        int[][] range = new int[w][];
        ranks(w, comm -> {
            ParamLayout lay = ExpertParallel.rankLayout(c, comm.rank(), w, 0);
            try (WorkerPool pool = new WorkerPool(1);
                 MoeModel m = new MoeModel(lay, true).initRandom(11);
                 MoeTransformer tr = new MoeTransformer(m, B * T, B, c.maxRoutedK(), new JavaGemm(pool), pool);
                 AdamWOptimizer opt = new AdamWOptimizer(m, pool);
                 ExpertParallel ep = new ExpertParallel(comm, tr)) {
                held[comm.rank()] = new long[] {m.params().byteSize(), m.grads().byteSize(),
                        opt.firstMoment().byteSize(), opt.secondMoment().byteSize(), ep.w1CopyBytes(),
                        ep.receiveBytes()[0], ep.receiveBytes()[1], tr.expertSlots(0).maxSlots()};
                range[comm.rank()] = new int[] {ep.firstExpert(), ep.owned(), lay.firstExpert(), lay.heldExperts()};
            }
            return null;
        });
        boolean[] seen = new boolean[routed];
        for (int r = 0; r < w; r++) {
            int first = r * routed / w, owned = (r + 1) * routed / w - first;
            assertEquals(first, range[r][0], "rank " + r + " of " + w + ": first expert");
            assertEquals(owned, range[r][1], "rank " + r + " of " + w + ": experts owned");
            assertEquals(first, range[r][2], "rank " + r + " of " + w + ": the layout's first expert");
            assertEquals(owned, range[r][3], "rank " + r + " of " + w + ": the layout's experts");
            long bytes = 4 * (dense + (long) L * owned * expert);
            for (int b = 0; b < 4; b++)
                assertEquals(bytes, held[r][b], "rank " + r + " of " + w + ": bytes of buffer " + b
                        + " (parameters, gradients, first moment, second moment)");
            assertEquals(4L * L * (routed - owned) * h * d, held[r][4], "rank " + r + " of " + w + ": ERC's W1 copy");
            // the receive side starts at the even share of the group's slots plus a quarter, not the worst case
            long maxRows = w * held[r][7], even = maxRows * owned / routed * 5 / 4;
            assertEquals(4 * even * (L * (d + 2L * h + h + d) + d + h), held[r][5], "rank " + r + " of " + w + ": receive buffers");
            assertEquals(4 * maxRows * (L * (d + 2L * h + h + d) + d + h), held[r][6], "rank " + r + " of " + w + ": worst case");
            for (int j = first; j < first + owned; j++) {
                assertFalse(seen[j], "expert " + j + " held twice");
                seen[j] = true;
            }
        }
        for (int j = 0; j < routed; j++) assertTrue(seen[j], "expert " + j + " held by no rank");
    }

    /**
     * The weight check compares what must be identical: the dense tensors over all ranks (a flipped bit in rank 1's
     * router stops every rank) and each rank's experts over the replicas owning them (a flipped bit in rank 2's copy
     * of expert 0, which rank 0 also owns, stops ranks 0 and 2, whose experts differ; ranks 1 and 3 agree). 2 replicas
     * x 2 expert ranks.
     */
    @Test
    void theWeightCheckComparesDenseTensorsOverAllRanksAndExpertsOverTheirReplicas() throws Exception {
        ModelConfig c = DataParallelEquivalenceTest.config("standard");
        for (String flip : new String[] {"router on rank 1", "expert 0 on rank 2"}) {
            String[] msg = new String[4];
            ranks(4, comm -> {
                ParamLayout lay = ExpertParallel.rankLayout(c, comm.rank(), 4, 2);
                try (WorkerPool pool = new WorkerPool(1);
                     MoeModel m = new MoeModel(lay, true).initRandom(11);
                     MoeTransformer tr = new MoeTransformer(m, B * T, B, c.maxRoutedK(), new JavaGemm(pool), pool);
                     DataParallel dp = new DataParallel(comm, 1000, 1, c.experts() + 1).attach(tr);
                     ExpertParallel ep = new ExpertParallel(comm, tr, 2)) {
                    dp.experts(ep);
                    boolean dense = flip.startsWith("router");
                    if (comm.rank() == (dense ? 1 : 2)) {
                        long at = lay.offset(dense ? ParamLayout.router(1) : ParamLayout.downProj(1, 0));
                        m.params().setAtIndex(ValueLayout.JAVA_INT, at, m.params().getAtIndex(ValueLayout.JAVA_INT, at) ^ 1);
                    }
                    try {
                        dp.checkWeights(7);
                    } catch (ReplicaMismatchException e) {
                        msg[comm.rank()] = e.getMessage();
                    }
                }
                return null;
            });
            if (flip.startsWith("router")) {
                for (int r = 0; r < 4; r++)
                    assertTrue(msg[r] != null && msg[r].contains("after step 7 the weights differ across ranks"),
                            flip + ", rank " + r + ": " + msg[r]);
            } else {
                for (int r : new int[] {0, 2})
                    assertTrue(msg[r] != null && msg[r].contains("the routed experts 0..1 differ across the replicas"),
                            flip + ", rank " + r + ": " + msg[r]);
                assertEquals(null, msg[1], flip + ", rank 1");
                assertEquals(null, msg[3], flip + ", rank 3");
            }
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
