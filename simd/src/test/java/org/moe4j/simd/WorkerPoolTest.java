package org.moe4j.simd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.concurrent.atomic.AtomicIntegerArray;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;

class WorkerPoolTest {
    private static final WorkerPool POOL = new WorkerPool(3);

    @Property(tries = 200)
    void everyIndexRunsExactlyOnce(@ForAll @IntRange(min = 0, max = 5000) int n,
                                   @ForAll @IntRange(min = 1, max = 8) int chunks) {
        AtomicIntegerArray hits = new AtomicIntegerArray(Math.max(n, 1));
        POOL.parallelFor(n, chunks, (s, e, w) -> {
            for (int i = s; i < e; i++) {
                hits.incrementAndGet(i);
            }
        });
        for (int i = 0; i < n; i++) {
            assertEquals(1, hits.get(i), "index " + i);
        }
    }

    @Property(tries = 200)
    void everyIndexRunsExactlyOnceInClaimedPieces(@ForAll @IntRange(min = 0, max = 5000) int n,
                                                  @ForAll @IntRange(min = 1, max = 200) int pieces) {
        AtomicIntegerArray hits = new AtomicIntegerArray(Math.max(n, 1));
        AtomicIntegerArray calls = new AtomicIntegerArray(1);
        POOL.parallelForPieces(n, pieces, (s, e, w) -> {
            calls.incrementAndGet(0);
            // a piece is one of the fixed cuts of [0, n)
            int p = Math.min(pieces, n);
            if (p > 1) {
                boolean cut = false;
                for (int i = 0; i < p && !cut; i++) cut = s == (int) ((long) n * i / p) && e == (int) ((long) n * (i + 1) / p);
                if (!cut) throw new AssertionError("[" + s + ", " + e + ") is not a piece of " + n + " in " + p);
            }
            for (int i = s; i < e; i++) {
                hits.incrementAndGet(i);
            }
        });
        for (int i = 0; i < n; i++) {
            assertEquals(1, hits.get(i), "index " + i);
        }
        assertEquals(n == 0 ? 0 : Math.min(pieces, n) <= 1 ? 1 : Math.min(pieces, n), calls.get(0), "pieces run");
    }

    /**
     * Back-to-back jobs of different kinds and chunk counts, so that workers wake late for jobs that are over: no
     * index may run twice or be missed. A stress test: the race it looks for (a worker that took no part in a static
     * job reading the next job's chunk count and running one of its chunks twice, found by reading the pool) has a
     * window of a few instructions, and 20,000 rounds did not hit it in the code before the fix.
     */
    @Test
    void interleavedJobsRunEveryIndexOnce() {
        int n = 64;
        for (int round = 0; round < 20_000; round++) {
            AtomicIntegerArray hits = new AtomicIntegerArray(n);
            WorkerPool.RangeTask t = (s, e, w) -> {
                for (int i = s; i < e; i++) hits.incrementAndGet(i);
            };
            switch (round % 4) {
                case 0 -> POOL.parallelFor(n, 2, t);
                case 1 -> POOL.parallelFor(n, 3, t);
                case 2 -> POOL.parallelForPieces(n, 7, t);
                default -> POOL.parallelForPieces(n, 2, t);
            }
            for (int i = 0; i < n; i++) {
                if (hits.get(i) != 1) throw new AssertionError("round " + round + ": index " + i + " ran " + hits.get(i) + " times");
            }
        }
    }

    @Test
    void pieceExceptionReachesCallerAndThePoolGoesOn() {
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> POOL.parallelForPieces(30, 30, (s, end, w) -> {
            if (s == 17) throw new IllegalStateException("boom in piece 17");
        }));
        assertEquals("boom in piece 17", e.getMessage());
        AtomicIntegerArray hits = new AtomicIntegerArray(30);
        POOL.parallelForPieces(30, 30, (s, end, w) -> {
            for (int i = s; i < end; i++) hits.incrementAndGet(i);
        });
        for (int i = 0; i < 30; i++) assertEquals(1, hits.get(i));
    }

    @Test
    void nestedPiecesRunInline() {
        AtomicIntegerArray hits = new AtomicIntegerArray(100);
        POOL.parallelForPieces(10, 10, (s, e, w) -> {
            for (int i = s; i < e; i++) {
                final int row = i;
                POOL.parallelForPieces(10, 5, (s2, e2, w2) -> {
                    assertEquals(0, s2, "a nested call runs inline, in one piece");
                    assertEquals(10, e2);
                    for (int j = s2; j < e2; j++) hits.incrementAndGet(row * 10 + j);
                });
            }
        });
        for (int i = 0; i < 100; i++) assertEquals(1, hits.get(i));
    }

    @Test
    void nestedCallsRunInline() {
        AtomicIntegerArray hits = new AtomicIntegerArray(100);
        POOL.parallelFor(10, (s, e, w) -> {
            for (int i = s; i < e; i++) {
                final int row = i;
                POOL.parallelFor(10, (s2, e2, w2) -> {
                    for (int j = s2; j < e2; j++) {
                        hits.incrementAndGet(row * 10 + j);
                    }
                });
            }
        });
        for (int i = 0; i < 100; i++) {
            assertEquals(1, hits.get(i));
        }
    }

    @Test
    void workerExceptionReachesCaller() {
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> POOL.parallelFor(3, (s, end, w) -> {
            if (w == 2) {
                throw new IllegalStateException("boom in worker");
            }
        }));
        assertEquals("boom in worker", e.getMessage());
        // the pool still works afterwards
        AtomicIntegerArray hits = new AtomicIntegerArray(4);
        POOL.parallelFor(4, (s, end, w) -> {
            for (int i = s; i < end; i++) {
                hits.incrementAndGet(i);
            }
        });
        assertEquals(4, hits.get(0) + hits.get(1) + hits.get(2) + hits.get(3));
    }
}
