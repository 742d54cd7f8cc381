package org.moe4j.engine.analysis;

import org.moe4j.Moe4jException;

/**
 * A routing table: how many routed assignments each key (a token id, or a position) sent to each routed expert,
 * and how often the key occurred. {@code counts[key*E + e]}; the share r_key[e] = counts / assignments of the key
 * (ALGORITHMS.md section 6, token-id specialisation).
 */
public final class ExpertCounts {
    /** Keys (vocabulary size or positions), routed experts E'. */
    public final int keys, experts;
    /** counts[key*E + e]: assignments of the key to expert e. */
    public final long[] counts;
    /** occurrences[key]: tokens with this key. */
    public final long[] occurrences;

    public ExpertCounts(int keys, int experts) {
        if (keys < 1 || experts < 1)
            throw new Moe4jException("ExpertCounts: keys " + keys + ", experts " + experts + ": both must be >= 1");
        this.keys = keys;
        this.experts = experts;
        counts = new long[Math.multiplyExact(keys, experts)];
        occurrences = new long[keys];
    }

    /**
     * Adds T tokens: token t has key keyOf[t] and routed picks expert[t*stride + j] for j < k (-1 = empty slot,
     * experts at or above E are shared ones and not counted).
     */
    public void add(int[] keyOf, int T, int[] expert, int stride, int k) {
        for (int t = 0; t < T; t++) {
            int key = keyOf[t];
            occurrences[key]++;
            for (int j = 0; j < k; j++) {
                int e = expert[t * stride + j];
                if (e >= 0 && e < experts) counts[key * experts + e]++;
            }
        }
    }

    /** Assignments of the key (over all experts). */
    public long assignments(int key) {
        long s = 0;
        for (int e = 0; e < experts; e++) s += counts[key * experts + e];
        return s;
    }

    /** r_key[e]; 0 when the key has no assignment. */
    public double share(int key, int e) {
        long n = assignments(key);
        return n == 0 ? 0 : (double) counts[key * experts + e] / n;
    }

    /** The expert with the largest share (lowest index on ties), -1 when the key has no assignment. */
    public int top1(int key) {
        int best = -1;
        long bc = 0;
        for (int e = 0; e < experts; e++) {
            long c = counts[key * experts + e];
            if (c > bc) {
                bc = c;
                best = e;
            }
        }
        return best;
    }

    /** max_e r_key[e]. */
    public double maxShare(int key) {
        int e = top1(key);
        return e < 0 ? 0 : share(key, e);
    }

    /** The population standard deviation of r_key over the E experts: sqrt(mean_e (r[e] - mean r)^2). */
    public double spread(int key) {
        long n = assignments(key);
        if (n == 0) return 0;
        double mean = 1.0 / experts, ss = 0;
        for (int e = 0; e < experts; e++) {
            double d = (double) counts[key * experts + e] / n - mean;
            ss += d * d;
        }
        return Math.sqrt(ss / experts);
    }

    /** Whether the key occurred at least minCount times. */
    public boolean eligible(int key, long minCount) {
        return occurrences[key] >= minCount && occurrences[key] > 0;
    }

    /** Consistency: sum over eligible keys of n_key * max_e r_key[e], divided by sum of n_key (NaN when none). */
    public double consistency(long minCount) {
        double num = 0, den = 0;
        for (int v = 0; v < keys; v++) {
            if (!eligible(v, minCount) || assignments(v) == 0) continue;
            num += occurrences[v] * maxShare(v);
            den += occurrences[v];
        }
        return den == 0 ? Double.NaN : num / den;
    }

    /** The count-weighted mean spread over eligible keys (NaN when none). */
    public double meanSpread(long minCount) {
        double num = 0, den = 0;
        for (int v = 0; v < keys; v++) {
            if (!eligible(v, minCount) || assignments(v) == 0) continue;
            num += occurrences[v] * spread(v);
            den += occurrences[v];
        }
        return den == 0 ? Double.NaN : num / den;
    }

    /**
     * The n keys that sent the most assignments to expert e (ties: lower key first), as far as they sent any
     * (OpenMoE's "top tokens per expert").
     */
    public int[] topKeys(int e, int n) {
        int[] best = new int[Math.min(n, keys)];
        int size = 0;
        for (int v = 0; v < keys; v++) {
            long c = counts[v * experts + e];
            if (c == 0) continue;
            int i = size < best.length ? size++ : best.length;
            if (i == best.length && c <= counts[best[best.length - 1] * experts + e]) continue;
            if (i == best.length) i = best.length - 1;
            while (i > 0 && counts[best[i - 1] * experts + e] < c) {
                best[i] = best[i - 1];
                i--;
            }
            best[i] = v;
        }
        return java.util.Arrays.copyOf(best, size);
    }
}
