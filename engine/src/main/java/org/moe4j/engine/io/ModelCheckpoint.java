package org.moe4j.engine.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.MemoryEstimate;
import org.moe4j.engine.config.MatryoshkaConfig;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.PoolConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.io.checkpoint.Checkpoint;
import org.moe4j.io.checkpoint.CheckpointDescriptor;
import org.moe4j.io.checkpoint.CheckpointFolder;
import org.moe4j.io.checkpoint.HfConfig;
import org.moe4j.io.hf.HfArchitecture;
import org.moe4j.io.hf.MoeHyperParameters;
import org.moe4j.io.safetensors.SafetensorsFile;
import org.moe4j.simd.Convert;
import org.moe4j.simd.DType;
import org.moe4j.simd.Tensor;

/**
 * A model as a Hugging Face checkpoint folder. Written in the EMO layout (config.json with HF keys and the full
 * moe4j config in its "moe4j" block, model*.safetensors under the canonical names), optionally with the training
 * state beside it: {@code training_state.safetensors} (AdamW moments, flat in the parameter layout) and
 * {@code training_state.json} (step, data position, random streams) — everything an exact resume needs.
 * Read from any architecture {@link HfArchitecture} knows (EMO, OLMoE, Mixtral): one code path, the architecture's
 * name table and config rules being the only difference.
 */
public final class ModelCheckpoint {
    public static final String STATE_JSON = CheckpointDescriptor.TRAINING_STATE_JSON;
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final System.Logger LOG = System.getLogger(ModelCheckpoint.class.getName());
    private static final long SHARD_BYTES = 2L << 30;

    private ModelCheckpoint() {
    }

    /** Training state to save with the weights. */
    public record TrainState(MemorySegment adamM, MemorySegment adamV, long step, long dataPosition,
                             long routingRngState, long ercRngState, JsonNode extra) {
    }

    /** The EMO config.json of a model: HF keys (qk_norm included) and the full config as the moe4j block. */
    public static HfConfig hfConfig(ModelConfig c) {
        JsonNode block;
        try {
            block = JSON.readTree(c.toJson());
        } catch (java.io.IOException e) {
            throw new Moe4jException("ModelConfig JSON: " + e.getMessage());
        }
        return new HfConfig("emo", c.vocab(), c.d(), c.expertHidden(), c.layers(), c.heads(), c.kvHeads(),
                c.experts(), null, c.k(), c.sharedExperts(), c.routing().normalizeTopK(), c.ropeTheta(), c.normEps(),
                c.tied() ? Boolean.TRUE : Boolean.FALSE, c.maxSeq(), c.eosId(), block, c.qkNorm());
    }

    /** Writes the folder atomically; state and tokenizer may be null. */
    public static void save(Path dir, MoeModel model, TrainState state, Path tokenizer) {
        write(dir, model, state, tokenizer == null ? Map.of() : Map.of(CheckpointDescriptor.TOKENIZER, tokenizer));
    }

    /** Files beside the weights that describe the tokenizer and generation, not the architecture: kept by export. */
    public static final List<String> TOKENIZER_FILES = List.of(CheckpointDescriptor.TOKENIZER, "tokenizer_config.json",
            "special_tokens_map.json", "generation_config.json");

    /** {@link #export(Path, MoeModel, Path)} with no folder to copy tokenizer files from. */
    public static int export(Path dir, MoeModel model) {
        return export(dir, model, null);
    }

    /**
     * Writes {@code model} in the EMO layout without training state ({@link #save}: canonical tensor names, all
     * float32, config.json with {@code model_type: emo}, {@code num_experts}, {@code num_shared_experts},
     * {@code norm_topk_prob}, {@code qk_norm} and the moe4j block), copying the {@link #TOKENIZER_FILES} that
     * {@code from} (the imported folder; may be null) has.
     *
     * @return the number of tensors written
     */
    public static int export(Path dir, MoeModel model, Path from) {
        Map<String, Path> copies = new LinkedHashMap<>();
        if (from != null)
            for (String f : TOKENIZER_FILES) if (Files.isRegularFile(from.resolve(f))) copies.put(f, from.resolve(f));
        // a tied checkpoint whose LM head still equals its embedding is written tied: one tensor, as Hugging Face reads it
        boolean tied = model.config().tied() || from != null && tiedEmbeddings(from) && headEqualsEmbedding(model);
        write(dir, model, null, copies, tied);
        // a tied config's layout has no lm_head; an untied one whose head equals the embedding leaves it out here
        return model.layout().entries().size() - (tied && !model.config().tied() ? 1 : 0);
    }

