package org.moe4j.io.hf;

import static org.moe4j.io.hf.CanonicalNames.ATTN_NORM;
import static org.moe4j.io.hf.CanonicalNames.EMBED;
import static org.moe4j.io.hf.CanonicalNames.EXPERT_DOWN_PROJ;
import static org.moe4j.io.hf.CanonicalNames.EXPERT_GATE_PROJ;
import static org.moe4j.io.hf.CanonicalNames.EXPERT_UP_PROJ;
import static org.moe4j.io.hf.CanonicalNames.FFN_NORM;
import static org.moe4j.io.hf.CanonicalNames.FINAL_NORM;
import static org.moe4j.io.hf.CanonicalNames.K_NORM;
import static org.moe4j.io.hf.CanonicalNames.K_PROJ;
import static org.moe4j.io.hf.CanonicalNames.LM_HEAD;
import static org.moe4j.io.hf.CanonicalNames.O_PROJ;
import static org.moe4j.io.hf.CanonicalNames.Q_NORM;
import static org.moe4j.io.hf.CanonicalNames.Q_PROJ;
import static org.moe4j.io.hf.CanonicalNames.ROUTER;
import static org.moe4j.io.hf.CanonicalNames.V_PROJ;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonMappingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Collectors;
import org.moe4j.Moe4jException;
import org.moe4j.io.checkpoint.HfConfig;

/**
 * The Hugging Face MoE architectures moe4j reads. They differ only in data: a tensor name table, the config.json
 * key that counts experts, how two flags are set, defaults for absent keys, and keys whose non-null value would
 * change the computation in ways the engine does not implement. One code path serves all of them.
 */
public enum HfArchitecture {
    /** moe4j's own layout: the canonical names as they are. */
    EMO("emo", "num_experts", Flag.key("norm_topk_prob", false), Flag.key("qk_norm", false), 10000.0, 1e-5,
            List.of(),
            new NameTable("emo",
                    EMBED, EMBED,
                    ATTN_NORM, ATTN_NORM,
                    Q_PROJ, Q_PROJ,
                    K_PROJ, K_PROJ,
                    V_PROJ, V_PROJ,
                    O_PROJ, O_PROJ,
                    Q_NORM, Q_NORM,
                    K_NORM, K_NORM,
                    FFN_NORM, FFN_NORM,
                    ROUTER, ROUTER,
                    EXPERT_GATE_PROJ, EXPERT_GATE_PROJ,
                    EXPERT_UP_PROJ, EXPERT_UP_PROJ,
                    EXPERT_DOWN_PROJ, EXPERT_DOWN_PROJ,
                    FINAL_NORM, FINAL_NORM,
                    LM_HEAD, LM_HEAD)),
    /**
     * OLMoE: both norms are pre-norms despite the name {@code post_attention_layernorm}; q/k norms always; gates
     * are the softmax over all experts unless {@code norm_topk_prob}.
     */
    OLMOE("olmoe", "num_experts", Flag.key("norm_topk_prob", false), Flag.fixed(true), 10000.0, 1e-5,
            List.of("clip_qkv"),
            new NameTable("olmoe",
                    "model.embed_tokens.weight", EMBED,
                    "model.layers.{l}.input_layernorm.weight", ATTN_NORM,
                    "model.layers.{l}.self_attn.q_proj.weight", Q_PROJ,
                    "model.layers.{l}.self_attn.k_proj.weight", K_PROJ,
                    "model.layers.{l}.self_attn.v_proj.weight", V_PROJ,
                    "model.layers.{l}.self_attn.o_proj.weight", O_PROJ,
                    "model.layers.{l}.self_attn.q_norm.weight", Q_NORM,
                    "model.layers.{l}.self_attn.k_norm.weight", K_NORM,
                    "model.layers.{l}.post_attention_layernorm.weight", FFN_NORM,
                    "model.layers.{l}.mlp.gate.weight", ROUTER,
                    "model.layers.{l}.mlp.experts.{j}.gate_proj.weight", EXPERT_GATE_PROJ,
                    "model.layers.{l}.mlp.experts.{j}.up_proj.weight", EXPERT_UP_PROJ,
                    "model.layers.{l}.mlp.experts.{j}.down_proj.weight", EXPERT_DOWN_PROJ,
                    "model.norm.weight", FINAL_NORM,
                    "lm_head.weight", LM_HEAD)),
    /** Mixtral: experts w1/w3/w2 = gate/up/down; top-2 gates always renormalised; no q/k norm, no shared experts. */
    MIXTRAL("mixtral", "num_local_experts", Flag.fixed(true), Flag.fixed(false), 1e6, 1e-5,
            List.of("sliding_window"),
            new NameTable("mixtral",
                    "model.embed_tokens.weight", EMBED,
                    "model.layers.{l}.input_layernorm.weight", ATTN_NORM,
                    "model.layers.{l}.self_attn.q_proj.weight", Q_PROJ,
                    "model.layers.{l}.self_attn.k_proj.weight", K_PROJ,
                    "model.layers.{l}.self_attn.v_proj.weight", V_PROJ,
                    "model.layers.{l}.self_attn.o_proj.weight", O_PROJ,
                    "model.layers.{l}.post_attention_layernorm.weight", FFN_NORM,
                    "model.layers.{l}.block_sparse_moe.gate.weight", ROUTER,
                    "model.layers.{l}.block_sparse_moe.experts.{j}.w1.weight", EXPERT_GATE_PROJ,
                    "model.layers.{l}.block_sparse_moe.experts.{j}.w3.weight", EXPERT_UP_PROJ,
                    "model.layers.{l}.block_sparse_moe.experts.{j}.w2.weight", EXPERT_DOWN_PROJ,
                    "model.norm.weight", FINAL_NORM,
                    "lm_head.weight", LM_HEAD));

