package org.moe4j.engine.model;

import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.routing.Routing;
import org.moe4j.engine.routing.RoutingControl;
import org.moe4j.engine.routing.RoutingRng;
import org.moe4j.engine.config.Precision;
import org.moe4j.simd.Bf16Gemm;
import org.moe4j.simd.Embedding;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.MixedGemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.VectorOps;
import org.moe4j.simd.WorkerPool;
import org.moe4j.simd.Workspace;

/**
 * Forward and backward of the MoE language model (ALGORITHMS.md sections 1-3, DESIGN.md "One training step") over
 * a batch of packed sequences, with every activation in a workspace allocated once for (maxTokens, maxSequences).
 *
 * <pre>
 *   x0 = embed(tokens)
 *   per layer:  h = x + Wo·Attn(RoPE(q), RoPE(k), v),  q,k,v = W{q,k,v}·RMSNorm(x)   (QK-norm optional)
 *               y = h + Σ_{kept slots} g · W2_e (silu(W1_e u) ⊙ W3_e u),  u = RMSNorm(h)   (shared: g = 1)
 *   logits = W_lm · RMSNorm(x_L);  loss = CE + w_oz·outZ + w_lb·mean lb + w_z·mean z + w_erc·mean erc
 * </pre>
 * Routing is the {@link Router} pipeline per layer, driven by one {@link RoutingControl} per layer (training
 * defaults from the config; pin pools and k' through {@link #control(int)}). Sparse dispatch: the router's
 * counting sort gives each expert a contiguous block of rows; each expert runs two GEMMs on its block; gates
 * scale the rows as they are added back per token (race-free, no atomics).
 *
 * <p>Each decoder layer is an {@link AttentionBlock} and a {@link MoeBlock}, each holding its parameter offsets, its
 * forward and its backward over the activations it is handed (each layer its own here; the forward-only
 * {@link ForwardRunner} hands every layer the same ones). They share the kernels, the batch and the backward
 * scratch through one {@link BlockContext}.
 *
 * <p>Precision: FP32, or BF16 mixed precision when built with a {@link Bf16Gemm} (see {@link Precision}): the
 * projections, experts and LM head multiply bf16-rounded activations by a bf16 copy of their weights with float32
 * accumulation, forward and backward; the copy is refreshed lazily on the first forward after
 * {@link #weightsChanged()} (the {@code Trainer} calls it after each optimizer step). The model's parameters,
 * gradients and everything else stay float32.
 *
 * <p>{@link #forward} then {@link #backward} ADD d(total)/d(param) into the model's gradient buffer. Every
 * buffer is allocated in the constructor; a step with an unchanged batch shape allocates nothing.
 */
public final class MoeTransformer implements AutoCloseable {
    private final MoeModel model;
    private final ModelConfig c;
    private final BlockContext x;
    private final Workspace ws;
    private final int maxN, maxSeqs, d, V, L;
    private final MemorySegment P, G;
    private final StepStats stats;
    private final RoutingControl[] controls;
    private final RoutingRng ercRng;
    private RoutingRng routingRng;
    private final AttentionBlock[] attn;
    private final MoeBlock[] moe;
    /** xs[l]: the input of layer l on the residual stream [maxN, d]; xs[L] the final residual stream. */
    private final Tensor[] xs;
    private boolean ercOn;
    private GradientListener gradientListener;
    /** layerStart[l]: the first parameter of layer l; layerStart[L] the final norm's. */
    private final long[] layerStart;
    private final Tensor xf, rstdf, logits, lseV;
    private final long embOff, finalNormOff, lmOff;
    /** BF16: the mixed-precision GEMM (owned); null in FP32. */
    private final MixedGemm mixed;
    /** BF16: the bf16 weight copy no longer matches the master weights. */
    private boolean bf16Stale = true;

    public MoeTransformer(MoeModel model, int maxTokens, int maxSequences, Gemm gemm, WorkerPool pool) {
        this(model, maxTokens, maxSequences, model.config().maxRoutedK(), gemm, pool);
    }

    /**
     * A transformer for batches of up to maxTokens tokens in up to maxSequences sequences, whose routing may pick
     * up to maxRoutedK routed experts per token (the config's k', or Matryoshka's kMax; more for layer budgets).
     */
    public MoeTransformer(MoeModel model, int maxTokens, int maxSequences, int maxRoutedK, Gemm gemm, WorkerPool pool) {
        this(model, maxTokens, maxSequences, maxRoutedK, gemm, null, pool);
    }

