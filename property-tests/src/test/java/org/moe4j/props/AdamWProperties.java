package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertEquals;
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
import org.moe4j.reference.RefAdamW;
import org.moe4j.simd.AdamW;

/**
 * AdamW steps, the double-accumulated sum of squares and the in-place scale vs the float64 twin. Tolerances:
 * m within 1e-6 of the sum of its terms' magnitudes
 * (b1 m and (1 - b1) g cancel); v within 1e-5 relative (+1e-9 absolute); p within 1e-6 absolute + 1e-5 relative + 1e-4 lr (the update is
 * lr times a ratio that float rounding moves by ~1e-6 relative, more where sqrt(v) is near eps); sum of squares
 * within 1e-6 relative. AdamW has no gradient of its own, so there is no finite-difference check here.
 */
class AdamWProperties {
    private static final float B1 = 0.9f;
    private static final float B2 = 0.95f;

    @Property(tries = 80)
    void stepsMatchTwin(@ForAll @IntRange(min = 0, max = 300) int n, @ForAll @IntRange(min = 1, max = 4) int steps,
                        @ForAll boolean decay, @ForAll long seed) {
        Random rnd = new Random(seed);
        float lr = (float) (1e-3 * Math.exp(rnd.nextGaussian()));
        float eps = 1e-8f;
        float wd = decay ? 0.1f : 0f;
        float gradScale = rnd.nextBoolean() ? 1f : (float) rnd.nextDouble();
        float[] p = gaussian(rnd, n, 1);
        double[] pRef = toDouble(p);
        double[] mRef = new double[n];
        double[] vRef = new double[n];
        double[] mMag = new double[n]; // Σ of |terms| of m: b1 m and (1 - b1) g can cancel, so m's error scales with this
        int pad = 3;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment ps = floats(arena, p, pad);
            MemorySegment gs = floats(arena, new float[n], pad);
            MemorySegment ms = floats(arena, new float[n], pad);
            MemorySegment vs = floats(arena, new float[n], pad);
            for (int t = 1; t <= steps; t++) {
                float[] g = gaussian(rnd, n, Math.exp(rnd.nextGaussian() * 3));
                MemorySegment.copy(g, 0, gs, org.moe4j.simd.Tensor.FLOAT, pad * 4L, n);
                float bc1 = (float) (1 - Math.pow(B1, t));
                float bc2 = (float) (1 - Math.pow(B2, t));
                int half = n / 2; // two calls over two halves, as two workers would
                AdamW.step(ps, pad, gs, pad, ms, pad, vs, pad, half, lr, B1, B2, eps, wd, bc1, bc2, gradScale);
                AdamW.step(ps, pad + half, gs, pad + half, ms, pad + half, vs, pad + half, n - half, lr, B1, B2, eps, wd,
                        bc1, bc2, gradScale);
                RefAdamW.step(pRef, toDouble(g), mRef, vRef, t, lr, B1, B2, eps, wd, gradScale);
                for (int i = 0; i < n; i++) {
                    mMag[i] = B1 * mMag[i] + (1 - B1) * Math.abs(g[i] * gradScale);
                }
            }
            float[] m = read(ms, pad, n);
            for (int i = 0; i < n; i++) {
                assertEquals(mRef[i], m[i], 1e-6 * mMag[i] + 1e-30, "m[" + i + "]");
            }
            assertClose("v", read(vs, pad, n), vRef, 1e-9, 1e-5);
            assertClose("p", read(ps, pad, n), pRef, 1e-6 + 1e-4 * lr, 1e-5);
            KernelsSupport.assertPadIntact("p", ps, pad, n);
        }
    }

    /**
     * The fused step (gradients zeroed, the bf16 copy written in the same pass) gives p, m and v the bits of the
     * plain step, every gradient 0 when asked (else untouched), and a bf16 copy equal to rounding the new p, on
     * random lengths (vector tails) and with padding around every range untouched.
     */
    @Property(tries = 80)
    void fusedStepEqualsStepThenZeroThenRound(@ForAll @IntRange(min = 0, max = 300) int n, @ForAll boolean zero,
                                             @ForAll boolean copy, @ForAll boolean decay, @ForAll long seed) {
        Random rnd = new Random(seed);
        float lr = (float) (1e-3 * Math.exp(rnd.nextGaussian()));
        float wd = decay ? 0.1f : 0f, gradScale = rnd.nextBoolean() ? 1f : (float) rnd.nextDouble();
        float bc1 = (float) (1 - Math.pow(B1, 3)), bc2 = (float) (1 - Math.pow(B2, 3));
        float[] p = gaussian(rnd, n, 1), g = gaussian(rnd, n, Math.exp(rnd.nextGaussian() * 3));
        float[] m = gaussian(rnd, n, 0.01), v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float) Math.abs(rnd.nextGaussian() * 1e-4);
        if (n > 0) p[rnd.nextInt(n)] = Float.NaN; // NaN must round to a bf16 NaN
        int pad = 3;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p1 = floats(arena, p, pad), g1 = floats(arena, g, pad), m1 = floats(arena, m, pad),
                    v1 = floats(arena, v, pad);
            MemorySegment p2 = floats(arena, p, pad), g2 = floats(arena, g, pad), m2 = floats(arena, m, pad),
                    v2 = floats(arena, v, pad);
            MemorySegment w16 = arena.allocate((n + 2L * pad) * 2, 64), want16 = arena.allocate(Math.max(1, n) * 2L, 64);
            w16.fill((byte) 0x5A);
            AdamW.step(p1, pad, g1, pad, m1, pad, v1, pad, n, lr, B1, B2, 1e-8f, wd, bc1, bc2, gradScale);
            AdamW.step(p2, pad, g2, pad, m2, pad, v2, pad, n, lr, B1, B2, 1e-8f, wd, bc1, bc2, gradScale, zero,
                    copy ? w16 : null, pad);
            float[] pa = read(p1, pad, n), pb = read(p2, pad, n), ma = read(m1, pad, n), mb = read(m2, pad, n);
            float[] va = read(v1, pad, n), vb = read(v2, pad, n), gb = read(g2, pad, n);
            for (int i = 0; i < n; i++) {
                assertEquals(Float.floatToRawIntBits(pa[i]), Float.floatToRawIntBits(pb[i]), "p[" + i + "]");
                assertEquals(Float.floatToRawIntBits(ma[i]), Float.floatToRawIntBits(mb[i]), "m[" + i + "]");
                assertEquals(Float.floatToRawIntBits(va[i]), Float.floatToRawIntBits(vb[i]), "v[" + i + "]");
                assertEquals(Float.floatToRawIntBits(zero ? 0f : g[i]), Float.floatToRawIntBits(gb[i]), "g[" + i + "]");
            }
            KernelsSupport.assertPadIntact("g", g2, pad, n);
            KernelsSupport.assertPadIntact("p", p2, pad, n);
            org.moe4j.simd.Convert.f32ToBf16(p1, pad, want16, 0, n);
            for (int i = 0; i < n + 2 * pad; i++) {
                short got = w16.getAtIndex(org.moe4j.simd.Tensor.SHORT, i);
                if (copy && i >= pad && i < pad + n)
                    assertEquals(want16.getAtIndex(org.moe4j.simd.Tensor.SHORT, i - pad), got, "bf16 copy[" + (i - pad) + "]");
                else
                    assertEquals((short) 0x5A5A, got, "bf16 element " + i + " outside the range (or no copy asked)");
            }
        }
    }

    @Property(tries = 40)
    void sumSquaresAndScaleMatchTwin(@ForAll @IntRange(min = 0, max = 20000) int n, @ForAll long seed) {
        Random rnd = new Random(seed);
        float[] g = gaussian(rnd, n, Math.exp(rnd.nextGaussian() * 3));
        double want = RefAdamW.sumSquares(toDouble(g));
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment gs = floats(arena, g, 1);
            assertEquals(want, AdamW.sumSquares(gs, 1, n), 1e-6 * want, "sum of squares");
            float s = (float) rnd.nextDouble();
            AdamW.scale(gs, 1, n, s);
            double[] scaled = new double[n];
            for (int i = 0; i < n; i++) {
                scaled[i] = (double) g[i] * s;
            }
            assertClose("scaled", read(gs, 1, n), scaled, 0, 1e-7);
            KernelsSupport.assertPadIntact("scaled", gs, 1, n);
        }
    }

    /**
     * Finite gradients up to the float maximum: the squares overflow float, the sum must not (it is finite and
     * matches the float64 twin); one non-finite gradient makes it non-finite.
     */
    @Property(tries = 30)
    void sumSquaresDoesNotOverflowOnFiniteGradients(@ForAll @IntRange(min = 1, max = 9000) int n, @ForAll long seed) {
        Random rnd = new Random(seed);
        float[] g = gaussian(rnd, n, 1e37);
        for (int i = 0; i < n; i++) {
            if (!Float.isFinite(g[i])) {
                g[i] = Math.copySign(Float.MAX_VALUE, g[i]);
            }
        }
        double want = RefAdamW.sumSquares(toDouble(g));
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment gs = floats(arena, g, 1);
            assertEquals(want, AdamW.sumSquares(gs, 1, n), 1e-6 * want, "sum of squares");
            gs.setAtIndex(org.moe4j.simd.Tensor.FLOAT, 1 + rnd.nextInt(n), rnd.nextBoolean() ? Float.NaN
                    : Float.NEGATIVE_INFINITY);
            assertTrue(!Double.isFinite(AdamW.sumSquares(gs, 1, n)), "a non-finite gradient gives a non-finite sum");
        }
    }
}
