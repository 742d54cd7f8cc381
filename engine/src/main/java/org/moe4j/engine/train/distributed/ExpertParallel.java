package org.moe4j.engine.train.distributed;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.ExpertExecutor;
import org.moe4j.engine.model.ExpertSlots;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.nativ.mpi.Communicator;
import org.moe4j.simd.Tensor;

/**
 * Expert parallelism over every rank of a {@link Communicator} (docs/DISTRIBUTED.md, "Expert parallel"): the routed
 * experts of each layer are split into contiguous ranges ({@link ExpertExchange#firstExpert}); each rank routes its
 * own tokens, sends each kept slot's row to the rank owning its expert (counts first, then the rows, all-to-all-v),
 * runs its own experts' GEMMs over the rows it received (one contiguous block per expert) and sends the outputs back;
 * the backward sends dL/dy rows to the owners and dL/dx rows back, and the experts' weight gradients stay on their
 * owner, where they are already summed over every rank's tokens. Shared experts, attention, norms, routers and the
 * embeddings are data parallel ({@link DataParallel} reduces only their gradients, {@link #denseStarts}). With
 * {@code --expert-ranks W} below the N ranks, groups of W consecutive ranks each split the experts and are
 * data-parallel replicas of each other: rows travel inside a group, and each expert's gradient is summed over its
 * N/W owners ({@link #reduceExpertGradients}) on communicators split from the world.
 *
 * <p>Every rank keeps the whole flat parameter buffer (the checkpoint layout), but updates only its own routed
 * experts ({@link #partition}); the others' copies are stale except for what crosses ranks on purpose: the W1 of
 * every routed expert after every step when ERC is on (ERC couples each router row with every expert's W1), and
 * every expert, with its AdamW moments, gathered onto rank 0 (from group 0) before a checkpoint ({@link #gatherForSave}). Buffers
 * are allocated once: the owner's for the worst case that every rank sends it all its slots.
 */
public final class ExpertParallel implements ExpertExecutor, AutoCloseable {
    /** The expert-parallel group this rank belongs to (the world when W = N), and its replicas' group (or null). */
    private final Communicator comm, replicas;
    private final boolean ownsComm;
    private final int rank, ranks, replica, L, routed, d, hid, owned, first;
    private final long expertFloats;
    private final ExpertExchange[] exchange;
    private final Arena arena = Arena.ofShared();
    /** Per layer: the received rows and the owner's activations, kept from the forward for the backward. */
    private final MemorySegment[] xeL, a13L, actL;
    private final MemorySegment rowsD, dactL, w1Send, w1Recv, none;
    private final long[] expertStart;
    private final long[] denseStart, denseLen;
    private final int[] sendCounts, sendDispls, recvCounts, recvDispls;
    private final boolean syncW1;
    private MemorySegment params;
    private long bytesSent, collectives, bytesReduced;

    /** Expert parallel over every rank of {@code world} (W = N); see {@link #ExpertParallel(Communicator, MoeTransformer, int)}. */
    public ExpertParallel(Communicator world, MoeTransformer tr) {
        this(world, tr, 0);
    }

