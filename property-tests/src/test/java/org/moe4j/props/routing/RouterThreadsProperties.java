package org.moe4j.props.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Arrays;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.lifecycle.AfterContainer;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.routing.Router;
import org.moe4j.engine.routing.Routing;
import org.moe4j.engine.routing.RoutingControl;
import org.moe4j.engine.routing.RoutingRng;
import org.moe4j.simd.WorkerPool;

/**
 * The Router given a worker pool (per-token softmax, top-k, gates and backward split over threads) against the same
 * Router without one, which {@link RoutingProperties} checks against the float64 twin: on problems big enough to
 * take the threaded path (T up to 1,500, E 16..64, T·E mostly above the 16,384-logit threshold), with pools,
 * subsets, capacity, normalisation and shared experts drawn at random, every output of the forward and of the
 * gate, load-balance (both scopes) and z-loss backward is identical bit for bit on 1, 2 and 3 threads.
 */
class RouterThreadsProperties {
    private static final WorkerPool POOL2 = new WorkerPool(2);
    private static final WorkerPool POOL3 = new WorkerPool(3);

    @AfterContainer
    static void closePools() {
        POOL2.close();
        POOL3.close();
    }

    /** Everything a Router call writes, for one pool. */
    private static final class Run {
        float[] prob, gate, lse, dGates, dLb, dZ;
        int[] expert, perm, offsets;
        boolean[] dropped;
    }

    @Property(tries = 40)
    void threadCountDoesNotChangeBits(@ForAll long seed) {
        Random rnd = new Random(seed);
        int sequences = 1 + rnd.nextInt(3);
        int T = sequences * (100 + rnd.nextInt(400));
        int[] seqStart = new int[sequences + 1];
        for (int i = 1; i <= sequences; i++) seqStart[i] = T * i / sequences;
        int E = 16 + rnd.nextInt(49), s = rnd.nextInt(3), routed = E - s;
        int kp = 1 + rnd.nextInt(Math.min(8, routed));
        int[] tokens = new int[T];
        for (int t = 0; t < T; t++) tokens[t] = rnd.nextInt(20) == 0 ? RoutingProperties.EOS : 2 + rnd.nextInt(50);
        float[] logits = new float[T * E];
        boolean coarse = rnd.nextInt(4) == 0; // exact ties
        for (int i = 0; i < logits.length; i++) logits[i] = coarse ? rnd.nextInt(3) : (float) (rnd.nextGaussian() * 2);
        boolean normalize = rnd.nextBoolean(), overAll = rnd.nextInt(4) == 0;
        double cf = new double[] {0, 0, 1.0, 1.25}[rnd.nextInt(4)];
        int poolMode = rnd.nextInt(3);
        int poolMin = 1 + rnd.nextInt(routed), poolMax = poolMin + rnd.nextInt(routed + 1 - poolMin);
        ExpertSet subset = null;
        if (rnd.nextInt(3) == 0) {
            subset = new ExpertSet(E);
            subset.add(rnd.nextInt(routed));
            for (int e = 0; e < E; e++) if (rnd.nextBoolean()) subset.add(e);
        }
        float[] dGate = new float[T * (kp + s)];
        for (int i = 0; i < dGate.length; i++) dGate[i] = (float) rnd.nextGaussian();
        Run[] runs = new Run[3];
        WorkerPool[] pools = {null, POOL2, POOL3};
        for (int p = 0; p < 3; p++) {
            RoutingControl ctl = new RoutingControl().fixedK(kp).capacityFactor(cf).rng(new RoutingRng(seed));
            if (subset != null) ctl.subset(subset);
            if (poolMode == 1) ctl.sampledPools(poolMin, poolMax);
            else if (poolMode == 2) ctl.fixedPools(poolMin);
            Router router = new Router(E, s, normalize, overAll, RoutingProperties.EOS, T, sequences, pools[p]);
            Routing r = router.newRouting();
            router.forward(logits, T, seqStart, sequences, tokens, ctl, r);
            Run run = new Run();
            run.prob = Arrays.copyOf(r.prob, T * E);
            run.gate = Arrays.copyOf(r.gate, T * r.kTot());
            run.lse = Arrays.copyOf(r.lse, T);
            run.expert = Arrays.copyOf(r.expert, T * r.kTot());
            run.dropped = Arrays.copyOf(r.dropped, T * r.kTot());
            run.perm = Arrays.copyOf(r.perm, r.keptSlots());
            run.offsets = Arrays.copyOf(r.offsets, E + 1);
            run.dGates = new float[T * E];
            Arrays.fill(run.dGates, Float.NaN); // overwritten
            router.backward(r, dGate, run.dGates);
            run.dLb = new float[T * E];
            Arrays.fill(run.dLb, 0.125f); // accumulated into
            router.loadBalanceBackward(r, lbScopeOf(seed), 0.7, run.dLb);
            run.dZ = new float[T * E];
            Arrays.fill(run.dZ, -0.5f);
            router.zLossBackward(r, 0.3, run.dZ);
            runs[p] = run;
        }
        for (int p = 1; p < 3; p++) {
            String on = (p + 1) + " threads vs none";
            Run a = runs[0], b = runs[p];
            assertArrayEquals(a.prob, b.prob, "prob, " + on);
            assertArrayEquals(a.lse, b.lse, "lse, " + on);
            assertArrayEquals(a.expert, b.expert, "expert, " + on);
            assertArrayEquals(a.gate, b.gate, "gate, " + on);
            assertArrayEquals(a.dropped, b.dropped, "dropped, " + on);
            assertArrayEquals(a.perm, b.perm, "perm, " + on);
            assertArrayEquals(a.offsets, b.offsets, "offsets, " + on);
            assertArrayEquals(a.dGates, b.dGates, "gate backward, " + on);
            assertArrayEquals(a.dLb, b.dLb, "load-balance backward, " + on);
            assertArrayEquals(a.dZ, b.dZ, "z-loss backward, " + on);
        }
        assertEquals(T * E, runs[0].prob.length);
    }

    private static LbScope lbScopeOf(long seed) {
        return (seed & 1) == 0 ? LbScope.GLOBAL : LbScope.LOCAL;
    }
}
