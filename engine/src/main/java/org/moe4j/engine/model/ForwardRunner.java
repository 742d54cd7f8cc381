package org.moe4j.engine.model;

import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.routing.RoutingControl;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.MixedGemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.VectorOps;
import org.moe4j.simd.WeightGemm;
import org.moe4j.simd.WorkerPool;
import org.moe4j.simd.Workspace;

/**
 * The forward-only model (DESIGN.md "Inference, as data"): the same {@link AttentionBlock} and {@link MoeBlock} code
 * as training, driven without gradients and without saved activations (every layer shares one set of activation
 * buffers), with a {@link KvCache}. A call runs some rows of some sequences: a prompt (prefill, from position 0)
 * or the next token of each decoding sequence, each sequence in its own cache slot, and writes the logits of each
 * sequence's last row (or of every row). Weight products go through a {@link WeightGemm}: weights are streamed
 * once per call for few rows, F32 or BF16 — and for any number of rows in a decode step (one row per sequence), so
 * that a row's bits do not depend on the other rows of the step ({@link WeightGemm#streamAllRows}).
 *
 * <p>Routing per layer is {@link #control(int)}: k' (elastic k, a budget per layer) and an expert subset; capacity
 * is off. With {@link #generationPools(int)} an EMO model routes each generated document inside a frozen pool
 * (see {@link GenerationPools}). Not thread-safe: one call at a time; after construction a call allocates nothing
 * on the heap.
 */
public final class ForwardRunner implements AutoCloseable {
    private final ModelConfig c;
    private final ModelWeights weights;
    private final Workspace ws;
    private final BlockContext x;
    private final KvCache cache;
    private final AttentionBlock[] attn;
    private final MoeBlock[] moe;
    private final RoutingControl[] controls;
    private final Tensor xa, xb, lastX, xf, rstdf, logits;
    private final boolean allRowLogits;
    private final int maxRoutedK;
    /** BF16 weights on native bf16: the bf16 x bf16 GEMM for calls of many rows, and its oneDNN backend; else null. */
    private MixedGemm many16;
    private org.moe4j.nativ.OneDnnBf16Gemm many16Backend;
    private GenerationPools pools;
    private LayerObserver observer;
    private int logitRows;

    /** Sees each layer's routing during a forward (calibration, routing analyses); called on the forward's thread. */
    public interface LayerObserver {
        /**
         * After layer l's MoE block: its routing over this call's rows ({@code routing.prob}, experts, gates,
         * {@code perm}) and the experts' outputs before gating, [keptSlots, d], row i for kept slot
         * {@code routing.perm[i]}. Both are overwritten by the next layer.
         */
        void afterMoe(int layer, org.moe4j.engine.routing.Routing routing, Tensor expertOutputs);
    }

    /** Installs (or with null removes) the layer observer. */
    public void observer(LayerObserver o) {
        observer = o;
    }

    /**
     * @param maxTokens    rows per call (a prompt chunk, or the decode batch)
     * @param slots        sequences the KV cache holds at once
     * @param maxPositions positions per sequence (prompt + generated), at most the config's maxSeq
     * @param maxRoutedK   the largest k' any layer will route with (elastic k above the trained k needs it)
     * @param allRowLogits keep the logits of every row (tests, scoring) instead of each sequence's last row
     */
    public ForwardRunner(ModelWeights weights, int maxTokens, int slots, int maxPositions, int maxRoutedK,
                         boolean allRowLogits, Gemm gemm, WorkerPool pool) {
        this(weights, maxTokens, slots, maxPositions, maxRoutedK, allRowLogits, false, gemm, pool);
    }

