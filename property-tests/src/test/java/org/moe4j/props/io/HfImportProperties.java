package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.Consumer;
import java.util.stream.Stream;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Assume;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import org.moe4j.Moe4jException;
import org.moe4j.engine.cli.ConvertCommand;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.props.model.EngineCases;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.io.checkpoint.Checkpoint;
import org.moe4j.io.checkpoint.CheckpointDescriptor;
import org.moe4j.io.checkpoint.HfConfig;
import org.moe4j.io.hf.HfArchitecture;
import org.moe4j.reference.model.RefDraws;
import org.moe4j.reference.model.RefModel;
import org.moe4j.reference.model.RefResult;
import org.moe4j.reference.model.RefSpec;
import org.moe4j.simd.Bf16;
import org.moe4j.simd.DType;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;
import picocli.CommandLine;

/**
 * Hugging Face import and EMO export: a random small checkpoint written under each architecture's own tensor names
 * and config keys (F32, BF16 or F16; one file or shards; tied or untied embeddings; rope_theta and rms_norm_eps
 * given or left to the architecture's default) is loaded by {@link ModelCheckpoint#load} and run by the engine; its
 * logits and loss must match the float64 reference model on the same (storage-rounded) parameters, with Mixtral's
 * renormalised top-2 and grouped KV heads, OLMoE's QK-norm, EMO's shared expert. Export to the EMO layout and load
 * again gives bit-identical parameters and the same config, with or without the moe4j block. Broken checkpoints
 * are refused with the tensor, the file and the expected shape named.
 */
class HfImportProperties {
    static final WorkerPool POOL = new WorkerPool(2);
    private static final ObjectMapper JSON = new ObjectMapper();

    /** The defaults Hugging Face's config classes give an absent rope_theta (OlmoeConfig, MixtralConfig) and EMO's. */
    private static final Map<HfArchitecture, Double> ROPE_DEFAULT = Map.of(HfArchitecture.EMO, 10000.0,
            HfArchitecture.OLMOE, 10000.0, HfArchitecture.MIXTRAL, 1e6);
    private static final double EPS_DEFAULT = 1e-5;

    /** One random checkpoint: what the reference computes with, and how the file stores it. */
    record Case(HfArchitecture arch, RefSpec spec, int[][] tokens, long seed, boolean tied, DType dtype,
                boolean sharded, boolean keysGiven) {
        @Override
        public String toString() {
            return arch + " " + dtype + (sharded ? " sharded" : "") + (tied ? " tied" : "")
                    + (keysGiven ? " (rope/eps given)" : " (rope/eps default)") + " " + spec + " tokens "
                    + Arrays.deepToString(tokens);
        }
    }

    @Provide
    Arbitrary<Case> cases() {
        return Arbitraries.longs().map(HfImportProperties::build);
    }

    static Case build(long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        HfArchitecture arch = HfArchitecture.values()[r.nextInt(HfArchitecture.values().length)];
        return build(arch, r.nextLong(), r);
    }

    static Case build(HfArchitecture arch, long seed, SplittableRandom r) {
        int[][] shapes = switch (arch) { // d, heads, kvHeads
            case MIXTRAL -> new int[][] {{8, 2, 1}, {16, 4, 2}, {16, 4, 1}}; // grouped KV heads
            case OLMOE -> new int[][] {{8, 2, 2}, {8, 1, 1}, {16, 4, 4}};
            case EMO -> new int[][] {{8, 2, 2}, {8, 2, 1}, {16, 4, 2}};
        };
        int[] sh = shapes[r.nextInt(shapes.length)];
        int d = sh[0], heads = sh[1], kv = sh[2];
        int experts = 3 + r.nextInt(4), layers = 1 + r.nextInt(2), vocab = 6 + r.nextInt(7), hidden = 2 + r.nextInt(4);
        int shared = arch == HfArchitecture.EMO ? r.nextInt(2) : 0; // EMO: the shared expert is the last index
        int k = switch (arch) {
            case MIXTRAL -> 2; // top-2
            default -> shared + 1 + r.nextInt(experts - shared - 1);
        };
        boolean qkNorm = switch (arch) {
            case OLMOE -> true;
            case MIXTRAL -> false;
            case EMO -> r.nextBoolean();
        };
        boolean normTopK = switch (arch) {
            case MIXTRAL -> true;
            case OLMOE -> r.nextBoolean();
            case EMO -> false;
        };
        boolean keys = r.nextBoolean();
        double theta = keys ? 500000.0 : ROPE_DEFAULT.get(arch), eps = keys ? 1e-6 : EPS_DEFAULT;
        RefSpec spec = new RefSpec(vocab, d, layers, heads, kv, experts, shared, k, hidden, theta, qkNorm, eps, 1,
                normTopK, false, false, 0, false, 0.1, 0.001, 0, 0);
        int B = 1 + r.nextInt(2);
        int[][] tokens = new int[B][];
        for (int b = 0; b < B; b++) {
            tokens[b] = new int[2 + r.nextInt(5)];
            for (int t = 0; t < tokens[b].length; t++) tokens[b][t] = r.nextInt(vocab);
        }
        DType[] types = DType.values();
        return new Case(arch, spec, tokens, seed, r.nextInt(4) == 0, types[r.nextInt(types.length)], r.nextBoolean(), keys);
    }