    /** A boolean hyper-parameter: read from {@code key} (default when absent or null), or fixed when key is null. */
    private record Flag(String key, boolean value) {
        static Flag key(String key, boolean absent) {
            return new Flag(key, absent);
        }

        static Flag fixed(boolean value) {
            return new Flag(null, value);
        }

        boolean read(JsonNode config, String file) {
            JsonNode v = key == null ? null : config.get(key);
            if (v == null || v.isNull()) {
                return value;
            }
            if (!v.isBoolean()) {
                throw new Moe4jException(file + ": '" + key + "' = " + v + " must be true or false");
            }
            return v.booleanValue();
        }
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    private final String modelType;
    private final String expertsKey;
    private final Flag normTopK;
    private final Flag qkNorm;
    private final double ropeThetaDefault;
    private final double normEpsDefault;
    private final List<String> mustBeNull;
    private final NameTable names;

    HfArchitecture(String modelType, String expertsKey, Flag normTopK, Flag qkNorm, double ropeThetaDefault,
            double normEpsDefault, List<String> mustBeNull, NameTable names) {
        this.modelType = modelType;
        this.expertsKey = expertsKey;
        this.normTopK = normTopK;
        this.qkNorm = qkNorm;
        this.ropeThetaDefault = ropeThetaDefault;
        this.normEpsDefault = normEpsDefault;
        this.mustBeNull = mustBeNull;
        this.names = names;
    }

    /** The config.json {@code model_type} of this architecture. */
    public String modelType() {
        return modelType;
    }

    /** The architecture a config.json describes, from its {@code model_type}. */
    public static HfArchitecture detect(JsonNode config) {
        return detect(config, "config.json");
    }

    /** As {@link #detect(JsonNode)}; {@code file} names the config in messages. */
    public static HfArchitecture detect(JsonNode config, String file) {
        JsonNode type = config == null ? null : config.get("model_type");
        if (type == null || !type.isTextual()) {
            throw new Moe4jException(file + ": 'model_type' is " + (type == null ? "missing" : type)
                    + ", expected one of " + known());
        }
        return ofModelType(type.textValue(), file);
    }

