package org.moe4j.engine.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import org.moe4j.Moe4jException;
import org.moe4j.engine.model.StepStats;

/**
 * A run's history, in the run folder beside its checkpoint ({@link RunRecorder}): {@code metrics.jsonl}, one JSON object per optimizer step — step, loss and
 * its parts (ce, lb, z, erc), lr, grad_norm, tokens_per_s, and per layer load_min, load_max, drops, erc_eps, k (from
 * the step's last micro-batch) — and one per validation ({@code step}, {@code val_ce}, {@code val_ppl}). Each line
 * is appended on its own (open, write, close), so a stopped run keeps what it logged and nothing needs closing. {@code ./moe4j analyze} draws its training curves.
 */
public final class MetricsLog {
    public static final String FILE_NAME = "metrics.jsonl";
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Path file;

    private MetricsLog(Path file) {
        this.file = file;
    }

    /** Opens {@code dir/metrics.jsonl}: appended to when resuming (from {@code fromStep} on), otherwise replaced. */
    public static MetricsLog open(Path dir, boolean resume, long fromStep) {
        Path f = dir.resolve(FILE_NAME);
        try {
            Files.createDirectories(dir);
            if (resume && Files.exists(f)) { // drop lines of steps the resumed run will log again
                List<String> keep = new ArrayList<>();
                for (String line : Files.readAllLines(f, StandardCharsets.UTF_8)) {
                    if (line.isBlank()) continue;
                    JsonNode n = JSON.readTree(line);
                    long step = n.path("step").asLong(Long.MAX_VALUE);
                    // step lines are 0-based step indices, a validation line the steps done: both stay up to fromStep
                    if (n.has("val_ce") ? step <= fromStep : step < fromStep) keep.add(line);
                }
                Files.write(f, keep, StandardCharsets.UTF_8);
            }
            else Files.write(f, new byte[0]);
            return new MetricsLog(f);
        } catch (IOException e) {
            throw new Moe4jException(f + ": cannot write the metrics log: " + e.getMessage(), e);
        }
    }

    public Path file() {
        return file;
    }

    /** One optimizer step: the step's log and the per-layer figures of its last micro-batch. */
    public void step(Trainer.StepLog l, StepStats st) {
        ObjectNode n = JSON.createObjectNode();
        n.put("step", l.step());
        n.put("loss", l.loss());
        n.put("ce", l.ce());
        n.put("lb", l.lb());
        n.put("z", l.z());
        number(n, "erc", l.erc());
        number(n, "erc_eps_mean", l.ercEps());
        n.put("lr", l.lr());
        number(n, "grad_norm", l.gradNorm());
        number(n, "tokens_per_s", l.tokensPerSecond());
        n.put("drops_total", l.drops());
        ArrayNode lmin = n.putArray("load_min"), lmax = n.putArray("load_max"), drops = n.putArray("drops"),
                eps = n.putArray("erc_eps"), k = n.putArray("k");
        for (int i = 0; i < st.layers(); i++) {
            lmin.add(st.loadMin[i]);
            lmax.add(st.loadMax[i]);
            drops.add(st.drops[i]);
            if (Double.isFinite(st.ercEps[i])) eps.add(st.ercEps[i]);
            else eps.addNull();
            k.add(st.kRouted[i]);
        }
        write(n);
    }

    /** A validation result at {@code step}. */
    public void validation(long step, double ce, double perplexity) {
        ObjectNode n = JSON.createObjectNode();
        n.put("step", step);
        number(n, "val_ce", ce);
        number(n, "val_ppl", perplexity);
        write(n);
    }

    private static void number(ObjectNode n, String name, double v) {
        if (Double.isFinite(v)) n.put(name, v);
        else n.putNull(name); // JSON has no NaN
    }

    private void write(ObjectNode n) {
        try {
            Files.writeString(file, JSON.writeValueAsString(n) + "\n", StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                    StandardOpenOption.APPEND);
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": cannot append to the metrics log", e);
        }
    }

    /** Reads a metrics log: one node per line (blank lines skipped). */
    public static List<JsonNode> read(Path file) {
        List<JsonNode> rows = new ArrayList<>();
        try {
            int no = 0;
            for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                no++;
                if (line.isBlank()) continue;
                try {
                    rows.add(JSON.readTree(line));
                } catch (IOException e) {
                    throw new Moe4jException(file + ": line " + no + " is not JSON (" + e.getMessage() + ")");
                }
            }
        } catch (IOException e) {
            throw new Moe4jException(file + ": cannot read the metrics log: " + e.getMessage(), e);
        }
        return rows;
    }
}
