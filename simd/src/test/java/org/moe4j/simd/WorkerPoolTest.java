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