    // ------------------------------------------------------------------------------------------ properties

    @Property(tries = 40)
    void importedModelMatchesTheReferenceAndRoundTripsThroughEmo(@ForAll("cases") Case cs) throws IOException {
        Path root = Files.createTempDirectory("hfimport");
        try {
            Map<String, double[]> params = rounded(RefModel.randomParams(cs.spec(), cs.seed()), cs.dtype());
            if (cs.tied()) params.put(RefModel.LM_HEAD, params.get(RefModel.EMBED).clone());
            Path hf = root.resolve(cs.arch().modelType());
            writeHf(hf, cs, params, Map.of());
            RefResult ref = RefModel.run(cs.spec(), params, cs.tokens(), RefDraws.none());
            Assume.that(Double.isFinite(ref.ce()));

            ModelCheckpoint.Imported im = ModelCheckpoint.importCheckpoint(hf);
            try (MoeModel m = im.model()) {
                assertEquals(cs.arch(), im.architecture());
                assertEquals(params.size() - (cs.tied() ? 1 : 0), im.tensors());
                assertEquals(cs.tied(), im.notes().stream().anyMatch(n -> n.contains("the LM head is the embedding")), im.notes().toString());
                assertEquals(cs.tied(), m.config().tied(), "a tied checkpoint is one parameter");
                assertEquals(params.size() - (cs.tied() ? 1 : 0), m.layout().entries().size(), "no lm_head tensor when tied");
                ModelConfig c = m.config();
                RefSpec s = cs.spec();
                assertEquals(s.normalizeTopK(), c.routing().normalizeTopK(), "normalizeTopK");
                assertEquals(s.qkNorm(), c.qkNorm(), "qkNorm");
                assertEquals(s.kvHeads(), c.kvHeads(), "kvHeads");
                assertEquals(s.shared(), c.sharedExperts(), "shared experts");
                assertEquals(s.ropeTheta(), c.ropeTheta(), "rope theta");
                assertEquals(s.normEps(), c.normEps(), "eps");
                // storage-rounded values arrive exactly (the upcast is exact)
                for (Map.Entry<String, double[]> e : params.entrySet()) {
                    float[] got = m.paramValues(e.getKey());
                    for (int i = 0; i < got.length; i++)
                        if (got[i] != (float) e.getValue()[i])
                            throw new AssertionError(e.getKey() + "[" + i + "]: loaded " + got[i] + ", stored " + e.getValue()[i]);
                }
                compareWithReference(cs, m, ref);

                // export to EMO, load again: the same bits and the same config; a tied checkpoint stays tied
                Path emo = root.resolve("emo-out");
                assertEquals(m.layout().entries().size(), ModelCheckpoint.export(emo, m, hf));
                try (Checkpoint ck = Checkpoint.open(emo)) {
                    assertEquals("emo", ck.config().modelType());
                    assertEquals(cs.tied(), Boolean.TRUE.equals(ck.config().tieWordEmbeddings()));
                    assertEquals(m.layout().entries().stream().map(ParamLayout.Entry::name)
                            .filter(n -> !(cs.tied() && n.equals(ParamLayout.lmHead()))).toList(), ck.names());
                    assertEquals(c.sharedExperts(), ck.config().sharedExperts());
                    for (String n : ck.names()) assertEquals(DType.F32, ck.tensor(n).dtype(), n);
                }
                assertTrue(Files.exists(emo.resolve(CheckpointDescriptor.TOKENIZER)), "tokenizer.json copied");
                try (MoeModel back = ModelCheckpoint.load(emo)) {
                    assertEquals(c, back.config());
                    assertSameParams(m, back);
                }
                // an EMO reader without moe4j's block gets the same model from the Hugging Face keys alone
                ObjectNode config = (ObjectNode) JSON.readTree(emo.resolve(CheckpointDescriptor.CONFIG).toFile());
                config.remove("moe4j");
                JSON.writeValue(emo.resolve(CheckpointDescriptor.CONFIG).toFile(), config);
                try (MoeModel back = ModelCheckpoint.load(emo)) {
                    assertEquals(c, back.config());
                    assertSameParams(m, back);
                }
            }
        } finally {
            deleteTree(root);
        }
    }

