package org.moe4j.simd;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * Level-1 vector operations on float rows of off-heap segments (offsets in floats): the glue of the MoE dispatch
 * (gate-weighted combine, scatter-add, gate gradients) and of finite checks. Allocation-free.
 */
public final class VectorOps {
    private static final VectorSpecies<Float> F = Simd.FLOAT;
    private static final int L = F.length();
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    private VectorOps() {
    }

    /** Σ a[i] b[i], i in [0, n). */
    public static float dot(MemorySegment a, long aOff, MemorySegment b, long bOff, int n) {
        return VectorMath.dot(a, aOff, b, bOff, n);
    }

    /** Σ a[i]², i in [0, n). */
    public static float sumSquares(MemorySegment a, long aOff, int n) {
        return VectorMath.sumSquares(a, aOff, n);
    }

    /** y[i] += alpha · x[i], i in [0, n). */
    public static void axpy(float alpha, MemorySegment x, long xOff, MemorySegment y, long yOff, int n) {
        int i = 0;
        for (int b = F.loopBound(n); i < b; i += L) {
            FloatVector xv = FloatVector.fromMemorySegment(F, x, (xOff + i) * 4L, NATIVE);
            FloatVector yv = FloatVector.fromMemorySegment(F, y, (yOff + i) * 4L, NATIVE);
            xv.fma(FloatVector.broadcast(F, alpha), yv).intoMemorySegment(y, (yOff + i) * 4L, NATIVE);
        }
        for (; i < n; i++) VectorMath.set(y, yOff + i, VectorMath.get(y, yOff + i) + alpha * VectorMath.get(x, xOff + i));
    }

    /** y[i] = alpha · x[i], i in [0, n). */
    public static void scaleCopy(float alpha, MemorySegment x, long xOff, MemorySegment y, long yOff, int n) {
        int i = 0;
        for (int b = F.loopBound(n); i < b; i += L) {
            FloatVector.fromMemorySegment(F, x, (xOff + i) * 4L, NATIVE).mul(alpha)
                    .intoMemorySegment(y, (yOff + i) * 4L, NATIVE);
        }
        for (; i < n; i++) VectorMath.set(y, yOff + i, alpha * VectorMath.get(x, xOff + i));
    }

    /** a[i] = 0, i in [0, n) (no slice object, unlike {@code asSlice(..).fill(..)}). */
    public static void zero(MemorySegment a, long off, long n) {
        FloatVector z = FloatVector.zero(F);
        long i = 0;
        for (long b = n - n % L; i < b; i += L) z.intoMemorySegment(a, (off + i) * 4L, NATIVE);
        for (; i < n; i++) VectorMath.set(a, off + i, 0f);
    }

    /** Index of the first non-finite value among n floats, or -1. */
    public static long firstNonFinite(MemorySegment a, long off, long n) {
        for (long i = 0; i < n; i++) {
            if (!Float.isFinite(a.getAtIndex(Tensor.FLOAT, off + i))) return i;
        }
        return -1;
    }
}
