package org.moe4j.simd;

import static org.moe4j.simd.VectorMath.F;
import static org.moe4j.simd.VectorMath.L;
import static org.moe4j.simd.VectorMath.get;
import static org.moe4j.simd.VectorMath.NATIVE;
import static org.moe4j.simd.VectorMath.set;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import jdk.incubator.vector.FloatVector;
import org.moe4j.Moe4jException;

/**
 * Token embedding: gather rows of a table by token id, and the scatter-add backward.
 *
 * <p>Token ids are int32, in a {@link MemorySegment} (token shards, batches) or an {@code int[]}; an id outside
 * [0, V) is an error naming its position and value. Offsets are in elements; positions {@code [p0, p1)}.
 */
public final class Embedding {
    private Embedding() {
    }

    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT_UNALIGNED;

    /** table [V, d], ids [T] (int32) -> out [T, d], out[p] = table[ids[p]]. */
    public static void forward(MemorySegment table, long tabOff, int vocab, MemorySegment ids, long idOff,
                               MemorySegment out, long outOff, int d, int p0, int p1) {
        for (int p = p0; p < p1; p++) {
            int id = checkId(ids.getAtIndex(INT, idOff + p), p, vocab);
            MemorySegment.copy(table, Tensor.FLOAT, (tabOff + (long) id * d) * Float.BYTES, out, Tensor.FLOAT,
                    (outOff + (long) p * d) * Float.BYTES, d);
        }
    }

    /** table [V, d], ids [T] -> out [T, d] (ids on the heap). */
    public static void forward(MemorySegment table, long tabOff, int vocab, int[] ids, MemorySegment out,
                               long outOff, int d, int p0, int p1) {
        for (int p = p0; p < p1; p++) {
            int id = checkId(ids[p], p, vocab);
            MemorySegment.copy(table, Tensor.FLOAT, (tabOff + (long) id * d) * Float.BYTES, out, Tensor.FLOAT,
                    (outOff + (long) p * d) * Float.BYTES, d);
        }
    }

    /**
     * dout [T, d], ids [T] -> dtable [V, d] += scatter: dtable[ids[p], c] += dout[p, c] for c in [c0, c1).
     *
     * <p>Repeated ids make rows collide, so two workers must not run overlapping positions on one dtable. Split
     * the columns instead ({@code [c0, c1)} per worker over all positions), or give each worker its own dtable.
     */
    public static void backward(MemorySegment dout, long dOff, MemorySegment ids, long idOff, MemorySegment dtable,
                                long dtOff, int vocab, int d, int p0, int p1, int c0, int c1) {
        for (int p = p0; p < p1; p++) {
            int id = checkId(ids.getAtIndex(INT, idOff + p), p, vocab);
            addRow(dout, dOff + (long) p * d, dtable, dtOff + (long) id * d, c0, c1);
        }
    }

    /** dout [T, d], ids [T] (heap) -> dtable [V, d] += scatter over columns [c0, c1); see the other overload. */
    public static void backward(MemorySegment dout, long dOff, int[] ids, MemorySegment dtable, long dtOff, int vocab,
                                int d, int p0, int p1, int c0, int c1) {
        for (int p = p0; p < p1; p++) {
            int id = checkId(ids[p], p, vocab);
            addRow(dout, dOff + (long) p * d, dtable, dtOff + (long) id * d, c0, c1);
        }
    }

    // dst[c] += src[c] for c in [c0, c1)
    private static void addRow(MemorySegment src, long s, MemorySegment dst, long t, int c0, int c1) {
        int c = c0;
        for (int b = c0 + F.loopBound(c1 - c0); c < b; c += L) {
            long at = (t + c) * 4L;
            FloatVector sv = FloatVector.fromMemorySegment(F, src, (s + c) * 4L, NATIVE);
            FloatVector.fromMemorySegment(F, dst, at, NATIVE).add(sv).intoMemorySegment(dst, at, NATIVE);
        }
        for (; c < c1; c++) {
            set(dst, t + c, get(dst, t + c) + get(src, s + c));
        }
    }

    private static int checkId(int id, int p, int vocab) {
        if (id < 0 || id >= vocab) {
            throw new Moe4jException("embedding: token id " + id + " at position " + p
                    + " is outside the vocabulary [0, " + vocab + ")");
        }
        return id;
    }
}
