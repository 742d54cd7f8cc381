package org.moe4j.reference.model;

import java.util.Map;

/**
 * Everything one {@link RefModel#run} computes. Layer-indexed arrays come first by layer; routing slots are the
 * routed picks in rank order (dropped ones included, see {@code dropped}) followed by the kept shared experts.
 *
 * @param ce              mean cross-entropy over label tokens (0 when no sequence has a label)
 * @param outZ            mean over label tokens of logsumexp(logits)^2
 * @param lb              mean over layers of lbPerLayer
 * @param z               mean over layers of zPerLayer
 * @param erc             mean over layers of ercPerLayer (NaN when ERC is off)
 * @param total           ce + wOutZ·outZ + wLb·lb + wZ·z + wErc·erc (ERC term 0 when off)
 * @param kRouted         [layer] k' = min(drawn or k - shared, kept routed experts)
 * @param expertCounts    [layer][E] picks before drops (shared experts count every token)
 * @param keptCounts      [layer][E] picks after capacity drops
 * @param logits          [b][t][V]
 * @param experts         [layer][b][t][slot] expert ids
 * @param gates           [layer][b][t][slot] gates as routed (a dropped slot keeps its gate; shared 1.0)
 * @param dropped         [layer][b][t][slot] true when capacity dropped the slot
 * @param pools           [layer][b][doc] sorted pool ids (null when no pools)
 * @param dropsAtPosition [layer][position] dropped slots at that position, summed over sequences
 * @param grads           d(total)/d(parameter) for every parameter, in {@link RefModel#shapes} order
 * @param decisions       every discrete choice (picks, drops, pools, ERC hinge signs) as text: equal strings at
 *                        x+h and x-h mean the finite difference crossed no kink
 */
public record RefResult(double ce, double outZ, double lb, double z, double erc, double total,
                        double[] lbPerLayer, double[] zPerLayer, double[] ercPerLayer, double[] ercEpsMean,
                        int[] kRouted, int[][] expertCounts, int[][] keptCounts, double[][][] logits,
                        int[][][][] experts, double[][][][] gates, boolean[][][][] dropped, int[][][][] pools,
                        int[][] dropsAtPosition, Map<String, double[]> grads, String decisions) {
}
