package org.moe4j.props.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Assume;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import org.moe4j.engine.cli.NumericsCommand;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.MatryoshkaConfig;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.PoolConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.io.checkpoint.Checkpoint;
import org.moe4j.io.checkpoint.HfConfig;
import org.moe4j.io.safetensors.SafetensorsFile;
import org.moe4j.io.safetensors.SafetensorsWriter;
import org.moe4j.reference.model.RefDraws;
import org.moe4j.reference.model.RefModel;
import org.moe4j.reference.model.RefResult;
import org.moe4j.reference.model.RefSpec;
import org.moe4j.simd.DType;
import org.moe4j.simd.Tensor;
import picocli.CommandLine;

/**
 * {@code ./moe4j numerics}, run in-process on files, against the float64 reference model: a random small checkpoint
 * (F32, BF16 or F16, one file or sharded, with or without the moe4j config block) is written to a temporary folder with
 * its tokens, pool sizes (all three forms), subset (both forms) and ERC noise files; the main runs; RESULT.json
 * (losses, per-layer figures, logit statistics, first logits, pools, capacity, drops, routing) and grads.safetensors
 * must equal {@link RefModel#run} on the same parameters and draws. Overrides of k' per layer, norm_topk_prob, the
 * load-balance scope, the loss weights, the EOS id, the capacity factor and the document mask are drawn too. A case
 * whose float32 routing or pools differ from the float64 ones (a near-tie) is discarded, not compared.
 */
class NumericsMainProperties {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String[] MODES = {"standard", "emo: one P", "emo: P per layer", "emo: P per document",
            "subset: experts", "subset: layers", "k per layer", "capacity"};

    /** Everything one case writes and expects. */
    record Case(String mode, RefSpec spec, ModelConfig saved, boolean hfOnly, DType dtype, boolean sharded,
                int[][] tokens, Integer eosInFile, Object poolsJson, Object subsetJson, RefDraws draws,
                float[][][] noiseFull, List<String> options, long seed) {
        @Override
        public String toString() {
            return mode + " " + spec + (hfOnly ? " hf-only" : "") + " " + dtype + (sharded ? " sharded" : "")
                    + " options " + options + " tokens " + Arrays.deepToString(tokens) + " eos_id " + eosInFile
                    + " pools " + poolsJson + " subset " + subsetJson;
        }
    }

    @Provide
    Arbitrary<Case> cases() {
        return Arbitraries.integers().between(0, MODES.length - 1)
                .flatMap(mode -> Arbitraries.longs().map(seed -> build(mode, seed)));
    }

