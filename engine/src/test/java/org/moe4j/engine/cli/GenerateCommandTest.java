package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.io.tokenizer.BpeTokenizer;
import picocli.CommandLine;

/** {@code ./moe4j generate} end to end on a small checkpoint with a tokenizer, and its bad-input messages. */
class GenerateCommandTest {
    static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path tmp;
    static Path ckpt;

    @BeforeAll
    static void checkpoint() throws Exception {
        List<String> texts = List.of("the quick brown fox jumps over the lazy dog", "public static void main",
                "int x = 1; int y = 2; return x + y;", "hello world, hello moe4j");
        BpeTokenizer tok = BpeTokenizer.train(texts, 300, List.of(BpeTokenizer.END_OF_TEXT), null);
        Path tj = tmp.resolve("tokenizer.json");
        tok.save(tj);
        ModelConfig t = ModelConfig.tiny();
        ModelConfig c = new ModelConfig(tok.vocabSize(), 16, 2, 2, 1, 6, 1, 3, 8, 10000.0, false, 1e-6, 64, tok.eosId(),
                t.routing(), t.loss());
        ckpt = tmp.resolve("ckpt");
        try (MoeModel m = new MoeModel(c).initRandom(7)) {
            ModelCheckpoint.save(ckpt, m, null, tj);
        }
    }

    /** Runs the command as Main does: returns the exit code; err collects the message. */
    static int run(StringBuilder err, String... args) {
        CommandLine cl = new CommandLine(new GenerateCommand());
        ByteArrayOutputStream e = new ByteArrayOutputStream();
        cl.setErr(new PrintWriter(e, true));
        cl.setExecutionExceptionHandler((ex, c, parsed) -> {
            c.getErr().println("moe4j: " + ex.getMessage());
            return 1;
        });
        int code = cl.execute(args);
        err.append(e);
        return code;
    }

    @Test
    void generatesDeterministicallyAndWritesOut() throws Exception {
        Path a = tmp.resolve("a.json"), b = tmp.resolve("b.json");
        StringBuilder err = new StringBuilder();
        assertEquals(0, run(err, "--ckpt", ckpt.toString(), "--prompt", "hello world", "--max-new-tokens", "12",
                "--ignore-eos", "--out", a.toString()), err.toString());
        assertEquals(0, run(err, "--ckpt", ckpt.toString(), "--prompt", "hello world", "--max-new-tokens", "12",
                "--ignore-eos", "--weights-dtype", "bf16", "--out", b.toString()), err.toString());
        JsonNode ra = JSON.readTree(a.toFile());
        assertEquals(12, ra.get("tokens").get(0).size());
        // a BF16 KV cache (keys and values rounded as they are cached) runs the same way
        Path kv = tmp.resolve("kv.json");
        assertEquals(0, run(err, "--ckpt", ckpt.toString(), "--prompt", "hello world", "--max-new-tokens", "12",
                "--ignore-eos", "--kv-dtype", "bf16", "--out", kv.toString()), err.toString());
        assertEquals(12, JSON.readTree(kv.toFile()).get("tokens").get(0).size());
        assertEquals("length", ra.get("finish_reason").get(0).asText());
        // the text is the decoding of the tokens
        try (InferenceModel m = InferenceModel.load(ckpt, false)) {
            int[] ids = new int[12];
            for (int i = 0; i < 12; i++) ids[i] = ra.get("tokens").get(0).get(i).asInt();
            assertEquals(m.tokenizer().decode(ids), ra.get("text").get(0).asText());
            assertTrue(m.zeroCopy(), "a checkpoint moe4j wrote is used in place");
        }
        // a batch of token prompts, sampled with a seed twice: the same tokens
        Path prompts = tmp.resolve("prompts.json");
        Files.writeString(prompts, "{\"tokens\": [[5, 6, 7], [9], [10, 11, 12, 13, 14]], \"eos_id\": 0}");
        Path c1 = tmp.resolve("c1.json"), c2 = tmp.resolve("c2.json");
        for (Path o : List.of(c1, c2))
            assertEquals(0, run(err, "--ckpt", ckpt.toString(), "--prompt-tokens", prompts.toString(), "--temperature", "0.9",
                    "--top-p", "0.9", "--top-k", "20", "--seed", "3", "--max-new-tokens", "6", "--k-per-layer", "1,2",
                    "--out", o.toString()), err.toString());
        assertEquals(JSON.readTree(c1.toFile()).get("tokens"), JSON.readTree(c2.toFile()).get("tokens"));
        assertEquals(3, JSON.readTree(c1.toFile()).get("tokens").size());
    }