    /**
     * As above, in BF16 mixed precision when {@code bf16} is non-null (its weight products on that kernel; the
     * router and ERC stay on {@code gemm}), FP32 when it is null. The caller keeps ownership of both GEMMs.
     */
    public MoeTransformer(MoeModel model, int maxTokens, int maxSequences, int maxRoutedK, Gemm gemm, Bf16Gemm bf16,
                          WorkerPool pool) {
        if (maxRoutedK < 1 || maxRoutedK > model.config().routedExperts())
            throw new Moe4jException("MoeTransformer: maxRoutedK = " + maxRoutedK + " must be in [1, routed experts = "
                    + model.config().routedExperts() + "]");
        if (maxTokens < 1 || maxSequences < 1 || maxSequences > maxTokens)
            throw new Moe4jException("MoeTransformer: maxTokens = " + maxTokens + ", maxSequences = " + maxSequences
                    + ": need 1 <= maxSequences <= maxTokens");
        if (model.grads() == null)
            throw new Moe4jException("MoeTransformer: the model was loaded for inference (no gradient buffer); "
                    + "training needs a model with gradients");
        this.model = model;
        this.c = model.config();
        this.maxN = maxTokens;
        this.maxSeqs = maxSequences;
        d = c.d();
        V = c.vocab();
        L = c.layers();
        P = model.params();
        G = model.grads();
        ws = new Workspace();
        mixed = bf16 == null ? null : new MixedGemm(bf16, pool);
        x = new BlockContext(c, ModelWeights.f32(model), G, maxTokens, maxSequences, maxRoutedK, gemm, null, mixed,
                pool, ws, true);
        x.nonFiniteReport = this::firstNonFinite;
        stats = new StepStats(L);
        controls = new RoutingControl[L];
        RoutingRng rng = new RoutingRng(0x5EEDL);
        routingRng = rng;
        for (int l = 0; l < L; l++) controls[l] = RoutingControl.training(c, l, rng);
        ercRng = new RoutingRng(0xE5CL);
        ercOn = c.loss().erc() > 0;

        ParamLayout lay = model.layout();
        embOff = lay.offset(ParamLayout.embedTokens());
        finalNormOff = lay.offset(ParamLayout.finalNorm());
        lmOff = lay.offset(ParamLayout.lmHead());
        layerStart = new long[L + 1];
        for (int l = 0; l < L; l++) layerStart[l] = lay.offset(ParamLayout.preAttentionNorm(l));
        layerStart[L] = finalNormOff;
        attn = new AttentionBlock[L];
        moe = new MoeBlock[L];
        xs = new Tensor[L + 1];
        for (int l = 0; l < L; l++) {
            String p = "layer" + l + ".";
            xs[l] = ws.allocate(p + "x", maxN, d);
            attn[l] = new AttentionBlock(x, l, new AttentionBlock.Activations(x, p));
            moe[l] = new MoeBlock(x, l, new MoeBlock.Activations(x, p, l));
            if (moe[l].erc != null) moe[l].erc.alpha(c.loss().ercAlpha());
        }
        xs[L] = ws.allocate("layer" + L + ".x", maxN, d);
        xf = ws.allocate("final.xn", maxN, d);
        rstdf = ws.allocate("final.rstd", maxN);
        logits = ws.allocate("final.logits", maxN, V);
        lseV = ws.allocate("final.lse", maxN);
    }

    public ModelConfig config() {
        return c;
    }

    /**
     * Whether a layer's experts run concurrently, one per thread on single-threaded GEMM backends (oneDNN or the
     * Java GEMM, two or more threads, unless {@code -Dmoe4j.experts.concurrent=false}); else each expert's products
     * are split over the threads one after another.
     */
    public boolean concurrentExperts() {
        return x.concurrentGroups();
    }

    /** FP32, or BF16 when built with a bf16 GEMM. */
    public Precision precision() {
        return mixed == null ? Precision.FP32 : Precision.BF16;
    }

