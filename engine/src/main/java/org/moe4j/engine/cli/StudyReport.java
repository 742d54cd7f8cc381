package org.moe4j.engine.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.moe4j.engine.train.MetricsLog;
import org.moe4j.engine.train.RunRecorder;
import org.moe4j.io.AtomicFile;
import org.moe4j.Moe4jException;

/**
 * The tables and plots of the study from what its stages wrote: each arm's {@code eval/*.json}, its analyze CSVs
 * and its {@code timing.jsonl}. Perplexities are averaged over domains as exp(mean over domains of the domain's
 * cross-entropy), each domain weighing the same whatever its size; an arm or a figure without results says
 * "not yet run". Nothing here computes a model: it only reads files.
 *
 * <p>An arm whose folder is not in the study directory at all (its runs were made in another folder or on another
 * machine, and only the report remains) keeps its rows from the block that {@code --into} replaces, and its plot
 * points are read back from those rows; the block names the arms it kept. An arm with a folder is always reported
 * from its files, even where they hold less than the old block did.
 */
final class StudyReport {
    static final String BEGIN = "<!-- study:begin -->", END = "<!-- study:end -->";
    /** Written instead of a number that no stage has produced. */
    static final String NOT_RUN = "not yet run";
    /** Headings of the run and training tables (the old block's rows are found by heading). */
    private static final String RUNS = "Runs", TRAINING = "Training (from each run log)";
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String[] KEEP = {"full", "keep:1/2", "keep:1/4", "keep:1/8"};

    private final StudyCommand study;
    private final StudyPlan plan;

    StudyReport(StudyCommand study, StudyPlan plan) {
        this.study = study;
        this.plan = plan;
    }

    /** {@code kept}: the arms whose rows came from the replaced block. */
    record Result(Path markdown, int armsWithResults, int plots, List<String> kept) {
    }

    /**
     * The tables of a block written before, by heading ("#### ..."): each table's header cells and its rows by their
     * first cell. Empty for a file without the block.
     */
    record Previous(Map<String, List<String>> headers, Map<String, Map<String, String>> rows) {
        static Previous parse(String block) {
            Map<String, List<String>> headers = new LinkedHashMap<>();
            Map<String, Map<String, String>> rows = new LinkedHashMap<>();
            String heading = null;
            for (String line : block.split("\n")) {
                if (line.startsWith("#### ")) {
                    heading = line.substring(5).strip();
                } else if (heading != null && line.startsWith("|") && !line.startsWith("|---")) {
                    List<String> cells = cells(line);
                    if (!headers.containsKey(heading)) headers.put(heading, cells);
                    else rows.computeIfAbsent(heading, h -> new LinkedHashMap<>()).put(cells.get(0), line);
                }
            }
            return new Previous(headers, rows);
        }

        /** The row of the table under {@code heading} whose first cell is {@code first}, or null. */
        String row(String heading, String first) {
            Map<String, String> m = rows.get(heading);
            return m == null ? null : m.get(first);
        }

        /** The cell of column {@code column} (a header cell) in the row {@code first} of that table, or null. */
        String cell(String heading, String first, String column) {
            String r = row(heading, first);
            List<String> h = headers.get(heading);
            if (r == null || h == null || h.indexOf(column) < 0) return null;
            List<String> c = cells(r);
            return h.indexOf(column) < c.size() ? c.get(h.indexOf(column)) : null;
        }

        /** Whether some table other than "Runs" has a row for {@code first} with a figure in it. */
        boolean hasResults(String first) {
            for (Map.Entry<String, Map<String, String>> t : rows.entrySet()) {
                if (t.getKey().equals(RUNS) || !t.getValue().containsKey(first)) continue;
                List<String> c = cells(t.getValue().get(first));
                for (String v : c.subList(1, c.size())) if (!v.isEmpty() && !v.startsWith(NOT_RUN) && !v.equals("—")) return true;
            }
            return false;
        }

