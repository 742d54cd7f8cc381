package org.moe4j.engine.subset;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.MatryoshkaConfig;
import org.moe4j.engine.config.MatryoshkaMode;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.PoolConfig;
import org.moe4j.engine.config.PoolMode;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.io.checkpoint.Checkpoint;
import org.moe4j.io.checkpoint.HfConfig;
import org.moe4j.simd.Tensor;

/**
 * A pruned model (ALGORITHMS.md section 2, "Expert subsets"): only the kept experts and their router rows, renumbered
 * in ascending old id, so the shared experts (the highest ids, always kept) stay last. {@code num_experts} becomes K
 * and {@code num_experts_per_tok} s + min(k - s, K - s), which is what the router does with the subset as a mask:
 * the two compute the same logits, losses and gradients. Layers may keep different K_l: the config then lists E_l
 * per layer ({@code layerExperts}), {@code num_experts} is the largest K_l, and each layer routes
 * s + min(k_l - s, K_l - s) experts per token ({@code layerK}, written when some layer's differs from the top-level
 * {@code num_experts_per_tok}).
 */
public final class Pruner {
    public static final String METADATA = "pruning_metadata.json";
    private static final ObjectMapper JSON = new ObjectMapper();

    private Pruner() {
    }

    /**
     * The config of the model pruned to K experts per layer: k' clamped to K - s, as are the EMO pool sizes and
     * Matryoshka's k range (a mask clamps them the same way when it routes).
     */
    public static ModelConfig prunedConfig(ModelConfig c, int keep) {
        return prunedConfig(c, keep, c.routedK());
    }

    /** As {@link #prunedConfig(ModelConfig, int)} with k' = min(routedK, K - s) routed picks per token. */
    public static ModelConfig prunedConfig(ModelConfig c, int keep, int routedK) {
        int[] keeps = new int[c.layers()], ks = new int[c.layers()];
        java.util.Arrays.fill(keeps, keep);
        java.util.Arrays.fill(ks, routedK);
        return prunedConfig(c, keeps, ks);
    }

    /**
     * The config of the model pruned to keep[l] experts in layer l, routing min(routedK[l], keep[l] - s) experts per
     * token there (routedK null = each layer's k'_l of {@code c}). One K and one k' for every layer give a uniform
     * config (no per-layer lists); otherwise E_l and k_l are listed per layer, and the top-level E and k are the
     * largest. EMO pool sizes and Matryoshka's k range are clamped to the largest layer's routed experts (each
     * router clamps them to its own layer, as a mask does).
     */
    public static ModelConfig prunedConfig(ModelConfig c, int[] keep, int[] routedK) {
        int L = c.layers(), s = c.sharedExperts();
        if (keep.length != L)
            throw new Moe4jException("prune: " + keep.length + " expert counts for a model of " + L + " layers");
        if (routedK != null && routedK.length != L)
            throw new Moe4jException("prune: " + routedK.length + " values of k' for a model of " + L + " layers");
        int maxKeep = 0;
        int[] k = new int[L];
        for (int l = 0; l < L; l++) {
            if (keep[l] - s < 1 || keep[l] > c.experts(l))
                throw new Moe4jException("prune: K = " + keep[l] + " at layer " + l + " is out of range " + (s + 1) + ".."
                        + c.experts(l) + " (layer " + l + " has " + c.experts(l) + " experts, " + s + " shared)");
            int kr = routedK == null ? c.routedK(l) : routedK[l];
            k[l] = s + Math.min(Math.max(1, kr), keep[l] - s);
            maxKeep = Math.max(maxKeep, keep[l]);
        }
        int routed = maxKeep - s, topK = 0;
        for (int kl : k) topK = Math.max(topK, kl);
        boolean sameKeep = true, sameK = true;
        for (int l = 0; l < L; l++) {
            sameKeep &= keep[l] == maxKeep;
            sameK &= k[l] == topK;
        }
        RoutingConfig r = c.routing();
        PoolConfig p = r.pool();
        if (p.mode() == PoolMode.EMO)
            p = new PoolConfig(p.mode(), Math.min(p.poolMin(), routed), Math.min(p.poolMax(), routed), Math.min(p.evalPool(), routed));
        MatryoshkaConfig m = r.matryoshka();
        if (m.mode() != MatryoshkaMode.OFF)
            m = new MatryoshkaConfig(m.mode(), Math.min(m.kMin(), routed), Math.min(m.kMax(), routed), m.tau());
        RoutingConfig r2 = new RoutingConfig(r.normalizeTopK(), r.softmaxOverAll(), p, m, r.capacityFactor(),
                r.evalCapacityFactor(), r.lbScope());
        List<Integer> layerExperts = sameKeep ? null : java.util.Arrays.stream(keep).boxed().toList();
        List<Integer> layerK = sameK ? null : java.util.Arrays.stream(k).boxed().toList();
        return new ModelConfig(c.vocab(), c.d(), c.layers(), c.heads(), c.kvHeads(), maxKeep, s, topK, c.expertHidden(),
                c.ropeTheta(), c.qkNorm(), c.normEps(), c.maxSeq(), c.eosId(), r2, c.loss(), layerExperts, layerK,
                c.tieEmbeddings());
    }

