package org.moe4j.io.hf;

import java.util.List;

/**
 * The engine's parameter names (the EMO layout), as patterns: {@code {l}} is a layer index, {@code {j}} an expert
 * index (shared experts are the last indices). Shapes: V vocab, d model width, E experts, h expert hidden width.
 */
public final class CanonicalNames {
    /** [V, d] */
    public static final String EMBED = "model.embed_tokens.weight";
    /** [d], the RMSNorm before attention */
    public static final String ATTN_NORM = "model.layers.{l}.pre_attention_layernorm.weight";
    public static final String Q_PROJ = "model.layers.{l}.self_attn.q_proj.weight";
    public static final String K_PROJ = "model.layers.{l}.self_attn.k_proj.weight";
    public static final String V_PROJ = "model.layers.{l}.self_attn.v_proj.weight";
    public static final String O_PROJ = "model.layers.{l}.self_attn.o_proj.weight";
    /** optional (qkNorm) */
    public static final String Q_NORM = "model.layers.{l}.self_attn.q_norm.weight";
    /** optional (qkNorm) */
    public static final String K_NORM = "model.layers.{l}.self_attn.k_norm.weight";
    /** [d], the RMSNorm before the MoE block */
    public static final String FFN_NORM = "model.layers.{l}.pre_feedforward_layernorm.weight";
    /** [E, d], the router */
    public static final String ROUTER = "model.layers.{l}.mlp.gate.weight";
    /** [h, d], W1 of SwiGLU */
    public static final String EXPERT_GATE_PROJ = "model.layers.{l}.mlp.experts.{j}.gate_proj.weight";
    /** [h, d], W3 of SwiGLU */
    public static final String EXPERT_UP_PROJ = "model.layers.{l}.mlp.experts.{j}.up_proj.weight";
    /** [d, h], W2 of SwiGLU */
    public static final String EXPERT_DOWN_PROJ = "model.layers.{l}.mlp.experts.{j}.down_proj.weight";
    /** [d] */
    public static final String FINAL_NORM = "model.norm.weight";
    /** [V, d]; absent when embeddings are tied */
    public static final String LM_HEAD = "lm_head.weight";

    /** Every canonical pattern, in model order. */
    public static final List<String> ALL = List.of(EMBED, ATTN_NORM, Q_PROJ, K_PROJ, V_PROJ, O_PROJ, Q_NORM, K_NORM,
            FFN_NORM, ROUTER, EXPERT_GATE_PROJ, EXPERT_UP_PROJ, EXPERT_DOWN_PROJ, FINAL_NORM, LM_HEAD);

    private CanonicalNames() {
    }

    /** A pattern with its placeholders filled in. */
    public static String of(String pattern, int layer, int expert) {
        return pattern.replace("{l}", Integer.toString(layer)).replace("{j}", Integer.toString(expert));
    }
}