        /** The first cells of the table's rows, in order. */
        List<String> firsts(String heading) {
            Map<String, String> m = rows.get(heading);
            return m == null ? List.of() : new ArrayList<>(m.keySet());
        }

        static List<String> cells(String line) {
            List<String> out = new ArrayList<>();
            String t = line.strip();
            for (String c : t.substring(1, t.endsWith("|") ? t.length() - 1 : t.length()).split("\\|", -1)) out.add(c.strip());
            return out;
        }

        /** The leading number of each cell after the first ("137.67 (+45.0%)" → 137.67), NaN where none. */
        static double[] numbers(String line, int count) {
            List<String> c = cells(line);
            double[] y = new double[count];
            for (int i = 0; i < count; i++) {
                y[i] = Double.NaN;
                if (i + 1 < c.size()) {
                    java.util.regex.Matcher m = LEADING.matcher(c.get(i + 1));
                    if (m.find()) y[i] = Double.parseDouble(m.group().replace(",", ""));
                }
            }
            return y;
        }

        private static final java.util.regex.Pattern LEADING = java.util.regex.Pattern.compile("^-?[0-9][0-9,]*(\\.[0-9]+)?");
    }

    /** The arms with no folder in the study directory (nothing of them here to report from). */
    private boolean absent(StudyPlan.Arm a) {
        Path d = study.armDir(a);
        if (!Files.isDirectory(d)) return true;
        try (var s = Files.list(d)) {
            return s.findAny().isEmpty();
        } catch (IOException ex) {
            throw new Moe4jException("study report: " + d + ": " + ex.getMessage(), ex);
        }
    }

    /** One eval row. */
    record Row(String domain, String setting, long labels, double ce, double perplexity) {
    }

    /** Per arm, per eval name, the rows of its file (absent when the file is not there). */
    Map<String, Map<String, List<Row>>> evals() {
        Map<String, Map<String, List<Row>>> all = new LinkedHashMap<>();
        for (StudyPlan.Arm a : plan.arms()) {
            Map<String, List<Row>> m = new LinkedHashMap<>();
            for (StudyPlan.Eval e : plan.evals()) {
                Path f = study.evalFile(a, e);
                if (!Files.isRegularFile(f)) continue;
                try {
                    List<Row> rows = new ArrayList<>();
                    for (JsonNode r : JSON.readTree(f.toFile()).path("results"))
                        rows.add(new Row(r.path("domain").asText(), r.path("setting").asText(), r.path("labels").asLong(),
                                r.path("ce").asDouble(), r.path("perplexity").asDouble()));
                    m.put(e.name(), rows);
                } catch (IOException ex) {
                    throw new Moe4jException("study report: " + f + ": " + ex.getMessage(), ex);
                }
            }
            all.put(a.name(), m);
        }
        return all;
    }

    /** exp(mean over domains of CE) of one setting, NaN when the rows lack it. */
    static double macroPerplexity(List<Row> rows, String setting) {
        double sum = 0;
        int n = 0;
        if (rows != null) for (Row r : rows) {
            if (r.setting().equals(setting) && r.labels() > 0) {
                sum += r.ce();
                n++;
            }
        }
        return n == 0 ? Double.NaN : Math.exp(sum / n);
    }

    static double domainPerplexity(List<Row> rows, String domain, String setting) {
        if (rows != null) for (Row r : rows) if (r.domain().equals(domain) && r.setting().equals(setting)) return r.perplexity();
        return Double.NaN;
    }