    /** Engine forward (evaluation defaults: standard top-k, no pool, no capacity) against the reference. */
    private static void compareWithReference(Case cs, MoeModel m, RefResult ref) {
        int B = cs.tokens().length;
        int[] starts = EngineCases.starts(cs.tokens()), flat = EngineCases.flatten(cs.tokens());
        int n = flat.length;
        try (MoeTransformer tr = new MoeTransformer(m, n, B, new JavaGemm(POOL), POOL)) {
            tr.useDefaults(false, 0);
            tr.erc(false);
            tr.setBatch(flat, starts, B);
            tr.forward();
            EngineCases.assumeSameRouting(tr, ref, cs.tokens(), false);
            double ce = tr.stats().ce;
            assertTrue(Math.abs(ce - ref.ce()) <= 1e-4 * Math.max(1, Math.abs(ref.ce())),
                    "cross-entropy: engine " + ce + ", reference " + ref.ce());
            Tensor logits = tr.logits();
            int V = cs.spec().vocab();
            for (int b = 0; b < B; b++)
                for (int t = 0; t < cs.tokens()[b].length; t++)
                    for (int v = 0; v < V; v++) {
                        double want = ref.logits()[b][t][v], got = logits.get(starts[b] + t, v);
                        if (Math.abs(want - got) > 2e-4 * Math.max(1, Math.abs(want)))
                            throw new AssertionError("logit [" + b + ", " + t + ", " + v + "]: engine " + got
                                    + ", reference " + want);
                    }
        }
    }

    // ------------------------------------------------------------------------------------------ examples

    /** BF16, the dtype real checkpoints ship in: one fixed case per architecture, so none depends on the draw. */
    @Example
    void bf16CheckpointOfEachArchitectureMatchesTheReference() throws IOException {
        for (HfArchitecture arch : HfArchitecture.values()) {
            Case base = build(arch, 42, new SplittableRandom(7));
            Case cs = new Case(arch, base.spec(), base.tokens(), base.seed(), false, DType.BF16, true, true);
            Path root = Files.createTempDirectory("hfimport");
            try {
                Map<String, double[]> params = rounded(RefModel.randomParams(cs.spec(), cs.seed()), DType.BF16);
                writeHf(root.resolve("ck"), cs, params, Map.of());
                RefResult ref = RefModel.run(cs.spec(), params, cs.tokens(), RefDraws.none());
                try (MoeModel m = ModelCheckpoint.load(root.resolve("ck"))) {
                    compareWithReference(cs, m, ref);
                }
            } finally {
                deleteTree(root);
            }
        }
    }

