package org.moe4j.reference;

/** float64 twin of {@code org.moe4j.simd.Embedding}: table [V, d], ids [T]. */
public final class RefEmbedding {
    private RefEmbedding() {
    }

    public static double[] forward(double[] table, int d, int[] ids) {
        double[] out = new double[ids.length * d];
        for (int p = 0; p < ids.length; p++) {
            for (int c = 0; c < d; c++) {
                out[p * d + c] = table[ids[p] * d + c];
            }
        }
        return out;
    }

    /** dtable [V, d] = Σ_p onehot(ids[p]) ⊗ dout[p]. */
    public static double[] backward(double[] dout, int d, int[] ids, int vocab) {
        double[] dt = new double[vocab * d];
        for (int v = 0; v < vocab; v++) {
            for (int p = 0; p < ids.length; p++) {
                if (ids[p] == v) {
                    for (int c = 0; c < d; c++) {
                        dt[v * d + c] += dout[p * d + c];
                    }
                }
            }
        }
        return dt;
    }
}