    Result write(Path outDir, Path into) {
        Map<String, Map<String, List<Row>>> ev = evals();
        StringBuilder md = new StringBuilder();
        int withResults = 0;
        for (Map<String, List<Row>> m : ev.values()) if (!m.isEmpty()) withResults++;
        Path plotDir = into != null ? into.toAbsolutePath().getParent().resolve("images").resolve("study") : outDir;
        String plotLink = into != null ? "images/study/" : "";
        List<String> plots = new ArrayList<>();
        Previous prev = Previous.parse(previousBlock(into));
        List<String> kept = new ArrayList<>();
        for (StudyPlan.Arm a : plan.arms()) if (absent(a) && prev.hasResults(a.label())) kept.add(a.name());
        Map<String, RunLogSummary> logs = new LinkedHashMap<>();
        for (StudyPlan.Arm a : plan.arms()) logs.put(a.name(), runLog(a));

        md.append("Generated by `./moe4j study report --dir ").append(study.dir).append("` from the files the study's ")
                .append("stages wrote; \"").append(NOT_RUN).append("\" marks what no stage has produced yet. Perplexity ")
                .append("over domains is exp(mean over domains of the domain's cross-entropy) on up to ")
                .append(String.format(Locale.ROOT, "%,d", plan.evalTokens())).append(" validation tokens per domain.");
        if (!kept.isEmpty())
            md.append(" The rows of ").append(String.join(", ", kept.stream().map(n -> "`" + n + "`").toList()))
                    .append(" are kept from the report this block replaced: their folders are not in `").append(study.dir)
                    .append("` (those runs were made elsewhere), and their plot points are read from those rows.");
        md.append("\n\n");

        // runs
        md.append("#### " + RUNS + "\n\n\"Train wall time\" adds up the training stages that ran to their end; a stage cut off "
                + "(the machine's session ended, or the run was stopped) records nothing, so for an arm that was resumed "
                + "it covers only the steps shown. \"Step time\" is the sum over the run log's steps of tokens per step ÷ "
                + "that step's tokens/s: every step once, without checkpoint saves, validation or the minutes lost to an "
                + "interruption (but, like the wall times, with any minutes the study was paused inside a step).\n\n"
                + "| arm | recipe | seed | steps | tokens | train wall time | step time (run log) | "
                + "eval + analyze wall time | machine |\n|---|---|---|---|---|---|---|---|---|\n");
        for (StudyPlan.Arm a : plan.arms()) {
            if (keep(md, kept, a, prev, RUNS) != null) continue;
            Timing t = timing(a);
            double steps = logs.get(a.name()).stepSeconds();
            String machine = t.machine();
            long step = trainedStep(a);
            String train = t.trainSeconds() <= 0 ? NOT_RUN : minutes(t.trainSeconds()) + (t.fromStep() > 0
                    ? String.format(Locale.ROOT, " (steps %,d–%,d)", t.fromStep(), t.toStep()) : "");
            md.append("| ").append(a.label()).append(" | `").append(String.join(" ", a.recipe())).append("` | ").append(a.seed())
                    .append(" | ").append(step < 0 ? NOT_RUN : step + " of " + plan.steps()).append(" | ")
                    .append(step < 0 ? NOT_RUN : String.format(Locale.ROOT, "%,d", step * plan.tokensPerStep())).append(" | ")
                    .append(train).append(" | ").append(steps > 0 ? minutes(steps) : NOT_RUN).append(" | ")
                    .append(t.evalSeconds() > 0 ? minutes(t.evalSeconds()) : NOT_RUN)
                    .append(" | ").append(machine == null ? NOT_RUN : machine).append(" |\n");
        }
        md.append('\n');

        // training, from each run log
        md.append("#### " + TRAINING + "\n\nTrain CE: mean of the last 100 steps' cross-entropy (without the "
                + "auxiliary losses). Validation CE: the run's last validation (its `--val-batches` batches of the "
                + "validation split, every expert); the windows are drawn with the run's seed, so it compares arms of "
                + "one seed only (the tables below score the same tokens for every arm). ERC's ε: the specialisation level the ERC loss logs (the mean over "
                + "experts and layers of ε_i, docs/ALGORITHMS.md), at the first and the last step that logged it.\n\n"
                + "| arm | train CE, last 100 steps | validation CE at the end | ERC ε, first → last |\n|---|---|---|---|\n");
        for (StudyPlan.Arm a : plan.arms()) {
            if (keep(md, kept, a, prev, TRAINING) != null) continue;
            RunLogSummary t = logs.get(a.name());
            md.append("| ").append(a.label()).append(" | ").append(Double.isNaN(t.trainCe()) ? NOT_RUN : String.format(Locale.ROOT, "%.4f", t.trainCe()))
                    .append(" | ").append(Double.isNaN(t.valCe()) ? NOT_RUN : String.format(Locale.ROOT, "%.4f", t.valCe())).append(" | ")
                    .append(Double.isNaN(t.epsFirst()) ? "—" : String.format(Locale.ROOT, "%.4f → %.4f", t.epsFirst(), t.epsLast())).append(" |\n");
        }
        md.append('\n');

        // full vs subsets
        for (StudyPlan.Eval e : plan.evals()) {
            if (e.name().equals("k-sweep")) continue;
            String heading = "Perplexity over domains, subsets by " + e.method() + " from " + e.calibDocs()
                    + (e.calibDocs() == 1 ? " calibration document" : " calibration documents") + " per domain";
            md.append("#### ").append(heading).append("\n\n");
            md.append("| arm | all experts | 1/2 | 1/4 | 1/8 |\n|---|---|---|---|---|\n");
            Map<String, double[]> series = new LinkedHashMap<>();
            for (StudyPlan.Arm a : plan.arms()) {
                String old = keep(md, kept, a, prev, heading);
                if (old != null) {
                    series.put(a.label(), Previous.numbers(old, KEEP.length));
                    continue;
                }
                Map<String, List<Row>> m = ev.get(a.name());
                double full = macroPerplexity(m.get(plan.evals().get(0).name()), "full");
                double[] y = new double[KEEP.length];
                md.append("| ").append(a.label());
                for (int i = 0; i < KEEP.length; i++) {
                    y[i] = i == 0 ? full : macroPerplexity(m.get(e.name()), KEEP[i]);
                    md.append(" | ").append(cell(y[i], i == 0 ? Double.NaN : full));
                }
                md.append(" |\n");
                series.put(a.label(), y);
            }
            md.append('\n');
            String name = "study-" + e.name() + ".svg";
            if (writePlot(plotDir.resolve(name), "Perplexity over domains, subsets by " + e.method() + ", " + e.calibDocs()
                    + " calibration doc" + (e.calibDocs() == 1 ? "" : "s"), new String[]{"all", "1/2", "1/4", "1/8"}, series)) {
                plots.add(name);
                md.append("![").append(e.name()).append("](").append(plotLink).append(name).append(")\n\n");
            }
        }

        // per domain, 1/4 by layerwise from one document
        StudyPlan.Eval first = plan.evals().get(0);
        List<String> domains = new ArrayList<>();
        for (Map<String, List<Row>> m : ev.values()) {
            List<Row> rows = m.get(first.name());
            if (rows != null) for (Row r : rows) if (!domains.contains(r.domain())) domains.add(r.domain());
        }
        String perDomain = "Per domain: all experts → 1/4 of them (" + first.method() + ", one calibration document)";
        if (!kept.isEmpty()) for (String d : prev.firsts(perDomain)) if (!domains.contains(d)) domains.add(d);
        md.append("#### ").append(perDomain).append("\n\n");
        if (domains.isEmpty()) {
            md.append(NOT_RUN).append(".\n\n");
        } else {
            md.append("| domain |");
            for (StudyPlan.Arm a : plan.arms()) md.append(' ').append(a.name()).append(" |");
            md.append("\n|---|");
            for (int i = 0; i < plan.arms().size(); i++) md.append("---|");
            md.append('\n');
            for (String d : domains) {
                md.append("| ").append(d).append(" |");
                for (StudyPlan.Arm a : plan.arms()) {
                    if (kept.contains(a.name())) {
                        String c = prev.cell(perDomain, d, a.name());
                        md.append(' ').append(c == null ? NOT_RUN : c).append(" |");
                        continue;
                    }
                    List<Row> rows = ev.get(a.name()).get(first.name());
                    double f = domainPerplexity(rows, d, "full"), q = domainPerplexity(rows, d, "keep:1/4");
                    md.append(' ').append(Double.isNaN(f) ? NOT_RUN : String.format(Locale.ROOT, "%.1f → %.1f", f, q)).append(" |");
                }
                md.append('\n');
            }
            md.append('\n');
        }

        // k sweep
        String sweep = "Perplexity over domains at routed k' = 1 .. " + plan.kEval() + " in every layer";
        md.append("#### ").append(sweep).append("\n\n| arm |");
        for (int k = 1; k <= plan.kEval(); k++) md.append(" k'=").append(k).append(" |");
        md.append(" EMO eval pool |\n|---|");
        for (int k = 0; k <= plan.kEval(); k++) md.append("---|");
        md.append('\n');
        Map<String, double[]> ks = new LinkedHashMap<>();
        for (StudyPlan.Arm a : plan.arms()) {
            String old = keep(md, kept, a, prev, sweep);
            if (old != null) {
                ks.put(a.label(), Previous.numbers(old, plan.kEval()));
                continue;
            }
            List<Row> rows = ev.get(a.name()).get("k-sweep");
            double[] y = new double[plan.kEval()];
            md.append("| ").append(a.label()).append(" |");
            for (int k = 1; k <= plan.kEval(); k++) {
                y[k - 1] = macroPerplexity(rows, "k:" + k);
                md.append(' ').append(cell(y[k - 1], Double.NaN)).append(" |");
            }
            md.append(' ').append(a.pool() == 0 ? "—" : cell(macroPerplexity(rows, "pool:" + a.pool()), Double.NaN)
                    + " (pool " + a.pool() + ")").append(" |\n");
            ks.put(a.label(), y);
        }
        md.append('\n');
        String[] kx = new String[plan.kEval()];
        for (int k = 1; k <= plan.kEval(); k++) kx[k - 1] = Integer.toString(k);
        if (writePlot(plotDir.resolve("study-k-sweep.svg"), "Perplexity over domains at routed k'", kx, ks)) {
            plots.add("study-k-sweep.svg");
            md.append("![k sweep](").append(plotLink).append("study-k-sweep.svg)\n\n");
        }

        // analyze
        String learned = "What the router learned (analyze, validation split)";
        md.append("#### ").append(learned).append("\n\n")
                .append("| arm | document coherence | mean domain purity (chance) | token-id consistency (mean over layers) |\n|---|---|---|---|\n");
        for (StudyPlan.Arm a : plan.arms()) {
            if (keep(md, kept, a, prev, learned) != null) continue;
            Path an = study.armDir(a).resolve("analyze");
            double coh = csvValue(an.resolve("cluster_summary.csv"), "document_coherence");
            double[] pur = meanColumns(an.resolve("cluster_purity.csv"), "purity", "chance");
            double[] cons = meanColumns(an.resolve("specialisation_summary.csv"), "consistency");
            md.append("| ").append(a.label()).append(" | ").append(cell(coh, Double.NaN)).append(" | ")
                    .append(Double.isNaN(pur[0]) ? NOT_RUN : String.format(Locale.ROOT, "%.3f (%.3f)", pur[0], pur[1]))
                    .append(" | ").append(cell(cons[0], Double.NaN)).append(" |\n");
        }
        md.append('\n');

        Path mdFile = outDir.resolve("results.md");
        try {
            Files.createDirectories(outDir);
            AtomicFile.write(mdFile, md.toString().getBytes(StandardCharsets.UTF_8));
            if (into != null) {
                String doc = Files.readString(into);
                int b = doc.indexOf(BEGIN), e = doc.indexOf(END);
                if (b < 0 || e < b)
                    throw new Moe4jException("study report --into " + into + ": no '" + BEGIN + "' ... '" + END
                            + "' block to replace");
                AtomicFile.write(into, (doc.substring(0, b + BEGIN.length()) + "\n" + md + doc.substring(e)).getBytes(StandardCharsets.UTF_8));
            }
        } catch (IOException ex) {
            throw new Moe4jException("study report: " + ex.getMessage(), ex);
        }
        return new Result(mdFile, withResults, plots.size(), kept);
    }

