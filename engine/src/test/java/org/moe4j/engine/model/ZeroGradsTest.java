package org.moe4j.engine.model;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.foreign.MemorySegment;
import org.junit.jupiter.api.Test;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/** zeroGrads over the pool zeroes every gradient element, the last short piece included, again and again. */
class ZeroGradsTest {
    @Test
    void everyElementIsZeroedOnEveryCall() {
        ModelConfig c = ModelConfig.small(); // several 1 MiB pieces and a short last one
        try (WorkerPool pool = new WorkerPool(3); MoeModel m = new MoeModel(c)) {
            MemorySegment g = m.grads();
            long n = g.byteSize() / 4;
            assertEquals(true, g.byteSize() % (1 << 20) != 0 && g.byteSize() > 3L << 20, "size " + g.byteSize());
            for (int round = 0; round < 3; round++) {
                for (long i = 0; i < n; i += 997) g.setAtIndex(Tensor.FLOAT, i, 1f + round);
                g.setAtIndex(Tensor.FLOAT, n - 1, -2f);
                m.zeroGrads(pool);
                for (long i = 0; i < n; i += 997) assertEquals(0f, g.getAtIndex(Tensor.FLOAT, i), "element " + i);
                assertEquals(0f, g.getAtIndex(Tensor.FLOAT, n - 1), "last element");
            }
        }
    }
}
