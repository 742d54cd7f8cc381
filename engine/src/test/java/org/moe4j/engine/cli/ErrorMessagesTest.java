package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.engine.config.ModelConfig;

/**
 * What a user sees when an option or a config file is wrong: one line, exit code 1, naming the option or the file
 * and key as typed, the value, and what it must be. Runs the real command line (tiny model, Java GEMM).
 */
class ErrorMessagesTest {
    /** The error output of {@code ./moe4j args...}; asserts exit code 1. */
    static String error(String... args) {
        StringWriter err = new StringWriter();
        int code = Main.execute(new PrintWriter(err), args);
        assertEquals(1, code, err.toString());
        return err.toString().strip();
    }

    static String[] train(String... more) {
        List<String> a = new ArrayList<>(List.of("train", "--gemm", "java", "--batch", "1", "--seq", "8"));
        a.addAll(List.of(more));
        return a.toArray(String[]::new);
    }

    @Test
    void trainOptionsAreNamedAsTyped() {
        // train checks its numeric options first (HostileOptionsTest), the schedule and corpus after: either way the
        // message starts with the option and the value the user typed
        for (String[] o : new String[][] {{"--steps", "-1", "-1"}, {"--warmup", "-5", "-5"}, {"--lr", "0", "0"},
                {"--domains", "0", "0"}}) {
            String msg = error(train(o[0], o[1]));
            assertTrue(msg.startsWith("moe4j: " + o[0] + " " + o[2]) && msg.contains(">"), msg);
        }
        assertEquals("moe4j: --domains 100: the vocabulary of 256 tokens holds at most 63 domains (4 ids each, plus EOS)",
                error(train("--domains", "100")));
    }

    @Test
    void aBadConfigFileIsNamedWithItsKey(@TempDir Path dir) throws Exception {
        Path f = dir.resolve("model.json");
        Files.writeString(f, ModelConfig.bench().toJson().replace("\"kvHeads\" : 8", "\"kvHeads\" : 3"));
        assertEquals("moe4j: " + f + ": kvHeads = 3: must divide heads = 8", error(train("--config", f.toString())));
        Files.writeString(f, ModelConfig.bench().toJson().replace("\"poolMin\" : 1", "\"poolMin\" : 0"));
        assertEquals("moe4j: " + f + ": routing.pool.poolMin = 0: must be >= 1", error(train("--config", f.toString())));
        Files.writeString(f, "{\"vocab\": 5}");
        String missing = error(train("--config", f.toString()));
        assertTrue(missing.startsWith("moe4j: " + f + ": ") && missing.contains("'d'"), missing);
    }

    /** The quickstart refuses bad options before it spends minutes preparing data. */
    @Test
    void quickstartChecksItsOptionsFirst(@TempDir Path dir) {
        String out = dir.resolve("never").toString();
        assertEquals("moe4j: --steps 0: must be >= 1", error("quickstart", "--out", out, "--steps", "0"));
        assertEquals("moe4j: --vocab 100: must be >= 257 (256 byte tokens and the end-of-text token)",
                error("quickstart", "--out", out, "--vocab", "100"));
        assertEquals("moe4j: --seq 500: must be in [2, 128] (the quickstart model's longest sequence)",
                error("quickstart", "--out", out, "--seq", "500"));
        assertEquals("moe4j: --routing fast: expected standard, emo, matryoshka, capacity or shared",
                error("quickstart", "--out", out, "--routing", "fast"));
        assertTrue(Files.notExists(dir.resolve("never")), "nothing written");
    }

    @Test
    void anythingElseIsCalledADefect() {
        String m = Main.describe(new NullPointerException("x is null"), "train");
        assertTrue(m.startsWith("internal error: java.lang.NullPointerException: x is null (a defect in moe4j"), m);
    }
}
