package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.ForwardRunner;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.io.tokenizer.BpeTokenizer;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/** select, prune and eval end to end on a small random checkpoint and a prepare-data folder; their bad-input messages. */
class SubsetCommandsTest {
    static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path tmp;
    static Path data, ckpt;

    @BeforeAll
    static void setUp() throws Exception {
        data = TrainCommandDataTest.prepare(tmp);
        BpeTokenizer tok = BpeTokenizer.load(data.resolve("tokenizer.json"));
        ModelConfig t = ModelConfig.tiny();
        // E 8 with 1 shared, k 3 (k' = 2)
        ModelConfig c = new ModelConfig(tok.vocabSize(), 16, 2, 2, 1, 8, 1, 3, 8, 10000.0, false, 1e-6, 32, tok.eosId(),
                t.routing(), t.loss());
        ckpt = tmp.resolve("ckpt");
        try (MoeModel m = new MoeModel(c).initRandom(11)) {
            ModelCheckpoint.save(ckpt, m, null, data.resolve("tokenizer.json"));
        }
    }

    static int run(StringBuilder err, String... args) {
        StringWriter e = new StringWriter();
        int code = Main.execute(new PrintWriter(e, true), args);
        err.append(e);
        return code;
    }

    static float[] logits(Path dir, int[] tokens, ExpertSet[] masks) {
        WorkerPool pool = new WorkerPool(1);
        try (InferenceModel m = InferenceModel.load(dir, false);
             ForwardRunner r = new ForwardRunner(m.weights(), tokens.length, 1, tokens.length, m.config().routedK(), true,
                     new JavaGemm(pool), pool)) {
            r.routing(null, masks);
            r.forward(tokens, new int[] {0, tokens.length}, new int[] {0}, new int[] {0}, 1);
            return r.logits().rows(0, tokens.length).toFloatArray();
        }
    }

    @Test
    void selectWritesTheSubsetAndAPrunedCheckpointThatEqualsTheMask() throws Exception {
        Path subset = tmp.resolve("sel/subset.json"), pruned = tmp.resolve("pruned");
        StringBuilder err = new StringBuilder();
        assertEquals(0, run(err, "select", "--ckpt", ckpt.toString(), "--calib", "data:" + data + ":code:1", "--keep", "1/2",
                "--out", subset.toString(), "--prune-out", pruned.toString()), err.toString());
        JsonNode s = JSON.readTree(subset.toFile());
        assertEquals("layerwise", s.get("method").asText());
        assertEquals(4, s.get("keep").asInt());
        assertEquals(64, s.get("source_sha256").asText().length());
        assertTrue(s.get("calibration").asText().contains(":code"), s.toString());
        ExpertSet[] masks = new ExpertSet[2];
        int[][] kept = new int[2][];
        for (int l = 0; l < 2; l++) {
            JsonNode ids = s.get("layers").get(l);
            assertEquals(4, ids.size());
            kept[l] = new int[4];
            for (int j = 0; j < 4; j++) kept[l][j] = ids.get(j).asInt();
            assertEquals(7, kept[l][3], "the shared expert is kept, last");
            masks[l] = ExpertSet.of(8, kept[l]);
            assertEquals(7, s.get("scores").get(l).size());
        }
        JsonNode cfg = JSON.readTree(pruned.resolve("config.json").toFile());
        assertEquals(4, cfg.get("num_experts").asInt());
        assertEquals(3, cfg.get("num_experts_per_tok").asInt());
        assertTrue(Files.exists(pruned.resolve("tokenizer.json")));
        JsonNode meta = JSON.readTree(pruned.resolve("pruning_metadata.json").toFile());
        assertEquals(s.get("source_sha256"), meta.get("source_sha256"));
        assertEquals(s.get("layers"), meta.get("kept_experts"));
        int[] tokens = {1, 5, 9, 30, 2, 7, 100, 44, 3, 12};
        float[] want = logits(ckpt, tokens, masks), got = logits(pruned, tokens, null);
        for (int i = 0; i < want.length; i++) assertEquals(want[i], got[i], 1e-5 * (1 + Math.abs(want[i])), "logit " + i);
        // prune from the subset file gives the same weights; generate takes the pruned checkpoint
        Path pruned2 = tmp.resolve("pruned2");
        assertEquals(0, run(err, "prune", "--ckpt", ckpt.toString(), "--subset", subset.toString(), "--out", pruned2.toString()), err.toString());
        assertArrayEquals(Files.readAllBytes(pruned.resolve("model.safetensors")), Files.readAllBytes(pruned2.resolve("model.safetensors")));
        assertEquals(0, run(err, "generate", "--ckpt", pruned.toString(), "--prompt", "the river", "--max-new-tokens", "4"), err.toString());
        // numerics on the pruned checkpoint gives the losses of numerics on the full one with the subset as a mask
        Path toks = tmp.resolve("tokens.json"), a = tmp.resolve("num-full.json"), b = tmp.resolve("num-pruned.json");
        Files.writeString(toks, "{\"tokens\": [[1, 5, 9, 30, 2, 7, 100, 44, 3, 12], [3, 4, 5, 6, 7, 8]]}");
        assertEquals(0, run(err, "numerics", "--ckpt", ckpt.toString(), "--tokens", toks.toString(), "--mode", "subset",
                "--subset", subset.toString(), "--out", a.toString()), err.toString());
        assertEquals(0, run(err, "numerics", "--ckpt", pruned.toString(), "--tokens", toks.toString(), "--out", b.toString()),
                err.toString());
        JsonNode la = JSON.readTree(a.toFile()).get("loss"), lb = JSON.readTree(b.toFile()).get("loss");
        for (String part : new String[] {"total", "ce", "lb", "z"})
            assertEquals(la.get(part).asDouble(), lb.get(part).asDouble(), 1e-5 * (1 + Math.abs(la.get(part).asDouble())), part);
        // the full checkpoint generates with the subset as a mask
        assertEquals(0, run(err, "generate", "--ckpt", ckpt.toString(), "--prompt", "the river", "--max-new-tokens", "4",
                "--subset", subset.toString()), err.toString());
    }