    /** The pruned copy of {@code full}: kept[l] ascending full-model ids (every shared expert among them). */
    public static MoeModel prune(MoeModel full, int[][] kept, boolean gradients) {
        return prune(full, kept, gradients, (int[]) null);
    }

    /** As {@link #prune(MoeModel, int[][], boolean)}, routing k' = min(routedK, K_l - s) experts per token. */
    public static MoeModel prune(MoeModel full, int[][] kept, boolean gradients, int routedK) {
        int[] ks = new int[kept.length];
        java.util.Arrays.fill(ks, routedK);
        return prune(full, kept, gradients, ks);
    }

    /**
     * As {@link #prune(MoeModel, int[][], boolean)}, layer l routing k' = min(routedK[l], K_l - s) experts per token
     * (routedK null = the full model's k'_l).
     */
    public static MoeModel prune(MoeModel full, int[][] kept, boolean gradients, int[] routedK) {
        ModelConfig c = full.config();
        checkKept(c, kept);
        int[] keep = new int[kept.length];
        for (int l = 0; l < kept.length; l++) keep[l] = kept[l].length;
        MoeModel m = new MoeModel(prunedConfig(c, keep, routedK), gradients);
        try {
            MemorySegment src = full.params(), dst = m.params();
            ParamLayout from = full.layout(), to = m.layout();
            int d = c.d();
            for (ParamLayout.Entry e : to.entries()) {
                String n = e.name();
                if (n.contains(".mlp.experts.") || n.endsWith(".mlp.gate.weight")) continue;
                copy(src, from.offset(n), dst, e.offset(), e.numel());
            }
            for (int l = 0; l < c.layers(); l++) {
                long rs = from.offset(ParamLayout.router(l)), rd = to.offset(ParamLayout.router(l));
                for (int j = 0; j < keep[l]; j++) {
                    int old = kept[l][j];
                    copy(src, rs + (long) old * d, dst, rd + (long) j * d, d);
                    for (String part : new String[] {"gate", "up", "down"}) {
                        String a = expert(part, l, old), b = expert(part, l, j);
                        copy(src, from.offset(a), dst, to.offset(b), to.entry(b).numel());
                    }
                }
            }
            return m;
        } catch (RuntimeException ex) {
            m.close();
            throw ex;
        }
    }

    private static String expert(String part, int l, int j) {
        return switch (part) {
            case "gate" -> ParamLayout.gateProj(l, j);
            case "up" -> ParamLayout.upProj(l, j);
            default -> ParamLayout.downProj(l, j);
        };
    }

    private static void copy(MemorySegment src, long from, MemorySegment dst, long to, long n) {
        MemorySegment.copy(src, from * Float.BYTES, dst, to * Float.BYTES, n * Float.BYTES);
    }

    /** kept: one ascending, duplicate-free list of ids in [0, E) per layer, with every shared expert and a routed one. */
    public static void checkKept(ModelConfig c, int[][] kept) {
        if (kept.length != c.layers())
            throw new Moe4jException("subset: " + kept.length + " layers, the model has " + c.layers());
        for (int l = 0; l < kept.length; l++) {
            int E = c.experts(l), routed = c.routedExperts(l);
            int[] k = kept[l];
            for (int i = 0; i < k.length; i++) {
                if (k[i] < 0 || k[i] >= E) throw new Moe4jException("subset: layer " + l + " names expert " + k[i] + ", outside [0, " + E + ")");
                if (i > 0 && k[i] <= k[i - 1]) throw new Moe4jException("subset: layer " + l + " ids are not ascending and distinct");
            }
            for (int e = routed; e < E; e++)
                if (java.util.Arrays.binarySearch(k, e) < 0)
                    throw new Moe4jException("subset: layer " + l + " drops shared expert " + e + " (shared experts " + routed
                            + ".." + (E - 1) + " are always kept)");
            if (k.length == 0 || k[0] >= routed) throw new Moe4jException("subset: layer " + l + " keeps no routed expert");
        }
    }

