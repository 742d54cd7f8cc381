package org.moe4j.reference;

/**
 * float64 twin of {@code org.moe4j.simd.CrossEntropy}. logits [rows, V], targets [rows] (ignoreIndex = skip).
 * total = scale Σ_label rows (lse - logit[t] + zWeight lse^2).
 */
public final class RefCrossEntropy {
    private RefCrossEntropy() {
    }

    public static double lse(double[] logits, int r, int vocab) {
        double max = Double.NEGATIVE_INFINITY;
        for (int v = 0; v < vocab; v++) {
            max = Math.max(max, logits[r * vocab + v]);
        }
        double s = 0;
        for (int v = 0; v < vocab; v++) {
            s += Math.exp(logits[r * vocab + v] - max);
        }
        return max + Math.log(s);
    }

    /** Per-row CE (0 for ignored rows). */
    public static double[] rowLoss(double[] logits, int[] targets, int ignoreIndex, int rows, int vocab) {
        double[] loss = new double[rows];
        for (int r = 0; r < rows; r++) {
            if (targets[r] != ignoreIndex) {
                loss[r] = lse(logits, r, vocab) - logits[r * vocab + targets[r]];
            }
        }
        return loss;
    }

    public static double total(double[] logits, int[] targets, int ignoreIndex, int rows, int vocab, double scale,
                               double zWeight) {
        double t = 0;
        for (int r = 0; r < rows; r++) {
            if (targets[r] != ignoreIndex) {
                double z = lse(logits, r, vocab);
                t += z - logits[r * vocab + targets[r]] + zWeight * z * z;
            }
        }
        return scale * t;
    }

    /** d total / d logits. */
    public static double[] backward(double[] logits, int[] targets, int ignoreIndex, int rows, int vocab, double scale,
                                    double zWeight) {
        double[] g = new double[rows * vocab];
        for (int r = 0; r < rows; r++) {
            if (targets[r] == ignoreIndex) {
                continue;
            }
            double z = lse(logits, r, vocab);
            for (int v = 0; v < vocab; v++) {
                double p = Math.exp(logits[r * vocab + v] - z);
                // d lse/dx = p; d(zWeight lse^2)/dx = 2 zWeight lse p; d(-x_t)/dx = -onehot
                g[r * vocab + v] = scale * (p + 2 * zWeight * z * p - (v == targets[r] ? 1 : 0));
            }
        }
        return g;
    }
}