    private static void write(Path dir, MoeModel model, TrainState state, Map<String, Path> copies) {
        write(dir, model, state, copies, false);
    }

    /** Whether the folder's config.json says {@code tie_word_embeddings: true}. */
    public static boolean tiedEmbeddings(Path dir) {
        JsonNode raw = readConfigJson(dir.resolve(CheckpointDescriptor.CONFIG));
        return raw.path("tie_word_embeddings").asBoolean(false);
    }

    private static boolean headEqualsEmbedding(MoeModel m) {
        ParamLayout.Entry emb = m.layout().entry(ParamLayout.embedTokens()), head = m.layout().entry(ParamLayout.lmHead());
        long bytes = emb.numel() * Float.BYTES;
        return MemorySegment.mismatch(m.params(), emb.offset() * Float.BYTES, emb.offset() * Float.BYTES + bytes,
                m.params(), head.offset() * Float.BYTES, head.offset() * Float.BYTES + bytes) < 0;
    }

    private static void write(Path dir, MoeModel model, TrainState state, Map<String, Path> copies, boolean tied) {
        if (!model.layout().isWhole())
            throw new Moe4jException(dir + ": cannot write a checkpoint of a model holding routed experts "
                    + model.layout().firstExpert() + ".." + (model.layout().firstExpert() + model.layout().heldExperts() - 1)
                    + " only (an expert-parallel rank's); gather the whole model first (ExpertParallel.gather)");
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        for (ParamLayout.Entry e : model.layout().entries())
            if (!(tied && e.name().equals(ParamLayout.lmHead()))) tensors.put(e.name(), model.param(e.name()));
        Map<String, Map<String, Tensor>> extra = new LinkedHashMap<>();
        Map<String, JsonNode> json = new LinkedHashMap<>();
        if (state != null) {
            long n = model.layout().total();
            Map<String, Tensor> st = new LinkedHashMap<>();
            st.put("adamw.exp_avg", Tensor.of(state.adamM(), DType.F32, (int) n));
            st.put("adamw.exp_avg_sq", Tensor.of(state.adamV(), DType.F32, (int) n));
            extra.put(CheckpointDescriptor.TRAINING_STATE, st);
            ObjectNode o = new TrainingState(state.step(), state.dataPosition(), state.routingRngState(),
                    state.ercRngState(), n, state.extra()).toJson();
            json.put(STATE_JSON, o);
        }
        HfConfig h = hfConfig(model.config());
        if (tied)
            h = new HfConfig(h.modelType(), h.vocabSize(), h.hiddenSize(), h.intermediateSize(), h.numHiddenLayers(),
                    h.numAttentionHeads(), h.numKeyValueHeads(), h.numExperts(), h.numLocalExperts(), h.numExpertsPerTok(),
                    h.numSharedExperts(), h.normTopkProb(), h.ropeTheta(), h.rmsNormEps(), Boolean.TRUE,
                    h.maxPositionEmbeddings(), h.eosTokenId(), h.moe4j(), h.qkNorm());
        Checkpoint.write(dir, h, tensors, SHARD_BYTES, extra, json, copies);
    }

    /**
     * A checkpoint folder read into a model.
     *
     * @param model        the parameters, upcast to float32, under canonical (EMO) names
     * @param architecture what config.json's {@code model_type} named
     * @param tensors      tensors read from the files
     * @param notes        what the import did beyond a plain copy (a tied LM head, a config derived from HF keys)
     */
    public record Imported(MoeModel model, HfArchitecture architecture, int tensors, List<String> notes) {
        public Imported {
            notes = List.copyOf(notes);
        }
    }

    /** The model config of a checkpoint: the moe4j block when present, else derived from the HF keys. */
    public static ModelConfig config(Checkpoint ck) {
        Path file = ck.dir().resolve(CheckpointDescriptor.CONFIG);
        JsonNode raw = readConfigJson(file);
        return config(raw, HfArchitecture.detect(raw, file.toString()), file.toString());
    }