    /** What pruning_metadata.json says: the source, the method, the kept ids per layer (old numbering). */
    public static ObjectNode metadata(String sourceHash, Path source, String method, String calibration, int[][] kept) {
        ObjectNode o = JSON.createObjectNode();
        o.put("source_checkpoint", source == null ? null : source.toAbsolutePath().normalize().toString());
        o.put("source_sha256", sourceHash);
        o.put("method", method);
        if (calibration != null) o.put("calibration", calibration);
        ArrayNode ls = o.putArray("kept_experts");
        for (int[] k : kept) {
            ArrayNode a = ls.addArray();
            for (int e : k) a.add(e);
        }
        o.put("note", "experts renumbered in ascending old id; new id j is kept_experts[layer][j]");
        return o;
    }

    /**
     * Writes the pruned model as a self-contained checkpoint folder (atomically), with the tokenizer files of
     * {@code source} copied and {@link #METADATA} beside the weights.
     */
    public static void write(Path out, MoeModel pruned, Path source, ObjectNode metadata) {
        OutputFolders.checkReplaceable(out, "--out");
        if (source != null && Files.exists(out) && samePath(out, source))
            throw new Moe4jException("--out " + out + " is the source checkpoint; give another folder");
        // a tied source stays tied: one tensor, written once, as long as the LM head still equals the embedding
        boolean tied = pruned.config().tied() || source != null && tiedEmbeddings(source) && headEqualsEmbedding(pruned);
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        for (ParamLayout.Entry e : pruned.layout().entries())
            if (!(tied && e.name().equals(ParamLayout.lmHead()))) tensors.put(e.name(), pruned.param(e.name()));
        Map<String, Path> copies = new LinkedHashMap<>();
        if (source != null)
            for (String f : ModelCheckpoint.TOKENIZER_FILES) if (Files.isRegularFile(source.resolve(f))) copies.put(f, source.resolve(f));
        HfConfig h = ModelCheckpoint.hfConfig(pruned.config());
        Checkpoint.write(out, tied ? tied(h) : h, tensors, 2L << 30, Map.of(), Map.of(METADATA, metadata), copies);
    }

    /** The same config.json with {@code tie_word_embeddings: true}. */
    public static HfConfig tied(HfConfig h) {
        return new HfConfig(h.modelType(), h.vocabSize(), h.hiddenSize(), h.intermediateSize(), h.numHiddenLayers(),
                h.numAttentionHeads(), h.numKeyValueHeads(), h.numExperts(), h.numLocalExperts(), h.numExpertsPerTok(),
                h.numSharedExperts(), h.normTopkProb(), h.ropeTheta(), h.rmsNormEps(), Boolean.TRUE,
                h.maxPositionEmbeddings(), h.eosTokenId(), h.moe4j(), h.qkNorm());
    }

    static boolean tiedEmbeddings(Path dir) {
        try {
            return JSON.readTree(dir.resolve("config.json").toFile()).path("tie_word_embeddings").asBoolean(false);
        } catch (java.io.IOException e) {
            throw new Moe4jException(dir.resolve("config.json") + ": cannot read: " + e.getMessage(), e);
        }
    }

    private static boolean headEqualsEmbedding(MoeModel m) {
        ParamLayout.Entry emb = m.layout().entry(ParamLayout.embedTokens()), head = m.layout().entry(ParamLayout.lmHead());
        long bytes = emb.numel() * Float.BYTES;
        return MemorySegment.mismatch(m.params(), emb.offset() * Float.BYTES, emb.offset() * Float.BYTES + bytes,
                m.params(), head.offset() * Float.BYTES, head.offset() * Float.BYTES + bytes) < 0;
    }

    private static boolean samePath(Path a, Path b) {
        try {
            return Files.isSameFile(a, b);
        } catch (java.io.IOException e) {
            return false;
        }
    }
}
