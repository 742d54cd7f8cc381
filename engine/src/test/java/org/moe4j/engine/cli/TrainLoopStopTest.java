package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.LrSchedule;
import org.moe4j.engine.train.SyntheticCorpus;
import org.moe4j.engine.train.Trainer;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * The training loop's time limit is a vote of every rank (--distributed): a rank whose own clock is still under the
 * limit stops when another rank's is past it, and with the limit off no vote is taken.
 */
class TrainLoopStopTest {
    static long stepsRun(double timeLimit, java.util.function.UnaryOperator<Boolean> anyRank) {
        ModelConfig c = ModelConfig.tiny();
        try (WorkerPool pool = new WorkerPool(1);
             MoeModel m = new MoeModel(c).initRandom(1);
             MoeTransformer tr = new MoeTransformer(m, 16, 1, c.maxRoutedK(), new JavaGemm(pool), pool);
             AdamWOptimizer opt = new AdamWOptimizer(m, pool)) {
            tr.useDefaults(true, 1);
            Trainer t = new Trainer(tr, opt, new SyntheticCorpus(c.vocab(), c.eosId(), 2, 4, 1),
                    new Trainer.Options(1, 16, 1, new LrSchedule(1e-3, 1, 5, 0.1), 1.0, 1000), null);
            TrainCommand.train(t, opt, 5, () -> { }, 0, timeLimit, anyRank);
            return opt.stepCount();
        }
    }

    @Test
    void anotherRankPastTheLimitStopsThisOne() {
        int[] votes = {0};
        // this rank's clock never reaches a day; "another rank" is past it from the second vote on
        long n = stepsRun(86400, mine -> ++votes[0] >= 2 || mine);
        assertEquals(2, n);
    }

    @Test
    void withoutALimitNoVoteIsTaken() {
        int[] votes = {0};
        long n = stepsRun(0, mine -> {
            votes[0]++;
            return true;
        });
        assertEquals(5, n);
        assertEquals(0, votes[0]);
    }
}
