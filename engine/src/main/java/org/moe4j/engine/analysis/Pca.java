package org.moe4j.engine.analysis;

import org.moe4j.Moe4jException;

/**
 * Principal components of n rows of D features: the covariance (float64) of the centred rows, its eigenvectors by
 * cyclic Jacobi rotations (D is small: layers x experts), sorted by eigenvalue, descending.
 */
public final class Pca {
    /** Feature means [D]; components [D][D] row i = the i-th eigenvector; eigenvalues [D] descending. */
    public final double[] mean, eigenvalues;
    public final double[][] components;
    public final int features;

    private Pca(double[] mean, double[] eigenvalues, double[][] components) {
        this.mean = mean;
        this.eigenvalues = eigenvalues;
        this.components = components;
        this.features = mean.length;
    }

    /** x [n, D] row-major. */
    public static Pca fit(float[] x, int n, int D) {
        if (n < 1 || D < 1 || (long) n * D > x.length)
            throw new Moe4jException("PCA: " + n + " rows of " + D + " features do not fit an array of " + x.length);
        double[] mean = new double[D];
        for (int i = 0; i < n; i++) for (int j = 0; j < D; j++) mean[j] += x[i * D + j];
        for (int j = 0; j < D; j++) mean[j] /= n;
        double[][] c = new double[D][D];
        double[] row = new double[D];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < D; j++) row[j] = x[i * D + j] - mean[j];
            for (int a = 0; a < D; a++) {
                double ra = row[a];
                if (ra == 0) continue;
                for (int b = a; b < D; b++) c[a][b] += ra * row[b];
            }
        }
        for (int a = 0; a < D; a++)
            for (int b = a; b < D; b++) {
                c[a][b] /= n;
                c[b][a] = c[a][b];
            }
        double[][] v = new double[D][D];
        double[] w = jacobi(c, v);
        Integer[] order = new Integer[D];
        for (int i = 0; i < D; i++) order[i] = i;
        java.util.Arrays.sort(order, (p, q) -> Double.compare(w[q], w[p]));
        double[] ev = new double[D];
        double[][] comp = new double[D][D];
        for (int i = 0; i < D; i++) {
            ev[i] = Math.max(0, w[order[i]]);
            for (int j = 0; j < D; j++) comp[i][j] = v[j][order[i]];
        }
        return new Pca(mean, ev, comp);
    }

    /** The smallest m whose leading eigenvalues hold at least {@code share} of the total variance (at least 1). */
    public int componentsFor(double share) {
        double total = 0;
        for (double e : eigenvalues) total += e;
        if (total <= 0) return 1;
        double acc = 0;
        for (int i = 0; i < eigenvalues.length; i++) {
            acc += eigenvalues[i];
            if (acc >= share * total - 1e-12 * total) return i + 1;
        }
        return eigenvalues.length;
    }

    /** Projects the centred rows on the first m components: out [n, m]. */
    public float[] project(float[] x, int n, int m) {
        int D = features;
        float[] out = new float[n * m];
        for (int i = 0; i < n; i++)
            for (int c = 0; c < m; c++) {
                double s = 0;
                for (int j = 0; j < D; j++) s += (x[i * D + j] - mean[j]) * components[c][j];
                out[i * m + c] = (float) s;
            }
        return out;
    }

    /** Eigen-decomposition of symmetric a (destroyed): returns eigenvalues, v's columns the eigenvectors. */
    static double[] jacobi(double[][] a, double[][] v) {
        int n = a.length;
        for (int i = 0; i < n; i++) {
            java.util.Arrays.fill(v[i], 0);
            v[i][i] = 1;
        }
        for (int sweep = 0; sweep < 100; sweep++) {
            double off = 0, diag = 0;
            for (int p = 0; p < n; p++) {
                diag += a[p][p] * a[p][p];
                for (int q = p + 1; q < n; q++) off += a[p][q] * a[p][q];
            }
            if (off <= 1e-30 * Math.max(diag, Double.MIN_NORMAL)) break;
            for (int p = 0; p < n; p++)
                for (int q = p + 1; q < n; q++) {
                    if (a[p][q] == 0) continue;
                    // rotation that zeroes a[p][q]: tan(2θ) = 2 a_pq / (a_qq - a_pp)
                    double theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
                    double t = Math.signum(theta) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
                    if (theta == 0) t = 1;
                    double cs = 1 / Math.sqrt(t * t + 1), sn = t * cs;
                    for (int k = 0; k < n; k++) {
                        double akp = a[k][p], akq = a[k][q];
                        a[k][p] = cs * akp - sn * akq;
                        a[k][q] = sn * akp + cs * akq;
                    }
                    for (int k = 0; k < n; k++) {
                        double apk = a[p][k], aqk = a[q][k];
                        a[p][k] = cs * apk - sn * aqk;
                        a[q][k] = sn * apk + cs * aqk;
                    }
                    for (int k = 0; k < n; k++) {
                        double vkp = v[k][p], vkq = v[k][q];
                        v[k][p] = cs * vkp - sn * vkq;
                        v[k][q] = sn * vkp + cs * vkq;
                    }
                }
        }
        double[] w = new double[n];
        for (int i = 0; i < n; i++) w[i] = a[i][i];
        return w;
    }
}
