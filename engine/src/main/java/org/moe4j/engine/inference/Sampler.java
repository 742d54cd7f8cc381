package org.moe4j.engine.inference;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.moe4j.simd.Tensor;

/**
 * Picks the next token from one row of logits by a {@link Sampling}. One sampler per generation session (it owns the
 * session's random stream); scratch is sized for the vocabulary once, so a call allocates nothing.
 *
 * <p>Candidates are ordered by a 64-bit key (logit descending, then token id ascending), so ties always resolve the
 * same way: top-k keeps the k first keys (quickselect), top-p keeps the shortest prefix of the ordered candidates
 * whose probability reaches p, and the draw walks that prefix in key order.
 */
public final class Sampler {
    private final Sampling s;
    private final SplittableRandom rng;
    private final long[] keys;
    private final double[] prob;

    public Sampler(Sampling s, int vocab) {
        this.s = s;
        this.rng = new SplittableRandom(s.seed());
        this.keys = s.greedy() ? null : new long[vocab];
        this.prob = s.greedy() ? null : new double[vocab];
    }

    /** A logit as a key that sorts ascending by (logit descending, id ascending). NaN sorts last. */
    static long key(float logit, int id) {
        int b = Float.floatToRawIntBits(logit);
        b ^= (b >> 31) & 0x7fffffff; // monotone: larger float -> larger signed int
        if (Float.isNaN(logit)) b = Integer.MIN_VALUE;
        return ((long) ~b << 32) | (id & 0xffffffffL);
    }

    static int idOf(long key) {
        return (int) key;
    }

    /** The next token from logits[off .. off + V). */
    public int sample(MemorySegment logits, long off, int V) {
        if (s.greedy()) {
            int best = 0;
            float bv = Float.NEGATIVE_INFINITY;
            for (int i = 0; i < V; i++) {
                float v = logits.getAtIndex(Tensor.FLOAT, off + i);
                if (v > bv) {
                    bv = v;
                    best = i;
                }
            }
            return best;
        }
        for (int i = 0; i < V; i++) keys[i] = key(logits.getAtIndex(Tensor.FLOAT, off + i), i);
        int n = V;
        if (s.topK() > 0 && s.topK() < V) {
            select(keys, 0, V - 1, s.topK() - 1);
            n = s.topK();
        }
        boolean nucleus = s.topP() < 1;
        if (nucleus || n < V) Arrays.sort(keys, 0, n);
        double inv = 1.0 / s.temperature();
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < n; j++) max = Math.max(max, logits.getAtIndex(Tensor.FLOAT, off + idOf(keys[j])) * inv);
        double total = 0;
        for (int j = 0; j < n; j++) {
            double p = StrictMath.exp(logits.getAtIndex(Tensor.FLOAT, off + idOf(keys[j])) * inv - max);
            prob[j] = p;
            total += p;
        }
        if (nucleus) {
            double need = s.topP() * total, acc = 0;
            int m = 0;
            while (m < n) {
                acc += prob[m++];
                if (acc >= need) break;
            }
            n = m;
            total = acc;
        }
        double u = rng.nextDouble() * total;
        for (int j = 0; j < n; j++) {
            u -= prob[j];
            if (u < 0) return idOf(keys[j]);
        }
        return idOf(keys[n - 1]);
    }

    /** Partially orders a[lo..hi] so that a[k] is the k-th smallest and everything before it is smaller. */
    static void select(long[] a, int lo, int hi, int k) {
        while (hi > lo) {
            long pivot = median(a[lo], a[(lo + hi) >>> 1], a[hi]);
            int i = lo, j = hi;
            while (i <= j) {
                while (a[i] < pivot) i++;
                while (a[j] > pivot) j--;
                if (i <= j) {
                    long t = a[i];
                    a[i] = a[j];
                    a[j] = t;
                    i++;
                    j--;
                }
            }
            if (k <= j) hi = j;
            else if (k >= i) lo = i;
            else return;
        }
    }

    private static long median(long a, long b, long c) {
        return Math.max(Math.min(a, b), Math.min(Math.max(a, b), c));
    }
}
