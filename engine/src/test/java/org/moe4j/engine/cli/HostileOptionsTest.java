package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.io.TrainingState;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.io.corpus.CorpusException;
import picocli.CommandLine;

/**
 * The commands as a careless or hostile user runs them (issue 9): an --out that is someone's folder or file, sizes
 * no machine holds, a training state with missing or mistyped fields, a resume that would train no step, and
 * prepare-data on sources that hold nothing. Each is refused with a Moe4jException naming the option, field or
 * source, and leaves the user's files as they were.
 */
class HostileOptionsTest {
    static final ObjectMapper JSON = new ObjectMapper();

    static <T extends Callable<Integer>> T parse(T cmd, String... args) {
        CommandLine cl = new CommandLine(cmd);
        cl.setOut(new PrintWriter(new StringWriter()));
        cl.setErr(new PrintWriter(new StringWriter()));
        cl.parseArgs(args);
        return cmd;
    }

    static Moe4jException refused(Callable<Integer> cmd, String... expected) {
        Moe4jException e = assertThrows(Moe4jException.class, cmd::call);
        for (String s : expected) assertTrue(e.getMessage().contains(s), "expected '" + s + "' in: " + e.getMessage());
        return e;
    }

    static String[] trainArgs(Path out, String... more) {
        String[] base = {"--config", "tiny", "--steps", "2", "--batch", "2", "--seq", "16", "--log-every", "100",
                "--out", out.toString()};
        String[] all = new String[base.length + more.length];
        System.arraycopy(base, 0, all, 0, base.length);
        System.arraycopy(more, 0, all, base.length, more.length);
        return all;
    }

    @Test
    void trainOutNeverReplacesAUsersFolderOrFile(@TempDir Path dir) throws IOException {
        Path tree = dir.resolve("mine");
        Files.createDirectories(tree.resolve("sub"));
        Files.writeString(tree.resolve("notes.txt"), "keep me");
        Files.writeString(tree.resolve("sub").resolve("more.txt"), "and me");
        refused(parse(new TrainCommand(), trainArgs(tree)), "--out " + tree, "not a file of a moe4j checkpoint",
                "rm -r");
        assertEquals("keep me", Files.readString(tree.resolve("notes.txt")));
        assertEquals("and me", Files.readString(tree.resolve("sub").resolve("more.txt")));

        Path file = dir.resolve("thesis.pdf");
        Files.writeString(file, "years of work");
        refused(parse(new TrainCommand(), trainArgs(file)), "--out " + file, "is an existing file", "rm -r");
        assertEquals("years of work", Files.readString(file));

        // an empty folder is taken, and the checkpoint written there is replaced by the next run
        Path empty = Files.createDirectories(dir.resolve("empty"));
        assertEquals(0, parse(new TrainCommand(), trainArgs(empty)).call());
        assertEquals(0, parse(new TrainCommand(), trainArgs(empty)).call());
        assertTrue(Files.isRegularFile(empty.resolve("model.safetensors")));
        try (var s = Files.list(dir)) {
            // empty.run holds the run's metrics log (written beside the checkpoint, not a leftover)
            assertEquals(3, s.filter(p -> !p.getFileName().toString().endsWith(".run")).count(),
                    "mine, thesis.pdf, empty: no leftovers of the saves");
        }

        // convert refuses the same before it imports anything
        refused(parse(new ConvertCommand(), "--from", empty.toString(), "--out", tree.toString()), "--out " + tree,
                "not a file of a moe4j checkpoint");
    }

    @Test
    void sizesNoMachineHoldsAreRefusedBeforeAllocating(@TempDir Path dir) throws IOException {
        refused(parse(new TrainCommand(), "--config", "tiny", "--batch", "100000000", "--seq", "64"),
                "--batch 100000000 x --seq 64", "tokens per micro-batch");
        refused(parse(new TrainCommand(), "--config", "tiny", "--batch", "100000000", "--seq", "16"),
                "--batch 100000000 x --seq 16", "needs about", "TiB");
        refused(parse(new SelfCheckCommand(), "--size", "200000", "--gemm", "java"), "--size 200000", "needs about",
                "GiB");
        refused(parse(new SelfCheckCommand(), "--size", "0"), "--size 0 must be >= 1");
        refused(parse(new TrainCommand(), "--config", "tiny", "--batch", "0"), "--batch 0 must be >= 1");

        // a --config file with 100,000 experts of a big hidden size: named with its estimate
        ModelConfig t = ModelConfig.tiny();
        ModelConfig huge = new ModelConfig(256, 4096, 2, 32, 8, 100_000, 0, 2, 4096, 10000.0, false, 1e-6, 128, 0,
                t.routing(), t.loss());
        Path cfg = dir.resolve("huge.json");
        Files.writeString(cfg, huge.toJson());
        refused(parse(new TrainCommand(), "--config", cfg.toString(), "--steps", "1"), "100000 experts", "needs about");
        Moe4jException e = assertThrows(Moe4jException.class, () -> new MoeModel(huge));
        assertTrue(e.getMessage().contains("MoeModel") && e.getMessage().contains("needs about"), e.getMessage());
    }

