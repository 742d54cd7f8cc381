package org.moe4j.props;

import static org.moe4j.props.KernelsSupport.assertClose;
import static org.moe4j.props.KernelsSupport.floats;
import static org.moe4j.props.KernelsSupport.gaussian;
import static org.moe4j.props.KernelsSupport.read;
import static org.moe4j.props.KernelsSupport.toDouble;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.reference.RefSwiGlu;
import org.moe4j.simd.SwiGlu;

/**
 * SwiGlu vs its float64 twin, with a and b the two halves of one fused [rows, 2h] buffer (leading dimension 2h)
 * and the outputs in their own [rows, h] buffers or in place. Tolerance: 1e-5 relative + 1e-6 absolute (a few
 * float roundings and the ~1e-7 vector exp); da also 2e-6 |dout b| absolute (SiLU' cancels near its root). Twin gradients vs central differences: 1e-6.
 */
class SwiGluProperties {
    @Property(tries = 80)
    void forwardAndBackwardMatchTwin(@ForAll @IntRange(min = 0, max = 24) int rows,
                                     @ForAll @IntRange(min = 1, max = 300) int h, @ForAll boolean inPlace,
                                     @ForAll long seed) {
        Random rnd = new Random(seed);
        float[] ab = gaussian(rnd, rows * 2 * h, 4);
        if (rows > 0) { // a few extreme pre-activations: SiLU must saturate, never NaN
            float[] extreme = {100f, -100f, 88.8f, -88.8f, 1e4f, -1e4f, 0f, -0f, 1e-30f};
            for (float e : extreme) {
                ab[rnd.nextInt(rows * 2 * h)] = e;
            }
        }
        float[] dout = gaussian(rnd, rows * h, 1);
        float[] a = new float[rows * h];
        float[] b = new float[rows * h];
        for (int r = 0; r < rows; r++) {
            System.arraycopy(ab, r * 2 * h, a, r * h, h);
            System.arraycopy(ab, r * 2 * h + h, b, r * h, h);
        }
        int pad = 2;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment abs = floats(arena, ab, pad);
            MemorySegment out = floats(arena, new float[rows * h], pad);
            MemorySegment ds = floats(arena, dout, pad);
            SwiGlu.forward(abs, pad, 2 * h, abs, pad + h, 2 * h, out, pad, h, h, 0, rows);
            double[] ref = RefSwiGlu.forward(toDouble(a), toDouble(b));
            float[] got = read(out, pad, rows * h);
            for (float v : got) {
                assertTrue(!Float.isNaN(v), "SwiGLU produced NaN");
            }
            assertClose("out", got, ref, 1e-6, 1e-5);
            double[][] g = RefSwiGlu.backward(toDouble(dout), toDouble(a), toDouble(b));
            float[] da = new float[rows * h];
            float[] db = new float[rows * h];
            if (inPlace) { // da over a, db over b, in the fused buffer
                SwiGlu.backward(ds, pad, h, abs, pad, 2 * h, abs, pad + h, 2 * h, abs, pad, 2 * h, abs, pad + h, 2 * h,
                        h, 0, rows);
                float[] all = read(abs, pad, rows * 2 * h);
                for (int r = 0; r < rows; r++) {
                    System.arraycopy(all, r * 2 * h, da, r * h, h);
                    System.arraycopy(all, r * 2 * h + h, db, r * h, h);
                }
            } else {
                MemorySegment das = floats(arena, new float[rows * h], pad);
                MemorySegment dbs = floats(arena, new float[rows * h], pad);
                SwiGlu.backward(ds, pad, h, abs, pad, 2 * h, abs, pad + h, 2 * h, das, pad, h, dbs, pad, h, h, 0, rows);
                da = read(das, pad, rows * h);
                db = read(dbs, pad, rows * h);
            }
            // SiLU'(a) = s + silu (1 - s) cancels near its root a = -1.2785, so da's error is relative to the terms'
            // size |dout b| (both terms are <= ~1.1), not to da itself
            for (int i = 0; i < da.length; i++) {
                double tol = 2e-6 * Math.abs((double) dout[i] * b[i]) + 1e-5 * Math.abs(g[0][i]) + 1e-6;
                if (!(Math.abs(da[i] - g[0][i]) <= tol)) {
                    org.junit.jupiter.api.Assertions.fail("da[" + i + "]: got " + da[i] + ", expected " + g[0][i]
                            + " (a = " + a[i] + ", tolerance " + tol + ")");
                }
            }
            assertClose("db", db, g[1], 1e-6, 1e-5);
        }
    }

    @Property(tries = 30)
    void twinGradientsMatchFiniteDifferences(@ForAll @IntRange(min = 1, max = 20) int n, @ForAll long seed) {
        Random rnd = new Random(seed);
        double[] a = toDouble(gaussian(rnd, n, 3));
        double[] b = toDouble(gaussian(rnd, n, 1));
        double[] proj = toDouble(gaussian(rnd, n, 1));
        double[][] g = RefSwiGlu.backward(proj, a, b);
        double[] fa = new double[n];
        double[] fb = new double[n];
        for (int i = 0; i < n; i++) {
            fa[i] = KernelsSupport.centralDiff(aa -> KernelsSupport.dot(RefSwiGlu.forward(aa, b), proj), a, i, 1e-5);
            fb[i] = KernelsSupport.centralDiff(bb -> KernelsSupport.dot(RefSwiGlu.forward(a, bb), proj), b, i, 1e-5);
        }
        assertClose("da vs finite differences", g[0], fa, 1e-6, 1e-6);
        assertClose("db vs finite differences", g[1], fb, 1e-6, 1e-6);
    }
}
