package org.moe4j.engine.model;

import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicInteger;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.simd.Attention;
import org.moe4j.simd.Bf16Gemm;
import org.moe4j.simd.CachedAttention;
import org.moe4j.simd.Convert;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.MixedGemm;
import org.moe4j.simd.Rope;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.VectorOps;
import org.moe4j.simd.WeightGemm;
import org.moe4j.simd.WorkerPool;
import org.moe4j.simd.Workspace;

/**
 * What every layer block of one model runner shares: the config and its sizes, the weights (and, for training,
 * the gradient buffer), the kernels (GEMM, row ops, attention, RoPE), the current {@link Batch}, and the backward
 * scratch. One block runs at a time, so they share all of it. A training runner ({@link MoeTransformer}) computes
 * every weight product with {@code gemm}; an inference runner passes a {@link WeightGemm}, which streams weights
 * for few rows and reads BF16 matrices. A BF16 training runner ({@code mixed} set) keeps a bf16 copy of the matrices
 * ({@link #W16}, refreshed by {@link #refreshBf16()}) and runs {@link #linear}, {@link #linearBackInput} and
 * {@link #linearBackWeight} as mixed-precision GEMMs; every other product (router, ERC) stays on {@code gemm}.
 */
final class BlockContext {
    final ModelConfig c;
    final int d, V, L, H, Hkv, dh, qw, kw, E, shared, routed, hid, maxN, maxSeqs, kTotMax;
    final float eps;
    final ModelWeights weights;
    /** The F32 store (norms, routers; all parameters in training) and, in training, the gradients (same offsets). */
    final MemorySegment P, G;
    final Gemm gemm;
    /** BF16 training: the mixed-precision GEMM and the bf16 copy of the matrices at ParamLayout offsets; else null. */
    final MixedGemm mixed;
    final MemorySegment W16;
    private final long[] w16Chunks;
    final WeightGemm weightGemm;
    /**
     * Training, FP32: the LM head's weight gradient (the same [V, d] x N product every step) on {@code
     * gemm.forRepeatedShapes()}; {@code gemm} itself otherwise. Closed by {@link #close()}. (The attention
     * projections' gradients measured no faster there: bench/RESULTS.md, fourth session.)
     */
    final Gemm repeated;
    /** This runner's own backends: products one after another, each split over the pool by its backend. */
    final Lane lane;
    /**
     * Training and prefill on backends that can run single-threaded (oneDNN, the Java GEMM): one lane per pool
     * thread, so that a layer's experts run concurrently, one expert per thread at a time, instead of each small
     * product being split over the threads (at 64-512 rows per expert the split's hand-offs cost more than its work;
     * bench/RESULTS.md). Decode keeps its one streaming pass over all experts ({@link WeightGemm#grouped}). Null
     * otherwise, or with {@code -Dmoe4j.experts.concurrent=false}. Closed by {@link #close()}.
     */
    private final Lane[] lanes;
    private final int[] groupOrder;
    private final AtomicInteger nextGroup = new AtomicInteger();
    private GroupTask groupTask;
    private int groupCount;
    private final WorkerPool.RangeTask groupRunner = this::runGroups;
    private final LinearGroups linearGroups = new LinearGroups();
    final WorkerPool pool;
    final RowOps ops;
    final Attention attention;
    final CachedAttention cachedAttention;
    final Rope rope;
    final Batch batch;
    final Workspace ws;
    boolean docMask;
    /** Runs the MoE blocks' experts: here, or (expert parallel) on the ranks owning them. */
    ExpertExecutor experts = ExpertExecutor.LOCAL;
    /** Names the first non-finite activation of the runner's last forward (set by the runner). */
    java.util.function.Supplier<String> nonFiniteReport = () -> "non-finite value in the forward pass";
    /** Backward scratch (training only; null for a forward-only runner). */
    final Tensor dx, tmp, datt, dq, dk, dv, dye, dact, dlogR;
    final float[] dGate, dLogits;