    /** A checkpoint of 2 steps with training state, its training_state.json rewritten by {@code edit}. */
    static Path checkpointWithState(Path dir, java.util.function.Consumer<ObjectNode> edit) throws IOException {
        Path ck = dir.resolve("ck");
        assertEquals(0, parse(new TrainCommand(), trainArgs(ck)).call());
        Path js = ck.resolve(ModelCheckpoint.STATE_JSON);
        ObjectNode o = (ObjectNode) JSON.readTree(js.toFile());
        edit.accept(o);
        Files.writeString(js, o.toString());
        return ck;
    }

    @Test
    void trainingStateFieldsAreTypedAndNamed(@TempDir Path dir) throws IOException {
        Path ck = checkpointWithState(dir.resolve("a"), o -> o.remove(TrainingState.STEP));
        refused(parse(new TrainCommand(), "--resume", ck.toString(), "--steps", "4", "--batch", "2", "--seq", "16"),
                ModelCheckpoint.STATE_JSON, "'step' is missing");
        ck = checkpointWithState(dir.resolve("b"), o -> o.put(TrainingState.STEP, "abc"));
        Moe4jException e = refused(parse(new TrainCommand(), "--resume", ck.toString(), "--steps", "4", "--batch", "2",
                "--seq", "16"), "'step' = \"abc\" must be an integer");
        assertTrue(e.getMessage().startsWith(ck.resolve(ModelCheckpoint.STATE_JSON) + ": "), e.getMessage());
        ck = checkpointWithState(dir.resolve("c"), o -> o.put(TrainingState.DATA_POSITION, -5));
        e = refused(parse(new TrainCommand(), "--resume", ck.toString(), "--steps", "4", "--batch", "2", "--seq", "16"),
                "'data_position' = -5 must be >= 0");
        assertTrue(e.getMessage().startsWith(ck.resolve(ModelCheckpoint.STATE_JSON) + ": "), e.getMessage());
        ck = checkpointWithState(dir.resolve("d"), o -> o.put(TrainingState.PARAMETER_COUNT, 12.5));
        refused(parse(new TrainCommand(), "--resume", ck.toString(), "--steps", "4", "--batch", "2", "--seq", "16"),
                "'parameter_count' = 12.5 must be an integer");
        ck = checkpointWithState(dir.resolve("e"), o -> o.put("stpe", 3));
        refused(parse(new TrainCommand(), "--resume", ck.toString(), "--steps", "4", "--batch", "2", "--seq", "16"),
                "unknown key 'stpe'");
        ck = checkpointWithState(dir.resolve("f"), o -> o.put(TrainingState.PARAMETER_COUNT, 7));
        refused(parse(new TrainCommand(), "--resume", ck.toString(), "--steps", "4", "--batch", "2", "--seq", "16"),
                "'parameter_count' = 7, the model has");
    }

    @Test
    void aResumeThatWouldTrainNoStepIsRefused(@TempDir Path dir) throws IOException {
        Path ck = checkpointWithState(dir, o -> { });
        for (String steps : new String[] {"1", "2"}) {
            refused(parse(new TrainCommand(), "--resume", ck.toString(), "--steps", steps, "--batch", "2", "--seq",
                    "16"), "--steps " + steps + " is at or below the step the checkpoint", "(2)", "--steps 3");
        }
        assertEquals(0, parse(new TrainCommand(), "--resume", ck.toString(), "--steps", "3", "--batch", "2", "--seq",
                "16", "--log-every", "100").call());
    }

    static Callable<Integer> prepare(Path out, String source, String... more) {
        String[] base = {"--source", source, "--out", out.toString(), "--no-progress"};
        String[] all = new String[base.length + more.length];
        System.arraycopy(base, 0, all, 0, base.length);
        System.arraycopy(more, 0, all, base.length, more.length);
        return parse(new PrepareDataCommand(), all);
    }

    @Test
    void prepareDataRefusesSourcesWithNothingInThem(@TempDir Path dir) throws IOException {
        Path empty = Files.createDirectories(dir.resolve("empty"));
        Path binary = Files.createDirectories(dir.resolve("binary"));
        Files.write(binary.resolve("a.bin"), new byte[] {1, 0, 2, 0, 3});
        Files.write(binary.resolve("b.png"), new byte[] {(byte) 0x89, 'P', 'N', 'G', 0, 0});
        Path jsonl = dir.resolve("empty.jsonl");
        Files.writeString(jsonl, "");
        for (String bpe : new String[] {"--byte-tokens", "--vocab"}) {
            String[] more = bpe.equals("--vocab") ? new String[] {"--vocab", "300"} : new String[] {bpe};
            for (String src : new String[] {"folder:" + empty, "folder:" + binary, "jsonl:" + jsonl}) {
                Path out = dir.resolve("out" + src.hashCode() + bpe.length());
                CorpusException e = assertThrows(CorpusException.class, () -> prepare(out, src, more).call(), src);
                String named = src.substring(src.indexOf(':') + 1);
                assertTrue(e.getMessage().contains(named) && e.getMessage().contains("no documents"),
                        src + " " + bpe + ": " + e.getMessage());
                assertTrue(!Files.exists(out.resolve("manifest.json")), "no dataset written for " + src);
            }
        }
    }
}
