package org.moe4j.props.analysis;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.engine.analysis.ClusterScores;
import org.moe4j.engine.analysis.Pca;
import org.moe4j.engine.analysis.SphericalKMeans;

/** PCA, spherical k-means and the cluster scores against float64 twins on random (low-rank plus noise) data. */
class ClusteringProperties {
    static float[] data(long seed, int n, int D, int rank) {
        SplittableRandom r = new SplittableRandom(seed);
        double[][] basis = new double[rank][D];
        for (double[] b : basis) for (int j = 0; j < D; j++) b[j] = r.nextGaussian() * (1 + j % 3);
        float[] x = new float[n * D];
        for (int i = 0; i < n; i++) {
            double[] z = new double[rank];
            for (int q = 0; q < rank; q++) z[q] = r.nextGaussian() * (rank - q);
            for (int j = 0; j < D; j++) {
                double v = 0.05 * r.nextGaussian() + 0.3;
                for (int q = 0; q < rank; q++) v += z[q] * basis[q][j];
                x[i * D + j] = (float) v;
            }
        }
        return x;
    }

    /** Twin covariance in float64, straight from the definition. */
    static double[][] covariance(float[] x, int n, int D) {
        double[] mu = new double[D];
        for (int i = 0; i < n; i++) for (int j = 0; j < D; j++) mu[j] += x[i * D + j] / (double) n;
        double[][] c = new double[D][D];
        for (int a = 0; a < D; a++)
            for (int b = 0; b < D; b++) {
                double s = 0;
                for (int i = 0; i < n; i++) s += (x[i * D + a] - mu[a]) * (x[i * D + b] - mu[b]);
                c[a][b] = s / n;
            }
        return c;
    }

    @Property(tries = 40)
    void pcaComponentsAreOrthonormalEigenvectorsOfTheCovariance(@ForAll long seed, @ForAll @IntRange(min = 2, max = 120) int n,
                                                               @ForAll @IntRange(min = 1, max = 16) int D,
                                                               @ForAll @IntRange(min = 1, max = 5) int rank) {
        float[] x = data(seed, n, D, rank);
        Pca p = Pca.fit(x, n, D);
        double[][] c = covariance(x, n, D);
        double trace = 0, sum = 0, scale = 1e-12;
        for (int a = 0; a < D; a++) {
            trace += c[a][a];
            scale = Math.max(scale, Math.abs(c[a][a]));
        }
        for (int i = 0; i < D; i++) {
            sum += p.eigenvalues[i];
            if (i > 0) assertTrue(p.eigenvalues[i] <= p.eigenvalues[i - 1] + 1e-9 * scale, "eigenvalues descend");
            for (int j = 0; j < D; j++) {
                double dot = 0;
                for (int q = 0; q < D; q++) dot += p.components[i][q] * p.components[j][q];
                assertEquals(i == j ? 1 : 0, dot, 1e-9, "components " + i + ", " + j + " are orthonormal");
            }
            for (int a = 0; a < D; a++) { // C v = λ v
                double cv = 0;
                for (int b = 0; b < D; b++) cv += c[a][b] * p.components[i][b];
                assertEquals(p.eigenvalues[i] * p.components[i][a], cv, 1e-8 * scale * D, "C v = λ v, component " + i);
            }
        }
        assertEquals(trace, sum, 1e-8 * scale * D, "the eigenvalues sum to the total variance");
        int m = p.componentsFor(0.95);
        double acc = 0;
        int want = D;
        for (int i = 0; i < D; i++) {
            acc += p.eigenvalues[i];
            if (acc >= 0.95 * sum - 1e-12 * sum) {
                want = i + 1;
                break;
            }
        }
        assertEquals(sum <= 0 ? 1 : want, m);
        float[] y = p.project(x, n, m);
        for (int i = 0; i < n; i++)
            for (int q = 0; q < m; q++) {
                double s = 0;
                for (int j = 0; j < D; j++) s += (x[i * D + j] - p.mean[j]) * p.components[q][j];
                assertEquals(s, y[i * m + q], 1e-4 * (1 + Math.abs(s)));
            }
    }

