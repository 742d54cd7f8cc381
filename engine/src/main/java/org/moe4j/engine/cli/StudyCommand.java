package org.moe4j.engine.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.moe4j.Moe4jException;
import org.moe4j.engine.io.TrainingState;
import org.moe4j.io.corpus.ShardManifest;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code ./moe4j study}: the EMO-versus-standard study of docs/RESULTS.md, one resumable command per experiment.
 * Each stage checks what is already on disk and does only the rest: prepare-data is skipped when the data folder has
 * its manifest, a train run continues from its checkpoint's training state (saved every {@code --save-every} steps;
 * a finished one is skipped), an eval file or analyze report that exists is kept. Interrupt anything at any time and
 * run the same command again. Every stage runs the ordinary commands (prepare-data, train, eval, analyze) in this
 * JVM with the options {@code study plan} prints.
 */
@Command(name = "study", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"The EMO vs standard MoE study (docs/RESULTS.md): prepare the corpus, train each arm, "
                + "evaluate and analyze it, gather the tables. Every stage is resumable: re-run the same command "
                + "after an interruption and it continues where it stopped; finished stages are skipped.",
                "Stages: plan (print every command), prepare, train ARM, eval ARM, analyze ARM, run ARM (train + eval "
                        + "+ analyze), report (tables and plots of every arm that has results), all (everything).",
                "Arms: std-local-s1 std-local-s2 std-global-s1 emo-s1 emo-s2 emo-mat-s1 emo-erc-s1."})
public final class StudyCommand implements Callable<Integer> {
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    @Parameters(index = "0", paramLabel = "STAGE", description = "plan | prepare | train | eval | analyze | run | report | all")
    String stage;

    @Parameters(index = "1..*", paramLabel = "ARM", arity = "0..*",
            description = "arms for train, eval, analyze, run (default: every arm)")
    List<String> armNames = new ArrayList<>();

    @Option(names = "--dir", required = true, paramLabel = "DIR",
            description = "the study folder: plan.json, data/, arms/ARM/{ckpt,eval,analyze}, report/")
    Path dir;

    @Option(names = "--size", defaultValue = "default", paramLabel = "default|tiny",
            description = "default: d 256, 4 layers, 32 experts (1 shared), k 4, 2,000 steps of 2,048 tokens per arm; "
                    + "tiny: a seconds-long version for tests (default: ${DEFAULT-VALUE})")
    String size;

    @Option(names = "--source", paramLabel = "SOURCE",
            description = "prepare-data sources instead of the plan's (repeatable; default plan: brown, spam, sotu, jdk)")
    List<String> sources;

    @Option(names = "--steps", paramLabel = "N",
            description = "train steps of every arm instead of the plan's (default: 2,000 for default, 12 for tiny)")
    Integer steps;

    @Option(names = "--into", paramLabel = "FILE",
            description = "report: also replace the block between '<!-- study:begin -->' and '<!-- study:end -->' "
                    + "of this Markdown file (docs/RESULTS.md) with the tables; an arm with no folder in --dir keeps "
                    + "its rows from the block replaced (default: none)")
    Path into;

    @Override
    public Integer call() {
        StudyPlan plan = plan();
        List<StudyPlan.Arm> arms = new ArrayList<>();
        for (String n : armNames) arms.add(plan.arm(n));
        if (arms.isEmpty()) arms.addAll(plan.arms());
        switch (stage) {
            case "plan" -> printPlan(plan, arms);
            case "prepare" -> prepare(plan);
            case "train" -> arms.forEach(a -> train(plan, a));
            case "eval" -> arms.forEach(a -> eval(plan, a));
            case "analyze" -> arms.forEach(a -> analyze(plan, a));
            case "run" -> arms.forEach(a -> {
                train(plan, a);
                eval(plan, a);
                analyze(plan, a);
            });
            case "report" -> report(plan);
            case "all" -> {
                prepare(plan);
                for (StudyPlan.Arm a : arms) {
                    train(plan, a);
                    eval(plan, a);
                    analyze(plan, a);
                }
                report(plan);
            }
            default -> throw new Moe4jException("study " + stage + ": expected plan, prepare, train, eval, analyze, run, "
                    + "report or all");
        }
        return 0;
    }