    /**
     * Builds the exchange for {@code tr}'s shapes and installs itself as its expert executor. {@code expertRanks} W
     * (0: all): the N ranks form N/W data-parallel replicas of W consecutive ranks; the experts are split over the W
     * ranks of each replica, and each expert's gradient is summed over the N/W ranks owning it (one per replica).
     * Collective over {@code world} (it splits it when W < N).
     */
    public ExpertParallel(Communicator world, MoeTransformer tr, int expertRanks) {
        ModelConfig c = tr.config();
        for (int l = 0; l < c.layers(); l++)
            if (c.experts(l) != c.experts()) throw new Moe4jException("--distributed expert: this model has a different number of experts per layer "
                    + "(layer " + l + " has " + c.experts(l) + " of " + c.experts() + "); expert parallelism splits the "
                    + "same experts in every layer — use --distributed data");
        int n = world.size(), w = expertRanks == 0 ? n : expertRanks;
        if (w < 1 || n % w != 0)
            throw new Moe4jException("--expert-ranks " + expertRanks + ": must divide the " + n + " ranks (each group of "
                    + "that many consecutive ranks splits the experts; the groups are data-parallel replicas)");
        if (w == n) {
            comm = world;
            replicas = null;
            ownsComm = false;
        } else {
            comm = world.split(world.rank() / w, world.rank() % w);
            replicas = world.split(world.rank() % w, world.rank() / w);
            ownsComm = true;
        }
        replica = world.rank() / w;
        rank = comm.rank();
        ranks = comm.size();
        L = c.layers();
        routed = c.routedExperts();
        d = c.d();
        hid = c.expertHidden();
        if (routed < ranks) {
            close();
            throw new Moe4jException("--distributed expert: " + ranks + " ranks split the experts but the model has "
                    + routed + " routed experts per layer; expert parallelism needs at least one expert per rank (use "
                    + "fewer ranks, --expert-ranks with fewer, or --distributed data)");
        }
        expertFloats = 3L * hid * d;
        if (routed * expertFloats * 4 > Integer.MAX_VALUE) {
            close();
            throw new Moe4jException("--distributed expert: one layer's routed experts take " + routed * expertFloats * 4
                    + " bytes, more than one MPI exchange of this build carries (2^31 - 1)");
        }
        ExpertSlots s0 = tr.expertSlots(0);
        int maxRows = Math.multiplyExact(ranks, s0.maxSlots());
        exchange = new ExpertExchange[L];
        xeL = new MemorySegment[L];
        a13L = new MemorySegment[L];
        actL = new MemorySegment[L];
        for (int l = 0; l < L; l++) {
            exchange[l] = new ExpertExchange(comm, routed, maxRows, d);
            xeL[l] = rows(maxRows, d);
            a13L[l] = rows(maxRows, 2 * hid);
            actL[l] = rows(maxRows, hid);
        }
        rowsD = rows(maxRows, d);
        dactL = rows(maxRows, hid);
        first = exchange[0].firstExpert(rank);
        owned = exchange[0].owned();
        syncW1 = c.loss().erc() > 0 && ranks > 1;
        w1Send = syncW1 ? rows((long) owned * hid, d) : null;
        w1Recv = syncW1 ? rows((long) routed * hid, d) : null;
        none = arena.allocate(Tensor.ALIGNMENT, Tensor.ALIGNMENT);
        sendCounts = new int[ranks];
        sendDispls = new int[ranks];
        recvCounts = new int[ranks];
        recvDispls = new int[ranks];
        ParamLayout lay = tr.model().layout();
        expertStart = new long[L];
        for (int l = 0; l < L; l++) {
            expertStart[l] = lay.offset(ParamLayout.gateProj(l, 0));
            if (lay.offset(ParamLayout.downProj(l, routed - 1)) + (long) d * hid != expertStart[l] + routed * expertFloats)
                throw new Moe4jException("layout: layer " + l + ": the routed experts are not one contiguous block");
        }
        List<long[]> dense = new ArrayList<>();
        long at = 0;
        for (int l = 0; l < L; l++) {
            if (expertStart[l] > at) dense.add(new long[] {at, expertStart[l] - at});
            at = expertStart[l] + routed * expertFloats;
        }
        if (lay.total() > at) dense.add(new long[] {at, lay.total() - at});
        denseStart = new long[dense.size()];
        denseLen = new long[dense.size()];
        for (int i = 0; i < dense.size(); i++) {
            denseStart[i] = dense.get(i)[0];
            denseLen[i] = dense.get(i)[1];
        }
        params = tr.model().params();
        tr.expertExecutor(this);
    }

    private MemorySegment rows(long n, int width) {
        return arena.allocate(Math.max(4L, n * width * 4), Tensor.ALIGNMENT);
    }

    /** The first routed expert this rank owns; it owns {@link #owned()} of each layer. */
    public int firstExpert() {
        return first;
    }

    public int owned() {
        return owned;
    }

