package org.moe4j.nativ.mpi;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.io.PrintStream;

/**
 * MPI's world communicator ({@link Mpi#world()}). Every call checks its buffers (native, in bounds, sizes that fit
 * MPI's {@code int} counts) and turns a non-zero MPI return code into a {@link CommunicationException} naming the
 * call, this rank and MPI's error string. Float all-reduces longer than {@code Integer.MAX_VALUE} elements run in
 * chunks; the count arrays of all-to-all-v live in native scratch allocated once.
 */
final class MpiCommunicator implements Communicator {
    private static final int CHUNK = 1 << 30; // elements per MPI_Allreduce call (int count)

    private final Mpi.Bindings b;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment intOut, sc, sd, rc, rd, errBuf, errLen;
    private final int rank, size;
    /** The MPI_Comm handle: MPI_COMM_WORLD, or one made by {@link #split} (world: false; freed on close). */
    private final long comm;
    private final boolean world;
    private boolean closed;

    MpiCommunicator(Mpi.Bindings b) {
        this.b = b;
        this.comm = b.commWorld;
        this.world = true;
        intOut = arena.allocate(JAVA_INT);
        errBuf = arena.allocate(Mpi.MPI_MAX_ERROR_STRING + 1);
        errLen = arena.allocate(JAVA_INT);
        try {
            int rc0 = (int) b.initialized.invokeExact(intOut);
            check("MPI_Initialized", rc0, -1, 0);
            if (intOut.get(JAVA_INT, 0) == 0) {
                MemorySegment provided = arena.allocate(JAVA_INT);
                check("MPI_Init_thread", (int) b.initThread.invokeExact(MemorySegment.NULL, MemorySegment.NULL,
                        Mpi.MPI_THREAD_SERIALIZED, provided), -1, 0);
                if (provided.get(JAVA_INT, 0) < Mpi.MPI_THREAD_SERIALIZED)
                    System.err.println("moe4j: MPI provides thread level " + provided.get(JAVA_INT, 0)
                            + " < SERIALIZED; collectives stay on the calling thread");
            }
            check("MPI_Comm_set_errhandler", (int) b.setErrhandler.invokeExact(b.commWorld, b.errorsReturn), -1, 0);
            check("MPI_Comm_rank", (int) b.commRank.invokeExact(b.commWorld, intOut), -1, 0);
            rank = intOut.get(JAVA_INT, 0);
            check("MPI_Comm_size", (int) b.commSize.invokeExact(b.commWorld, intOut), rank, 0);
            size = intOut.get(JAVA_INT, 0);
        } catch (CommunicationException e) {
            arena.close();
            throw e;
        } catch (Throwable t) {
            arena.close();
            throw new CommunicationException("MPI initialisation failed: " + t, t);
        }
        sc = arena.allocate(JAVA_INT, size);
        sd = arena.allocate(JAVA_INT, size);
        rc = arena.allocate(JAVA_INT, size);
        rd = arena.allocate(JAVA_INT, size);
    }

    /** A communicator of {@code handle}, a new one from MPI_Comm_split. */
    private MpiCommunicator(Mpi.Bindings b, long handle) {
        this.b = b;
        this.comm = handle;
        this.world = false;
        intOut = arena.allocate(JAVA_INT);
        errBuf = arena.allocate(Mpi.MPI_MAX_ERROR_STRING + 1);
        errLen = arena.allocate(JAVA_INT);
        try {
            check("MPI_Comm_set_errhandler", (int) b.setErrhandler.invokeExact(comm, b.errorsReturn), -1, 0);
            check("MPI_Comm_rank", (int) b.commRank.invokeExact(comm, intOut), -1, 0);
            rank = intOut.get(JAVA_INT, 0);
            check("MPI_Comm_size", (int) b.commSize.invokeExact(comm, intOut), rank, 0);
            size = intOut.get(JAVA_INT, 0);
        } catch (CommunicationException e) {
            arena.close();
            throw e;
        } catch (Throwable t) {
            arena.close();
            throw new CommunicationException("MPI sub-communicator set-up failed: " + t, t);
        }
        sc = arena.allocate(JAVA_INT, size);
        sd = arena.allocate(JAVA_INT, size);
        rc = arena.allocate(JAVA_INT, size);
        rd = arena.allocate(JAVA_INT, size);
    }

