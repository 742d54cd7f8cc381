package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.io.corpus.JdkSources;
import org.moe4j.io.corpus.ShardManifest;
import picocli.CommandLine;

/** The quickstart end to end on a sliver of the JDK's sources: data, model, tokenizer; the data is reused. */
class QuickstartCommandTest {
    @Test
    void preparesTrainsSavesAndReusesItsData(@TempDir Path dir) throws Exception {
        assumeTrue(Files.isRegularFile(Path.of(System.getProperty("java.home"), "lib", "src.zip")),
                "this JDK ships no lib/src.zip");
        String[] args = {"--out", dir.toString(), "--docs-per-domain", "4", "--vocab", "300", "--steps", "3",
                "--batch", "2", "--seq", "32", "--time-limit", "0"};
        StringWriter err = new StringWriter();
        CommandLine cl = new CommandLine(new QuickstartCommand());
        cl.setOut(new PrintWriter(new StringWriter()));
        cl.setErr(new PrintWriter(err));
        assertEquals(0, cl.execute(args), err.toString());
        Path data = dir.resolve("data"), model = dir.resolve("model");
        assertTrue(Files.isRegularFile(model.resolve("tokenizer.json")));
        assertTrue(Files.isRegularFile(model.resolve("config.json")));
        assertEquals(6, ShardManifest.read(data).domains().size(), "the JDK's six domains");

        String ref = JdkSources.ofRunningJdk(4).reference();
        assertNull(QuickstartCommand.reuseProblem(data, ref, 300), "a second run reuses the data");
        assertEquals("prepared with other settings", QuickstartCommand.reuseProblem(data, ref, 512));
        assertEquals("prepared from other sources", QuickstartCommand.reuseProblem(data, JdkSources.ofRunningJdk(5).reference(), 300));
        Files.writeString(data.resolve("tokenizer.json"), "{}");
        assertEquals("its tokenizer.json does not match the manifest", QuickstartCommand.reuseProblem(data, ref, 300));
    }
}
