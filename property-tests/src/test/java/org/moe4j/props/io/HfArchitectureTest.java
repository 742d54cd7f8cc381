package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.moe4j.Moe4jException;
import org.moe4j.io.hf.CanonicalNames;
import org.moe4j.io.hf.HfArchitecture;
import org.moe4j.io.hf.MoeHyperParameters;

/** Hugging Face MoE architectures by example: real config.json files, name tables, and what is refused. */
class HfArchitectureTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** allenai/OLMoE-1B-7B-0924 config.json. */
    static final String OLMOE = """
            {"architectures": ["OlmoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
             "clip_qkv": null, "eos_token_id": 50279, "hidden_act": "silu", "hidden_size": 2048,
             "initializer_range": 0.02, "intermediate_size": 1024, "max_position_embeddings": 4096,
             "model_type": "olmoe", "norm_topk_prob": false, "num_attention_heads": 16, "num_experts": 64,
             "num_experts_per_tok": 8, "num_hidden_layers": 16, "num_key_value_heads": 16,
             "output_router_logits": false, "pad_token_id": 1, "rms_norm_eps": 1e-05, "rope_scaling": null,
             "rope_theta": 10000.0, "router_aux_loss_coef": 0.01, "tie_word_embeddings": false,
             "torch_dtype": "bfloat16", "transformers_version": "4.43.0.dev0", "use_cache": true,
             "vocab_size": 50304}
            """;

    /** mistralai/Mixtral-8x7B-v0.1 config.json. */
    static final String MIXTRAL = """
            {"architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
             "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
             "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mixtral",
             "num_attention_heads": 32, "num_experts_per_tok": 2, "num_hidden_layers": 32,
             "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": false,
             "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02, "sliding_window": null,
             "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.36.0.dev0",
             "use_cache": true, "vocab_size": 32000}
            """;

    static final String EMO = """
            {"model_type": "emo", "vocab_size": 8192, "hidden_size": 256, "intermediate_size": 512,
             "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 17,
             "num_shared_experts": 1, "num_experts_per_tok": 3, "norm_topk_prob": false, "qk_norm": true,
             "rope_theta": 500000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": true}
            """;

    private static ObjectNode json(String s) {
        try {
            return (ObjectNode) JSON.readTree(s);
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private static void assertMessage(Runnable r, String... parts) {
        Moe4jException e = assertThrows(Moe4jException.class, r::run);
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), "mentions " + p + ": " + e.getMessage());
        }
    }

    @Test
    void detectsFromModelType() {
        assertEquals(HfArchitecture.OLMOE, HfArchitecture.detect(json(OLMOE)));
        assertEquals(HfArchitecture.MIXTRAL, HfArchitecture.detect(json(MIXTRAL)));
        assertEquals(HfArchitecture.EMO, HfArchitecture.detect(json(EMO)));
        assertMessage(() -> HfArchitecture.detect(json("{\"model_type\": \"llama\"}"), "m/config.json"),
                "m/config.json", "'model_type'", "'llama'", "olmoe");
        assertMessage(() -> HfArchitecture.detect(json("{}")), "config.json", "'model_type'", "missing");
    }

    @Test
    void readsOlmoeConfig() {
        assertEquals(new MoeHyperParameters(50304, 2048, 16, 16, 16, 64, 0, 8, 1024, 10000.0, true, 1e-5, false,
                false), HfArchitecture.readHyperParameters(json(OLMOE), "olmoe/config.json"));
    }

    @Test
    void readsMixtralConfig() {
        assertEquals(new MoeHyperParameters(32000, 4096, 32, 32, 8, 8, 0, 2, 14336, 1e6, false, 1e-5, true, false),
                HfArchitecture.readHyperParameters(json(MIXTRAL), "mixtral/config.json"));
    }

    @Test
    void readsEmoConfigWithSharedExpertsAndDefaults() {
        assertEquals(new MoeHyperParameters(8192, 256, 4, 4, 2, 17, 1, 3, 512, 500000.0, true, 1e-6, false, true),
                HfArchitecture.readHyperParameters(json(EMO), "emo/config.json"));
        ObjectNode bare = json(EMO);
        bare.remove(List.of("qk_norm", "rope_theta", "rms_norm_eps", "tie_word_embeddings", "norm_topk_prob"));
        MoeHyperParameters p = HfArchitecture.EMO.hyperParameters(bare, "emo/config.json");
        assertEquals(10000.0, p.ropeTheta());
        assertEquals(1e-5, p.normEps());
        assertEquals(false, p.qkNorm());
        assertEquals(false, p.tieEmbeddings());
    }

    @Test
    void refusesConfigsTheEngineWouldRunDifferently() {
        ObjectNode c = json(MIXTRAL).put("sliding_window", 4096);
        assertMessage(() -> HfArchitecture.readHyperParameters(c, "x/config.json"), "x/config.json",
                "'sliding_window'", "4096");
        ObjectNode noLocal = json(MIXTRAL);
        noLocal.remove("num_local_experts");
        noLocal.put("num_experts", 8);
        assertMessage(() -> HfArchitecture.readHyperParameters(noLocal, "x/config.json"), "'num_local_experts'");
        ObjectNode clip = json(OLMOE).put("clip_qkv", 8.0);
        assertMessage(() -> HfArchitecture.readHyperParameters(clip, "o.json"), "o.json", "'clip_qkv'");
        ObjectNode badFlag = json(OLMOE).put("norm_topk_prob", "yes");
        assertMessage(() -> HfArchitecture.readHyperParameters(badFlag, "o.json"), "'norm_topk_prob'", "yes");
        ObjectNode badK = json(OLMOE).put("num_experts_per_tok", 65);
        assertMessage(() -> HfArchitecture.readHyperParameters(badK, "o.json"), "'num_experts_per_tok'", "65");
        assertMessage(() -> HfArchitecture.MIXTRAL.hyperParameters(json(OLMOE), "o.json"), "'model_type'",
                "'olmoe'", "'mixtral'");
    }

    @Test
    void mapsMixtralAndOlmoeNames() {
        assertEquals("model.layers.3.mlp.experts.7.down_proj.weight",
                HfArchitecture.MIXTRAL.toCanonical("model.layers.3.block_sparse_moe.experts.7.w2.weight"));
        assertEquals("model.layers.3.mlp.experts.7.gate_proj.weight",
                HfArchitecture.MIXTRAL.toCanonical("model.layers.3.block_sparse_moe.experts.7.w1.weight"));
        assertEquals("model.layers.3.mlp.experts.7.up_proj.weight",
                HfArchitecture.MIXTRAL.toCanonical("model.layers.3.block_sparse_moe.experts.7.w3.weight"));
        assertEquals("model.layers.31.mlp.gate.weight",
                HfArchitecture.MIXTRAL.toCanonical("model.layers.31.block_sparse_moe.gate.weight"));
        assertEquals("model.layers.0.post_attention_layernorm.weight",
                HfArchitecture.OLMOE.fromCanonical("model.layers.0.pre_feedforward_layernorm.weight"));
        assertEquals("model.layers.0.pre_attention_layernorm.weight",
                HfArchitecture.OLMOE.toCanonical("model.layers.0.input_layernorm.weight"));
        assertEquals("model.layers.12.self_attn.k_norm.weight",
                HfArchitecture.OLMOE.toCanonical("model.layers.12.self_attn.k_norm.weight"));
        assertEquals("lm_head.weight", HfArchitecture.EMO.toCanonical("lm_head.weight"));
    }

    @Test
    void unknownNamesAreRejectedWithTheName() {
        String[][] bad = {
            {"OLMOE", "model.layers.0.block_sparse_moe.experts.0.w1.weight"},
            {"MIXTRAL", "model.layers.0.mlp.experts.0.gate_proj.weight"},
            {"MIXTRAL", "model.layers.01.input_layernorm.weight"},
            {"EMO", "model.layers.0.input_layernorm.weight"},
            {"EMO", "model.layers.x.self_attn.q_proj.weight"},
            {"OLMOE", "model.embed_tokens.weight.extra"},
        };
        for (String[] b : bad) {
            HfArchitecture a = HfArchitecture.valueOf(b[0]);
            assertMessage(() -> a.toCanonical(b[1]), "'" + b[1] + "'", a.modelType());
        }
        assertMessage(() -> HfArchitecture.MIXTRAL.fromCanonical("model.layers.2.self_attn.q_norm.weight"),
                "'model.layers.2.self_attn.q_norm.weight'", "mixtral");
    }

    @Test
    void tablesCoverTheCanonicalLayout() {
        assertEquals(CanonicalNames.ALL, HfArchitecture.EMO.canonicalPatterns());
        assertEquals(CanonicalNames.ALL, HfArchitecture.OLMOE.canonicalPatterns());
        List<String> noQkNorm = new ArrayList<>(CanonicalNames.ALL);
        noQkNorm.removeAll(List.of(CanonicalNames.Q_NORM, CanonicalNames.K_NORM));
        assertEquals(noQkNorm, HfArchitecture.MIXTRAL.canonicalPatterns());
        for (HfArchitecture a : HfArchitecture.values()) {
            for (int r = 0; r < a.hfPatterns().size(); r++) {
                String hf = CanonicalNames.of(a.hfPatterns().get(r), 5, 9);
                String canonical = CanonicalNames.of(a.canonicalPatterns().get(r), 5, 9);
                assertEquals(canonical, a.toCanonical(hf), a + " " + hf);
                assertEquals(hf, a.fromCanonical(canonical), a + " " + canonical);
            }
        }
    }
}
