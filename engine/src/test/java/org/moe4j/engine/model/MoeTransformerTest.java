package org.moe4j.engine.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

class MoeTransformerTest {
    static final WorkerPool POOL = new WorkerPool(2);

    static void randomize(MoeModel m, long seed, double std) {
        SplittableRandom r = new SplittableRandom(seed);
        for (ParamLayout.Entry e : m.layout().entries()) {
            boolean norm = e.name().contains("norm");
            for (long i = 0; i < e.numel(); i++)
                m.params().setAtIndex(Tensor.FLOAT, e.offset() + i,
                        (float) (norm ? 1 + 0.1 * (r.nextDouble() - 0.5) : std * (2 * r.nextDouble() - 1)));
        }
    }

    static int[] tokens(int n, int vocab, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        int[] t = new int[n];
        for (int i = 0; i < n; i++) t[i] = r.nextInt(vocab);
        return t;
    }

    /** Central differences in double around float parameters: a coarse check that every tensor gets its gradient. */
    @Test
    void gradientsMatchFiniteDifferencesCoarsely() {
        ModelConfig t = ModelConfig.tiny();
        fdCheck(new ModelConfig(t.vocab(), t.d(), t.layers(), t.heads(), t.kvHeads(), t.experts(), t.sharedExperts(),
                t.experts(), t.expertHidden(), t.ropeTheta(), true, t.normEps(), t.maxSeq(), t.eosId(),
                RoutingConfig.standard(), t.loss()));
        fdCheck(ModelConfig.tiny().withRouting(RoutingConfig.standard()));
    }

    void fdCheck(ModelConfig c) {
        try (MoeModel m = new MoeModel(c); MoeTransformer tr = new MoeTransformer(m, 32, 4, new JavaGemm(POOL), POOL)) {
            randomize(m, 7, 0.5);
            int[] toks = tokens(24, c.vocab(), 3);
            tr.setBatch(toks, 3, 8);
            tr.useDefaults(false, 1);
            tr.erc(false);
            m.zeroGrads();
            tr.forward();
            tr.backward();
            SplittableRandom r = new SplittableRandom(11);
            int checked = 0, agree = 0;
            for (ParamLayout.Entry e : m.layout().entries()) {
                for (int s = 0; s < 2; s++) {
                    long i = e.offset() + r.nextLong(e.numel());
                    float p0 = m.params().getAtIndex(Tensor.FLOAT, i);
                    float hstep = 3e-3f;
                    m.params().setAtIndex(Tensor.FLOAT, i, p0 + hstep);
                    double up = tr.forward();
                    m.params().setAtIndex(Tensor.FLOAT, i, p0 - hstep);
                    double dn = tr.forward();
                    m.params().setAtIndex(Tensor.FLOAT, i, p0);
                    double fd = (up - dn) / (2 * hstep);
                    double g = m.grads().getAtIndex(Tensor.FLOAT, i);
                    checked++;
                    boolean ok = Math.abs(fd - g) <= 2e-3 + 0.05 * Math.max(Math.abs(fd), Math.abs(g));
                    if (ok) agree++;
                    else System.out.printf("%s[%d]: fd %.6g grad %.6g%n", e.name(), i - e.offset(), fd, g);
                }
            }
            assertTrue(agree >= checked * 0.9, agree + " of " + checked + " agree");
        }
    }

    @Test
    void rejectsTokensOutsideTheVocabulary() {
        ModelConfig c = ModelConfig.tiny();
        try (MoeModel m = new MoeModel(c); MoeTransformer tr = new MoeTransformer(m, 16, 2, new JavaGemm(POOL), POOL)) {
            int[] toks = tokens(8, c.vocab(), 1);
            toks[5] = c.vocab();
            var ex = assertThrows(org.moe4j.Moe4jException.class, () -> tr.setBatch(toks, 1, 8));
            assertTrue(ex.getMessage().contains("position 5"), ex.getMessage());
        }
    }

    @Test
    void sgdLowersTheLoss() {
        ModelConfig c = ModelConfig.tiny();
        try (MoeModel m = new MoeModel(c); MoeTransformer tr = new MoeTransformer(m, 32, 4, new JavaGemm(POOL), POOL)) {
            m.initRandom(1);
            int[] toks = tokens(32, 8, 5);
            tr.setBatch(toks, 2, 16);
            double first = 0, last = 0;
            for (int step = 0; step < 30; step++) {
                m.zeroGrads();
                double loss = tr.forward();
                tr.backward();
                if (step == 0) first = loss;
                last = loss;
                long n = m.layout().total();
                for (long i = 0; i < n; i++)
                    m.params().setAtIndex(Tensor.FLOAT, i,
                            m.params().getAtIndex(Tensor.FLOAT, i) - 0.5f * m.grads().getAtIndex(Tensor.FLOAT, i));
            }
            assertTrue(last < first - 0.3, "loss " + first + " -> " + last);
            assertEquals(c.layers(), tr.stats().layers());
        }
    }

    @Test
    void nonFiniteLossNamesTheLayerAndTensor() {
        ModelConfig c = ModelConfig.tiny();
        try (MoeModel m = new MoeModel(c); MoeTransformer tr = new MoeTransformer(m, 16, 2, new JavaGemm(POOL), POOL)) {
            m.initRandom(1);
            float[] w = m.paramValues(ParamLayout.oProj(1));
            w[3] = Float.POSITIVE_INFINITY;
            m.setParam(ParamLayout.oProj(1), w);
            tr.setBatch(tokens(16, c.vocab(), 2), 2, 8);
            var ex = assertThrows(NonFiniteException.class, tr::forward);
            assertTrue(ex.getMessage().contains("layer 1") && ex.getMessage().contains("residual after attention"),
                    ex.getMessage());
        }
    }
}