    /** Ranks the experts are split over (W), and this rank's data-parallel replica (0 .. N/W - 1). */
    public int expertRanks() {
        return ranks;
    }

    public int replica() {
        return replica;
    }

    /** Bytes of expert gradients this rank has all-reduced over the replicas so far. */
    public long bytesReduced() {
        return bytesReduced;
    }

    /**
     * With replicas (W < N): sums this rank's experts' gradients over the N/W ranks owning them, in place (buckets of
     * {@code bucketFloats}). Collective over the replicas' group; nothing without replicas.
     */
    public void reduceExpertGradients(MemorySegment grads, int bucketFloats) {
        if (replicas == null || replicas.size() == 1) return;
        for (int l = 0; l < L; l++) {
            long from = expertStart[l] + first * expertFloats, end = from + owned * expertFloats;
            for (long o = from; o < end; o += bucketFloats) {
                long n = Math.min(bucketFloats, end - o);
                replicas.allReduceSum(grads, o * 4, n);
                bytesReduced += n * 4;
                collectives++;
            }
        }
    }

    /** The parameter ranges (element offset, length) every rank holds and updates alike: all but the routed experts. */
    public long[] denseStarts() {
        return denseStart.clone();
    }

    public long[] denseLengths() {
        return denseLen.clone();
    }

    /** Bytes this rank has handed to all-to-all (rows, counts, W1, checkpoint gathers) so far, and the calls. */
    public long bytesSent() {
        return bytesSent;
    }

    public long collectives() {
        return collectives;
    }

    // ------------------------------------------------------------------------------------------- the exchange

    @Override
    public void forward(ExpertSlots s) {
        int l = s.layer(), E = s.experts();
        int[] offsets = s.offsets();
        ExpertExchange ex = exchange[l];
        ex.plan(offsets); // counts first
        ex.dispatch(s.xe(), d, xeL[l]);
        s.forward(ex.localOffsets(), 0, owned, first, xeL[l], a13L[l], actL[l], rowsD);
        ex.combine(rowsD, d, s.ye());
        count(ex, offsets, 3, true);
        if (E > routed) s.forward(offsets, routed, E, 0, s.xe(), s.a13(), s.act(), s.ye()); // shared: here
    }

    @Override
    public void backward(ExpertSlots s) {
        int l = s.layer(), E = s.experts();
        int[] offsets = s.offsets();
        ExpertExchange ex = exchange[l];
        ex.dispatch(s.dye(), d, rowsD); // the forward's plan still holds: same routing, same counts
        s.backward(ex.localOffsets(), 0, owned, first, xeL[l], a13L[l], actL[l], rowsD, dactL, rowsD);
        ex.combine(rowsD, d, s.dye()); // dL/dxe, in dye's place (its routed rows are sent; the shared ones stay)
        count(ex, offsets, 2, false);
        if (E > routed) s.backward(offsets, routed, E, 0, s.xe(), s.a13(), s.act(), s.dye(), s.dact(), s.dye());
    }

    /**
     * Counts what this rank handed to other ranks: its rows for their experts and the results it sends back (d floats
     * each), and, for a plan, its counts for their experts.
     */
    private void count(ExpertExchange ex, int[] offsets, int calls, boolean planned) {
        long mine = offsets[first + owned] - offsets[first]; // rows this rank keeps for its own experts
        bytesSent += (offsets[routed] - mine + ex.received() - mine) * d * 4L;
        if (planned) bytesSent += 4L * (routed - owned);
        collectives += calls;
    }

    @Override
    public double ercExpertScale() {
        return ranks;
    }

    // ------------------------------------------------------------------------------------------- the update