    static Case build(int mode, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        int[][] shapes = {{4, 1, 1}, {8, 2, 1}, {8, 2, 2}, {8, 1, 1}}; // d, heads, kvHeads
        int[] sh = shapes[r.nextInt(shapes.length)];
        int d = sh[0], heads = sh[1], kv = sh[2];
        int experts = 3 + r.nextInt(4), layers = 1 + r.nextInt(2), vocab = 6 + r.nextInt(7), hidden = 2 + r.nextInt(4);
        int shared = r.nextInt(3) == 0 ? 1 : 0, routed = experts - shared;
        int k = shared + 1 + r.nextInt(routed - (routed > 1 ? 1 : 0));
        boolean qkNorm = r.nextBoolean(), hfOnly = !qkNorm && r.nextInt(3) == 0;
        DType dtype = DType.values()[r.nextInt(DType.values().length)];
        boolean sharded = r.nextBoolean(), ragged = r.nextBoolean();
        boolean docMask = r.nextBoolean(), erc = r.nextInt(3) != 0;

        // the checkpoint's own settings (hf-only: norm_topk_prob from config.json, GLOBAL, default weights)
        boolean normCfg = r.nextBoolean(), lbLocalCfg = !hfOnly && r.nextBoolean();
        LossWeights wCfg = hfOnly ? LossWeights.defaults() : new LossWeights(0.1, 0.01, 0.5, 1e-3);
        int eosCfg = 1;
        PoolConfig poolCfg = mode >= 1 && mode <= 3 && !hfOnly ? PoolConfig.emo(routed) : PoolConfig.none();
        ModelConfig saved = new ModelConfig(vocab, d, layers, heads, kv, experts, shared, k, hidden, 10000.0, qkNorm,
                1e-6, 8, eosCfg, new RoutingConfig(normCfg, false, poolCfg, MatryoshkaConfig.off(),
                hfOnly ? 0 : 1.25, 0, lbLocalCfg ? LbScope.LOCAL : LbScope.GLOBAL), wCfg);

        // the run's overrides
        List<String> options = new ArrayList<>();
        boolean norm = normCfg, lbLocal = lbLocalCfg;
        switch (r.nextInt(3)) {
            case 0 -> options.addAll(List.of("--norm-topk-prob", "config"));
            case 1 -> {
                norm = r.nextBoolean();
                options.addAll(List.of("--norm-topk-prob", String.valueOf(norm)));
            }
            default -> { }
        }
        if (r.nextBoolean()) {
            lbLocal = r.nextBoolean();
            options.addAll(List.of("--lb-scope", lbLocal ? "local" : "global"));
        }
        LossWeights w = wCfg;
        if (r.nextBoolean()) {
            w = new LossWeights(0.05 + r.nextDouble() * 0.2, r.nextDouble() * 0.05, wCfg.erc(), r.nextDouble() * 0.01);
            options.addAll(List.of("--weights", "lb=" + w.lb() + ",z=" + w.routerZ() + ",out_z=" + w.outputZ()));
        }
        if (docMask) options.add("--doc-mask");
        double cf = 0;
        if (mode == 7) {
            cf = 0.5 + r.nextDouble();
            options.addAll(List.of("--capacity-factor", String.valueOf(cf)));
        }
        Integer eosInFile = switch (r.nextInt(3)) {
            case 0 -> null;
            case 1 -> 1;
            default -> 2;
        };
        int eos = eosInFile == null ? eosCfg : eosInFile;

        int[][] tokens = EngineCases.randomTokens(r, vocab, eos, ragged);
        int B = tokens.length;

        int[][][] pools = null;
        Object poolsJson = null;
        if (mode >= 1 && mode <= 3) {
            pools = new int[layers][B][];
            int one = 1 + r.nextInt(routed);
            int[] perLayer = new int[layers];
            for (int l = 0; l < layers; l++) perLayer[l] = 1 + r.nextInt(routed);
            for (int l = 0; l < layers; l++)
                for (int b = 0; b < B; b++) {
                    int docs = RefModel.documentIds(tokens[b], eos)[tokens[b].length - 1] + 1;
                    pools[l][b] = new int[docs];
                    for (int i = 0; i < docs; i++)
                        pools[l][b][i] = mode == 1 ? one : mode == 2 ? perLayer[l] : 1 + r.nextInt(routed);
                }
            poolsJson = mode == 1 ? (Object) one : mode == 2 ? perLayer : pools;
        }
        int[] kPer = null;
        if (mode == 6 || r.nextInt(4) == 0) {
            kPer = new int[layers];
            for (int l = 0; l < layers; l++) kPer[l] = 1 + r.nextInt(routed);
            StringBuilder sb = new StringBuilder();
            for (int l = 0; l < layers; l++) sb.append(l > 0 ? "," : "").append(kPer[l]);
            options.addAll(List.of("--k-per-layer", sb.toString()));
        }
        int[][] subset = null;
        Object subsetJson = null;
        if (mode == 4 || mode == 5) {
            subset = new int[layers][];
            for (int l = 0; l < layers; l++) {
                if (mode == 4 && l > 0) {
                    subset[l] = subset[0];
                    continue;
                }
                List<Integer> keep = new ArrayList<>();
                for (int e = 0; e < experts; e++)
                    if (e >= routed || r.nextBoolean() || keep.isEmpty() && e == routed - 1) keep.add(e);
                subset[l] = keep.stream().mapToInt(Integer::intValue).toArray();
            }
            subsetJson = mode == 4 ? Map.of("experts", subset[0]) : Map.of("layers", subset);
        }
        float[][][] noiseFull = null;
        double[][][] noise = null;
        if (erc) {
            noiseFull = new float[layers][routed][d];
            noise = new double[layers][][];
            for (int l = 0; l < layers; l++) {
                for (int e = 0; e < routed; e++) for (int c = 0; c < d; c++) noiseFull[l][e][c] = (float) (2 * r.nextDouble() - 1);
                int[] kept = subset == null ? java.util.stream.IntStream.range(0, routed).toArray()
                        : Arrays.stream(subset[l]).filter(e -> e < routed).toArray();
                noise[l] = new double[kept.length][d];
                for (int i = 0; i < kept.length; i++) for (int c = 0; c < d; c++) noise[l][i][c] = noiseFull[l][kept[i]][c];
            }
        }
        RefSpec spec = new RefSpec(vocab, d, layers, heads, kv, experts, shared, k, hidden, 10000.0, qkNorm, 1e-6, eos,
                norm, false, lbLocal, cf, docMask, w.lb(), w.routerZ(), w.erc(), w.outputZ());
        return new Case(MODES[mode], spec, saved, hfOnly, dtype, sharded, tokens, eosInFile, poolsJson, subsetJson,
                new RefDraws(pools, kPer, noise, subset), noiseFull, options, seed);
    }

