package org.moe4j.engine.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.LrSchedule;
import org.moe4j.engine.train.SyntheticCorpus;
import org.moe4j.engine.train.Trainer;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/** 2N steps straight and N steps + save + load + resume + N steps give bit-identical losses (EMO pools + ERC on). */
class ExactResumeTest {
    static final WorkerPool POOL = MoeTransformerTest.POOL;
    static final int N = 4, B = 2, T = 16;

    static ModelConfig config() {
        ModelConfig t = ModelConfig.tiny();
        return t.withRouting(RoutingConfig.emo(t.routedExperts()));
    }

    /** Runs steps [from, to) and returns their losses; saves to {@code save} after the last one when given. */
    static double[] run(MoeModel m, Path resume, Path save, int from, int to) {
        double[] out = new double[to - from];
        SyntheticCorpus src = new SyntheticCorpus(m.config().vocab(), m.config().eosId(), 3, 4, 9);
        try (MoeTransformer tr = new MoeTransformer(m, B * T, B, new JavaGemm(POOL), POOL);
             AdamWOptimizer opt = new AdamWOptimizer(m, POOL)) {
            tr.useDefaults(true, 5);
            if (resume != null) {
                var st = ModelCheckpoint.loadState(resume, opt.firstMoment(), opt.secondMoment(), m.layout().total());
                opt.stepCount(st.step());
                src.position(st.dataPosition());
                tr.routingRng().setState(st.routingRngState());
                tr.ercRng().setState(st.ercRngState());
            }
            Trainer tn = new Trainer(tr, opt, src, new Trainer.Options(B, T, 1, new LrSchedule(1e-2, 2, 2 * N, 0.1), 1.0, 1000), null);
            for (int s = from; s < to; s++) out[s - from] = tn.step().loss();
            if (save != null)
                ModelCheckpoint.save(save, m, new ModelCheckpoint.TrainState(opt.firstMoment(), opt.secondMoment(),
                        opt.stepCount(), src.position(), tr.routingRng().state(), tr.ercRng().state(), null), null);
        }
        return out;
    }

    @Test
    void resumeIsBitIdentical(@TempDir Path dir) {
        double[] straight;
        try (MoeModel m = new MoeModel(config()).initRandom(3)) {
            straight = run(m, null, null, 0, 2 * N);
        }
        double[] first, second;
        Path ck = dir.resolve("ckpt");
        try (MoeModel m = new MoeModel(config()).initRandom(3)) {
            first = run(m, null, ck, 0, N);
        }
        try (MoeModel m = ModelCheckpoint.load(ck)) {
            second = run(m, ck, null, N, 2 * N);
        }
        double[] resumed = new double[2 * N];
        System.arraycopy(first, 0, resumed, 0, N);
        System.arraycopy(second, 0, resumed, N, N);
        assertArrayEquals(straight, resumed, 0.0);
    }
}
