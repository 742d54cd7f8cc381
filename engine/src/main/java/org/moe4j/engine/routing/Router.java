package org.moe4j.engine.routing;

import java.util.Arrays;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.simd.DType;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * The routing pipeline of one MoE layer over T tokens (DESIGN.md "Routing is one pipeline", ALGORITHMS.md
 * sections 2-3): allowed experts (subset, EMO document pools) -> k' (fixed or Matryoshka) -> top-k' select and
 * gates -> capacity drops -> expert-grouped permutation; its backward into the router logits; the load-balance and
 * router z-loss that live on routing.
 *
 * <p>Router logits are an input: {@code logits[t*E + e]}, [T, E] row-major (the caller runs {@code x · Wrᵀ}).
 * Softmax domain of a token: its allowed routed experts (pool ∩ subset), or with {@code softmaxOverAll} every kept
 * routed expert (the subset, ignoring the pool); picks are always among the allowed ones.
 * Ties go to the lower expert index, in pool and top-k selection alike.
 *
 * <p>Transcendentals are {@code StrictMath}: {@code Math.exp} may give other bits once compiled, and a routing decision
 * must not depend on JIT state. One Router holds scratch for one thread; every call after construction allocates nothing on the heap.
 * Given a {@link WorkerPool}, the per-token parts (softmax, top-k and gates in the forward; the gate, load-balance and
 * z-loss backward) run over the pool's threads in token blocks, each thread with its own scratch: every token's
 * result is computed by the same code in the same order whatever the block or thread, so the bits do not depend on
 * the thread count.
 * Loss and backward methods read what {@link #forward} stored in the {@link Routing}.
 * ERC (expert–router coupling) needs the expert weights and lives with the MoE layer, not here.
 */
public final class Router {
    private final int experts, shared, routed, maxTokens, maxSequences, eosId;
    private final boolean normalizeTopK, softmaxOverAll;
    // scratch [E]
    private final double[] u, acc;
    private final int[] count;
    private final int[] mark;
    private final int[] docsAround = new int[2];
    // [maxTokens, E], the logits copied off-heap -> heap by forward(Tensor, ...)
    private final float[] logitBuf;
    /** Null: every token on the caller. Else per-worker scratch for the token-parallel parts. */
    private final WorkerPool pool;
    private final double[][] accW;
    private final int[][] markW;
    private final int[] stampW;
    private final SelectTask selectTask;
    private final BackwardTask backwardTask;
    /** Below this many T·E logits a call stays on the caller thread (waking the workers costs more). */
    static final int PARALLEL_MIN_LOGITS = 16_384;

    public Router(int experts, int shared, boolean normalizeTopK, boolean softmaxOverAll, int eosId,
                  int maxTokens, int maxSequences) {
        this(experts, shared, normalizeTopK, softmaxOverAll, eosId, maxTokens, maxSequences, null);
    }

    /** As the constructor without a pool; with one, the per-token parts run over its threads (same bits). */
    public Router(int experts, int shared, boolean normalizeTopK, boolean softmaxOverAll, int eosId,
                  int maxTokens, int maxSequences, WorkerPool pool) {
        if (experts < 1 || shared < 0 || shared >= experts)
            throw new Moe4jException("Router: experts = " + experts + ", shared = " + shared
                    + ": need experts >= 1 and 0 <= shared < experts");
        if (maxTokens < 0 || maxSequences < 0)
            throw new Moe4jException("Router: maxTokens = " + maxTokens + ", maxSequences = " + maxSequences + ": must be >= 0");
        this.experts = experts;
        this.shared = shared;
        this.routed = experts - shared;
        this.normalizeTopK = normalizeTopK;
        this.softmaxOverAll = softmaxOverAll;
        this.eosId = eosId;
        this.maxTokens = maxTokens;
        this.maxSequences = maxSequences;
        u = new double[experts];
        acc = new double[experts];
        count = new int[experts];
        mark = new int[experts];
        logitBuf = new float[maxTokens * experts];
        this.pool = pool;
        int w = pool == null ? 1 : pool.threads();
        accW = new double[w][];
        markW = new int[w][];
        stampW = new int[w];
        accW[0] = acc;
        markW[0] = mark;
        for (int i = 1; i < w; i++) {
            accW[i] = new double[experts];
            markW[i] = new int[experts];
        }
        selectTask = new SelectTask();
        backwardTask = new BackwardTask();
    }

    /** A router for one layer of this model, for up to maxTokens tokens in up to maxSequences routing groups. */
    public Router(ModelConfig c, int maxTokens, int maxSequences) {
        this(c, maxTokens, maxSequences, null);
    }

    /** As {@link #Router(ModelConfig, int, int)}, the per-token parts over {@code pool}'s threads (null: none). */
    public Router(ModelConfig c, int maxTokens, int maxSequences, WorkerPool pool) {
        this(c.experts(), c.sharedExperts(), c.routing().normalizeTopK(), c.routing().softmaxOverAll(), c.eosId(),
                maxTokens, maxSequences, pool);
    }

    /** Runs task over [0, T) token indices: on the pool when there is one and the job is big enough. */
    private void forTokens(int T, WorkerPool.RangeTask task) {
        if (pool == null || (long) T * experts < PARALLEL_MIN_LOGITS) task.run(0, T, 0);
        else pool.parallelFor(T, task);
    }

    /** selectToken over a block of tokens, with the executing worker's scratch. */
    private final class SelectTask implements WorkerPool.RangeTask {
        float[] logits;
        int kp, kTot;
        ExpertSet kept;
        Routing out, rec;

        @Override
        public void run(int t0, int t1, int worker) {
            double[] a = accW[worker];
            int[] mk = markW[worker];
            for (int t = t0; t < t1; t++) {
                stampW[worker] = selectToken(logits, t, kp, kTot, out.pool[out.docOfToken[t]], kept, out, rec, a, mk,
                        stampW[worker]);
            }
        }
    }

    /** One of the per-token backward parts over a block of tokens: gates (overwrites), load balance, z-loss (add). */
    private final class BackwardTask implements WorkerPool.RangeTask {
        Routing r;
        float[] dGate, dLogits;
        double[] lbCoef;
        double zWeight;
        boolean gates, lb, z;
        /** The first token of the range (a LOCAL load-balance group). */
        int base;

        @Override
        public void run(int t0, int t1, int worker) {
            t0 += base;
            t1 += base;
            if (gates) gateBackward(r, dGate, dLogits, t0, t1, accW[worker]);
            if (lb) for (int t = t0; t < t1; t++) softmaxBackwardAdd(r, t, lbCoef, dLogits);
            if (z) zLossBackward(r, zWeight, dLogits, t0, t1);
        }

        void start(Routing r, float[] dLogits, boolean gates, boolean lb, boolean z) {
            this.r = r;
            this.dLogits = dLogits;
            this.gates = gates;
            this.lb = lb;
            this.z = z;
            base = 0;
        }

        void clear() {
            r = null;
            dGate = null;
            dLogits = null;
            lbCoef = null;
        }
    }

    /** A router for layer {@code layer} of this model: its own E_l experts (a pruned layer may keep fewer). */
    public Router(ModelConfig c, int layer, int maxTokens, int maxSequences) {
        this(c, layer, maxTokens, maxSequences, null);
    }

    /** As {@link #Router(ModelConfig, int, int, int)}, the per-token parts over {@code pool}'s threads (null: none). */
    public Router(ModelConfig c, int layer, int maxTokens, int maxSequences, WorkerPool pool) {
        this(c.experts(layer), c.sharedExperts(), c.routing().normalizeTopK(), c.routing().softmaxOverAll(), c.eosId(),
                maxTokens, maxSequences, pool);
    }

    /** A result buffer sized for this router; keep one per layer (backward reads it). */
    public Routing newRouting() {
        return new Routing(experts, shared, maxTokens, maxSequences);
    }

    // ---------------------------------------------------------------------------------------------------- forward

    /**
     * Routes T tokens. logits [T, E]; seqStart[0..sequences] the routing groups (seqStart[0] = 0, strictly
     * increasing, seqStart[sequences] = T); tokenIds [T] the token ids (EOS opens a document), needed only when
     * the control asks for pools (may be null otherwise). Draws from {@code ctl}'s rng: first k' (Matryoshka),
     * then one pool size per document in document order (SAMPLED).
     */
    public void forward(float[] logits, int T, int[] seqStart, int sequences, int[] tokenIds, RoutingControl ctl,
                        Routing out) {
        validate(logits, T, seqStart, sequences, tokenIds, ctl, out);
        final int E = experts;
        out.tokens = T;
        out.sequences = sequences;
        System.arraycopy(seqStart, 0, out.seqStart, 0, sequences + 1);

        ExpertSet kept = out.keptRouted.clear().addRange(0, routed);
        if (ctl.subset != null) kept.retainAll(ctl.subset);
        int ep = kept.size();
        if (ep == 0) throw new Moe4jException("Router: the subset " + ctl.subset + " keeps no routed expert (routed are 0.." + (routed - 1) + ")");
        out.routedKept = ep;
        Routing rec = ctl.replay;
        if (rec != null && (rec.experts != experts || rec.shared != shared || rec.tokens != T || rec.routedKept != ep
                || !rec.keptRouted.equals(kept)))
            throw new Moe4jException("Router: the replayed routing is over " + rec.tokens + " tokens, " + rec.experts
                    + " experts (" + rec.shared + " shared), kept " + rec.keptRouted + "; this call has " + T
                    + " tokens, " + experts + " experts (" + shared + " shared), kept " + kept);
        int kp = rec != null ? rec.kRouted : Math.min(ctl.drawK(), ep);
        int kTot = kp + shared;
        out.kRouted = kp;
        out.kTot = kTot;

        // documents: every sequence start, and with pools every EOS token, opens one
        boolean pools = ctl.poolSizes != RoutingControl.PoolSizes.NONE;
        out.hasPools = pools;
        int nd = 0;
        for (int i = 0; i < sequences; i++) {
            for (int t = seqStart[i]; t < seqStart[i + 1]; t++) {
                if (t == seqStart[i] || (pools && tokenIds[t] == eosId)) out.docStart[nd++] = t;
                out.docOfToken[t] = nd - 1;
            }
        }
        out.docStart[nd] = T;
        out.documents = nd;
        if (rec != null && (rec.documents != nd || rec.hasPools != pools))
            throw new Moe4jException("Router: the replayed routing has " + rec.documents + " documents"
                    + (rec.hasPools ? " with pools" : "") + ", this call " + nd + (pools ? " with pools" : ""));
        if (ctl.poolSizes == RoutingControl.PoolSizes.GIVEN && ctl.givenPools.length < nd)
            throw new Moe4jException("Router: " + ctl.givenPools.length + " given pool sizes for " + nd + " documents");
        if (ctl.poolSizes == RoutingControl.PoolSizes.SETS && ctl.givenSets.length < nd)
            throw new Moe4jException("Router: " + ctl.givenSets.length + " given pools for " + nd + " documents");

        boolean replicatedDraws = rec == null && ctl.replicas != null && ctl.poolSizes == RoutingControl.PoolSizes.SAMPLED;
        if (replicatedDraws) {
            // data parallel: draw in the global document order (the other ranks' draws are taken and dropped)
            ctl.replicas.documents(nd, docsAround);
            for (int i = 0; i < docsAround[0]; i++) ctl.requireRng("sampled pool sizes").nextInt(ctl.poolMin, ctl.poolMax);
        }
        for (int d = 0; d < nd; d++) {
            ExpertSet pool = out.pool[d];
            if (rec != null) {
                pool.copyFrom(rec.pool[d]);
                continue;
            }
            if (ctl.poolSizes == RoutingControl.PoolSizes.SETS) {
                ExpertSet given = ctl.givenSets[d];
                pool.copyFrom(kept);
                if (given != null) pool.retainAll(given);
                if (pool.size() == 0)
                    throw new Moe4jException("Router: the given pool of document " + d + " shares no expert with the kept "
                            + "experts " + kept);
                continue;
            }
            int p = switch (ctl.poolSizes) {
                case NONE -> ep;
                case SAMPLED -> ctl.requireRng("sampled pool sizes").nextInt(ctl.poolMin, ctl.poolMax);
                case FIXED -> ctl.fixedPool;
                case GIVEN -> ctl.givenPools[d];
                case SETS -> throw new AssertionError("handled above");
            };
            if (p < 1) throw new Moe4jException("Router: pool size " + p + " of document " + d + " must be >= 1");
            p = Math.min(p, ep);
            if (p == ep) pool.copyFrom(kept);
            else choosePool(logits, out.docStart[d], out.docStart[d + 1], kept, p, pool);
        }

        if (replicatedDraws) for (int i = 0; i < docsAround[1]; i++) ctl.rng.nextInt(ctl.poolMin, ctl.poolMax);

        SelectTask st = selectTask;
        st.logits = logits;
        st.kp = kp;
        st.kTot = kTot;
        st.kept = kept;
        st.out = out;
        st.rec = rec;
        try {
            forTokens(T, st);
        } finally {
            st.logits = null;
            st.kept = null;
            st.out = null;
            st.rec = null;
        }

        applyCapacity(out, ctl.capacityFactor);
        group(out);
        out.replicated = ctl.replicas != null;
        if (out.replicated) {
            // data parallel: the global load balance's counts c and tokens N, summed over the ranks
            countRouted(out, 0, T);
            for (int e = 0; e < E; e++) out.globalCounts[e] = count[e];
            out.globalCounts[E] = T;
            ctl.replicas.sum(out.globalCounts, E + 1);
        }
    }

    /**
     * As {@link #forward(float[], int, int[], int, int[], RoutingControl, Routing)} with the logits in an F32 tensor
     * whose first T rows of E floats (row-major, contiguous) are read; copied into a preallocated buffer.
     */
    public void forward(Tensor logits, int T, int[] seqStart, int sequences, int[] tokenIds, RoutingControl ctl,
                        Routing out) {
        if (logits == null || logits.dtype() != DType.F32 || logits.numel() < (long) T * experts || T < 0 || T > maxTokens)
            throw new Moe4jException("Router.forward: logits tensor " + logits + " must be F32 with at least [T, E] = ["
                    + T + ", " + experts + "] elements, T <= maxTokens = " + maxTokens);
        java.lang.foreign.MemorySegment.copy(logits.segment(), Tensor.FLOAT, 0, logitBuf, 0, T * experts);
        forward(logitBuf, T, seqStart, sequences, tokenIds, ctl, out);
    }

    /** pool = the top-p kept experts by u_e = Σ_{t in [a,b)} softmax_kept(z_t)_e, ties to the lower index. */
    private void choosePool(float[] logits, int a, int b, ExpertSet kept, int p, ExpertSet pool) {
        final int E = experts;
        Arrays.fill(u, 0.0);
        for (int t = a; t < b; t++) {
            int row = t * E;
            double m = Double.NEGATIVE_INFINITY;
            for (int e = kept.nextMember(0); e >= 0; e = kept.nextMember(e + 1)) m = Math.max(m, logits[row + e]);
            double sum = 0;
            for (int e = kept.nextMember(0); e >= 0; e = kept.nextMember(e + 1)) {
                double x = StrictMath.exp(logits[row + e] - m);
                acc[e] = x;
                sum += x;
            }
            double inv = 1.0 / sum;
            for (int e = kept.nextMember(0); e >= 0; e = kept.nextMember(e + 1)) u[e] += acc[e] * inv;
        }
        pool.clear();
        for (int j = 0; j < p; j++) {
            int best = -1;
            for (int e = kept.nextMember(0); e >= 0; e = kept.nextMember(e + 1)) {
                if (pool.contains(e)) continue;
                if (best < 0 || u[e] > u[best]) best = e;
            }
            pool.add(best);
        }
    }

    /**
     * Softmax over the domain into prob/lse, top-k' among allowed, gates, shared slots; acc and mark are the
     * executing thread's scratch, stamp its last mark stamp. Returns the stamp it used.
     */
    private int selectToken(float[] logits, int t, int kp, int kTot, ExpertSet allowed, ExpertSet kept, Routing out,
                            Routing rec, double[] acc, int[] mark, int stamp) {
        final int E = experts;
        int row = t * E;
        ExpertSet domain = softmaxOverAll ? kept : allowed;
        double m = Double.NEGATIVE_INFINITY;
        for (int e = domain.nextMember(0); e >= 0; e = domain.nextMember(e + 1)) m = Math.max(m, logits[row + e]);
        double sum = 0;
        for (int e = domain.nextMember(0); e >= 0; e = domain.nextMember(e + 1)) {
            double x = StrictMath.exp(logits[row + e] - m);
            acc[e] = x;
            sum += x;
        }
        Arrays.fill(out.prob, row, row + E, 0f);
        double inv = 1.0 / sum;
        for (int e = domain.nextMember(0); e >= 0; e = domain.nextMember(e + 1)) out.prob[row + e] = (float) (acc[e] * inv);
        out.lse[t] = (float) (m + StrictMath.log(sum));

        // top-k' among allowed by logit; ties to the lower index (strict > in ascending scan)
        int slot0 = t * kTot;
        int st = ++stamp;
        if (st == 0) { // wrapped after 2^32 tokens: a stale mark could equal it
            Arrays.fill(mark, 0);
            st = ++stamp;
        }
        int n = Math.min(kp, allowed.size());
        if (rec != null) {
            // replay: the recorded picks in their recorded order (same pool, so the same n)
            System.arraycopy(rec.expert, slot0, out.expert, slot0, n);
        } else for (int j = 0; j < n; j++) {
            int best = -1;
            for (int e = allowed.nextMember(0); e >= 0; e = allowed.nextMember(e + 1)) {
                if (mark[e] == st) continue;
                if (best < 0 || logits[row + e] > logits[row + best]) best = e;
            }
            mark[best] = st;
            out.expert[slot0 + j] = best;
        }
        if (normalizeTopK && n > 0) {
            // p_j / Σ_picked p = softmax over the picked logits (exact, no underflow of Σ p)
            // the largest picked logit (the first pick, except when replaying another call's picks)
            double zmax = logits[row + out.expert[slot0]], s = 0;
            for (int j = 1; j < n; j++) zmax = Math.max(zmax, logits[row + out.expert[slot0 + j]]);
            for (int j = 0; j < n; j++) s += (acc[j] = StrictMath.exp(logits[row + out.expert[slot0 + j]] - zmax));
            for (int j = 0; j < n; j++) out.gate[slot0 + j] = (float) (acc[j] / s);
        } else {
            for (int j = 0; j < n; j++) out.gate[slot0 + j] = out.prob[row + out.expert[slot0 + j]];
        }
        for (int j = n; j < kp; j++) {
            out.expert[slot0 + j] = -1;
            out.gate[slot0 + j] = 0f;
        }
        for (int j = 0; j < shared; j++) {
            out.expert[slot0 + kp + j] = routed + j;
            out.gate[slot0 + kp + j] = 1f;
        }
        return st;
    }

    /**
     * Per group of Tg tokens: C = max(4, even-ceil(floor(k'·CF·Tg/E'))); first choices in token order, then second
     * choices, ...; a routed assignment whose rank at its expert is >= C is dropped.
     */
    private void applyCapacity(Routing out, double cf) {
        int T = out.tokens, kp = out.kRouted, kTot = out.kTot, ep = out.routedKept;
        Arrays.fill(out.dropped, 0, T * kTot, false);
        Arrays.fill(out.dropsAtPosition, 0, T, 0);
        Arrays.fill(out.countBefore, 0);
        for (int i = 0; i < T * kTot; i++) if (out.expert[i] >= 0) out.countBefore[out.expert[i]]++;
        out.dropCount = 0;
        for (int g = 0; g < out.sequences; g++) {
            int a = out.seqStart[g], b = out.seqStart[g + 1];
            if (cf <= 0) {
                out.capacity[g] = 0;
                continue;
            }
            int c = (int) Math.floor(kp * cf * (b - a) / ep);
            if ((c & 1) != 0) c++;
            c = Math.max(4, c);
            out.capacity[g] = c;
            Arrays.fill(count, 0);
            for (int r = 0; r < kp; r++) {
                for (int t = a; t < b; t++) {
                    int slot = t * kTot + r, e = out.expert[slot];
                    if (e < 0) continue;
                    if (count[e]++ >= c) {
                        out.dropped[slot] = true;
                        out.dropsAtPosition[t - a]++;
                        out.dropCount++;
                    }
                }
            }
        }
    }

    /** Counting sort of the kept slots by expert, token order within an expert. */
    private void group(Routing out) {
        int n = out.tokens * out.kTot;
        Arrays.fill(out.countAfter, 0);
        for (int i = 0; i < n; i++) if (out.expert[i] >= 0 && !out.dropped[i]) out.countAfter[out.expert[i]]++;
        out.offsets[0] = 0;
        for (int e = 0; e < experts; e++) {
            out.offsets[e + 1] = out.offsets[e] + out.countAfter[e];
            count[e] = out.offsets[e];
        }
        for (int i = 0; i < n; i++) if (out.expert[i] >= 0 && !out.dropped[i]) out.perm[count[out.expert[i]]++] = i;
        out.keptSlots = out.offsets[experts];
    }

    private void validate(float[] logits, int T, int[] seqStart, int sequences, int[] tokenIds, RoutingControl ctl,
                          Routing out) {
        if (ctl == null) throw new Moe4jException("Router.forward: control must not be null");
        if (out == null || out.experts != experts || out.maxTokens < maxTokens || out.seqStart.length < maxSequences + 1)
            throw new Moe4jException("Router.forward: the Routing buffer was not made by this router (use newRouting())");
        if (T < 0 || T > maxTokens)
            throw new Moe4jException("Router.forward: T = " + T + " tokens: must be in [0, maxTokens = " + maxTokens + "]");
        if (sequences < 0 || sequences > maxSequences)
            throw new Moe4jException("Router.forward: sequences = " + sequences + ": must be in [0, " + maxSequences + "]");
        if ((T == 0) != (sequences == 0))
            throw new Moe4jException("Router.forward: T = " + T + " tokens in " + sequences + " sequences");
        if (logits == null || logits.length < (long) T * experts)
            throw new Moe4jException("Router.forward: logits has " + (logits == null ? 0 : logits.length)
                    + " floats, expected [T, E] = [" + T + ", " + experts + "]");
        if (seqStart == null || seqStart.length < sequences + 1 || seqStart[0] != 0 || seqStart[sequences] != T)
            throw new Moe4jException("Router.forward: seqStart must hold " + (sequences + 1)
                    + " offsets from 0 to T = " + T);
        for (int i = 0; i < sequences; i++)
            if (seqStart[i + 1] <= seqStart[i])
                throw new Moe4jException("Router.forward: sequence " + i + " is empty or reversed: seqStart["
                        + i + "] = " + seqStart[i] + ", seqStart[" + (i + 1) + "] = " + seqStart[i + 1]);
        if (ctl.poolSizes != RoutingControl.PoolSizes.NONE && (tokenIds == null || tokenIds.length < T))
            throw new Moe4jException("Router.forward: document pools need tokenIds [T = " + T + "]");
        if (ctl.subset != null && ctl.subset.experts() != experts)
            throw new Moe4jException("Router.forward: subset is over " + ctl.subset.experts() + " experts, the layer has " + experts);
        for (int i = 0; i < T * experts; i++)
            if (!Float.isFinite(logits[i]))
                throw new Moe4jException("Router.forward: router logit [" + (i / experts) + ", " + (i % experts)
                        + "] = " + logits[i] + ": must be finite");
    }

    // --------------------------------------------------------------------------------------------------- backward

    /**
     * dGate [T*kTot] (the caller's &lt;expert output, dy&gt; per slot) -> dLogits [T, E], OVERWRITTEN. No gradient
     * through the discrete choices, none from dropped or empty slots, none into shared experts' constant gate.
     */
    public void backward(Routing r, float[] dGate, float[] dLogits) {
        final int T = r.tokens, kTot = r.kTot;
        checkGrad(r, dLogits, "backward");
        if (dGate == null || dGate.length < T * kTot)
            throw new Moe4jException("Router.backward: dGate has " + (dGate == null ? 0 : dGate.length)
                    + " floats, expected [T*kTot] = " + (T * kTot));
        BackwardTask bt = backwardTask;
        bt.start(r, dLogits, true, false, false);
        bt.dGate = dGate;
        try {
            forTokens(T, bt);
        } finally {
            bt.clear();
        }
    }

    /** dLogits rows [t0, t1) = the gate backward of those tokens (overwritten); acc: the thread's scratch [E]. */
    private void gateBackward(Routing r, float[] dGate, float[] dLogits, int t0, int t1, double[] acc) {
        final int E = experts, kp = r.kRouted, kTot = r.kTot;
        Arrays.fill(dLogits, t0 * E, t1 * E, 0f);
        for (int t = t0; t < t1; t++) {
            int row = t * E, slot0 = t * kTot;
            if (normalizeTopK) {
                // g = softmax over picked logits: dz_j = g_j (dg_j - Σ g dg)
                double dot = 0;
                for (int j = 0; j < kp; j++) {
                    int s = slot0 + j;
                    if (r.expert[s] >= 0 && !r.dropped[s]) dot += (double) r.gate[s] * dGate[s];
                }
                for (int j = 0; j < kp; j++) {
                    int s = slot0 + j;
                    if (r.expert[s] < 0) continue;
                    double dg = r.dropped[s] ? 0 : dGate[s];
                    dLogits[row + r.expert[s]] = (float) (r.gate[s] * (dg - dot));
                }
            } else {
                // g = p of picked: dp_e = dg at picked e; dz_i = p_i (dp_i - Σ p dp)
                Arrays.fill(acc, 0.0);
                double dot = 0;
                for (int j = 0; j < kp; j++) {
                    int s = slot0 + j, e = r.expert[s];
                    if (e < 0 || r.dropped[s]) continue;
                    acc[e] = dGate[s];
                    dot += (double) r.prob[row + e] * dGate[s];
                }
                for (int e = 0; e < routed; e++) {
                    float p = r.prob[row + e];
                    if (p != 0f) dLogits[row + e] = (float) (p * (acc[e] - dot));
                }
            }
        }
    }

    // --------------------------------------------------------------------------------------------------- aux losses

    /**
     * Switch load balance, (E'/k')·Σ_e c_e·p̄_e / N over routed experts: c_e assignments before drops (a constant),
     * p̄_e the mean of prob over the scope's N tokens. GLOBAL: one scope, the whole call; LOCAL: per sequence,
     * averaged over sequences. 0 when T = 0.
     */
    public double loadBalanceLoss(Routing r, LbScope scope) {
        int groups = scope == LbScope.GLOBAL ? 1 : r.sequences;
        if (r.tokens == 0) return 0;
        double total = 0;
        for (int g = 0; g < groups; g++) {
            int a = scope == LbScope.GLOBAL ? 0 : r.seqStart[g], b = scope == LbScope.GLOBAL ? r.tokens : r.seqStart[g + 1];
            countRouted(r, a, b);
            int n = b - a;
            Arrays.fill(u, 0.0);
            for (int t = a; t < b; t++) for (int e = 0; e < routed; e++) u[e] += r.prob[t * experts + e];
            double s = 0;
            for (int e = 0; e < routed; e++) s += lbCount(r, scope, e, n) * (u[e] / n);
            total += (double) r.routedKept / r.kRouted * s / n;
        }
        return total / groups;
    }

    /** dLogits [T, E] += weight · d(loadBalanceLoss)/dz. */
    public void loadBalanceBackward(Routing r, LbScope scope, double weight, float[] dLogits) {
        checkGrad(r, dLogits, "loadBalanceBackward");
        if (r.tokens == 0) return;
        int groups = scope == LbScope.GLOBAL ? 1 : r.sequences;
        for (int g = 0; g < groups; g++) {
            int a = scope == LbScope.GLOBAL ? 0 : r.seqStart[g], b = scope == LbScope.GLOBAL ? r.tokens : r.seqStart[g + 1];
            countRouted(r, a, b);
            double n = b - a;
            // dL/dp_{t,e} = w (E'/k') c_e / N², the same for every token of the scope
            double coef = weight / groups * r.routedKept / r.kRouted / (n * n);
            for (int e = 0; e < routed; e++) u[e] = coef * lbCount(r, scope, e, b - a);
            BackwardTask bt = backwardTask;
            bt.start(r, dLogits, false, true, false);
            bt.lbCoef = u;
            bt.base = a;
            try {
                forTokens(b - a, bt);
            } finally {
                bt.clear();
            }
        }
    }

    /** Router z-loss, mean_t (logsumexp over the softmax domain of z'_t)². 0 when T = 0. */
    public double zLoss(Routing r) {
        if (r.tokens == 0) return 0;
        double s = 0;
        for (int t = 0; t < r.tokens; t++) s += (double) r.lse[t] * r.lse[t];
        return s / r.tokens;
    }

    /** dLogits [T, E] += weight · d(zLoss)/dz = weight · 2·lse_t/T · prob_t. */
    public void zLossBackward(Routing r, double weight, float[] dLogits) {
        checkGrad(r, dLogits, "zLossBackward");
        BackwardTask bt = backwardTask;
        bt.start(r, dLogits, false, false, true);
        bt.zWeight = weight;
        try {
            forTokens(r.tokens, bt);
        } finally {
            bt.clear();
        }
    }

    private void zLossBackward(Routing r, double weight, float[] dLogits, int t0, int t1) {
        final int E = experts;
        for (int t = t0; t < t1; t++) {
            double c = weight * 2.0 * r.lse[t] / r.tokens;
            int row = t * E;
            for (int e = 0; e < routed; e++) dLogits[row + e] += (float) (c * r.prob[row + e]);
        }
    }

    /**
     * c_e of the load balance after {@link #countRouted}. Data parallel, global scope: c_e·n/N from the counts summed
     * over the ranks (c and N global, n this rank's tokens), which makes this rank's loss W·(its share of the global
     * loss) when the W ranks hold equal token counts, so the mean over the ranks, of losses and of gradients, is the
     * global loss and its gradient.
     */
    private double lbCount(Routing r, LbScope scope, int e, int n) {
        if (scope != LbScope.GLOBAL || !r.replicated) return count[e];
        return r.globalCounts[e] * n / r.globalCounts[experts];
    }

    /** count[e] = routed assignments (before drops) of tokens [a, b). */
    private void countRouted(Routing r, int a, int b) {
        Arrays.fill(count, 0);
        for (int t = a; t < b; t++)
            for (int j = 0; j < r.kRouted; j++) {
                int e = r.expert[t * r.kTot + j];
                if (e >= 0) count[e]++;
            }
    }

    /** dLogits[t] += p_t ⊙ (dp - p_t·dp), the softmax backward for a per-expert upstream dp [E]. */
    private void softmaxBackwardAdd(Routing r, int t, double[] dp, float[] dLogits) {
        int row = t * experts;
        double dot = 0;
        for (int e = 0; e < routed; e++) dot += r.prob[row + e] * dp[e];
        for (int e = 0; e < routed; e++) {
            float p = r.prob[row + e];
            if (p != 0f) dLogits[row + e] += (float) (p * (dp[e] - dot));
        }
    }

    private void checkGrad(Routing r, float[] dLogits, String who) {
        if (r == null || r.experts != experts)
            throw new Moe4jException("Router." + who + ": the Routing buffer was not made by this router");
        if (dLogits == null || dLogits.length < r.tokens * experts)
            throw new Moe4jException("Router." + who + ": dLogits has " + (dLogits == null ? 0 : dLogits.length)
                    + " floats, expected [T, E] = [" + r.tokens + ", " + experts + "]");
    }
}
