package org.moe4j.reference.model;

/**
 * Shape and method choices of the float64 reference model (ALGORITHMS.md sections 1-3).
 *
 * <p>{@code experts} = E counts the shared ones, which are the LAST {@code shared} indices; {@code k} counts the shared
 * ones too, so a token picks k' = k - shared routed experts. headDim = d / heads (must be even, for rotate-half RoPE).
 * {@code capacityFactor} <= 0 means no capacity. {@code eosId} opens a new document (pools, doc mask).
 * Loss weights: total = ce + wOutZ·outZ + wLb·mean_l lb + wZ·mean_l z + wErc·mean_l erc. {@code ercAlpha} is ERC's
 * margin, 0 = 1 up to 64 kept routed experts and 0.5 above.
 */
public record RefSpec(int vocab, int d, int layers, int heads, int kvHeads, int experts, int shared, int k, int hidden,
                      double ropeTheta, boolean qkNorm, double normEps, int eosId, boolean normalizeTopK,
                      boolean softmaxOverAll, boolean lbLocal, double capacityFactor, boolean docMask, double wLb,
                      double wZ, double wErc, double wOutZ, double ercAlpha) {

    /** With ERC's alpha by the paper's rule (1 up to 64 routed experts, 0.5 above). */
    public RefSpec(int vocab, int d, int layers, int heads, int kvHeads, int experts, int shared, int k, int hidden,
                   double ropeTheta, boolean qkNorm, double normEps, int eosId, boolean normalizeTopK,
                   boolean softmaxOverAll, boolean lbLocal, double capacityFactor, boolean docMask, double wLb,
                   double wZ, double wErc, double wOutZ) {
        this(vocab, d, layers, heads, kvHeads, experts, shared, k, hidden, ropeTheta, qkNorm, normEps, eosId,
                normalizeTopK, softmaxOverAll, lbLocal, capacityFactor, docMask, wLb, wZ, wErc, wOutZ, 0);
    }

    public RefSpec {
        require(vocab >= 1 && d >= 1 && layers >= 1 && hidden >= 1, "vocab, d, layers, hidden must be >= 1");
        require(heads >= 1 && kvHeads >= 1 && heads % kvHeads == 0, "kvHeads " + kvHeads + " must divide heads " + heads);
        require(d % heads == 0 && (d / heads) % 2 == 0, "d " + d + " / heads " + heads + " must be an even head size");
        require(shared >= 0 && shared < experts, "shared " + shared + " must be in [0, experts " + experts + ")");
        require(k > shared && k <= experts, "k " + k + " must be in (shared " + shared + ", experts " + experts + "]");
        require(normEps > 0 && ropeTheta > 0, "normEps and ropeTheta must be > 0");
    }

    private static void require(boolean ok, String message) {
        if (!ok) throw new IllegalArgumentException("RefSpec: " + message);
    }

    public int headDim() {
        return d / heads;
    }

    /** E' = routed experts of the full model, ids 0..E'-1. */
    public int routed() {
        return experts - shared;
    }
}
