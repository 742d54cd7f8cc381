package org.moe4j.props.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.nativ.OneDnn;
import org.moe4j.nativ.OneDnnBf16Gemm;
import org.moe4j.nativ.OneDnnGemm;
import org.moe4j.nativ.OneDnnMatmul;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * A training step on oneDNN — dnnl_sgemm for most products, the matmul primitive ({@link Gemm#forRepeatedShapes})
 * for the LM head's weight gradient — gives the loss and every gradient of the same step on the Java GEMM,
 * to float rounding, over two steps (the second reuses the primitives the first created).
 */
class OneDnnStepTest {
    @Test
    void oneDnnStepEqualsJavaStep() {
        assertTrue(OneDnn.available(), OneDnn.reason());
        ModelConfig c = ModelConfig.tiny();
        int B = 3, T = c.maxSeq();
        Random rnd = new Random(7);
        try (WorkerPool pool = new WorkerPool(2); MoeModel m = new MoeModel(c).initRandom(5)) {
            OneDnnGemm one = new OneDnnGemm(2);
            Gemm rep = one.forRepeatedShapes();
            assertTrue(rep instanceof OneDnnMatmul, "oneDNN's GEMM for repeated shapes is its matmul: " + rep.name());
            assertNotSame(one, rep);
            ((OneDnnMatmul) rep).close();
            try (MoeTransformer onTr = new MoeTransformer(m, B * T, B, one, pool);
                 MoeTransformer javaTr = new MoeTransformer(m, B * T, B, new JavaGemm(pool), pool)) {
                ParamLayout lay = m.layout();
                for (int step = 0; step < 2; step++) {
                    int[] tokens = new int[B * T];
                    for (int i = 0; i < tokens.length; i++) tokens[i] = 2 + rnd.nextInt(c.vocab() - 2);
                    javaTr.setBatch(tokens, B, T);
                    onTr.setBatch(tokens, B, T);
                    javaTr.zeroGrads();
                    double lj = javaTr.forward();
                    javaTr.backward();
                    float[][] gj = new float[lay.entries().size()][];
                    for (int i = 0; i < gj.length; i++) gj[i] = m.gradValues(lay.entries().get(i).name());
                    onTr.zeroGrads();
                    double lo = onTr.forward();
                    onTr.backward();
                    assertEquals(lj, lo, 1e-5 * Math.abs(lj), "loss, step " + step);
                    assertTrue(onTr.concurrentExperts(), "oneDNN on 2 threads runs the experts one per thread");
                    for (int i = 0; i < gj.length; i++) {
                        String name = lay.entries().get(i).name();
                        float[] go = m.gradValues(name);
                        double dn = 0, wn = 0;
                        for (int j = 0; j < go.length; j++) {
                            dn += (go[j] - gj[i][j]) * (double) (go[j] - gj[i][j]);
                            wn += gj[i][j] * (double) gj[i][j];
                        }
                        assertTrue(Math.sqrt(dn) <= 1e-6 + 1e-4 * Math.sqrt(wn), "step " + step + ", d loss / d " + name
                                + ": |onednn - java| = " + Math.sqrt(dn) + ", |java| = " + Math.sqrt(wn));
                    }
                }
            }
        }
    }

    /**
     * With the experts run concurrently (one per thread, whichever thread takes it), a step gives the same bits
     * every time, in FP32 on dnnl_sgemm and in BF16 on the matmul primitive; the BF16 step on the pool's lanes
     * stays within bf16 rounding of the FP32 one.
     */
    @Test
    void concurrentExpertsGiveTheSameBitsEveryStep() {
        assertTrue(OneDnn.available(), OneDnn.reason());
        ModelConfig c = ModelConfig.tiny();
        int B = 4, T = c.maxSeq();
        Random rnd = new Random(17);
        int[] tokens = new int[B * T];
        for (int i = 0; i < tokens.length; i++) tokens[i] = 2 + rnd.nextInt(c.vocab() - 2);
        try (WorkerPool pool = new WorkerPool(2); MoeModel m = new MoeModel(c).initRandom(9);
             OneDnnBf16Gemm bf16 = new OneDnnBf16Gemm(2)) {
            for (boolean half : new boolean[] {false, true}) {
                float[] first = null;
                double firstLoss = 0;
                for (int rep = 0; rep < 3; rep++) {
                    // a fresh runner each time: the same routing draws, new lanes and primitives
                    try (MoeTransformer tr = new MoeTransformer(m, B * T, B, c.maxRoutedK(), new OneDnnGemm(2),
                            half ? bf16 : null, pool)) {
                        assertTrue(tr.concurrentExperts(), "experts run one per thread");
                        long routing0 = tr.routingRng().state(), erc0 = tr.ercRng().state();
                        for (int again = 0; again < 2; again++) { // the second pass reuses the lanes' primitives
                            tr.setBatch(tokens, B, T);
                            tr.zeroGrads();
                            tr.routingRng().setState(routing0); // the same draws every pass (ERC samples too)
                            tr.ercRng().setState(erc0);
                            double loss = tr.forward();
                            tr.backward();
                            float[] g = m.grads().toArray(java.lang.foreign.ValueLayout.JAVA_FLOAT);
                            if (first == null) {
                                first = g;
                                firstLoss = loss;
                                continue;
                            }
                            String what = (half ? "BF16" : "FP32") + " runner " + rep + " pass " + again;
                            assertEquals(firstLoss, loss, 0.0, what + ": loss");
                            for (int i = 0; i < g.length; i++)
                                if (Float.floatToRawIntBits(g[i]) != Float.floatToRawIntBits(first[i]))
                                    throw new AssertionError(what + ": gradient " + i + " " + g[i] + " vs " + first[i]
                                            + " the first time");
                        }
                    }
                }
            }
        }
    }
}
