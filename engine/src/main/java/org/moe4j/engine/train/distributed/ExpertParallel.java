package org.moe4j.engine.train.distributed;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.ExpertExecutor;
import org.moe4j.engine.model.ExpertSlots;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.CheckpointImage;
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
 * <p>Each rank's model is built on its rank-local layout ({@link #rankLayout}): the dense tensors and its own routed
 * experts only, so its parameters, gradients and AdamW moments take dense + E'/W experts per layer. What crosses ranks
 * besides the rows: with ERC on, the W1 of the other ranks' routed experts, copied after every step into a receive
 * buffer of its own that ERC reads ({@link #afterStep}; ERC couples each router row with every expert's W1), and,
 * before a checkpoint, every expert with its AdamW moments gathered onto rank 0 (from group 0) into a transient whole
 * model ({@link #gather}). Buffers are allocated once: the owner's for the worst case that every rank sends it all
 * its slots.
 */
public final class ExpertParallel implements ExpertExecutor, AutoCloseable {
    /** The expert-parallel group this rank belongs to (the world when W = N), and its replicas' group (or null). */
    private final Communicator comm, replicas;
    private final boolean ownsComm;
    private final int rank, ranks, replica, L, routed, d, hid, owned, first;
    private final long expertFloats;
    private final ExpertExchange[] exchange;
    private final Arena arena = Arena.ofShared();
    /**
     * Per layer: the received rows and the owner's activations, kept from the forward for the backward; and scratch
     * for any layer. Sized for the even share of rows and grown to what arrives (at most the worst case).
     */
    private final RowBuffer[] xeL, a13L, actL;
    private final RowBuffer rowsD, dactL;
    private final int maxRows;
    private final MemorySegment w1Send, w1Other, none, replicaHashes;
    /** expertStart[l]: where this rank's experts of layer l start in its (rank-local) layout, one block of owned. */
    private final long[] expertStart;
    private final long[] denseStart, denseLen;
    private final int[] sendCounts, sendDispls, recvCounts, recvDispls;
    private final boolean syncW1;
    private final MoeModel model;
    private final MemorySegment params;
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
        this(world, tr, expertRanks, -1);
    }

    /**
     * As above, the receive buffers first sized for {@code initialRows} rows per layer (-1: the even share plus a
     * quarter; tests pass 0 to have every buffer grown by the routing).
     */
    ExpertParallel(Communicator world, MoeTransformer tr, int expertRanks, int initialRows) {
        ModelConfig c = tr.config();
        int n = world.size(), w = groupSize(c, n, expertRanks);
        ParamLayout lay = tr.model().layout(), mine = rankLayout(c, world.rank(), n, expertRanks);
        if (lay.firstExpert() != mine.firstExpert() || lay.heldExperts() != mine.heldExperts())
            throw new Moe4jException("--distributed expert: rank " + world.rank() + " owns routed experts "
                    + mine.firstExpert() + ".." + (mine.firstExpert() + mine.heldExperts() - 1) + " of each layer, but "
                    + "its model holds " + lay.firstExpert() + ".." + (lay.firstExpert() + lay.heldExperts() - 1)
                    + "; build it on ExpertParallel.rankLayout (DistributedRun.layout) so that it holds its own experts only");
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
        expertFloats = 3L * hid * d;
        ExpertSlots s0 = tr.expertSlots(0);
        // the most rows an owner can receive: every rank of the group sending all its slots to it
        maxRows = Math.multiplyExact(ranks, s0.maxSlots());
        first = mine.firstExpert();
        owned = mine.heldExperts();
        // its even share (the group's slots spread evenly over the routed experts) plus a quarter, to start with
        int even = initialRows >= 0 ? Math.min(initialRows, maxRows)
                : (int) Math.min(maxRows, (long) maxRows * owned / routed * 5 / 4);
        exchange = new ExpertExchange[L];
        xeL = new RowBuffer[L];
        a13L = new RowBuffer[L];
        actL = new RowBuffer[L];
        for (int l = 0; l < L; l++) {
            exchange[l] = new ExpertExchange(comm, routed, even, maxRows, d);
            xeL[l] = new RowBuffer(d, even, maxRows);
            a13L[l] = new RowBuffer(2 * hid, even, maxRows);
            actL[l] = new RowBuffer(hid, even, maxRows);
        }
        rowsD = new RowBuffer(d, even, maxRows);
        dactL = new RowBuffer(hid, even, maxRows);
        if (exchange[0].firstExpert(rank) != first || exchange[0].owned() != owned)
            throw new Moe4jException("ExpertParallel: the exchange splits the experts unlike rankLayout (rank " + rank
                    + ": " + exchange[0].firstExpert(rank) + " + " + exchange[0].owned() + " vs " + first + " + " + owned + ")");
        syncW1 = c.loss().erc() > 0 && ranks > 1;
        long hd = (long) hid * d;
        w1Send = syncW1 ? rows((long) owned * hid, d) : null;
        // ERC's copy of the other ranks' W1, every layer: [L][routed - owned][h, d], experts in id order
        w1Other = syncW1 ? rows((long) L * (routed - owned) * hid, d) : null;
        none = arena.allocate(Tensor.ALIGNMENT, Tensor.ALIGNMENT);
        replicaHashes = arena.allocate(8L * Math.max(1, replicas == null ? 1 : replicas.size()), Tensor.ALIGNMENT);
        sendCounts = new int[ranks];
        sendDispls = new int[ranks];
        recvCounts = new int[ranks];
        recvDispls = new int[ranks];
        expertStart = new long[L];
        for (int l = 0; l < L; l++) {
            expertStart[l] = lay.offset(ParamLayout.gateProj(l, first));
            if (lay.offset(ParamLayout.downProj(l, first + owned - 1)) + hd != expertStart[l] + owned * expertFloats)
                throw new Moe4jException("layout: layer " + l + ": this rank's routed experts are not one contiguous block");
        }
        List<long[]> dense = new ArrayList<>();
        long at = 0;
        for (int l = 0; l < L; l++) {
            if (expertStart[l] > at) dense.add(new long[] {at, expertStart[l] - at});
            at = expertStart[l] + owned * expertFloats;
        }
        if (lay.total() > at) dense.add(new long[] {at, lay.total() - at});
        denseStart = new long[dense.size()];
        denseLen = new long[dense.size()];
        for (int i = 0; i < dense.size(); i++) {
            denseStart[i] = dense.get(i)[0];
            denseLen[i] = dense.get(i)[1];
        }
        model = tr.model();
        params = model.params();
        if (syncW1) {
            for (int l = 0; l < L; l++)
                for (int j = 0; j < routed; j++)
                    if (j < first || j >= first + owned) tr.expertSlots(l).w1From(j, w1Other, w1OtherAt(l, j));
            afterStep(); // the first step's ERC reads the initial (or loaded) W1 of every expert
        }
        tr.expertExecutor(this);
    }

    /**
     * The ranks of one expert group (W) for {@code expertRanks} (0: all {@code worldSize}), after checking that the
     * model and the ranks allow expert parallelism (the same routed experts in every layer, W dividing the ranks,
     * at least one routed expert per rank of a group).
     */
    static int groupSize(ModelConfig c, int worldSize, int expertRanks) {
        for (int l = 0; l < c.layers(); l++)
            if (c.experts(l) != c.experts()) throw new Moe4jException("--distributed expert: this model has a different number of experts per layer "
                    + "(layer " + l + " has " + c.experts(l) + " of " + c.experts() + "); expert parallelism splits the "
                    + "same experts in every layer — use --distributed data");
        int w = expertRanks == 0 ? worldSize : expertRanks;
        if (w < 1 || worldSize % w != 0)
            throw new Moe4jException("--expert-ranks " + expertRanks + ": must divide the " + worldSize + " ranks (each group of "
                    + "that many consecutive ranks splits the experts; the groups are data-parallel replicas)");
        int routed = c.routedExperts();
        if (routed < w)
            throw new Moe4jException("--distributed expert: " + w + " ranks split the experts but the model has "
                    + routed + " routed experts per layer; expert parallelism needs at least one expert per rank (use "
                    + "fewer ranks, --expert-ranks with fewer, or --distributed data)");
        if (routed * 3L * c.expertHidden() * c.d() * 4 > Integer.MAX_VALUE)
            throw new Moe4jException("--distributed expert: one layer's routed experts take "
                    + routed * 3L * c.expertHidden() * c.d() * 4 + " bytes, more than one MPI exchange of this build carries (2^31 - 1)");
        return w;
    }

    /**
     * The layout of world rank {@code worldRank}'s model (of {@code worldSize}, groups of {@code expertRanks}, 0: all):
     * the dense tensors and the routed experts it owns, ⌊r·E'/W⌋ .. ⌊(r+1)·E'/W⌋ - 1 of every layer for its rank r in
     * its group ({@link ExpertExchange#firstExpert}). Build the rank's model on it (new, or loaded from a checkpoint
     * slice) before {@link #ExpertParallel(Communicator, MoeTransformer, int)}; arithmetic only, no communication.
     */
    public static ParamLayout rankLayout(ModelConfig c, int worldRank, int worldSize, int expertRanks) {
        int w = groupSize(c, worldSize, expertRanks), r = worldRank % w, routed = c.routedExperts();
        int a = (int) ((long) r * routed / w), b = (int) ((long) (r + 1) * routed / w);
        return new ParamLayout(c, a, b - a);
    }

    /** Where W1 of expert j (another rank's) of layer l lies in {@link #w1Other}, in elements. */
    private long w1OtherAt(int l, int j) {
        return ((long) l * (routed - owned) + (j < first ? j : j - owned)) * hid * d;
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
            long from = expertStart[l], end = from + owned * expertFloats;
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
        ex.plan(offsets); // counts first: then the rows this owner receives are known, and its buffers fit them
        int n = ex.received();
        MemorySegment xe = xeL[l].fit(n), a13 = a13L[l].fit(n), act = actL[l].fit(n), ye = rowsD.fit(n);
        ex.dispatch(s.xe(), d, xe);
        s.forward(ex.localOffsets(), 0, owned, first, xe, a13, act, ye);
        ex.combine(ye, d, s.ye());
        count(ex, offsets, 3, true);
        if (E > routed) s.forward(offsets, routed, E, 0, s.xe(), s.a13(), s.act(), s.ye()); // shared: here
    }

    @Override
    public void backward(ExpertSlots s) {
        int l = s.layer(), E = s.experts();
        int[] offsets = s.offsets();
        ExpertExchange ex = exchange[l];
        int n = ex.received(); // the forward's plan still holds: same routing, same counts
        MemorySegment dy = rowsD.fit(n), dact = dactL.fit(n);
        ex.dispatch(s.dye(), d, dy);
        // the layer's forward activations, as its forward left them (fitted then, not reallocated since)
        s.backward(ex.localOffsets(), 0, owned, first, xeL[l].segment(), a13L[l].segment(), actL[l].segment(), dy,
                dact, dy);
        ex.combine(dy, d, s.dye()); // dL/dxe, in dye's place (its routed rows are sent; the shared ones stay)
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

    /** The split tensors of this rank's update: its own routed experts (the rest is dense, alike on every rank). */
    public AdamWOptimizer.Partition partition() {
        return new AdamWOptimizer.Partition() {
            @Override
            public boolean split(long offset) {
                return layerOf(offset) >= 0;
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
            if (offset >= expertStart[l] && offset < expertStart[l] + owned * expertFloats) return l;
        return -1;
    }

    /**
     * After each optimizer step (and once when built), with ERC on: every routed expert's W1 from its owner to every
     * rank of the group, into the copy ERC reads for the experts a rank does not hold. Collective over the group.
     */
    public void afterStep() {
        if (!syncW1) return;
        long hd = (long) hid * d, layerOther = (long) (routed - owned) * hd;
        for (int l = 0; l < L; l++) {
            for (int j = 0; j < owned; j++)
                MemorySegment.copy(params, (expertStart[l] + j * expertFloats) * 4, w1Send, j * hd * 4, hd * 4);
            for (int p = 0; p < ranks; p++) {
                int a = exchange[l].firstExpert(p), b = exchange[l].firstExpert(p + 1);
                boolean self = p == rank;
                sendCounts[p] = self ? 0 : (int) (owned * hd * 4);
                sendDispls[p] = 0;
                recvCounts[p] = self ? 0 : (int) ((b - a) * hd * 4);
                recvDispls[p] = self ? 0 : (int) ((p < rank ? a : a - owned) * hd * 4);
            }
            comm.allToAllV(w1Send, sendCounts, sendDispls, w1Other.asSlice(l * layerOther * 4, layerOther * 4),
                    recvCounts, recvDispls);
            collectives++;
            bytesSent += (ranks - 1) * owned * hd * 4;
        }
    }

    /** Bytes of ERC's copy of the other ranks' W1 (0 with ERC off or one rank per group). */
    public long w1CopyBytes() {
        return w1Other == null ? 0 : w1Other.byteSize();
    }

    /**
     * With replicas (W < N): checks that this rank's experts are bit-identical on the N/W ranks owning them (a 64-bit
     * hash of its expert blocks, gathered over the replicas' group); throws {@link ReplicaMismatchException} on every
     * owner when one differs. Collective over the replicas' group; nothing without replicas.
     */
    public void checkReplicas(long step) {
        if (replicas == null || replicas.size() == 1) return;
        long h = 0;
        for (int l = 0; l < L; l++) {
            long n = owned * expertFloats;
            h = h * 31 + DataParallel.hash(params.asSlice(expertStart[l] * 4, n * 4), n);
        }
        int me = replicas.rank();
        replicaHashes.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, me, h);
        replicas.allGather(replicaHashes, me * 8L, 8, replicaHashes, 0);
        collectives++;
        long h0 = replicaHashes.getAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, 0);
        StringBuilder bad = null;
        for (int r = 1; r < replicas.size(); r++) {
            long hr = replicaHashes.getAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, r);
            if (hr != h0) {
                if (bad == null) bad = new StringBuilder();
                bad.append(String.format(java.util.Locale.ROOT, " replica %d %016x;", r, hr));
            }
        }
        if (bad != null)
            throw new ReplicaMismatchException(String.format(java.util.Locale.ROOT,
                    "after step %d the routed experts %d..%d differ across the replicas owning them (hash: replica 0 "
                            + "%016x;%s); the replicas have diverged, so the run stops here (the last checkpoint is "
                            + "intact; resume from it)", step, first, first + owned - 1, h0, bad));
    }

    /**
     * The whole model as a checkpoint holds it, for world rank 0 to write: a transient model in the whole layout and
     * AdamW moments of its size (3 × 4 bytes per parameter of the whole model, freed by closing it), holding rank 0's
     * dense tensors and experts and, received from the other ranks of group 0, theirs. Returns it on world rank 0,
     * null on every other rank. Collective over group 0 (the other groups hold replicas and return at once); call on
     * every rank before rank 0 saves.
     */
    public CheckpointImage gather(AdamWOptimizer opt) {
        if (replica != 0) return null;
        MemorySegment[] mine = {params, opt.firstMoment(), opt.secondMoment()};
        if (ranks == 1) { // the group holds every expert: rank 0's buffers are the checkpoint's
            return CheckpointImage.live(model, opt);
        }
        ParamLayout local = model.layout(), whole = local.whole();
        MoeModel all = null;
        Arena moments = null;
        try {
            MemorySegment[] dst = null;
            if (rank == 0) {
                all = new MoeModel(whole, false);
                moments = Arena.ofShared();
                long bytes = whole.total() * 4;
                dst = new MemorySegment[] {all.params(), moments.allocate(bytes, Tensor.ALIGNMENT),
                        moments.allocate(bytes, Tensor.ALIGNMENT)};
                for (ParamLayout.Entry e : local.entries()) // the dense tensors and rank 0's experts
                    for (int b = 0; b < 3; b++)
                        MemorySegment.copy(mine[b], e.offset() * 4, dst[b], whole.offset(e.name()) * 4, e.numel() * 4);
            }
            for (int b = 0; b < 3; b++) {
                for (int l = 0; l < L; l++) {
                    MemorySegment send = mine[b].asSlice(expertStart[l] * 4, owned * expertFloats * 4);
                    MemorySegment recv = rank == 0
                            ? dst[b].asSlice(whole.offset(ParamLayout.gateProj(l, 0)) * 4, routed * expertFloats * 4) : none;
                    for (int p = 0; p < ranks; p++) {
                        int a = exchange[l].firstExpert(p), e = exchange[l].firstExpert(p + 1);
                        sendCounts[p] = rank != 0 && p == 0 ? (int) (owned * expertFloats * 4) : 0;
                        sendDispls[p] = 0;
                        recvCounts[p] = rank == 0 && p != 0 ? (int) ((e - a) * expertFloats * 4) : 0;
                        recvDispls[p] = rank == 0 && p != 0 ? (int) (a * expertFloats * 4) : 0;
                    }
                    // rank 0 receives into the whole model and sends nothing; the others send their block
                    comm.allToAllV(rank == 0 ? none : send, sendCounts, sendDispls, recv, recvCounts, recvDispls);
                    collectives++;
                    if (rank != 0) bytesSent += owned * expertFloats * 4;
                }
            }
            return rank == 0 ? CheckpointImage.owned(all, dst[1], dst[2], moments) : null;
        } catch (RuntimeException | Error ex) { // no half-gathered copy left allocated
            if (all != null) all.close();
            if (moments != null) moments.close();
            throw ex;
        }
    }

    /**
     * Bytes of this rank's receive-side buffers now (per layer the received rows and the owner's activations, the
     * exchange's staging; the shared scratch), and what the worst case (every rank sending all its slots here) would
     * take: {@code [now, worst]}.
     */
    public long[] receiveBytes() {
        long now = rowsD.bytes() + dactL.bytes(), row = 4L * (d + 2 * hid + hid + d);
        for (int l = 0; l < L; l++) now += xeL[l].bytes() + a13L[l].bytes() + actL[l].bytes() + exchange[l].stagingBytes();
        long worst = (long) maxRows * (L * row + 4L * (d + hid));
        return new long[] {now, worst};
    }

    @Override
    public void close() {
        if (exchange != null) for (ExpertExchange ex : exchange) if (ex != null) ex.close();
        for (RowBuffer[] bs : new RowBuffer[][] {xeL, a13L, actL}) if (bs != null) for (RowBuffer b : bs) if (b != null) b.close();
        if (rowsD != null) rowsD.close();
        if (dactL != null) dactL.close();
        arena.close();
        if (ownsComm) { // collective: every rank closes its expert parallel at the same point
            replicas.close();
            comm.close();
        }
    }
}