    /** The block between the markers of {@code into}, "" when there is no such file or block. */
    private static String previousBlock(Path into) {
        if (into == null || !Files.isRegularFile(into)) return "";
        try {
            String doc = Files.readString(into);
            int b = doc.indexOf(BEGIN), e = doc.indexOf(END);
            return b < 0 || e < b ? "" : doc.substring(b + BEGIN.length(), e);
        } catch (IOException ex) {
            throw new Moe4jException("study report: " + into + ": " + ex.getMessage(), ex);
        }
    }

    /**
     * For a kept arm, appends its old row of the table under {@code heading} and returns it; null (nothing appended)
     * when the arm is reported from its files or the old table has no row for it.
     */
    private static String keep(StringBuilder md, List<String> kept, StudyPlan.Arm a, Previous prev, String heading) {
        if (!kept.contains(a.name())) return null;
        String old = prev.row(heading, a.label());
        if (old != null) md.append(old).append('\n');
        return old;
    }

    /**
     * What the report takes from an arm's timing.jsonl, read once: the seconds of its finished training stages and of
     * its eval and analyze stages, the first and last step the recorded training covers (0 and 0 when none), and
     * "2 threads of 2 cores, CPU, JDK v" of the last recorded stage (null when none was recorded).
     */
    record Timing(double trainSeconds, double evalSeconds, long fromStep, long toStep, String machine) {
    }

