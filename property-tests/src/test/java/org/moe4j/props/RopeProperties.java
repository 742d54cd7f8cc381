package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.lang.foreign.Arena;
import java.util.Random;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.Moe4jException;
import org.moe4j.reference.RefRope;
import org.moe4j.simd.Rope;
import org.moe4j.simd.Tensor;

/**
 * {@link Rope} against {@link RefRope}. Tolerance: inputs in [-2, 2], |fast - twin| <= 2e-6 (float tables and
 * float arithmetic on a rotation, a few ulp of values below 3).
 */
class RopeProperties {
    private static final int[] HEAD_DIMS = {2, 8, 16, 24, 32, 64, 80, 128};
    private static final double[] THETAS = {10000, 500000};
    private static final double TOL = 2e-6;

    @Property(tries = 150)
    void forwardAndBackwardMatchTwin(@ForAll @IntRange(min = 1, max = 3) int batch,
                                     @ForAll @IntRange(min = 1, max = 70) int seqLen,
                                     @ForAll @IntRange(min = 1, max = 4) int heads,
                                     @ForAll @IntRange(min = 0, max = 7) int dhIndex,
                                     @ForAll @IntRange(min = 0, max = 1) int thetaIndex,
                                     @ForAll boolean inverse,
                                     @ForAll long seed) {
        int dh = HEAD_DIMS[dhIndex];
        double theta = THETAS[thetaIndex];
        int rows = batch * seqLen;
        Random rnd = new Random(seed);
        int rowStart = rnd.nextInt(rows + 1);
        int rowEnd = rowStart + rnd.nextInt(rows - rowStart + 1);
        float[] x = random(rnd, rows * heads * dh);
        double[] ref = toDouble(x);
        RefRope.apply(ref, heads, dh, seqLen, theta, rowStart, rowEnd, inverse);
        Rope rope = new Rope(seqLen + rnd.nextInt(5), dh, theta);
        try (Arena arena = Arena.ofConfined()) {
            Tensor t = Tensor.allocate(arena, rows, heads * dh).copyFrom(x);
            if (inverse) {
                rope.backward(t, heads, seqLen, rowStart, rowEnd);
            } else {
                rope.forward(t, heads, seqLen, rowStart, rowEnd);
            }
            float[] got = t.toFloatArray();
            int cols = heads * dh;
            for (int i = 0; i < got.length; i++) {
                int r = i / cols;
                if (r < rowStart || r >= rowEnd) {
                    assertEquals(x[i], got[i], 0f, "row " + r + " outside the range must be untouched");
                } else {
                    assertEquals(ref[i], got[i], TOL, "element " + i + " (row " + r + ", col " + i % cols + ")");
                }
            }
        }
    }

    @Property(tries = 100)
    void backwardUndoesForward(@ForAll @IntRange(min = 1, max = 300) int rows,
                               @ForAll @IntRange(min = 1, max = 3) int heads,
                               @ForAll @IntRange(min = 0, max = 7) int dhIndex,
                               @ForAll @IntRange(min = 0, max = 1) int thetaIndex,
                               @ForAll long seed) {
        int dh = HEAD_DIMS[dhIndex];
        Random rnd = new Random(seed);
        float[] x = random(rnd, rows * heads * dh);
        Rope rope = new Rope(rows, dh, THETAS[thetaIndex]);
        try (Arena arena = Arena.ofConfined()) {
            Tensor t = Tensor.allocate(arena, rows, heads * dh).copyFrom(x);
            rope.forward(t, heads, rows);
            rope.backward(t, heads, rows);
            float[] got = t.toFloatArray();
            for (int i = 0; i < x.length; i++) {
                assertEquals(x[i], got[i], 4e-6, "element " + i);
            }
        }
    }

    @Property(tries = 60)
    void singleRowAtAPositionMatchesTwin(@ForAll @IntRange(min = 0, max = 4095) int pos,
                                         @ForAll @IntRange(min = 1, max = 3) int heads,
                                         @ForAll @IntRange(min = 0, max = 7) int dhIndex,
                                         @ForAll boolean inverse,
                                         @ForAll long seed) {
        int dh = HEAD_DIMS[dhIndex];
        Random rnd = new Random(seed);
        int lead = rnd.nextInt(3);
        float[] x = random(rnd, (lead + 1) * heads * dh);
        double[] ref = toDouble(x);
        RefRope.rotateRow(ref, (long) lead * heads * dh, heads, dh, pos, 500000, inverse);
        Rope rope = new Rope(4096, dh, 500000);
        try (Arena arena = Arena.ofConfined()) {
            Tensor t = Tensor.allocate(arena, x.length).copyFrom(x);
            rope.rotate(t.segment(), (long) lead * heads * dh, heads, pos, inverse);
            float[] got = t.toFloatArray();
            for (int i = 0; i < x.length; i++) {
                // angles up to 4095 rad: the float table rounds cos/sin of a double angle, so still a few ulp
                assertEquals(ref[i], got[i], TOL, "element " + i);
            }
        }
    }

    @Example
    void rotateHalfConvention() {
        // Dh = 4: pairs (0, 2) at angle pos and (1, 3) at angle pos * theta^(-1/2)
        Rope rope = new Rope(8, 4, 10000);
        try (Arena arena = Arena.ofConfined()) {
            Tensor t = Tensor.allocate(arena, 2, 4).copyFrom(new float[] {9, 9, 9, 9, 1, 1, 0, 0});
            rope.forward(t, 1, 2);
            float[] got = t.toFloatArray();
            assertEquals(9f, got[0], 0f, "position 0 is the identity");
            assertEquals(Math.cos(1), got[4], 1e-6);
            assertEquals(Math.cos(0.01), got[5], 1e-6);
            assertEquals(Math.sin(1), got[6], 1e-6);
            assertEquals(Math.sin(0.01), got[7], 1e-6);
        }
    }

    @Example
    void badArgumentsAreNamed() {
        assertThrows(Moe4jException.class, () -> new Rope(8, 7, 10000));
        Rope rope = new Rope(8, 4, 10000);
        try (Arena arena = Arena.ofConfined()) {
            Tensor t = Tensor.allocate(arena, 16, 8);
            Moe4jException e = assertThrows(Moe4jException.class, () -> rope.forward(t, 3, 8));
            assertEquals(true, e.getMessage().contains("heads*Dh"), e.getMessage());
            assertThrows(Moe4jException.class, () -> rope.forward(t, 2, 16), "seqLen above maxT");
            assertThrows(Moe4jException.class, () -> rope.rotate(t.segment(), 0, 2, 8, false), "position 8");
        }
    }

    static float[] random(Random rnd, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) (rnd.nextDouble() * 4 - 2);
        }
        return x;
    }

    static double[] toDouble(float[] x) {
        double[] d = new double[x.length];
        for (int i = 0; i < x.length; i++) {
            d[i] = x[i];
        }
        return d;
    }
}