    /**
     * The model config of a config.json of architecture {@code arch}: its moe4j block when present (a checkpoint
     * moe4j wrote), else the architecture's hyper-parameters ({@link HfArchitecture#hyperParameters}) as an
     * inference config — standard top-k routing (no document pool, no Matryoshka, no capacity), gates renormalised
     * when the architecture says so (Mixtral always, OLMoE per {@code norm_topk_prob}), default loss weights,
     * maxSeq from {@code max_position_embeddings} (4096 when absent), EOS from {@code eos_token_id} (0 when absent).
     */
    public static ModelConfig config(JsonNode raw, HfArchitecture arch, String file) {
        JsonNode block = raw.get("moe4j");
        boolean tied = raw.path("tie_word_embeddings").asBoolean(false);
        if (block != null && !block.isNull()) {
            ModelConfig c = ModelConfig.fromJson(block.toString());
            // a block written before tieEmbeddings existed says nothing of it: the HF key does
            if (tied && !c.tied()) c = c.withTied(true);
            requireAgreement(raw, c, file);
            return c;
        }
        refuseUnsupportedKeys(raw, file);
        MoeHyperParameters h = arch.hyperParameters(raw, file);
        var routing = new RoutingConfig(h.normTopK(), false, PoolConfig.none(), MatryoshkaConfig.off(), 0, 0,
                LbScope.GLOBAL);
        JsonNode maxPos = raw.get("max_position_embeddings");
        JsonNode eos = raw.get("eos_token_id");
        int eosId = eos == null || eos.isNull() ? 0 : eos.isInt() ? eos.intValue() : -1;
        if (eosId < 0 || eosId >= h.vocab())
            throw new Moe4jException(file + ": 'eos_token_id' = " + eos + " must be one token id in [0, vocab_size = "
                    + h.vocab() + ")");
        return new ModelConfig(h.vocab(), h.d(), h.layers(), h.heads(), h.kvHeads(), h.experts(), h.shared(), h.k(),
                h.hidden(), h.ropeTheta(), h.qkNorm(), h.normEps(),
                maxPos == null || !maxPos.canConvertToInt() || maxPos.intValue() < 1 ? 4096 : maxPos.intValue(),
                eosId, routing, LossWeights.defaults()).withTied(tied);
    }

    /**
     * The Hugging Face keys of a config.json moe4j wrote must say what its moe4j block says: other readers use the
     * keys, moe4j the block, so a file where they differ (edited by hand, or damaged) would be two models. Keys that
     * are absent are not compared.
     */
    private static void requireAgreement(JsonNode raw, ModelConfig c, String file) {
        Object[][] pairs = {{"vocab_size", c.vocab()}, {"hidden_size", c.d()}, {"intermediate_size", c.expertHidden()},
                {"num_hidden_layers", c.layers()}, {"num_attention_heads", c.heads()},
                {"num_key_value_heads", c.kvHeads()}, {"num_experts", c.experts()}, {"num_experts_per_tok", c.k()},
                {"num_shared_experts", c.sharedExperts()}, {"max_position_embeddings", c.maxSeq()},
                {"eos_token_id", c.eosId()}, {"rope_theta", c.ropeTheta()}, {"rms_norm_eps", c.normEps()},
                {"qk_norm", c.qkNorm()}, {"norm_topk_prob", c.routing().normalizeTopK()},
                {"tie_word_embeddings", c.tied()}};
        for (Object[] p : pairs) {
            JsonNode v = raw.get((String) p[0]);
            if (v == null || v.isNull()) continue;
            boolean same = switch (p[1]) {
                case Integer i -> v.isIntegralNumber() && v.canConvertToLong() && v.longValue() == i;
                case Double d -> v.isNumber() && v.doubleValue() == d;
                case Boolean b -> v.isBoolean() && v.booleanValue() == b;
                default -> false;
            };
            if (!same)
                throw new Moe4jException(file + ": '" + p[0] + "' = " + v + " disagrees with the moe4j block, which says "
                        + p[1] + " (one of them was changed; the file describes two different models)");
        }
    }

