package org.moe4j.engine.analysis;

import org.moe4j.engine.routing.Routing;

/**
 * Drops towards the end (OpenMoE): under a capacity factor, the share of the routed assignments at each position
 * of a sequence that passed their expert's capacity. Positions count from the start of each routing group.
 */
public final class DropsByPosition {
    /** assigned[p], dropped[p]: routed (non-empty) slots of tokens at position p, and how many were dropped. */
    public final long[] assigned, dropped;

    public DropsByPosition(int positions) {
        assigned = new long[positions];
        dropped = new long[positions];
    }

    /**
     * Adds one call's slots: token t at position pos[t] has routed slots t*stride + j, j < k (expert -1 = empty).
     * Positions at or past the table's length are ignored.
     */
    public void add(int[] pos, int T, int[] expert, boolean[] drop, int stride, int k) {
        for (int t = 0; t < T; t++) {
            int p = pos[t];
            if (p < 0 || p >= assigned.length) continue;
            for (int j = 0; j < k; j++) {
                int s = t * stride + j;
                if (expert[s] < 0) continue;
                assigned[p]++;
                if (drop[s]) dropped[p]++;
            }
        }
    }

    /** Adds a routing result; positions are the token's offset in its routing group (sequence). */
    public void add(Routing r, int[] posScratch) {
        int T = r.tokens();
        for (int i = 0; i < r.sequences(); i++)
            for (int t = r.seqStart[i]; t < r.seqStart[i + 1]; t++) posScratch[t] = t - r.seqStart[i];
        add(posScratch, T, r.expert, r.dropped, r.kTot(), r.kRouted());
    }

    /** dropped[p] / assigned[p], NaN where nothing was assigned. */
    public double share(int p) {
        return assigned[p] == 0 ? Double.NaN : (double) dropped[p] / assigned[p];
    }

    public long totalDropped() {
        long s = 0;
        for (long d : dropped) s += d;
        return s;
    }
}
