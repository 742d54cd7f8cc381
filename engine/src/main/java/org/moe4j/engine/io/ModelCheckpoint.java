package org.moe4j.engine.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.io.checkpoint.Checkpoint;
import org.moe4j.io.checkpoint.CheckpointDescriptor;
import org.moe4j.io.checkpoint.HfConfig;
import org.moe4j.simd.DType;
import org.moe4j.simd.Tensor;

/**
 * A model as a Hugging Face checkpoint folder in the EMO layout (config.json with HF keys and the full moe4j
 * config in its "moe4j" block, model*.safetensors under HF tensor names), and optionally the training state beside
 * it: {@code training_state.safetensors} (AdamW moments, flat in the parameter layout) and
 * {@code training_state.json} (step, data position, random streams) — everything an exact resume needs.
 */
public final class ModelCheckpoint {
    public static final String STATE_JSON = "training_state.json";
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long SHARD_BYTES = 2L << 30;

    private ModelCheckpoint() {
    }

    /** Training state to save with the weights. */
    public record TrainState(MemorySegment adamM, MemorySegment adamV, long step, long dataPosition,
                             long routingRngState, long ercRngState, JsonNode extra) {
    }

    public static HfConfig hfConfig(ModelConfig c) {
        JsonNode block;
        try {
            block = JSON.readTree(c.toJson());
        } catch (java.io.IOException e) {
            throw new Moe4jException("ModelConfig JSON: " + e.getMessage());
        }
        return new HfConfig("emo", c.vocab(), c.d(), c.expertHidden(), c.layers(), c.heads(), c.kvHeads(),
                c.experts(), null, c.k(), c.sharedExperts(), c.routing().normalizeTopK(), c.ropeTheta(), c.normEps(),
                false, c.maxSeq(), c.eosId(), block);
    }

    /** Writes the folder atomically; state and tokenizer may be null. */
    public static void save(Path dir, MoeModel model, TrainState state, Path tokenizer) {
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        for (ParamLayout.Entry e : model.layout().entries()) tensors.put(e.name(), model.param(e.name()));
        Map<String, Map<String, Tensor>> extra = new LinkedHashMap<>();
        Map<String, JsonNode> json = new LinkedHashMap<>();
        if (state != null) {
            long n = model.layout().total();
            Map<String, Tensor> st = new LinkedHashMap<>();
            st.put("adamw.exp_avg", Tensor.of(state.adamM(), DType.F32, (int) n));
            st.put("adamw.exp_avg_sq", Tensor.of(state.adamV(), DType.F32, (int) n));
            extra.put(CheckpointDescriptor.TRAINING_STATE, st);
            ObjectNode o = JSON.createObjectNode();
            o.put("step", state.step());
            o.put("data_position", state.dataPosition());
            o.put("routing_rng_state", state.routingRngState());
            o.put("erc_rng_state", state.ercRngState());
            o.put("parameter_count", n);
            if (state.extra() != null) o.set("extra", state.extra());
            json.put(STATE_JSON, o);
        }
        Map<String, Path> copies = tokenizer == null ? Map.of() : Map.of(CheckpointDescriptor.TOKENIZER, tokenizer);
        Checkpoint.write(dir, hfConfig(model.config()), tensors, SHARD_BYTES, extra, json, copies);
    }

