package org.moe4j.engine.train.distributed;

import static java.lang.foreign.ValueLayout.JAVA_DOUBLE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Locale;
import org.moe4j.Moe4jException;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.routing.RoutingControl;
import org.moe4j.engine.train.Trainer;
import org.moe4j.nativ.mpi.Communicator;

/**
 * Data parallel over a {@link Communicator}: every rank holds the whole model and trains on its share of each global
 * micro-batch (B sequences of the W·B; see {@link RankShards}); what makes W ranks compute what one process computes
 * on the global batch:
 * <ul>
 * <li>gradients summed over the ranks in buckets of {@link #bucketFloats} floats (the optimizer then divides by
 *     W × micro-batches), in place in the model's gradient buffer;</li>
 * <li>routing: the global load balance's expert counts and token count summed over the ranks every micro-batch and
 *     layer, and EMO's sampled pool sizes drawn in the global document order (the {@link RoutingControl.Replicas}
 *     this installs on every layer's control);</li>
 * <li>the weights checked for bit-identity every {@code checkEvery} steps: a 64-bit hash of the parameters,
 *     gathered from every rank; a difference stops the run with {@link ReplicaMismatchException}.</li>
 * </ul>
 * Buffers for the small collectives are native and allocated once; a step allocates nothing.
 */
public final class DataParallel implements Trainer.Replicas, RoutingControl.Replicas, AutoCloseable {
    /** Floats per gradient all-reduce (4 MiB): large enough to run at bandwidth, small enough to pipeline. */
    public static final int DEFAULT_BUCKET_FLOATS = 1 << 20;

    private final Communicator comm;
    private final int rank, ranks, bucketFloats, checkEvery;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment ints, doubles, hashes;
    private MemorySegment params;
    private long paramFloats;
    /** The parameter ranges (element offset, length) every rank holds alike: all of them, or expert parallel's dense. */
    private long[] rangeStart = {0}, rangeLen = {Long.MAX_VALUE};
    private ExpertParallel experts;
    private long bytesReduced, collectives, commNanos;
    /** Overlap: the all-reduce thread and its queue of (offset, count) buckets; see {@link #overlap(boolean)}. */
    private Thread reducer;
    private final Object lock = new Object();
    private long[] qStart, qCount;
    private int qHead, qTail, busy;
    private boolean stopping;
    private Throwable reducerFailure;
    private MemorySegment grads;
    /**
     * This step's overlap: [queuedLow, gradFloats) is queued, [readyLow, gradFloats) is final; gradFloats: the
     * buffer's length.
     */
    private long queuedLow, readyLow, gradFloats;
    private long overlapped, reducerNanos;
    private final OverlapListener listener = new OverlapListener();

    /**
     * @param checkEvery compare the weights' hash across ranks after every this many steps (0: never)
     * @param maxCounts  the most doubles one routing sum carries (experts + 1 of the largest layer)
     */
    public DataParallel(Communicator comm, int bucketFloats, int checkEvery, int maxCounts) {
        if (bucketFloats < 1 || checkEvery < 0 || maxCounts < 1)
            throw new Moe4jException("DataParallel: bucket " + bucketFloats + " floats, check every " + checkEvery
                    + " steps, " + maxCounts + " counts: need bucket >= 1, check >= 0, counts >= 1");
        this.comm = comm;
        this.rank = comm.rank();
        this.ranks = comm.size();
        this.bucketFloats = bucketFloats;
        this.checkEvery = checkEvery;
        ints = arena.allocate(JAVA_INT, Math.max(2, ranks));
        doubles = arena.allocate(JAVA_DOUBLE, Math.max(maxCounts, 8));
        hashes = arena.allocate(JAVA_LONG, ranks);
    }

    /** Installs the routing hooks on every layer of {@code tr} and remembers its parameters for the weight check. */
    public DataParallel attach(MoeTransformer tr) {
        for (int l = 0; l < tr.config().layers(); l++) tr.control(l).replicas(this);
        params = tr.model().params();
        paramFloats = tr.model().layout().total();
        grads = tr.model().grads();
        gradFloats = paramFloats;
        queuedLow = readyLow = gradFloats;
        return this;
    }

    /**
     * Overlaps the gradient all-reduce with the backward pass (call after {@link #attach}; data parallel only, since
     * expert parallel's backward makes its own collective calls on the training thread): a dedicated thread reduces
     * each bucket of {@code bucketFloats} as soon as the layers owning it have finished the step's last backward
     * (the {@link MoeTransformer.GradientListener} the trainer installs), and {@link #reduceGradients} only reduces
     * the rest and waits. The buckets are cut from the top of the buffer down, the same on every rank whatever the
     * timing, and MPI is called by one thread at a time (the training thread makes no MPI call while it waits, and
     * none in a backward), which MPI_THREAD_SERIALIZED allows.
     */
    public DataParallel overlap(boolean on) {
        if (!on || ranks == 1 || reducer != null) return this;
        if (grads == null) throw new Moe4jException("DataParallel: attach(transformer) before overlap");
        if (experts != null) throw new Moe4jException("DataParallel: the all-reduce overlap is for data parallel only");
        int cap = (int) Math.min(Integer.MAX_VALUE - 8, gradFloats / bucketFloats + 2L * 1024 + 8);
        qStart = new long[cap];
        qCount = new long[cap];
        reducer = new Thread(this::reduceLoop, "moe4j-allreduce-rank" + rank);
        reducer.setDaemon(true);
        reducer.start();
        return this;
    }