    /** The architecture with this {@code model_type}. */
    public static HfArchitecture ofModelType(String modelType, String file) {
        for (HfArchitecture a : values()) {
            if (a.modelType.equals(modelType)) {
                return a;
            }
        }
        throw new Moe4jException(file + ": 'model_type' = '" + modelType + "' is not a supported MoE architecture, "
                + "expected one of " + known());
    }

    private static String known() {
        return Arrays.stream(values()).map(HfArchitecture::modelType).toList().toString();
    }

    /** The canonical (EMO layout) name of one of this architecture's tensors. */
    public String toCanonical(String hfName) {
        String c = names.toCanonical(hfName);
        if (c == null) {
            throw new Moe4jException(modelType + ": unknown tensor '" + hfName + "' (no row of the " + modelType
                    + " name table matches; its names are " + names.hfPatterns() + ")");
        }
        return c;
    }

    /** This architecture's name for a canonical tensor name. */
    public String fromCanonical(String canonicalName) {
        String h = names.fromCanonical(canonicalName);
        if (h == null) {
            throw new Moe4jException(modelType + ": canonical tensor '" + canonicalName + "' has no " + modelType
                    + " name (the architecture has " + names.canonicalPatterns() + ")");
        }
        return h;
    }

    /** The canonical patterns this architecture's checkpoints can hold ({@link CanonicalNames}). */
    public List<String> canonicalPatterns() {
        return names.canonicalPatterns();
    }

    /** This architecture's own name patterns, row for row with {@link #canonicalPatterns()}. */
    public List<String> hfPatterns() {
        return names.hfPatterns();
    }

    /**
     * Reads the hyper-parameters from a config.json of this architecture: the shared keys through
     * {@link HfConfig} (and its checks), the architecture's own rules for the rest.
     *
     * @param file names the config in messages
     */
    public MoeHyperParameters hyperParameters(JsonNode config, String file) {
        HfConfig c;
        try {
            c = JSON.treeToValue(config, HfConfig.class);
        } catch (JsonMappingException e) {
            String field = e.getPath().stream().map(ref -> ref.getFieldName() != null ? ref.getFieldName()
                    : "[" + ref.getIndex() + "]").collect(Collectors.joining("."));
            throw new Moe4jException(file + ": '" + field + "' " + e.getOriginalMessage(), e);
        } catch (JsonProcessingException e) {
            throw new Moe4jException(file + ": " + e.getOriginalMessage(), e);
        }
        if (c == null) {
            throw new Moe4jException(file + ": config is empty");
        }
        if (!modelType.equals(c.modelType())) {
            throw new Moe4jException(file + ": 'model_type' = '" + c.modelType() + "', expected '" + modelType + "'");
        }
        JsonNode experts = config.get(expertsKey);
        if (experts == null || experts.isNull()) {
            throw new Moe4jException(file + ": '" + expertsKey + "' must be set for " + modelType);
        }
        for (String key : mustBeNull) {
            JsonNode v = config.get(key);
            if (v != null && !v.isNull()) {
                throw new Moe4jException(file + ": '" + key + "' = " + v + " is not supported for " + modelType
                        + " (expected null or absent)");
            }
        }
        c.validate(file);
        return new MoeHyperParameters(c.vocabSize(), c.hiddenSize(), c.numHiddenLayers(), c.numAttentionHeads(),
                c.kvHeads(), c.experts(), c.sharedExperts(), c.numExpertsPerTok(), c.intermediateSize(),
                c.ropeTheta() != null ? c.ropeTheta() : ropeThetaDefault, qkNorm.read(config, file),
                c.rmsNormEps() != null ? c.rmsNormEps() : normEpsDefault, normTopK.read(config, file),
                c.tieWordEmbeddings() != null && c.tieWordEmbeddings());
    }

    /** {@link #detect} then {@link #hyperParameters}. */
    public static MoeHyperParameters readHyperParameters(JsonNode config, String file) {
        return detect(config, file).hyperParameters(config, file);
    }
}
