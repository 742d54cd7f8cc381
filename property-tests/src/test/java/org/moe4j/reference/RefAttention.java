package org.moe4j.reference;

/**
 * Float64 twin of {@code org.moe4j.simd.Attention}: the full score matrix per (sequence, head), an explicit mask
 * (key j allowed for query i iff j <= i and, with doc ids, doc[j] == doc[i]), a plain softmax, and the backward
 * written from the softmax Jacobian, {@code ds_ij = p_ij (dp_ij - sum_k p_ik dp_ik)} (not from D = dOut . out).
 *
 * <p>Layout as the fast path: q, out, dOut [B*T, H*dh]; k, v [B*T, Hkv*dh]; lse [B*T, H]; head h reads KV head
 * {@code h / (H/Hkv)}.
 */
public final class RefAttention {
    private RefAttention() {
    }

    /** Output and per-(row, head) logsumexp of the scaled, masked scores. */
    public record Forward(double[] out, double[] lse) {
    }

    /** Gradients of a loss with respect to q, k and v. */
    public record Grads(double[] dq, double[] dk, double[] dv) {
    }

    public static boolean allowed(int[] doc, int b, int T, int i, int j) {
        return j <= i && (doc == null || doc[b * T + i] == doc[b * T + j]);
    }

    public static Forward forward(double[] q, double[] k, double[] v, int[] doc, int B, int T, int H, int hkv, int dh) {
        double[] out = new double[B * T * H * dh];
        double[] lse = new double[B * T * H];
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < H; h++) {
                double[][] p = probabilities(q, k, doc, b, T, H, hkv, dh, h, lse);
                int g = h / (H / hkv);
                for (int i = 0; i < T; i++) {
                    for (int d = 0; d < dh; d++) {
                        double s = 0;
                        for (int j = 0; j < T; j++) {
                            s += p[i][j] * v[((b * T + j) * hkv + g) * dh + d];
                        }
                        out[((b * T + i) * H + h) * dh + d] = s;
                    }
                }
            }
        }
        return new Forward(out, lse);
    }

    // p [T, T] of sequence b, head h (0 where masked); fills lse[(b*T+i)*H + h] when lse != null
    private static double[][] probabilities(double[] q, double[] k, int[] doc, int b, int T, int H, int hkv, int dh,
                                            int h, double[] lse) {
        int g = h / (H / hkv);
        double scale = 1.0 / Math.sqrt(dh);
        double[][] p = new double[T][T];
        for (int i = 0; i < T; i++) {
            double max = Double.NEGATIVE_INFINITY;
            double[] s = new double[T];
            for (int j = 0; j < T; j++) {
                if (!allowed(doc, b, T, i, j)) {
                    s[j] = Double.NEGATIVE_INFINITY;
                    continue;
                }
                double dot = 0;
                for (int d = 0; d < dh; d++) {
                    dot += q[((b * T + i) * H + h) * dh + d] * k[((b * T + j) * hkv + g) * dh + d];
                }
                s[j] = dot * scale;
                max = Math.max(max, s[j]);
            }
            double sum = 0;
            for (int j = 0; j < T; j++) {
                if (s[j] != Double.NEGATIVE_INFINITY) {
                    sum += Math.exp(s[j] - max);
                }
            }
            for (int j = 0; j < T; j++) {
                p[i][j] = s[j] == Double.NEGATIVE_INFINITY ? 0 : Math.exp(s[j] - max) / sum;
            }
            if (lse != null) {
                lse[(b * T + i) * H + h] = max + Math.log(sum);
            }
        }
        return p;
    }

    /** Gradients of {@code sum(out * dOut)}. */
    public static Grads backward(double[] q, double[] k, double[] v, int[] doc, double[] dOut,
                                 int B, int T, int H, int hkv, int dh) {
        double[] dq = new double[q.length];
        double[] dk = new double[k.length];
        double[] dv = new double[v.length];
        double scale = 1.0 / Math.sqrt(dh);
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < H; h++) {
                int g = h / (H / hkv);
                double[][] p = probabilities(q, k, doc, b, T, H, hkv, dh, h, null);
                double[][] dp = new double[T][T];
                for (int i = 0; i < T; i++) {
                    for (int j = 0; j < T; j++) {
                        double s = 0;
                        for (int d = 0; d < dh; d++) {
                            s += dOut[((b * T + i) * H + h) * dh + d] * v[((b * T + j) * hkv + g) * dh + d];
                        }
                        dp[i][j] = s;
                        for (int d = 0; d < dh; d++) {
                            dv[((b * T + j) * hkv + g) * dh + d] += p[i][j] * dOut[((b * T + i) * H + h) * dh + d];
                        }
                    }
                }
                for (int i = 0; i < T; i++) {
                    double pdp = 0;
                    for (int j = 0; j < T; j++) {
                        pdp += p[i][j] * dp[i][j];
                    }
                    for (int j = 0; j < T; j++) {
                        double ds = p[i][j] * (dp[i][j] - pdp) * scale;
                        if (ds == 0) {
                            continue;
                        }
                        for (int d = 0; d < dh; d++) {
                            dq[((b * T + i) * H + h) * dh + d] += ds * k[((b * T + j) * hkv + g) * dh + d];
                            dk[((b * T + j) * hkv + g) * dh + d] += ds * q[((b * T + i) * H + h) * dh + d];
                        }
                    }
                }
            }
        }
        return new Grads(dq, dk, dv);
    }

    /** {@code sum(out * w)}, the scalar whose gradients {@link #backward} gives with {@code dOut = w}. */
    public static double loss(double[] q, double[] k, double[] v, int[] doc, double[] w,
                              int B, int T, int H, int hkv, int dh) {
        double[] out = forward(q, k, v, doc, B, T, H, hkv, dh).out();
        double s = 0;
        for (int i = 0; i < out.length; i++) {
            s += out[i] * w[i];
        }
        return s;
    }
}
