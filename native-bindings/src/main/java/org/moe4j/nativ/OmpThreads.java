package org.moe4j.nativ;

import org.moe4j.Moe4jException;

/**
 * Applies one OpenMP thread count to every Java thread that calls into oneDNN. {@code omp_set_num_threads} sets
 * an ICV of the calling thread only, so the first call from each thread sets it (a thread-local int, no allocation
 * after that first call). A count of 0 leaves the OpenMP default ({@code OMP_NUM_THREADS}, else one per CPU).
 * What a thread was last set to is shared by every instance: a thread that calls a one-thread backend (experts run
 * one per thread) and then the engine's two-thread one is set back to two.
 */
final class OmpThreads {
    private final int threads;
    private static final ThreadLocal<int[]> APPLIED = ThreadLocal.withInitial(() -> new int[1]);

    OmpThreads(int threads) {
        if (threads < 0) {
            throw new Moe4jException("oneDNN threads = " + threads + ": must be >= 0 (0: the OpenMP default)");
        }
        this.threads = threads;
    }

    int threads() {
        return threads;
    }

    void applyToCallingThread() {
        if (threads == 0) {
            return;
        }
        int[] cell = APPLIED.get();
        if (cell[0] != threads) {
            OneDnn.setThreadsForCallingThread(threads);
            cell[0] = threads;
        }
    }
}
