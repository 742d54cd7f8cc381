package org.moe4j.simd;

import static org.moe4j.simd.VectorMath.F;
import static org.moe4j.simd.VectorMath.L;
import static org.moe4j.simd.VectorMath.get;
import static org.moe4j.simd.VectorMath.NATIVE;
import static org.moe4j.simd.VectorMath.set;

import java.lang.foreign.MemorySegment;
import jdk.incubator.vector.FloatVector;

/**
 * The SwiGLU gate of an expert: {@code out = SiLU(a) * b}, {@code SiLU(a) = a * sigmoid(a)}, element-wise, where
 * {@code a = x W1^T} and {@code b = x W3^T} rows. Each matrix has its own leading dimension, so a and b can be
 * the two halves of one fused [rows, 2h] GEMM output. Offsets are in float elements; rows {@code [r0, r1)}.
 */
public final class SwiGlu {
    private SwiGlu() {
    }

    /** a [rows, lda], b [rows, ldb] (first h columns) -> out [rows, ldo]. out may alias a or b. */
    public static void forward(MemorySegment a, long aOff, int lda, MemorySegment b, long bOff, int ldb,
                               MemorySegment out, long oOff, int ldo, int h, int r0, int r1) {
        int bound = F.loopBound(h);
        for (int r = r0; r < r1; r++) {
            long ar = aOff + (long) r * lda;
            long br = bOff + (long) r * ldb;
            long or = oOff + (long) r * ldo;
            int i = 0;
            for (; i < bound; i += L) {
                FloatVector av = FloatVector.fromMemorySegment(F, a, (ar + i) * 4L, NATIVE);
                FloatVector sig = FloatVector.broadcast(F, 1f).div(VectorMath.exp(av.neg()).add(1f));
                FloatVector bv = FloatVector.fromMemorySegment(F, b, (br + i) * 4L, NATIVE);
                av.mul(sig).mul(bv).intoMemorySegment(out, (or + i) * 4L, NATIVE);
            }
            for (; i < h; i++) {
                float av = get(a, ar + i);
                float sig = 1f / (1f + VectorMath.exp(-av));
                set(out, or + i, av * sig * get(b, br + i));
            }
        }
    }

    /**
     * dout [rows, ldo], a [rows, lda], b [rows, ldb] -> da [rows, ldda], db [rows, lddb] (written).
     *
     * <pre>
     *   s = sigmoid(a);  da = dout * b * s * (1 + a (1 - s));  db = dout * a * s
     * </pre>
     * da may alias a and db may alias b (same offsets and leading dimensions): every element is read before it is
     * written, so the backward can overwrite the saved activations in place.
     */
    public static void backward(MemorySegment dout, long doOff, int ldo, MemorySegment a, long aOff, int lda,
                                MemorySegment b, long bOff, int ldb, MemorySegment da, long daOff, int ldda,
                                MemorySegment db, long dbOff, int lddb, int h, int r0, int r1) {
        int bound = F.loopBound(h);
        for (int r = r0; r < r1; r++) {
            long gr = doOff + (long) r * ldo;
            long ar = aOff + (long) r * lda;
            long br = bOff + (long) r * ldb;
            long dar = daOff + (long) r * ldda;
            long dbr = dbOff + (long) r * lddb;
            int i = 0;
            for (; i < bound; i += L) {
                FloatVector g = FloatVector.fromMemorySegment(F, dout, (gr + i) * 4L, NATIVE);
                FloatVector av = FloatVector.fromMemorySegment(F, a, (ar + i) * 4L, NATIVE);
                FloatVector bv = FloatVector.fromMemorySegment(F, b, (br + i) * 4L, NATIVE);
                FloatVector s = FloatVector.broadcast(F, 1f).div(VectorMath.exp(av.neg()).add(1f));
                FloatVector silu = av.mul(s);
                // s (1 + a (1 - s)) = s + silu (1 - s)
                FloatVector dsilu = silu.fma(s.neg().add(1f), s);
                g.mul(bv).mul(dsilu).intoMemorySegment(da, (dar + i) * 4L, NATIVE);
                g.mul(silu).intoMemorySegment(db, (dbr + i) * 4L, NATIVE);
            }
            for (; i < h; i++) {
                float g = get(dout, gr + i);
                float av = get(a, ar + i);
                float bv = get(b, br + i);
                float s = 1f / (1f + VectorMath.exp(-av));
                float silu = av * s;
                set(da, dar + i, g * bv * (s + silu * (1f - s)));
                set(db, dbr + i, g * silu);
            }
        }
    }

    /** a [rows, h], b [rows, h] -> out [rows, h]: all rows, for tests and small inputs. */
    public static void forward(Tensor a, Tensor b, Tensor out) {
        int h = a.dim(-1);
        int rows = (int) (a.numel() / Math.max(1, h));
        forward(a.segment(), 0, h, b.segment(), 0, h, out.segment(), 0, h, h, 0, rows);
    }
}