    @Test
    void everyMethodAndSourceKindSelects() throws Exception {
        Path text = tmp.resolve("calib.txt"), jsonl = tmp.resolve("calib.jsonl"), folder = tmp.resolve("calibdir");
        Files.writeString(text, "public static void main return new int");
        Files.writeString(jsonl, "{\"text\": \"the river flows\"}\n{\"text\": \"under old stone bridges\"}\n");
        Files.createDirectories(folder);
        Files.writeString(folder.resolve("a.txt"), "static final class");
        String[][] cases = {{"global", text.toString()}, {"frequency", jsonl.toString()}, {"reap", folder.toString()},
                {"random", text.toString()}, {"layerwise", text.toString()}};
        for (String[] cs : cases) {
            Path out = tmp.resolve("m-" + cs[0] + ".json");
            StringBuilder err = new StringBuilder();
            assertEquals(0, run(err, "select", "--ckpt", ckpt.toString(), "--calib", cs[1], "--keep", "3", "--method", cs[0],
                    "--out", out.toString()), cs[0] + ": " + err);
            JsonNode s = JSON.readTree(out.toFile());
            assertEquals(cs[0], s.get("method").asText());
            for (JsonNode l : s.get("layers")) assertEquals(3, l.size());
            // the same command again: the same file
            Path again = tmp.resolve("m2-" + cs[0] + ".json");
            assertEquals(0, run(err, "select", "--ckpt", ckpt.toString(), "--calib", cs[1], "--keep", "3", "--method", cs[0],
                    "--out", again.toString()), err.toString());
            assertEquals(s, JSON.readTree(again.toFile()));
        }
    }

    static void assertFails(String expect, Path mustNotExist, String... args) {
        StringBuilder err = new StringBuilder();
        int code = run(err, args);
        assertTrue(code != 0, "exit code " + code + " for " + String.join(" ", args));
        assertTrue(err.toString().contains(expect), "expected '" + expect + "' in: " + err);
        if (mustNotExist != null) assertFalse(Files.exists(mustNotExist), mustNotExist + " was written");
    }

