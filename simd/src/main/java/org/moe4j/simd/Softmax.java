package org.moe4j.simd;

import static org.moe4j.simd.VectorMath.F;
import static org.moe4j.simd.VectorMath.L;
import static org.moe4j.simd.VectorMath.get;
import static org.moe4j.simd.VectorMath.load;
import static org.moe4j.simd.VectorMath.set;
import static org.moe4j.simd.VectorMath.store;

import java.lang.foreign.MemorySegment;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;

/**
 * Row softmax over the first {@code n} columns of each row, optionally restricted to the allowed columns of a
 * bitset mask (the EMO document pool, an expert subset): masked-out columns count as -inf and get probability 0.
 *
 * <p><b>Mask layout.</b> {@code mask} holds native-order longs; row r's bitset starts at long index
 * {@code maskOff + r * maskStride} and column c is allowed when bit {@code c & 63} of word {@code c >>> 6} is set.
 * {@code maskStride == 0} applies one mask to every row; {@code mask == null} allows every column.
 *
 * <p>A row with no allowed finite column (all masked, or all -inf) gets probabilities 0 and logsumexp -inf.
 * Offsets are in elements; each call handles rows {@code [r0, r1)} and allocates nothing.
 */
public final class Softmax {
    private Softmax() {
    }

    /** x [rows, ldx] (first n columns) -> y [rows, ldy] = softmax(x). y may alias x. */
    public static void forward(MemorySegment x, long xOff, int ldx, MemorySegment y, long yOff, int ldy, int n,
                               int r0, int r1) {
        forward(x, xOff, ldx, y, yOff, ldy, n, null, 0, 0, null, 0, r0, r1);
    }

    /**
     * x [rows, ldx] (first n columns), mask (see class comment; may be null) -> y [rows, ldy] = softmax over the
     * allowed columns (0 elsewhere), lse [rows] = logsumexp over the allowed columns (lse may be null). y may
     * alias x.
     */
    public static void forward(MemorySegment x, long xOff, int ldx, MemorySegment y, long yOff, int ldy, int n,
                               MemorySegment mask, long maskOff, int maskStride, MemorySegment lse, long lseOff,
                               int r0, int r1) {
        int bound = F.loopBound(n);
        for (int r = r0; r < r1; r++) {
            long xr = xOff + (long) r * ldx;
            long yr = yOff + (long) r * ldy;
            long mw = maskOff + (long) r * maskStride;
            float max = rowMax(x, xr, n, mask, mw);
            if (max == Float.NEGATIVE_INFINITY) {
                for (int i = 0; i < n; i++) {
                    set(y, yr + i, 0f);
                }
                if (lse != null) {
                    set(lse, lseOff + r, Float.NEGATIVE_INFINITY);
                }
                continue;
            }
            // y = exp(x - max) (0 where masked), sum
            FloatVector acc = FloatVector.zero(F);
            int i = 0;
            for (; i < bound; i += L) {
                FloatVector e = VectorMath.exp(load(x, xr + i).sub(max));
                if (mask != null) {
                    e = FloatVector.zero(F).blend(e, VectorMath.allowed(mask, mw, i));
                }
                acc = acc.add(e);
                store(e, y, yr + i);
            }
            float sum = acc.reduceLanes(VectorOperators.ADD);
            for (; i < n; i++) {
                float e = mask == null || VectorMath.isAllowed(mask, mw, i) ? VectorMath.exp(get(x, xr + i) - max) : 0f;
                sum += e;
                set(y, yr + i, e);
            }
            float inv = 1f / sum;
            i = 0;
            for (; i < bound; i += L) {
                store(load(y, yr + i).mul(inv), y, yr + i);
            }
            for (; i < n; i++) {
                set(y, yr + i, get(y, yr + i) * inv);
            }
            if (lse != null) {
                set(lse, lseOff + r, max + (float) Math.log(sum));
            }
        }
    }

