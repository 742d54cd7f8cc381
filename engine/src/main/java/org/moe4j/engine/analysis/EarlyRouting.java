package org.moe4j.engine.analysis;

import java.util.SplittableRandom;
import org.moe4j.Moe4jException;

/**
 * Early routing learning (ALGORITHMS.md section 6): how close an earlier token-id table r_v is to the final one.
 * Over the ids the final table saw at least minCount times, weighted by n_v (the final table's occurrences):
 * the share of ids whose top-1 expert is the same, and the mean Jensen–Shannon divergence (base 2, in [0, 1]).
 * The chance line compares the final table with the earlier one whose rows were shuffled among those ids.
 */
public final class EarlyRouting {
    /** agreement in [0, 1], jsd in [0, 1] (bits), ids compared. */
    public record Result(double agreement, double jsd, int ids) {
    }

    private EarlyRouting() {
    }

    /** Compares {@code earlier} with {@code last} row by row. */
    public static Result compare(ExpertCounts earlier, ExpertCounts last, long minCount) {
        return compare(earlier, last, minCount, null);
    }

    /** The chance line: earlier's rows shuffled among the eligible ids with a seeded permutation. */
    public static Result chance(ExpertCounts earlier, ExpertCounts last, long minCount, long seed) {
        int[] ids = eligible(last, minCount);
        int[] perm = ids.clone();
        SplittableRandom r = new SplittableRandom(seed);
        for (int i = perm.length - 1; i > 0; i--) {
            int j = r.nextInt(i + 1);
            int t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        int[] rowOf = new int[last.keys];
        for (int i = 0; i < rowOf.length; i++) rowOf[i] = i;
        for (int i = 0; i < ids.length; i++) rowOf[ids[i]] = perm[i];
        return compare(earlier, last, minCount, rowOf);
    }

    /** The ids the last table saw at least minCount times and routed at least once, ascending. */
    public static int[] eligible(ExpertCounts last, long minCount) {
        int n = 0;
        for (int v = 0; v < last.keys; v++) if (last.eligible(v, minCount) && last.assignments(v) > 0) n++;
        int[] ids = new int[n];
        n = 0;
        for (int v = 0; v < last.keys; v++) if (last.eligible(v, minCount) && last.assignments(v) > 0) ids[n++] = v;
        return ids;
    }

    private static Result compare(ExpertCounts earlier, ExpertCounts last, long minCount, int[] rowOf) {
        if (earlier.keys != last.keys || earlier.experts != last.experts)
            throw new Moe4jException("EarlyRouting: tables of " + earlier.keys + " x " + earlier.experts + " and "
                    + last.keys + " x " + last.experts + " cannot be compared");
        int E = last.experts;
        double agree = 0, jsd = 0, w = 0;
        int n = 0;
        for (int v : eligible(last, minCount)) {
            int u = rowOf == null ? v : rowOf[v];
            long na = earlier.assignments(u), nb = last.assignments(v);
            double weight = last.occurrences[v];
            w += weight;
            n++;
            if (na == 0) { // an id the earlier table never routed: no agreement, maximal divergence
                jsd += weight;
                continue;
            }
            if (earlier.top1(u) == last.top1(v)) agree += weight;
            double js = 0;
            for (int e = 0; e < E; e++) {
                double p = (double) earlier.counts[u * E + e] / na, q = (double) last.counts[v * E + e] / nb;
                double m = 0.5 * (p + q);
                if (p > 0) js += 0.5 * p * Math.log(p / m);
                if (q > 0) js += 0.5 * q * Math.log(q / m);
            }
            jsd += weight * js / Math.log(2);
        }
        return w == 0 ? new Result(Double.NaN, Double.NaN, 0) : new Result(agree / w, jsd / w, n);
    }
}
