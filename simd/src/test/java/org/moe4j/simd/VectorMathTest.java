package org.moe4j.simd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import jdk.incubator.vector.FloatVector;
import org.junit.jupiter.api.Test;

/**
 * Both vectorised exps (the polynomial and the one the kernels use by default): relative error <= 1e-6 over the
 * normal float range, and the edges exact.
 */
class VectorMathTest {
    private static float[] expOf(float[] x, boolean poly) {
        float[] out = new float[x.length];
        int l = VectorMath.L;
        for (int i = 0; i + l <= x.length; i += l) {
            FloatVector v = FloatVector.fromArray(VectorMath.F, x, i);
            (poly ? VectorMath.expPoly(v) : VectorMath.exp(v)).intoArray(out, i);
        }
        return out;
    }

    @Test
    void expIsAccurateOverTheWholeRange() {
        for (boolean poly : new boolean[] {true, false}) {
            accurate(poly);
        }
    }

    @Test
    void expEdgesAreExact() {
        for (boolean poly : new boolean[] {true, false}) {
            edges(poly);
        }
    }

    private static void accurate(boolean poly) {
        int l = VectorMath.L;
        int n = 1 << 20;
        n -= n % l;
        float[] x = new float[n];
        for (int i = 0; i < n; i++) { // a dense sweep over [-87.3, 88.7] (normal results)
            x[i] = -87.3f + (float) (176.0 * i / n);
        }
        float[] y = expOf(x, poly);
        double worst = 0;
        for (int i = 0; i < n; i++) {
            double want = Math.exp(x[i]);
            worst = Math.max(worst, Math.abs(y[i] - want) / want);
        }
        assertTrue(worst <= 1e-6, (poly ? "poly" : "default") + " exp: worst relative error " + worst);
    }

    private static void edges(boolean poly) {
        int l = VectorMath.L;
        float[] special = {Float.NEGATIVE_INFINITY, Float.POSITIVE_INFINITY, Float.NaN, -1e30f, 1e30f, -104f, 89f, 0f,
                           -0f, -100f};
        float[] x = new float[Math.max(l, special.length + l - special.length % l)];
        System.arraycopy(special, 0, x, 0, special.length);
        float[] y = expOf(x, poly);
        assertEquals(0f, y[0]);
        assertEquals(Float.POSITIVE_INFINITY, y[1]);
        assertTrue(Float.isNaN(y[2]), "exp(NaN) = " + y[2]);
        assertEquals(0f, y[3]);
        assertEquals(Float.POSITIVE_INFINITY, y[4]);
        assertEquals(0f, y[5]);
        assertEquals(Float.POSITIVE_INFINITY, y[6]);
        assertEquals(1f, y[7]);
        assertEquals(1f, y[8]);
        // subnormal results come out with ~2 ulp of the subnormal spacing at most
        assertEquals((float) Math.exp(-100), y[9], 4 * Float.MIN_VALUE);
    }
}