    @Test
    void badInputFailsWithAClearMessageAndWritesNothing() throws Exception {
        Path out = tmp.resolve("bad/subset.json"), pr = tmp.resolve("bad/pruned");
        String c = ckpt.toString(), calib = "data:" + data + ":code:1";
        assertFails("K is out of range", out, "select", "--ckpt", c, "--calib", calib, "--keep", "1", "--out", out.toString());
        assertFails("K is out of range", out, "select", "--ckpt", c, "--calib", calib, "--keep", "9", "--out", out.toString());
        assertFails("expected K", out, "select", "--ckpt", c, "--calib", calib, "--keep", "half", "--out", out.toString());
        Path empty = tmp.resolve("empty.txt");
        Files.writeString(empty, "");
        assertFails("calibration source is empty", out, "select", "--ckpt", c, "--calib", empty.toString(), "--keep", "4",
                "--out", out.toString(), "--prune-out", pr.toString());
        assertFails("no such file or folder", out, "select", "--ckpt", c, "--calib", tmp.resolve("nope.txt").toString(),
                "--keep", "4", "--out", out.toString());
        assertFails("domain 'law' does not exist", out, "select", "--ckpt", c, "--calib", "data:" + data + ":law",
                "--keep", "4", "--out", out.toString());
        assertFails("--method", out, "select", "--ckpt", c, "--calib", calib, "--keep", "4", "--method", "best",
                "--out", out.toString());
        Path notCkpt = tmp.resolve("precious");
        Files.createDirectories(notCkpt);
        Files.writeString(notCkpt.resolve("notes.txt"), "keep me");
        assertFails("not a file of a moe4j checkpoint", out, "select", "--ckpt", c, "--calib", calib, "--keep", "4", "--out", out.toString(),
                "--prune-out", notCkpt.toString());
        assertTrue(Files.exists(notCkpt.resolve("notes.txt")));
        Path noShared = tmp.resolve("noshared.json"), oneLayer = tmp.resolve("onelayer.json");
        Files.writeString(noShared, "{\"layers\": [[0, 1, 2], [0, 1, 2]]}");
        assertFails("drops shared expert 7", pr, "prune", "--ckpt", c, "--subset", noShared.toString(), "--out", pr.toString());
        Files.writeString(oneLayer, "{\"layers\": [[0, 1, 7]]}");
        assertFails("layers", pr, "prune", "--ckpt", c, "--subset", oneLayer.toString(), "--out", pr.toString());
        Path ev = tmp.resolve("bad/ev");
        assertFails("not a setting", null, "eval", "--ckpt", c, "--data", data.toString(), "--settings", "full,half",
                "--out", ev.toString(), "--no-progress");
        assertFails("outside 1..7", null, "eval", "--ckpt", c, "--data", data.toString(), "--settings", "k:9",
                "--out", ev.toString(), "--no-progress");
        assertFails("no manifest.json", null, "eval", "--ckpt", c, "--data", tmp.toString(), "--out", ev.toString(), "--no-progress");
        try (Stream<Path> s = Files.list(tmp.resolve("bad").getParent())) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().startsWith("ev")));
        }
        assertFalse(Files.exists(tmp.resolve("bad/ev.csv")));
    }

    /**
     * A subset with a different K per layer prunes to a checkpoint with per-layer expert counts (the moe4j block's
     * layerExperts/layerK, num_experts = the largest K) that every command takes: its logits and numerics equal the
     * full checkpoint's with the subset as a mask; generate, eval and select run on it; a config whose per-layer list
     * has the wrong length is refused by name.
     */
    @Test
    void perLayerPrunedCheckpointIsACheckpointLikeAnyOther() throws Exception {
        Path sub = tmp.resolve("perlayer.json"), pr = tmp.resolve("perlayer-pruned");
        Files.writeString(sub, "{\"layers\": [[0, 7], [1, 2, 4, 5, 7]]}");
        StringBuilder err = new StringBuilder();
        assertEquals(0, run(err, "prune", "--ckpt", ckpt.toString(), "--subset", sub.toString(), "--out", pr.toString()), err.toString());
        JsonNode cfg = JSON.readTree(pr.resolve("config.json").toFile());
        assertEquals(5, cfg.get("num_experts").asInt(), "other readers see the largest layer's count");
        assertEquals(3, cfg.get("num_experts_per_tok").asInt());
        assertEquals("[2,5]", cfg.get("moe4j").get("layerExperts").toString());
        assertEquals("[2,3]", cfg.get("moe4j").get("layerK").toString(), "layer 0 routes 1 + min(2, 1) experts");
        assertFalse(JSON.readTree(ckpt.resolve("config.json").toFile()).get("moe4j").has("layerExperts"),
                "a uniform config has no per-layer lists");
        ExpertSet[] masks = {ExpertSet.of(8, 0, 7), ExpertSet.of(8, 1, 2, 4, 5, 7)};
        int[] tokens = {1, 5, 9, 30, 2, 7, 100, 44, 3, 12};
        float[] want = logits(ckpt, tokens, masks), got = logits(pr, tokens, null);
        for (int i = 0; i < want.length; i++) assertEquals(want[i], got[i], 1e-5 * (1 + Math.abs(want[i])), "logit " + i);
        Path toks = tmp.resolve("perlayer-tokens.json"), a = tmp.resolve("perlayer-full.json"), b = tmp.resolve("perlayer-num.json");
        Files.writeString(toks, "{\"tokens\": [[1, 5, 9, 30, 2, 7, 100, 44, 3, 12], [3, 4, 5, 6, 7, 8]]}");
        assertEquals(0, run(err, "numerics", "--ckpt", ckpt.toString(), "--tokens", toks.toString(), "--mode", "subset",
                "--subset", sub.toString(), "--out", a.toString()), err.toString());
        assertEquals(0, run(err, "numerics", "--ckpt", pr.toString(), "--tokens", toks.toString(), "--out", b.toString()),
                err.toString());
        JsonNode la = JSON.readTree(a.toFile()).get("loss"), lb = JSON.readTree(b.toFile()).get("loss");
        for (String part : new String[] {"total", "ce", "lb", "z"})
            assertEquals(la.get(part).asDouble(), lb.get(part).asDouble(), 1e-5 * (1 + Math.abs(la.get(part).asDouble())), part);
        assertEquals(0, run(err, "generate", "--ckpt", pr.toString(), "--prompt", "the river", "--max-new-tokens", "4"), err.toString());
        Path ev = tmp.resolve("perlayer-eval/results.json");
        assertEquals(0, run(err, "eval", "--ckpt", pr.toString(), "--data", data.toString(), "--settings", "full,keep:1/2,k:1",
                "--max-tokens-per-domain", "60", "--out", ev.toString(), "--no-progress"), err.toString());
        Path again = tmp.resolve("perlayer-again/subset.json"), pr2 = tmp.resolve("perlayer-again-pruned");
        assertEquals(0, run(err, "select", "--ckpt", pr.toString(), "--calib", "data:" + data + ":code:1", "--keep", "3",
                "--out", again.toString(), "--prune-out", pr2.toString()), err.toString());
        assertEquals("[2,3]", JSON.readTree(pr2.resolve("config.json").toFile()).get("moe4j").get("layerExperts").toString(),
                "K = 3 keeps 3 experts where a layer has them, all of a smaller layer");
        // train takes a per-layer config (its moe4j block), saves it with its training state and resumes
        Path cfgFile = tmp.resolve("perlayer-config.json"), run = tmp.resolve("perlayer-run");
        Files.writeString(cfgFile, cfg.get("moe4j").toString());
        assertEquals(0, run(err, "train", "--config", cfgFile.toString(), "--steps", "2", "--batch", "1", "--seq", "16",
                "--out", run.toString()), err.toString());
        assertEquals(cfg.get("moe4j"), JSON.readTree(run.resolve("config.json").toFile()).get("moe4j"));
        assertEquals(0, run(err, "train", "--resume", run.toString(), "--steps", "3", "--batch", "1", "--seq", "16",
                "--out", run.toString()), err.toString());
        // fine-tuning: --init trains the pruned checkpoint's own weights with a fresh optimizer, keeping its layers
        Path ft = tmp.resolve("perlayer-finetune");
        assertEquals(0, run(err, "train", "--init", pr.toString(), "--data", data.toString(), "--steps", "2", "--batch",
                "1", "--seq", "16", "--out", ft.toString()), err.toString());
        assertEquals(cfg.get("moe4j").get("layerExperts"),
                JSON.readTree(ft.resolve("config.json").toFile()).get("moe4j").get("layerExperts"));
        try (var before = org.moe4j.engine.io.ModelCheckpoint.load(pr);
             var after = org.moe4j.engine.io.ModelCheckpoint.load(ft)) {
            assertEquals(before.layout().total(), after.layout().total(), "same tensors");
            // started from the checkpoint, not from a fresh init: two AdamW steps of lr 3e-3 move a weight by about
            // 2 lr at most, a random init would be O(0.02..1) away
            long differ = 0;
            double maxMove = 0;
            for (long i = 0; i < before.layout().total(); i++) {
                float w0 = before.params().getAtIndex(org.moe4j.simd.Tensor.FLOAT, i);
                float w1 = after.params().getAtIndex(org.moe4j.simd.Tensor.FLOAT, i);
                if (w0 != w1) differ++;
                maxMove = Math.max(maxMove, Math.abs(w0 - w1));
            }
            assertTrue(differ > 0, "two steps moved no weight");
            assertTrue(maxMove < 0.01, "a weight moved by " + maxMove + ": not trained from the checkpoint's weights");
        }
        assertFails("would resize", tmp.resolve("perlayer-ft-bad"), "train", "--init", pr.toString(), "--experts", "8",
                "--steps", "2", "--out", tmp.resolve("perlayer-ft-bad").toString());
        assertFails("pass one", null, "train", "--init", pr.toString(), "--resume", run.toString(), "--steps", "9");
        // a hand-edited config whose per-layer list does not fit the layers
        Path broken = tmp.resolve("perlayer-broken");
        Files.createDirectories(broken);
        for (String f : new String[] {"model.safetensors", "tokenizer.json"}) Files.copy(pr.resolve(f), broken.resolve(f));
        Files.writeString(broken.resolve("config.json"), Files.readString(pr.resolve("config.json"))
                .replace("\"layerExperts\" : [ 2, 5 ]", "\"layerExperts\" : [ 2, 5, 5 ]"));
        assertFails("layerExperts", null, "generate", "--ckpt", broken.toString(), "--prompt", "the", "--max-new-tokens", "1");
    }

    @Test
    void evalScoresEveryDomainUnderEverySetting() throws Exception {
        Path out = tmp.resolve("eval/results");
        StringBuilder err = new StringBuilder();
        assertEquals(0, run(err, "eval", "--ckpt", ckpt.toString(), "--data", data.toString(), "--settings",
                "full,keep:1/2,keep:1/4,k:2,k:1,pool:7,pool:2", "--max-tokens-per-domain", "120", "--out", out + ".json",
                "--no-progress"), err.toString());
        JsonNode r = JSON.readTree(tmp.resolve("eval/results.json").toFile());
        JsonNode rows = r.get("results");
        assertEquals(2 * 7, rows.size());
        java.util.Map<String, Double> ce = new java.util.HashMap<>();
        for (JsonNode row : rows) {
            assertTrue(row.get("labels").asLong() > 0 && row.get("labels").asLong() < 120);
            double v = row.get("ce").asDouble();
            assertTrue(Double.isFinite(v) && v > 0, row.toString());
            assertEquals(Math.exp(v), row.get("perplexity").asDouble(), 1e-9 * Math.exp(v));
            ce.put(row.get("domain").asText() + "/" + row.get("setting").asText(), v);
            if (row.get("setting").asText().startsWith("keep:1/2")) assertEquals(4, row.get("layers").get(0).size());
        }
        for (String d : new String[] {"code", "prose"}) {
            // k' = the trained k and a pool of every routed expert are the full model
            assertEquals(ce.get(d + "/full"), ce.get(d + "/k:2"), 0.0);
            assertEquals(ce.get(d + "/full"), ce.get(d + "/pool:7"), 1e-9);
            assertTrue(Math.abs(ce.get(d + "/pool:2") - ce.get(d + "/full")) > 1e-9, "a pool of 2 changes the routing");
            assertTrue(ce.get(d + "/k:1") != ce.get(d + "/full").doubleValue());
        }
        java.util.List<String> csv = Files.readAllLines(tmp.resolve("eval/results.csv"));
        assertEquals("domain,setting,labels,ce,perplexity", csv.get(0));
        assertEquals(1 + 14, csv.size());
    }

    /**
     * eval and select replace an earlier output of their own (a rerun) but never a user's file of the same name:
     * refused before any work, the file left as it was.
     */
    @Test
    void evalAndSelectNeverReplaceAUsersFile() throws Exception {
        Path dir = Files.createDirectories(tmp.resolve("own"));
        String c = ckpt.toString(), calib = "data:" + data + ":code:1";
        StringBuilder err = new StringBuilder();
        Path ev = dir.resolve("ev");
        String[] evalArgs = {"eval", "--ckpt", c, "--data", data.toString(), "--settings", "full", "--max-tokens-per-domain",
                "40", "--out", ev.toString(), "--no-progress"};
        assertEquals(0, run(err, evalArgs), err.toString());
        assertEquals(0, run(err, evalArgs), "a rerun replaces eval's own output: " + err);
        Files.writeString(dir.resolve("ev.json"), "{\"my\": \"notes\"}");
        assertFails("exists and is not an earlier output of eval", null, evalArgs);
        assertEquals("{\"my\": \"notes\"}", Files.readString(dir.resolve("ev.json")));
        Files.delete(dir.resolve("ev.json"));
        Files.writeString(dir.resolve("ev.csv"), "a,b\n1,2\n");
        assertFails("exists and is not an earlier output of eval", null, evalArgs);
        assertEquals("a,b\n1,2\n", Files.readString(dir.resolve("ev.csv")));

        Path sub = dir.resolve("subset.json");
        String[] selectArgs = {"select", "--ckpt", c, "--calib", calib, "--keep", "4", "--out", sub.toString()};
        assertEquals(0, run(err, selectArgs), err.toString());
        assertEquals(0, run(err, selectArgs), "a rerun replaces select's own output: " + err);
        Files.writeString(sub, "[1, 2, 3]");
        assertFails("exists and is not an earlier output of select", null, selectArgs);
        assertEquals("[1, 2, 3]", Files.readString(sub));
        Path budgetOut = dir.resolve("fit.json");
        Files.writeString(dir.resolve("fit.budget.svg"), "<svg>my drawing</svg>");
        assertFails("exists and is not an earlier output of select", budgetOut, "select", "--ckpt", c, "--calib", calib,
                "--budget", "1GB", "--out", budgetOut.toString());
        assertEquals("<svg>my drawing</svg>", Files.readString(dir.resolve("fit.budget.svg")));
    }

    @Test
    void quickstartEndsWithFullVersusAQuarterOfTheExperts() {
        java.io.PrintStream old = System.out;
        java.io.ByteArrayOutputStream buf = new java.io.ByteArrayOutputStream();
        System.setOut(new java.io.PrintStream(buf, true, java.nio.charset.StandardCharsets.UTF_8));
        try {
            QuickstartCommand.subsetSample(ckpt, data);
        } finally {
            System.setOut(old);
        }
        String out = buf.toString(java.nio.charset.StandardCharsets.UTF_8);
        assertTrue(out.contains("domain 'code'") && out.contains("with 2 of 8 experts per layer chosen from one document"), out);
    }

    @Test
    void budgetSweepsKAndKPrimeAndChoosesWhatFits() throws Exception {
        Path out = tmp.resolve("budget/sub.json"), pr = tmp.resolve("budget/pruned");
        long full, half;
        try (InferenceModel m = InferenceModel.load(ckpt, false)) {
            full = org.moe4j.engine.subset.BudgetSweep.memory(m.config(), 8, 4);
            half = org.moe4j.engine.subset.BudgetSweep.memory(m.config(), 4, 4);
        }
        StringBuilder err = new StringBuilder();
        assertEquals(0, run(err, "select", "--ckpt", ckpt.toString(), "--calib", "data:" + data + ":prose:3", "--budget",
                (half + 1) + "B", "--out", out.toString(), "--prune-out", pr.toString()), err.toString());
        JsonNode s = JSON.readTree(out.toFile());
        int keep = s.get("keep").asInt();
        JsonNode kpl = s.get("k_per_layer");
        assertEquals(2, kpl.size(), "k' per layer");
        int k = Math.max(kpl.get(0).asInt(), kpl.get(1).asInt());
        assertTrue(keep <= 4 && keep >= 2, "K " + keep + " fits the budget of half the experts");
        assertTrue(kpl.get(0).asInt() >= 1 && kpl.get(1).asInt() >= 1 && k <= Math.min(2, keep - 1), kpl.toString());
        JsonNode pcfg = JSON.readTree(pr.resolve("config.json").toFile());
        assertEquals(1 + k, pcfg.get("num_experts_per_tok").asInt());
        if (kpl.get(0).asInt() != kpl.get(1).asInt())
            assertEquals("[" + (1 + kpl.get(0).asInt()) + "," + (1 + kpl.get(1).asInt()) + "]",
                    pcfg.get("moe4j").get("layerK").toString(), "the chosen k' per layer is the pruned checkpoint's");
        java.util.List<String> csv = Files.readAllLines(tmp.resolve("budget/sub.budget.csv"));
        assertEquals("keep,routed_k,k_per_layer,resident_bytes,decode_tokens_per_s,calibration_perplexity,pareto", csv.get(0));
        assertTrue(csv.stream().anyMatch(l -> l.startsWith("8,2,2," + full + ",")), csv.toString());
        // k' swept per layer too: one lower in the first layer only, then in the second only
        assertTrue(csv.stream().anyMatch(l -> l.startsWith("8,2,1/2," + full + ",")), csv.toString());
        assertTrue(csv.stream().anyMatch(l -> l.startsWith("8,2,2/1," + full + ",")), csv.toString());
        assertTrue(csv.stream().anyMatch(l -> l.endsWith(",true")), "a Pareto front");
        assertTrue(Files.readString(tmp.resolve("budget/sub.budget.svg")).startsWith("<svg"));
        Path none = tmp.resolve("budget2/sub.json");
        assertFails("no setting fits", none.getParent(), "select", "--ckpt", ckpt.toString(), "--calib",
                "data:" + data + ":prose:3", "--budget", "1KB", "--out", none.toString());
        assertFails("give one of --keep K and --budget MEMORY", none.getParent(), "select", "--ckpt", ckpt.toString(),
                "--calib", "data:" + data + ":prose:3", "--budget", "1GB", "--keep", "4", "--out", none.toString());
        assertFails("expected a size", none.getParent(), "select", "--ckpt", ckpt.toString(),
                "--calib", "data:" + data + ":prose:3", "--budget", "lots", "--out", none.toString());
        assertEquals(200_000_000L, org.moe4j.engine.subset.BudgetSweep.parseBytes("200MB", "--budget"));
        assertEquals(3L << 29, org.moe4j.engine.subset.BudgetSweep.parseBytes("1.5GiB", "--budget"));
    }

    /**
     * A tied checkpoint (tie_word_embeddings, no lm_head tensor): numerics reports one embedding gradient, the sum of
     * the embedding's and the LM head's, as an untied copy's two tensors add up to; a pruned tied checkpoint stays tied.
     */
    @Test
    void tiedEmbeddingsStayOneParameter() throws Exception {
        Path tied = tmp.resolve("tied"), untied = tmp.resolve("untied");
        ModelConfig c;
        try (InferenceModel im = InferenceModel.load(ckpt, false)) {
            c = im.config();
        }
        try (MoeModel m = new MoeModel(c).initRandom(5)) {
            m.setParam(org.moe4j.engine.model.ParamLayout.lmHead(), m.paramValues(org.moe4j.engine.model.ParamLayout.embedTokens()));
            ModelCheckpoint.save(untied, m, null, data.resolve("tokenizer.json"));
            java.util.Map<String, org.moe4j.simd.Tensor> t = new java.util.LinkedHashMap<>();
            for (var e : m.layout().entries())
                if (!e.name().equals(org.moe4j.engine.model.ParamLayout.lmHead())) t.put(e.name(), m.param(e.name()));
            org.moe4j.io.checkpoint.Checkpoint.write(tied, org.moe4j.engine.subset.Pruner.tied(ModelCheckpoint.hfConfig(c)), t,
                    1L << 30, java.util.Map.of(), java.util.Map.of(), java.util.Map.of("tokenizer.json", data.resolve("tokenizer.json")));
        }
        Path toks = tmp.resolve("tied-tokens.json");
        Files.writeString(toks, "{\"tokens\": [[1, 5, 9, 30, 2, 7, 100, 44, 3, 12]]}");
        StringBuilder err = new StringBuilder();
        for (Path p : new Path[] {tied, untied})
            assertEquals(0, run(err, "numerics", "--ckpt", p.toString(), "--tokens", toks.toString(), "--out",
                    p + "-num.json", "--grads", p + "-grads.safetensors"), err.toString());
        String emb = org.moe4j.engine.model.ParamLayout.embedTokens(), head = org.moe4j.engine.model.ParamLayout.lmHead();
        try (var ft = org.moe4j.io.safetensors.SafetensorsFile.open(Path.of(tied + "-grads.safetensors"));
             var fu = org.moe4j.io.safetensors.SafetensorsFile.open(Path.of(untied + "-grads.safetensors"))) {
            assertFalse(ft.names().contains(head), "a tied model has one embedding gradient");
            assertTrue(fu.names().contains(head));
            float[] g = ft.tensor(emb).toFloatArray(), a = fu.tensor(emb).toFloatArray(), b = fu.tensor(head).toFloatArray();
            for (int i = 0; i < g.length; i++) assertEquals(a[i] + b[i], g[i], 1e-6 * (1 + Math.abs(g[i])), "element " + i);
        }
        // convert writes a tied checkpoint back tied
        Path conv = tmp.resolve("tied-converted");
        assertEquals(0, run(err, "convert", "--from", tied.toString(), "--out", conv.toString()), err.toString());
        assertTrue(JSON.readTree(conv.resolve("config.json").toFile()).get("tie_word_embeddings").asBoolean());
        try (var f = org.moe4j.io.safetensors.SafetensorsFile.open(conv.resolve("model.safetensors"))) {
            assertFalse(f.names().contains(head), "convert keeps a tied checkpoint tied");
        }
        Path sub = tmp.resolve("tied-sub.json"), pr = tmp.resolve("tied-pruned");
        Files.writeString(sub, "{\"layers\": [[0, 2, 4, 7], [1, 3, 5, 7]]}");
        assertEquals(0, run(err, "prune", "--ckpt", tied.toString(), "--subset", sub.toString(), "--out", pr.toString()), err.toString());
        assertTrue(JSON.readTree(pr.resolve("config.json").toFile()).get("tie_word_embeddings").asBoolean());
        try (var f = org.moe4j.io.safetensors.SafetensorsFile.open(pr.resolve("model.safetensors"))) {
            assertFalse(f.names().contains(head), "the pruned checkpoint stays tied");
        }
        Path a = tmp.resolve("tied-masked.json"), b = tmp.resolve("tied-pruned.json");
        assertEquals(0, run(err, "numerics", "--ckpt", tied.toString(), "--tokens", toks.toString(), "--mode", "subset",
                "--subset", sub.toString(), "--out", a.toString()), err.toString());
        assertEquals(0, run(err, "numerics", "--ckpt", pr.toString(), "--tokens", toks.toString(), "--out", b.toString()), err.toString());
        double ta = JSON.readTree(a.toFile()).get("loss").get("total").asDouble(), tb = JSON.readTree(b.toFile()).get("loss").get("total").asDouble();
        assertEquals(ta, tb, 1e-5 * (1 + Math.abs(ta)));
        // training a tied model updates the one tensor, saves it once (tied), and resumes
        Path cfg = tmp.resolve("tied-config.json"), run = tmp.resolve("tied-run");
        Files.writeString(cfg, c.withTied(true).toJson());
        assertEquals(0, run(err, "train", "--config", cfg.toString(), "--steps", "2", "--batch", "1", "--seq", "16",
                "--out", run.toString()), err.toString());
        assertTrue(JSON.readTree(run.resolve("config.json").toFile()).get("tie_word_embeddings").asBoolean());
        assertTrue(JSON.readTree(run.resolve("config.json").toFile()).get("moe4j").get("tieEmbeddings").asBoolean());
        try (var f = org.moe4j.io.safetensors.SafetensorsFile.open(run.resolve("model.safetensors"))) {
            assertFalse(f.names().contains(head), "a trained tied model is saved with one embedding tensor");
        }
        try (MoeModel m = ModelCheckpoint.load(run)) {
            assertTrue(m.config().tied());
            assertEquals(m.layout().total(), org.moe4j.engine.io.TrainingState.readIfPresent(run).parameterCount(),
                    "one set of AdamW moments for the one tensor");
        }
        assertEquals(0, run(err, "train", "--resume", run.toString(), "--steps", "3", "--batch", "1", "--seq", "16",
                "--out", run.toString()), err.toString());
    }
}
