package org.moe4j.simd;

import static org.moe4j.simd.VectorMath.F;
import static org.moe4j.simd.VectorMath.L;
import static org.moe4j.simd.VectorMath.get;
import static org.moe4j.simd.VectorMath.NATIVE;
import static org.moe4j.simd.VectorMath.set;

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
            float sum = mask == null ? expStore(x, xr, y, yr, n, max) : expStoreMasked(x, xr, y, yr, n, max, mask, mw);
            float inv = 1f / sum;
            int i = 0;
            for (; i < bound; i += L) {
                long at = (yr + i) * 4L;
                FloatVector.fromMemorySegment(F, y, at, NATIVE).mul(inv).intoMemorySegment(y, at, NATIVE);
            }
            for (; i < n; i++) {
                set(y, yr + i, get(y, yr + i) * inv);
            }
            if (lse != null) {
                set(lse, lseOff + r, max + VectorMath.log(sum));
            }
        }
    }

    /** x [rows, ldx] (first n columns), mask (may be null) -> lse [rows] = log Σ_allowed exp(x). */
    public static void logSumExp(MemorySegment x, long xOff, int ldx, int n, MemorySegment mask, long maskOff,
                                 int maskStride, MemorySegment lse, long lseOff, int r0, int r1) {
        for (int r = r0; r < r1; r++) {
            long xr = xOff + (long) r * ldx;
            long mw = maskOff + (long) r * maskStride;
            float max = rowMax(x, xr, n, mask, mw);
            if (max == Float.NEGATIVE_INFINITY) {
                set(lse, lseOff + r, Float.NEGATIVE_INFINITY);
                continue;
            }
            float sum = mask == null ? expSum(x, xr, n, max) : expSumMasked(x, xr, n, max, mask, mw);
            set(lse, lseOff + r, max + VectorMath.log(sum));
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
                FloatVector pv = FloatVector.fromMemorySegment(F, p, (pr + i) * 4L, NATIVE);
                FloatVector gv = FloatVector.fromMemorySegment(F, dy, (gr + i) * 4L, NATIVE);
                gv.sub(s).mul(pv).intoMemorySegment(dx, (dr + i) * 4L, NATIVE);
            }
            for (; i < n; i++) {
                set(dx, dr + i, (get(dy, gr + i) - s) * get(p, pr + i));
            }
        }
    }

    // y[i] = exp(x[i] - max), returns Σ y. Masked and unmasked are separate loops: a vector merged from two
    // branches inside one loop defeats C2's box elimination (measured: 288 B per vector). One exp per method: the
    // polynomial inlines ~25 Vector API calls, and two or more copies in one compilation exceed C2's inlining
    // budget, leaving some calls boxed (measured: ~600 KB per training step of the tiny model).
    private static float expStore(MemorySegment x, long xr, MemorySegment y, long yr, int n, float max) {
        FloatVector acc = FloatVector.zero(F);
        int i = 0;
        for (int b = F.loopBound(n); i < b; i += L) {
            FloatVector e = VectorMath.exp(FloatVector.fromMemorySegment(F, x, (xr + i) * 4L, NATIVE).sub(max));
            e.intoMemorySegment(y, (yr + i) * 4L, NATIVE);
            acc = acc.add(e);
        }
        float sum = VectorMath.sum(acc);
        for (; i < n; i++) {
            float e = VectorMath.exp(get(x, xr + i) - max);
            set(y, yr + i, e);
            sum += e;
        }
        return sum;
    }

    private static float expStoreMasked(MemorySegment x, long xr, MemorySegment y, long yr, int n, float max,
                                        MemorySegment mask, long mw) {
        FloatVector acc = FloatVector.zero(F);
        int i = 0;
        for (int b = F.loopBound(n); i < b; i += L) {
            FloatVector xv = FloatVector.fromMemorySegment(F, x, (xr + i) * 4L, NATIVE);
            FloatVector e = FloatVector.zero(F).blend(VectorMath.exp(xv.sub(max)), VectorMath.allowed(mask, mw, i));
            e.intoMemorySegment(y, (yr + i) * 4L, NATIVE);
            acc = acc.add(e);
        }
        float sum = VectorMath.sum(acc);
        for (; i < n; i++) {
            float e = VectorMath.isAllowed(mask, mw, i) ? VectorMath.exp(get(x, xr + i) - max) : 0f;
            set(y, yr + i, e);
            sum += e;
        }
        return sum;
    }

    /** Σ exp(x[i] - max) over one row (one exp per method: see expStore). */
    static float expSum(MemorySegment x, long xr, int n, float max) {
        FloatVector acc = FloatVector.zero(F);
        int i = 0;
        for (int b = F.loopBound(n); i < b; i += L) {
            acc = acc.add(VectorMath.exp(FloatVector.fromMemorySegment(F, x, (xr + i) * 4L, NATIVE).sub(max)));
        }
        float s = VectorMath.sum(acc);
        for (; i < n; i++) {
            s += VectorMath.exp(get(x, xr + i) - max);
        }
        return s;
    }

    private static float expSumMasked(MemorySegment x, long xr, int n, float max, MemorySegment mask, long mw) {
        FloatVector acc = FloatVector.zero(F);
        int i = 0;
        for (int b = F.loopBound(n); i < b; i += L) {
            FloatVector xv = FloatVector.fromMemorySegment(F, x, (xr + i) * 4L, NATIVE);
            acc = acc.add(FloatVector.zero(F).blend(VectorMath.exp(xv.sub(max)), VectorMath.allowed(mask, mw, i)));
        }
        float s = VectorMath.sum(acc);
        for (; i < n; i++) {
            if (VectorMath.isAllowed(mask, mw, i)) {
                s += VectorMath.exp(get(x, xr + i) - max);
            }
        }
        return s;
    }

    /** Max over the allowed columns of one row; -inf when none is allowed. */
    static float rowMax(MemorySegment x, long xr, int n, MemorySegment mask, long mw) {
        return mask == null ? rowMax(x, xr, n) : rowMaxMasked(x, xr, n, mask, mw);
    }

    static float rowMax(MemorySegment x, long xr, int n) {
        FloatVector m0 = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        FloatVector m1 = m0;
        int i = 0;
        for (int b2 = n - 2 * L; i <= b2; i += 2 * L) {
            m0 = m0.max(FloatVector.fromMemorySegment(F, x, (xr + i) * 4L, NATIVE));
            m1 = m1.max(FloatVector.fromMemorySegment(F, x, (xr + i + L) * 4L, NATIVE));
        }
        for (int b = F.loopBound(n); i < b; i += L) {
            m0 = m0.max(FloatVector.fromMemorySegment(F, x, (xr + i) * 4L, NATIVE));
        }
        float m = m0.max(m1).reduceLanes(VectorOperators.MAX);
        for (; i < n; i++) {
            m = Math.max(m, get(x, xr + i));
        }
        return m;
    }

    private static float rowMaxMasked(MemorySegment x, long xr, int n, MemorySegment mask, long mw) {
        FloatVector m0 = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        int i = 0;
        for (int b = F.loopBound(n); i < b; i += L) {
            VectorMask<Float> ok = VectorMath.allowed(mask, mw, i);
            FloatVector xv = FloatVector.fromMemorySegment(F, x, (xr + i) * 4L, NATIVE);
            m0 = m0.max(FloatVector.broadcast(F, Float.NEGATIVE_INFINITY).blend(xv, ok));
        }
        float m = m0.reduceLanes(VectorOperators.MAX);
        for (; i < n; i++) {
            if (VectorMath.isAllowed(mask, mw, i)) {
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
