package org.moe4j.props;

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
import org.moe4j.reference.RefSoftmax;
import org.moe4j.simd.Softmax;

/**
 * Softmax (plain and masked), logsumexp and the backward vs the float64 twin, on rows of leading dimension
 * ldx > n (the routed columns of router logits), masks per row or shared (stride 0), -inf logits and fully
 * masked rows. Tolerances: p and dx within 1e-6 absolute + 1e-5 relative; lse within 1e-5 absolute + 1e-6
 * relative. Twin gradient vs central differences: 1e-6.
 */
class SoftmaxProperties {
    @Property(tries = 120)
    void forwardMatchesTwin(@ForAll @IntRange(min = 0, max = 20) int rows, @ForAll @IntRange(min = 1, max = 300) int n,
                            @ForAll @IntRange(min = 0, max = 3) int extraCols, @ForAll @IntRange(min = 0, max = 2) int maskMode,
                            @ForAll long seed) {
        Random rnd = new Random(seed);
        int ldx = n + extraCols;
        float[] x = gaussian(rnd, rows * ldx, Math.exp(rnd.nextGaussian() * 2));
        if (rows > 0 && rnd.nextBoolean()) {
            x[rnd.nextInt(rows * ldx)] = Float.NEGATIVE_INFINITY;
        }
        // maskMode 0: none; 1: one mask per row (density random, some rows empty); 2: one shared mask (stride 0)
        double density = rnd.nextDouble();
        boolean[] allowed = null;
        if (maskMode > 0) {
            allowed = new boolean[rows * n];
            for (int r = 0; r < rows; r++) {
                for (int c = 0; c < n; c++) {
                    allowed[r * n + c] = maskMode == 2 && r > 0 ? allowed[c] : rnd.nextDouble() < density;
                }
            }
        }
        double[] dense = new double[rows * n];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < n; c++) {
                dense[r * n + c] = x[r * ldx + c];
            }
        }
        double[] pRef = RefSoftmax.forward(dense, rows, n, allowed);
        double[] lRef = RefSoftmax.logSumExp(dense, rows, n, allowed);
        int pad = 4;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment xs = floats(arena, x, pad);
            MemorySegment ys = floats(arena, new float[rows * n], pad);
            MemorySegment ls = floats(arena, new float[rows], pad);
            MemorySegment ls2 = floats(arena, new float[rows], pad);
            MemorySegment mask = allowed == null ? null : KernelsSupport.maskBits(arena, allowed, rows, n);
            int stride = maskMode == 2 ? 0 : KernelsSupport.words(n);
            Softmax.forward(xs, pad, ldx, ys, pad, n, n, mask, 0, stride, ls, pad, 0, rows);
            Softmax.logSumExp(xs, pad, ldx, n, mask, 0, stride, ls2, pad, 0, rows);
            assertClose("p", read(ys, pad, rows * n), pRef, 1e-6, 1e-5);
            assertClose("lse", read(ls, pad, rows), lRef, 1e-5, 1e-6);
            assertClose("logSumExp", read(ls2, pad, rows), lRef, 1e-5, 1e-6);
            KernelsSupport.assertPadIntact("p", ys, pad, rows * n);
            if (maskMode == 0) { // the short overload, in place over x with ld = ldx
                Softmax.forward(xs, pad, ldx, xs, pad, ldx, n, 0, rows);
                float[] all = read(xs, pad, rows * ldx);
                float[] p = new float[rows * n];
                for (int r = 0; r < rows; r++) {
                    System.arraycopy(all, r * ldx, p, r * n, n);
                }
                assertClose("p in place", p, pRef, 1e-6, 1e-5);
            }
        }
    }

    @Property(tries = 80)
    void backwardMatchesTwin(@ForAll @IntRange(min = 0, max = 12) int rows, @ForAll @IntRange(min = 1, max = 200) int n,
                             @ForAll long seed) {
        Random rnd = new Random(seed);
        double[] x = toDouble(gaussian(rnd, rows * n, 2));
        float[] p = new float[rows * n];
        double[] pRef = RefSoftmax.forward(x, rows, n, null);
        for (int i = 0; i < p.length; i++) {
            p[i] = (float) pRef[i];
        }
        float[] dy = gaussian(rnd, rows * n, 1);
        double[] dxRef = RefSoftmax.backward(toDouble(p), toDouble(dy), rows, n);
        int pad = 1;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment ps = floats(arena, p, pad);
            MemorySegment dys = floats(arena, dy, pad);
            Softmax.backward(ps, pad, n, dys, pad, n, dys, pad, n, n, 0, rows); // dx over dy
            assertClose("dx", read(dys, pad, rows * n), dxRef, 1e-6, 1e-5);
        }
    }

    @Property(tries = 30)
    void twinGradientMatchesFiniteDifferences(@ForAll @IntRange(min = 1, max = 3) int rows,
                                              @ForAll @IntRange(min = 1, max = 12) int n, @ForAll long seed) {
        Random rnd = new Random(seed);
        double[] x = toDouble(gaussian(rnd, rows * n, 2));
        double[] proj = toDouble(gaussian(rnd, rows * n, 1));
        double[] g = RefSoftmax.backward(RefSoftmax.forward(x, rows, n, null), proj, rows, n);
        double[] fd = new double[x.length];
        for (int i = 0; i < x.length; i++) {
            fd[i] = KernelsSupport.centralDiff(xx -> KernelsSupport.dot(RefSoftmax.forward(xx, rows, n, null), proj), x,
                    i, 1e-5);
        }
        assertClose("dx vs finite differences", g, fd, 1e-6, 1e-6);
    }
}
