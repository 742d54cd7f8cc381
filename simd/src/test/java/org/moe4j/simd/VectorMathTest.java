package org.moe4j.simd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import jdk.incubator.vector.FloatVector;
import org.junit.jupiter.api.Test;

/**
 * The kernels' exp: relative error <= 1e-6 over the normal float range, the edges exact, and the scalar twin equal
 * to the vector lanes bit for bit (loop tails and vector bodies then agree, at every width).
 */
class VectorMathTest {
    private static float[] expOf(float[] x, boolean scalar) {
        float[] out = new float[x.length];
        int l = VectorMath.L;
        for (int i = 0; i + l <= x.length; i += l) {
            if (scalar) {
                for (int j = i; j < i + l; j++) {
                    out[j] = VectorMath.exp(x[j]);
                }
            } else {
                VectorMath.exp(FloatVector.fromArray(VectorMath.F, x, i)).intoArray(out, i);
            }
        }
        return out;
    }

    @Test
    void expIsAccurateOverTheWholeRange() {
        for (boolean scalar : new boolean[] {true, false}) {
            accurate(scalar);
        }
    }

    @Test
    void expEdgesAreExact() {
        for (boolean scalar : new boolean[] {true, false}) {
            edges(scalar);
        }
    }

    @Test
    void scalarExpEqualsTheVectorLanes() {
        java.util.Random rnd = new java.util.Random(7);
        int n = 1 << 16;
        float[] x = new float[n];
        for (int i = 0; i < n; i++) { // past both clamps, with every bit pattern of the mantissa
            x[i] = i % 97 == 0 ? Float.intBitsToFloat(rnd.nextInt()) : (float) (rnd.nextDouble() * 240 - 120);
        }
        float[] v = expOf(x, false);
        float[] s = expOf(x, true);
        for (int i = 0; i < n; i++) {
            if (Float.floatToIntBits(v[i]) != Float.floatToIntBits(s[i])) {
                throw new AssertionError("exp(" + x[i] + "): vector " + v[i] + ", scalar " + s[i]);
            }
        }
    }

    @Test
    void writtenOutExpEqualsTheVectorExp() {
        java.util.Random rnd = new java.util.Random(11);
        int l = VectorMath.L;
        int n = 64 * l;
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = i % 13 == 0 ? Float.NEGATIVE_INFINITY : (float) (rnd.nextDouble() * 240 - 200);
        }
        float m = 3.25f;
        float[] want = new float[n];
        float wantSum = 0f;
        jdk.incubator.vector.FloatVector acc = jdk.incubator.vector.FloatVector.zero(VectorMath.F);
        for (int i = 0; i < n; i += l) {
            jdk.incubator.vector.FloatVector e = VectorMath.exp(FloatVector.fromArray(VectorMath.F, x, i).sub(m));
            e.intoArray(want, i);
            acc = acc.add(e);
        }
        wantSum = VectorMath.sum(acc);
        float[] got = x.clone();
        float sum = VectorMath.expSubInPlace(got, 0, n, m);
        for (int i = 0; i < n; i++) {
            assertEquals(Float.floatToIntBits(want[i]), Float.floatToIntBits(got[i]), "exp(" + x[i] + " - " + m + ")");
        }
        assertEquals(Float.floatToIntBits(wantSum), Float.floatToIntBits(sum), "sum");
    }

    private static void accurate(boolean scalar) {
        int l = VectorMath.L;
        int n = 1 << 20;
        n -= n % l;
        float[] x = new float[n];
        for (int i = 0; i < n; i++) { // a dense sweep over [-87.3, 88.7] (normal results)
            x[i] = -87.3f + (float) (176.0 * i / n);
        }
        float[] y = expOf(x, scalar);
        double worst = 0;
        for (int i = 0; i < n; i++) {
            double want = Math.exp(x[i]);
            worst = Math.max(worst, Math.abs(y[i] - want) / want);
        }
        assertTrue(worst <= 1e-6, (scalar ? "scalar" : "vector") + " exp: worst relative error " + worst);
    }

    private static void edges(boolean scalar) {
        int l = VectorMath.L;
        float[] special = {Float.NEGATIVE_INFINITY, Float.POSITIVE_INFINITY, Float.NaN, -1e30f, 1e30f, -104f, 89f, 0f,
                           -0f, -100f};
        float[] x = new float[Math.max(l, special.length + l - special.length % l)];
        System.arraycopy(special, 0, x, 0, special.length);
        float[] y = expOf(x, scalar);
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
