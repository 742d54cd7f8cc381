package org.moe4j.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.engine.routing.ExpertSet;

/**
 * DecodeBench's analytic counts against an independent count over the {@link ParamLayout}: the bound and the % of
 * peak it prints are only as right as these.
 */
class DecodeBenchTest {
    /** Shared experts, GQA, qk-norm, an odd vocabulary: every term of the count differs from the others. */
    static final ModelConfig ODD = new ModelConfig(1000, 48, 3, 6, 2, 10, 2, 5, 40, 10000.0, true, 1e-6, 64, 0,
            RoutingConfig.standard(), LossWeights.defaults());

    static List<ModelConfig> configs() {
        return List.of(ModelConfig.bench(), DecodeBench.config("olmoe", 32, 192), DecodeBench.config("bench", 64, 192),
                ModelConfig.tiny(), ODD);
    }

    /**
     * Bytes a batch-1 decoded token reads, summed over the layout's tensors: every tensor in full except the experts
     * (the first k per layer stand for any k, all experts being the same size) and the embedding (one row). Norms and
     * routers are F32 in both precisions (ModelWeights keeps them F32), the rest in the matrices' dtype.
     */
    static double layoutBytes(ModelConfig c, boolean bf16) {
        ParamLayout layout = new ParamLayout(c);
        double bytes = 0;
        for (ParamLayout.Entry e : layout.entries()) {
            String n = e.name();
            boolean f32 = e.shape().length == 1 || n.endsWith(".mlp.gate.weight");
            double size = f32 ? 4 : bf16 ? 2 : 4;
            long count = e.numel();
            if (n.equals(ParamLayout.embedTokens())) count = c.d();
            int at = n.indexOf(".experts.");
            if (at >= 0) {
                int j = Integer.parseInt(n.substring(at + 9, n.indexOf('.', at + 9)));
                if (j >= c.k()) count = 0;
            }
            bytes += count * size;
        }
        return bytes;
    }

    @Test
    void decodeBytesMatchTheLayout() {
        for (ModelConfig c : configs()) {
            for (boolean bf16 : new boolean[] {false, true}) {
                assertEquals(layoutBytes(c, bf16), DecodeBench.decodeBytes(c, bf16), 1e-6,
                        () -> "decode bytes of " + DecodeBench.describe(c) + (bf16 ? " BF16" : " F32"));
            }
        }
    }

    /**
     * KV bytes per decoded token = the mean over the timed steps (t = 1 .. new - 1, each reading prompt + t cached
     * positions) of the bytes those positions take in the engine's KV cache (one slot).
     */
    @Test
    void kvBytesAreTheCachedPositionsAStepReads() {
        for (ModelConfig c : configs()) {
            for (int[] pn : new int[][] {{1, 3}, {16, 8}, {40, 17}}) {
                int prompt = pn[0], fresh = pn[1];
                for (boolean bf16 : new boolean[] {false, true}) {
                    double sum = 0;
                    for (int t = 1; t < fresh; t++)
                        sum += org.moe4j.engine.model.KvCache.bytes(c, 1, prompt + t, bf16);
                    double want = sum / (fresh - 1);
                    // the mean of prompt + t over t = 1 .. fresh - 1 is prompt + fresh / 2
                    assertEquals(want, DecodeBench.kvBytes(c, prompt, fresh, bf16), want * 1e-12, DecodeBench.describe(c));
                }
            }
        }
    }

    /** Prefill FLOPs over a prompt = T × (the training step's forward FLOPs per token less the LM head) + one head. */
    @Test
    void prefillFlopsCountTheHeadOnce() {
        for (ModelConfig c : configs()) {
            for (int t : new int[] {1, 7, 128}) {
                double head = 2.0 * c.d() * c.vocab();
                double want = t * (StepBench.forwardFlopsPerToken(c, t) - head) + head;
                assertEquals(want, t * DecodeBench.prefillFlopsPerToken(c, t), want * 1e-12, DecodeBench.describe(c));
            }
        }
    }

    @Test
    void subsetKeepsAQuarterOfTheRoutedExpertsPerLayerAndEveryShared() {
        assertNull(DecodeBench.subset(ODD, 1, 1));
        for (ModelConfig c : configs()) {
            ExpertSet[] s = DecodeBench.subset(c, 0.25, 42);
            ExpertSet[] again = DecodeBench.subset(c, 0.25, 42);
            int want = Math.max(c.routedK(), Math.round(c.routedExperts() * 0.25f));
            assertEquals(c.layers(), s.length);
            for (int l = 0; l < c.layers(); l++) {
                assertEquals(want, s[l].sizeInRange(0, c.routedExperts()), DecodeBench.describe(c));
                for (int e = c.routedExperts(); e < c.experts(); e++) assertTrue(s[l].contains(e));
                assertEquals(again[l], s[l]);
            }
        }
        ExpertSet[] big = DecodeBench.subset(DecodeBench.config("olmoe", 32, 192), 0.25, 42);
        assertFalse(big[0].equals(big[1]), "each layer draws its own subset");
    }
}