    @Override
    public MoeTransformer.GradientListener overlap() {
        return reducer == null ? null : listener;
    }

    /** Buckets handed to the all-reduce thread before {@link #reduceGradients} was called (the overlapped ones). */
    public long overlappedBuckets() {
        return overlapped;
    }

    /** Wall time the all-reduce thread spent in collectives, in nanoseconds (overlap only). */
    public long reducerNanos() {
        return reducerNanos;
    }

    private final class OverlapListener implements MoeTransformer.GradientListener {
        @Override
        public void ready(long offset, long count) {
            // ranges arrive from the top of the buffer down: [readyLow, end) is final; queue its full buckets. A
            // range that does not continue it is left for reduceGradients (as is everything below it).
            if (offset + count != readyLow) return;
            readyLow = offset;
            while (queuedLow - readyLow >= bucketFloats) {
                enqueue(queuedLow - bucketFloats, bucketFloats);
                queuedLow -= bucketFloats;
                overlapped++;
            }
        }
    }

    private void enqueue(long start, long count) {
        synchronized (lock) {
            if (qTail - qHead == qStart.length) throw new Moe4jException("DataParallel: all-reduce queue full");
            qStart[qTail % qStart.length] = start;
            qCount[qTail % qStart.length] = count;
            qTail++;
            lock.notifyAll();
        }
    }

    private void reduceLoop() {
        while (true) {
            long start, count;
            synchronized (lock) {
                while (qHead == qTail && !stopping) {
                    try {
                        lock.wait();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        return;
                    }
                }
                if (qHead == qTail) return; // stopping, nothing left
                start = qStart[qHead % qStart.length];
                count = qCount[qHead % qStart.length];
                busy = 1;
            }
            long t0 = System.nanoTime();
            Throwable failed = null;
            try {
                if (reducerFailure == null) comm.allReduceSum(grads, start * 4, count);
            } catch (Throwable t) {
                failed = t;
            }
            synchronized (lock) {
                reducerNanos += System.nanoTime() - t0;
                if (failed != null && reducerFailure == null) reducerFailure = failed;
                bytesReduced += count * 4;
                collectives++;
                qHead++;
                busy = 0;
                lock.notifyAll();
            }
        }
    }

    /**
     * Expert parallel: gradients are summed and weights compared over all ranks for the dense ranges only (each routed
     * expert lives on its owner; the weight check compares it across the replicas owning it, {@link
     * ExpertParallel#checkReplicas}), and {@link ExpertParallel#afterStep} runs after every step.
     */
    public DataParallel experts(ExpertParallel ep) {
        experts = ep;
        rangeStart = ep.denseStarts();
        rangeLen = ep.denseLengths();
        return this;
    }

    public int rank() {
        return rank;
    }

    @Override
    public int ranks() {
        return ranks;
    }

    /** Bytes this rank has handed to all-reduce/all-gather so far (gradients, counts, figures, hashes). */
    public long bytesReduced() {
        return bytesReduced;
    }

    /** Collective calls so far. */
    public long collectives() {
        return collectives;
    }

    /** Wall time spent inside collectives so far (waiting for slower ranks included), in nanoseconds. */
    public long commNanos() {
        return commNanos;
    }

    // ------------------------------------------------------------------------------------------------ gradients

    @Override
    public void reduceGradients(MemorySegment grads, long count) {
        if (ranks == 1) return;
        if (reducer != null) {
            reduceRest(grads, count);
            return;
        }
        long t0 = System.nanoTime();
        for (int r = 0; r < rangeStart.length; r++) {
            long end = Math.min(count, rangeStart[r] + Math.min(rangeLen[r], count));
            for (long o = rangeStart[r]; o < end; o += bucketFloats) {
                long n = Math.min(bucketFloats, end - o);
                comm.allReduceSum(grads, o * 4, n);
                bytesReduced += n * 4;
                collectives++;
            }
        }
        if (experts != null) experts.reduceExpertGradients(grads, bucketFloats); // over the replicas, if any
        commNanos += System.nanoTime() - t0;
    }