    /**
     * Says the model's parameters changed (an optimizer step, a load): in BF16 the next forward re-rounds the bf16
     * weight copy first. A no-op in FP32.
     */
    public void weightsChanged() {
        bf16Stale = true;
    }

    /**
     * BF16: the bf16 copy of the weights the GEMMs read, at the parameters' element offsets (for an optimizer that
     * writes it as it updates them: {@code AdamWOptimizer.bf16Copy}); null in FP32.
     */
    public MemorySegment bf16Weights() {
        return x.W16;
    }

    /** Whether {@link #bf16Weights()} holds a copy of this tensor (the matrices; not norms, routers, gathered embedding). */
    public boolean bf16Copied(ParamLayout.Entry e) {
        return x.W16 != null && BlockContext.bf16Copied(model.layout(), e);
    }

    /**
     * As {@link #weightsChanged()}, when {@code bf16CopyWritten} is false; true says the change also wrote {@link
     * #bf16Weights()} (an optimizer step that writes every copied tensor), so the next forward uses the copy as it is.
     */
    public void weightsChanged(boolean bf16CopyWritten) {
        bf16Stale = !bf16CopyWritten;
    }

    public MoeModel model() {
        return model;
    }

    /** Zeroes the model's gradients over this transformer's worker pool (before a step's first backward). */
    public void zeroGrads() {
        model.zeroGrads(x.pool);
    }

    public int maxTokens() {
        return maxN;
    }

    public int maxSequences() {
        return maxSeqs;
    }

    /** The routing control of layer l (pools, k', subset, capacity); training defaults from the config. */
    public RoutingControl control(int l) {
        return controls[l];
    }

    /** Replaces every layer's control by the config's training (true) or evaluation (false) defaults. */
    public void useDefaults(boolean training, long seed) {
        RoutingRng rng = new RoutingRng(seed);
        routingRng = rng;
        for (int l = 0; l < L; l++) controls[l] = training ? RoutingControl.training(c, l, rng) : RoutingControl.eval(c, l);
        ercRng.setState(seed ^ 0xE5CL);
    }

    /** Restricts attention to the query's own document (EOS-delimited). */
    public void docMask(boolean on) {
        x.docMask = on;
    }

    /** Runs every MoE block's experts with {@code e} (null: {@link ExpertExecutor#LOCAL}, every expert here). */
    public void expertExecutor(ExpertExecutor e) {
        x.experts = e == null ? ExpertExecutor.LOCAL : e;
    }

    /** What an expert executor sees of layer l's MoE block. */
    public ExpertSlots expertSlots(int l) {
        return moe[l].slots;
    }

    /**
     * Told, during {@link #backward}, when a range of the gradient buffer holds its final value for this backward
     * (data parallel hands it to the all-reduce while the earlier layers still run). The ranges come in backward
     * order: final norm and LM head, then layer L-1 .. 0, then the embedding; together they cover the buffer once.
     */
    @FunctionalInterface
    public interface GradientListener {
        /** Gradients [offset, offset + count) (elements) are final; called on the training thread. */
        void ready(long offset, long count);
    }

    /** Installs (null: removes) the listener of the following backward passes. */
    public void gradientListener(GradientListener l) {
        gradientListener = l;
    }

    /** Switches ERC off (weight 0 in the config also does). */
    public void erc(boolean on) {
        ercOn = on && c.loss().erc() > 0;
    }

    /** Pins ERC's noise u [E'kept, d] (kept order) of layer l; null draws fresh noise each step. */
    public void pinErcNoise(int l, float[] u) {
        moe[l].erc.pinNoise(u);
    }

    /** The stream the default controls draw pool sizes and Matryoshka k from (its state goes into checkpoints). */
    public RoutingRng routingRng() {
        return routingRng;
    }

    public RoutingRng ercRng() {
        return ercRng;
    }

    public StepStats stats() {
        return stats;
    }

    /** The routing of layer l from the last forward. */
    public Routing routing(int l) {
        return moe[l].routing();
    }

    /** Logits of the last forward [N, V] (overwritten by backward). */
    public Tensor logits() {
        return logits;
    }

    /**
     * Sets the batch: {@code sequences} packed sequences, tokens[seqStart[i] .. seqStart[i+1]) each (token ids in
     * [0, vocab); an EOS opens a document). Labels are the next token within a sequence.
     */
    public void setBatch(int[] tokenIds, int[] starts, int sequences) {
        x.batch.set(tokenIds, starts, sequences);
    }

