package org.moe4j.engine.subset;

import org.moe4j.Moe4jException;
import java.lang.foreign.MemorySegment;
import org.moe4j.engine.model.ForwardRunner;
import org.moe4j.engine.routing.Routing;
import org.moe4j.simd.Tensor;

/**
 * Calibration statistics of each layer's routed experts (ALGORITHMS.md section 5), gathered as a
 * {@link ForwardRunner.LayerObserver}: the sum over calibration tokens of the router probability, the number of top-k
 * picks, and REAP's sum over routed tokens of gate × ‖expert output‖₂ with its count. Shared experts are not scored
 * (they are always kept). Sums are float64 so that the order documents are seen in barely matters.
 */
public final class ExpertScores implements ForwardRunner.LayerObserver {
    private final int layers, shared, d;
    /** experts[l]: E_l, layer l's experts (shared included; a pruned layer may keep fewer). */
    private final int[] experts;
    private final double[][] probSum, reapSum;
    private final long[][] picks, reapCount;
    private final long[] tokens;
    private final boolean[] recording;

    public ExpertScores(int layers, int experts, int shared, int d) {
        this(filled(layers, experts), shared, d);
    }

    /** Statistics of a model with experts[l] experts in layer l. */
    public ExpertScores(int[] experts, int shared, int d) {
        int layers = experts.length;
        this.layers = layers;
        this.experts = experts.clone();
        this.shared = shared;
        this.d = d;
        probSum = new double[layers][];
        reapSum = new double[layers][];
        picks = new long[layers][];
        reapCount = new long[layers][];
        for (int l = 0; l < layers; l++) {
            probSum[l] = new double[experts[l]];
            reapSum[l] = new double[experts[l]];
            picks[l] = new long[experts[l]];
            reapCount[l] = new long[experts[l]];
        }
        tokens = new long[layers];
        recording = new boolean[layers];
        java.util.Arrays.fill(recording, true);
    }

    private static int[] filled(int layers, int experts) {
        int[] e = new int[layers];
        java.util.Arrays.fill(e, experts);
        return e;
    }

    /** Records only layer {@code l} (layer-wise selection scores one layer per pass); -1 records every layer. */
    public void recordOnly(int l) {
        for (int i = 0; i < layers; i++) recording[i] = l < 0 || i == l;
    }

    @Override
    public void afterMoe(int layer, Routing r, Tensor expertOutputs) {
        if (!recording[layer]) return;
        accumulate(layer, r.tokens(), r.kTot(), r.kRouted(), r.expert, r.gate, r.prob, r.offsets, r.perm,
                expertOutputs.segment());
    }

    /**
     * Adds one routing call of layer l over T tokens: prob [T, E] (routed columns), expert/gate [T, kTot] slots
     * (j < kRouted routed, -1 empty), perm[offsets[e] .. offsets[e+1]) the slots of expert e with their outputs in
     * rows of ys [*, d] in the same order.
     */
    public void accumulate(int layer, int T, int kTot, int kRouted, int[] expert, float[] gate, float[] prob,
                           int[] offsets, int[] perm, MemorySegment ys) {
        int experts = this.experts[layer], routed = experts - shared;
        double[] ps = probSum[layer], rs = reapSum[layer];
        long[] pk = picks[layer], rc = reapCount[layer];
        for (int t = 0; t < T; t++) {
            int row = t * experts;
            for (int e = 0; e < routed; e++) ps[e] += prob[row + e];
            for (int j = 0; j < kRouted; j++) {
                int e = expert[t * kTot + j];
                if (e >= 0) pk[e]++;
            }
        }
        for (int e = 0; e < routed; e++) {
            for (int i = offsets[e]; i < offsets[e + 1]; i++) {
                int slot = perm[i];
                double sq = 0;
                long base = (long) i * d;
                for (int c = 0; c < d; c++) {
                    double v = ys.getAtIndex(Tensor.FLOAT, base + c);
                    sq += v * v;
                }
                rs[e] += gate[slot] * Math.sqrt(sq);
                rc[e]++;
            }
        }
        tokens[layer] += T;
    }

    /** Calibration tokens layer l has seen. */
    public long tokens(int layer) {
        return tokens[layer];
    }

    /**
     * The scores of layer l's routed experts [E - s] under {@code method} (higher = keep first): mean router
     * probability (layerwise, global), top-k picks per token (frequency), mean gate·‖output‖ over the tokens routed
     * to the expert, 0 when none was (reap).
     */
    public double[] scores(int layer, SubsetMethod method) {
        int routed = experts[layer] - shared;
        double[] s = new double[routed];
        long n = Math.max(1, tokens[layer]);
        for (int e = 0; e < routed; e++) {
            s[e] = switch (method) {
                case LAYERWISE, GLOBAL -> probSum[layer][e] / n;
                case FREQUENCY -> (double) picks[layer][e] / n;
                case REAP -> reapCount[layer][e] == 0 ? 0 : reapSum[layer][e] / reapCount[layer][e];
                case RANDOM -> throw new Moe4jException("--method random: random selection has no calibration score to compute");
            };
        }
        return s;
    }

    public void reset() {
        for (int l = 0; l < layers; l++) {
            java.util.Arrays.fill(probSum[l], 0);
            java.util.Arrays.fill(reapSum[l], 0);
            java.util.Arrays.fill(picks[l], 0);
            java.util.Arrays.fill(reapCount[l], 0);
            tokens[l] = 0;
        }
    }
}
