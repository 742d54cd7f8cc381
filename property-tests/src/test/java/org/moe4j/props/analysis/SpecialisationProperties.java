package org.moe4j.props.analysis;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.engine.analysis.DomainExpertUsage;
import org.moe4j.engine.analysis.ExpertCounts;

/** Token-id (and position) routing tables and domain x expert usage against plain twins over random routing. */
class SpecialisationProperties {
    /** Plain twin: per key a list of picked experts, everything recomputed from its definition. */
    static double[][] shares(RoutingTables rt, int E) {
        double[][] c = new double[rt.keys][E];
        for (int t = 0; t < rt.T; t++)
            for (int j = 0; j < rt.k; j++) {
                int e = rt.expert[t * rt.stride + j];
                if (e >= 0 && e < E) c[rt.keyOf[t]][e]++;
            }
        return c;
    }

    static long[] occurrences(RoutingTables rt) {
        long[] n = new long[rt.keys];
        for (int t = 0; t < rt.T; t++) n[rt.keyOf[t]]++;
        return n;
    }

    @Property(tries = 60)
    void tableStatisticsMatchTheirDefinitions(@ForAll long seed, @ForAll @IntRange(min = 1, max = 400) int T,
                                              @ForAll @IntRange(min = 1, max = 9) int E, @ForAll @IntRange(min = 1, max = 4) int k,
                                              @ForAll @IntRange(min = 0, max = 2) int shared, @ForAll @IntRange(min = 1, max = 40) int keys,
                                              @ForAll @IntRange(min = 1, max = 12) int minCount) {
        RoutingTables rt = new RoutingTables(seed, T, E, k, shared, keys, 0.1, 0);
        ExpertCounts ec = new ExpertCounts(keys, E);
        ec.add(rt.keyOf, T, rt.expert, rt.stride, rt.k);
        double[][] c = shares(rt, E);
        long[] n = occurrences(rt);
        assertArrayEquals(n, ec.occurrences);
        double consNum = 0, consDen = 0, sprNum = 0;
        for (int v = 0; v < keys; v++) {
            double a = 0;
            for (double x : c[v]) a += x;
            double max = 0, mean = 0, ss = 0;
            int top = -1;
            for (int e = 0; e < E; e++) {
                double r = a == 0 ? 0 : c[v][e] / a;
                assertEquals(r, ec.share(v, e), 1e-12, "share of key " + v + ", expert " + e);
                if (c[v][e] > (top < 0 ? 0 : c[v][top])) top = e;
                max = Math.max(max, r);
                mean += r / E;
            }
            for (int e = 0; e < E; e++) {
                double r = a == 0 ? 0 : c[v][e] / a;
                ss += (r - mean) * (r - mean);
            }
            double sd = a == 0 ? 0 : Math.sqrt(ss / E);
            assertEquals(top, ec.top1(v), "top-1 of key " + v);
            assertEquals(max, ec.maxShare(v), 1e-12);
            assertEquals(sd, ec.spread(v), 1e-12, "spread of key " + v);
            if (n[v] >= minCount && a > 0) {
                consNum += n[v] * max;
                sprNum += n[v] * sd;
                consDen += n[v];
            }
        }
        assertEquals(consDen == 0 ? Double.NaN : consNum / consDen, ec.consistency(minCount), 1e-12);
        assertEquals(consDen == 0 ? Double.NaN : sprNum / consDen, ec.meanSpread(minCount), 1e-12);
        for (int e = 0; e < E; e++) {
            final int ex = e;
            List<Integer> order = new ArrayList<>();
            for (int v = 0; v < keys; v++) if (c[v][e] > 0) order.add(v);
            order.sort(Comparator.<Integer>comparingDouble(v -> -c[v][ex]).thenComparingInt(v -> v));
            int[] want = order.stream().limit(5).mapToInt(Integer::intValue).toArray();
            assertArrayEquals(want, ec.topKeys(e, 5), "top keys of expert " + e);
        }
    }

    @Property(tries = 40)
    void domainExpertUsageMatchesItsDefinition(@ForAll long seed, @ForAll @IntRange(min = 1, max = 200) int T,
                                               @ForAll @IntRange(min = 1, max = 8) int E, @ForAll @IntRange(min = 1, max = 3) int k,
                                               @ForAll @IntRange(min = 1, max = 5) int domains) {
        RoutingTables rt = new RoutingTables(seed, T, E, k, 0, domains, 0.1, 0);
        java.util.SplittableRandom r = new java.util.SplittableRandom(seed ^ 7);
        int stride = E + 1; // the router's prob rows are E wide; one extra column checks the stride is honoured
        float[] prob = new float[T * stride];
        for (int i = 0; i < prob.length; i++) prob[i] = (float) r.nextDouble();
        DomainExpertUsage u = new DomainExpertUsage(domains, E);
        u.add(rt.keyOf, T, prob, stride, rt.expert, rt.stride, rt.k);
        for (int d = 0; d < domains; d++)
            for (int e = 0; e < E; e++) {
                double ps = 0, picks = 0, n = 0;
                for (int t = 0; t < T; t++) {
                    if (rt.keyOf[t] != d) continue;
                    n++;
                    ps += prob[t * stride + e];
                    for (int j = 0; j < rt.k; j++) if (rt.expert[t * rt.stride + j] == e) picks++;
                }
                assertEquals(n == 0 ? Double.NaN : ps / n, u.meanProb(d, e), 1e-9);
                assertEquals(n == 0 ? Double.NaN : picks / n, u.pickRate(d, e), 1e-12);
            }
    }
}