    /** The plan of --size with --source and --steps applied; fixed in DIR/plan.json by the first stage that writes. */
    StudyPlan plan() {
        StudyPlan p = switch (size) {
            case "default" -> sources == null ? StudyPlan.defaults() : withSources(StudyPlan.defaults(), sources);
            case "tiny" -> {
                if (sources == null || sources.isEmpty())
                    throw new Moe4jException("study --size tiny: give its corpus with --source (e.g. folder:PATH)");
                yield StudyPlan.tiny(sources);
            }
            default -> throw new Moe4jException("study --size " + size + ": expected default or tiny");
        };
        if (steps != null) {
            if (steps < 1) throw new Moe4jException("study --steps " + steps + ": must be >= 1");
            p = p.withSteps(steps);
        }
        return p;
    }

    private static StudyPlan withSources(StudyPlan p, List<String> sources) {
        List<String> prep = new ArrayList<>();
        for (String s : sources) {
            prep.add("--source");
            prep.add(s);
        }
        for (int i = 0; i < p.prepare().size(); i += 2)
            if (!p.prepare().get(i).equals("--source")) {
                prep.add(p.prepare().get(i));
                prep.add(p.prepare().get(i + 1));
            }
        return new StudyPlan(p.size(), prep, p.model(), p.training(), p.arms(), p.evals(), p.kEval(), p.evalTokens(), p.analyze());
    }

