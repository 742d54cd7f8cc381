package org.moe4j.reference;

/**
 * Float64 twin of {@code org.moe4j.simd.Rope}: rotate-half RoPE, pair {@code (i, i + Dh/2)} rotated by
 * {@code pos * theta^(-2i/Dh)}, every angle computed in double at the point of use (no tables).
 */
public final class RefRope {
    private RefRope() {
    }

    /**
     * In place on rows {@code [rowStart, rowEnd)} of {@code x [rows, heads*dh]}; row r is at position
     * {@code r % seqLen}. {@code inverse} rotates by the negative angle.
     */
    public static void apply(double[] x, int heads, int dh, int seqLen, double theta, int rowStart, int rowEnd,
                             boolean inverse) {
        for (int r = rowStart; r < rowEnd; r++) {
            rotateRow(x, (long) r * heads * dh, heads, dh, r % seqLen, theta, inverse);
        }
    }

    /** One row of {@code heads*dh} values at {@code offset}, at position {@code pos}. */
    public static void rotateRow(double[] x, long offset, int heads, int dh, int pos, double theta, boolean inverse) {
        int half = dh / 2;
        for (int h = 0; h < heads; h++) {
            int base = (int) offset + h * dh;
            for (int i = 0; i < half; i++) {
                double angle = pos / Math.pow(theta, (2.0 * i) / dh);
                if (inverse) {
                    angle = -angle;
                }
                double c = Math.cos(angle);
                double s = Math.sin(angle);
                double a = x[base + i];
                double b = x[base + i + half];
                x[base + i] = a * c - b * s;
                x[base + i + half] = a * s + b * c;
            }
        }
    }
}
