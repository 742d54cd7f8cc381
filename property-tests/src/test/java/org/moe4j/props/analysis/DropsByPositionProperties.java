package org.moe4j.props.analysis;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.engine.analysis.DropsByPosition;
import org.moe4j.engine.routing.Router;
import org.moe4j.engine.routing.Routing;
import org.moe4j.engine.routing.RoutingControl;

/** Drops by position: the count per position against a twin, and against the router's own drop counters. */
class DropsByPositionProperties {
    @Property(tries = 60)
    void countsMatchTheTwin(@ForAll long seed, @ForAll @IntRange(min = 1, max = 300) int T, @ForAll @IntRange(min = 1, max = 8) int E,
                            @ForAll @IntRange(min = 1, max = 3) int k, @ForAll @IntRange(min = 0, max = 2) int shared,
                            @ForAll @IntRange(min = 1, max = 40) int positions) {
        RoutingTables rt = new RoutingTables(seed, T, E, k, shared, positions + 3, 0.1, 0.3);
        DropsByPosition d = new DropsByPosition(positions);
        d.add(rt.keyOf, T, rt.expert, rt.dropped, rt.stride, rt.k);
        for (int p = 0; p < positions; p++) {
            long a = 0, x = 0;
            for (int t = 0; t < T; t++) {
                if (rt.keyOf[t] != p) continue;
                for (int j = 0; j < rt.k; j++) {
                    int s = t * rt.stride + j;
                    if (rt.expert[s] < 0) continue;
                    a++;
                    if (rt.dropped[s]) x++;
                }
            }
            assertEquals(a, d.assigned[p], "assigned at position " + p);
            assertEquals(x, d.dropped[p], "dropped at position " + p);
            assertEquals(a == 0 ? Double.NaN : (double) x / a, d.share(p), 0);
        }
    }

    @Property(tries = 40)
    void routerDropsAreCountedAtTheirPositions(@ForAll long seed, @ForAll @IntRange(min = 1, max = 4) int sequences,
                                               @ForAll @IntRange(min = 2, max = 40) int seq, @ForAll @IntRange(min = 2, max = 8) int E,
                                               @ForAll @IntRange(min = 1, max = 3) int k, @ForAll @IntRange(min = 1, max = 20) int cf10) {
        int T = sequences * seq;
        Router router = new Router(E, 0, false, false, -1, T, sequences);
        Routing r = router.newRouting();
        SplittableRandom rnd = new SplittableRandom(seed);
        float[] logits = new float[T * E];
        for (int i = 0; i < logits.length; i++) logits[i] = (float) (rnd.nextGaussian() * 2 + (i % E == 0 ? 1.5 : 0));
        int[] seqStart = new int[sequences + 1];
        for (int i = 0; i <= sequences; i++) seqStart[i] = i * seq;
        RoutingControl ctl = new RoutingControl().fixedK(Math.min(k, E)).capacityFactor(cf10 / 10.0);
        router.forward(logits, T, seqStart, sequences, null, ctl, r);
        DropsByPosition d = new DropsByPosition(seq);
        d.add(r, new int[T]);
        assertEquals(r.dropCount(), d.totalDropped(), "every dropped slot is counted once");
        for (int p = 0; p < seq; p++) assertEquals(r.dropsAtPosition[p], d.dropped[p], "drops at position " + p);
        long assigned = 0;
        for (long a : d.assigned) assigned += a;
        assertEquals((long) T * r.kRouted(), assigned);
    }
}