    /**
     * Writes DIR/plan.json the first time; later, refuses a plan that differs from it (a study's arms must share
     * data, architecture and budget: a second plan in the same folder would mix two studies).
     */
    void fixPlan(StudyPlan plan) {
        Path f = dir.resolve("plan.json");
        try {
            String now = JSON.writeValueAsString(plan);
            if (Files.isRegularFile(f)) {
                String before = Files.readString(f);
                if (!JSON.readTree(before).equals(JSON.readTree(now)))
                    throw new Moe4jException("study: " + f + " holds another plan than these options give (--size, "
                            + "--source, --steps); a study folder keeps one plan so that its arms compare: use another "
                            + "--dir, or the options it was started with");
                return;
            }
            org.moe4j.io.AtomicFile.write(f, now.getBytes(StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new Moe4jException("study: " + f + ": " + e.getMessage(), e);
        }
    }

    Path data() {
        return dir.resolve("data");
    }

    Path armDir(StudyPlan.Arm a) {
        return dir.resolve("arms").resolve(a.name());
    }

    static Path checkpoint(Path armDir) {
        return armDir.resolve("ckpt");
    }

    // ------------------------------------------------------------------ command lines

    List<String> prepareArgs(StudyPlan plan) {
        List<String> a = new ArrayList<>(plan.prepare());
        a.addAll(List.of("--out", data().toString(), "--no-progress"));
        return a;
    }

    List<String> trainArgs(StudyPlan plan, StudyPlan.Arm arm, boolean resume) {
        Path ck = checkpoint(armDir(arm));
        // the arm's recipe overrides the shared model options it names (arm 5's --erc 1.0 against the model's
        // --erc 0: picocli refuses an option given twice)
        java.util.Set<String> named = new java.util.HashSet<>();
        for (String r : arm.recipe()) if (r.startsWith("--")) named.add(r);
        List<String> a = new ArrayList<>();
        List<String> model = plan.model();
        for (int i = 0; i < model.size(); i++) {
            String m = model.get(i);
            boolean hasValue = i + 1 < model.size() && !model.get(i + 1).startsWith("--");
            if (named.contains(m)) {
                if (hasValue) i++;
                continue;
            }
            a.add(m);
        }
        a.addAll(arm.recipe());
        a.addAll(plan.training());
        a.addAll(List.of("--seed", Long.toString(arm.seed()), "--data", data().toString(), "--val-per-domain",
                "--out", ck.toString()));
        if (resume) a.addAll(List.of("--resume", ck.toString()));
        return a;
    }

    List<String> evalArgs(StudyPlan plan, StudyPlan.Arm arm, StudyPlan.Eval e) {
        List<String> settings = new ArrayList<>();
        for (String s : e.settings().split(",")) {
            if (s.equals(StudyPlan.K_SWEEP)) {
                for (int k = 1; k <= plan.kEval(); k++) settings.add("k:" + k);
            } else if (s.equals(StudyPlan.POOL)) {
                if (arm.pool() > 0) settings.add("pool:" + arm.pool());
            } else {
                settings.add(s);
            }
        }
        return new ArrayList<>(List.of("--ckpt", checkpoint(armDir(arm)).toString(), "--data", data().toString(),
                "--settings", String.join(",", settings), "--method", e.method(), "--calib-docs",
                Integer.toString(e.calibDocs()), "--max-tokens-per-domain", Long.toString(plan.evalTokens()),
                "--out", evalFile(arm, e).toString(), "--no-progress"));
    }

    Path evalFile(StudyPlan.Arm arm, StudyPlan.Eval e) {
        return armDir(arm).resolve("eval").resolve(e.name() + ".json");
    }

    List<String> analyzeArgs(StudyPlan plan, StudyPlan.Arm arm) {
        List<String> a = new ArrayList<>(List.of("--ckpt", checkpoint(armDir(arm)).toString(), "--data",
                data().toString(), "--out", armDir(arm).resolve("analyze").toString()));
        a.addAll(plan.analyze());
        return a;
    }

    // ------------------------------------------------------------------ stages

    void printPlan(StudyPlan plan, List<StudyPlan.Arm> arms) {
        System.out.printf(Locale.ROOT, "study plan '%s' in %s: %d arms, %,d steps x %,d tokens = %,d tokens each%n",
                plan.size(), dir, arms.size(), plan.steps(), plan.tokensPerStep(), plan.steps() * plan.tokensPerStep());
        System.out.println("./moe4j prepare-data " + String.join(" ", prepareArgs(plan)));
        for (StudyPlan.Arm a : arms) {
            System.out.println("# " + a.label());
            System.out.println("./moe4j train " + String.join(" ", trainArgs(plan, a, false))
                    + "   # after an interruption the same with --resume " + checkpoint(armDir(a)));
            for (StudyPlan.Eval e : plan.evals()) System.out.println("./moe4j eval " + String.join(" ", evalArgs(plan, a, e)));
            System.out.println("./moe4j analyze " + String.join(" ", analyzeArgs(plan, a)));
        }
    }

    void prepare(StudyPlan plan) {
        fixPlan(plan);
        if (Files.isRegularFile(data().resolve(ShardManifest.FILE_NAME))) {
            System.out.println("study prepare: " + data() + " is there (its manifest.json); skipped");
            return;
        }
        long t0 = System.nanoTime();
        PrepareDataCommand p = new PrepareDataCommand();
        new CommandLine(p).parseArgs(prepareArgs(plan).toArray(String[]::new));
        p.call();
        timing(dir, "prepare", null, t0, -1, -1);
    }

    void requirePrepared() {
        if (!Files.isRegularFile(data().resolve(ShardManifest.FILE_NAME)))
            throw new Moe4jException("study: " + data() + " has no manifest.json; run './moe4j study prepare --dir "
                    + dir + "' first");
    }

    /** Trains the arm to the plan's steps, from where its checkpoint stopped; skipped when it is there. */
    void train(StudyPlan plan, StudyPlan.Arm arm) {
        fixPlan(plan);
        requirePrepared();
        Path ck = checkpoint(armDir(arm));
        TrainingState st = Files.isDirectory(ck) ? TrainingState.readIfPresent(ck) : null;
        if (st != null && st.step() >= plan.steps()) {
            System.out.println("study train " + arm.name() + ": done (" + ck + " at step " + st.step() + "); skipped");
            return;
        }
        try {
            Files.createDirectories(armDir(arm));
        } catch (IOException e) {
            throw new Moe4jException("study: cannot create " + armDir(arm) + ": " + e.getMessage(), e);
        }
        System.out.println("study train " + arm.name() + (st != null ? ": resuming at step " + st.step() : ": from step 0")
                + " of " + plan.steps());
        long t0 = System.nanoTime();
        TrainCommand t = new TrainCommand();
        new CommandLine(t).parseArgs(trainArgs(plan, arm, st != null).toArray(String[]::new));
        t.call();
        timing(armDir(arm), "train", arm, t0, st == null ? 0 : st.step(), plan.steps());
    }

    /** Checkpoint of a finished arm, or a message saying to train it first. */
    Path trained(StudyPlan plan, StudyPlan.Arm arm, String what) {
        Path ck = checkpoint(armDir(arm));
        TrainingState st = Files.isDirectory(ck) ? TrainingState.readIfPresent(ck) : null;
        if (st == null || st.step() < plan.steps())
            throw new Moe4jException("study " + what + " " + arm.name() + ": " + ck + " is not trained to step "
                    + plan.steps() + " (" + (st == null ? "no checkpoint" : "step " + st.step()) + "); run './moe4j study "
                    + "train " + arm.name() + " --dir " + dir + "' first");
        return ck;
    }

    void eval(StudyPlan plan, StudyPlan.Arm arm) {
        fixPlan(plan);
        trained(plan, arm, "eval");
        for (StudyPlan.Eval e : plan.evals()) {
            Path out = evalFile(arm, e);
            if (Files.isRegularFile(out)) {
                System.out.println("study eval " + arm.name() + " " + e.name() + ": " + out + " is there; skipped");
                continue;
            }
            try {
                Files.createDirectories(out.getParent());
            } catch (IOException ex) {
                throw new Moe4jException("study: cannot create " + out.getParent() + ": " + ex.getMessage(), ex);
            }
            long t0 = System.nanoTime();
            EvalCommand c = new EvalCommand();
            new CommandLine(c).parseArgs(evalArgs(plan, arm, e).toArray(String[]::new));
            c.call(); // writes the .json last, atomically: a file that is there is complete
            timing(armDir(arm), "eval " + e.name(), arm, t0, -1, -1);
        }
    }

    void analyze(StudyPlan plan, StudyPlan.Arm arm) {
        fixPlan(plan);
        trained(plan, arm, "analyze");
        Path page = armDir(arm).resolve("analyze").resolve("index.html");
        if (Files.isRegularFile(page)) {
            System.out.println("study analyze " + arm.name() + ": " + page + " is there; skipped");
            return;
        }
        long t0 = System.nanoTime();
        AnalyzeCommand c = new AnalyzeCommand();
        new CommandLine(c).parseArgs(analyzeArgs(plan, arm).toArray(String[]::new));
        c.call();
        timing(armDir(arm), "analyze", arm, t0, -1, -1);
    }

    void report(StudyPlan plan) {
        fixPlan(plan);
        StudyReport.Result r = new StudyReport(this, plan).write(dir.resolve("report"), into);
        System.out.println("study report: " + r.markdown().toAbsolutePath() + " (" + r.armsWithResults() + " of "
                + plan.arms().size() + " arms have results here; " + r.plots() + " plots"
                + (r.kept().isEmpty() ? "" : "; the rows of " + String.join(", ", r.kept()) + " kept from " + into) + ")"
                + (into != null ? "; tables written into " + into : ""));
    }

    /** The processor's name from /proc/cpuinfo, or os.arch where there is none (what the wall times were taken on). */
    static String cpuModel() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/cpuinfo")))
                if (line.startsWith("model name")) return line.substring(line.indexOf(':') + 1).strip();
        } catch (IOException | RuntimeException e) {
            // not Linux, or not readable: the architecture is what is left to say
        }
        return System.getProperty("os.arch");
    }

    /** Appends one line to FOLDER/timing.jsonl: the stage, when it ended, its wall seconds, the steps it covered. */
    static void timing(Path folder, String stage, StudyPlan.Arm arm, long t0, long fromStep, long toStep) {
        ObjectNode o = JSON.createObjectNode();
        o.put("stage", stage);
        if (arm != null) o.put("arm", arm.name());
        o.put("ended", Instant.now().toString());
        o.put("seconds", (System.nanoTime() - t0) * 1e-9);
        if (fromStep >= 0) {
            o.put("from_step", fromStep);
            o.put("to_step", toStep);
        }
        o.put("threads", org.moe4j.simd.WorkerPool.common().threads());
        o.put("cores", Runtime.getRuntime().availableProcessors());
        o.put("cpu", cpuModel());
        o.put("jdk", Runtime.version().toString());
        try {
            Files.createDirectories(folder);
            Files.writeString(folder.resolve("timing.jsonl"), o.toString() + "\n", StandardCharsets.UTF_8,
                    StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        } catch (IOException e) {
            throw new Moe4jException("study: " + folder.resolve("timing.jsonl") + ": " + e.getMessage(), e);
        }
    }
}