    BlockContext(ModelConfig c, ModelWeights weights, MemorySegment grads, int maxTokens, int maxSequences,
                 int maxRoutedK, Gemm gemm, WeightGemm weightGemm, WorkerPool pool, Workspace ws, boolean training) {
        this(c, weights, grads, maxTokens, maxSequences, maxRoutedK, gemm, weightGemm, null, pool, ws, training);
    }

    /** As above; {@code mixed} non-null (training only) makes the weight products mixed precision (bf16 inputs). */
    BlockContext(ModelConfig c, ModelWeights weights, MemorySegment grads, int maxTokens, int maxSequences,
                 int maxRoutedK, Gemm gemm, WeightGemm weightGemm, MixedGemm mixed, WorkerPool pool, Workspace ws,
                 boolean training) {
        this.c = c;
        this.weights = weights;
        this.P = weights.vectors();
        this.G = grads;
        this.gemm = gemm;
        this.weightGemm = weightGemm;
        this.pool = pool;
        this.ws = ws;
        maxN = maxTokens;
        maxSeqs = maxSequences;
        d = c.d();
        V = c.vocab();
        L = c.layers();
        H = c.heads();
        Hkv = c.kvHeads();
        dh = c.headSize();
        qw = H * dh;
        kw = Hkv * dh;
        E = c.experts();
        shared = c.sharedExperts();
        routed = c.routedExperts();
        hid = c.expertHidden();
        kTotMax = Math.max(maxRoutedK, c.maxRoutedK()) + shared;
        eps = (float) c.normEps();
        batch = new Batch(c, maxTokens, maxSequences, ws.arena());
        ops = new RowOps(pool, Math.max(Math.max(d, qw), kw), maxTokens, ws.arena());
        attention = new Attention(c.maxSeq(), H, Hkv, dh, pool.threads());
        cachedAttention = training ? null : new CachedAttention(c.maxSeq(), H, Hkv, dh, pool.threads());
        rope = new Rope(Math.max(c.maxSeq(), 2), dh, c.ropeTheta() > 1 ? c.ropeTheta() : 10000.0);
        int slots = slots();
        if (training) {
            dx = ws.allocate("grad.dx", maxN, d);
            tmp = ws.allocate("grad.tmp", maxN, Math.max(d, 1));
            datt = ws.allocate("grad.datt", maxN, qw);
            dq = ws.allocate("grad.dq", maxN, qw);
            dk = ws.allocate("grad.dk", maxN, kw);
            dv = ws.allocate("grad.dv", maxN, kw);
            dye = ws.allocate("grad.dye", slots, d);
            dact = ws.allocate("grad.dact", slots, hid);
            dlogR = ws.allocate("grad.dRouterLogits", maxN, E);
            dGate = new float[slots];
            dLogits = new float[maxN * E];
        } else {
            dx = tmp = datt = dq = dk = dv = dye = dact = dlogR = null;
            dGate = dLogits = null;
        }
        this.mixed = training ? mixed : null;
        if (this.mixed != null) {
            ParamLayout lay = weights.layout();
            W16 = ws.arena().allocate(lay.total() * 2, Tensor.ALIGNMENT);
            w16Chunks = bf16Chunks(lay);
            int slotsMax = slots();
            // the largest operands any call site rounds: A up to the LM head's [N, V] gradient, B up to [N, max width]
            long wide = Math.max(Math.max(d, qw), Math.max(2L * hid, 1));
            this.mixed.reserve(Math.max((long) maxN * Math.max(V, wide), (long) slotsMax * wide),
                    Math.max((long) maxN * wide, (long) slotsMax * wide));
        } else {
            W16 = null;
            w16Chunks = null;
        }
        int most = 1;
        for (int l = 0; l < L; l++) most = Math.max(most, c.experts(l));
        groupOrder = new int[most];
        lane = new Lane(gemm, this.mixed, weightGemm, false);
        // last: backends of their own (native primitives) are made only once nothing else here can fail
        Lane[] ls = null;
        if ((training || weightGemm != null) && pool.threads() > 1 && CONCURRENT_EXPERTS) {
            long wide = Math.max(Math.max(d, qw), Math.max(2L * hid, 1));
            ls = new Lane[pool.threads()];
            try {
                for (int t = 0; t < ls.length; t++) {
                    if (!training) {
                        ls[t] = inferenceLane(gemm, weightGemm, pool, maxN);
                        if (ls[t] == null) break;
                    } else if (this.mixed == null) {
                        Gemm one = gemm.forOneThread();
                        if (one == null) break;
                        ls[t] = new Lane(one, null, null, true);
                    } else {
                        Bf16Gemm one = this.mixed.backend().forOneThread();
                        if (one == null) break;
                        // an expert gets at most maxN rows: its operands are at most [maxN, wide]
                        ls[t] = new Lane(gemm, new MixedGemm(one, pool).reserve((long) maxN * wide, (long) maxN * wide),
                                null, false);
                    }
                }
                if (ls[ls.length - 1] == null) {
                    closeLanes(ls);
                    ls = null;
                }
            } catch (RuntimeException | Error e) {
                closeLanes(ls);
                throw e;
            }
        }
        lanes = ls;
        try {
            this.repeated = training && mixed == null ? gemm.forRepeatedShapes() : gemm;
        } catch (RuntimeException | Error e) {
            closeLanes(lanes);
            throw e;
        }
    }

