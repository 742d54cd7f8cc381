package org.moe4j.engine.analysis;

/**
 * Domain x expert usage for one layer: per domain, the mean routed probability of each expert and the share of its
 * tokens that picked the expert among their k' routed picks.
 */
public final class DomainExpertUsage {
    public final int domains, experts;
    /** probSum[d*E + e], picks[d*E + e], tokens[d]. */
    public final double[] probSum;
    public final long[] picks, tokens;

    public DomainExpertUsage(int domains, int experts) {
        this.domains = domains;
        this.experts = experts;
        probSum = new double[domains * experts];
        picks = new long[domains * experts];
        tokens = new long[domains];
    }

    /** T tokens: domain[t], prob[t*probStride + e] (e < E), picks expert[t*stride + j] for j < k (-1 empty). */
    public void add(int[] domain, int T, float[] prob, int probStride, int[] expert, int stride, int k) {
        for (int t = 0; t < T; t++) {
            int d = domain[t];
            tokens[d]++;
            for (int e = 0; e < experts; e++) probSum[d * experts + e] += prob[t * probStride + e];
            for (int j = 0; j < k; j++) {
                int e = expert[t * stride + j];
                if (e >= 0 && e < experts) picks[d * experts + e]++;
            }
        }
    }

    public double meanProb(int d, int e) {
        return tokens[d] == 0 ? Double.NaN : probSum[d * experts + e] / tokens[d];
    }

    public double pickRate(int d, int e) {
        return tokens[d] == 0 ? Double.NaN : (double) picks[d * experts + e] / tokens[d];
    }
}
