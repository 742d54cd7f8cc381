package org.moe4j.engine.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.MemorySegment;
import org.junit.jupiter.api.Test;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.NonFiniteException;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/** The global gradient norm: no overflow from finite gradients, the bad tensor named, the same bits on any pool. */
class AdamWOptimizerTest {

    private static void fill(MoeModel m, float v) {
        MemorySegment g = m.grads();
        for (long i = 0; i < m.layout().total(); i++) g.setAtIndex(Tensor.FLOAT, i, v);
    }

    @Test
    void hugeFiniteGradientsClipInsteadOfStopping() {
        try (WorkerPool pool = new WorkerPool(2); MoeModel m = new MoeModel(ModelConfig.tiny()).initRandom(1);
             AdamWOptimizer opt = new AdamWOptimizer(m, pool)) {
            fill(m, 1e30f); // each square overflows float; their sum overflowed the old float block sums
            double norm = opt.step(1e-3, 1.0, 1);
            assertEquals(1e30 * Math.sqrt(m.layout().total()), norm, 1e30 * Math.sqrt(m.layout().total()) * 1e-6);
            for (long i = 0; i < m.layout().total(); i++) {
                assertTrue(Float.isFinite(m.params().getAtIndex(Tensor.FLOAT, i)), "parameter " + i);
            }
            assertEquals(1, opt.stepCount());
        }
    }

    @Test
    void aNonFiniteGradientNamesItsTensor() {
        try (WorkerPool pool = new WorkerPool(2); MoeModel m = new MoeModel(ModelConfig.tiny()).initRandom(1);
             AdamWOptimizer opt = new AdamWOptimizer(m, pool)) {
            fill(m, 1e-3f);
            ParamLayout.Entry e = m.layout().entries().get(m.layout().entries().size() / 2);
            m.grads().setAtIndex(Tensor.FLOAT, e.offset() + 5, Float.POSITIVE_INFINITY);
            float before = m.params().getAtIndex(Tensor.FLOAT, 0);
            NonFiniteException x = assertThrows(NonFiniteException.class, () -> opt.step(1e-3, 1.0, 1));
            assertTrue(x.getMessage().contains(e.name() + " at element 5"), x.getMessage());
            assertEquals(before, m.params().getAtIndex(Tensor.FLOAT, 0));
            assertEquals(0, opt.stepCount());
        }
    }

    /**
     * Gradients whose chunk sums of squares are 2^53 (first tensor) and 1 (every other tensor): added in chunk order
     * each 1 rounds away (2^53 + 1 is a tie, to even), giving exactly 2^53; summed per worker first, the ones add up
     * to an even number that survives, and the norm would depend on the thread count.
     */
    @Test
    void normHasTheSameBitsOnAnyThreadCount() {
        for (int threads = 1; threads <= 3; threads++) {
            try (WorkerPool pool = new WorkerPool(threads);
                 MoeModel m = new MoeModel(ModelConfig.tiny()).initRandom(1);
                 AdamWOptimizer opt = new AdamWOptimizer(m, pool)) {
                fill(m, 0f);
                MemorySegment g = m.grads();
                for (ParamLayout.Entry e : m.layout().entries()) g.setAtIndex(Tensor.FLOAT, e.offset(), 1f);
                long first = m.layout().entries().get(0).offset();
                g.setAtIndex(Tensor.FLOAT, first, 0x1p26f);
                g.setAtIndex(Tensor.FLOAT, first + 1, 0x1p26f);
                assertEquals(Math.sqrt(0x1p53), opt.step(1e-3, 1.0, 1), 0.0, threads + " threads");
            }
        }
    }

    /** Squaring's relative error grows with t (each squaring doubles it), but the float bias corrections are unchanged. */
    @Test
    void biasCorrectionPowersMatchStrictMathAndDependOnTheStepAlone() {
        for (double b : new double[] {0.9, 0.95, 0.999, 0.5, 1.0, 0.0}) {
            for (long t : new long[] {0, 1, 2, 3, 7, 64, 1000, 12_345, 1_000_000}) {
                double want = StrictMath.pow(b, t), got = AdamWOptimizer.powSteps(b, t);
                assertEquals(want, got, Math.max(Double.MIN_NORMAL, Math.abs(want) * 1e-15 * Math.max(4, t)), "b " + b + ", t " + t);
            }
        }
        int differ = 0;
        for (double b : new double[] {0.9, 0.95, 0.98, 0.99, 0.999})
            for (long t = 1; t <= 50_000; t++)
                if ((float) (1 - StrictMath.pow(b, t)) != (float) (1 - AdamWOptimizer.powSteps(b, t))) differ++;
        assertEquals(0, differ, "float bias corrections that differ from StrictMath.pow's");
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * The optimizer step allocates nothing once its kernels are compiled, within 1,000 steps. (It used to allocate
     * StrictMath.pow's scratch arrays, 192 B per step, until C2 compiled FdLibm about 2,600 steps into a run; this
     * catches that only when it runs first in a fresh JVM, since any earlier StrictMath.pow user warms FdLibm up.)
     */
    @Test
    void stepAllocatesNothingLongBeforeStrictMathWouldBeCompiled() {
        var mx = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        try (WorkerPool pool = new WorkerPool(2); MoeModel m = new MoeModel(ModelConfig.tiny()).initRandom(1);
             AdamWOptimizer opt = new AdamWOptimizer(m, pool)) {
            fill(m, 1e-3f);
            // passes of 100 steps with a pause between (time for C2 to compile the kernels on a busy machine, few
            // steps): done at the first pass after the second that allocates nothing, at most 1,000 steps in all
            long bytes = -1;
            int pass = 0;
            for (; pass < 10 && !(pass >= 2 && bytes < 512); pass++) {
                if (pass > 0) sleep(150);
                long b0 = mx.getCurrentThreadAllocatedBytes();
                for (int i = 0; i < 100; i++) opt.step(1e-4, 1.0, 1);
                bytes = mx.getCurrentThreadAllocatedBytes() - b0;
            }
            assertTrue(bytes < 512, "100 optimizer steps (up to step " + pass * 100 + ") allocated " + bytes + " bytes");
        }
    }
}