    /** As above, with a BF16 KV cache when {@code bf16Kv} ({@link KvCache}). */
    public ForwardRunner(ModelWeights weights, int maxTokens, int slots, int maxPositions, int maxRoutedK,
                         boolean allRowLogits, boolean bf16Kv, Gemm gemm, WorkerPool pool) {
        this.c = weights.layout().config();
        this.weights = weights;
        if (maxRoutedK < 1 || maxRoutedK > c.routedExperts())
            throw new Moe4jException("k' = " + maxRoutedK + " is out of range: the model has " + c.routedExperts()
                    + " routed experts (k' in 1.." + c.routedExperts() + ")");
        if (slots < 1 || maxTokens < 1)
            throw new Moe4jException("inference: maxTokens = " + maxTokens + ", slots = " + slots + ": both must be >= 1");
        this.maxRoutedK = maxRoutedK;
        this.allRowLogits = allRowLogits;
        int maxSeqs = Math.min(slots, maxTokens);
        ws = new Workspace();
        try {
            int maxK = Math.max(Math.max(c.d(), c.expertHidden()), c.heads() * c.headSize());
            WeightGemm wg = new WeightGemm(pool, gemm, maxK);
            if (weights.bf16() && !(gemm instanceof org.moe4j.simd.JavaGemm) && org.moe4j.nativ.OneDnn.available()
                    && org.moe4j.nativ.OneDnn.bf16Native()) {
                // BF16 weights on a CPU with native bf16: prompt chunks and popular experts (more than
                // smallRows() rows) as bf16 x bf16 GEMMs on oneDNN; decode rows keep the F32-activation streaming kernel
                many16Backend = new org.moe4j.nativ.OneDnnBf16Gemm(pool.threads());
                many16 = new MixedGemm(many16Backend, pool);
                wg.manyRowsBf16(many16);
            }
            x = new BlockContext(c, weights, null, maxTokens, maxSeqs, maxRoutedK, gemm, wg, pool, ws, false);
            if (many16 != null) many16.reserve((long) x.slots() * maxK, 0);
            x.nonFiniteReport = () -> "non-finite value in the forward pass (check the weights)";
            cache = new KvCache(c, slots, maxPositions, bf16Kv);
            AttentionBlock.Activations aa = new AttentionBlock.Activations(x, "attn.");
            MoeBlock.Activations ma = new MoeBlock.Activations(x, "moe.", 0);
            // one set of buffers for every layer; a layer whose E_l differs gets its own router over them
            java.util.Map<Integer, MoeBlock.Activations> byExperts = new java.util.HashMap<>();
            byExperts.put(c.experts(0), ma);
            attn = new AttentionBlock[c.layers()];
            moe = new MoeBlock[c.layers()];
            controls = new RoutingControl[c.layers()];
            for (int l = 0; l < c.layers(); l++) {
                attn[l] = new AttentionBlock(x, l, aa);
                int layer = l;
                moe[l] = new MoeBlock(x, l, byExperts.computeIfAbsent(c.experts(l), e -> new MoeBlock.Activations(x, ma, layer)));
                controls[l] = new RoutingControl().fixedK(c.routedK(l)).capacityFactor(0);
            }
            xa = ws.allocate("x.a", maxTokens, c.d());
            xb = ws.allocate("x.b", maxTokens, c.d());
            int outRows = allRowLogits ? maxTokens : maxSeqs;
            lastX = ws.allocate("x.last", outRows, c.d());
            xf = ws.allocate("final.xn", outRows, c.d());
            rstdf = ws.allocate("final.rstd", outRows);
            logits = ws.allocate("logits", outRows, c.vocab());
        } catch (RuntimeException | Error e) {
            closeMany16();
            ws.close();
            throw e;
        }
    }

    public ModelConfig config() {
        return c;
    }

    public ModelWeights weights() {
        return weights;
    }

    public KvCache cache() {
        return cache;
    }

    /** Rows per call. */
    public int maxTokens() {
        return x.maxN;
    }

    /** Sequences per call. */
    public int maxSequences() {
        return x.maxSeqs;
    }

    public int maxRoutedK() {
        return maxRoutedK;
    }

    /** Layer l's routing: {@code fixedK(k')} (at most {@link #maxRoutedK()}) and {@code subset(set)}. */
    public RoutingControl control(int l) {
        return controls[l];
    }

    /**
     * Sets k' per layer (elastic k; null = each layer's own k'_l) and one subset per layer (null = every expert;
     * layer l's over its E_l experts).
     */
    public void routing(int[] kPerLayer, ExpertSet[] subsetPerLayer) {
        for (int l = 0; l < c.layers(); l++) {
            int k = kPerLayer == null ? c.routedK(l) : kPerLayer[l];
            if (k < 1 || k > maxRoutedK)
                throw new Moe4jException("k' = " + k + " at layer " + l + " is out of range 1.." + maxRoutedK);
            controls[l].fixedK(k).subset(subsetPerLayer == null ? null : subsetPerLayer[l]);
        }
    }

    /** EMO generation: route each document inside a pool of {@code evalPool} experts frozen from its prompt. */
    public void generationPools(int evalPool) {
        pools = evalPool > 0 ? new GenerationPools(c, cache.slots(), evalPool) : null;
        if (pools == null) for (RoutingControl ctl : controls) ctl.noPools(); // the pools' last setting must not linger
    }

    /** The frozen pools of EMO generation, or null when off. */
    public GenerationPools pools() {
        return pools;
    }

    /**
     * Runs {@code sequences} sequences: sequence i's tokens are tokenIds[starts[i] .. starts[i+1]); they continue
     * KV-cache slot slots[i] at position firstPos[i] (0 for a new prompt). Afterwards {@link #logits()} holds the
     * logits of each sequence's last row (row i), or of every row with allRowLogits.
     */
    public void forward(int[] tokenIds, int[] starts, int[] firstPos, int[] slots, int sequences) {
        forward(tokenIds, starts, firstPos, slots, sequences, c.layers());
    }

