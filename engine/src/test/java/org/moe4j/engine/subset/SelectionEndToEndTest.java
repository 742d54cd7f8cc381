package org.moe4j.engine.subset;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.model.ForwardRunner;
import org.moe4j.engine.model.ModelWeights;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * What {@link SubsetSelector#select} scores, end to end, against the plain procedure it stands for: for layer-by-layer
 * methods, layer l's score of each expert is the score over every calibration token of the whole model — one
 * document per forward, every layer run — with layers 0..l-1 masked to the experts already kept there and no mask
 * from layer l on; for one-pass methods every layer's score comes from the unmasked model. The selector's shortcuts
 * (several documents per forward, a pass that stops after layer l) must not show.
 */
class SelectionEndToEndTest {
    @Test
    void everyLayerIsScoredOnTheModelAsPrunedBeforeIt() {
        ModelConfig t = ModelConfig.tiny();
        // three layers, so a pass that stops one layer early or late is seen in the middle too
        ModelConfig c = new ModelConfig(t.vocab(), t.d(), 3, t.heads(), t.kvHeads(), 8, 1, 3, t.expertHidden(),
                t.ropeTheta(), t.qkNorm(), t.normEps(), t.maxSeq(), t.eosId(), t.routing(), t.loss());
        Random rnd = new Random(21);
        List<int[]> docs = new ArrayList<>();
        for (int i = 0; i < 5; i++) {
            int[] d = new int[1 + rnd.nextInt(c.maxSeq())];
            for (int j = 0; j < d.length; j++) d[j] = 2 + rnd.nextInt(c.vocab() - 2);
            docs.add(d);
        }
        try (WorkerPool pool = new WorkerPool(2); MoeModel m = new MoeModel(c).initRandom(8)) {
            ModelWeights w = ModelWeights.f32(m);
            JavaGemm gemm = new JavaGemm(pool);
            for (SubsetMethod method : new SubsetMethod[] {SubsetMethod.LAYERWISE, SubsetMethod.REAP,
                    SubsetMethod.GLOBAL, SubsetMethod.FREQUENCY}) {
                var sel = SubsetSelector.select(w, docs, 4, method, 0, null, gemm, pool);
                for (int l = 0; l < c.layers(); l++) {
                    ExpertSet[] masks = new ExpertSet[c.layers()];
                    if (method.layerByLayer())
                        for (int i = 0; i < l; i++) masks[i] = ExpertSet.of(c.experts(i), sel.kept()[i]);
                    double[] want = plainScores(w, docs, masks, l, method, gemm, pool);
                    double[] got = sel.scores()[l];
                    boolean someNonZero = false;
                    for (int e = 0; e < want.length; e++) {
                        assertEquals(want[e], got[e], 1e-5 * Math.max(1e-3, Math.abs(want[e])),
                                method + " layer " + l + " expert " + e);
                        someNonZero |= want[e] != 0;
                    }
                    assertTrue(someNonZero, method + " layer " + l + ": every score 0, the case shows nothing");
                    int[] top = SubsetSelector.top(want, 4 - c.sharedExperts(), c.experts(l), c.sharedExperts());
                    assertArrayEquals(top, sel.kept()[l], method + " layer " + l);
                }
            }
        }
    }

    /** Layer l's scores from whole-model forwards, one document each, under the given masks. */
    private static double[] plainScores(ModelWeights w, List<int[]> docs, ExpertSet[] masks, int l,
                                        SubsetMethod method, JavaGemm gemm, WorkerPool pool) {
        ModelConfig c = w.layout().config();
        int[] experts = new int[c.layers()];
        for (int i = 0; i < c.layers(); i++) experts[i] = c.experts(i);
        ExpertScores acc = new ExpertScores(experts, c.sharedExperts(), c.d());
        acc.recordOnly(-1);
        try (ForwardRunner run = new ForwardRunner(w, c.maxSeq(), 1, c.maxSeq(), c.routedK(), false, gemm, pool)) {
            run.observer(acc);
            run.routing(null, masks);
            for (int[] d : docs) run.forward(d, new int[] {0, d.length}, new int[] {0}, new int[] {0}, 1);
        }
        return acc.scores(l, method);
    }
}
