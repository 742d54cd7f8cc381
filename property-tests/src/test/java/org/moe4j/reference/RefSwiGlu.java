package org.moe4j.reference;

/** float64 twin of {@code org.moe4j.simd.SwiGlu}: out = a sigmoid(a) * b, element-wise over [n] flat arrays. */
public final class RefSwiGlu {
    private RefSwiGlu() {
    }

    static double sigmoid(double a) {
        return a >= 0 ? 1.0 / (1.0 + Math.exp(-a)) : Math.exp(a) / (1.0 + Math.exp(a));
    }

    public static double[] forward(double[] a, double[] b) {
        double[] out = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            out[i] = a[i] * sigmoid(a[i]) * b[i];
        }
        return out;
    }

    /** Returns {da, db}: d(a s(a))/da = s(a) + a s(a)(1 - s(a)). */
    public static double[][] backward(double[] dout, double[] a, double[] b) {
        double[] da = new double[a.length];
        double[] db = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            double s = sigmoid(a[i]);
            da[i] = dout[i] * b[i] * (s + a[i] * s * (1 - s));
            db[i] = dout[i] * a[i] * s;
        }
        return new double[][] {da, db};
    }
}