    /**
     * As {@link #forward(int[], int[], int[], int[], int)} through the first {@code layers} layers only (the layer
     * observer sees those): with fewer than all, nothing after them runs — no later layer, no logits (then
     * {@link #logits()} is stale), and the KV cache of the later layers is left as it was. Layer-by-layer expert
     * selection scores layer l from layers 0..l.
     */
    public void forward(int[] tokenIds, int[] starts, int[] firstPos, int[] slots, int sequences, int layers) {
        if (layers < 1 || layers > c.layers())
            throw new Moe4jException("inference: layers " + layers + " outside 1.." + c.layers());
        Batch b = x.batch;
        for (int i = 0; i < sequences; i++)
            if (slots[i] < 0 || slots[i] >= cache.slots())
                throw new Moe4jException("inference: slot " + slots[i] + " of sequence " + i + " is outside 0.."
                        + (cache.slots() - 1));
        b.set(tokenIds, starts, firstPos, slots, sequences, true);
        int N = b.N, d = c.d(), L = c.layers();
        // a decode step (one row per sequence): every product streams, so that a sequence's bits do not depend on
        // how many sequences decode with it (WeightGemm.streamAllRows)
        x.weightGemm.streamAllRows(N == sequences);
        for (int i = 0; i < sequences; i++)
            if (b.firstPos[i] + (starts[i + 1] - starts[i]) > cache.maxPositions())
                throw new Moe4jException("inference: sequence " + i + " would reach position "
                        + (b.firstPos[i] + starts[i + 1] - starts[i]) + ", the KV cache holds " + cache.maxPositions());
        if (pools != null) pools.checkBatch(b);
        weights.embed(b.tokens, N, xa.segment(), d, c.vocab());
        Tensor in = xa, out = xb;
        for (int l = 0; l < layers; l++) {
            attn[l].forward(in.segment(), cache);
            if (pools != null) pools.before(l, b, controls[l]);
            moe[l].forward(attn[l].a.hres.segment(), out.segment(), controls[l]);
            if (pools != null) pools.after(l, b, moe[l].routing());
            if (observer != null) observer.afterMoe(l, moe[l].routing(), moe[l].a.ye);
            Tensor t = in;
            in = out;
            out = t;
        }
        if (layers < L) {
            logitRows = 0; // no logits from this forward
            return;
        }
        MemorySegment h = in.segment();
        int rows;
        if (allRowLogits) {
            rows = N;
            MemorySegment.copy(h, 0, lastX.segment(), 0, (long) N * d * 4);
        } else {
            rows = sequences;
            for (int i = 0; i < sequences; i++)
                MemorySegment.copy(h, (long) (b.seqStart[i + 1] - 1) * d * 4, lastX.segment(), (long) i * d * 4, (long) d * 4);
        }
        long normOff = weights.vectorOffset(ParamLayout.finalNorm());
        x.ops.rmsNorm(lastX.segment(), 0, x.P, normOff, xf.segment(), 0, rstdf.segment(), 0, d, x.eps, rows);
        x.linear(rows, c.vocab(), d, xf.segment(), 0, d, weights.matrixOffset(ParamLayout.lmHead()), 0f,
                logits.segment(), 0, c.vocab());
        logitRows = rows;
        if (VectorOps.firstNonFinite(logits.segment(), 0, (long) rows * c.vocab()) >= 0)
            throw new NonFiniteException("non-finite logits: " + firstNonFinite(in));
    }

    private String firstNonFinite(Tensor last) {
        // the shared activations hold only the last layer's values: name what is still visible
        String at = x.scan(new Tensor[] {last}, new String[] {"final residual stream"});
        return at != null ? at : "in the LM head (check the weights)";
    }

    /** Logits [rows, V]: row i = sequence i's last row (or every row with allRowLogits). */
    public Tensor logits() {
        return logits;
    }

    /** Rows of {@link #logits()} the last call wrote. */
    public int logitRows() {
        return logitRows;
    }

    private void closeMany16() {
        if (many16 != null) many16.close();
        if (many16Backend != null) many16Backend.close();
    }

    /**
     * Whether a prefill runs a layer's experts concurrently, one expert per pool thread on a one-thread GEMM, when
     * some expert has more rows than a decode step gives it (the default where the GEMM has a one-thread form and
     * the pool more than one thread; {@code -Dmoe4j.experts.concurrent=false} turns it off).
     */
    public boolean concurrentExperts() {
        return x.concurrentGroups();
    }

    /** How many expert products (per layer and matrix) ran concurrently so far: tests and benchmarks. */
    public long concurrentExpertCalls() {
        return x.concurrentCalls;
    }

    /** Whether BF16-weight calls of many rows run as bf16 x bf16 GEMMs ({@link WeightGemm#manyRowsBf16}). */
    public boolean bf16Prefill() {
        return many16 != null;
    }

    @Override
    public void close() {
        try {
            cache.close();
        } finally {
            try {
                closeMany16();
            } finally {
                ws.close();
            }
        }
    }
}
