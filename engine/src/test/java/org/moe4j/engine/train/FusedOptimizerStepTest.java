package org.moe4j.engine.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.ValueLayout;
import org.junit.jupiter.api.Test;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.simd.JavaBf16Gemm;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * The Trainer's optimizer zeroes the gradients as it reads them and, in BF16, writes the weights' bf16 copy as it
 * updates them; training with it gives the losses and parameters of the plain optimizer followed by a zeroing pass
 * and a re-rounding pass, to the bit, in FP32 and BF16 (EMO pools on, so routing depends on every earlier step).
 */
class FusedOptimizerStepTest {
    static final WorkerPool POOL = new WorkerPool(2);
    static final int STEPS = 4, B = 2, T = 16;

    record Run(double[] losses, float[] params) {
    }

    static Run run(boolean bf16, boolean fused) {
        ModelConfig t = ModelConfig.tiny();
        ModelConfig c = t.withRouting(RoutingConfig.emo(t.routedExperts()));
        double[] losses = new double[STEPS];
        JavaGemm gemm = new JavaGemm(POOL);
        try (MoeModel m = new MoeModel(c).initRandom(3);
             MoeTransformer tr = new MoeTransformer(m, B * T, B, c.maxRoutedK(), gemm,
                     bf16 ? new JavaBf16Gemm(gemm, POOL) : null, POOL);
             AdamWOptimizer opt = new AdamWOptimizer(m, POOL)) {
            tr.useDefaults(true, 5);
            SyntheticCorpus src = new SyntheticCorpus(c.vocab(), c.eosId(), 3, 4, 9);
            Trainer tn = new Trainer(tr, opt, src, new Trainer.Options(B, T, 1, new LrSchedule(1e-2, 2, STEPS, 0.1), 1.0,
                    1000), null);
            assertEquals(bf16, opt.writesBf16Copy(), "the Trainer has the optimizer write the bf16 copy in BF16");
            if (!fused) opt.zeroGradients(false).bf16Copy(null, null);
            for (int s = 0; s < STEPS; s++) {
                losses[s] = tn.step().loss();
                if (fused) {
                    assertTrue(m.gradsKnownZero(), "after a fused step the model knows its gradients are zero");
                    float[] g = m.grads().toArray(ValueLayout.JAVA_FLOAT);
                    assertFalse(m.gradsKnownZero(), "taking the buffer drops the mark");
                    for (int i = 0; i < g.length; i++)
                        if (g[i] != 0f) throw new AssertionError("step " + s + ": gradient " + i + " = " + g[i] + " after the fused step");
                    m.markGradsZero(); // nothing was written
                }
            }
            return new Run(losses, m.params().toArray(ValueLayout.JAVA_FLOAT));
        }
    }

    @Test
    void fusedOptimizerTrainsBitForBitAsThePlainOne() {
        for (boolean bf16 : new boolean[] {false, true}) {
            Run plain = run(bf16, false), fused = run(bf16, true);
            String what = bf16 ? "BF16" : "FP32";
            for (int s = 0; s < STEPS; s++)
                assertEquals(Double.doubleToLongBits(plain.losses()[s]), Double.doubleToLongBits(fused.losses()[s]),
                        what + " loss of step " + s + ": " + plain.losses()[s] + " vs " + fused.losses()[s]);
            for (int i = 0; i < plain.params().length; i++)
                if (Float.floatToRawIntBits(plain.params()[i]) != Float.floatToRawIntBits(fused.params()[i]))
                    throw new AssertionError(what + ": parameter " + i + " " + plain.params()[i] + " vs " + fused.params()[i]);
        }
    }

    /**
     * The optimizer's mark spares one zeroGrads, and only while nothing may have written the gradients: taking the
     * buffer, a backward pass, or that one zeroGrads drops it. Without a mark every zeroGrads zeroes.
     */
    @Test
    void zeroGradsSkipsOnlyWhileNothingWasWritten() {
        try (MoeModel m = new MoeModel(ModelConfig.tiny()).initRandom(1)) {
            var g = m.grads();
            long first = m.layout().entries().get(0).offset();
            m.markGradsZero();
            m.grads().setAtIndex(ValueLayout.JAVA_FLOAT, 7, 3f);
            m.zeroGrads(POOL);
            assertEquals(0f, g.getAtIndex(ValueLayout.JAVA_FLOAT, 7), "written through grads(): zeroed");
            m.markGradsZero();
            m.grad(m.layout().entries().get(0).name()).segment().setAtIndex(ValueLayout.JAVA_FLOAT, 0, 2f);
            m.zeroGrads();
            assertEquals(0f, g.getAtIndex(ValueLayout.JAVA_FLOAT, first), "written through grad(name): zeroed");
            m.markGradsZero();
            m.gradsWritten(); // a backward pass writing through a buffer taken earlier
            g.setAtIndex(ValueLayout.JAVA_FLOAT, 9, 1f);
            m.zeroGrads(POOL);
            assertEquals(0f, g.getAtIndex(ValueLayout.JAVA_FLOAT, 9), "written by a backward pass: zeroed");
            m.markGradsZero();
            m.zeroGrads(POOL); // spared: the optimizer zeroed them
            assertFalse(m.gradsKnownZero(), "one zeroGrads uses the mark up");
            g.setAtIndex(ValueLayout.JAVA_FLOAT, 11, 5f);
            m.zeroGrads(POOL);
            assertEquals(0f, g.getAtIndex(ValueLayout.JAVA_FLOAT, 11), "the next zeroGrads zeroes again");
            g.setAtIndex(ValueLayout.JAVA_FLOAT, 11, 5f);
            m.zeroGrads();
            assertEquals(0f, g.getAtIndex(ValueLayout.JAVA_FLOAT, 11), "no mark: zeroed");
        }
    }
}