    Timing timing(StudyPlan.Arm a) {
        Path f = study.armDir(a).resolve("timing.jsonl");
        if (!Files.isRegularFile(f)) return new Timing(0, 0, 0, 0, null);
        double train = 0, eval = 0, from = Double.MAX_VALUE, to = 0;
        JsonNode last = null;
        try {
            for (String line : Files.readAllLines(f)) {
                if (line.isBlank()) continue;
                JsonNode o = JSON.readTree(line);
                last = o;
                if (o.path("stage").asText().equals("train")) {
                    train += o.path("seconds").asDouble();
                    from = Math.min(from, o.path("from_step").asDouble(0));
                    to = Math.max(to, o.path("to_step").asDouble(0));
                } else {
                    eval += o.path("seconds").asDouble();
                }
            }
        } catch (IOException ex) {
            throw new Moe4jException("study report: " + f + ": " + ex.getMessage(), ex);
        }
        String machine = last == null ? null : last.path("threads").asInt() + " threads of " + last.path("cores").asInt()
                + " cores, " + last.path("cpu").asText("?").replace('|', '/') + ", JDK " + last.path("jdk").asText("?");
        return new Timing(train, eval, from == Double.MAX_VALUE ? 0 : (long) from, (long) to, machine);
    }

    /**
     * What the report takes from an arm's run log, read once: {@code stepSeconds}, tokens per step ÷ the step's
     * tokens/s summed over the logged steps (a resumed run's log keeps each step once), -1 without a log; the mean CE
     * of the last 100 logged steps; the last validation CE; the first and the last logged ERC ε mean (each NaN when
     * the log has none: no log, no validation yet, ERC off).
     */
    record RunLogSummary(double stepSeconds, double trainCe, double valCe, double epsFirst, double epsLast) {
    }