    @Example
    void realConfigsGiveTheEngineConfigs() throws IOException {
        ModelConfig olmoe = configOf(HfArchitectureTest.OLMOE);
        assertEquals(64, olmoe.experts());
        assertEquals(8, olmoe.k());
        assertTrue(olmoe.qkNorm());
        assertEquals(false, olmoe.routing().normalizeTopK());
        assertEquals(50279, olmoe.eosId());
        assertEquals(4096, olmoe.maxSeq());
        assertEquals(1e-5, olmoe.normEps());
        ModelConfig mixtral = configOf(HfArchitectureTest.MIXTRAL);
        assertEquals(8, mixtral.experts());
        assertEquals(2, mixtral.k());
        assertEquals(8, mixtral.kvHeads());
        assertEquals(32, mixtral.heads());
        assertTrue(mixtral.routing().normalizeTopK());
        assertEquals(false, mixtral.qkNorm());
        assertEquals(1e6, mixtral.ropeTheta());
        assertEquals(32768, mixtral.maxSeq());
        ModelConfig emo = configOf(HfArchitectureTest.EMO);
        assertEquals(17, emo.experts());
        assertEquals(1, emo.sharedExperts());
        assertEquals(3, emo.k());
        assertTrue(emo.qkNorm());
        assertEquals(500000.0, emo.ropeTheta());
    }

    private static ModelConfig configOf(String json) throws IOException {
        var node = JSON.readTree(json);
        return ModelCheckpoint.config(node, HfArchitecture.detect(node, "config.json"), "config.json");
    }

    @Example
    void unknownTensorIsNamedWithItsFile() throws IOException {
        Case cs = fixed(HfArchitecture.OLMOE);
        String extra = "model.layers.0.mlp.shared_expert.gate_proj.weight";
        Moe4jException e = refused(cs, Map.of(extra, new int[] {2, cs.spec().d()}), ck -> { });
        assertContains(e, extra, "model.safetensors", "unknown tensor", "olmoe name table", "model.layers.{l}.input_layernorm.weight");
    }

    @Example
    void expertBeyondTheConfigIsNamed() throws IOException {
        Case cs = fixed(HfArchitecture.MIXTRAL);
        String extra = "model.layers.0.block_sparse_moe.experts." + cs.spec().experts() + ".w1.weight";
        Moe4jException e = refused(cs, Map.of(extra, new int[] {cs.spec().hidden(), cs.spec().d()}), ck -> { });
        assertContains(e, extra, "canonical 'model.layers.0.mlp.experts." + cs.spec().experts() + ".gate_proj.weight'",
                "is not a parameter of this model", "E " + cs.spec().experts());
    }

    @Example
    void missingExpertIsNamedWithItsShape() throws IOException {
        Case cs = fixed(HfArchitecture.MIXTRAL);
        int last = cs.spec().layers() - 1;
        String gone = "model.layers." + last + ".block_sparse_moe.experts.2.w3.weight";
        Moe4jException e = refused(cs, Collections.singletonMap(gone, null), ck -> { });
        assertContains(e, "'" + gone + "' is missing", "expects shape [" + cs.spec().hidden() + ", " + cs.spec().d() + "]");
    }

    @Example
    void wrongShapeIsNamedWithItsShardAndTheExpectedShape() throws IOException {
        Case base = fixed(HfArchitecture.EMO);
        Case cs = new Case(base.arch(), base.spec(), base.tokens(), base.seed(), false, DType.F32, true, true);
        String router = "model.layers.0.mlp.gate.weight";
        int E = cs.spec().experts(), d = cs.spec().d();
        Moe4jException e = refused(cs, Map.of(router, new int[] {E + 1, d}), ck -> { });
        assertContains(e, "'" + router + "' has shape [" + (E + 1) + ", " + d + "], config expects [" + E + ", " + d + "]",
                "model-0000");
    }

    @Example
    void everyProblemIsReportedAtOnce() throws IOException {
        Case cs = fixed(HfArchitecture.OLMOE);
        Map<String, int[]> changes = new LinkedHashMap<>();
        changes.put("model.layers.0.mlp.experts.0.down_proj.weight", null);
        changes.put("model.layers.0.mlp.experts.1.down_proj.weight", null);
        changes.put("model.layers.0.self_attn.q_norm.weight", new int[] {3});
        Moe4jException e = refused(cs, changes, ck -> { });
        assertContains(e, "3 problems", "experts.0.down_proj.weight' is missing", "experts.1.down_proj.weight' is missing",
                "q_norm.weight' has shape [3]");
    }

    @Example
    void unknownModelTypeIsNamed() throws IOException {
        Moe4jException e = refused(fixed(HfArchitecture.OLMOE), Map.of(),
                config -> config.put("model_type", "qwen2_moe"));
        assertContains(e, "config.json", "'model_type' = 'qwen2_moe' is not a supported MoE architecture", "mixtral");
    }