    /**
     * An inference runner's lane: a one-thread copy of its GEMM (and of the bf16 GEMM of {@link
     * WeightGemm#manyRowsBf16}, where set) under a weight GEMM of its own; null where the backend has no one-thread
     * form (nothing is left open then).
     */
    private static Lane inferenceLane(Gemm gemm, WeightGemm weightGemm, WorkerPool pool, int maxN) {
        Gemm one = gemm.forOneThread();
        if (one == null) return null;
        MixedGemm many = weightGemm.manyRowsBf16(), manyOne = null;
        try {
            if (many != null) {
                Bf16Gemm b = many.backend().forOneThread();
                if (b == null) {
                    closeLanes(new Lane[] {new Lane(one, null, null, true)});
                    return null;
                }
                manyOne = new MixedGemm(b, pool).reserve((long) maxN * weightGemm.maxK(), 0);
            }
            return new Lane(one, manyOne, new WeightGemm(pool, one, weightGemm.maxK()).manyRowsBf16(manyOne), true);
        } catch (RuntimeException | Error e) {
            closeLanes(new Lane[] {new Lane(one, manyOne, null, true)});
            throw e;
        }
    }

    /** Whether training and prefill run a layer's experts concurrently where the backends allow (default true). */
    static final boolean CONCURRENT_EXPERTS = !"false".equals(System.getProperty("moe4j.experts.concurrent"));

    /** One thread's GEMM backends: {@code gemm} for FP32 products, {@code mixed} (bf16 inputs) in BF16 training. */
    static final class Lane {
        final Gemm gemm;
        final MixedGemm mixed;
        /** Inference: the weight GEMM this lane's products run on (few rows streamed, many on gemm / mixed); else null. */
        final WeightGemm wg;
        /** Whether gemm is this lane's own (closed with it) rather than the runner's. */
        final boolean ownsGemm;

        Lane(Gemm gemm, MixedGemm mixed, WeightGemm wg, boolean ownsGemm) {
            this.gemm = gemm;
            this.mixed = mixed;
            this.wg = wg;
            this.ownsGemm = ownsGemm;
        }
    }

    /** Work on one group (an expert's products) with the lane of the thread that runs it. */
    interface GroupTask {
        void run(int group, Lane lane);
    }

    /** Calls of {@link #forGroups} that ran their groups concurrently, since this runner was made. */
    long concurrentCalls;

    /** Whether {@link #forGroups} runs groups concurrently (on single-threaded lanes). */
    boolean concurrentGroups() {
        return lanes != null;
    }