    @Property(tries = 40)
    void sphericalKMeansEndsAtAFixedPoint(@ForAll long seed, @ForAll @IntRange(min = 1, max = 150) int n,
                                         @ForAll @IntRange(min = 1, max = 8) int m, @ForAll @IntRange(min = 1, max = 12) int k) {
        float[] x = data(seed, n, m, Math.min(3, m));
        SphericalKMeans.normalizeRows(x, n, m);
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int j = 0; j < m; j++) s += (double) x[i * m + j] * x[i * m + j];
            assertTrue(s == 0 || Math.abs(s - 1) < 1e-5, "row " + i + " has unit norm");
        }
        SphericalKMeans.Result r = SphericalKMeans.fit(x, n, m, k, seed, 500);
        assertEquals(Math.min(k, n), r.k());
        int K = r.k();
        float[] c = r.centres();
        if (r.iterations() < 500) { // converged: no row would move, every used centre is its rows' normalised mean
            for (int i = 0; i < n; i++) {
                double own = 0, best = Double.NEGATIVE_INFINITY;
                for (int q = 0; q < K; q++) {
                    double d = 0;
                    for (int j = 0; j < m; j++) d += (double) x[i * m + j] * c[q * m + j];
                    if (q == r.assignment()[i]) own = d;
                    best = Math.max(best, d);
                }
                assertTrue(own >= best - 1e-6, "row " + i + " sits at a centre of largest cosine");
            }
            for (int q = 0; q < K; q++) {
                double[] s = new double[m];
                int members = 0;
                for (int i = 0; i < n; i++)
                    if (r.assignment()[i] == q) {
                        members++;
                        for (int j = 0; j < m; j++) s[j] += x[i * m + j];
                    }
                double norm = 0;
                for (double v : s) norm += v * v;
                if (members == 0 || norm == 0) continue;
                for (int j = 0; j < m; j++) assertEquals(s[j] / Math.sqrt(norm), c[q * m + j], 1e-5, "centre " + q);
            }
        }
    }

    @Property(tries = 60)
    void purityAndCoherenceMatchTheirDefinitions(@ForAll long seed, @ForAll @IntRange(min = 1, max = 200) int n,
                                                 @ForAll @IntRange(min = 1, max = 8) int k, @ForAll @IntRange(min = 1, max = 5) int domains,
                                                 @ForAll @IntRange(min = 1, max = 10) int docs, @ForAll @IntRange(min = 1, max = 6) int minTokens) {
        SplittableRandom r = new SplittableRandom(seed);
        int[] cl = new int[n], dom = new int[n], doc = new int[n];
        for (int i = 0; i < n; i++) {
            cl[i] = r.nextInt(k);
            dom[i] = r.nextInt(domains);
            doc[i] = r.nextInt(docs);
        }
        double[] p = ClusterScores.domainPurity(cl, dom, n, k, domains);
        for (int d = 0; d < domains; d++) { // twin: for each token of d, the share of its cluster of domain d
            double s = 0;
            int nd = 0;
            for (int i = 0; i < n; i++) {
                if (dom[i] != d) continue;
                nd++;
                int same = 0, size = 0;
                for (int j = 0; j < n; j++)
                    if (cl[j] == cl[i]) {
                        size++;
                        if (dom[j] == d) same++;
                    }
                s += (double) same / size;
            }
            assertEquals(nd == 0 ? Double.NaN : s / nd, p[d], 1e-12, "purity of domain " + d);
        }
        double s = 0;
        int counted = 0;
        for (int d = 0; d < docs; d++) {
            int[] per = new int[k];
            int size = 0;
            for (int i = 0; i < n; i++)
                if (doc[i] == d) {
                    per[cl[i]]++;
                    size++;
                }
            if (size < minTokens) continue;
            int best = 0;
            for (int v : per) best = Math.max(best, v);
            s += (double) best / size;
            counted++;
        }
        assertEquals(counted == 0 ? Double.NaN : s / counted, ClusterScores.documentCoherence(cl, doc, n, k, docs, minTokens), 1e-12);
    }
}
