package org.moe4j.io.hf;

/**
 * The hyper-parameters of an MoE language model, whatever architecture's config.json they came from.
 *
 * @param vocab         V
 * @param d             model width
 * @param layers        transformer blocks
 * @param heads         attention heads
 * @param kvHeads       key/value heads (grouped-query attention when fewer than heads)
 * @param experts       E, shared experts included
 * @param shared        shared experts, the last indices of the E
 * @param k             experts per token, shared ones included
 * @param hidden        h, one expert's SwiGLU width
 * @param ropeTheta     RoPE base
 * @param qkNorm        RMSNorm on queries and keys before RoPE
 * @param normEps       RMSNorm epsilon
 * @param normTopK      gates renormalised over the chosen top-k (Mixtral) rather than the softmax over all (OLMoE)
 * @param tieEmbeddings the LM head is the embedding matrix (no lm_head.weight)
 */
public record MoeHyperParameters(int vocab, int d, int layers, int heads, int kvHeads, int experts, int shared, int k,
                                 int hidden, double ropeTheta, boolean qkNorm, double normEps, boolean normTopK,
                                 boolean tieEmbeddings) {
}
