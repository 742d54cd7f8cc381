package org.moe4j.io.checkpoint;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.JsonNode;
import org.moe4j.Moe4jException;

/**
 * The Hugging Face {@code config.json} of an MoE checkpoint, EMO/OLMoE keys. Keys other models add are ignored on
 * read; training-only settings of moe4j sit in the {@code moe4j} block, kept as JSON so model-io need not know the
 * engine's types. Boxed fields are optional in the file (null when absent). {@code qk_norm} is EMO's flag for
 * RMSNorm on queries and keys (OLMoE always has it, Mixtral never; see {@code HfArchitecture}).
 */
@JsonIgnoreProperties(ignoreUnknown = true)
@JsonInclude(JsonInclude.Include.NON_NULL)
public record HfConfig(
        @JsonProperty("model_type") String modelType,
        @JsonProperty("vocab_size") int vocabSize,
        @JsonProperty("hidden_size") int hiddenSize,
        @JsonProperty("intermediate_size") int intermediateSize,
        @JsonProperty("num_hidden_layers") int numHiddenLayers,
        @JsonProperty("num_attention_heads") int numAttentionHeads,
        @JsonProperty("num_key_value_heads") Integer numKeyValueHeads,
        @JsonProperty("num_experts") Integer numExperts,
        @JsonProperty("num_local_experts") Integer numLocalExperts,
        @JsonProperty("num_experts_per_tok") int numExpertsPerTok,
        @JsonProperty("num_shared_experts") Integer numSharedExperts,
        @JsonProperty("norm_topk_prob") Boolean normTopkProb,
        @JsonProperty("rope_theta") Double ropeTheta,
        @JsonProperty("rms_norm_eps") Double rmsNormEps,
        @JsonProperty("tie_word_embeddings") Boolean tieWordEmbeddings,
        @JsonProperty("max_position_embeddings") Integer maxPositionEmbeddings,
        @JsonProperty("eos_token_id") Integer eosTokenId,
        @JsonProperty("moe4j") JsonNode moe4j,
        @JsonProperty("qk_norm") Boolean qkNorm) {

    /** Without {@code qk_norm} (absent from the file): the constructor from before that key was written. */
    public HfConfig(String modelType, int vocabSize, int hiddenSize, int intermediateSize, int numHiddenLayers,
                    int numAttentionHeads, Integer numKeyValueHeads, Integer numExperts, Integer numLocalExperts,
                    int numExpertsPerTok, Integer numSharedExperts, Boolean normTopkProb, Double ropeTheta,
                    Double rmsNormEps, Boolean tieWordEmbeddings, Integer maxPositionEmbeddings, Integer eosTokenId,
                    JsonNode moe4j) {
        this(modelType, vocabSize, hiddenSize, intermediateSize, numHiddenLayers, numAttentionHeads,
                numKeyValueHeads, numExperts, numLocalExperts, numExpertsPerTok, numSharedExperts, normTopkProb,
                ropeTheta, rmsNormEps, tieWordEmbeddings, maxPositionEmbeddings, eosTokenId, moe4j, null);
    }

    /** Checks the fields every architecture needs; the message names the config.json key and the rule. */
    public HfConfig validate(String file) {
        require(file, modelType != null && !modelType.isBlank(), "model_type", modelType, "must be set");
        positive(file, "vocab_size", vocabSize);
        positive(file, "hidden_size", hiddenSize);
        positive(file, "intermediate_size", intermediateSize);
        positive(file, "num_hidden_layers", numHiddenLayers);
        positive(file, "num_attention_heads", numAttentionHeads);
        require(file, hiddenSize % numAttentionHeads == 0, "hidden_size", hiddenSize,
                "must be divisible by num_attention_heads = " + numAttentionHeads);
        int kv = kvHeads();
        require(file, kv > 0 && numAttentionHeads % kv == 0, "num_key_value_heads", kv,
                "must divide num_attention_heads = " + numAttentionHeads);
        int e = experts();
        require(file, e > 0, "num_experts", e, "must be set and positive (Mixtral: num_local_experts)");
        int s = sharedExperts();
        require(file, s >= 0 && s < e, "num_shared_experts", s, "must be in [0, num_experts = " + e + ")");
        require(file, numExpertsPerTok > s && numExpertsPerTok <= e, "num_experts_per_tok", numExpertsPerTok,
                "must be in (num_shared_experts = " + s + ", num_experts = " + e + "]");
        return this;
    }

    /** KV heads, defaulting to the attention heads. */
    public int kvHeads() {
        return numKeyValueHeads != null ? numKeyValueHeads : numAttentionHeads;
    }

    /** All experts, shared ones included ({@code num_experts}, or Mixtral's {@code num_local_experts}). */
    public int experts() {
        return numExperts != null ? numExperts : numLocalExperts != null ? numLocalExperts : 0;
    }

    public int sharedExperts() {
        return numSharedExperts != null ? numSharedExperts : 0;
    }

    private static void positive(String file, String key, int v) {
        require(file, v > 0, key, v, "must be positive");
    }

    private static void require(String file, boolean ok, String key, Object value, String rule) {
        if (!ok) {
            throw new Moe4jException(file + ": '" + key + "' = " + value + " " + rule);
        }
    }
}
