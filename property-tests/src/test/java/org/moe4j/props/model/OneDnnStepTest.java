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
}