    /** Which tensors this rank updates: the dense ones, and its own routed experts. */
    public AdamWOptimizer.Partition partition() {
        return new AdamWOptimizer.Partition() {
            @Override
            public boolean split(long offset) {
                return layerOf(offset) >= 0;
            }

            @Override
            public boolean owns(long offset) {
                int l = layerOf(offset);
                int j = (int) ((offset - expertStart[l]) / expertFloats);
                return j >= first && j < first + owned;
            }

            @Override
            public double sumOverRanks(double v) {
                if (ranks == 1) return v;
                MemorySegment one = none;
                one.set(java.lang.foreign.ValueLayout.JAVA_DOUBLE, 0, v);
                comm.allReduceSumDouble(one, 0, 1);
                collectives++;
                bytesSent += 8;
                return one.get(java.lang.foreign.ValueLayout.JAVA_DOUBLE, 0);
            }
        };
    }

    /** The layer whose routed-expert block holds element {@code offset}, or -1. */
    private int layerOf(long offset) {
        for (int l = 0; l < L; l++)
            if (offset >= expertStart[l] && offset < expertStart[l] + routed * expertFloats) return l;
        return -1;
    }

    /**
     * After each optimizer step, with ERC on: every routed expert's W1 from its owner to every rank (ERC's loss of
     * a layer reads them all). Collective.
     */
    public void afterStep() {
        if (!syncW1) return;
        long hd = (long) hid * d;
        for (int l = 0; l < L; l++) {
            for (int j = 0; j < owned; j++)
                MemorySegment.copy(params, (expertStart[l] + (first + j) * expertFloats) * 4, w1Send, j * hd * 4, hd * 4);
            for (int p = 0; p < ranks; p++) {
                int a = exchange[l].firstExpert(p), b = exchange[l].firstExpert(p + 1);
                sendCounts[p] = (int) (owned * hd * 4);
                sendDispls[p] = 0;
                recvCounts[p] = (int) ((b - a) * hd * 4);
                recvDispls[p] = (int) (a * hd * 4);
            }
            comm.allToAllV(w1Send, sendCounts, sendDispls, w1Recv, recvCounts, recvDispls);
            collectives++;
            bytesSent += (ranks - 1) * owned * hd * 4;
            for (int j = 0; j < routed; j++) {
                if (j >= first && j < first + owned) continue;
                MemorySegment.copy(w1Recv, j * hd * 4, params, (expertStart[l] + j * expertFloats) * 4, hd * 4);
            }
        }
    }

    /**
     * Gathers every rank's routed experts (parameters and both AdamW moments) into rank 0's buffers, so that rank 0
     * writes a complete checkpoint in the single-process format. Collective; call on every rank before rank 0 saves.
     */
    public void gatherForSave(AdamWOptimizer opt) {
        if (ranks == 1 || replica != 0) return; // replica 0 holds every expert; world rank 0 is its rank 0
        for (MemorySegment buf : new MemorySegment[] {params, opt.firstMoment(), opt.secondMoment()}) {
            for (int l = 0; l < L; l++) {
                MemorySegment block = buf.asSlice(expertStart[l] * 4, routed * expertFloats * 4);
                for (int p = 0; p < ranks; p++) {
                    int a = exchange[l].firstExpert(p), b = exchange[l].firstExpert(p + 1);
                    sendCounts[p] = rank != 0 && p == 0 ? (int) (owned * expertFloats * 4) : 0;
                    sendDispls[p] = rank != 0 && p == 0 ? (int) (first * expertFloats * 4) : 0;
                    recvCounts[p] = rank == 0 && p != 0 ? (int) ((b - a) * expertFloats * 4) : 0;
                    recvDispls[p] = rank == 0 && p != 0 ? (int) (a * expertFloats * 4) : 0;
                }
                // rank 0 receives into its buffer and sends nothing; the others send from theirs (never the same memory)
                comm.allToAllV(rank == 0 ? none : block, sendCounts, sendDispls, rank == 0 ? block : none, recvCounts,
                        recvDispls);
                collectives++;
                if (rank != 0) bytesSent += owned * expertFloats * 4;
            }
        }
    }

    @Override
    public void close() {
        if (exchange != null) for (ExpertExchange ex : exchange) if (ex != null) ex.close();
        arena.close();
        if (ownsComm) { // collective: every rank closes its expert parallel at the same point
            replicas.close();
            comm.close();
        }
    }
}
