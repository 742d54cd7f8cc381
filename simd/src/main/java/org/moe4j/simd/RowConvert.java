package org.moe4j.simd;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;

/**
 * Converts a strided [rows, cols] matrix between float32 and bf16 into a packed [rows, cols] buffer (row stride
 * cols), one {@link Convert} call per row, rows split over the worker pool for large matrices. The task object and
 * the growable buffers are reused, so a call allocates nothing once the buffers have reached their largest size.
 * Not for concurrent use (one instance per caller; the owners serialise their calls).
 */
final class RowConvert implements WorkerPool.RangeTask {
    /** Below this many elements the caller converts alone: waking the workers costs more. */
    private static final long PARALLEL_MIN = 1L << 15;

    private final WorkerPool pool;
    private boolean toBf16;
    private MemorySegment src, dst;
    private long srcOff;
    private int ld, cols;

    RowConvert(WorkerPool pool) {
        if (pool == null) throw new Moe4jException("RowConvert: pool must not be null");
        this.pool = pool;
    }

    // src f32 [rows, cols] row stride ld -> dst bf16 [rows, cols] packed, round to nearest even
    void f32ToBf16(MemorySegment src, long srcOff, int ld, int rows, int cols, MemorySegment dst) {
        run(true, src, srcOff, ld, rows, cols, dst);
    }

    // src bf16 [rows, cols] row stride ld -> dst f32 [rows, cols] packed, exact
    void bf16ToF32(MemorySegment src, long srcOff, int ld, int rows, int cols, MemorySegment dst) {
        run(false, src, srcOff, ld, rows, cols, dst);
    }

    private void run(boolean toBf16, MemorySegment src, long srcOff, int ld, int rows, int cols, MemorySegment dst) {
        if (rows <= 0 || cols <= 0) return;
        this.toBf16 = toBf16;
        this.src = src;
        this.srcOff = srcOff;
        this.ld = ld;
        this.cols = cols;
        this.dst = dst;
        try {
            pool.parallelFor(rows, (long) rows * cols < PARALLEL_MIN ? 1 : pool.threads(), this);
        } finally {
            this.src = this.dst = null;
        }
    }

    @Override
    public void run(int r0, int r1, int worker) {
        for (int r = r0; r < r1; r++) {
            long s = srcOff + (long) r * ld, d = (long) r * cols;
            if (toBf16) Convert.f32ToBf16(src, s, dst, d, cols);
            else Convert.bf16ToF32(src, s, dst, d, cols);
        }
    }

    /** A native buffer that grows (never shrinks) to the largest size asked for; freed by {@link #close}. */
    static final class Buffer implements AutoCloseable {
        private Arena arena;
        private MemorySegment seg = MemorySegment.NULL;

        /** A segment of at least {@code bytes} bytes (the same one while it is large enough). */
        MemorySegment atLeast(long bytes) {
            if (seg.byteSize() < bytes) {
                Arena next = Arena.ofShared();
                MemorySegment s = next.allocate(Math.max(bytes, 64), 64);
                if (arena != null) arena.close();
                arena = next;
                seg = s;
            }
            return seg;
        }

        @Override
        public void close() {
            if (arena != null) arena.close();
            arena = null;
            seg = MemorySegment.NULL;
        }
    }
}