    /** Sets B sequences of T tokens each from tokens [B*T] (no allocation when B and T stay the same). */
    public void setBatch(int[] tokenIds, int batch, int T) {
        x.batch.setUniform(tokenIds, batch, T);
    }

    // --------------------------------------------------------------------------------------------------- forward

    /** Runs the model on the batch and returns the total loss; details in {@link #stats()}. */
    public double forward() {
        Batch b = x.batch;
        int N = b.N, B = b.B;
        if (N == 0) throw new Moe4jException("forward: no batch set");
        if (mixed != null && bf16Stale) {
            x.refreshBf16();
            bf16Stale = false;
        }
        PhaseTimer.enter(PhaseTimer.Phase.EMBED);
        Embedding.forward(P, embOff, V, b.tokens, xs[0].segment(), 0, d, 0, N);
        double lbSum = 0, zSum = 0, ercSum = 0, epsSum = 0;
        LossWeights w = c.loss();
        for (int l = 0; l < L; l++) {
            PhaseTimer.enter(PhaseTimer.Phase.ATTENTION);
            attn[l].forward(xs[l].segment(), null);
            MoeBlock moe = this.moe[l];
            moe.forward(attn[l].a.hres.segment(), xs[l + 1].segment(), controls[l]);
            PhaseTimer.enter(PhaseTimer.Phase.ROUTER);
            Routing r = moe.routing();
            LbScope scope = c.routing().lbScope();
            stats.lb[l] = moe.a.router.loadBalanceLoss(r, scope);
            stats.z[l] = moe.a.router.zLoss(r);
            stats.kRouted[l] = r.kRouted();
            stats.drops[l] = r.dropCount();
            int min = Integer.MAX_VALUE, max = 0, sum = 0;
            for (int e = r.keptRouted.nextMember(0); e >= 0; e = r.keptRouted.nextMember(e + 1)) {
                min = Math.min(min, r.countBefore[e]);
                max = Math.max(max, r.countBefore[e]);
                sum += r.countBefore[e];
            }
            stats.loadMin[l] = sum == 0 ? 0 : (double) min / sum;
            stats.loadMax[l] = sum == 0 ? 0 : (double) max / sum;
            if (ercOn) {
                PhaseTimer.enter(PhaseTimer.Phase.ERC);
                int n = 0;
                for (int e = r.keptRouted.nextMember(0); e >= 0; e = r.keptRouted.nextMember(e + 1)) moe.keptList[n++] = e;
                stats.erc[l] = moe.erc.forward(P, moe.wr, moe.w1Store, moe.w1At, moe.keptList, n, ercRng);
                stats.ercEps[l] = moe.erc.epsMean();
            } else {
                stats.erc[l] = Double.NaN;
                stats.ercEps[l] = Double.NaN;
            }
            lbSum += stats.lb[l];
            zSum += stats.z[l];
            if (ercOn) {
                ercSum += stats.erc[l];
                epsSum += stats.ercEps[l];
            }
        }
        Tensor xL = xs[L];
        PhaseTimer.enter(PhaseTimer.Phase.HEAD);
        x.ops.rmsNorm(xL.segment(), 0, P, finalNormOff, xf.segment(), 0, rstdf.segment(), 0, d, x.eps, N);
        x.linear(N, V, d, xf.segment(), 0, d, lmOff, 0f, logits.segment(), 0, V);
        int labels = N - B;
        PhaseTimer.enter(PhaseTimer.Phase.CE);
        double ceSum = x.ops.crossEntropy(logits.segment(), b.targetSeg, lseV.segment(), V, N);
        double zOut = org.moe4j.simd.CrossEntropy.zLossSum(lseV.segment(), 0, b.targetSeg, 0, -1, 0, N);
        stats.tokens = N;
        stats.sequences = B;
        stats.labels = labels;
        stats.ce = labels == 0 ? 0 : ceSum / labels;
        stats.outZ = labels == 0 ? 0 : zOut / labels;
        stats.lbMean = lbSum / L;
        stats.zMean = zSum / L;
        stats.ercMean = ercOn ? ercSum / L : Double.NaN;
        stats.total = stats.ce + w.outputZ() * stats.outZ + w.lb() * stats.lbMean + w.routerZ() * stats.zMean
                + (ercOn ? w.erc() * stats.ercMean : 0);
        PhaseTimer.stop();
        if (!Double.isFinite(stats.total)) throw new NonFiniteException(firstNonFinite());
        return stats.total;
    }