    RunLogSummary runLog(StudyPlan.Arm a) {
        Path f = RunRecorder.runDir(StudyCommand.checkpoint(study.armDir(a))).resolve(MetricsLog.FILE_NAME);
        if (!Files.isRegularFile(f)) return new RunLogSummary(-1, Double.NaN, Double.NaN, Double.NaN, Double.NaN);
        double seconds = 0, val = Double.NaN, epsFirst = Double.NaN, epsLast = Double.NaN;
        List<Double> ce = new ArrayList<>();
        try {
            for (String line : Files.readAllLines(f)) {
                if (line.isBlank()) continue;
                JsonNode o = JSON.readTree(line);
                double tps = o.path("tokens_per_s").asDouble(0);
                if (tps > 0) seconds += plan.tokensPerStep() / tps;
                if (o.hasNonNull("val_ce")) val = o.get("val_ce").asDouble();
                if (o.hasNonNull("ce")) ce.add(o.get("ce").asDouble());
                if (o.hasNonNull("erc_eps_mean")) {
                    epsLast = o.get("erc_eps_mean").asDouble();
                    if (Double.isNaN(epsFirst)) epsFirst = epsLast;
                }
            }
        } catch (IOException ex) {
            throw new Moe4jException("study report: " + f + ": " + ex.getMessage(), ex);
        }
        double trainCe = Double.NaN;
        if (!ce.isEmpty()) {
            double sum = 0;
            List<Double> tail = ce.subList(Math.max(0, ce.size() - 100), ce.size());
            for (double v : tail) sum += v;
            trainCe = sum / tail.size();
        }
        return new RunLogSummary(seconds, trainCe, val, epsFirst, epsLast);
    }

