package org.moe4j.simd;

import static org.moe4j.simd.VectorMath.F;
import static org.moe4j.simd.VectorMath.L;
import static org.moe4j.simd.VectorMath.get;
import static org.moe4j.simd.VectorMath.NATIVE;
import static org.moe4j.simd.VectorMath.set;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import org.moe4j.Moe4jException;

/**
 * Fused softmax cross-entropy over a vocabulary row, with the optional output z-loss.
 *
 * <pre>
 *   lse_r  = log Σ_v exp(logits[r, v])
 *   CE_r   = lse_r - logits[r, t_r]                     (0 for rows whose target is the ignore index)
 *   total  = scale * Σ_label rows (CE_r + zWeight lse_r^2)   scale = 1 / (number of label rows) for the mean
 *   dlogits[r] = scale * ((1 + 2 zWeight lse_r) softmax(logits[r]) - onehot(t_r))
 * </pre>
 * A target that is neither the ignore index nor in [0, V) is an error naming the row and the id. Logit rows are
 * contiguous (V floats apart), targets are int32; offsets are in elements; rows {@code [r0, r1)}; no allocation.
 */
public final class CrossEntropy {
    private CrossEntropy() {
    }

    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT_UNALIGNED;

    /**
     * logits [rows, V], targets [rows] -> lse [rows], loss [rows] = CE_r (loss may be null). Ignored rows get
     * lse = 0 and loss = 0. Returns Σ CE_r over the label rows of the range.
     */
    public static double forward(MemorySegment logits, long lOff, MemorySegment targets, long tOff, int ignoreIndex,
                                 MemorySegment lse, long lseOff, MemorySegment loss, long lossOff, int vocab,
                                 int r0, int r1) {
        double total = 0;
        for (int r = r0; r < r1; r++) {
            int t = target(targets, tOff, r, ignoreIndex, vocab);
            if (t < 0) {
                set(lse, lseOff + r, 0f);
                if (loss != null) {
                    set(loss, lossOff + r, 0f);
                }
                continue;
            }
            long lr = lOff + (long) r * vocab;
            float z = rowLogSumExp(logits, lr, vocab);
            float ce = z - get(logits, lr + t);
            set(lse, lseOff + r, z);
            if (loss != null) {
                set(loss, lossOff + r, ce);
            }
            total += ce;
        }
        return total;
    }

    /**
     * logits [rows, V], targets [rows], lse [rows] (from {@link #forward}) -> dlogits [rows, V] (written; 0 for
     * ignored rows). dlogits may alias logits at the same offset (the logits are then overwritten).
     */
    public static void backward(MemorySegment logits, long lOff, MemorySegment targets, long tOff, int ignoreIndex,
                                MemorySegment lse, long lseOff, float scale, float zWeight, MemorySegment dlogits,
                                long dOff, int vocab, int r0, int r1) {
        int bound = F.loopBound(vocab);
        for (int r = r0; r < r1; r++) {
            int t = target(targets, tOff, r, ignoreIndex, vocab);
            long lr = lOff + (long) r * vocab;
            long dr = dOff + (long) r * vocab;
            if (t < 0) {
                for (int i = 0; i < vocab; i++) {
                    set(dlogits, dr + i, 0f);
                }
                continue;
            }
            float z = get(lse, lseOff + r);
            float c = scale * (1f + 2f * zWeight * z); // d/dlogit of scale (CE + zWeight lse^2) = c p - scale onehot
            float xt = get(logits, lr + t);
            int i = 0;
            for (; i < bound; i += L) {
                FloatVector xv = FloatVector.fromMemorySegment(F, logits, (lr + i) * 4L, NATIVE);
                VectorMath.exp(xv.sub(z)).mul(c).intoMemorySegment(dlogits, (dr + i) * 4L, NATIVE);
            }
            for (; i < vocab; i++) {
                set(dlogits, dr + i, VectorMath.exp(get(logits, lr + i) - z) * c);
            }
            set(dlogits, dr + t, VectorMath.exp(xt - z) * c - scale);
        }
    }

    /** Σ lse_r^2 over the label rows of the range (the output z-loss before its weight and scale). */
    public static double zLossSum(MemorySegment lse, long lseOff, MemorySegment targets, long tOff, int ignoreIndex,
                                  int r0, int r1) {
        double s = 0;
        for (int r = r0; r < r1; r++) {
            if (targets.getAtIndex(INT, tOff + r) != ignoreIndex) {
                double z = get(lse, lseOff + r);
                s += z * z;
            }
        }
        return s;
    }

    /** The row's target, or -1 for an ignored row; throws for an id outside [0, V). */
    private static int target(MemorySegment targets, long tOff, int r, int ignoreIndex, int vocab) {
        int t = targets.getAtIndex(INT, tOff + r);
        if (t == ignoreIndex) {
            return -1;
        }
        if (t < 0 || t >= vocab) {
            throw new Moe4jException("cross-entropy: row " + r + " has target id " + t + ", expected 0 <= id < "
                    + vocab + " or the ignore index " + ignoreIndex);
        }
        return t;
    }

    private static float rowLogSumExp(MemorySegment x, long xr, int n) {
        float max = Softmax.rowMax(x, xr, n);
        if (max == Float.NEGATIVE_INFINITY) {
            return Float.NEGATIVE_INFINITY;
        }
        return max + VectorMath.log(Softmax.expSum(x, xr, n, max));
    }
}
