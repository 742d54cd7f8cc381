package org.moe4j.simd;

import static org.moe4j.simd.VectorMath.F;
import static org.moe4j.simd.VectorMath.L;
import static org.moe4j.simd.VectorMath.get;
import static org.moe4j.simd.VectorMath.NATIVE;
import static org.moe4j.simd.VectorMath.set;

import java.lang.foreign.MemorySegment;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;

/**
 * RMSNorm with a weight and no bias: {@code y = x * rstd * w}, {@code rstd = 1 / sqrt(mean(x^2) + eps)} per row.
 *
 * <p>All offsets are in float elements; rows are contiguous ({@code d} floats apart). Each call handles rows
 * {@code [r0, r1)}, so the caller can split rows over a {@link WorkerPool}. Nothing is allocated.
 */
public final class RmsNorm {
    private RmsNorm() {
    }

    /**
     * x [rows, d], w [d] -> y [rows, d], rstd [rows]. {@code rstd} may be null (inference). y may alias x.
     */
    public static void forward(MemorySegment x, long xOff, MemorySegment w, long wOff, MemorySegment y, long yOff,
                               MemorySegment rstd, long rOff, int d, float eps, int r0, int r1) {
        if (d == 0) {
            return;
        }
        int bound = F.loopBound(d);
        for (int r = r0; r < r1; r++) {
            long xr = xOff + (long) r * d;
            long yr = yOff + (long) r * d;
            float ss = VectorMath.sumSquares(x, xr, d);
            float rs = (float) (1.0 / Math.sqrt((double) ss / d + eps));
            int i = 0;
            for (; i < bound; i += L) {
                FloatVector xv = FloatVector.fromMemorySegment(F, x, (xr + i) * 4L, NATIVE);
                FloatVector wv = FloatVector.fromMemorySegment(F, w, (wOff + i) * 4L, NATIVE);
                xv.mul(rs).mul(wv).intoMemorySegment(y, (yr + i) * 4L, NATIVE);
            }
            for (; i < d; i++) {
                set(y, yr + i, get(x, xr + i) * rs * get(w, wOff + i));
            }
            if (rstd != null) {
                set(rstd, rOff + r, rs);
            }
        }
    }

    /**
     * dy [rows, d], x [rows, d], w [d], rstd [rows] -> dx [rows, d], dw [d].
     *
     * <pre>
     *   c    = (1/d) Σ_i dy_i w_i x_i
     *   dx_j = rstd (w_j dy_j - x_j rstd^2 c)      (written, or added when accumulateDx)
     *   dw_j += Σ_rows dy_j x_j rstd              (always accumulated: give each worker its own dw, then reduce)
     * </pre>
     * dx may alias dy (each row is read before it is written); it must not alias x.
     */
    public static void backward(MemorySegment dy, long dyOff, MemorySegment x, long xOff, MemorySegment w, long wOff,
                                MemorySegment rstd, long rOff, MemorySegment dx, long dxOff, boolean accumulateDx,
                                MemorySegment dw, long dwOff, int d, int r0, int r1) {
        int bound = F.loopBound(d);
        for (int r = r0; r < r1; r++) {
            long xr = xOff + (long) r * d;
            long gr = dyOff + (long) r * d;
            long dr = dxOff + (long) r * d;
            float rs = get(rstd, rOff + r);
            // Σ dy w x
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = FloatVector.zero(F);
            int i = 0;
            for (int b2 = d - 2 * L; i <= b2; i += 2 * L) {
                FloatVector g0 = FloatVector.fromMemorySegment(F, dy, (gr + i) * 4L, NATIVE);
                FloatVector g1 = FloatVector.fromMemorySegment(F, dy, (gr + i + L) * 4L, NATIVE);
                FloatVector w0 = FloatVector.fromMemorySegment(F, w, (wOff + i) * 4L, NATIVE);
                FloatVector w1 = FloatVector.fromMemorySegment(F, w, (wOff + i + L) * 4L, NATIVE);
                a0 = g0.mul(w0).fma(FloatVector.fromMemorySegment(F, x, (xr + i) * 4L, NATIVE), a0);
                a1 = g1.mul(w1).fma(FloatVector.fromMemorySegment(F, x, (xr + i + L) * 4L, NATIVE), a1);
            }
            for (; i < bound; i += L) {
                FloatVector g0 = FloatVector.fromMemorySegment(F, dy, (gr + i) * 4L, NATIVE);
                FloatVector w0 = FloatVector.fromMemorySegment(F, w, (wOff + i) * 4L, NATIVE);
                a0 = g0.mul(w0).fma(FloatVector.fromMemorySegment(F, x, (xr + i) * 4L, NATIVE), a0);
            }
            float s = VectorMath.sum(a0.add(a1));
            for (; i < d; i++) {
                s += get(dy, gr + i) * get(w, wOff + i) * get(x, xr + i);
            }
            float k = -rs * rs * rs * (s / d); // dx = rs w dy + k x
            i = 0;
            for (; i < bound; i += L) {
                FloatVector g = FloatVector.fromMemorySegment(F, dy, (gr + i) * 4L, NATIVE);
                FloatVector xv = FloatVector.fromMemorySegment(F, x, (xr + i) * 4L, NATIVE);
                FloatVector wv = FloatVector.fromMemorySegment(F, w, (wOff + i) * 4L, NATIVE);
                FloatVector v = g.mul(wv).mul(rs).add(xv.mul(k));
                if (accumulateDx) {
                    v = v.add(FloatVector.fromMemorySegment(F, dx, (dr + i) * 4L, NATIVE));
                }
                v.intoMemorySegment(dx, (dr + i) * 4L, NATIVE);
                long dwAt = (dwOff + i) * 4L;
                FloatVector dwv = FloatVector.fromMemorySegment(F, dw, dwAt, NATIVE);
                g.mul(xv).fma(FloatVector.broadcast(F, rs), dwv).intoMemorySegment(dw, dwAt, NATIVE);
            }
            for (; i < d; i++) {
                float g = get(dy, gr + i);
                float xv = get(x, xr + i);
                float v = g * get(w, wOff + i) * rs + xv * k;
                if (accumulateDx) {
                    v += get(dx, dr + i);
                }
                set(dx, dr + i, v);
                set(dw, dwOff + i, get(dw, dwOff + i) + g * xv * rs);
            }
        }
    }

    /** x [rows, d], w [d] -> y [rows, d], rstd [rows] (may be null): all rows, for tests and small inputs. */
    public static void forward(Tensor x, Tensor w, Tensor y, Tensor rstd, float eps) {
        int d = x.dim(-1);
        int rows = (int) (x.numel() / Math.max(1, d));
        forward(x.segment(), 0, w.segment(), 0, y.segment(), 0, rstd == null ? null : rstd.segment(), 0, d, eps, 0,
                rows);
    }
}
