package org.moe4j.simd;

import static org.moe4j.simd.VectorMath.F;
import static org.moe4j.simd.VectorMath.L;
import static org.moe4j.simd.VectorMath.NATIVE;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import org.moe4j.Moe4jException;

/**
 * Per-row top-k: the k largest of the first {@code n} columns with their column indices, in descending order.
 *
 * <p><b>Order (a moe4j rule).</b> A column ranks above another if its value is larger, or the values are equal
 * and its index is lower; so ties go to the lower index. NaN counts as -inf. Columns the mask leaves out are
 * never picked; allowed -inf columns are picked only after every allowed finite one. When fewer than k columns
 * are allowed, the remaining slots get index -1 and value -inf. {@code k == n} sorts the whole row.
 *
 * <p>The mask has the layout of {@link Softmax}'s: row r's bitset starts at long index
 * {@code maskOff + r * maskStride}, bit c allows column c, stride 0 shares one mask, null allows all.
 *
 * <p>Small k is the case it is built for (routing: k = 1..8 of E = 8..128; top-k sampling over a vocabulary):
 * one pass keeps the best k in an insertion-sorted window (a per-thread scratch array, allocated once per thread
 * and k), so a column costs one compare unless it enters; without a mask, L columns are compared against the
 * window's last value at once. Worst case O(n k). Offsets are in elements (idx is int32); rows
 * {@code [r0, r1)}; nothing is allocated after a thread's first call.
 */
public final class TopK {
    private TopK() {
    }

    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT_UNALIGNED;

    /**
     * x [rows, ldx] (first n columns), mask (may be null) -> idx [rows, ldIdx] (first k columns, int32),
     * val [rows, ldVal] (first k columns; val may be null) in rank order. Returns the smallest number of picks
     * made in any row of the range (k unless the mask allows fewer).
     */
    public static int select(MemorySegment x, long xOff, int ldx, int n, int k, MemorySegment mask, long maskOff,
                             int maskStride, MemorySegment idx, long idxOff, int ldIdx, MemorySegment val, long valOff,
                             int ldVal, int r0, int r1) {
        if (k < 0) {
            throw new Moe4jException("top-k: k must be >= 0, got " + k);
        }
        if (k == 0) {
            return 0;
        }
        Window win = WINDOW.get();
        if (win.values.length < k) {
            win = new Window(k);
            WINDOW.set(win);
        }
        float[] wv = win.values;
        int[] wi = win.indices;
        int minPicked = k;
        for (int r = r0; r < r1; r++) {
            long xr = xOff + (long) r * ldx;
            long mw = maskOff + (long) r * maskStride;
            int size = 0;
            int c = 0;
            // fill the window with the first k allowed columns
            for (; c < n && size < k; c++) {
                if (mask == null || allowed(mask, mw, c)) {
                    size = insert(wv, wi, size, k, value(x, xr, c), c);
                }
            }
            if (mask == null) {
                // a column can enter only if it beats the window's last value: test L columns at once
                for (int bound = n - L; c <= bound; c += L) {
                    FloatVector xv = FloatVector.fromMemorySegment(F, x, (xr + c) * 4L, NATIVE);
                    long bits = xv.compare(VectorOperators.GT, wv[k - 1]).toLong();
                    while (bits != 0) {
                        int j = c + Long.numberOfTrailingZeros(bits);
                        bits &= bits - 1;
                        float v = x.getAtIndex(Tensor.FLOAT, xr + j);
                        if (v > wv[k - 1]) {
                            insert(wv, wi, k, k, v, j);
                        }
                    }
                }
            }
            for (; c < n; c++) {
                if (mask == null || allowed(mask, mw, c)) {
                    float v = value(x, xr, c);
                    if (v > wv[k - 1]) {
                        insert(wv, wi, k, k, v, c);
                    }
                }
            }
            long ir = idxOff + (long) r * ldIdx;
            long vr = valOff + (long) r * ldVal;
            for (int j = 0; j < k; j++) {
                idx.setAtIndex(INT, ir + j, j < size ? wi[j] : -1);
                if (val != null) {
                    val.setAtIndex(Tensor.FLOAT, vr + j, j < size ? wv[j] : Float.NEGATIVE_INFINITY);
                }
            }
            minPicked = Math.min(minPicked, size);
        }
        return minPicked;
    }

    /** Per-thread window of the best k so far (values and indices), grown when a larger k comes. */
    private static final class Window {
        final float[] values;
        final int[] indices;

        Window(int k) {
            values = new float[k];
            indices = new int[k];
        }
    }

    private static final ThreadLocal<Window> WINDOW = ThreadLocal.withInitial(() -> new Window(16));

    /**
     * Inserts (v, c) into the window of {@code size} entries sorted by rank, dropping the last if it is full;
     * returns the new size. Columns arrive in increasing index order, so v goes after every entry >= v.
     */
    private static int insert(float[] wv, int[] wi, int size, int k, float v, int c) {
        int pos = size == k ? k - 1 : size;
        while (pos > 0 && v > wv[pos - 1]) {
            wv[pos] = wv[pos - 1];
            wi[pos] = wi[pos - 1];
            pos--;
        }
        wv[pos] = v;
        wi[pos] = c;
        return size == k ? k : size + 1;
    }

    private static boolean allowed(MemorySegment mask, long rowWord, int c) {
        return ((mask.getAtIndex(ValueLayout.JAVA_LONG_UNALIGNED, rowWord + (c >>> 6)) >>> (c & 63)) & 1L) != 0;
    }

    private static float value(MemorySegment x, long xr, int c) {
        float v = x.getAtIndex(Tensor.FLOAT, xr + c);
        return v != v ? Float.NEGATIVE_INFINITY : v;
    }

    /**
     * One row on the heap: x[0..n) -> idx[0..k) in rank order (-1 past the allowed count); returns the number
     * picked. {@code allowed} may be null (all columns). For per-document pool selection and tests.
     */
    public static int select(float[] x, int n, int k, boolean[] allowed, int[] idx) {
        if (k <= 0) {
            return 0;
        }
        int size = 0;
        float lastV = Float.NEGATIVE_INFINITY;
        for (int c = 0; c < n; c++) {
            if (allowed != null && !allowed[c]) {
                continue;
            }
            float v = x[c] != x[c] ? Float.NEGATIVE_INFINITY : x[c];
            if (size == k && !(v > lastV)) {
                continue;
            }
            int pos = size == k ? k - 1 : size;
            while (pos > 0 && v > valueOf(x, idx[pos - 1])) {
                idx[pos] = idx[pos - 1];
                pos--;
            }
            idx[pos] = c;
            if (size < k) {
                size++;
            }
            lastV = valueOf(x, idx[size - 1]);
        }
        for (int j = size; j < k; j++) {
            idx[j] = -1;
        }
        return size;
    }

    private static float valueOf(float[] x, int c) {
        return x[c] != x[c] ? Float.NEGATIVE_INFINITY : x[c];
    }
}
