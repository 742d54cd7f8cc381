package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.io.corpus.ShardManifest;
import org.moe4j.io.tokenizer.BpeTokenizer;
import picocli.CommandLine;

/** prepare-data (BPE) on a folder of texts, then train --data on it: the loss falls, validation is reported. */
class TrainCommandDataTest {
    static final String[] WORDS = {"static", "final", "class", "public", "return", "void", "int", "new", "this"};
    static final String[] PROSE = {"the", "river", "flows", "under", "old", "stone", "bridges", "at", "dawn"};

    /** Two domains of repetitive text with different words; ~25 documents each. */
    static Path texts(Path dir) throws IOException {
        Path root = dir.resolve("texts");
        for (int i = 0; i < 25; i++) {
            for (String domain : new String[] {"code", "prose"}) {
                String[] w = domain.equals("code") ? WORDS : PROSE;
                StringBuilder b = new StringBuilder();
                for (int j = 0; j < 120; j++) b.append(w[(i + j * j) % w.length]).append(j % 9 == 8 ? ".\n" : " ");
                Path f = root.resolve(domain).resolve("d" + i + ".txt");
                Files.createDirectories(f.getParent());
                Files.writeString(f, b);
            }
        }
        return root;
    }

    static Path prepare(Path dir) throws IOException {
        Path out = dir.resolve("data");
        StringWriter err = new StringWriter();
        CommandLine cl = new CommandLine(new PrepareDataCommand());
        cl.setOut(new PrintWriter(new StringWriter()));
        cl.setErr(new PrintWriter(err));
        int code = cl.execute("--source", "folder:" + texts(dir), "--out", out.toString(), "--vocab", "320",
                "--val-fraction", "0.25", "--no-progress");
        assertEquals(0, code, err.toString());
        return out;
    }

    static TrainCommand train(String... args) {
        TrainCommand cmd = new TrainCommand();
        new CommandLine(cmd).parseArgs(args);
        assertEquals(0, cmd.call());
        return cmd;
    }

    @Test
    void trainsOnShardsLowersTheLossAndReportsValidation(@TempDir Path dir) throws IOException {
        Path data = prepare(dir);
        ShardManifest m = ShardManifest.read(data);
        BpeTokenizer tok = BpeTokenizer.load(data.resolve("tokenizer.json"));
        assertEquals(tok.vocabSize(), m.tokenizer().vocabSize());
        assertEquals(tok.eosId(), m.tokenizer().eosId());

        Path ck = dir.resolve("ck");
        TrainCommand cmd = train("--config", "tiny", "--routing", "emo", "--data", data.toString(), "--steps", "40",
                "--batch", "4", "--seq", "32", "--lr", "1e-2", "--warmup", "4", "--log-every", "100",
                "--val-batches", "4", "--val-per-domain", "--out", ck.toString());
        TrainCommand.Summary s = cmd.summary;
        assertNotNull(s.validation());
        assertTrue(s.lastCe() < s.firstCe() - 1.0, "train CE " + s.firstCe() + " -> " + s.lastCe());
        double uniform = Math.log(m.tokenizer().vocabSize());
        assertTrue(s.validation().ce() < uniform - 1.0, "validation CE " + s.validation().ce() + " vs uniform " + uniform);
        // per-domain figures are the label-weighted parts of the overall one
        double weighted = 0;
        long labels = 0;
        for (int d = 0; d < s.validation().domains().size(); d++) {
            labels += s.validation().domainLabels()[d];
            if (s.validation().domainLabels()[d] > 0) weighted += s.validation().domainCe()[d] * s.validation().domainLabels()[d];
        }
        assertEquals(s.validation().labels(), labels);
        assertEquals(s.validation().ce(), weighted / labels, 1e-3);
        assertEquals(2, Arrays.stream(s.validation().domainLabels()).filter(n -> n > 0).count(), "both domains scored");

        // the checkpoint has the data's vocabulary and EOS, its tokenizer, and where the data was
        assertTrue(Files.isRegularFile(ck.resolve("tokenizer.json")));
        assertEquals(Files.readString(data.resolve("tokenizer.json")), Files.readString(ck.resolve("tokenizer.json")));
        try (MoeModel model = ModelCheckpoint.load(ck)) {
            assertEquals(m.tokenizer().vocabSize(), model.config().vocab());
            assertEquals(m.tokenizer().eosId(), model.config().eosId());
        }
        JsonNode st = new ObjectMapper().readTree(ck.resolve(ModelCheckpoint.STATE_JSON).toFile());
        assertEquals(data.toAbsolutePath().toString(), st.path("extra").path("data").asText());
        assertEquals(40L * 4, st.get("data_position").asLong(), "windows drawn");

        // a resume without --data finds the folder in the training state and continues
        TrainCommand more = train("--resume", ck.toString(), "--steps", "44", "--batch", "4", "--seq", "32",
                "--log-every", "100", "--val-batches", "2", "--out", ck.toString());
        assertNotNull(more.summary.validation());
        st = new ObjectMapper().readTree(ck.resolve(ModelCheckpoint.STATE_JSON).toFile());
        assertEquals(44L * 4, st.get("data_position").asLong());
    }
}