    // --------------------------------------------------------------------------------------------------- backward

    /** Adds d(total)/d(param) of the last forward into the model's gradients. Overwrites the logits. */
    public void backward() {
        model.gradsWritten();
        LossWeights w = c.loss();
        Batch b = x.batch;
        int N = b.N, labels = N - b.B;
        float scale = labels == 0 ? 0f : 1f / labels;
        MemorySegment lg = logits.segment();
        PhaseTimer.enter(PhaseTimer.Phase.CE_BWD);
        x.ops.crossEntropyBackward(lg, b.targetSeg, lseV.segment(), scale, (float) w.outputZ(), V, N);
        PhaseTimer.enter(PhaseTimer.Phase.HEAD_BWD);
        x.linearBackWeightRepeated(V, d, N, lg, 0, V, xf.segment(), 0, d, lmOff);
        x.linearBackInput(N, d, V, lg, 0, V, lmOff, 0f, x.tmp.segment(), 0, d);
        x.ops.rmsNormBackward(x.tmp.segment(), 0, xs[L].segment(), 0, P, finalNormOff, rstdf.segment(), 0,
                x.dx.segment(), 0, false, G, finalNormOff, d, N);
        GradientListener gl = gradientListener;
        long total = model.layout().total();
        if (gl != null) gl.ready(finalNormOff, total - finalNormOff);
        for (int l = L - 1; l >= 0; l--) {
            moe[l].backward(attn[l].a.hres.segment(), w, ercOn);
            PhaseTimer.enter(PhaseTimer.Phase.ATTENTION_BWD);
            attn[l].backward(xs[l].segment());
            if (gl != null) gl.ready(layerStart[l], layerStart[l + 1] - layerStart[l]);
        }
        // embedding: scatter-add over columns split across workers (repeated ids never race)
        embTask.dx = x.dx.segment();
        PhaseTimer.enter(PhaseTimer.Phase.EMBED_BWD);
        x.pool.parallelFor(d, embTask);
        if (gl != null) gl.ready(0, layerStart[0]);
        PhaseTimer.stop();
    }

    private final class EmbeddingGrad implements WorkerPool.RangeTask {
        MemorySegment dx;

        @Override
        public void run(int c0, int c1, int worker) {
            Embedding.backward(dx, 0, x.batch.tokens, G, embOff, V, d, 0, x.batch.N, c0, c1);
        }
    }

    private final EmbeddingGrad embTask = new EmbeddingGrad();

    // --------------------------------------------------------------------------------------------------- checks

    /** Names the first tensor, in forward order, that holds a NaN or infinity. */
    private String firstNonFinite() {
        long emb = VectorOps.firstNonFinite(P, embOff, (long) V * d);
        if (emb >= 0) return "non-finite loss: parameter " + ParamLayout.embedTokens() + " holds a non-finite value";
        for (int l = 0; l < L; l++) {
            String at = x.scan(new Tensor[] {xs[l]}, new String[] {"input"});
            if (at == null) at = attn[l].firstNonFinite();
            if (at == null) at = moe[l].firstNonFinite();
            if (at != null) return "non-finite loss: first at layer " + l + ", " + at;
        }
        int N = x.batch.N;
        long at = VectorOps.firstNonFinite(logits.segment(), 0, (long) N * V);
        if (at >= 0) return "non-finite loss: first in the LM head logits, row " + at / V;
        return "non-finite loss: ce = " + stats.ce + ", outZ = " + stats.outZ + ", lb = " + stats.lbMean + ", z = "
                + stats.zMean + ", erc = " + stats.ercMean + " (activations are finite; an aux loss overflowed)";
    }

    @Override
    public void close() {
        try {
            x.close();
        } finally {
            try {
                if (mixed != null) mixed.close();
            } finally {
                ws.close();
            }
        }
    }

    /** The subset helper: every layer routes only among {@code set} (shared experts always stay). */
    public void subset(int l, ExpertSet set) {
        controls[l].subset(set);
    }
}
