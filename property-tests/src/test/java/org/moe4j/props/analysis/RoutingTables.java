package org.moe4j.props.analysis;

import java.util.SplittableRandom;

/** Random routing tables for the analysis properties: T tokens, k' distinct picks each (some slots empty). */
final class RoutingTables {
    final int T, E, k, stride, keys;
    final int[] keyOf, expert;
    final boolean[] dropped;

    RoutingTables(long seed, int T, int E, int k, int extraSlots, int keys, double emptyRate, double dropRate) {
        this.T = T;
        this.E = E;
        this.k = Math.min(k, E);
        this.stride = this.k + extraSlots;
        this.keys = keys;
        SplittableRandom r = new SplittableRandom(seed);
        keyOf = new int[T];
        expert = new int[T * stride];
        dropped = new boolean[T * stride];
        // skewed ids: small ids are frequent, so some pass the minimum counts
        for (int t = 0; t < T; t++) keyOf[t] = Math.min(keys - 1, (int) Math.floor(keys * Math.pow(r.nextDouble(), 3)));
        for (int t = 0; t < T; t++) {
            int[] perm = new int[E];
            for (int e = 0; e < E; e++) perm[e] = e;
            for (int i = E - 1; i > 0; i--) {
                int j = r.nextInt(i + 1), x = perm[i];
                perm[i] = perm[j];
                perm[j] = x;
            }
            // a token-dependent bias so that shares are not uniform
            int bias = keyOf[t] % E;
            if (r.nextDouble() < 0.5) for (int i = 0; i < E; i++) if (perm[i] == bias) {
                perm[i] = perm[0];
                perm[0] = bias;
            }
            for (int j = 0; j < stride; j++) {
                int s = t * stride + j;
                if (j >= this.k) expert[s] = E + j - this.k; // shared-expert slots, not routed
                else expert[s] = r.nextDouble() < emptyRate ? -1 : perm[j];
                dropped[s] = expert[s] >= 0 && r.nextDouble() < dropRate;
            }
        }
    }
}
