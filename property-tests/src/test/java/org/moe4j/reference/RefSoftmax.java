package org.moe4j.reference;

/**
 * float64 twin of {@code org.moe4j.simd.Softmax}. x [rows, n]; allowed [rows * n] (null = all): disallowed
 * columns get probability 0; a row with no allowed finite column gets all zeros and logsumexp -inf.
 */
public final class RefSoftmax {
    private RefSoftmax() {
    }

    public static double[] logSumExp(double[] x, int rows, int n, boolean[] allowed) {
        double[] lse = new double[rows];
        for (int r = 0; r < rows; r++) {
            double max = Double.NEGATIVE_INFINITY;
            for (int c = 0; c < n; c++) {
                if (allowed == null || allowed[r * n + c]) {
                    max = Math.max(max, x[r * n + c]);
                }
            }
            if (max == Double.NEGATIVE_INFINITY) {
                lse[r] = Double.NEGATIVE_INFINITY;
                continue;
            }
            double s = 0;
            for (int c = 0; c < n; c++) {
                if (allowed == null || allowed[r * n + c]) {
                    s += Math.exp(x[r * n + c] - max);
                }
            }
            lse[r] = max + Math.log(s);
        }
        return lse;
    }

    public static double[] forward(double[] x, int rows, int n, boolean[] allowed) {
        double[] lse = logSumExp(x, rows, n, allowed);
        double[] y = new double[rows * n];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < n; c++) {
                boolean ok = allowed == null || allowed[r * n + c];
                y[r * n + c] = ok && lse[r] != Double.NEGATIVE_INFINITY ? Math.exp(x[r * n + c] - lse[r]) : 0.0;
            }
        }
        return y;
    }

    /** dx_j = Σ_i dy_i dp_i/dx_j with dp_i/dx_j = p_i (δ_ij - p_j), written as the full Jacobian product. */
    public static double[] backward(double[] p, double[] dy, int rows, int n) {
        double[] dx = new double[rows * n];
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int i = 0; i < n; i++) {
                    double jac = p[r * n + i] * ((i == j ? 1.0 : 0.0) - p[r * n + j]);
                    s += dy[r * n + i] * jac;
                }
                dx[r * n + j] = s;
            }
        }
        return dx;
    }
}
