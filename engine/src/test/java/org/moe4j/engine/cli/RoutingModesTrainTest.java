package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.LrSchedule;
import org.moe4j.engine.train.SyntheticCorpus;
import org.moe4j.engine.train.Trainer;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/** The train main's loop lowers the loss on the synthetic multi-domain source in every routing mode. */
class RoutingModesTrainTest {
    static final WorkerPool POOL = new WorkerPool(2);

    @ParameterizedTest
    @ValueSource(strings = {"standard", "emo", "matryoshka", "capacity", "shared"})
    void lossFalls(String routing) {
        ModelConfig base = new ModelConfig(64, 32, 2, 2, 1, 6, 0, 2, 32, 10000.0, false, 1e-6, 32, 0,
                org.moe4j.engine.config.RoutingConfig.standard(), org.moe4j.engine.config.LossWeights.defaults());
        ModelConfig c = TrainCommand.withRouting(base, routing);
        int B = 4, T = 32, steps = 60;
        try (MoeModel m = new MoeModel(c).initRandom(1);
             MoeTransformer tr = new MoeTransformer(m, B * T, B, new JavaGemm(POOL), POOL);
             AdamWOptimizer opt = new AdamWOptimizer(m, POOL)) {
            tr.useDefaults(true, 2);
            Trainer t = new Trainer(tr, opt, new SyntheticCorpus(c.vocab(), c.eosId(), 3, 2, 4),
                    new Trainer.Options(B, T, 1, new LrSchedule(1e-2, 5, steps, 0.1), 1.0, 1000), null);
            double first = 0, last = 0;
            for (int s = 0; s < steps; s++) {
                double ce = t.step().ce();
                if (s < 5) first += ce / 5;
                if (s >= steps - 5) last += ce / 5;
            }
            assertTrue(last < first - 0.5, routing + ": cross-entropy " + first + " -> " + last);
        }
    }
}