    long trainedStep(StudyPlan.Arm a) {
        Path ck = StudyCommand.checkpoint(study.armDir(a));
        if (!Files.isDirectory(ck)) return -1;
        var st = org.moe4j.engine.io.TrainingState.readIfPresent(ck);
        return st == null ? -1 : st.step();
    }

    private static String minutes(double s) {
        return String.format(Locale.ROOT, "%.1f min", s / 60);
    }

    /** "12.34" or "12.34 (+5.6%)" against {@code ref}; NOT_RUN for NaN. */
    static String cell(double v, double ref) {
        if (Double.isNaN(v)) return NOT_RUN;
        String s = String.format(Locale.ROOT, Math.abs(v) < 1 ? "%.3f" : "%.2f", v); // perplexities to 0.01, scores to 0.001
        return Double.isNaN(ref) ? s : s + String.format(Locale.ROOT, " (%+.1f%%)", 100 * (v / ref - 1));
    }

    /** The value of row {@code name} of a name,value CSV; NaN when the file or row is absent. */
    static double csvValue(Path csv, String name) {
        if (!Files.isRegularFile(csv)) return Double.NaN;
        try {
            for (String line : Files.readAllLines(csv)) {
                String[] p = line.split(",");
                if (p.length == 2 && p[0].equals(name)) return Double.parseDouble(p[1]);
            }
        } catch (IOException | NumberFormatException ex) {
            throw new Moe4jException("study report: " + csv + ": " + ex.getMessage(), ex);
        }
        return Double.NaN;
    }

    /** Means of the named columns over the CSV's rows (NaN cells skipped); NaN when the file is absent. */
    static double[] meanColumns(Path csv, String... columns) {
        double[] out = new double[columns.length];
        java.util.Arrays.fill(out, Double.NaN);
        if (!Files.isRegularFile(csv)) return out;
        try {
            List<String> lines = Files.readAllLines(csv);
            List<String> head = List.of(lines.get(0).split(","));
            for (int c = 0; c < columns.length; c++) {
                int col = head.indexOf(columns[c]);
                if (col < 0) throw new Moe4jException("study report: " + csv + ": no column '" + columns[c] + "'");
                double sum = 0;
                int n = 0;
                for (String line : lines.subList(1, lines.size())) {
                    // the columns read here are numbers after the first; a quoted first field may hold commas
                    String[] p = line.split(",");
                    int idx = p.length - head.size() + col;
                    if (col == 0 || idx < 0 || idx >= p.length) continue;
                    try {
                        double v = Double.parseDouble(p[idx]);
                        if (!Double.isNaN(v)) {
                            sum += v;
                            n++;
                        }
                    } catch (NumberFormatException ignored) {
                        // "NaN" or empty: a domain without tokens in the sample
                    }
                }
                out[c] = n == 0 ? Double.NaN : sum / n;
            }
        } catch (IOException ex) {
            throw new Moe4jException("study report: " + csv + ": " + ex.getMessage(), ex);
        }
        return out;
    }

