package org.moe4j.simd;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
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
 * <p>{@link #parallelForPieces(int, int, RangeTask)} instead cuts {@code [0, n)} into fixed pieces that the
 * threads claim one at a time (an atomic counter), the caller included: a thread that starts late or is slowed (on
 * a shared machine the other vCPU can be away for a while) then takes fewer pieces instead of holding up the
 * caller, which waits only for pieces already under way. The pieces are the same on every call, but which thread
 * runs which piece is not: only for tasks whose result does not depend on that (each index writes its own outputs,
 * per-worker scratch reused, no per-worker sums).
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
    /**
     * The job's piece counter: (generation mod 2^32) << 32 | pieces << 16 | next piece; a static job sets 0 pieces
     * and its chunk count in the low bits. A thread claims a piece only while the counter names the job it woke
     * for, so a late thread can never run a piece of a job that has finished or read the next job's fields
     * half-written: a job's fields stay unchanged until all its pieces are done, and a claimed piece is done only
     * after it ran. A worker reads a static job's chunk count from the same word, so one that takes no part in the
     * job (id >= chunks) can never mistake the next job's count for this one's and run a chunk twice.
     */
    private final AtomicLong claim = new AtomicLong();
    private final AtomicInteger piecesDone = new AtomicInteger();
    /** The most pieces one {@link #parallelForPieces} call cuts (16 bits of {@link #claim}). */
    public static final int MAX_PIECES = 0x7FFF;
    private volatile boolean closed;
    // job fields: written before generation is bumped (volatile write), read after it is seen (volatile read)
    private RangeTask task;
    private int n;

    /** A pool of {@code threads} threads in all, the caller included ({@code threads - 1} workers are started). */
    public WorkerPool(int threads) {
        if (threads < 1 || threads > MAX_PIECES) {
            throw new Moe4jException("WorkerPool: threads must be in 1.." + MAX_PIECES + ", got " + threads);
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
            pending.set(c - 1);
            publish(task, n, c, 0, c - 1); // no pieces: a static job of c chunks
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
            rethrow(own != null ? own : failure.get());
        } finally {
            busy.set(0);
        }
    }

    /**
     * Runs {@code task} over {@code [0, n)} cut into {@code pieces} fixed, contiguous pieces (at most n and {@link
     * #MAX_PIECES}) that the caller and the workers claim one at a time; returns when every piece is done. Which
     * thread (worker index) runs a piece varies from call to call: see the class comment for the tasks this suits.
     * Exceptions thrown by any piece are rethrown here (the other pieces still run).
     */
    public void parallelForPieces(int n, int pieces, RangeTask task) {
        if (n <= 0) {
            return;
        }
        int p = Math.min(Math.min(pieces, n), MAX_PIECES);
        if (p <= 1 || threads == 1 || closed || !busy.compareAndSet(0, 1)) {
            task.run(0, n, 0);
            return;
        }
        try {
            piecesDone.set(0);
            long g = publish(task, n, 0, p, workers.length);
            runPieces(g, 0);
            IdleStrategy idle = callerIdle;
            idle.reset();
            while (piecesDone.get() < p) {
                idle.idle();
            }
            this.task = null;
            rethrow(failure.get());
        } finally {
            busy.set(0);
        }
    }

    /**
     * Makes the job visible to the workers: its fields, then the piece counter ({@code pieces}, or for a static job
     * its chunk count), then the generation; wakes the first {@code wake} workers. Returns the job's generation.
     */
    private long publish(RangeTask task, int n, int chunks, int pieces, int wake) {
        this.task = task;
        this.n = n;
        failure.set(null);
        long g = generation + 1;
        claim.set(g << 32 | (long) pieces << 16 | chunks);
        generation = g;
        for (int i = 0; i < wake; i++) {
            LockSupport.unpark(workers[i]);
        }
        return g;
    }

    /** Throws what a chunk or piece threw (unchecked as it is, checked wrapped); nothing for null. */
    private static void rethrow(Throwable t) {
        if (t instanceof RuntimeException re) {
            throw re;
        } else if (t instanceof Error err) {
            throw err;
        } else if (t != null) {
            throw new Moe4jException("worker pool: a task threw " + t, t);
        }
    }

    /** Claims and runs pieces of job g until none is left (or the counter names another job). */
    private void runPieces(long g, int worker) {
        long job = g & 0xFFFF_FFFFL;
        while (true) {
            long c = claim.get();
            int p = (int) (c >>> 16 & 0xFFFF), i = (int) (c & 0xFFFF);
            if (c >>> 32 != job || i >= p) {
                return;
            }
            if (!claim.compareAndSet(c, c + 1)) {
                continue;
            }
            // the fields are job g's: written before the counter was set, unchanged until this piece is done
            int size = n;
            try {
                task.run(chunkEnd(i - 1, size, p), chunkEnd(i, size, p), worker);
            } catch (Throwable t) {
                failure.compareAndSet(null, t);
            } finally {
                piecesDone.incrementAndGet();
            }
        }
    }

    private final IdleStrategy callerIdle = new BackoffIdleStrategy(200, 50, 1_000, 20_000);

    /** End of chunk {@code chunk} of n cut into {@code chunks} (chunk -1 ends at 0). */
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
            long pc = claim.get();
            if (pc >>> 32 != (g & 0xFFFF_FFFFL)) {
                continue; // job g claimed pieces and is over (a static job waits for every worker)
            }
            if ((pc >>> 16 & 0xFFFF) > 0) {
                runPieces(g, id);
                continue;
            }
            int c = (int) (pc & 0xFFFF); // this job's: it cannot end before this worker, if it takes part, is done
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
