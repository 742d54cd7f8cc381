package org.moe4j.nativ.mpi;

import java.lang.foreign.MemorySegment;

/**
 * The collectives distributed training needs, over a fixed group of ranks (MPI's world communicator, or threads of
 * one process in tests). Every method is collective: each rank of the group calls it, in the same order, with
 * matching sizes; a rank that stops calling stalls the others until {@link #abort} or the launcher ends the job.
 *
 * <p>Buffers are native {@link MemorySegment}s addressed by (segment, byte offset); nothing is copied on the way in
 * or out and no call allocates on the heap. Sizes are element counts ({@code float}, {@code double}) or bytes, as
 * named. A failing call throws {@link CommunicationException} naming the call and the rank.
 */
public interface Communicator extends AutoCloseable {
    /** This process's (or thread's) index in the group, 0 .. size-1. */
    int rank();

    /** Ranks in the group. */
    int size();

    /** {@code buf[offset ..]} holds {@code count} floats; on return each is the sum of that element over the ranks. */
    void allReduceSum(MemorySegment buf, long offset, long count);

    /** As {@link #allReduceSum} for {@code count} doubles (exact for integer counts below 2^53). */
    void allReduceSumDouble(MemorySegment buf, long offset, long count);

    /**
     * Every rank contributes {@code bytes} bytes from {@code send[sendOffset ..]}; on return {@code recv[recvOffset ..]}
     * holds size() blocks of {@code bytes} bytes, in rank order.
     */
    void allGather(MemorySegment send, long sendOffset, long bytes, MemorySegment recv, long recvOffset);

    /**
     * Personalised exchange: this rank sends {@code sendCounts[p]} bytes from {@code send[sendDispls[p] ..]} to rank p
     * and receives {@code recvCounts[p]} bytes from rank p into {@code recv[recvDispls[p] ..]}. {@code recvCounts[p]}
     * must equal what rank p sends here (exchange the counts first, e.g. with {@link #allGather} or an all-to-all-v of
     * one int per rank). Arrays have size() entries.
     */
    void allToAllV(MemorySegment send, int[] sendCounts, int[] sendDispls, MemorySegment recv, int[] recvCounts,
                   int[] recvDispls);

    /** {@code bytes} bytes at {@code buf[offset ..]} of rank {@code root} are copied into the same place on every rank. */
    void broadcast(MemorySegment buf, long offset, long bytes, int root);

    /**
     * Splits the group (MPI_Comm_split): the ranks that pass the same {@code color} (>= 0) form a new group, ranked by
     * {@code key}, then by their rank here. Collective; close the result (collectively) before this one. An abort on
     * any communicator of the process ends the whole job.
     */
    Communicator split(int color, int key);

    /** Returns when every rank has called it. */
    void barrier();

    /**
     * Ends the whole job because this rank cannot go on: the other ranks stop too (MPI_Abort; in-process, their
     * pending and later calls throw). {@code message} is printed once with this rank's number. Does not return for
     * MPI; in-process it throws.
     */
    void abort(String message, int errorCode);

    /** Leaves the group (MPI_Finalize for the world communicator). Collective. */
    @Override
    void close();
}