    @Property(tries = 60)
    void numericsMainMatchesTheReference(@ForAll("cases") Case cs) throws IOException {
        check(cs, false);
    }

    /**
     * A tied checkpoint (tie_word_embeddings, no lm_head tensor) is one parameter: numerics writes one
     * {@code model.embed_tokens.weight} gradient, and it equals the float64 reference's d/d(embedding) +
     * d/d(LM head) of the same model with the LM head a copy of the embedding (the chain rule for a shared
     * parameter; the reference's gradients are checked by finite differences in RefModelFiniteDifferenceProperties).
     */
    @Property(tries = 25)
    void tiedNumericsGradientIsTheSumOfBothUses(@ForAll("cases") Case cs) throws IOException {
        check(cs, true);
    }

    private void check(Case cs, boolean tied) throws IOException {
        RefSpec s = cs.spec();
        Map<String, double[]> params = RefModel.randomParams(s, cs.seed());
        Path dir = Files.createTempDirectory("moe4j-numerics-");
        try (Arena arena = Arena.ofConfined()) {
            // the checkpoint: parameters stored as F32, BF16 or F16; the reference gets exactly the stored values
            Map<String, Tensor> tensors = new LinkedHashMap<>();
            for (Map.Entry<String, double[]> e : params.entrySet()) {
                Tensor t = Tensor.allocate(arena, cs.dtype(), RefModel.shapes(s).get(e.getKey()));
                double[] v = e.getValue();
                for (int i = 0; i < v.length; i++) {
                    t.set(i, (float) v[i]);
                    v[i] = t.get(i);
                }
                tensors.put(e.getKey(), t);
            }
            if (tied) { // the reference's LM head is the stored embedding; the file holds it once
                params.put(RefModel.LM_HEAD, params.get(RefModel.EMBED).clone());
                tensors.remove(RefModel.LM_HEAD);
            }
            // tied: the moe4j block says so itself (even seeds) or leaves it to the HF key (a block from before it existed)
            HfConfig h = ModelCheckpoint.hfConfig(tied && cs.seed() % 2 == 0 ? cs.saved().withTied(true) : cs.saved());
            if (tied) h = org.moe4j.engine.subset.Pruner.tied(h);
            if (cs.hfOnly())
                h = new HfConfig(h.modelType(), h.vocabSize(), h.hiddenSize(), h.intermediateSize(), h.numHiddenLayers(),
                        h.numAttentionHeads(), h.numKeyValueHeads(), h.numExperts(), h.numLocalExperts(),
                        h.numExpertsPerTok(), h.numSharedExperts(), h.normTopkProb(), h.ropeTheta(), h.rmsNormEps(),
                        h.tieWordEmbeddings(), h.maxPositionEmbeddings(), h.eosTokenId(), null);
            Path ckpt = dir.resolve("ckpt");
            Checkpoint.write(ckpt, h, tensors, cs.sharded() ? 600 : 1L << 30);

            List<String> args = new ArrayList<>(List.of("--ckpt", ckpt.toString()));
            ObjectNode tj = JSON.createObjectNode();
            tj.set("tokens", JSON.valueToTree(cs.tokens()));
            if (cs.eosInFile() != null) tj.put("eos_id", cs.eosInFile());
            args.addAll(List.of("--tokens", write(dir.resolve("tokens.json"), tj).toString()));
            if (cs.poolsJson() != null)
                args.addAll(List.of("--mode", "emo", "--pools",
                        write(dir.resolve("pools.json"), Map.of("pool_sizes", cs.poolsJson())).toString()));
            else if (cs.subsetJson() != null)
                args.addAll(List.of("--mode", "subset", "--subset", write(dir.resolve("subset.json"), cs.subsetJson()).toString()));
            if (cs.noiseFull() != null) {
                Map<String, Tensor> nz = new LinkedHashMap<>();
                for (int l = 0; l < s.layers(); l++) {
                    Tensor t = Tensor.allocate(arena, s.routed(), s.d());
                    for (int e = 0; e < s.routed(); e++) for (int c = 0; c < s.d(); c++) t.set(e, c, cs.noiseFull()[l][e][c]);
                    nz.put("model.layers." + l + ".erc_noise", t);
                }
                Path np = dir.resolve("noise.safetensors");
                SafetensorsWriter.write(np, nz, Map.of());
                args.addAll(List.of("--erc-noise", np.toString()));
            }
            args.addAll(cs.options());
            Path out = dir.resolve("RESULT.json"), grads = dir.resolve("grads.safetensors");
            args.addAll(List.of("--out", out.toString(), "--grads", grads.toString(), "--dump-routing"));

            RefResult ref = RefModel.run(s, params, cs.tokens(), cs.draws());
            Assume.that(Double.isFinite(ref.total()));
            int code = CommandLine.populateCommand(new NumericsCommand(), args.toArray(String[]::new)).call();
            assertEquals(0, code);
            JsonNode res = JSON.readTree(out.toFile());
            compareRouting(cs, ref, res);
            compareNumbers(cs, ref, res);
            if (tied) {
                Map<String, double[]> g = new LinkedHashMap<>(ref.grads());
                double[] head = g.remove(RefModel.LM_HEAD), emb = g.get(RefModel.EMBED).clone();
                for (int i = 0; i < emb.length; i++) emb[i] += head[i];
                g.put(RefModel.EMBED, emb);
                compareGrads(g, grads);
            } else {
                compareGrads(ref.grads(), grads);
            }
        } finally {
            deleteTree(dir);
        }
    }

