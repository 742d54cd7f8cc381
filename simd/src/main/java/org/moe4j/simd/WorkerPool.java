package org.moe4j.simd;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;
import org.agrona.concurrent.BackoffIdleStrategy;
import org.agrona.concurrent.IdleStrategy;
import org.moe4j.Moe4jException;

/**
 * A fixed set of worker threads, started once, that run index ranges in parallel.
 *
 * <p>{@link #parallelFor(int, RangeTask)} splits {@code [0, n)} statically into one contiguous chunk per thread;
 * the calling thread runs chunk 0 and the workers the others. Waiting spins, then yields, then parks (Agrona's
 * backoff strategy); publishing a job unparks the workers, so a parked pool wakes at once. Nothing is allocated
 * per call as long as the caller passes a reused task object (a field, not a capturing lambda).
 *
 * <p>A call made while the pool is already running a job (from inside a task, or from a second thread) runs
 * inline on the calling thread, so nesting is safe and never deadlocks.
 */
public final class WorkerPool implements AutoCloseable {
    /** Work over a range of indices; {@code worker} is in {@code [0, threads())} and unique within one job. */
    @FunctionalInterface
    public interface RangeTask {
        void run(int start, int end, int worker);
    }

    private static volatile WorkerPool common;

    private final int threads;
    private final Thread[] workers;
    private final AtomicInteger busy = new AtomicInteger();
    private final AtomicInteger pending = new AtomicInteger();
    private final AtomicReference<Throwable> failure = new AtomicReference<>();
    private volatile long generation;
    private volatile boolean closed;
    // job fields: written before generation is bumped (volatile write), read after it is seen (volatile read)
    private RangeTask task;
    private int n;
    private int chunks;

    /** A pool of {@code threads} threads in all, the caller included ({@code threads - 1} workers are started). */
    public WorkerPool(int threads) {
        if (threads < 1) {
            throw new Moe4jException("WorkerPool: threads must be >= 1, got " + threads);
        }
        this.threads = threads;
        this.workers = new Thread[threads - 1];
        for (int i = 0; i < workers.length; i++) {
            final int id = i + 1;
            Thread t = new Thread(() -> workerLoop(id), "moe4j-worker-" + id);
            t.setDaemon(true);
            workers[i] = t;
            t.start();
        }
    }

    /**
     * The process-wide pool, created on first use with {@code -Dmoe4j.threads=N} threads or, by default, one per
     * available core.
     */
    public static WorkerPool common() {
        WorkerPool p = common;
        if (p == null) {
            synchronized (WorkerPool.class) {
                p = common;
                if (p == null) {
                    p = new WorkerPool(defaultThreads());
                    common = p;
                }
            }
        }
        return p;
    }

    /** {@code -Dmoe4j.threads} or {@code MOE4J_THREADS} if set, else the available cores. */
    public static int defaultThreads() {
        String s = System.getProperty("moe4j.threads", System.getenv("MOE4J_THREADS"));
        if (s != null && !s.isBlank()) {
            try {
                int t = Integer.parseInt(s.trim());
                if (t >= 1) {
                    return t;
                }
            } catch (NumberFormatException e) {
                // fall through to the error below
            }
            throw new Moe4jException("moe4j.threads / MOE4J_THREADS must be a positive integer, got '" + s + "'");
        }
        return Runtime.getRuntime().availableProcessors();
    }

    public int threads() {
        return threads;
    }

    /** Runs {@code task} over {@code [0, n)}, split into one static chunk per thread; returns when all are done. */
    public void parallelFor(int n, RangeTask task) {
        parallelFor(n, threads, task);
    }

    /**
     * Runs {@code task} over {@code [0, n)} in at most {@code maxChunks} static chunks (fewer threads for small
     * jobs); returns when all are done. Exceptions thrown by any chunk are rethrown here.
     */
    public void parallelFor(int n, int maxChunks, RangeTask task) {
        if (n <= 0) {
            return;
        }
        int c = Math.min(Math.min(maxChunks, threads), n);
        if (c <= 1 || closed || !busy.compareAndSet(0, 1)) {
            task.run(0, n, 0);
            return;
        }
        try {
            this.task = task;
            this.n = n;
            this.chunks = c;
            failure.set(null);
            pending.set(c - 1);
            generation = generation + 1; // publish
            for (int i = 0; i < c - 1; i++) {
                LockSupport.unpark(workers[i]);
            }
            Throwable own = null;
            try {
                task.run(0, chunkEnd(0, n, c), 0);
            } catch (Throwable t) {
                own = t;
            }
            IdleStrategy idle = callerIdle;
            idle.reset();
            while (pending.get() > 0) {
                idle.idle();
            }
            this.task = null;
            Throwable t = own != null ? own : failure.get();
            if (t instanceof RuntimeException re) {
                throw re;
            } else if (t instanceof Error err) {
                throw err;
            } else if (t != null) {
                throw new Moe4jException("worker pool: a task threw " + t, t);
            }
        } finally {
            busy.set(0);
        }
    }

    private final IdleStrategy callerIdle = new BackoffIdleStrategy(200, 50, 1_000, 20_000);

    private static int chunkEnd(int chunk, int n, int chunks) {
        return (int) ((long) n * (chunk + 1) / chunks);
    }

    private void workerLoop(int id) {
        IdleStrategy idle = new BackoffIdleStrategy(2_000, 100, 1_000, 200_000);
        long seen = 0;
        while (!closed) {
            long g = generation;
            if (g == seen) {
                idle.idle();
                continue;
            }
            seen = g;
            idle.reset();
            int c = chunks;
            if (id < c) {
                try {
                    task.run(chunkEnd(id - 1, n, c), chunkEnd(id, n, c), id);
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                } finally {
                    pending.decrementAndGet();
                }
            }
        }
    }

    @Override
    public void close() {
        closed = true;
        for (Thread w : workers) {
            LockSupport.unpark(w);
        }
    }
}