    /** x [rows, ldx] (first n columns), mask (may be null) -> lse [rows] = log Σ_allowed exp(x). */
    public static void logSumExp(MemorySegment x, long xOff, int ldx, int n, MemorySegment mask, long maskOff,
                                 int maskStride, MemorySegment lse, long lseOff, int r0, int r1) {
        int bound = F.loopBound(n);
        for (int r = r0; r < r1; r++) {
            long xr = xOff + (long) r * ldx;
            long mw = maskOff + (long) r * maskStride;
            float max = rowMax(x, xr, n, mask, mw);
            if (max == Float.NEGATIVE_INFINITY) {
                set(lse, lseOff + r, Float.NEGATIVE_INFINITY);
                continue;
            }
            FloatVector acc0 = FloatVector.zero(F);
            FloatVector acc1 = FloatVector.zero(F);
            int i = 0;
            if (mask == null) {
                for (int b2 = n - 2 * L; i <= b2; i += 2 * L) {
                    acc0 = acc0.add(VectorMath.exp(load(x, xr + i).sub(max)));
                    acc1 = acc1.add(VectorMath.exp(load(x, xr + i + L).sub(max)));
                }
            }
            for (; i < bound; i += L) {
                FloatVector e = VectorMath.exp(load(x, xr + i).sub(max));
                if (mask != null) {
                    e = FloatVector.zero(F).blend(e, VectorMath.allowed(mask, mw, i));
                }
                acc0 = acc0.add(e);
            }
            float sum = acc0.add(acc1).reduceLanes(VectorOperators.ADD);
            for (; i < n; i++) {
                if (mask == null || VectorMath.isAllowed(mask, mw, i)) {
                    sum += VectorMath.exp(get(x, xr + i) - max);
                }
            }
            set(lse, lseOff + r, max + (float) Math.log(sum));
        }
    }

    /**
     * p [rows, ldp] (the forward output), dy [rows, lddy] -> dx [rows, lddx] = p * (dy - Σ_j dy_j p_j).
     * Masked columns have p = 0 and so get dx = 0. dx may alias dy.
     */
    public static void backward(MemorySegment p, long pOff, int ldp, MemorySegment dy, long dyOff, int lddy,
                                MemorySegment dx, long dxOff, int lddx, int n, int r0, int r1) {
        int bound = F.loopBound(n);
        for (int r = r0; r < r1; r++) {
            long pr = pOff + (long) r * ldp;
            long gr = dyOff + (long) r * lddy;
            long dr = dxOff + (long) r * lddx;
            float s = VectorMath.dot(p, pr, dy, gr, n);
            int i = 0;
            for (; i < bound; i += L) {
                store(load(dy, gr + i).sub(s).mul(load(p, pr + i)), dx, dr + i);
            }
            for (; i < n; i++) {
                set(dx, dr + i, (get(dy, gr + i) - s) * get(p, pr + i));
            }
        }
    }

    /** Max over the allowed columns of one row; -inf when none is allowed. */
    static float rowMax(MemorySegment x, long xr, int n, MemorySegment mask, long mw) {
        FloatVector m0 = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        int i = 0;
        int bound = F.loopBound(n);
        if (mask == null) {
            FloatVector m1 = m0;
            for (int b2 = n - 2 * L; i <= b2; i += 2 * L) {
                m0 = m0.max(load(x, xr + i));
                m1 = m1.max(load(x, xr + i + L));
            }
            m0 = m0.max(m1);
            for (; i < bound; i += L) {
                m0 = m0.max(load(x, xr + i));
            }
        } else {
            for (; i < bound; i += L) {
                VectorMask<Float> ok = VectorMath.allowed(mask, mw, i);
                m0 = m0.max(FloatVector.broadcast(F, Float.NEGATIVE_INFINITY).blend(load(x, xr + i), ok));
            }
        }
        float m = m0.reduceLanes(VectorOperators.MAX);
        for (; i < n; i++) {
            if (mask == null || VectorMath.isAllowed(mask, mw, i)) {
                m = Math.max(m, get(x, xr + i));
            }
        }
        return m;
    }

    /** x [rows, n] -> y [rows, n]: all rows, no mask, for tests and small inputs. */
    public static void forward(Tensor x, Tensor y) {
        int n = x.dim(-1);
        int rows = (int) (x.numel() / Math.max(1, n));
        forward(x.segment(), 0, n, y.segment(), 0, n, n, 0, rows);
    }
}