    /**
     * Keys every architecture shares whose values would make the engine compute something else than the checkpoint
     * was trained to: refused by name rather than run wrongly.
     */
    private static void refuseUnsupportedKeys(JsonNode raw, String file) {
        JsonNode act = raw.get("hidden_act");
        if (act != null && !act.isNull() && !"silu".equals(act.asText()))
            throw new Moe4jException(file + ": 'hidden_act' = " + act + " is not supported (the experts are SwiGLU: \"silu\")");
        JsonNode scaling = raw.get("rope_scaling");
        if (scaling != null && !scaling.isNull())
            throw new Moe4jException(file + ": 'rope_scaling' = " + scaling + " is not supported (expected null or absent)");
        JsonNode bias = raw.get("attention_bias");
        if (bias != null && !bias.isNull() && !(bias.isBoolean() && !bias.booleanValue()))
            throw new Moe4jException(file + ": 'attention_bias' = " + bias + " is not supported (attention has no biases)");
        JsonNode headDim = raw.get("head_dim");
        JsonNode hidden = raw.get("hidden_size"), heads = raw.get("num_attention_heads");
        if (headDim != null && !headDim.isNull() && hidden != null && heads != null && heads.asInt() > 0
                && headDim.asInt() != hidden.asInt() / heads.asInt())
            throw new Moe4jException(file + ": 'head_dim' = " + headDim + " is not supported; the engine's head size is "
                    + "hidden_size / num_attention_heads = " + hidden.asInt() / heads.asInt());
    }

    /** Loads a checkpoint folder of any supported architecture ({@link #importCheckpoint}); notes go to the log. */
    public static MoeModel load(Path dir) {
        return load(dir, null);
    }

    /**
     * As {@link #load(Path)}, into a model of {@code config} instead of the checkpoint's own (null = its own): the
     * same shapes with other routing, loss or EOS settings. Every tensor is checked against this config's layout.
     */
    public static MoeModel load(Path dir, ModelConfig config) {
        return load(dir, config, null);
    }

    /**
     * As {@link #load(Path, ModelConfig)}, into a model of the layout {@code layoutOf} gives for the config (null: the
     * whole model): an expert-parallel rank's layout loads the dense tensors and its own experts only, the other
     * experts being checked against the config but not read.
     */
    public static MoeModel load(Path dir, ModelConfig config, Function<ModelConfig, ParamLayout> layoutOf) {
        Imported im = importCheckpoint(dir, config, true, layoutOf);
        for (String note : im.notes()) LOG.log(System.Logger.Level.INFO, note);
        return im.model();
    }

    /** {@link #importCheckpoint(Path, ModelConfig)} with the checkpoint's own config. */
    public static Imported importCheckpoint(Path dir) {
        return importCheckpoint(dir, null);
    }

    /**
     * Reads a checkpoint folder of any architecture {@link HfArchitecture} knows (EMO, OLMoE, Mixtral) into a new
     * model: the architecture from config.json's {@code model_type}, the config from {@link #config(JsonNode,
     * HfArchitecture, String)}, every tensor renamed to its canonical name through the architecture's name table
     * and upcast from BF16/F16 to float32. Every tensor the model needs must be there with its exact shape, and
     * every tensor there must be one the model needs; all such problems are reported together, each with the
     * tensor, the file that holds it and the expected shape.
     *
     * <p>Tied embeddings ({@code tie_word_embeddings: true}): the engine's LM head is a parameter of its own, so it
     * starts as a copy of the embedding (said in {@link Imported#notes()}); {@link #export} writes it tied again (one
     * tensor) while the two are equal, as after {@code convert}; after training they differ and an export writes
     * both. A stored {@code lm_head.weight} that differs from the embedding is refused: HF
     * would ignore it, silently dropping it would hide a broken file.
     *
     * @param config the config to load into instead of the checkpoint's own (null = its own; same shapes, e.g. other
     *               routing or loss settings)
     */
    public static Imported importCheckpoint(Path dir, ModelConfig config) {
        return importCheckpoint(dir, config, true);
    }

    /** As {@link #importCheckpoint(Path, ModelConfig)}; without {@code gradients} the model has no gradient buffer. */
    public static Imported importCheckpoint(Path dir, ModelConfig config, boolean gradients) {
        return importCheckpoint(dir, config, gradients, null);
    }

