package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.fail;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import org.moe4j.simd.Tensor;

/** Helpers shared by the kernel properties: off-heap copies at an offset, random data, tolerant comparison. */
final class KernelsSupport {
    private KernelsSupport() {
    }

    /** A float segment holding {@code pad} junk floats, then v, then {@code pad} junk floats. */
    static MemorySegment floats(Arena arena, float[] v, int pad) {
        MemorySegment s = arena.allocate((v.length + 2L * pad) * 4 + 4, 4);
        for (int i = 0; i < pad; i++) {
            s.setAtIndex(Tensor.FLOAT, i, 12345f);
            s.setAtIndex(Tensor.FLOAT, pad + v.length + i, 12345f);
        }
        MemorySegment.copy(v, 0, s, Tensor.FLOAT, (long) pad * 4, v.length);
        return s;
    }

    static MemorySegment ints(Arena arena, int[] v, int pad) {
        MemorySegment s = arena.allocate((v.length + 2L * pad) * 4 + 4, 4);
        MemorySegment.copy(v, 0, s, ValueLayout.JAVA_INT_UNALIGNED, (long) pad * 4, v.length);
        return s;
    }

    static float[] read(MemorySegment s, int pad, int n) {
        float[] out = new float[n];
        MemorySegment.copy(s, Tensor.FLOAT, (long) pad * 4, out, 0, n);
        return out;
    }

    /** Asserts the pad floats around [pad, pad + n) still hold the junk {@link #floats} wrote. */
    static void assertPadIntact(String what, MemorySegment s, int pad, int n) {
        for (int i = 0; i < pad; i++) {
            if (s.getAtIndex(Tensor.FLOAT, i) != 12345f || s.getAtIndex(Tensor.FLOAT, pad + n + i) != 12345f) {
                fail(what + ": kernel wrote outside its range (pad element " + i + ")");
            }
        }
    }

    static float[] gaussian(Random rnd, int n, double scale) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (rnd.nextGaussian() * scale);
        }
        return v;
    }

    static double[] toDouble(float[] v) {
        double[] d = new double[v.length];
        for (int i = 0; i < v.length; i++) {
            d[i] = v[i];
        }
        return d;
    }

    /** |actual - expected| <= atol + rtol |expected| element-wise; equal infinities and NaN-for-NaN pass. */
    static void assertClose(String what, float[] actual, double[] expected, double atol, double rtol) {
        if (actual.length != expected.length) {
            fail(what + ": length " + actual.length + ", expected " + expected.length);
        }
        for (int i = 0; i < actual.length; i++) {
            double a = actual[i];
            double e = expected[i];
            if (Double.isNaN(e) && Double.isNaN(a) || a == e) {
                continue;
            }
            if (!(Math.abs(a - e) <= atol + rtol * Math.abs(e))) {
                fail(what + "[" + i + "]: got " + a + ", expected " + e + " (atol " + atol + ", rtol " + rtol + ")");
            }
        }
    }

    static void assertClose(String what, double[] actual, double[] expected, double atol, double rtol) {
        for (int i = 0; i < actual.length; i++) {
            if (!(Math.abs(actual[i] - expected[i]) <= atol + rtol * Math.abs(expected[i]))) {
                fail(what + "[" + i + "]: got " + actual[i] + ", expected " + expected[i]);
            }
        }
    }

    /** Row bitsets in the kernels' mask layout: words = ceil(n / 64) longs per row. */
    static MemorySegment maskBits(Arena arena, boolean[] allowed, int rows, int n) {
        int words = words(n);
        MemorySegment s = arena.allocate(Math.max(1, (long) rows * words) * 8, 8);
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < n; c++) {
                if (allowed[r * n + c]) {
                    long w = s.getAtIndex(ValueLayout.JAVA_LONG, (long) r * words + (c >>> 6));
                    s.setAtIndex(ValueLayout.JAVA_LONG, (long) r * words + (c >>> 6), w | (1L << (c & 63)));
                }
            }
        }
        return s;
    }

    static int words(int n) {
        return Math.max(1, (n + 63) >>> 6);
    }

    /** Central difference of f at x[i] in double. */
    static double centralDiff(java.util.function.ToDoubleFunction<double[]> f, double[] x, int i, double h) {
        double keep = x[i];
        x[i] = keep + h;
        double up = f.applyAsDouble(x);
        x[i] = keep - h;
        double down = f.applyAsDouble(x);
        x[i] = keep;
        return (up - down) / (2 * h);
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            s += a[i] * b[i];
        }
        return s;
    }
}
