package org.moe4j.reference;

/** float64 twin of {@code org.moe4j.simd.RmsNorm}: plain loops, no shared code. x [rows, d], w [d]. */
public final class RefRmsNorm {
    private RefRmsNorm() {
    }

    /** rstd [rows] = 1 / sqrt(mean(x^2) + eps). */
    public static double[] rstd(double[] x, int rows, int d, double eps) {
        double[] r = new double[rows];
        for (int i = 0; i < rows; i++) {
            double ss = 0;
            for (int j = 0; j < d; j++) {
                ss += x[i * d + j] * x[i * d + j];
            }
            r[i] = 1.0 / Math.sqrt(ss / d + eps);
        }
        return r;
    }

    /** y [rows, d] = x * rstd * w. */
    public static double[] forward(double[] x, double[] w, int rows, int d, double eps) {
        double[] r = rstd(x, rows, d, eps);
        double[] y = new double[rows * d];
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < d; j++) {
                y[i * d + j] = x[i * d + j] * r[i] * w[j];
            }
        }
        return y;
    }

    /** Returns {dx [rows, d], dw [d]} for upstream dy: the chain rule written out term by term. */
    public static double[][] backward(double[] dy, double[] x, double[] w, int rows, int d, double eps) {
        double[] r = rstd(x, rows, d, eps);
        double[] dx = new double[rows * d];
        double[] dw = new double[d];
        for (int i = 0; i < rows; i++) {
            // dy/dx_k: y_j = x_j r w_j, dr/dx_k = -r^3 x_k / d
            double dr = 0;
            for (int j = 0; j < d; j++) {
                dr += dy[i * d + j] * x[i * d + j] * w[j];
                dw[j] += dy[i * d + j] * x[i * d + j] * r[i];
            }
            for (int k = 0; k < d; k++) {
                dx[i * d + k] = dy[i * d + k] * w[k] * r[i] + dr * (-r[i] * r[i] * r[i] * x[i * d + k] / d);
            }
        }
        return new double[][] {dx, dw};
    }
}