    /**
     * task(i, lane) for every group i in [0, groups): concurrently, one group per thread at a time, the groups with
     * the most rows handed out first, when this runner has a lane per thread; else one after another on {@link
     * #lane}. Each group must write its own outputs only. The bits of a group's result do not depend on which
     * thread runs it (every lane's backend is alike).
     */
    void forGroups(int groups, int[] rows, GroupTask task) {
        if (lanes == null || groups < 2) {
            for (int i = 0; i < groups; i++) task.run(i, lane);
            return;
        }
        for (int i = 0; i < groups; i++) { // insertion sort, most rows first (longest processing time first)
            int j = i;
            while (j > 0 && rows[groupOrder[j - 1]] < rows[i]) {
                groupOrder[j] = groupOrder[j - 1];
                j--;
            }
            groupOrder[j] = i;
        }
        concurrentCalls++;
        groupTask = task;
        groupCount = groups;
        nextGroup.set(0);
        try {
            pool.parallelFor(lanes.length, lanes.length, groupRunner);
        } finally {
            groupTask = null;
        }
    }

    private void runGroups(int s, int e, int worker) {
        GroupTask t = groupTask;
        // inline (a nested call on a busy pool) runs as worker 0 over the whole range: one lane, in order
        for (int j; (j = nextGroup.getAndIncrement()) < groupCount; ) t.run(groupOrder[j], lanes[worker]);
    }

    /** {@link #linearGrouped}'s arguments, for {@link #forGroups}. */
    private final class LinearGroups implements GroupTask {
        int[] rows;
        long[] xOff, wOff, oOff;
        int N, K, ldx, ldo;
        MemorySegment x, out;

        @Override
        public void run(int i, Lane ln) {
            linear(ln, rows[i], N, K, x, xOff[i], ldx, wOff[i], 0f, out, oOff[i], ldo);
        }
    }

    /** Closes every lane's own backends, all of them even when one fails (the first failure is thrown after). */
    private static void closeLanes(Lane[] ls) {
        if (ls == null) return;
        RuntimeException first = null;
        for (Lane ln : ls) {
            if (ln == null) continue;
            try {
                try {
                    if (ln.mixed != null) {
                        ln.mixed.close();
                        if (ln.mixed.backend() instanceof AutoCloseable a) a.close();
                    }
                } finally {
                    if (ln.ownsGemm && ln.gemm instanceof AutoCloseable a) a.close();
                }
            } catch (Exception e) {
                if (first == null) first = new IllegalStateException("closing a per-thread GEMM backend: " + e.getMessage(), e);
            }
        }
        if (first != null) throw first;
    }

    /**
     * Pieces of at most 2^16 elements covering the matrices the GEMMs read (not the embedding, which is gathered —
     * unless it is tied, when it is also the LM head's matrix).
     */
    private static long[] bf16Chunks(ParamLayout lay) {
        java.util.List<long[]> out = new java.util.ArrayList<>();
        for (ParamLayout.Entry e : lay.entries()) {
            if (!bf16Copied(lay, e)) continue;
            for (long o = 0; o < e.numel(); o += 1 << 16)
                out.add(new long[] {e.offset() + o, Math.min(1 << 16, e.numel() - o)});
        }
        long[] flat = new long[2 * out.size()];
        for (int i = 0; i < out.size(); i++) {
            flat[2 * i] = out.get(i)[0];
            flat[2 * i + 1] = out.get(i)[1];
        }
        return flat;
    }

    /** Whether BF16 training keeps a bf16 copy of this tensor: the matrices the GEMMs read. */
    static boolean bf16Copied(ParamLayout lay, ParamLayout.Entry e) {
        return !ModelWeights.keptF32(e) && (lay.config().tied() || !e.name().equals(ParamLayout.embedTokens()));
    }

    private final WorkerPool.RangeTask refreshTask = this::refreshChunks;

    private void refreshChunks(int c0, int c1, int worker) {
        for (int i = c0; i < c1; i++)
            Convert.f32ToBf16(P, w16Chunks[2 * i], W16, w16Chunks[2 * i], w16Chunks[2 * i + 1]);
    }

