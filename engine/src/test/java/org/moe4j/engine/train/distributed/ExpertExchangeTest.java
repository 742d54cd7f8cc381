package org.moe4j.engine.train.distributed;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicReference;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.nativ.mpi.InProcessCommunicator;

/**
 * Expert parallelism's exchange equals local computation: W in-process ranks, each with random expert counts (empty
 * experts and ranks that send nothing included), apply a per-expert function f_e(x) = a_e·x + e to their rows through
 * plan → dispatch → (owner computes f_e on its expert-major block) → combine, and get back exactly what computing
 * f_e locally gives; each owner sees exactly the rows of its own experts, with their counts.
 */
class ExpertExchangeTest {
    static float f(int e, float x) {
        return (1 + e) * x + e;
    }

    @Property(tries = 40)
    void exchangeThenOwnersComputeEqualsLocal(@ForAll @IntRange(min = 1, max = 4) int w,
                                              @ForAll @IntRange(min = 0, max = 6) int extraExperts,
                                              @ForAll @IntRange(min = 1, max = 5) int width,
                                              @ForAll long seed) throws Exception {
        int routed = w + extraExperts, maxRows = 9 * routed * w; // < 10 rows per expert and rank, all may land on one owner
        InProcessCommunicator[] cs = InProcessCommunicator.group(w);
        AtomicReference<Throwable> fail = new AtomicReference<>();
        List<Thread> ts = new ArrayList<>();
        for (int r = 0; r < w; r++) {
            int rank = r;
            Thread t = new Thread(() -> {
                try (Arena a = Arena.ofShared(); ExpertExchange x = new ExpertExchange(cs[rank], routed, maxRows, width)) {
                    SplittableRandom rnd = new SplittableRandom(seed * 31 + rank);
                    int[] offsets = new int[routed + 1];
                    for (int e = 0; e < routed; e++) offsets[e + 1] = offsets[e] + (rnd.nextInt(4) == 0 ? 0 : rnd.nextInt(10));
                    int n = offsets[routed];
                    MemorySegment rows = a.allocate(Math.max(4, 4L * n * width)), back = a.allocate(Math.max(4, 4L * n * width));
                    for (long i = 0; i < (long) n * width; i++) rows.setAtIndex(JAVA_FLOAT, i, rnd.nextInt(1000) - 500);
                    x.plan(offsets);
                    MemorySegment local = a.allocate(Math.max(4, 4L * x.received() * width));
                    x.dispatch(rows, width, local);
                    int[] lo = x.localOffsets();
                    assertEquals(x.received(), lo[x.owned()], "rank " + rank + ": expert-major offsets cover every received row");
                    for (int j = 0; j < x.owned(); j++) {
                        int e = x.firstExpert(rank) + j;
                        for (long i = (long) lo[j] * width; i < (long) lo[j + 1] * width; i++)
                            local.setAtIndex(JAVA_FLOAT, i, f(e, local.getAtIndex(JAVA_FLOAT, i)));
                    }
                    x.combine(local, width, back);
                    for (int e = 0; e < routed; e++)
                        for (long i = (long) offsets[e] * width; i < (long) offsets[e + 1] * width; i++)
                            assertEquals(f(e, rows.getAtIndex(JAVA_FLOAT, i)), back.getAtIndex(JAVA_FLOAT, i),
                                    "rank " + rank + ", expert " + e + ", element " + i);
                } catch (Throwable e) {
                    fail.compareAndSet(null, e);
                    try {
                        cs[rank].abort(String.valueOf(e), 1);
                    } catch (RuntimeException ignored) {
                        // in-process abort throws; the first failure is reported
                    }
                }
            });
            t.start();
            ts.add(t);
        }
        for (Thread t : ts) t.join();
        if (fail.get() instanceof Exception e) throw e;
        if (fail.get() instanceof Error e) throw e;
    }
}
