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

    private static int[] tokens(Random rnd, ModelConfig c, int n) {
        int[] t = new int[n];
        for (int i = 0; i < n; i++) t[i] = 2 + rnd.nextInt(c.vocab() - 2);
        return t;
    }
}
