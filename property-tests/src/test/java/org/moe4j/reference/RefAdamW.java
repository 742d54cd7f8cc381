package org.moe4j.reference;

/** float64 twin of {@code org.moe4j.simd.AdamW}: one step at step number t (1-based), bias corrections computed here. */
public final class RefAdamW {
    private RefAdamW() {
    }

    /** Updates p, m, v in place. */
    public static void step(double[] p, double[] g, double[] m, double[] v, int t, double lr, double b1, double b2,
                            double eps, double wd, double gradScale) {
        for (int i = 0; i < p.length; i++) {
            double gi = g[i] * gradScale;
            m[i] = b1 * m[i] + (1 - b1) * gi;
            v[i] = b2 * v[i] + (1 - b2) * gi * gi;
            double mhat = m[i] / (1 - Math.pow(b1, t));
            double vhat = v[i] / (1 - Math.pow(b2, t));
            p[i] = p[i] - lr * (mhat / (Math.sqrt(vhat) + eps) + wd * p[i]);
        }
    }

    public static double sumSquares(double[] g) {
        double s = 0;
        for (double x : g) {
            s += x * x;
        }
        return s;
    }
}
