package org.moe4j.reference;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * float64 twin of {@code org.moe4j.simd.TopK} by sorting: the allowed columns sorted by (value descending, NaN as
 * -inf; index ascending), the first k taken, -1 padding when fewer are allowed.
 */
public final class RefTopK {
    private RefTopK() {
    }

    public static int[] select(float[] row, int n, int k, boolean[] allowed) {
        List<Integer> cols = new ArrayList<>();
        for (int c = 0; c < n; c++) {
            if (allowed == null || allowed[c]) {
                cols.add(c);
            }
        }
        Comparator<Integer> byValue = Comparator.comparingDouble(c -> Float.isNaN(row[c]) ? Double.NEGATIVE_INFINITY : row[c]);
        cols.sort(byValue.reversed().thenComparing(Comparator.naturalOrder()));
        int[] out = new int[k];
        for (int j = 0; j < k; j++) {
            out[j] = j < cols.size() ? cols.get(j) : -1;
        }
        return out;
    }
}
