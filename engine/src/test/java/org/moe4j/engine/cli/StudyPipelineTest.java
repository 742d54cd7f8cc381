package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.Moe4jException;
import org.moe4j.engine.io.TrainingState;
import org.moe4j.io.corpus.ShardManifest;
import org.moe4j.engine.train.MetricsLog;
import org.moe4j.engine.train.RunRecorder;
import picocli.CommandLine;

/**
 * The study's whole pipeline at its tiny size, so that it cannot rot: prepare (stratified split) → train two arms
 * (one interrupted and resumed) → select → eval → analyze → report into a Markdown file; then a re-run skips every
 * finished stage and a different plan in the same folder is refused.
 */
class StudyPipelineTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    static final String[][] DOMAINS = {
            {"prose", "12", "the river flows under old stone bridges at dawn and the town wakes slowly"},
            {"mail", "12", "From: Subject: Re: meeting thanks regards unsubscribe free offer click list"},
            {"code", "12", "public static void main int return if for class new final private"},
            {"small", "3", "verse rhyme meter stanza sonnet ode ballad refrain"}};

    static Path corpus(Path dir) throws IOException {
        Path root = dir.resolve("corpus");
        java.util.Random r = new java.util.Random(5);
        for (String[] d : DOMAINS) {
            String[] w = d[2].split(" ");
            for (int i = 0; i < Integer.parseInt(d[1]); i++) {
                StringBuilder b = new StringBuilder();
                for (int j = 0; j < 200; j++) b.append(w[r.nextInt(w.length)]).append(j % 12 == 11 ? ".\n" : " ");
                Path f = root.resolve(d[0]).resolve("doc" + i + ".txt");
                Files.createDirectories(f.getParent());
                Files.writeString(f, b);
            }
        }
        return root;
    }

    static StudyCommand study(Path dir, Path corpus, String... args) {
        StudyCommand s = new StudyCommand();
        List<String> all = new ArrayList<>(List.of(args));
        all.addAll(List.of("--dir", dir.toString(), "--size", "tiny", "--source", "folder:" + corpus));
        new CommandLine(s).parseArgs(all.toArray(String[]::new));
        return s;
    }

    /**
     * Every arm's train command parses — arm 5's recipe names --erc, which the shared model options also set (it was
     * given twice, and picocli refused the whole command) — and holds the recipe's value of each option it names once.
     */
    @Test
    void everyArmsTrainCommandParses(@TempDir Path tmp) {
        for (StudyPlan plan : List.of(StudyPlan.defaults(), StudyPlan.tiny(List.of("folder:" + tmp)))) {
            StudyCommand s = study(tmp.resolve("study"), tmp, "train");
            for (StudyPlan.Arm arm : plan.arms()) {
                List<String> args = s.trainArgs(plan, arm, false);
                new CommandLine(new TrainCommand()).parseArgs(args.toArray(String[]::new));
                for (int i = 0; i < arm.recipe().size(); i++) {
                    String o = arm.recipe().get(i);
                    if (!o.startsWith("--")) continue;
                    assertEquals(1, java.util.Collections.frequency(args, o), arm.name() + ": " + o + " in " + args);
                    if (i + 1 < arm.recipe().size() && !arm.recipe().get(i + 1).startsWith("--"))
                        assertEquals(arm.recipe().get(i + 1), args.get(args.indexOf(o) + 1), arm.name() + ": " + o);
                }
            }
        }
    }

    @Test
    void theTinyStudyRunsEndToEnd(@TempDir Path tmp) throws IOException {
        Path corpus = corpus(tmp), dir = tmp.resolve("study");
        assertEquals(0, study(dir, corpus, "prepare").call());
        ShardManifest m = ShardManifest.read(dir.resolve("data"));
        for (String[] d : DOMAINS) {
            long val = m.splits().get("val").domains().get(d[0]).documents();
            int n = Integer.parseInt(d[1]);
            assertTrue(val >= Math.min(2, Math.max(1, n / 4)), d[0] + ": " + val + " validation documents of " + n);
            assertEquals(n, val + m.splits().get("train").domains().get(d[0]).documents(), d[0]);
        }

        // arm 1 interrupted after its first step, then continued by the study's own command
        StudyCommand s = study(dir, corpus, "run", "std-local-s1", "emo-s1");
        StudyPlan plan = s.plan();
        StudyPlan.Arm std = plan.arm("std-local-s1"), emo = plan.arm("emo-s1");
        TrainCommand cut = new TrainCommand();
        List<String> args = s.trainArgs(plan, std, false);
        args.addAll(List.of("--time-limit", "1e-9"));
        new CommandLine(cut).parseArgs(args.toArray(String[]::new));
        cut.call();
        assertEquals(1, TrainingState.readIfPresent(StudyCommand.checkpoint(s.armDir(std))).step());
        assertEquals(0, s.call());
        for (StudyPlan.Arm a : List.of(std, emo))
            assertEquals(plan.steps(), TrainingState.readIfPresent(StudyCommand.checkpoint(s.armDir(a))).step(), a.name());
        List<String> timing = Files.readAllLines(s.armDir(std).resolve("timing.jsonl"));
        assertTrue(timing.get(0).contains("\"stage\":\"train\"") && timing.get(0).contains("\"from_step\":1"), timing.get(0));
        assertEquals(1 + plan.evals().size() + 1, timing.size(), "train, each eval, analyze");

        // select on a trained arm, as a user would after the study
        Path subset = tmp.resolve("subset.json");
        SelectCommand sel = new SelectCommand();
        new CommandLine(sel).parseArgs("--ckpt", StudyCommand.checkpoint(s.armDir(emo)).toString(), "--calib",
                "data:" + dir.resolve("data") + ":prose:1", "--keep", "1/4", "--out", subset.toString());
        assertEquals(0, sel.call());
        for (JsonNode layer : JSON.readTree(subset.toFile()).path("layers")) assertEquals(2, layer.size(), "8 x 1/4 experts");

        // every eval file scores every domain under every setting
        for (StudyPlan.Arm a : List.of(std, emo)) {
            for (StudyPlan.Eval e : plan.evals()) {
                List<String> settings = s.evalArgs(plan, a, e);
                String[] want = settings.get(settings.indexOf("--settings") + 1).split(",");
                JsonNode res = JSON.readTree(s.evalFile(a, e).toFile()).path("results");
                assertEquals(want.length * DOMAINS.length, res.size(), a.name() + " " + e.name());
                for (JsonNode r : res) assertTrue(r.path("perplexity").asDouble() > 1, r.toString());
            }
            assertTrue(Files.isRegularFile(s.armDir(a).resolve("analyze").resolve("index.html")));
            assertEquals(1 + DOMAINS.length, Files.readAllLines(s.armDir(a).resolve("analyze").resolve("cluster_purity.csv")).size());
        }
        String sweep = String.join(",", s.evalArgs(plan, emo, plan.evals().get(plan.evals().size() - 1)));
        assertTrue(sweep.contains("k:1,k:2,k:3,k:4,pool:1"), sweep);

        // the report, written into a Markdown file between its markers
        Path doc = tmp.resolve("docs").resolve("RESULTS.md");
        Files.createDirectories(doc.getParent());
        Files.writeString(doc, "# Results\nbefore\n" + StudyReport.BEGIN + "\nold tables\n" + StudyReport.END + "\nafter\n");
        assertEquals(0, study(dir, corpus, "report", "--into", doc.toString()).call());
        String md = Files.readString(doc);
        assertTrue(md.startsWith("# Results\nbefore\n" + StudyReport.BEGIN) && md.endsWith(StudyReport.END + "\nafter\n"), md);
        assertTrue(!md.contains("old tables"), md);
        assertEquals(md.substring(md.indexOf(StudyReport.BEGIN) + StudyReport.BEGIN.length() + 1, md.indexOf(StudyReport.END)),
                Files.readString(dir.resolve("report").resolve("results.md")));
        // the gathered numbers are those of the eval files: arm 1's full and 1/4 perplexity over domains
        JsonNode first = JSON.readTree(s.evalFile(std, plan.evals().get(0)).toFile()).path("results");
        double full = macro(first, "full"), quarter = macro(first, "keep:1/4");
        String row = "| " + std.label() + " | " + StudyReport.cell(full, Double.NaN) + " | ";
        assertTrue(md.contains(row), "expected '" + row + "' in:\n" + md);
        assertTrue(md.contains(StudyReport.cell(quarter, full)), md);
        assertTrue(Pattern.compile("\\| " + Pattern.quote(std.label()) + " \\| `--routing standard --lb-scope local` \\| 1 \\| "
                + plan.steps() + " of " + plan.steps() + " \\| " + String.format(Locale.ROOT, "%,d", plan.steps() * plan.tokensPerStep())
                + " \\| [0-9.]+ min \\(steps 1–" + plan.steps() + "\\) \\| [0-9.]+ min \\| [0-9.]+ min \\| [0-9]+ threads of [0-9]+ cores, .+, JDK .+ \\|")
                .matcher(md).find(), md);
        // (above: arm 1's train wall time, its first stage cut off after step 1, says which steps it covers, and the
        // step time from its run log follows)
        // arms that did not run say so, and claim no number
        StudyPlan.Arm erc = plan.arm("emo-erc-s1");
        assertTrue(md.contains("| " + erc.label() + " | " + StudyReport.NOT_RUN + " | " + StudyReport.NOT_RUN), md);
        // the training table: arm 1's train CE is the mean of its run log's last 100 step CEs (of 12), its last
        // validation CE the log's last val_ce, and no ERC ε (ERC off)
        List<JsonNode> log = new ArrayList<>();
        for (String line : Files.readAllLines(RunRecorder.runDir(StudyCommand.checkpoint(s.armDir(std))).resolve(MetricsLog.FILE_NAME)))
            if (!line.isBlank()) log.add(JSON.readTree(line));
        double ceSum = 0, lastVal = Double.NaN;
        int ceN = 0;
        for (JsonNode o : log) {
            if (o.hasNonNull("ce")) {
                ceSum += o.get("ce").asDouble();
                ceN++;
            }
            if (o.hasNonNull("val_ce")) lastVal = o.get("val_ce").asDouble();
        }
        assertEquals(plan.steps(), ceN, "one logged CE per step");
        String trainRow = String.format(Locale.ROOT, "| %s | %.4f | %.4f | — |", std.label(), ceSum / ceN, lastVal);
        assertTrue(md.contains(trainRow), "expected '" + trainRow + "' in:\n" + md);
        // ERC's ε, first and last logged value (a run log written here for the arm that did not run)
        Path ercLog = RunRecorder.runDir(StudyCommand.checkpoint(s.armDir(erc))).resolve(MetricsLog.FILE_NAME);
        Files.createDirectories(ercLog.getParent());
        Files.writeString(ercLog, "{\"step\":0,\"ce\":5.0,\"erc_eps_mean\":null,\"tokens_per_s\":100}\n"
                + "{\"step\":1,\"ce\":4.0,\"erc_eps_mean\":0.25,\"tokens_per_s\":100}\n"
                + "{\"step\":2,\"ce\":3.0,\"erc_eps_mean\":0.125,\"tokens_per_s\":100}\n{\"step\":3,\"val_ce\":3.5}\n");
        assertEquals(0, study(dir, corpus, "report", "--into", doc.toString()).call());
        md = Files.readString(doc);
        String ercRow = "| " + erc.label() + " | 4.0000 | 3.5000 | 0.2500 → 0.1250 |";
        assertTrue(md.contains(ercRow), "expected '" + ercRow + "' in:\n" + md);
        Files.delete(ercLog);
        for (String plot : List.of("study-layerwise-1doc.svg", "study-reap-2doc.svg", "study-k-sweep.svg")) {
            String svg = Files.readString(doc.getParent().resolve("images").resolve("study").resolve(plot));
            assertTrue(svg.startsWith("<svg") && svg.contains("<polyline") && svg.contains(std.label()), plot);
        }

        // an arm whose folder is not here (run elsewhere) keeps its rows and plot points from the block replaced;
        // the others are still reported from their files
        assertEquals(0, study(dir, corpus, "report", "--into", doc.toString()).call());
        String before = Files.readString(doc);
        Path away = tmp.resolve("away");
        Files.move(s.armDir(std), away);
        try {
            assertEquals(0, study(dir, corpus, "report", "--into", doc.toString()).call());
            String kept = Files.readString(doc);
            assertTrue(kept.contains("The rows of `" + std.name() + "` are kept from the report this block replaced"), kept);
            List<String> lines = before.lines().toList(), now = kept.lines().toList();
            int rows = 0;
            for (String l : lines)
                if (l.startsWith("| " + std.label() + " |")) {
                    assertTrue(now.contains(l), "kept row '" + l + "' in:\n" + kept);
                    rows++;
                }
            assertTrue(rows >= 8, rows + " rows of " + std.name());  // runs, training, 4 subset tables, k sweep, analysis
            assertEquals(before.replaceAll("(?s)^.*?" + java.util.regex.Pattern.quote(StudyReport.BEGIN) + "[^\n]*\n[^\n]*\n", ""),
                    kept.replaceAll("(?s)^.*?" + java.util.regex.Pattern.quote(StudyReport.BEGIN) + "[^\n]*\n[^\n]*\n", ""),
                    "the whole block, but for its first line, as before");
            String svg = Files.readString(doc.getParent().resolve("images").resolve("study").resolve("study-layerwise-1doc.svg"));
            assertTrue(svg.contains(std.label()), "the kept arm's points are plotted");
            // the old block's figures are not invented for an arm that has a folder here: with its eval files gone,
            // arm 3 says "not yet run"
            Path evals = s.armDir(emo).resolve("eval"), evalsAway = tmp.resolve("eval-away");
            Files.move(evals, evalsAway);
            assertEquals(0, study(dir, corpus, "report", "--into", doc.toString()).call());
            assertTrue(Files.readString(doc).contains("| " + emo.label() + " | " + StudyReport.NOT_RUN + " | "), "arm 3 not run");
            Files.move(evalsAway, evals);
        } finally {
            Files.move(away, s.armDir(std));
        }

        // a re-run does nothing more; another plan in the same folder is refused
        assertEquals(0, study(dir, corpus, "run", "std-local-s1").call());
        assertEquals(timing, Files.readAllLines(s.armDir(std).resolve("timing.jsonl")));
        Moe4jException e = assertThrows(Moe4jException.class, () -> study(dir, corpus, "train", "--steps", "13").call());
        assertTrue(e.getMessage().contains("holds another plan"), e.getMessage());
        e = assertThrows(Moe4jException.class, () -> study(dir, corpus, "eval", "emo-s2").call());
        assertTrue(e.getMessage().contains("is not trained to step 12 (no checkpoint)"), e.getMessage());
    }

    private static double macro(JsonNode rows, String setting) {
        double sum = 0;
        int n = 0;
        for (JsonNode r : rows)
            if (r.path("setting").asText().equals(setting)) {
                sum += r.path("ce").asDouble();
                n++;
            }
        return Math.exp(sum / n);
    }
}
