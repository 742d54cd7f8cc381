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
 * The AdamW update over a flat range of parameters, and the global-norm helpers for gradient clipping.
 *
 * <pre>
 *   g'  = gradScale * g                       (clipping folded in: gradScale = min(1, maxNorm / norm))
 *   m   = b1 m + (1 - b1) g'
 *   v   = b2 v + (1 - b2) g'^2
 *   p  -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + wd * p)      bc1 = 1 - b1^t, bc2 = 1 - b2^t
 * </pre>
 * The bias corrections are passed in precomputed (one pow per step, not per element); weight decay uses the p
 * before this step, and is the caller's choice per tensor (0 for embeddings and norms). Offsets are in elements;
 * a call handles {@code n} elements from each offset, so the caller splits a range over workers. No allocation.
 */
public final class AdamW {
    private AdamW() {
    }

    /** p, g, m, v [n] (each at its own offset): one AdamW step, updating p, m, v in place. */
    public static void step(MemorySegment p, long pOff, MemorySegment g, long gOff, MemorySegment m, long mOff,
                            MemorySegment v, long vOff, long n, float lr, float b1, float b2, float eps, float wd,
                            float bc1, float bc2, float gradScale) {
        step(p, pOff, g, gOff, m, mOff, v, vOff, n, lr, b1, b2, eps, wd, bc1, bc2, gradScale, false, null, 0);
    }

    /**
     * {@link #step}, and in the same pass (each element's cache lines are loaded once): g[i] = 0 when {@code
     * zeroGrad} (the next step's accumulation starts from zero without a pass over the gradients of its own), and
     * w16[w16Off + i] = bf16(new p[i]), nearest even, when w16 is not null (BF16 training's copy of the weights).
     * p, m and v get the same bits as {@link #step}.
     */
    public static void step(MemorySegment p, long pOff, MemorySegment g, long gOff, MemorySegment m, long mOff,
                            MemorySegment v, long vOff, long n, float lr, float b1, float b2, float eps, float wd,
                            float bc1, float bc2, float gradScale, boolean zeroGrad, MemorySegment w16, long w16Off) {
        float c1 = 1f - b1;
        float c2 = 1f - b2;
        float inv1 = 1f / bc1;
        float inv2 = 1f / bc2;
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) {
            FloatVector gv = FloatVector.fromMemorySegment(F, g, (gOff + i) * 4L, NATIVE).mul(gradScale);
            FloatVector mv = FloatVector.fromMemorySegment(F, m, (mOff + i) * 4L, NATIVE).mul(b1).add(gv.mul(c1));
            FloatVector vv = FloatVector.fromMemorySegment(F, v, (vOff + i) * 4L, NATIVE).mul(b2)
                    .add(gv.mul(gv).mul(c2));
            FloatVector pv = FloatVector.fromMemorySegment(F, p, (pOff + i) * 4L, NATIVE);
            FloatVector upd = mv.mul(inv1).div(vv.mul(inv2).sqrt().add(eps)).add(pv.mul(wd));
            mv.intoMemorySegment(m, (mOff + i) * 4L, NATIVE);
            vv.intoMemorySegment(v, (vOff + i) * 4L, NATIVE);
            FloatVector pn = pv.sub(upd.mul(lr));
            pn.intoMemorySegment(p, (pOff + i) * 4L, NATIVE);
            if (zeroGrad) FloatVector.zero(F).intoMemorySegment(g, (gOff + i) * 4L, NATIVE);
            if (w16 != null) Convert.storeBf16(pn.reinterpretAsInts(), w16, (w16Off + i) * 2L);
        }
        for (; i < n; i++) {
            float gv = get(g, gOff + i) * gradScale;
            float mv = b1 * get(m, mOff + i) + c1 * gv;
            float vv = b2 * get(v, vOff + i) + c2 * gv * gv;
            float pv = get(p, pOff + i);
            set(m, mOff + i, mv);
            set(v, vOff + i, vv);
            float pn = pv - lr * ((mv * inv1) / ((float) Math.sqrt(vv * inv2) + eps) + wd * pv);
            set(p, pOff + i, pn);
            if (zeroGrad) set(g, gOff + i, 0f);
            if (w16 != null) w16.setAtIndex(Tensor.SHORT, w16Off + i, Bf16.fromFloat(pn));
        }
    }

    /**
     * Σ g[i]^2 over n elements, accumulated in double: float vector partial sums over blocks of 4096 elements
     * (each lane adds at most 256 squares at 128 bits, 64 at 512), each block's sum added in double. A block whose float sum overflows
     * (finite gradients above ~3e35 in magnitude) is summed again in double, where the squares of finite floats
     * cannot overflow; so the result is non-finite only when some g[i] is.
     */
    public static double sumSquares(MemorySegment g, long off, long n) {
        final int block = 4096;
        double total = 0;
        for (long i = 0; i < n; i += block) {
            int len = (int) Math.min(block, n - i);
            float s = VectorMath.sumSquares(g, off + i, len);
            total += Float.isFinite(s) ? s : sumSquaresDouble(g, off + i, len);
        }
        return total;
    }

    private static double sumSquaresDouble(MemorySegment g, long off, int n) {
        double s = 0;
        for (int i = 0; i < n; i++) {
            double v = get(g, off + i);
            s += v * v;
        }
        return s;
    }

    /** g[i] *= s over n elements (gradient clipping when it is not folded into {@link #step}). */
    public static void scale(MemorySegment g, long off, long n, float s) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) {
            long at = (off + i) * 4L;
            FloatVector.fromMemorySegment(F, g, at, NATIVE).mul(s).intoMemorySegment(g, at, NATIVE);
        }
        for (; i < n; i++) {
            set(g, off + i, get(g, off + i) * s);
        }
    }
}
