package org.moe4j.engine.analysis;

import java.util.SplittableRandom;
import org.moe4j.Moe4jException;

/**
 * Spherical k-means over unit rows: assign each row to the centre of largest cosine, centre = the normalised sum
 * of its rows; seeded k-means++ start (distance 1 - cos); Lloyd iterations until no row moves.
 */
public final class SphericalKMeans {
    /** assignment[i] in [0, k); centres [k, m] unit rows; iterations run. */
    public record Result(int[] assignment, float[] centres, int k, int iterations) {
    }

    private SphericalKMeans() {
    }

    /** Scales each row of x [n, m] to unit L2 norm in place (zero rows stay zero). */
    public static void normalizeRows(float[] x, int n, int m) {
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int j = 0; j < m; j++) s += (double) x[i * m + j] * x[i * m + j];
            if (s == 0) continue;
            double inv = 1 / Math.sqrt(s);
            for (int j = 0; j < m; j++) x[i * m + j] = (float) (x[i * m + j] * inv);
        }
    }

    /** Clusters unit rows x [n, m] into min(k, n) clusters. */
    public static Result fit(float[] x, int n, int m, int k, long seed, int maxIterations) {
        if (n < 1 || m < 1 || k < 1) throw new Moe4jException("k-means: n " + n + ", m " + m + ", k " + k + ": all must be >= 1");
        k = Math.min(k, n);
        float[] c = new float[k * m];
        SplittableRandom r = new SplittableRandom(seed);
        double[] dist = new double[n];
        int first = r.nextInt(n);
        System.arraycopy(x, first * m, c, 0, m);
        java.util.Arrays.fill(dist, Double.MAX_VALUE);
        for (int ci = 1; ci < k; ci++) {
            double total = 0;
            for (int i = 0; i < n; i++) {
                dist[i] = Math.min(dist[i], Math.max(0, 1 - dot(x, i, c, ci - 1, m)));
                total += dist[i];
            }
            int pick = n - 1;
            if (total > 0) {
                double u = r.nextDouble() * total;
                for (int i = 0; i < n; i++) {
                    u -= dist[i];
                    if (u < 0) {
                        pick = i;
                        break;
                    }
                }
            } else pick = r.nextInt(n);
            System.arraycopy(x, pick * m, c, ci * m, m);
        }
        int[] a = new int[n];
        java.util.Arrays.fill(a, -1);
        double[] sum = new double[k * m];
        int it = 0;
        while (it < maxIterations) {
            it++;
            boolean moved = false;
            for (int i = 0; i < n; i++) {
                int b = nearest(x, i, c, k, m);
                if (b != a[i]) {
                    a[i] = b;
                    moved = true;
                }
            }
            if (!moved) break;
            java.util.Arrays.fill(sum, 0);
            for (int i = 0; i < n; i++) for (int j = 0; j < m; j++) sum[a[i] * m + j] += x[i * m + j];
            for (int ci = 0; ci < k; ci++) {
                double s = 0;
                for (int j = 0; j < m; j++) s += sum[ci * m + j] * sum[ci * m + j];
                if (s == 0) continue; // an empty cluster keeps its centre
                double inv = 1 / Math.sqrt(s);
                for (int j = 0; j < m; j++) c[ci * m + j] = (float) (sum[ci * m + j] * inv);
            }
        }
        return new Result(a, c, k, it);
    }

    /** The centre of largest cosine with row i (lowest index on ties). */
    static int nearest(float[] x, int i, float[] c, int k, int m) {
        int best = 0;
        double bd = Double.NEGATIVE_INFINITY;
        for (int ci = 0; ci < k; ci++) {
            double d = dot(x, i, c, ci, m);
            if (d > bd) {
                bd = d;
                best = ci;
            }
        }
        return best;
    }

    static double dot(float[] x, int i, float[] c, int ci, int m) {
        double s = 0;
        for (int j = 0; j < m; j++) s += (double) x[i * m + j] * c[ci * m + j];
        return s;
    }
}
