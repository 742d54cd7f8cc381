package org.moe4j.engine.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.ValueLayout;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.simd.JavaBf16Gemm;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * On the Java GEMM, a training step whose experts run concurrently (three threads, one lane each) gives the loss
 * and every gradient of the same step on one thread (experts one after another), to the bit, in FP32 and BF16:
 * the Java kernels' bits never depend on the thread count, so neither may the lanes'.
 */
class ConcurrentExpertsTest {
    @Test
    void concurrentExpertsGiveTheBitsOfOneThread() {
        ModelConfig t = ModelConfig.tiny();
        ModelConfig c = t.withRouting(RoutingConfig.emo(t.routedExperts()));
        int B = 3, T = c.maxSeq();
        Random rnd = new Random(21);
        int[] tokens = new int[B * T];
        for (int i = 0; i < tokens.length; i++) tokens[i] = 2 + rnd.nextInt(c.vocab() - 2);
        try (WorkerPool one = new WorkerPool(1); WorkerPool three = new WorkerPool(3);
             MoeModel m = new MoeModel(c).initRandom(4)) {
            for (boolean half : new boolean[] {false, true}) {
                double[] loss = new double[2];
                float[][] grads = new float[2][];
                for (int run = 0; run < 2; run++) {
                    WorkerPool pool = run == 0 ? one : three;
                    JavaGemm gemm = new JavaGemm(pool);
                    try (JavaBf16Gemm bf16 = new JavaBf16Gemm(gemm, pool);
                         MoeTransformer tr = new MoeTransformer(m, B * T, B, c.maxRoutedK(), gemm, half ? bf16 : null, pool)) {
                        if (run == 0) assertFalse(tr.concurrentExperts(), "one thread: experts one after another");
                        else assertTrue(tr.concurrentExperts(), "three threads on the Java GEMM: experts concurrently");
                        tr.useDefaults(true, 5);
                        tr.setBatch(tokens, B, T);
                        tr.zeroGrads();
                        loss[run] = tr.forward();
                        tr.backward();
                        grads[run] = m.grads().toArray(ValueLayout.JAVA_FLOAT);
                    }
                }
                String what = half ? "BF16" : "FP32";
                assertEquals(Double.doubleToLongBits(loss[0]), Double.doubleToLongBits(loss[1]),
                        what + " loss " + loss[0] + " vs " + loss[1]);
                for (int i = 0; i < grads[0].length; i++)
                    if (Float.floatToRawIntBits(grads[0][i]) != Float.floatToRawIntBits(grads[1][i]))
                        throw new AssertionError(what + ": gradient " + i + " " + grads[0][i] + " on one thread, "
                                + grads[1][i] + " with concurrent experts");
            }
        }
    }
}
