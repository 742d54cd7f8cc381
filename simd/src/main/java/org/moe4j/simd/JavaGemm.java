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
        partTasks = new GemmKernel.Task[pool.threads()];
        for (int i = 0; i < partTasks.length; i++) {
            partTasks[i] = new GemmKernel.Task();
        }
        partStart = new int[pool.threads() + 1];
    }

    /**
     * A JavaGemm of its own on a one-thread pool (no worker threads: every call runs on the calling thread). Its
     * results have the same bits as this one's: the kernel's bits never depend on the thread count.
     */
    @Override
    public Gemm forOneThread() {
        return new JavaGemm(new WorkerPool(1));
    }

    /** Grouped calls: one task per part (a contiguous run of small groups), the part boundaries, the busy flag. */
    private final GemmKernel.Task[] partTasks;
    private final int[] partStart;
    private final GroupTask groupTask = new GroupTask();
    private final AtomicBoolean groupedBusy = new AtomicBoolean();

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

    /**
     * Small groups run whole, one part of consecutive groups per thread (each group on one thread, packing its A
     * once and with no hand-off per group); a group bigger than {@code 1 / (8 * threads)} of the batch's m n k runs
     * as one ordinary call split over every thread, before the others, so one large expert cannot leave a thread
     * idle. Either way a group runs the same kernels over the same K blocks as {@link #sgemm}, whose result does not
     * depend on how it is split (see {@link GemmKernel}): C is bit-identical to one sgemm call per group.
     */
    @Override
    public void sgemmGrouped(GemmGroups gr) {
        int count = gr.count();
        for (int g = 0; g < count; g++) {
            GemmKernel.checkArgs(gr.transA, gr.transB, gr.m[g], gr.n[g], gr.k[g], gr.a, gr.aOff[g], gr.lda, gr.b,
                    gr.bOff[g], gr.ldb, gr.c, gr.cOff[g], gr.ldc);
        }
        int threads = pool.threads();
        if (threads == 1 || count < 2 || !groupedBusy.compareAndSet(false, true)) {
            Gemm.super.sgemmGrouped(gr);
            return;
        }
        try {
            long total = 0;
            for (int g = 0; g < count; g++) {
                total += gr.volume(g);
            }
            long big = total / (8L * threads);
            long small = 0;
            for (int g = 0; g < count; g++) {
                if (gr.volume(g) > big) {
                    gr.runOne(this, g);
                } else {
                    small += gr.volume(g);
                }
            }
            if (small == 0) { // only k == 0 or empty groups left: C = beta C, nothing to spread
                for (int g = 0; g < count; g++) {
                    if (gr.volume(g) <= big) {
                        gr.runOne(this, g);
                    }
                }
                return;
            }
            // part w: the small groups from the first whose running volume reaches small * w / threads
            partStart[0] = 0;
            int w = 1;
            long run = 0;
            for (int g = 0; g < count && w < threads; g++) {
                if (gr.volume(g) > big) {
                    continue;
                }
                while (w < threads && run >= small * w / threads) {
                    partStart[w++] = g;
                }
                run += gr.volume(g);
            }
            while (w <= threads) {
                partStart[w++] = count;
            }
            groupTask.groups = gr;
            groupTask.big = big;
            pool.parallelFor(threads, groupTask);
        } finally {
            groupTask.groups = null;
            groupedBusy.set(false);
        }
    }

    private final class GroupTask implements WorkerPool.RangeTask {
        GemmGroups groups;
        long big;

        @Override
        public void run(int p0, int p1, int worker) {
            GemmGroups gr = groups;
            for (int part = p0; part < p1; part++) {
                GemmKernel.Task task = partTasks[part];
                try {
                    for (int g = partStart[part]; g < partStart[part + 1]; g++) {
                        int m = gr.m[g];
                        int n = gr.n[g];
                        int k = gr.k[g];
                        if (gr.volume(g) > big || m == 0 || n == 0) {
                            continue;
                        }
                        if (k == 0) {
                            GemmKernel.scale(m, n, gr.beta, gr.c, gr.cOff[g], gr.ldc);
                            continue;
                        }
                        task.set(gr.transA, gr.transB, m, n, k, gr.alpha, gr.a, gr.aOff[g], gr.lda, gr.b, gr.bOff[g],
                                gr.ldb, gr.beta, gr.c, gr.cOff[g], gr.ldc, 1);
                        task.run(0, 1, worker);
                    }
                } finally {
                    task.clear();
                }
            }
        }
    }
}