    /**
     * As {@link #importCheckpoint(Path, ModelConfig, boolean)}; {@code layoutOf} (null: the whole model) gives the
     * layout of the model to read into for the final config, a part of the whole one (an expert-parallel rank's): every
     * tensor is still checked, only those of that layout are copied.
     */
    public static Imported importCheckpoint(Path dir, ModelConfig config, boolean gradients,
                                            Function<ModelConfig, ParamLayout> layoutOf) {
        CheckpointFolder.recover(dir);
        Path configFile = dir.resolve(CheckpointDescriptor.CONFIG);
        String file = configFile.toString();
        JsonNode raw = readConfigJson(configFile);
        HfArchitecture arch = HfArchitecture.detect(raw, file);
        boolean tied = raw.path("tie_word_embeddings").asBoolean(false);
        ModelConfig c = config != null ? config : config(raw, arch, file);
        if (tied && !c.tied()) c = c.withTied(true); // one parameter: the LM head is the embedding
        List<String> notes = new ArrayList<>();
        JsonNode block = raw.get("moe4j");
        if (config == null && (block == null || block.isNull()))
            notes.add(file + ": " + arch.modelType() + " config read from its Hugging Face keys: " + describe(c));
        try (Checkpoint ck = Checkpoint.open(dir)) {
            TensorFiles files = new TensorFiles(dir);
            // every size is checked against the files and the machine before anything of the model's size is
            // allocated: a config.json that says 2^31 tokens or 10^5 experts must not reach the allocator
            // (a layout a few times the files' tensor count is still cheap to build, and then every missing
            // tensor is reported by name; far beyond it the config is not this checkpoint's)
            double expected = MemoryEstimate.tensors(c);
            if (expected > 4.0 * ck.names().size() + 64)
                throw new Moe4jException(dir + ": " + file + " (" + describe(c) + ") describes "
                        + String.format(java.util.Locale.ROOT, "%.0f", expected) + " tensors, the checkpoint holds "
                        + ck.names().size() + "; the config does not fit the weights");
            ParamLayout layout = new ParamLayout(c);
            List<String> problems = new ArrayList<>();
            boolean unknown = false;
            Map<String, String> hfOf = new LinkedHashMap<>(); // canonical -> the HF name it was stored under
            for (String name : ck.names()) {
                String canonical;
                try {
                    canonical = arch.toCanonical(name);
                } catch (Moe4jException ex) {
                    problems.add(files.of(name) + ": unknown tensor '" + name + "' (no row of the "
                            + arch.modelType() + " name table matches)");
                    unknown = true;
                    continue;
                }
                if (!layout.has(canonical)) {
                    problems.add(files.of(name) + ": tensor '" + name + "' (canonical '" + canonical
                            + "') is not a parameter of this model");
                    continue;
                }
                String before = hfOf.put(canonical, name);
                if (before != null)
                    problems.add(files.of(name) + ": tensors '" + before + "' and '" + name + "' both map to '"
                            + canonical + "'");
            }
            String lmHead = ParamLayout.lmHead();
            for (ParamLayout.Entry e : layout.entries()) {
                String name = hfOf.get(e.name());
                if (name == null) {
                    if (!(tied && e.name().equals(lmHead)))
                        problems.add(dir + ": tensor '" + arch.fromCanonical(e.name()) + "' is missing; the config "
                                + "expects shape " + Arrays.toString(e.shape()));
                    continue;
                }
                int[] shape = ck.tensor(name).shape();
                if (!Arrays.equals(shape, e.shape()))
                    problems.add(files.of(name) + ": tensor '" + name + "' has shape " + Arrays.toString(shape)
                            + ", config expects " + Arrays.toString(e.shape()));
            }
            if (!problems.isEmpty()) {
                int shown = Math.min(problems.size(), MAX_PROBLEMS);
                throw new Moe4jException(dir + ": " + arch.modelType() + " checkpoint does not fit its config ("
                        + describe(c) + "), " + problems.size() + " problem" + (problems.size() == 1 ? "" : "s")
                        + ":\n  "
                        + String.join("\n  ", problems.subList(0, shown))
                        + (shown < problems.size() ? "\n  ... and " + (problems.size() - shown) + " more" : "")
                        + (unknown ? "\n  (" + arch.modelType() + " tensor names are " + arch.hfPatterns() + ")" : ""));
            }
            ParamLayout part = layoutOf == null ? layout : layoutOf.apply(c);
            if (part.whole().total() != layout.total())
                throw new Moe4jException(dir + ": the layout to load into is not one of this config's (" + describe(c) + ")");
            // what this process holds (an expert-parallel rank: its share), with gradients only when it trains
            MemoryEstimate.requireModel(c, file, part.total(), gradients);
            MoeModel m = new MoeModel(part, gradients);
            try {
                for (ParamLayout.Entry e : m.layout().entries()) {
                    String name = hfOf.get(e.name());
                    if (name != null) copyInto(ck.tensor(name), m.params(), e.offset());
                }
                if (tied) tieHead(dir, files, arch, ck, hfOf.get(ParamLayout.embedTokens()), hfOf.get(lmHead), notes);
                return new Imported(m, arch, hfOf.size(), notes);
            } catch (RuntimeException ex) {
                m.close();
                throw ex;
            }
        }
    }

