package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moe4j.props.KernelsSupport.assertClose;
import static org.moe4j.props.KernelsSupport.floats;
import static org.moe4j.props.KernelsSupport.gaussian;
import static org.moe4j.props.KernelsSupport.read;
import static org.moe4j.props.KernelsSupport.toDouble;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.moe4j.Moe4jException;
import org.moe4j.reference.RefCrossEntropy;
import org.moe4j.simd.CrossEntropy;

/**
 * Fused cross-entropy vs the float64 twin, with ignore-index rows and the output z-loss. Tolerances: lse and
 * per-row loss within 2e-5 absolute + 2e-6 relative (logits ~N(0, 3), V <= 300); the returned sum within 1e-4
 * relative; dlogits within 2e-6 scale absolute (p - 1 at the target cancels; lse is rounded to float, ~5e-7) + 1e-5
 * relative of the (already scaled) twin gradient. Twin gradient vs
 * central differences: 1e-6.
 */
class CrossEntropyProperties {
    private static final int IGNORE = -1;

    @Property(tries = 100)
    void forwardAndBackwardMatchTwin(@ForAll @IntRange(min = 0, max = 16) int rows,
                                     @ForAll @IntRange(min = 1, max = 300) int vocab, @ForAll boolean inPlace,
                                     @ForAll long seed) {
        Random rnd = new Random(seed);
        float[] logits = gaussian(rnd, rows * vocab, 3);
        int[] targets = new int[rows];
        int labels = 0;
        for (int r = 0; r < rows; r++) {
            targets[r] = rnd.nextInt(5) == 0 ? IGNORE : rnd.nextInt(vocab);
            labels += targets[r] == IGNORE ? 0 : 1;
        }
        float scale = 1f / Math.max(1, labels);
        float zWeight = rnd.nextBoolean() ? 0f : (float) (rnd.nextDouble() * 1e-2);
        double[] x = toDouble(logits);
        double[] lossRef = RefCrossEntropy.rowLoss(x, targets, IGNORE, rows, vocab);
        double[] lseRef = new double[rows];
        double sumRef = 0;
        for (int r = 0; r < rows; r++) {
            lseRef[r] = targets[r] == IGNORE ? 0 : RefCrossEntropy.lse(x, r, vocab);
            sumRef += lossRef[r];
        }
        double[] gRef = RefCrossEntropy.backward(x, targets, IGNORE, rows, vocab, scale, zWeight);
        int pad = 3;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment ls = floats(arena, logits, pad);
            MemorySegment ts = KernelsSupport.ints(arena, targets, pad);
            MemorySegment lse = floats(arena, new float[rows], pad);
            MemorySegment loss = floats(arena, new float[rows], pad);
            double sum = CrossEntropy.forward(ls, pad, ts, pad, IGNORE, lse, pad, loss, pad, vocab, 0, rows / 2)
                    + CrossEntropy.forward(ls, pad, ts, pad, IGNORE, lse, pad, loss, pad, vocab, rows / 2, rows);
            assertClose("lse", read(lse, pad, rows), lseRef, 2e-5, 2e-6);
            assertClose("loss", read(loss, pad, rows), lossRef, 2e-5, 2e-6);
            assertEquals(sumRef, sum, 1e-5 + 1e-4 * Math.abs(sumRef), "sum of losses");
            double zRef = 0;
            for (int r = 0; r < rows; r++) {
                zRef += targets[r] == IGNORE ? 0 : lseRef[r] * lseRef[r];
            }
            assertEquals(zRef, CrossEntropy.zLossSum(lse, pad, ts, pad, IGNORE, 0, rows), 1e-4 + 1e-5 * zRef, "z-loss sum");
            MemorySegment dl = inPlace ? ls : floats(arena, new float[rows * vocab], pad);
            CrossEntropy.backward(ls, pad, ts, pad, IGNORE, lse, pad, scale, zWeight, dl, pad, vocab, 0, rows);
            assertClose("dlogits", read(dl, pad, rows * vocab), gRef, 2e-6 * scale, 1e-5);
            KernelsSupport.assertPadIntact("dlogits", dl, pad, rows * vocab);
        }
    }

    @Property(tries = 30)
    void twinGradientMatchesFiniteDifferences(@ForAll @IntRange(min = 1, max = 3) int rows,
                                              @ForAll @IntRange(min = 1, max = 10) int vocab, @ForAll long seed) {
        Random rnd = new Random(seed);
        double[] x = toDouble(gaussian(rnd, rows * vocab, 2));
        int[] targets = new int[rows];
        for (int r = 0; r < rows; r++) {
            targets[r] = r == 0 ? rnd.nextInt(vocab) : (rnd.nextInt(3) == 0 ? IGNORE : rnd.nextInt(vocab));
        }
        double scale = 1.0 / rows;
        double zWeight = 0.01;
        double[] g = RefCrossEntropy.backward(x, targets, IGNORE, rows, vocab, scale, zWeight);
        double[] fd = new double[x.length];
        for (int i = 0; i < x.length; i++) {
            fd[i] = KernelsSupport.centralDiff(xx -> RefCrossEntropy.total(xx, targets, IGNORE, rows, vocab, scale, zWeight),
                    x, i, 1e-5);
        }
        assertClose("dlogits vs finite differences", g, fd, 1e-6, 1e-6);
    }

    @Test
    void targetOutOfRangeNamesRowAndId() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment ls = floats(arena, new float[3 * 4], 0);
            MemorySegment ts = KernelsSupport.ints(arena, new int[] {1, 2, 7}, 0);
            MemorySegment lse = floats(arena, new float[3], 0);
            Moe4jException e = assertThrows(Moe4jException.class,
                    () -> CrossEntropy.forward(ls, 0, ts, 0, IGNORE, lse, 0, null, 0, 4, 0, 3));
            assertTrue(e.getMessage().contains("row 2") && e.getMessage().contains("target id 7"), e.getMessage());
            MemorySegment neg = KernelsSupport.ints(arena, new int[] {-5, 0, 0}, 0);
            Moe4jException e2 = assertThrows(Moe4jException.class,
                    () -> CrossEntropy.backward(ls, 0, neg, 0, IGNORE, lse, 0, 1f, 0f, ls, 0, 4, 0, 3));
            assertTrue(e2.getMessage().contains("row 0") && e2.getMessage().contains("target id -5"), e2.getMessage());
        }
    }
}
