package org.moe4j.engine.analysis;

/**
 * How token clusters line up with domains and documents (EMO). Domain purity of domain d: for d's tokens, the mean
 * share of their cluster that is of domain d (chance: d's share of all tokens). Document coherence: over documents
 * with at least minTokens clustered tokens, the mean share of a document's tokens in its most common cluster.
 */
public final class ClusterScores {
    private ClusterScores() {
    }

    /** purity[d] over domains 0..D-1 (NaN for a domain without tokens). */
    public static double[] domainPurity(int[] cluster, int[] domain, int n, int k, int domains) {
        long[] nc = new long[k], ncd = new long[k * domains], nd = new long[domains];
        for (int i = 0; i < n; i++) {
            nc[cluster[i]]++;
            ncd[cluster[i] * domains + domain[i]]++;
            nd[domain[i]]++;
        }
        double[] p = new double[domains];
        for (int d = 0; d < domains; d++) {
            if (nd[d] == 0) {
                p[d] = Double.NaN;
                continue;
            }
            double s = 0;
            for (int c = 0; c < k; c++) if (nc[c] > 0) s += (double) ncd[c * domains + d] * ncd[c * domains + d] / nc[c];
            p[d] = s / nd[d];
        }
        return p;
    }

    /** Mean over documents (ids 0..docs-1) with at least minTokens tokens of max_c share; NaN when none. */
    public static double documentCoherence(int[] cluster, int[] document, int n, int k, int docs, int minTokens) {
        int[] size = new int[docs];
        for (int i = 0; i < n; i++) size[document[i]]++;
        java.util.Map<Long, Integer> per = new java.util.HashMap<>();
        for (int i = 0; i < n; i++) per.merge((long) document[i] * k + cluster[i], 1, Integer::sum);
        int[] best = new int[docs];
        for (var en : per.entrySet()) {
            int d = (int) (en.getKey() / k);
            best[d] = Math.max(best[d], en.getValue());
        }
        double s = 0;
        int counted = 0;
        for (int d = 0; d < docs; d++) {
            if (size[d] < minTokens || size[d] == 0) continue;
            s += (double) best[d] / size[d];
            counted++;
        }
        return counted == 0 ? Double.NaN : s / counted;
    }
}