    @Override
    public Communicator split(int color, int key) {
        String call = "MPI_Comm_split";
        open(call);
        if (color < 0) throw new CommunicationException(call + " on rank " + rank + ": color " + color + " must be >= 0");
        MemorySegment out = arena.allocate(JAVA_LONG);
        int rc0;
        try {
            rc0 = (int) b.commSplit.invokeExact(comm, color, key, out);
        } catch (Throwable t) {
            throw failed(call, t);
        }
        check(call, rc0, rank, size);
        return new MpiCommunicator(b, out.get(JAVA_LONG, 0));
    }

    @Override
    public int rank() {
        return rank;
    }

    @Override
    public int size() {
        return size;
    }

    @Override
    public void allReduceSum(MemorySegment buf, long offset, long count) {
        allReduce("MPI_Allreduce (float sum)", buf, offset, count, 4, b.typeFloat);
    }

    @Override
    public void allReduceSumDouble(MemorySegment buf, long offset, long count) {
        allReduce("MPI_Allreduce (double sum)", buf, offset, count, 8, b.typeDouble);
    }

    private void allReduce(String call, MemorySegment buf, long offset, long count, int width, long type) {
        open(call);
        long base = address(call, buf, offset, count * width);
        for (long done = 0; done < count; done += CHUNK) {
            int n = (int) Math.min(CHUNK, count - done);
            int r;
            try {
                r = (int) b.allreduce.invokeExact(Mpi.MPI_IN_PLACE, base + done * width, n, type, b.opSum, comm);
            } catch (Throwable t) {
                throw failed(call, t);
            }
            check(call, r, rank, size);
        }
    }

    @Override
    public void allGather(MemorySegment send, long sendOffset, long bytes, MemorySegment recv, long recvOffset) {
        String call = "MPI_Allgather";
        open(call);
        int n = intCount(call, "bytes per rank", bytes);
        long s = address(call, send, sendOffset, bytes), r = address(call, recv, recvOffset, bytes * size);
        int rc0;
        try {
            rc0 = (int) b.allgather.invokeExact(s, n, b.typeByte, r, n, b.typeByte, comm);
        } catch (Throwable t) {
            throw failed(call, t);
        }
        check(call, rc0, rank, size);
    }

    @Override
    public void allToAllV(MemorySegment send, int[] sendCounts, int[] sendDispls, MemorySegment recv, int[] recvCounts,
                          int[] recvDispls) {
        String call = "MPI_Alltoallv";
        open(call);
        long sendEnd = extent(call, "send", sendCounts, sendDispls), recvEnd = extent(call, "recv", recvCounts, recvDispls);
        long s = address(call, send, 0, sendEnd), r = address(call, recv, 0, recvEnd);
        for (int p = 0; p < size; p++) {
            sc.setAtIndex(JAVA_INT, p, sendCounts[p]);
            sd.setAtIndex(JAVA_INT, p, sendDispls[p]);
            rc.setAtIndex(JAVA_INT, p, recvCounts[p]);
            rd.setAtIndex(JAVA_INT, p, recvDispls[p]);
        }
        int rc0;
        try {
            rc0 = (int) b.alltoallv.invokeExact(s, sc.address(), sd.address(), b.typeByte, r, rc.address(), rd.address(),
                    b.typeByte, comm);
        } catch (Throwable t) {
            throw failed(call, t);
        }
        check(call, rc0, rank, size);
    }

    @Override
    public void broadcast(MemorySegment buf, long offset, long bytes, int root) {
        String call = "MPI_Bcast";
        open(call);
        if (root < 0 || root >= size)
            throw new CommunicationException(call + " on rank " + rank + ": root " + root + " is not a rank of 0.." + (size - 1));
        int n = intCount(call, "bytes", bytes);
        long a = address(call, buf, offset, bytes);
        int rc0;
        try {
            rc0 = (int) b.bcast.invokeExact(a, n, b.typeByte, root, comm);
        } catch (Throwable t) {
            throw failed(call, t);
        }
        check(call, rc0, rank, size);
    }

