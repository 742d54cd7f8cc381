package org.moe4j.engine.config;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.NullNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.List;

/**
 * The model (ALGORITHMS.md section 1) and its routing. Experts are numbered 0..E-1; the shared ones are the LAST
 * {@code sharedExperts} indices; {@code k} counts experts per token with the shared ones included, so a token has
 * k' = k - s routed picks among E' = E - s routed experts.
 *
 * <p>Per-layer expert counts (a checkpoint pruned to a different K per layer): {@code layerExperts} lists E_l for
 * every layer, and then {@code experts} is the largest of them (what buffers shared by all layers are sized for).
 * Layer l routes k_l = {@code layerK[l]} experts per token, shared included, or min(k, E_l) when {@code layerK} is
 * absent; {@code layerK} may also be given with one E for every layer. Both are null for a uniform model, and are
 * then left out of the JSON, so a uniform model's config is exactly what it was before they existed.
 *
 * <p>{@code tieEmbeddings} (Hugging Face's {@code tie_word_embeddings}): the LM head is the embedding matrix, one
 * parameter whose gradient is the sum of both uses. True or null (false is stored as null and left out of the JSON).
 */
public record ModelConfig(int vocab, int d, int layers, int heads, int kvHeads, int experts, int sharedExperts,
                          int k, int expertHidden, double ropeTheta, boolean qkNorm, double normEps, int maxSeq,
                          int eosId, RoutingConfig routing, LossWeights loss,
                          @JsonInclude(JsonInclude.Include.NON_NULL) List<Integer> layerExperts,
                          @JsonInclude(JsonInclude.Include.NON_NULL) List<Integer> layerK,
                          @JsonInclude(JsonInclude.Include.NON_NULL) Boolean tieEmbeddings) {

    /** A model with the same E and k in every layer, untied. */
    public ModelConfig(int vocab, int d, int layers, int heads, int kvHeads, int experts, int sharedExperts, int k,
                       int expertHidden, double ropeTheta, boolean qkNorm, double normEps, int maxSeq, int eosId,
                       RoutingConfig routing, LossWeights loss) {
        this(vocab, d, layers, heads, kvHeads, experts, sharedExperts, k, expertHidden, ropeTheta, qkNorm, normEps,
                maxSeq, eosId, routing, loss, null, null, null);
    }

    /** A model with per-layer E and k (either null = uniform), untied. */
    public ModelConfig(int vocab, int d, int layers, int heads, int kvHeads, int experts, int sharedExperts, int k,
                       int expertHidden, double ropeTheta, boolean qkNorm, double normEps, int maxSeq, int eosId,
                       RoutingConfig routing, LossWeights loss, List<Integer> layerExperts, List<Integer> layerK) {
        this(vocab, d, layers, heads, kvHeads, experts, sharedExperts, k, expertHidden, ropeTheta, qkNorm, normEps,
                maxSeq, eosId, routing, loss, layerExperts, layerK, null);
    }

    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(SerializationFeature.INDENT_OUTPUT)
            .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
            .enable(DeserializationFeature.FAIL_ON_MISSING_CREATOR_PROPERTIES);

    public ModelConfig {
        positive("vocab", vocab);
        positive("d", d);
        positive("layers", layers);
        positive("heads", heads);
        if (d % heads != 0) throw ConfigException.of("ModelConfig.d", d, "must be a multiple of heads = " + heads);
        if ((d / heads) % 2 != 0)
            throw ConfigException.of("ModelConfig.heads", heads, "head size d/heads = " + (d / heads) + " must be even for RoPE");
        positive("kvHeads", kvHeads);
        if (heads % kvHeads != 0)
            throw ConfigException.of("ModelConfig.kvHeads", kvHeads, "must divide heads = " + heads);
        positive("experts", experts);
        if (sharedExperts < 0 || sharedExperts >= experts)
            throw ConfigException.of("ModelConfig.sharedExperts", sharedExperts,
                    "must be in [0, experts - 1] = [0, " + (experts - 1) + "] (at least one routed expert)");
        if (k <= sharedExperts || k > experts)
            throw ConfigException.of("ModelConfig.k", k, "must be in [sharedExperts + 1, experts] = ["
                    + (sharedExperts + 1) + ", " + experts + "] (k counts the shared experts)");
        positive("expertHidden", expertHidden);
        if (!(ropeTheta > 0) || Double.isInfinite(ropeTheta))
            throw ConfigException.of("ModelConfig.ropeTheta", ropeTheta, "must be finite and > 0");
        if (!(normEps > 0) || Double.isInfinite(normEps))
            throw ConfigException.of("ModelConfig.normEps", normEps, "must be finite and > 0");
        positive("maxSeq", maxSeq);
        if (eosId < 0 || eosId >= vocab)
            throw ConfigException.of("ModelConfig.eosId", eosId, "must be a token id in [0, vocab) = [0, " + vocab + ")");
        if (routing == null) throw ConfigException.of("ModelConfig.routing", null, "must be given");
        if (loss == null) throw ConfigException.of("ModelConfig.loss", null, "must be given");
        int routed = experts - sharedExperts;
        PoolConfig p = routing.pool();
        if (p.mode() == PoolMode.EMO) {
            if (p.poolMin() > routed)
                throw ConfigException.of("ModelConfig.routing.pool.poolMin", p.poolMin(),
                        "must be <= routed experts E - s = " + routed);
            if (p.poolMax() > routed)
                throw ConfigException.of("ModelConfig.routing.pool.poolMax", p.poolMax(),
                        "must be <= routed experts E - s = " + routed);
            if (p.evalPool() > routed)
                throw ConfigException.of("ModelConfig.routing.pool.evalPool", p.evalPool(),
                        "must be <= routed experts E - s = " + routed);
        }
        MatryoshkaConfig m = routing.matryoshka();
        if (m.mode() != MatryoshkaMode.OFF && m.kMax() > routed)
            throw ConfigException.of("ModelConfig.routing.matryoshka.kMax", m.kMax(),
                    "must be <= routed experts E - s = " + routed);
        if (Boolean.FALSE.equals(tieEmbeddings)) tieEmbeddings = null; // one value for "untied": equal configs are equal
        layerExperts = perLayer("layerExperts", layerExperts, layers);
        if (layerExperts != null) {
            int max = 0;
            for (int l = 0; l < layers; l++) {
                int e = layerExperts.get(l);
                if (e <= sharedExperts || e > experts)
                    throw ConfigException.of("ModelConfig.layerExperts", layerExperts, "layer " + l + " has " + e
                            + " experts, must be in [sharedExperts + 1, experts] = [" + (sharedExperts + 1) + ", "
                            + experts + "]");
                max = Math.max(max, e);
            }
            if (max != experts)
                throw ConfigException.of("ModelConfig.experts", experts, "must be the largest of layerExperts "
                        + layerExperts + " = " + max);
        }
        layerK = perLayer("layerK", layerK, layers);
        if (layerK != null)
            for (int l = 0; l < layers; l++) {
                int kl = layerK.get(l), el = layerExperts == null ? experts : layerExperts.get(l);
                if (kl <= sharedExperts || kl > Math.min(k, el))
                    throw ConfigException.of("ModelConfig.layerK", layerK, "layer " + l + " routes " + kl
                            + " experts per token, must be in [sharedExperts + 1, min(k, experts of the layer)] = ["
                            + (sharedExperts + 1) + ", " + Math.min(k, el) + "]");
            }
    }

    /** null stays null; otherwise exactly one non-null entry per layer, copied (the record stays immutable). */
    private static List<Integer> perLayer(String field, List<Integer> v, int layers) {
        if (v == null) return null;
        if (v.size() != layers)
            throw ConfigException.of("ModelConfig." + field, v, "must list one value per layer: " + layers
                    + " values, got " + v.size());
        for (Integer i : v)
            if (i == null) throw ConfigException.of("ModelConfig." + field, v, "must not hold null");
        return List.copyOf(v);
    }

    private static void positive(String field, int v) {
        if (v <= 0) throw ConfigException.of("ModelConfig." + field, v, "must be > 0");
    }

    /** E' = E - s, the routed experts (the largest layer's with per-layer counts). */
    public int routedExperts() {
        return experts - sharedExperts;
    }

    /** Whether the LM head is the embedding matrix (one parameter). */
    public boolean tied() {
        return Boolean.TRUE.equals(tieEmbeddings);
    }

    /** This config with tied (true) or separate (false) embedding and LM head. */
    public ModelConfig withTied(boolean tied) {
        return new ModelConfig(vocab, d, layers, heads, kvHeads, experts, sharedExperts, k, expertHidden, ropeTheta,
                qkNorm, normEps, maxSeq, eosId, routing, loss, layerExperts, layerK, tied ? Boolean.TRUE : null);
    }

    /** E_l, the experts of layer l (shared included). */
    public int experts(int l) {
        return layerExperts == null ? experts : layerExperts.get(l);
    }

    /** E_l - s, the routed experts of layer l. */
    public int routedExperts(int l) {
        return experts(l) - sharedExperts;
    }

    /** k_l, the experts per token of layer l, shared included: layerK[l], or min(k, E_l). */
    public int k(int l) {
        return layerK != null ? layerK.get(l) : Math.min(k, experts(l));
    }

    /** k_l - s, layer l's routed picks per token when Matryoshka is off. */
    public int routedK(int l) {
        return k(l) - sharedExperts;
    }

    /** Whether every layer has the same E and routes the same k (no per-layer lists that say otherwise). */
    public boolean uniform() {
        for (int l = 0; l < layers; l++) if (experts(l) != experts || k(l) != k) return false;
        return true;
    }

    /** The smallest E_l - s over the layers. */
    public int minRoutedExperts() {
        int m = routedExperts();
        for (int l = 0; l < layers; l++) m = Math.min(m, routedExperts(l));
        return m;
    }

    /** This config with per-layer expert counts and k (either null = uniform). */
    public ModelConfig withLayers(List<Integer> experts, List<Integer> k) {
        int e = this.experts;
        if (experts != null) {
            e = 0;
            for (Integer v : experts) e = Math.max(e, v == null ? 0 : v);
        }
        return new ModelConfig(vocab, d, layers, heads, kvHeads, e, sharedExperts, this.k, expertHidden, ropeTheta,
                qkNorm, normEps, maxSeq, eosId, routing, loss, experts, k, tieEmbeddings);
    }

    /** k' = k - s, routed picks per token when Matryoshka is off. */
    public int routedK() {
        return k - sharedExperts;
    }

    /** The largest k' any forward pass can use (Matryoshka's kMax when on). */
    public int maxRoutedK() {
        return routing.matryoshka().mode() == MatryoshkaMode.OFF ? routedK() : Math.max(routedK(), routing.matryoshka().kMax());
    }

    public int headSize() {
        return d / heads;
    }

    public ModelConfig withRouting(RoutingConfig r) {
        return new ModelConfig(vocab, d, layers, heads, kvHeads, experts, sharedExperts, k, expertHidden, ropeTheta,
                qkNorm, normEps, maxSeq, eosId, r, loss, layerExperts, layerK, tieEmbeddings);
    }

    public ModelConfig withLoss(LossWeights l) {
        return new ModelConfig(vocab, d, layers, heads, kvHeads, experts, sharedExperts, k, expertHidden, ropeTheta,
                qkNorm, normEps, maxSeq, eosId, routing, l, layerExperts, layerK, tieEmbeddings);
    }

    /** V 8192, d 256, 4 layers, 4 heads, E 16, k 2, h 512, T 256. */
    public static ModelConfig small() {
        return new ModelConfig(8192, 256, 4, 4, 4, 16, 0, 2, 512, 10000.0, false, 1e-6, 256, 0,
                RoutingConfig.standard(), LossWeights.defaults());
    }

    /** V 8192, d 512, 4 layers, 8 heads, E 32, k 4, h 512, T 256. */
    public static ModelConfig bench() {
        return new ModelConfig(8192, 512, 4, 8, 8, 32, 0, 4, 512, 10000.0, false, 1e-6, 256, 0,
                RoutingConfig.standard(), LossWeights.defaults());
    }

    /** For tests: V 64, d 16, 2 layers, 2 heads, E 6 with 1 shared, k 3, h 8, T 16, EOS id 1. */
    public static ModelConfig tiny() {
        return new ModelConfig(64, 16, 2, 2, 1, 6, 1, 3, 8, 10000.0, false, 1e-6, 16, 1,
                RoutingConfig.standard(), LossWeights.defaults());
    }

    public String toJson() {
        try {
            return JSON.writeValueAsString(this);
        } catch (JsonProcessingException e) {
            throw new ConfigException("ModelConfig: cannot write JSON: " + e.getOriginalMessage());
        }
    }

    /** Parses config JSON; a rule broken by a value surfaces as the {@link ConfigException} that names it. */
    public static ModelConfig fromJson(String json) {
        try {
            // the per-layer lists are optional (absent = uniform); every other key must be there
            var tree = JSON.readTree(json);
            if (tree instanceof ObjectNode o)
                for (String f : new String[] {"layerExperts", "layerK", "tieEmbeddings"}) if (!o.has(f)) o.set(f, NullNode.getInstance());
            // configs written before ERC's alpha was a setting have no loss.ercAlpha: 0 is the rule they ran with
            if (tree != null && tree.get("loss") instanceof ObjectNode loss && !loss.has("ercAlpha"))
                loss.put("ercAlpha", 0.0);
            return JSON.treeToValue(tree, ModelConfig.class);
        } catch (JsonProcessingException e) {
            Throwable c = e;
            while (c != null) {
                if (c instanceof ConfigException ce) throw ce;
                c = c.getCause();
            }
            throw new ConfigException("ModelConfig JSON: " + e.getOriginalMessage());
        }
    }

    /**
     * Parses the config JSON read from {@code source} (a file name): as {@link #fromJson(String)}, but a broken rule
     * is reported as {@code source: key = value: rule} with the JSON key the user wrote ({@code routing.pool.poolMin},
     * not the record field), and a syntax or missing-key error as {@code source: what Jackson found}.
     */
    public static ModelConfig fromJson(String json, String source) {
        try {
            return fromJson(json);
        } catch (ConfigException e) {
            if (e.field() != null)
                throw new ConfigException(source + ": " + jsonKey(e.field()) + " = " + e.value() + ": " + e.rule());
            String m = e.getMessage();
            throw new ConfigException(source + ": " + (m.startsWith("ModelConfig JSON: ") ? m.substring(18) : m));
        }
    }

    /** The JSON key of a {@link ConfigException#field()} of this record or the records it holds. */
    static String jsonKey(String field) {
        int dot = field.indexOf('.');
        String owner = dot < 0 ? "" : field.substring(0, dot), rest = field.substring(dot + 1);
        return switch (owner) {
            case "ModelConfig" -> rest;
            case "RoutingConfig" -> "routing." + rest;
            case "PoolConfig" -> "routing.pool." + rest;
            case "MatryoshkaConfig" -> "routing.matryoshka." + rest;
            case "LossWeights" -> "loss." + rest;
            default -> field;
        };
    }
}