    @Example
    void settingsTheEngineDoesNotRunAreRefusedByKey() throws IOException {
        Moe4jException e = refused(fixed(HfArchitecture.MIXTRAL), Map.of(),
                config -> config.putObject("rope_scaling").put("type", "linear").put("factor", 2.0));
        assertContains(e, "config.json", "'rope_scaling'", "not supported");
        e = refused(fixed(HfArchitecture.MIXTRAL), Map.of(), config -> config.put("sliding_window", 4096));
        assertContains(e, "config.json", "'sliding_window' = 4096");
        e = refused(fixed(HfArchitecture.OLMOE), Map.of(), config -> config.put("hidden_act", "gelu"));
        assertContains(e, "'hidden_act'");
        e = refused(fixed(HfArchitecture.EMO), Map.of(), config -> config.put("head_dim", 2));
        assertContains(e, "'head_dim' = 2");
    }

    @Example
    void tiedHeadThatDiffersFromTheEmbeddingIsRefused() throws IOException {
        Case base = fixed(HfArchitecture.OLMOE);
        Moe4jException e = refused(base, Map.of(), config -> config.put("tie_word_embeddings", true));
        assertContains(e, "'tie_word_embeddings' is true but tensor 'lm_head.weight' differs from 'model.embed_tokens.weight'");
    }

    @Example
    void convertCommandWritesTheEmoLayout() throws IOException {
        Case cs = fixed(HfArchitecture.MIXTRAL);
        Path root = Files.createTempDirectory("hfimport");
        PrintStream out = System.out;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        try {
            Map<String, double[]> params = RefModel.randomParams(cs.spec(), cs.seed());
            writeHf(root.resolve("mixtral"), cs, params, Map.of());
            System.setOut(new PrintStream(buf, true, StandardCharsets.UTF_8));
            int code = new CommandLine(new ConvertCommand()).execute("--from", root.resolve("mixtral").toString(),
                    "--out", root.resolve("emo").toString());
            System.setOut(out);
            String text = buf.toString(StandardCharsets.UTF_8);
            assertEquals(0, code, text);
            long total = params.values().stream().mapToLong(v -> v.length).sum();
            assertTrue(text.contains("mixtral checkpoint, " + params.size() + " tensors"), text);
            assertTrue(text.contains(params.size() + " tensors, " + String.format(java.util.Locale.ROOT, "%,d", total)
                    + " parameters"), text);
            try (MoeModel a = ModelCheckpoint.load(root.resolve("mixtral")); MoeModel b = ModelCheckpoint.load(root.resolve("emo"))) {
                assertSameParams(a, b);
            }
            int same = new CommandLine(new ConvertCommand()).setErr(new java.io.PrintWriter(java.io.OutputStream.nullOutputStream()))
                    .execute("--from", root.resolve("emo").toString(), "--out", root.resolve("emo").toString());
            assertEquals(1, same, "converting a folder onto itself is refused");
        } finally {
            System.setOut(out);
            deleteTree(root);
        }
    }

    // ------------------------------------------------------------------------------------------ helpers

    static Case fixed(HfArchitecture arch) {
        Case c = build(arch, 3, new SplittableRandom(11));
        return new Case(arch, c.spec(), c.tokens(), c.seed(), false, DType.F32, false, true);
    }

    /**
     * Writes the case with {@code changes} (HF name -> a shape to store instead, null = leave the tensor out),
     * edits config.json with {@code editConfig}, and returns what loading it throws.
     */
    private static Moe4jException refused(Case cs, Map<String, int[]> changes, Consumer<ObjectNode> editConfig) throws IOException {
        Path root = Files.createTempDirectory("hfimport");
        try {
            Path dir = root.resolve("ck");
            writeHf(dir, cs, RefModel.randomParams(cs.spec(), cs.seed()), changes);
            Path cfg = dir.resolve(CheckpointDescriptor.CONFIG);
            ObjectNode config = (ObjectNode) JSON.readTree(cfg.toFile());
            editConfig.accept(config);
            JSON.writeValue(cfg.toFile(), config);
            return assertThrows(Moe4jException.class, () -> ModelCheckpoint.load(dir).close());
        } finally {
            deleteTree(root);
        }
    }