    /** A line chart as SVG, one line per series (NaN points left out); false (no file) when no series has a point. */
    static boolean writePlot(Path file, String title, String[] x, Map<String, double[]> series) {
        double lo = Double.POSITIVE_INFINITY, hi = Double.NEGATIVE_INFINITY;
        for (double[] y : series.values()) for (double v : y) if (!Double.isNaN(v)) {
            lo = Math.min(lo, v);
            hi = Math.max(hi, v);
        }
        if (lo > hi) return false;
        if (hi - lo < 1e-9) {
            hi = lo + 1;
        }
        int w = 640, h = 400, left = 70, right = 220, top = 40, bottom = 50;
        double pw = w - left - right, ph = h - top - bottom;
        String[] colors = {"#1f77b4", "#aec7e8", "#ff7f0e", "#2ca02c", "#98df8a", "#d62728", "#9467bd", "#8c564b"};
        StringBuilder s = new StringBuilder();
        s.append(String.format(Locale.ROOT, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                + "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", w, h));
        s.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"22\" font-size=\"14\">%s</text>\n", left, esc(title)));
        for (int t = 0; t <= 4; t++) {
            double v = lo + (hi - lo) * t / 4, yy = top + ph - ph * t / 4;
            s.append(String.format(Locale.ROOT, "<line x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                    + "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", left, left + pw, yy, yy, left - 6, yy + 4,
                    String.format(Locale.ROOT, hi >= 100 ? "%.0f" : "%.2f", v)));
        }
        for (int i = 0; i < x.length; i++) {
            double xx = left + (x.length == 1 ? pw / 2 : pw * i / (x.length - 1));
            s.append(String.format(Locale.ROOT, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", xx,
                    top + ph + 18, esc(x[i])));
        }
        s.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"%d\" transform=\"rotate(-90 %d %d)\" text-anchor=\"middle\">"
                + "perplexity</text>\n", 16, (int) (top + ph / 2), 16, (int) (top + ph / 2)));
        int c = 0;
        for (Map.Entry<String, double[]> e : series.entrySet()) {
            String color = colors[c % colors.length];
            StringBuilder pts = new StringBuilder();
            double[] y = e.getValue();
            for (int i = 0; i < y.length; i++) {
                if (Double.isNaN(y[i])) continue;
                double xx = left + (x.length == 1 ? pw / 2 : pw * i / (x.length - 1)), yy = top + ph - ph * (y[i] - lo) / (hi - lo);
                pts.append(String.format(Locale.ROOT, "%.1f,%.1f ", xx, yy));
                s.append(String.format(Locale.ROOT, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", xx, yy, color));
            }
            if (!pts.isEmpty())
                s.append("<polyline fill=\"none\" stroke=\"").append(color).append("\" stroke-width=\"2\" points=\"")
                        .append(pts.toString().trim()).append("\"/>\n");
            double ly = top + 14 * c;
            s.append(String.format(Locale.ROOT, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                    + "stroke-width=\"2\"/><text x=\"%.1f\" y=\"%.1f\">%s</text>\n", left + pw + 10, left + pw + 28, ly, ly,
                    color, left + pw + 32, ly + 4, esc(e.getKey())));
            c++;
        }
        s.append("</svg>\n");
        try {
            Files.createDirectories(file.getParent());
            AtomicFile.write(file, s.toString().getBytes(StandardCharsets.UTF_8));
        } catch (IOException ex) {
            throw new Moe4jException("study report: " + file + ": " + ex.getMessage(), ex);
        }
        return true;
    }

    private static String esc(String s) {
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;");
    }
}
