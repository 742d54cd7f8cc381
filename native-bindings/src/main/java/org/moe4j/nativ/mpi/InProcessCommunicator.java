package org.moe4j.nativ.mpi;

import static java.lang.foreign.ValueLayout.JAVA_DOUBLE_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A group of ranks that are threads of one process: what tests use where MPI is absent, and the one-rank
 * communicator of a plain run. {@link #group(int)} makes the size() communicators of one group; each must be used by
 * one thread. Collectives follow MPI's semantics; sums are taken in rank order (0, 1, ...), so every rank gets the
 * bit-identical result, as MPI's reduction algorithms give for a commutative operation.
 *
 * <p>Each collective is: publish this rank's buffers, meet, read the others' buffers, meet again (nobody may reuse
 * a buffer while another rank still reads it), then write the result. {@link #abort} wakes every waiting rank and
 * makes every later call of the group throw, naming the rank that aborted and why.
 */
public final class InProcessCommunicator implements Communicator {
    private final Group g;
    private final int rank;
    private MemorySegment scratch = MemorySegment.NULL;
    private Arena scratchArena;

    private InProcessCommunicator(Group g, int rank) {
        this.g = g;
        this.rank = rank;
    }

    /** The {@code size} communicators of a new group, by rank. */
    public static InProcessCommunicator[] group(int size) {
        if (size < 1) throw new CommunicationException("InProcessCommunicator: group size " + size + " must be >= 1");
        Group g = new Group(size);
        InProcessCommunicator[] out = new InProcessCommunicator[size];
        for (int r = 0; r < size; r++) out[r] = new InProcessCommunicator(g, r);
        return out;
    }

    /** A group of one: every collective is the identity. */
    public static Communicator single() {
        return group(1)[0];
    }

    @Override
    public int rank() {
        return rank;
    }

    @Override
    public int size() {
        return g.size;
    }

    @Override
    public void allReduceSum(MemorySegment buf, long offset, long count) {
        reduce("allReduceSum", buf, offset, count, false);
    }

    @Override
    public void allReduceSumDouble(MemorySegment buf, long offset, long count) {
        reduce("allReduceSumDouble", buf, offset, count, true);
    }

    private void reduce(String call, MemorySegment buf, long offset, long count, boolean dbl) {
        int w = dbl ? 8 : 4;
        check(call, buf, offset, count * w);
        if (g.size == 1) return;
        publish(buf, offset, count * w, null, null);
        meet(call);
        MemorySegment acc = scratch(count * w);
        for (long i = 0; i < count; i++) {
            if (dbl) {
                double s = 0;
                for (int r = 0; r < g.size; r++) s += g.seg[r].get(JAVA_DOUBLE_UNALIGNED, g.off[r] + i * 8);
                acc.set(JAVA_DOUBLE_UNALIGNED, i * 8, s);
            } else {
                float s = 0;
                for (int r = 0; r < g.size; r++) s += g.seg[r].get(JAVA_FLOAT_UNALIGNED, g.off[r] + i * 4);
                acc.set(JAVA_FLOAT_UNALIGNED, i * 4, s);
            }
        }
        meet(call);
        MemorySegment.copy(acc, 0, buf, offset, count * w);
    }

    @Override
    public void allGather(MemorySegment send, long sendOffset, long bytes, MemorySegment recv, long recvOffset) {
        check("allGather", send, sendOffset, bytes);
        check("allGather", recv, recvOffset, bytes * g.size);
        publish(send, sendOffset, bytes, null, null);
        meet("allGather");
        for (int r = 0; r < g.size; r++) MemorySegment.copy(g.seg[r], g.off[r], recv, recvOffset + r * bytes, bytes);
        meet("allGather");
    }

    @Override
    public void allToAllV(MemorySegment send, int[] sendCounts, int[] sendDispls, MemorySegment recv, int[] recvCounts,
                          int[] recvDispls) {
        for (int p = 0; p < g.size; p++) {
            check("allToAllV", send, sendDispls[p], sendCounts[p]);
            check("allToAllV", recv, recvDispls[p], recvCounts[p]);
        }
        publish(send, 0, 0, sendCounts, sendDispls);
        meet("allToAllV");
        for (int p = 0; p < g.size; p++) {
            int n = g.counts[p][rank];
            if (n != recvCounts[p])
                fail("allToAllV on rank " + rank + ": rank " + p + " sends " + n + " bytes, this rank expects " + recvCounts[p]);
            MemorySegment.copy(g.seg[p], g.displs[p][rank], recv, recvDispls[p], n);
        }
        meet("allToAllV");
    }

    @Override
    public void broadcast(MemorySegment buf, long offset, long bytes, int root) {
        if (root < 0 || root >= g.size)
            throw new CommunicationException("broadcast on rank " + rank + ": root " + root + " is not a rank of 0.." + (g.size - 1));
        check("broadcast", buf, offset, bytes);
        publish(buf, offset, bytes, null, null);
        meet("broadcast");
        if (rank != root) MemorySegment.copy(g.seg[root], g.off[root], buf, offset, bytes);
        meet("broadcast");
    }

    @Override
    public Communicator split(int color, int key) {
        if (color < 0) throw new CommunicationException("split on rank " + rank + ": color " + color + " must be >= 0");
        long call;
        // every rank publishes (color, key); all read the same table and build the same membership; the group object
        // of a color is made once, by whichever member comes first, and found by the others under the split's number
        int[] mine = {color, key};
        publish(MemorySegment.NULL, 0, 0, mine, null);
        meet("split");
        int n = 0, myIndex = 0;
        int[] members = new int[g.size];
        for (int r = 0; r < g.size; r++) if (g.counts[r][0] == color) members[n++] = r;
        Integer[] order = new Integer[n];
        for (int i = 0; i < n; i++) order[i] = members[i];
        java.util.Arrays.sort(order, (x, y) -> g.counts[x][1] != g.counts[y][1]
                ? Integer.compare(g.counts[x][1], g.counts[y][1]) : Integer.compare(x, y));
        for (int i = 0; i < n; i++) if (order[i] == rank) myIndex = i;
        Group sub;
        g.lock.lock();
        try {
            call = g.splits;
            sub = g.root.children.computeIfAbsent(call + ":" + g.id + ":" + color,
                    k -> new Group(order.length, g.root));
        } finally {
            g.lock.unlock();
        }
        meet("split");
        g.lock.lock();
        try {
            if (rank == 0) g.splits++;
        } finally {
            g.lock.unlock();
        }
        meet("split"); // every rank has read this split's number before the next split may change it
        return new InProcessCommunicator(sub, myIndex);
    }

    @Override
    public void barrier() {
        meet("barrier");
    }

    @Override
    public void abort(String message, int errorCode) {
        fail("rank " + rank + " of " + g.size + " stopped the job: " + message);
    }

    /**
     * Marks the group and every group split from the same one failed (every waiting and later call throws with
     * {@code why}, as MPI_Abort ends the whole job), then throws it here.
     */
    private void fail(String why) {
        java.util.List<Group> family = new java.util.ArrayList<>();
        family.add(g.root);
        synchronized (g.root.children) {
            family.addAll(g.root.children.values());
        }
        for (Group f : family) {
            f.lock.lock();
            try {
                if (f.aborted == null) f.aborted = why;
                f.met.signalAll();
            } finally {
                f.lock.unlock();
            }
        }
        throw new CommunicationException(why);
    }

    @Override
    public void close() {
        if (scratchArena != null) scratchArena.close();
        scratchArena = null;
        scratch = MemorySegment.NULL;
    }

    private MemorySegment scratch(long bytes) {
        if (scratch.byteSize() < bytes) {
            if (scratchArena != null) scratchArena.close();
            scratchArena = Arena.ofShared(); // other ranks never read it, but it is freed from whichever thread closes
            scratch = scratchArena.allocate(Math.max(bytes, 64), 64);
        }
        return scratch;
    }

    private void publish(MemorySegment seg, long off, long bytes, int[] counts, int[] displs) {
        g.seg[rank] = seg;
        g.off[rank] = off;
        g.counts[rank] = counts;
        g.displs[rank] = displs;
    }

    /** Waits until every rank of the group has arrived (the lock orders the published fields before the reads). */
    private void meet(String call) {
        g.lock.lock();
        try {
            if (g.aborted != null) throw new CommunicationException(call + " on rank " + rank + ": " + g.aborted);
            long gen = g.generation;
            if (++g.arrived == g.size) {
                g.arrived = 0;
                g.generation++;
                g.met.signalAll();
                return;
            }
            while (g.generation == gen && g.aborted == null) g.met.awaitUninterruptibly();
            if (g.generation == gen)
                throw new CommunicationException(call + " on rank " + rank + ": " + g.aborted);
        } finally {
            g.lock.unlock();
        }
    }

    private void check(String call, MemorySegment seg, long offset, long bytes) {
        if (seg == null || offset < 0 || bytes < 0 || offset + bytes > seg.byteSize())
            throw new CommunicationException(call + " on rank " + rank + ": bytes [" + offset + ", " + (offset + bytes)
                    + ") are outside the buffer of " + (seg == null ? 0 : seg.byteSize()) + " bytes");
    }

    private static final class Group {
        final int size;
        final MemorySegment[] seg;
        final long[] off;
        final int[][] counts, displs;
        final ReentrantLock lock = new ReentrantLock();
        final Condition met = lock.newCondition();
        int arrived;
        long generation;
        String aborted;
        /** The group every split descends from (itself for one made by group()), and (in it) every split's group. */
        final Group root;
        final java.util.Map<String, Group> children;
        long splits;
        final long id = IDS.incrementAndGet();
        private static final java.util.concurrent.atomic.AtomicLong IDS = new java.util.concurrent.atomic.AtomicLong();

        Group(int size) {
            this(size, null);
        }

        Group(int size, Group root) {
            this.root = root == null ? this : root;
            this.children = root == null ? java.util.Collections.synchronizedMap(new java.util.HashMap<>()) : null;
            this.size = size;
            seg = new MemorySegment[size];
            off = new long[size];
            counts = new int[size][];
            displs = new int[size][];
        }
    }
}