    @Override
    public void barrier() {
        open("MPI_Barrier");
        int rc0;
        try {
            rc0 = (int) b.barrier.invokeExact(comm);
        } catch (Throwable t) {
            throw failed("MPI_Barrier", t);
        }
        check("MPI_Barrier", rc0, rank, size);
    }

    @Override
    public void abort(String message, int errorCode) {
        PrintStream err = System.err;
        err.println("moe4j: rank " + rank + " of " + size + " stops the job: " + message);
        err.flush();
        System.out.flush();
        try {
            int ignored = (int) b.abort.invokeExact(b.commWorld, errorCode == 0 ? 1 : errorCode);
        } catch (Throwable t) {
            throw failed("MPI_Abort", t);
        }
        // MPI_Abort does not return on Open MPI; if it ever does, the process must still not go on
        Runtime.getRuntime().halt(errorCode == 0 ? 1 : errorCode);
    }

    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        if (!world) { // MPI_Comm_free: collective over this communicator's ranks
            int rc0;
            try {
                MemorySegment h = arena.allocate(JAVA_LONG);
                h.set(JAVA_LONG, 0, comm);
                rc0 = (int) b.commFree.invokeExact(h);
            } catch (Throwable t) {
                arena.close();
                throw failed("MPI_Comm_free", t);
            }
            try {
                check("MPI_Comm_free", rc0, rank, size);
            } finally {
                arena.close();
            }
            return;
        }
        int rc0;
        try {
            rc0 = (int) b.finalize.invokeExact();
        } catch (Throwable t) {
            throw failed("MPI_Finalize", t);
        } finally {
            Mpi.finalizedWorld();
        }
        check("MPI_Finalize", rc0, rank, size);
        arena.close();
    }

    // ------------------------------------------------------------------------------------------------------ checks

    private void open(String call) {
        if (closed) throw new CommunicationException(call + " on rank " + rank + ": the communicator is closed (MPI finalised)");
    }

    private int intCount(String call, String what, long n) {
        if (n < 0 || n > Integer.MAX_VALUE)
            throw new CommunicationException(call + " on rank " + rank + ": " + what + " = " + n
                    + " does not fit MPI's int count (split the transfer)");
        return (int) n;
    }

    private long extent(String call, String side, int[] counts, int[] displs) {
        if (counts == null || displs == null || counts.length < size || displs.length < size)
            throw new CommunicationException(call + " on rank " + rank + ": " + side + " counts and displacements need "
                    + size + " entries each");
        long end = 0;
        for (int p = 0; p < size; p++) {
            if (counts[p] < 0 || displs[p] < 0)
                throw new CommunicationException(call + " on rank " + rank + ": " + side + " count " + counts[p]
                        + " / displacement " + displs[p] + " for rank " + p + " must be >= 0");
            end = Math.max(end, (long) displs[p] + counts[p]);
        }
        return end;
    }

    private long address(String call, MemorySegment seg, long offset, long bytes) {
        if (seg == null || !seg.isNative())
            throw new CommunicationException(call + " on rank " + rank + ": buffers must be native memory segments");
        if (offset < 0 || bytes < 0 || offset + bytes > seg.byteSize())
            throw new CommunicationException(call + " on rank " + rank + ": bytes [" + offset + ", " + (offset + bytes)
                    + ") are outside the buffer of " + seg.byteSize() + " bytes");
        return seg.address() + offset;
    }

    private CommunicationException failed(String call, Throwable t) {
        return new CommunicationException(call + " on rank " + rank + " of " + size + ": the native call failed: " + t, t);
    }

    private void check(String call, int code, int r, int n) {
        if (code == 0) return;
        String text;
        try {
            int ignored = (int) b.errorString.invokeExact(code, errBuf, errLen);
            text = errBuf.getString(0);
        } catch (Throwable t) {
            text = "(no error string: " + t + ")";
        }
        throw new CommunicationException(call + " failed on rank " + (r < 0 ? "?" : Integer.toString(r))
                + (n > 0 ? " of " + n : "") + ": " + text + " (MPI error " + code + ")");
    }
}
