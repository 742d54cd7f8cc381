package org.moe4j.engine.train.distributed;

import static java.lang.foreign.ValueLayout.JAVA_INT;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;
import org.moe4j.nativ.mpi.Communicator;

/**
 * The row exchange of expert parallelism (docs/DISTRIBUTED.md, "Expert parallel"): routed experts are partitioned
 * over the ranks in contiguous ranges (rank r owns experts {@link #firstExpert(int)} .. firstExpert(r+1) - 1);
 * each rank's slot rows arrive grouped by expert (the router's counting sort, {@code offsets[E+1]}), so they are
 * grouped by owner too. {@link #plan} exchanges the per-expert counts first (an all-to-all-v of ints), then
 * {@link #dispatch} sends every row to its expert's owner (all-to-all-v of rows) and lays the received rows out
 * expert-major ({@link #localOffsets()}: one contiguous block per owned expert, ready for that expert's GEMMs), and
 * {@link #combine} sends result rows back the same way, into the original slot order. The backward pass uses the
 * same plan: dispatch dL/dy rows, combine dL/dx rows.
 *
 * <p>Used by {@link ExpertParallel}, one per layer (the plan of a layer's forward serves its backward); shown equal
 * to local computation by {@code ExpertExchangeTest}. The staging buffer of received rows is a {@link RowBuffer}: sized
 * for {@code initialRows}, grown by a plan that receives more (never past {@code maxRows}); otherwise a plan and an
 * exchange allocate nothing.
 */
public final class ExpertExchange implements AutoCloseable {
    private final Communicator comm;
    private final int rank, ranks, routed, maxRows, maxWidth;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment countsOut, countsIn;
    private final RowBuffer staging;
    private final int[] cSendCounts, cSendDispls, cRecvCounts, cRecvDispls;
    private final int[] sendRows, sendRowStart, recvRows, recvRowStart, sendBytes, sendDispls, recvBytes, recvDispls;
    private final int[] localOffsets;
    /** recvCount[p][j]: rows of owned expert j from rank p; with recvAt[p][j] where they start in staging. */
    private final int[][] recvCount, recvAt;
    private int received;

    /**
     * @param routed   routed experts (partitioned over the ranks)
     * @param maxRows  the most rows a rank sends, and the most it receives, in one exchange
     * @param maxWidth the most floats per row
     */
    public ExpertExchange(Communicator comm, int routed, int maxRows, int maxWidth) {
        this(comm, routed, maxRows, maxRows, maxWidth);
    }

    /**
     * As above, the staging buffer first sized for {@code initialRows} received rows (at most maxRows), grown when a
     * plan receives more.
     */
    public ExpertExchange(Communicator comm, int routed, int initialRows, int maxRows, int maxWidth) {
        if (routed < comm.size() || maxRows < 0 || maxWidth < 1)
            throw new Moe4jException("ExpertExchange: " + routed + " routed experts over " + comm.size() + " ranks, "
                    + maxRows + " rows of " + maxWidth + ": need at least one expert per rank and width >= 1");
        this.comm = comm;
        this.rank = comm.rank();
        this.ranks = comm.size();
        this.routed = routed;
        this.maxRows = maxRows;
        this.maxWidth = maxWidth;
        countsOut = arena.allocate(JAVA_INT, routed);
        countsIn = arena.allocate(JAVA_INT, (long) ranks * (firstExpert(rank + 1) - firstExpert(rank)));
        staging = new RowBuffer(maxWidth, Math.min(Math.max(initialRows, 0), maxRows), maxRows);
        cSendCounts = new int[ranks];
        cSendDispls = new int[ranks];
        cRecvCounts = new int[ranks];
        cRecvDispls = new int[ranks];
        sendRows = new int[ranks];
        sendRowStart = new int[ranks];
        recvRows = new int[ranks];
        recvRowStart = new int[ranks];
        sendBytes = new int[ranks];
        sendDispls = new int[ranks];
        recvBytes = new int[ranks];
        recvDispls = new int[ranks];
        int owned = owned();
        localOffsets = new int[owned + 1];
        recvCount = new int[ranks][owned];
        recvAt = new int[ranks][owned];
    }

    /** The first routed expert rank r owns (r = ranks gives routed): an even split, the first ranks one more. */
    public int firstExpert(int r) {
        return (int) ((long) r * routed / ranks);
    }

    /** Routed experts this rank owns. */
    public int owned() {
        return firstExpert(rank + 1) - firstExpert(rank);
    }

