package org.moe4j.simd;

import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicBoolean;
import org.moe4j.simd.gemm.GemmKernel;
import org.moe4j.Moe4jException;

/**
 * SGEMM on the Java Vector API (see {@link Gemm} for the contract), GotoBLAS/BLIS structure:
 *
 * <pre>
 * for jc in N by NC:            B block [KC, NC] packed into NR-column panels   (L3 / L2)
 *   for pc in K by KC:
 *     for ic in M by MC:        A block [MC, KC] packed into MR-row panels      (L2)
 *       for jr, ir:             micro-kernel MR x NR, register accumulators     (B panel in L1)
 * </pre>
 *
 * The packing step absorbs transA/transB, leading dimensions and offsets, so the micro-kernel sees one layout and
 * zero-padded edge panels (MR = 8, NR = 48, KC = 256, MC = 144, NC = 2016; see {@link GemmKernel}). When B
 * is transposed (stored [n, k], the weight layout) and m <= 32, a skinny path skips packing and takes 4 x 4
 * tiles of dot products straight from the segments. Parallel over a static grid: whole M slices per thread when
 * M is large, N slices when M is small (MoE expert GEMMs with 16..256 rows), each thread packing into its own
 * reused buffers. N slices are cut in whole 16-column vectors rather than whole NR panels, so both threads get the
 * same work (n = 512: 256 + 256, not 240 + 272); a panel narrower than NR runs an 8 x 32 or 8 x 16 kernel that
 * does no FMAs on padding columns past the next multiple of 16. Nothing is
 * allocated on the heap per call in steady state (the buffers are per executing thread; the task object is
 * reused, and only a call that finds it in use by a concurrent call makes a fresh one).
 */
public final class JavaGemm implements Gemm {
    private final WorkerPool pool;
    private final GemmKernel.Task shared = new GemmKernel.Task();
    private final AtomicBoolean sharedBusy = new AtomicBoolean();

    public JavaGemm(WorkerPool pool) {
        if (pool == null) {
            throw new Moe4jException("JavaGemm: pool must not be null");
        }
        this.pool = pool;
    }

    @Override
    public String name() {
        return "java";
    }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                      MemorySegment a, long aOffset, int lda, MemorySegment b, long bOffset, int ldb,
                      float beta, MemorySegment c, long cOffset, int ldc) {
        GemmKernel.checkArgs(transA, transB, m, n, k, a, aOffset, lda, b, bOffset, ldb, c, cOffset, ldc);
        if (m == 0 || n == 0) {
            return;
        }
        if (k == 0) {
            GemmKernel.scale(m, n, beta, c, cOffset, ldc);
            return;
        }
        boolean own = sharedBusy.compareAndSet(false, true);
        GemmKernel.Task task = own ? shared : new GemmKernel.Task();
        try {
            task.set(transA, transB, m, n, k, alpha, a, aOffset, lda, b, bOffset, ldb, beta, c, cOffset, ldc,
                    pool.threads());
            // tiny products are not worth waking the workers: all chunks run on the caller
            int maxChunks = (long) m * n * k < GemmKernel.PARALLEL_MIN_FLOPS ? 1 : task.chunks();
            pool.parallelFor(task.chunks(), maxChunks, task);
        } finally {
            task.clear();
            if (own) {
                sharedBusy.set(false);
            }
        }
    }
}
