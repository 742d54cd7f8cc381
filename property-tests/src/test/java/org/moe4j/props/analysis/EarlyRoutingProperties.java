package org.moe4j.props.analysis;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.engine.analysis.EarlyRouting;
import org.moe4j.engine.analysis.ExpertCounts;

/** Early routing learning: top-1 agreement, JSD and the shuffled-id chance line against a plain twin. */
class EarlyRoutingProperties {
    static ExpertCounts random(SplittableRandom r, int keys, int E, double zeroRows) {
        ExpertCounts c = new ExpertCounts(keys, E);
        for (int v = 0; v < keys; v++) {
            c.occurrences[v] = r.nextInt(30);
            if (r.nextDouble() < zeroRows) continue;
            for (int e = 0; e < E; e++) c.counts[v * E + e] = r.nextDouble() < 0.4 ? 0 : r.nextInt(20);
        }
        return c;
    }

    /** Twin: the definition with explicit probability rows; rowOf maps a final id to the earlier row it is compared with. */
    static double[] twin(ExpertCounts a, ExpertCounts b, long minCount, int[] rowOf) {
        int E = b.experts;
        double agree = 0, jsd = 0, w = 0;
        for (int v = 0; v < b.keys; v++) {
            double nb = 0;
            for (int e = 0; e < E; e++) nb += b.counts[v * E + e];
            if (b.occurrences[v] < minCount || b.occurrences[v] == 0 || nb == 0) continue;
            int u = rowOf[v];
            double na = 0;
            for (int e = 0; e < E; e++) na += a.counts[u * E + e];
            double wt = b.occurrences[v];
            w += wt;
            if (na == 0) {
                jsd += wt;
                continue;
            }
            double[] p = new double[E], q = new double[E];
            int ta = 0, tb = 0;
            for (int e = 0; e < E; e++) {
                p[e] = a.counts[u * E + e] / na;
                q[e] = b.counts[v * E + e] / nb;
                if (p[e] > p[ta]) ta = e;
                if (q[e] > q[tb]) tb = e;
            }
            if (ta == tb) agree += wt;
            double kp = 0, kq = 0;
            for (int e = 0; e < E; e++) {
                double m = (p[e] + q[e]) / 2;
                if (p[e] > 0) kp += p[e] * (Math.log(p[e] / m) / Math.log(2));
                if (q[e] > 0) kq += q[e] * (Math.log(q[e] / m) / Math.log(2));
            }
            jsd += wt * (kp + kq) / 2;
        }
        return w == 0 ? new double[] {Double.NaN, Double.NaN} : new double[] {agree / w, jsd / w};
    }

    static int[] identity(int n) {
        int[] x = new int[n];
        for (int i = 0; i < n; i++) x[i] = i;
        return x;
    }

    @Property(tries = 80)
    void agreementAndDivergenceMatchTheTwin(@ForAll long seed, @ForAll @IntRange(min = 1, max = 40) int keys,
                                            @ForAll @IntRange(min = 1, max = 9) int E, @ForAll @IntRange(min = 0, max = 20) int minCount) {
        SplittableRandom r = new SplittableRandom(seed);
        ExpertCounts a = random(r, keys, E, 0.1), b = random(r, keys, E, 0.1);
        a.occurrences[0] = b.occurrences[0]; // occurrences of the earlier table are not used
        EarlyRouting.Result got = EarlyRouting.compare(a, b, minCount);
        double[] want = twin(a, b, minCount, identity(keys));
        assertEquals(want[0], got.agreement(), 1e-12);
        assertEquals(want[1], got.jsd(), 1e-9);
        if (got.ids() > 0) assertTrue(got.jsd() >= -1e-12 && got.jsd() <= 1 + 1e-12, "JSD in bits lies in [0, 1]: " + got.jsd());
        EarlyRouting.Result self = EarlyRouting.compare(b, b, minCount);
        if (self.ids() > 0) {
            assertEquals(1.0, self.agreement(), 1e-12);
            assertEquals(0.0, self.jsd(), 1e-12);
        }
    }

    @Property(tries = 80)
    void chanceLineIsTheComparisonWithShuffledRows(@ForAll long seed, @ForAll @IntRange(min = 1, max = 40) int keys,
                                                   @ForAll @IntRange(min = 1, max = 9) int E, @ForAll @IntRange(min = 0, max = 20) int minCount) {
        SplittableRandom r = new SplittableRandom(seed);
        ExpertCounts a = random(r, keys, E, 0.1), b = random(r, keys, E, 0.1);
        // the twin's shuffle: Fisher–Yates over the eligible ids with SplittableRandom(seed), as documented
        int[] ids = EarlyRouting.eligible(b, minCount);
        int[] perm = ids.clone();
        SplittableRandom s = new SplittableRandom(seed);
        for (int i = perm.length - 1; i > 0; i--) {
            int j = s.nextInt(i + 1), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        int[] rowOf = identity(keys);
        for (int i = 0; i < ids.length; i++) rowOf[ids[i]] = perm[i];
        EarlyRouting.Result got = EarlyRouting.chance(a, b, minCount, seed);
        double[] want = twin(a, b, minCount, rowOf);
        assertEquals(want[0], got.agreement(), 1e-12);
        assertEquals(want[1], got.jsd(), 1e-9);
        // a shuffle only moves rows among the eligible ids: the same multiset of earlier rows is compared
        int[] sorted = perm.clone();
        java.util.Arrays.sort(sorted);
        assertTrue(java.util.Arrays.equals(sorted, ids));
    }
}