    /** Same picks, drops and pools, or the case is a near-tie that float32 resolves differently: discarded. */
    static void compareRouting(Case cs, RefResult ref, JsonNode res) {
        RefSpec s = cs.spec();
        int[][] tokens = cs.tokens();
        for (int l = 0; l < s.layers(); l++)
            for (int b = 0; b < tokens.length; b++) {
                for (int t = 0; t < tokens[b].length; t++) {
                    JsonNode slot = res.get("routing").get(l).get(b).get(t);
                    int[] want = ref.experts()[l][b][t];
                    JsonNode got = slot.get("experts");
                    Assume.that(got.size() == want.length);
                    for (int j = 0; j < want.length; j++) {
                        Assume.that(got.get(j).intValue() == want[j]);
                        if (s.capacityFactor() > 0)
                            Assume.that(slot.get("dropped").get(j).booleanValue() == ref.dropped()[l][b][t][j]);
                    }
                }
                if (ref.pools() != null) {
                    JsonNode pools = res.get("pools").get(l).get(b);
                    Assume.that(pools.size() == ref.pools()[l][b].length);
                    for (int dc = 0; dc < ref.pools()[l][b].length; dc++)
                        Assume.that(Arrays.equals(ints(pools.get(dc)), ref.pools()[l][b][dc]));
                }
            }
        // the picks agree: now every gate must
        for (int l = 0; l < s.layers(); l++)
            for (int b = 0; b < tokens.length; b++)
                for (int t = 0; t < tokens[b].length; t++) {
                    JsonNode g = res.get("routing").get(l).get(b).get(t).get("gates");
                    for (int j = 0; j < g.size(); j++)
                        close("gate [" + l + "][" + b + "][" + t + "][" + j + "]", ref.gates()[l][b][t][j], g.get(j).doubleValue(), 1e-4);
                }
    }