    private static final int MAX_PROBLEMS = 20;

    /**
     * Tied embeddings are one parameter (the layout has no lm_head); a stored {@code lm_head.weight} must equal the
     * stored embedding, element for element, and is then not used.
     */
    private static void tieHead(Path dir, TensorFiles files, HfArchitecture arch, Checkpoint ck, String embName,
                                String headName, List<String> notes) {
        if (headName == null) {
            notes.add(dir + ": tie_word_embeddings is true: the LM head is the embedding (one parameter, one gradient, "
                    + "written once)");
            return;
        }
        Tensor emb = ck.tensor(embName), head = ck.tensor(headName);
        long diff = -1;
        if (!java.util.Arrays.equals(emb.shape(), head.shape())) diff = 0;
        else if (emb.dtype() == head.dtype()) {
            long at = MemorySegment.mismatch(emb.segment(), 0, emb.byteSize(), head.segment(), 0, head.byteSize());
            diff = at < 0 ? -1 : at / emb.dtype().byteSize();
        }
        else
            for (long i = 0; i < emb.numel() && diff < 0; i++) if (emb.get(i) != head.get(i)) diff = i;
        if (diff >= 0)
            throw new Moe4jException(files.of(headName) + ": 'tie_word_embeddings' is true but tensor '" + headName
                    + "' differs from '" + embName + "' (at element " + diff + "); remove one or set "
                    + "tie_word_embeddings to false");
        notes.add(dir + ": tied embeddings; the stored lm_head equals the embedding and is not used (the LM head is the "
                + "embedding)");
    }

    /** Names the file that holds a tensor: its shard from the index (read once, when first asked), or model.safetensors. */
    private static final class TensorFiles {
        private final Path dir;
        private JsonNode weightMap;

        TensorFiles(Path dir) {
            this.dir = dir;
        }

        String of(String tensor) {
            Path index = dir.resolve(CheckpointDescriptor.INDEX);
            if (!Files.exists(index)) return dir.resolve(CheckpointDescriptor.SINGLE_WEIGHTS).toString();
            if (weightMap == null) {
                try {
                    weightMap = JSON.readTree(index.toFile()).path("weight_map");
                } catch (java.io.IOException e) {
                    return index.toString(); // Checkpoint.open has read it already: not expected
                }
            }
            JsonNode f = weightMap.get(tensor);
            return f != null && f.isTextual() ? dir.resolve(f.textValue()).toString() : index.toString();
        }
    }

    private static String describe(ModelConfig c) {
        return String.format(java.util.Locale.ROOT, "vocab %d, d %d, %d layers, %d heads (%d kv), E %d (shared %d), "
                        + "k %d, h %d, qkNorm %s, normalizeTopK %s, rope theta %s, eps %s", c.vocab(), c.d(), c.layers(),
                c.heads(), c.kvHeads(), c.experts(), c.sharedExperts(), c.k(), c.expertHidden(), c.qkNorm(),
                c.routing().normalizeTopK(), c.ropeTheta(), c.normEps())
                + (c.layerExperts() == null ? "" : ", E per layer " + c.layerExperts())
                + (c.layerK() == null ? "" : ", k per layer " + c.layerK());
    }