    /** W16 = bf16(P) for every matrix, round to nearest even (after the master weights change). */
    void refreshBf16() {
        if (W16 != null) pool.parallelFor(w16Chunks.length / 2, refreshTask);
    }

    /** Routed-slot rows the expert buffers hold: maxTokens x (k' + s). */
    int slots() {
        return maxN * Math.max(kTotMax, 1);
    }

    boolean training() {
        return G != null;
    }

    /**
     * out[M, N] = x[M, K] · Wᵀ + beta·out for a matrix W [N, K] at element offset {@code wOff} of the matrix store:
     * the training GEMM, or (inference) the weight-streaming kernel in the store's precision.
     */
    void linear(int M, int N, int K, MemorySegment x, long xOff, int ldx, long wOff, float beta, MemorySegment out,
                long oOff, int ldo) {
        linear(lane, M, N, K, x, xOff, ldx, wOff, beta, out, oOff, ldo);
    }

    /** {@link #linear} on a given lane's backends. */
    void linear(Lane ln, int M, int N, int K, MemorySegment x, long xOff, int ldx, long wOff, float beta,
                MemorySegment out, long oOff, int ldo) {
        MemorySegment w = weights.matrices();
        if (ln.wg != null) {
            if (weights.bf16()) ln.wg.bf16(M, N, K, x, xOff, ldx, w, wOff, K, beta, out, oOff, ldo);
            else ln.wg.f32(M, N, K, x, xOff, ldx, w, wOff, K, beta, out, oOff, ldo);
        } else if (ln.mixed != null) ln.mixed.linear(M, N, K, x, xOff, ldx, W16, wOff, K, beta, out, oOff, ldo);
        else ln.gemm.sgemm(false, true, M, N, K, 1f, x, xOff, ldx, w, wOff, K, beta, out, oOff, ldo);
    }

    /**
     * {@link #linear} for several matrices of one shape [N, K] at once (an MoE layer's experts): group i is rows[i]
     * rows of x at xOff[i] times the matrix at wOff[i] into out at oOff[i]. Decode-sized groups at inference: one
     * {@link WeightGemm#grouped} pass (the same bits as one call per group). Otherwise (training, and a prefill
     * where some expert has more than {@link WeightGemm#smallRows()} rows) one {@link #linear} per group,
     * concurrently over the threads where the runner has a lane per thread ({@link #forGroups}).
     */
    void linearGrouped(int groups, int[] rows, long[] xOff, long[] wOff, long[] oOff, int N, int K, MemorySegment x,
                       int ldx, MemorySegment out, int ldo) {
        if (weightGemm != null && !(lanes != null && anyAbove(groups, rows, weightGemm.smallRows()))) {
            weightGemm.grouped(weights.bf16(), groups, rows, xOff, wOff, oOff, N, K, x, ldx, weights.matrices(), K, 0f,
                    out, ldo);
        } else {
            LinearGroups t = linearGroups;
            t.rows = rows;
            t.xOff = xOff;
            t.wOff = wOff;
            t.oOff = oOff;
            t.N = N;
            t.K = K;
            t.x = x;
            t.ldx = ldx;
            t.out = out;
            t.ldo = ldo;
            try {
                forGroups(groups, rows, t);
            } finally {
                t.x = t.out = null;
            }
        }
    }

    private static boolean anyAbove(int groups, int[] rows, int limit) {
        for (int i = 0; i < groups; i++) if (rows[i] > limit) return true;
        return false;
    }

    /**
     * Backward of {@link #linear} to its input: out[M, N] = dy[M, K] · W + beta·out for the matrix W [K, N] at
     * {@code wOff} (training; bf16 inputs in BF16 training).
     */
    void linearBackInput(int M, int N, int K, MemorySegment dy, long dyOff, int lddy, long wOff, float beta,
                         MemorySegment out, long oOff, int ldo) {
        linearBackInput(lane, M, N, K, dy, dyOff, lddy, wOff, beta, out, oOff, ldo);
    }

