package org.moe4j.engine.model;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.engine.routing.Router;
import org.moe4j.engine.routing.Routing;
import org.moe4j.engine.routing.RoutingControl;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * The engine's own dispatch (RowOps.gather by the router's permutation) then combine (gate-weighted scatter-add per
 * token) with unit gates gives every token row back once per kept slot: the identity at k = 1 without drops,
 * k'·x (shared slots included) in general, and x times the kept slots when capacity drops some.
 */
class DispatchProperties {
    static final WorkerPool POOL = new WorkerPool(2);

    @Property(tries = 80)
    void dispatchThenCombineCountsEveryKeptSlotOnce(@ForAll @IntRange(min = 1, max = 40) int T,
                                                   @ForAll @IntRange(min = 2, max = 9) int E,
                                                   @ForAll @IntRange(min = 1, max = 4) int k,
                                                   @ForAll @IntRange(min = 0, max = 1) int shared,
                                                   @ForAll @IntRange(min = 1, max = 19) int d,
                                                   @ForAll boolean capacity, @ForAll long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        int routed = E - shared, kp = Math.min(k, routed);
        float[] logits = new float[T * E];
        for (int i = 0; i < logits.length; i++) logits[i] = (float) r.nextGaussian();
        Router router = new Router(E, shared, false, false, 0, T, 1);
        Routing rt = router.newRouting();
        RoutingControl ctl = new RoutingControl().fixedK(kp).capacityFactor(capacity ? 0.5 : 0);
        router.forward(logits, T, new int[] {0, T}, 1, null, ctl, rt);
        int kTot = rt.kTot(), S = rt.keptSlots();
        try (Arena arena = Arena.ofShared()) {
            MemorySegment x = arena.allocate((long) T * d * 4), xe = arena.allocate((long) Math.max(1, S) * d * 4);
            MemorySegment out = arena.allocate((long) T * d * 4);
            // integers: every sum is exact
            for (int i = 0; i < T * d; i++) x.setAtIndex(Tensor.FLOAT, i, r.nextInt(2001) - 1000);
            RowOps ops = new RowOps(POOL, d, T, arena);
            int[] rowOfSlot = new int[T * kTot];
            Arrays.fill(rowOfSlot, -1);
            for (int i = 0; i < S; i++) rowOfSlot[rt.perm[i]] = i;
            ops.gather(x, xe, rt.perm, kTot, d, S);
            ops.scatterAdd(xe, out, rowOfSlot, kTot, d, T);
            for (int t = 0; t < T; t++) {
                int kept = 0;
                for (int j = 0; j < kTot; j++) if (rt.expert[t * kTot + j] >= 0 && !rt.dropped[t * kTot + j]) kept++;
                for (int c = 0; c < d; c++)
                    assertEquals(kept * x.getAtIndex(Tensor.FLOAT, (long) t * d + c), out.getAtIndex(Tensor.FLOAT, (long) t * d + c), 0f,
                            "token " + t + ", column " + c + ", kept slots " + kept);
            }
        }
    }
}
