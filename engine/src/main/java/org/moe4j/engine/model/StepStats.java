package org.moe4j.engine.model;

/**
 * What one forward pass measured: the loss and each of its parts, per-layer routing figures. Owned and
 * overwritten by {@link MoeTransformer}; copy what you keep.
 */
public final class StepStats {
    /** Mean cross-entropy over label tokens. */
    public double ce;
    /** Output z-loss, mean over label tokens of logsumexp(logits)². */
    public double outZ;
    /** The total: ce + w_outZ·outZ + w_lb·mean(lb) + w_z·mean(z) + w_erc·mean(erc). */
    public double total;
    /** Layer means of the aux losses (erc: NaN when off). */
    public double lbMean, zMean, ercMean;
    public final double[] lb, z, erc, ercEps;
    /** Routed k' per layer, routed assignments dropped by capacity per layer. */
    public final int[] kRouted, drops;
    /** Per layer, the smallest and largest share of routed assignments an expert received (before drops). */
    public final double[] loadMin, loadMax;
    public int tokens, labels, sequences;

    StepStats(int layers) {
        lb = new double[layers];
        z = new double[layers];
        erc = new double[layers];
        ercEps = new double[layers];
        kRouted = new int[layers];
        drops = new int[layers];
        loadMin = new double[layers];
        loadMax = new double[layers];
    }

    public int layers() {
        return lb.length;
    }

    /** Total dropped routed assignments over all layers. */
    public int totalDrops() {
        int s = 0;
        for (int x : drops) s += x;
        return s;
    }
}