    private static JsonNode readConfigJson(Path file) {
        try {
            JsonNode n = JSON.readTree(file.toFile());
            if (n == null || !n.isObject()) throw new Moe4jException(file + ": expected a JSON object");
            return n;
        } catch (java.io.FileNotFoundException | java.nio.file.NoSuchFileException e) {
            throw new Moe4jException(file + ": file not found (expected a Hugging Face checkpoint folder)");
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new Moe4jException(file + ": malformed JSON: " + e.getOriginalMessage());
        } catch (java.io.IOException e) {
            throw new Moe4jException(file + ": cannot read: " + e);
        }
    }

    /** t (F32, BF16 or F16) -> float32 at dst[offset ..]. */
    private static void copyInto(Tensor t, MemorySegment dst, long offset) {
        switch (t.dtype()) {
            case F32 -> MemorySegment.copy(t.segment(), 0, dst, offset * Float.BYTES, t.byteSize());
            case BF16 -> Convert.bf16ToF32(t.segment(), 0, dst, offset, t.numel());
            case F16 -> Convert.f16ToF32(t.segment(), 0, dst, offset, t.numel());
        }
    }

    /**
     * Reads training_state.* of a checkpoint into the moments and returns the validated {@link TrainingState};
     * error if absent, or if the moments are not two float32 vectors of {@code params} elements, or the state
     * was saved for another parameter count.
     */
    public static TrainingState loadState(Path dir, MemorySegment adamM, MemorySegment adamV, long params) {
        return loadState(dir, adamM, adamV, params, null);
    }

    /**
     * As {@link #loadState(Path, MemorySegment, MemorySegment, long)} into the moments of a model of {@code layout},
     * a part of the whole one (an expert-parallel rank's): only its tensors' moments are copied, each from its place
     * in the whole layout; {@code layout.whole().total()} is the parameter count the state must have.
     */
    public static TrainingState loadState(Path dir, MemorySegment adamM, MemorySegment adamV, ParamLayout layout) {
        return loadState(dir, adamM, adamV, layout.whole().total(), layout);
    }

    private static TrainingState loadState(Path dir, MemorySegment adamM, MemorySegment adamV, long params,
                                           ParamLayout part) {
        CheckpointFolder.recover(dir);
        Path js = dir.resolve(STATE_JSON);
        if (!Files.exists(js)) throw new Moe4jException(dir + ": no " + STATE_JSON + " (the checkpoint has no training state to resume from)");
        TrainingState state = TrainingState.read(js);
        if (state.parameterCount() != params)
            throw new Moe4jException(js + ": '" + TrainingState.PARAMETER_COUNT + "' = " + state.parameterCount()
                    + ", the model has " + params + " parameters");
        Path moments = dir.resolve(CheckpointDescriptor.TRAINING_STATE);
        try (SafetensorsFile f = SafetensorsFile.open(moments)) {
            copyMoment(f, "adamw.exp_avg", adamM, params, part);
            copyMoment(f, "adamw.exp_avg_sq", adamV, params, part);
        }
        return state;
    }

    private static void copyMoment(SafetensorsFile f, String name, MemorySegment dst, long params, ParamLayout part) {
        SafetensorsFile.Entry e = f.entry(name);
        if (e.dtype() != DType.F32 || e.shape().length != 1 || e.numel() != params)
            throw new Moe4jException(f.path() + ": tensor '" + name + "' is "
                    + org.moe4j.io.safetensors.SafetensorsDescriptor.name(e.dtype()) + Arrays.toString(e.shape())
                    + ", expected F32[" + params + "] (one moment per parameter)");
        long held = part == null ? params : part.total();
        if (dst.byteSize() < held * Float.BYTES)
            throw new Moe4jException(f.path() + ": tensor '" + name + "' holds " + held + " moments for this model, the "
                    + "optimizer buffer " + dst.byteSize() / Float.BYTES);
        MemorySegment src = f.tensor(name).segment();
        if (part == null || part.isWhole()) {
            MemorySegment.copy(src, 0, dst, 0, params * Float.BYTES);
            return;
        }
        ParamLayout whole = part.whole(); // a rank's slice: each tensor's moments from its place in the whole model
        for (ParamLayout.Entry t : part.entries())
            MemorySegment.copy(src, whole.offset(t.name()) * Float.BYTES, dst, t.offset() * Float.BYTES,
                    t.numel() * Float.BYTES);
    }
}