    /** Overlap: queues what the listener has not (all of it without a listener this step), then waits for the thread. */
    private void reduceRest(MemorySegment g, long count) {
        if (g != grads || count != gradFloats)
            throw new Moe4jException("DataParallel: overlap reduces the attached model's " + gradFloats + " gradients, got " + count);
        long t0 = System.nanoTime();
        while (queuedLow > 0) {
            long n = Math.min(bucketFloats, queuedLow);
            enqueue(queuedLow - n, n);
            queuedLow -= n;
        }
        Throwable failed;
        synchronized (lock) {
            while (qHead != qTail || busy != 0) {
                try {
                    lock.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new Moe4jException("DataParallel: interrupted while waiting for the gradient all-reduce");
                }
            }
            failed = reducerFailure;
        }
        queuedLow = readyLow = gradFloats;
        commNanos += System.nanoTime() - t0; // the wait the step sees, not the thread's time
        if (failed instanceof RuntimeException e) throw e;
        if (failed instanceof Error e) throw e;
        if (failed != null) throw new Moe4jException("gradient all-reduce failed: " + failed);
    }

    @Override
    public void sum(double[] v, int n) {
        if (ranks == 1) return;
        if (n > doubles.byteSize() / 8) throw new Moe4jException("DataParallel.sum: " + n + " values, room for " + doubles.byteSize() / 8);
        MemorySegment.copy(v, 0, doubles, JAVA_DOUBLE, 0, n);
        long t0 = System.nanoTime();
        comm.allReduceSumDouble(doubles, 0, n);
        commNanos += System.nanoTime() - t0;
        MemorySegment.copy(doubles, JAVA_DOUBLE, 0, v, 0, n);
        bytesReduced += n * 8L;
        collectives++;
    }

    // ------------------------------------------------------------------------------------------------ routing

    @Override
    public void documents(int mine, int[] out) {
        if (ranks == 1) {
            out[0] = out[1] = 0;
            return;
        }
        ints.setAtIndex(JAVA_INT, rank, mine);
        long t0 = System.nanoTime();
        comm.allGather(ints, rank * 4L, 4, ints, 0);
        commNanos += System.nanoTime() - t0;
        bytesReduced += 4;
        collectives++;
        int before = 0, after = 0;
        for (int r = 0; r < ranks; r++) {
            int n = ints.getAtIndex(JAVA_INT, r);
            if (r < rank) before += n;
            else if (r > rank) after += n;
        }
        out[0] = before;
        out[1] = after;
    }

    // ------------------------------------------------------------------------------------------------ weight check

    @Override
    public void afterStep(long step) {
        if (experts != null) experts.afterStep();
        if (checkEvery > 0 && step % checkEvery == 0) checkWeights(step);
    }

    /**
     * Gathers every rank's parameter hash and throws {@link ReplicaMismatchException} (on every rank, with the same
     * text) when any differs from rank 0's; expert parallel: the dense parameters over every rank, then each rank's
     * experts over the replicas owning them.
     */
    public void checkWeights(long step) {
        if (params == null) throw new Moe4jException("DataParallel: attach(transformer) before checking weights");
        long h = 0;
        for (int r = 0; r < rangeStart.length; r++) {
            long o = Math.min(rangeStart[r], paramFloats), n = Math.min(rangeLen[r], paramFloats - o);
            h = h * 31 + hash(params.asSlice(o * 4, n * 4), n);
        }
        hashes.setAtIndex(JAVA_LONG, rank, h);
        comm.allGather(hashes, rank * 8L, 8, hashes, 0);
        collectives++;
        long h0 = hashes.getAtIndex(JAVA_LONG, 0);
        StringBuilder bad = null;
        for (int r = 1; r < ranks; r++) {
            long hr = hashes.getAtIndex(JAVA_LONG, r);
            if (hr != h0) {
                if (bad == null) bad = new StringBuilder();
                bad.append(String.format(Locale.ROOT, " rank %d %016x;", r, hr));
            }
        }
        if (bad != null)
            throw new ReplicaMismatchException(String.format(Locale.ROOT,
                    "after step %d the weights differ across ranks (hash of the %,d parameters: rank 0 %016x;%s); the "
                            + "replicas have diverged, so the run stops here (the last checkpoint is intact; resume from it)",
                    step, dense(), h0, bad));
        if (experts != null) experts.checkReplicas(step);
    }

    /** Parameters the all-rank hash covers. */
    private long dense() {
        long n = 0;
        for (int r = 0; r < rangeStart.length; r++) n += Math.min(rangeLen[r], paramFloats - Math.min(rangeStart[r], paramFloats));
        return n;
    }

    /** A 64-bit hash of {@code n} floats' bits (bit-identical weights hash equal; any flipped bit changes it). */
    static long hash(MemorySegment seg, long n) {
        long h = 0x9E3779B97F4A7C15L ^ n;
        long words = n / 2;
        for (long i = 0; i < words; i++) {
            h ^= seg.getAtIndex(JAVA_LONG, i);
            h *= 0xBF58476D1CE4E5B9L;
            h ^= h >>> 29;
        }
        if ((n & 1) != 0) {
            h ^= Integer.toUnsignedLong(seg.get(JAVA_INT, (n - 1) * 4));
            h *= 0x94D049BB133111EBL;
        }
        return h ^ (h >>> 31);
    }

    @Override
    public void close() {
        if (reducer != null) {
            synchronized (lock) {
                stopping = true;
                lock.notifyAll();
            }
            try {
                reducer.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            reducer = null;
        }
        arena.close();
    }
}
