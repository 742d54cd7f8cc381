package org.moe4j.engine.subset;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.ModelWeights;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * Scoring several validation windows per forward (each its own sequence from position 0) gives every domain and
 * setting the cross-entropy of scoring one window at a time, up to float rounding, and the same chosen subsets.
 */
class EvaluatorBatchTest {
    @Test
    void windowsScoredTogetherEqualWindowsScoredAlone() {
        ModelConfig c = ModelConfig.tiny();
        Random rnd = new Random(5);
        List<Evaluator.DomainData> domains = new ArrayList<>();
        for (String name : new String[] {"a", "b"}) {
            List<int[]> windows = new ArrayList<>(), calib = new ArrayList<>();
            for (int i = 0; i < 4 + rnd.nextInt(6); i++) windows.add(tokens(rnd, c, 2 + rnd.nextInt(c.maxSeq() - 1)));
            for (int i = 0; i < 2; i++) calib.add(tokens(rnd, c, c.maxSeq()));
            domains.add(new Evaluator.DomainData(name, windows, calib, "train"));
        }
        List<Evaluator.Setting> settings = Evaluator.Setting.parseList("full,keep:1/2,k:1");
        try (WorkerPool pool = new WorkerPool(2); MoeModel m = new MoeModel(c).initRandom(3)) {
            ModelWeights w = ModelWeights.f32(m);
            JavaGemm gemm = new JavaGemm(pool);
            List<Evaluator.Row> alone = Evaluator.run(w, domains, settings, SubsetMethod.LAYERWISE, 1, gemm, pool, null, 1);
            List<Evaluator.Row> together = Evaluator.run(w, domains, settings, SubsetMethod.LAYERWISE, 1, gemm, pool, null,
                    Evaluator.BATCH_TOKENS);
            assertEquals(alone.size(), together.size());
            for (int i = 0; i < alone.size(); i++) {
                Evaluator.Row x = alone.get(i), y = together.get(i);
                String what = x.domain() + " " + x.setting();
                assertEquals(x.domain() + x.setting(), y.domain() + y.setting());
                assertEquals(x.labels(), y.labels(), what);
                assertEquals(x.ce(), y.ce(), 1e-5 * Math.abs(x.ce()), what);
                if (x.kept() != null) for (int l = 0; l < c.layers(); l++) assertArrayEquals(x.kept()[l], y.kept()[l], what);
            }
        }
    }

    /**
     * Calibration documents run several per forward give every method the scores of one document per forward (to
     * float rounding: the products see other row counts) and the same experts, with a base restriction and without.
     */
    @Test
    void calibrationDocumentsTogetherScoreAsAlone() {
        ModelConfig c = ModelConfig.tiny();
        Random rnd = new Random(11);
        List<int[]> docs = new ArrayList<>();
        for (int i = 0; i < 7; i++) docs.add(tokens(rnd, c, 1 + rnd.nextInt(c.maxSeq())));
        try (WorkerPool pool = new WorkerPool(2); MoeModel m = new MoeModel(c).initRandom(4)) {
            ModelWeights w = ModelWeights.f32(m);
            JavaGemm gemm = new JavaGemm(pool);
            for (SubsetMethod method : SubsetMethod.values()) {
                if (method == SubsetMethod.RANDOM) continue;
                for (int keep : new int[] {2, 4}) {
                    var alone = SubsetSelector.select(w, docs, keep, method, 1, null, gemm, pool, 1);
                    var together = SubsetSelector.select(w, docs, keep, method, 1, null, gemm, pool, 40);
                    var all = SubsetSelector.select(w, docs, keep, method, 1, null, gemm, pool, Evaluator.BATCH_TOKENS);
                    for (int l = 0; l < c.layers(); l++) {
                        String what = method + " keep " + keep + " layer " + l;
                        assertArrayEquals(alone.kept()[l], together.kept()[l], what);
                        assertArrayEquals(alone.kept()[l], all.kept()[l], what);
                        double[] a = alone.scores()[l], b = all.scores()[l];
                        for (int e = 0; e < a.length; e++) {
                            if (Double.isNaN(a[e])) assertEquals(Double.NaN, b[e], what);
                            else assertEquals(a[e], b[e], 1e-5 * Math.max(1e-3, Math.abs(a[e])), what + " expert " + e);
                        }
                    }
                }
            }
        }
    }

    private static int[] tokens(Random rnd, ModelConfig c, int n) {
        int[] t = new int[n];
        for (int i = 0; i < n; i++) t[i] = 2 + rnd.nextInt(c.vocab() - 2);
        return t;
    }
}