    static void compareNumbers(Case cs, RefResult ref, JsonNode res) {
        RefSpec s = cs.spec();
        JsonNode loss = res.get("loss");
        close("ce", ref.ce(), loss.get("ce"), 1e-4);
        close("out_z", ref.outZ(), loss.get("out_z"), 1e-4);
        close("lb", ref.lb(), loss.get("lb"), 1e-4);
        close("z", ref.z(), loss.get("z"), 1e-4);
        close("erc", ref.erc(), loss.get("erc"), 1e-4);
        close("total", ref.total(), loss.get("total"), 1e-4);
        JsonNode pl = res.get("per_layer");
        for (int l = 0; l < s.layers(); l++) {
            close("lb of layer " + l, ref.lbPerLayer()[l], pl.get("lb").get(l), 1e-4);
            close("z of layer " + l, ref.zPerLayer()[l], pl.get("z").get(l), 1e-4);
            close("erc of layer " + l, ref.ercPerLayer()[l], pl.get("erc").get(l), 1e-4);
            close("erc_eps_mean of layer " + l, ref.ercEpsMean()[l], pl.get("erc_eps_mean").get(l), 1e-4);
            assertEquals(ref.kRouted()[l], pl.get("k_routed").get(l).intValue(), "k_routed of layer " + l);
            assertTrue(Arrays.equals(Arrays.copyOf(ref.expertCounts()[l], s.routed()), ints(pl.get("expert_counts").get(l))),
                    "expert_counts of layer " + l + ": " + pl.get("expert_counts").get(l) + ", reference "
                            + Arrays.toString(ref.expertCounts()[l]));
            assertTrue(Arrays.equals(Arrays.copyOf(ref.keptCounts()[l], s.routed()), ints(pl.get("kept_counts").get(l))),
                    "kept_counts of layer " + l);
        }
        // logits: statistics over every position, and the first 8 positions of sequence 0
        int n = 0;
        double sum = 0, sumAbs = 0, maxAbs = 0;
        for (double[][] seq : ref.logits())
            for (double[] row : seq)
                for (double x : row) {
                    n++;
                    sum += x;
                    sumAbs += Math.abs(x);
                    maxAbs = Math.max(maxAbs, Math.abs(x));
                }
        double mean = sum / n, var = 0;
        for (double[][] seq : ref.logits()) for (double[] row : seq) for (double x : row) var += (x - mean) * (x - mean);
        JsonNode ls = res.get("logits_stats");
        assertEquals(n / s.vocab(), ls.get("shape").get(0).intValue());
        assertEquals(s.vocab(), ls.get("shape").get(1).intValue());
        double tol = 1e-4 * Math.max(1, maxAbs);
        assertTrue(Math.abs(ls.get("mean").doubleValue() - mean) <= tol, "logits mean " + ls.get("mean") + ", reference " + mean);
        assertTrue(Math.abs(ls.get("std").doubleValue() - Math.sqrt(var / n)) <= tol, "logits std " + ls.get("std"));
        assertTrue(Math.abs(ls.get("sum").doubleValue() - sum) <= tol * n, "logits sum " + ls.get("sum") + ", reference " + sum);
        assertTrue(Math.abs(ls.get("sum_abs").doubleValue() - sumAbs) <= tol * n, "logits sum_abs " + ls.get("sum_abs"));
        JsonNode first = res.get("logits_first_seq");
        assertEquals(Math.min(8, cs.tokens()[0].length), first.size());
        for (int t = 0; t < first.size(); t++)
            for (int v = 0; v < s.vocab(); v++) {
                double want = ref.logits()[0][t][v], got = first.get(t).get(v).doubleValue();
                assertTrue(Math.abs(want - got) <= tol, "logits_first_seq[" + t + "][" + v + "] = " + got + ", reference " + want);
            }
        // capacity per (layer, sequence) and the drops, when a capacity factor is set
        if (s.capacityFactor() > 0) {
            for (int l = 0; l < s.layers(); l++) {
                int kept = RefModel.keptRouted(s, cs.draws(), l).length, dropped = 0;
                for (int b = 0; b < cs.tokens().length; b++) {
                    int c = (int) Math.floor(ref.kRouted()[l] * s.capacityFactor() * cs.tokens()[b].length / kept);
                    if (c % 2 != 0) c++;
                    assertEquals(Math.max(4, c), res.get("capacity").get(l).get(b).intValue(), "capacity [" + l + "][" + b + "]");
                    for (boolean[] tk : ref.dropped()[l][b]) for (boolean x : tk) if (x) dropped++;
                }
                assertEquals(dropped, res.get("drops").get(l).size(), "drops of layer " + l);
            }
        } else {
            assertTrue(res.get("capacity") == null && res.get("drops") == null, "capacity and drops only with a capacity factor");
        }
        assertEquals(ref.pools() != null, res.has("pools"), "pools only with --mode emo");
    }