    /** Rows received by the last plan (the rows this rank's experts process). */
    public int received() {
        return received;
    }

    /** localOffsets[j] .. localOffsets[j+1]: the received rows of owned expert firstExpert(rank) + j, after dispatch. */
    public int[] localOffsets() {
        return localOffsets;
    }

    /**
     * Exchanges the counts: {@code offsets[e] .. offsets[e+1]} are this rank's rows for routed expert e (e < routed;
     * shared experts, if any, follow and are not exchanged). Collective.
     */
    public void plan(int[] offsets) {
        if (offsets[routed] > maxRows)
            throw new Moe4jException("ExpertExchange: " + offsets[routed] + " rows, built for " + maxRows);
        for (int e = 0; e < routed; e++) countsOut.setAtIndex(JAVA_INT, e, offsets[e + 1] - offsets[e]);
        int owned = owned(), in = 0;
        for (int p = 0; p < ranks; p++) {
            int a = firstExpert(p), b = firstExpert(p + 1);
            cSendCounts[p] = 4 * (b - a);
            cSendDispls[p] = 4 * a;
            cRecvCounts[p] = 4 * owned;
            cRecvDispls[p] = 4 * in;
            in += owned;
            sendRowStart[p] = offsets[a];
            sendRows[p] = offsets[b] - offsets[a];
        }
        comm.allToAllV(countsOut, cSendCounts, cSendDispls, countsIn, cRecvCounts, cRecvDispls);
        int rows = 0;
        for (int p = 0; p < ranks; p++) {
            recvRowStart[p] = rows;
            int n = 0;
            for (int j = 0; j < owned; j++) {
                recvCount[p][j] = countsIn.getAtIndex(JAVA_INT, (long) p * owned + j);
                recvAt[p][j] = rows + n;
                n += recvCount[p][j];
            }
            recvRows[p] = n;
            rows += n;
        }
        if (rows > maxRows) throw new Moe4jException("ExpertExchange: rank " + rank + " receives " + rows + " rows, built for " + maxRows);
        staging.fit(rows);
        received = rows;
        localOffsets[0] = 0;
        for (int j = 0; j < owned; j++) {
            int n = 0;
            for (int p = 0; p < ranks; p++) n += recvCount[p][j];
            localOffsets[j + 1] = localOffsets[j] + n;
        }
    }

    /**
     * rows [row offsets[e] .. of expert e, width] -> local [received, width] expert-major (the rows of owned
     * expert j at localOffsets[j] ..; within an expert, by source rank, then in the source's order). Collective.
     */
    public void dispatch(MemorySegment rows, int width, MemorySegment local) {
        bytes(width);
        MemorySegment staging = this.staging.segment();
        comm.allToAllV(rows, sendBytes, sendDispls, staging, recvBytes, recvDispls);
        long w = width * 4L;
        int owned = owned();
        for (int j = 0; j < owned; j++) {
            int at = localOffsets[j];
            for (int p = 0; p < ranks; p++) {
                int n = recvCount[p][j];
                MemorySegment.copy(staging, recvAt[p][j] * w, local, at * w, n * w);
                at += n;
            }
        }
    }

    /** The inverse of {@link #dispatch}: local [received, width] expert-major -> rows, in this rank's original order. */
    public void combine(MemorySegment local, int width, MemorySegment rows) {
        bytes(width);
        long w = width * 4L;
        int owned = owned();
        MemorySegment staging = this.staging.segment();
        for (int j = 0; j < owned; j++) {
            int at = localOffsets[j];
            for (int p = 0; p < ranks; p++) {
                int n = recvCount[p][j];
                MemorySegment.copy(local, at * w, staging, recvAt[p][j] * w, n * w);
                at += n;
            }
        }
        // the reverse exchange: what was received from p goes back to p, into where p sent it from
        comm.allToAllV(staging, recvBytes, recvDispls, rows, sendBytes, sendDispls);
    }

    private void bytes(int width) {
        if (width < 1 || width > maxWidth) throw new Moe4jException("ExpertExchange: width " + width + ", built for 1.." + maxWidth);
        for (int p = 0; p < ranks; p++) {
            sendBytes[p] = sendRows[p] * width * 4;
            sendDispls[p] = sendRowStart[p] * width * 4;
            recvBytes[p] = recvRows[p] * width * 4;
            recvDispls[p] = recvRowStart[p] * width * 4;
        }
    }

    /** Bytes of the staging buffer now. */
    public long stagingBytes() {
        return staging.bytes();
    }

    @Override
    public void close() {
        staging.close();
        arena.close();
    }
}