    @Test
    void badInputGetsAClearMessageAndExitCode() throws Exception {
        Path bad = tmp.resolve("bad.json");
        Files.writeString(bad, "{\"tokens\": [[1, 2, 99999]]}");
        Path malformed = tmp.resolve("malformed.json");
        Files.writeString(malformed, "{\"tokens\": [[1, 2,");
        Path precious = tmp.resolve("precious.txt");
        Files.writeString(precious, "my notes");
        Path noShared = tmp.resolve("noshared.json");
        Files.writeString(noShared, "{\"experts\": [0, 1]}");
        Object[][] cases = {
                {new String[] {"--ckpt", tmp.resolve("nope").toString(), "--prompt", "x"}, "no such checkpoint folder"},
                {new String[] {"--ckpt", ckpt.toString(), "--prompt-tokens", bad.toString()}, "99999"},
                {new String[] {"--ckpt", ckpt.toString(), "--prompt-tokens", malformed.toString()}, "malformed.json"},
                {new String[] {"--ckpt", ckpt.toString(), "--prompt", "x", "--k-per-layer", "9"}, "--k-per-layer"},
                {new String[] {"--ckpt", ckpt.toString(), "--prompt", "x", "--subset", noShared.toString()}, "shared expert 5"},
                {new String[] {"--ckpt", ckpt.toString(), "--prompt", "x", "--weights-dtype", "f8"}, "--weights-dtype"},
                {new String[] {"--ckpt", ckpt.toString(), "--prompt", "x", "--kv-dtype", "fp8"}, "--kv-dtype fp8: expected f32 or bf16"},
                {new String[] {"--ckpt", ckpt.toString(), "--prompt", "x", "--temperature", "-1"}, "--temperature"},
                {new String[] {"--ckpt", ckpt.toString(), "--prompt", "x", "--emo-pool", "99"}, "--emo-pool"},
                {new String[] {"--ckpt", ckpt.toString(), "--prompt", "x", "--out", precious.toString()}, "not an earlier output"},
        };
        for (Object[] cs : cases) {
            StringBuilder err = new StringBuilder();
            int code = run(err, (String[]) cs[0]);
            assertEquals(1, code, String.join(" ", (String[]) cs[0]) + " -> " + err);
            assertTrue(err.toString().contains((String) cs[1]), "message for " + String.join(" ", (String[]) cs[0])
                    + " should name '" + cs[1] + "': " + err);
            assertFalse(err.toString().contains("Exception"), "no stack trace: " + err);
        }
        assertEquals("my notes", Files.readString(precious), "a user's file is never replaced");
    }

    @Test
    void theReadmeLibraryExampleRuns() throws Exception {
        String streamed = ReadmeExample.run(ckpt);
        // the streamed deltas of the greedy session are its text, which is what generate prints for the same prompt
        Path o = tmp.resolve("readme.json");
        StringBuilder err = new StringBuilder();
        assertEquals(0, run(err, "--ckpt", ckpt.toString(), "--prompt", "hello world", "--max-new-tokens", "32",
                "--stop", "\n\n", "--out", o.toString()), err.toString());
        assertEquals(JSON.readTree(o.toFile()).get("text").get(0).asText(), streamed);
        String readme = Files.readString(Path.of("..", "README.md"));
        String src = Files.readString(Path.of("src/test/java/org/moe4j/engine/cli/ReadmeExample.java"));
        String code = src.substring(src.indexOf("// README-BEGIN") + 16, src.indexOf("        // README-END"));
        for (String line : code.strip().split("\n"))
            assertTrue(readme.contains(line.strip()), "README.md lacks the example line: " + line.strip());
    }
}