    static void compareGrads(Map<String, double[]> refGrads, Path grads) {
        try (SafetensorsFile f = SafetensorsFile.open(grads)) {
            assertEquals(refGrads.keySet().stream().sorted().toList(), f.names().stream().sorted().toList(),
                    "gradient tensors = the parameters");
            for (Map.Entry<String, double[]> e : refGrads.entrySet()) {
                Tensor t = f.tensor(e.getKey());
                assertEquals(DType.F32, t.dtype(), e.getKey());
                double[] want = e.getValue();
                assertEquals(want.length, t.numel(), e.getKey());
                double scale = 0;
                for (double v : want) scale = Math.max(scale, Math.abs(v));
                double tol = 1e-4 + 2e-3 * scale;
                for (int i = 0; i < want.length; i++)
                    if (Math.abs(want[i] - t.get(i)) > tol)
                        throw new AssertionError("d total / d " + e.getKey() + "[" + i + "]: numerics " + t.get(i)
                                + ", reference " + want[i] + " (tolerance " + tol + ")");
            }
        }
    }

    static void close(String what, double want, JsonNode got, double rel) {
        if (Double.isNaN(want)) {
            assertTrue(got == null || got.isNull(), what + ": reference is off (NaN), numerics " + got);
            return;
        }
        assertTrue(got != null && got.isNumber(), what + ": numerics " + got + ", reference " + want);
        close(what, want, got.doubleValue(), rel);
    }

    static void close(String what, double want, double got, double rel) {
        assertTrue(Math.abs(want - got) <= rel * Math.max(1, Math.abs(want)), what + ": numerics " + got + ", reference " + want);
    }

    static int[] ints(JsonNode a) {
        int[] v = new int[a.size()];
        for (int i = 0; i < v.length; i++) v[i] = a.get(i).intValue();
        return v;
    }

    static Path write(Path file, Object json) {
        try {
            JSON.writeValue(file.toFile(), json);
            return file;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static void deleteTree(Path dir) throws IOException {
        try (Stream<Path> all = Files.walk(dir)) {
            for (Path p : all.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
        }
    }
}
