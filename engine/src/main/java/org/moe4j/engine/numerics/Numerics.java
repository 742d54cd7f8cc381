package org.moe4j.engine.numerics;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.MatryoshkaConfig;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.PoolConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.routing.RoutingControl;
import org.moe4j.io.checkpoint.Checkpoint;
import org.moe4j.io.safetensors.SafetensorsWriter;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * Pinned numerics of a checkpoint: one forward and backward of the engine's training step on given tokens, with
 * every random choice pinned (pool sizes, k' per layer, ERC noise), reported as RESULT.json (losses, per-layer
 * router figures, logit statistics, pools, drops, optionally every routing decision) and d(total)/d(parameter)
 * as an F32 safetensors file under the HF names. Nothing is sampled: the same inputs give the same files.
 *
 * <p>The step is {@link MoeTransformer#forward()} then {@link MoeTransformer#backward()} — the training path itself,
 * not a copy of it — driven through each layer's {@link RoutingControl}: fixed k', the capacity factor, the subset
 * as an {@link ExpertSet} mask, the pool sizes given per document.
 */
public final class Numerics {
    private Numerics() {
    }

    /** What a run measured, for a caller that does not want to read the files back. */
    public record Outcome(ObjectNode result, double total) {
    }

    public static Outcome run(NumericsRequest q, WorkerPool pool) {
        ModelConfig c0;
        try (Checkpoint ck = Checkpoint.open(q.ckpt())) {
            c0 = ModelCheckpoint.config(ck);
        }
        NumericsInputs.Tokens tok = NumericsInputs.readTokens(q.tokens(), c0.vocab(), c0.eosId());
        for (int b = 0; b < tok.sequences().length; b++)
            if (tok.sequences()[b].length > c0.maxSeq())
                throw new Moe4jException(q.tokens() + ": tokens[" + b + "] has " + tok.sequences()[b].length
                        + " tokens, the checkpoint's maximum sequence length is " + c0.maxSeq());
        // the checkpoint's weights straight into a model with this run's settings (same layout, no second copy)
        MoeModel model = ModelCheckpoint.load(q.ckpt(), configFor(c0, q, tok));
        try (model) {
            return step(q, model, tok, pool);
        }
    }

    /** The checkpoint's config with this run's routing and loss settings (same parameter layout). */
    static ModelConfig configFor(ModelConfig c0, NumericsRequest q, NumericsInputs.Tokens tok) {
        RoutingConfig r0 = c0.routing();
        boolean norm = switch (q.normTopkProb()) {
            case "config" -> r0.normalizeTopK();
            case "true" -> true;
            case "false" -> false;
            default -> throw new Moe4jException("--norm-topk-prob " + q.normTopkProb() + ": expected config, true or false");
        };
        LbScope scope = r0.lbScope();
        if (q.lbScope() != null) {
            scope = switch (q.lbScope()) {
                case "global" -> LbScope.GLOBAL;
                case "local" -> LbScope.LOCAL;
                default -> throw new Moe4jException("--lb-scope " + q.lbScope() + ": expected global or local");
            };
        }
        LossWeights w = q.weights() == null ? c0.loss() : NumericsInputs.parseWeights(q.weights(), c0.loss());
        // pools, k' and capacity come from the controls, never from the config's training draws
        RoutingConfig r = new RoutingConfig(norm, r0.softmaxOverAll(), PoolConfig.none(), MatryoshkaConfig.off(), 0, 0, scope);
        return new ModelConfig(c0.vocab(), c0.d(), c0.layers(), c0.heads(), c0.kvHeads(), c0.experts(), c0.sharedExperts(),
                c0.k(), c0.expertHidden(), c0.ropeTheta(), c0.qkNorm(), c0.normEps(), tok.longest(), tok.eosId(), r, w,
                c0.layerExperts(), c0.layerK(), c0.tieEmbeddings());
    }

    private static Outcome step(NumericsRequest q, MoeModel model, NumericsInputs.Tokens tok, WorkerPool pool) {
        ModelConfig c = model.config();
        int L = c.layers(), E = c.experts(), s = c.sharedExperts(), routed = c.routedExperts(), d = c.d();
        int[] kPer = q.kPerLayer() == null ? null : NumericsInputs.parseKPerLayer(q.kPerLayer(), L, routed);
        int[][][] pools = q.mode() == NumericsRequest.Mode.EMO
                ? NumericsInputs.readPools(q.pools(), L, tok.documents(), routed) : null;
        int[][] subset = q.mode() == NumericsRequest.Mode.SUBSET ? NumericsInputs.readSubset(q.subset(), c) : null;
        float[][] noise = q.ercNoise() == null ? null : NumericsInputs.readErcNoise(q.ercNoise(), L, routed, d);

        int B = tok.sequences().length, N = tok.count();
        int[] starts = tok.starts();
        try (MoeTransformer tr = new MoeTransformer(model, N, B, routed, new JavaGemm(pool), pool)) {
            for (int l = 0; l < L; l++) {
                RoutingControl ctl = tr.control(l);
                ctl.fixedK(kPer == null ? c.routedK(l) : kPer[l]).capacityFactor(q.capacityFactor());
                ctl.subset(subset == null ? null : ExpertSet.of(c.experts(l), subset[l]));
                if (pools == null) ctl.noPools();
                else ctl.givenPools(Arrays.stream(pools[l]).flatMapToInt(Arrays::stream).toArray());
                if (noise != null) tr.pinErcNoise(l, keptRows(noise[l], subset == null ? null : subset[l], c.routedExperts(l), d));
            }
            tr.erc(noise != null);
            tr.docMask(q.docMask());
            tr.setBatch(tok.flat(), starts, B);
            model.zeroGrads();
            double total = tr.forward();
            // the logits are overwritten by backward: the report reads them now
            NumericsReport report = new NumericsReport(q, c, tok, kPer);
            report.forward(tr);
            tr.backward();
            if (q.grads() != null) writeGrads(q, model);
            report.write(q.out());
            return new Outcome(report.json(), total);
        }
    }

    /** u [E'kept * d] in kept order: the rows of the kept routed experts of the full [E - s, d] noise. */
    static float[] keptRows(float[] u, int[] subset, int routed, int d) {
        if (subset == null) return u;
        int n = 0;
        for (int e : subset) if (e < routed) n++;
        float[] out = new float[n * d];
        int i = 0;
        for (int e : subset) if (e < routed) System.arraycopy(u, e * d, out, d * i++, d);
        return out;
    }

    /**
     * Every parameter's gradient under its name. A tied model has one embedding tensor (no lm_head): its gradient
     * already is the sum of the embedding's and the LM head's uses, as Hugging Face reports it.
     */
    private static void writeGrads(NumericsRequest q, MoeModel model) {
        Map<String, Tensor> g = new LinkedHashMap<>();
        boolean tied = model.config().tied();
        for (ParamLayout.Entry e : model.layout().entries()) g.put(e.name(), model.grad(e.name()));
        SafetensorsWriter.write(q.grads(), g, Map.of("format", "pt", "writer", "moe4j numerics",
                "content", "d(total loss)/d(parameter)" + (tied ? "; tied embeddings: one tensor, the sum of both uses" : "")));
    }

}