    /** The model config of a checkpoint: the moe4j block when present, else derived from the HF keys. */
    public static ModelConfig config(Checkpoint ck) {
        HfConfig h = ck.config();
        if (h.moe4j() != null && !h.moe4j().isNull()) return ModelConfig.fromJson(h.moe4j().toString());
        ModelConfig base = ModelConfig.tiny();
        var routing = new org.moe4j.engine.config.RoutingConfig(Boolean.TRUE.equals(h.normTopkProb()), false,
                org.moe4j.engine.config.PoolConfig.none(), org.moe4j.engine.config.MatryoshkaConfig.off(), 0, 0,
                org.moe4j.engine.config.LbScope.GLOBAL);
        return new ModelConfig(h.vocabSize(), h.hiddenSize(), h.numHiddenLayers(), h.numAttentionHeads(), h.kvHeads(),
                h.experts(), h.sharedExperts(), h.numExpertsPerTok(), h.intermediateSize(),
                h.ropeTheta() == null ? 10000.0 : h.ropeTheta(), false, h.rmsNormEps() == null ? 1e-6 : h.rmsNormEps(),
                h.maxPositionEmbeddings() == null ? 4096 : h.maxPositionEmbeddings(),
                h.eosTokenId() == null ? 0 : h.eosTokenId(), routing, base.loss());
    }

    /** Loads the weights of a checkpoint folder (F32, BF16 or F16, upcast) into a new model. */
    public static MoeModel load(Path dir) {
        return load(dir, null);
    }

    /**
     * As {@link #load(Path)}, into a model of {@code config} instead of the checkpoint's own (null = its own): the
     * same shapes with other routing, loss or EOS settings. Every tensor is checked against this config's layout.
     */
    public static MoeModel load(Path dir, ModelConfig config) {
        try (Checkpoint ck = Checkpoint.open(dir)) {
            ModelConfig c = config != null ? config : config(ck);
            MoeModel m = new MoeModel(c);
            try {
                for (ParamLayout.Entry e : m.layout().entries()) {
                    if (!ck.contains(e.name()))
                        throw new Moe4jException(dir + ": tensor '" + e.name() + "' is missing; the config expects "
                                + java.util.Arrays.toString(e.shape()));
                    Tensor t = ck.tensor(e.name());
                    if (!java.util.Arrays.equals(t.shape(), e.shape()))
                        throw new Moe4jException(dir + ": tensor '" + e.name() + "' has shape "
                                + java.util.Arrays.toString(t.shape()) + ", config expects " + java.util.Arrays.toString(e.shape()));
                    copyInto(t, m.params(), e.offset());
                }
                for (String name : ck.names())
                    if (!m.layout().has(name))
                        throw new Moe4jException(dir + ": tensor '" + name + "' is not a parameter of this model");
            } catch (RuntimeException ex) {
                m.close();
                throw ex;
            }
            return m;
        }
    }

    private static void copyInto(Tensor t, MemorySegment dst, long offset) {
        if (t.dtype() == DType.F32) {
            MemorySegment.copy(t.segment(), 0, dst, offset * Float.BYTES, t.byteSize());
        } else {
            for (long i = 0; i < t.numel(); i++) dst.setAtIndex(Tensor.FLOAT, offset + i, t.get(i));
        }
    }

    /** Reads training_state.* of a checkpoint into the moments and returns the JSON part; error if absent. */
    public static JsonNode loadState(Path dir, MemorySegment adamM, MemorySegment adamV, long params) {
        Path js = dir.resolve(STATE_JSON);
        if (!Files.exists(js)) throw new Moe4jException(dir + ": no " + STATE_JSON + " (the checkpoint has no training state to resume from)");
        try (org.moe4j.io.safetensors.SafetensorsFile f =
                     org.moe4j.io.safetensors.SafetensorsFile.open(dir.resolve(CheckpointDescriptor.TRAINING_STATE))) {
            Tensor m = f.tensor("adamw.exp_avg"), v = f.tensor("adamw.exp_avg_sq");
            if (m.numel() != params || v.numel() != params)
                throw new Moe4jException(dir + ": training state holds " + m.numel() + " moments, the model has " + params + " parameters");
            MemorySegment.copy(m.segment(), 0, adamM, 0, params * 4);
            MemorySegment.copy(v.segment(), 0, adamV, 0, params * 4);
            return JSON.readTree(js.toFile());
        } catch (java.io.IOException e) {
            throw new Moe4jException(js + ": " + e.getMessage());
        }
    }
}