    /** {@link #linearBackInput} on a given lane's backends. */
    void linearBackInput(Lane ln, int M, int N, int K, MemorySegment dy, long dyOff, int lddy, long wOff, float beta,
                         MemorySegment out, long oOff, int ldo) {
        if (ln.mixed != null) ln.mixed.linearBackwardInput(M, N, K, dy, dyOff, lddy, W16, wOff, N, beta, out, oOff, ldo);
        else ln.gemm.sgemm(false, false, M, N, K, 1f, dy, dyOff, lddy, P, wOff, N, beta, out, oOff, ldo);
    }

    /**
     * Backward of {@link #linear} to its weight: G[wOff] [M, N] += dy[K, M]ᵀ · in[K, N], the gradient (F32) of the
     * matrix W [M, N] at {@code wOff} from its output gradient dy and input {@code in} over K rows (bf16 inputs in
     * BF16 training).
     */
    void linearBackWeight(int M, int N, int K, MemorySegment dy, long dyOff, int lddy, MemorySegment in, long inOff,
                          int ldin, long wOff) {
        linearBackWeight(lane.mixed, lane.gemm, M, N, K, dy, dyOff, lddy, in, inOff, ldin, wOff);
    }

    /** {@link #linearBackWeight} on a given lane's backends. */
    void linearBackWeight(Lane ln, int M, int N, int K, MemorySegment dy, long dyOff, int lddy, MemorySegment in,
                          long inOff, int ldin, long wOff) {
        linearBackWeight(ln.mixed, ln.gemm, M, N, K, dy, dyOff, lddy, in, inOff, ldin, wOff);
    }

    /** {@link #linearBackWeight} for a product whose shape repeats every step: on {@link #repeated} in FP32. */
    void linearBackWeightRepeated(int M, int N, int K, MemorySegment dy, long dyOff, int lddy, MemorySegment in,
                               long inOff, int ldin, long wOff) {
        linearBackWeight(lane.mixed, repeated, M, N, K, dy, dyOff, lddy, in, inOff, ldin, wOff);
    }

    private void linearBackWeight(MixedGemm mixed, Gemm gemm, int M, int N, int K, MemorySegment dy, long dyOff,
                                  int lddy, MemorySegment in, long inOff, int ldin, long wOff) {
        if (mixed != null) mixed.linearBackwardWeight(M, N, K, dy, dyOff, lddy, in, inOff, ldin, 1f, G, wOff, N);
        else gemm.sgemm(true, false, M, N, K, 1f, dy, dyOff, lddy, in, inOff, ldin, 1f, G, wOff, N);
    }

    /** Releases {@link #repeated} when it is a backend of its own (oneDNN's primitives), and the per-thread lanes. */
    void close() {
        try {
            if (repeated != gemm && repeated instanceof AutoCloseable a) {
                try {
                    a.close();
                } catch (Exception e) {
                    throw new org.moe4j.Moe4jException("closing the GEMM of the LM head's weight gradient: " + e.getMessage(), e);
                }
            }
        } finally {
            closeLanes(lanes);
        }
    }

    /** As {@link #linear} for a matrix of the F32 store (the router). */
    void linearF32(int M, int N, int K, MemorySegment x, long xOff, int ldx, long wOff, float beta, MemorySegment out,
                   long oOff, int ldo) {
        if (weightGemm == null) gemm.sgemm(false, true, M, N, K, 1f, x, xOff, ldx, P, wOff, K, beta, out, oOff, ldo);
        else weightGemm.f32(M, N, K, x, xOff, ldx, P, wOff, K, beta, out, oOff, ldo);
    }

    /** The first non-finite value among the first N rows of the tensors, in order, as text; null if none. */
    String scan(Tensor[] ts, String[] names) {
        int n = batch.N;
        for (int i = 0; i < ts.length; i++) {
            int width = ts[i].dim(1);
            long at = VectorOps.firstNonFinite(ts[i].segment(), 0, (long) n * width);
            if (at >= 0) return "tensor '" + names[i] + "' row " + at / width + ", column " + at % width;
        }
        return null;
    }
}