    private static void assertContains(Exception e, String... parts) {
        for (String p : parts) assertTrue(e.getMessage().contains(p), "expected '" + p + "' in: " + e.getMessage());
    }

    /** The case's parameters under the architecture's own names and config keys, as Hugging Face would store them. */
    static void writeHf(Path dir, Case cs, Map<String, double[]> params, Map<String, int[]> changes) {
        RefSpec s = cs.spec();
        HfArchitecture a = cs.arch();
        boolean mixtral = a == HfArchitecture.MIXTRAL, emo = a == HfArchitecture.EMO;
        HfConfig config = new HfConfig(a.modelType(), s.vocab(), s.d(), s.hidden(), s.layers(), s.heads(), s.kvHeads(),
                mixtral ? null : s.experts(), mixtral ? s.experts() : null, s.k(), emo ? s.shared() : null,
                a == HfArchitecture.OLMOE ? Boolean.valueOf(s.normalizeTopK()) : emo ? Boolean.FALSE : null,
                cs.keysGiven() ? s.ropeTheta() : null, cs.keysGiven() ? s.normEps() : null, cs.tied(), 64, s.eosId(),
                null, emo ? Boolean.valueOf(s.qkNorm()) : null);
        try (Arena arena = Arena.ofConfined()) {
            Map<String, Tensor> tensors = new LinkedHashMap<>();
            Map<String, int[]> shapes = RefModel.shapes(s);
            for (Map.Entry<String, double[]> e : params.entrySet()) {
                if (cs.tied() && e.getKey().equals(RefModel.LM_HEAD)) continue; // tied: HF stores no lm_head
                String name = a.fromCanonical(e.getKey());
                int[] shape = changes.containsKey(name) ? changes.get(name) : shapes.get(e.getKey());
                if (shape == null) continue;
                Tensor t = Tensor.allocate(arena, cs.dtype(), shape);
                for (long i = 0; i < t.numel(); i++) t.set(i, (float) e.getValue()[(int) (i % e.getValue().length)]);
                tensors.put(name, t);
            }
            for (Map.Entry<String, int[]> e : changes.entrySet())
                if (e.getValue() != null && !tensors.containsKey(e.getKey()))
                    tensors.put(e.getKey(), Tensor.allocate(arena, cs.dtype(), e.getValue()));
            Path tokenizer = null;
            try {
                tokenizer = Files.createTempFile("tokenizer", ".json");
                Files.writeString(tokenizer, "{\"model\": {\"type\": \"BPE\"}}");
                Checkpoint.write(dir, config, tensors, cs.sharded() ? 400 : 1L << 30, Map.of(), Map.of(),
                        Map.of(CheckpointDescriptor.TOKENIZER, tokenizer));
            } finally {
                if (tokenizer != null) Files.deleteIfExists(tokenizer);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** The values as the file's dtype stores them (the engine's upcast is exact, so these are what it runs with). */
    static Map<String, double[]> rounded(Map<String, double[]> params, DType dtype) {
        Map<String, double[]> out = new LinkedHashMap<>();
        for (Map.Entry<String, double[]> e : params.entrySet()) {
            double[] v = e.getValue().clone();
            for (int i = 0; i < v.length; i++) {
                float f = (float) v[i];
                v[i] = switch (dtype) {
                    case F32 -> f;
                    case BF16 -> Bf16.toFloat(Bf16.fromFloat(f));
                    case F16 -> Float.float16ToFloat(Float.floatToFloat16(f));
                };
            }
            out.put(e.getKey(), v);
        }
        return out;
    }

    static void assertSameParams(MoeModel a, MoeModel b) {
        assertEquals(a.layout().total(), b.layout().total());
        MemorySegment pa = a.params(), pb = b.params();
        long bytes = a.layout().total() * Float.BYTES;
        long at = MemorySegment.mismatch(pa, 0, bytes, pb, 0, bytes);
        assertEquals(-1, at, () -> "parameters differ at float " + at / Float.BYTES);
    }

    static void deleteTree(Path root) throws IOException {
        try (Stream<Path> s = Files.walk(root)) {
            for (Path p : s.sorted(Collections.reverseOrder()).toList()) Files.deleteIfExists(p);
        }
    }
}
