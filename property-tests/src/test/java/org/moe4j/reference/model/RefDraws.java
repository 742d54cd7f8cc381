package org.moe4j.reference.model;

/**
 * The randomness of one step, pinned so the reference is a function. Every field may be null.
 *
 * @param poolSizes [layer][sequence][document] EMO pool size P (documents in order; null = no pools)
 * @param kPerLayer [layer] routed k' of the layer (Matryoshka; null = k - shared)
 * @param ercNoise  [layer][i][c] u in (-1, 1) for the i-th kept routed expert and model column c: δ = 1 + ε·u
 *                  (null = ERC off: its loss is NaN and adds nothing)
 * @param subset    [layer] sorted kept expert ids, full-model ids with shared included (null, or a null row = all)
 */
public record RefDraws(int[][][] poolSizes, int[] kPerLayer, double[][][] ercNoise, int[][] subset) {

    /** Nothing drawn: no pools, k' = k - shared, ERC off, all experts. */
    public static RefDraws none() {
        return new RefDraws(null, null, null, null);
    }
}
