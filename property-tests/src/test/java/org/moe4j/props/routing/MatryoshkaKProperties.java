package org.moe4j.props.routing;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.moe4j.engine.routing.Router;
import org.moe4j.engine.routing.Routing;
import org.moe4j.engine.routing.RoutingControl;
import org.moe4j.engine.routing.RoutingRng;

/** Matryoshka k': in range, reproducible from the seed, and distributed as stated (loose chi-square, fixed seed). */
class MatryoshkaKProperties {
    static final int E = 10;

    static int[] histogram(RoutingControl ctl, int draws) {
        Router router = new Router(E, 0, true, false, 1, 1, 1);
        Routing r = router.newRouting();
        float[] z = new float[E];
        int[] seq = {0, 1};
        int[] h = new int[E + 1];
        for (int i = 0; i < draws; i++) {
            router.forward(z, 1, seq, 1, null, ctl, r);
            h[r.kRouted()]++;
        }
        return h;
    }

    @Property(tries = 50)
    void kStaysInRangeAndIsReproducible(@ForAll @IntRange(min = 1, max = E) int a, @ForAll @IntRange(min = 1, max = E) int b,
                                        @ForAll long seed, @ForAll boolean power) {
        int lo = Math.min(a, b), hi = Math.max(a, b);
        RoutingControl c1 = new RoutingControl().rng(new RoutingRng(seed));
        RoutingControl c2 = new RoutingControl().rng(new RoutingRng(seed));
        if (power) {
            c1.powerK(lo, hi, 2.0);
            c2.powerK(lo, hi, 2.0);
        } else {
            c1.uniformK(lo, hi);
            c2.uniformK(lo, hi);
        }
        int[] h1 = histogram(c1, 200), h2 = histogram(c2, 200);
        for (int k = 0; k <= E; k++) {
            assertEquals(h1[k], h2[k]);
            if (k < lo || k > hi) assertEquals(0, h1[k], "k' = " + k + " outside [" + lo + ", " + hi + "]");
        }
    }

    static void chiSquare(int[] h, double[] expected, int draws, int lo, int hi) {
        double chi = 0;
        for (int k = lo; k <= hi; k++) {
            double ex = expected[k] * draws;
            chi += (h[k] - ex) * (h[k] - ex) / ex;
        }
        // 5 degrees of freedom: P(chi² > 25) ≈ 1e-4; a wrong distribution (e.g. uniform vs power) gives hundreds
        assertTrue(chi < 25, "chi² = " + chi);
    }

    @Test
    void uniformFrequencies() {
        int draws = 30000;
        int[] h = histogram(new RoutingControl().uniformK(1, 6).rng(new RoutingRng(42)), draws);
        double[] p = new double[E + 1];
        for (int k = 1; k <= 6; k++) p[k] = 1.0 / 6;
        chiSquare(h, p, draws, 1, 6);
    }

    @Test
    void powerFrequencies() {
        int draws = 30000;
        int[] h = histogram(new RoutingControl().powerK(1, 6, 2.0).rng(new RoutingRng(7)), draws);
        double[] p = new double[E + 1];
        double tot = 0;
        for (int k = 1; k <= 6; k++) tot += Math.sqrt(k);
        for (int k = 1; k <= 6; k++) p[k] = Math.sqrt(k) / tot;
        chiSquare(h, p, draws, 1, 6);
        // and it is not uniform
        double[] u = new double[E + 1];
        for (int k = 1; k <= 6; k++) u[k] = 1.0 / 6;
        double chiU = 0;
        for (int k = 1; k <= 6; k++) chiU += (h[k] - u[k] * draws) * (h[k] - u[k] * draws) / (u[k] * draws);
        assertTrue(chiU > 100, "power draws look uniform: chi² vs uniform = " + chiU);
    }
}
