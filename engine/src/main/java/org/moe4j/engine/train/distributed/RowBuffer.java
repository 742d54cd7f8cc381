package org.moe4j.engine.train.distributed;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;
import org.moe4j.simd.Tensor;

/**
 * Rows of {@code width} floats for an expert-parallel owner's received rows, whose count is known only once the
 * counts are exchanged: allocated for an expected count, and reallocated (the old memory freed, contents not kept)
 * when a step needs more, to the rows needed plus a quarter, never past {@code maxRows} (every rank sending all its
 * slots to this owner). So its memory follows the most rows actually received, not the worst case; the routing
 * settles within a few steps, after which nothing is allocated. Single-threaded, like the exchange that uses it.
 */
final class RowBuffer implements AutoCloseable {
    private final int width;
    private final long maxRows;
    private Arena arena;
    private MemorySegment segment;
    private long rows;

    RowBuffer(int width, long initialRows, long maxRows) {
        if (width < 1 || initialRows < 0 || maxRows < initialRows)
            throw new Moe4jException("RowBuffer: width " + width + ", " + initialRows + " rows, at most " + maxRows
                    + ": need width >= 1 and 0 <= rows <= max");
        this.width = width;
        this.maxRows = maxRows;
        allocate(initialRows);
    }

    private void allocate(long n) {
        Arena a = Arena.ofShared();
        segment = a.allocate(Math.max(4L, n * width * 4), Tensor.ALIGNMENT);
        if (arena != null) arena.close();
        arena = a;
        rows = n;
    }

    /** The buffer, holding at least {@code need} rows (reallocated, contents lost, when it held fewer). */
    MemorySegment fit(long need) {
        if (need > maxRows)
            throw new Moe4jException("RowBuffer: " + need + " rows, at most " + maxRows + " can arrive");
        if (need > rows) allocate(Math.min(maxRows, need + need / 4));
        return segment;
    }

    /** The buffer as it is (what the last {@link #fit} returned). */
    MemorySegment segment() {
        return segment;
    }

    /** Rows it holds now. */
    long rows() {
        return rows;
    }

    long bytes() {
        return segment.byteSize();
    }

    @Override
    public void close() {
        arena.close();
    }
}
