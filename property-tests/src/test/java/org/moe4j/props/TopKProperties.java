package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.moe4j.reference.RefTopK;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.TopK;

/**
 * TopK vs the sort-based twin: exact equality of indices (and of values, which are copies). Values are drawn
 * from a handful of levels so ties are common, with -inf and NaN sprinkled in, masks random per row.
 */
class TopKProperties {
    @Property(tries = 300)
    void selectMatchesTwin(@ForAll @IntRange(min = 0, max = 12) int rows, @ForAll @IntRange(min = 1, max = 140) int n,
                           @ForAll @IntRange(min = 0, max = 140) int kRaw, @ForAll boolean masked, @ForAll long seed) {
        Random rnd = new Random(seed);
        int k = Math.min(kRaw, n);
        int ldx = n + rnd.nextInt(3);
        int levels = 1 + rnd.nextInt(6);
        float[] x = new float[rows * ldx];
        for (int i = 0; i < x.length; i++) {
            int u = rnd.nextInt(20);
            x[i] = u == 0 ? Float.NEGATIVE_INFINITY : u == 1 ? Float.NaN : rnd.nextInt(levels) - 2.5f;
        }
        boolean[] allowed = masked ? new boolean[rows * n] : null;
        if (masked) {
            double density = rnd.nextDouble();
            for (int i = 0; i < allowed.length; i++) {
                allowed[i] = rnd.nextDouble() < density;
            }
        }
        int ldIdx = k + 1;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment xs = KernelsSupport.floats(arena, x, 0);
            MemorySegment idx = arena.allocate((long) rows * ldIdx * 4 + 4, 4);
            MemorySegment val = arena.allocate((long) rows * ldIdx * 4 + 4, 4);
            MemorySegment mask = masked ? KernelsSupport.maskBits(arena, allowed, rows, n) : null;
            int picked = TopK.select(xs, 0, ldx, n, k, mask, 0, KernelsSupport.words(n), idx, 0, ldIdx, val, 0, ldIdx, 0,
                    rows);
            int minPicked = k;
            for (int r = 0; r < rows; r++) {
                float[] row = new float[n];
                System.arraycopy(x, r * ldx, row, 0, n);
                boolean[] rowAllowed = null;
                if (masked) {
                    rowAllowed = new boolean[n];
                    System.arraycopy(allowed, r * n, rowAllowed, 0, n);
                }
                int[] want = RefTopK.select(row, n, k, rowAllowed);
                int[] got = new int[k];
                for (int j = 0; j < k; j++) {
                    got[j] = idx.getAtIndex(ValueLayout.JAVA_INT, (long) r * ldIdx + j);
                    float v = val.getAtIndex(Tensor.FLOAT, (long) r * ldIdx + j);
                    float wantV = want[j] < 0 || Float.isNaN(row[want[j]]) ? Float.NEGATIVE_INFINITY : row[want[j]];
                    assertEquals(wantV, v, "value of rank " + j + " in row " + r);
                }
                assertArrayEquals(want, got, "row " + r);
                int[] heap = new int[k];
                int count = TopK.select(row, n, k, rowAllowed, heap);
                assertArrayEquals(want, heap, "heap variant, row " + r);
                int expectCount = 0;
                for (int w : want) {
                    expectCount += w >= 0 ? 1 : 0;
                }
                assertEquals(expectCount, count);
                minPicked = Math.min(minPicked, count);
            }
            assertEquals(rows == 0 ? k : minPicked, picked, "smallest pick count");
        }
    }

    @Test
    void allEqualRowWithKEqualsEIsTheIdentity() {
        int n = 37;
        float[] row = new float[n];
        java.util.Arrays.fill(row, 0.25f);
        int[] idx = new int[n];
        assertEquals(n, TopK.select(row, n, n, null, idx));
        for (int j = 0; j < n; j++) {
            assertEquals(j, idx[j]);
        }
    }

    @Test
    void infiniteColumnsComeAfterFiniteOnes() {
        float[] row = {Float.NEGATIVE_INFINITY, -1e30f, Float.NEGATIVE_INFINITY, -3f};
        int[] idx = new int[4];
        TopK.select(row, 4, 4, null, idx);
        assertArrayEquals(new int[] {3, 1, 0, 2}, idx);
    }

    @Test
    void maskedColumnsAreNeverPicked() {
        float[] row = {9f, 1f, 8f, 2f};
        int[] idx = new int[3];
        assertEquals(2, TopK.select(row, 4, 3, new boolean[] {false, true, false, true}, idx));
        assertArrayEquals(new int[] {3, 1, -1}, idx);
    }
}
