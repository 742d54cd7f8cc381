package org.moe4j.engine.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.moe4j.Moe4jException;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.subset.Evaluator;
import org.moe4j.engine.subset.SubsetMethod;
import org.moe4j.engine.analysis.Analyzer;
import org.moe4j.engine.train.ValidationLoss;
import org.moe4j.io.corpus.BpeTextEncoder;
import org.moe4j.io.corpus.CorpusException;
import org.moe4j.io.corpus.JdkSources;
import org.moe4j.io.corpus.ShardManifest;
import org.moe4j.nativ.GemmBackends;
import org.moe4j.simd.WorkerPool;
import org.moe4j.io.corpus.Split;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * The README's main job on its embedded default, a few minutes on two cores: the sources of the running JDK as a
 * six-domain corpus (a deterministic sample of files per domain) with a byte-level BPE trained on them, then a small
 * EMO-routed MoE trained on it, its validation loss overall and per domain, and the checkpoint with its tokenizer.
 * The prepared data is kept and reused while its manifest matches what this run would write.
 */
@Command(name = "quickstart", mixinStandardHelpOptions = true,
        description = "The main job on the embedded default: prepare the JDK's own sources (6 domains, BPE), train a "
                + "small EMO-routed MoE on them for a few minutes, report train/validation loss per domain, save it.")
public final class QuickstartCommand implements Callable<Integer> {
    @Option(names = "--out", paramLabel = "DIR",
            description = "Working folder: DIR/data (shards, tokenizer) and DIR/model (checkpoint); default ~/.cache/moe4j/quickstart")
    Path out;

    @Option(names = "--steps", defaultValue = "800", description = "Optimizer steps (default: ${DEFAULT-VALUE}).")
    int steps;

    @Option(names = "--time-limit", defaultValue = "240", paramLabel = "SECONDS",
            description = "Stop training after this many seconds even if --steps are not done; 0: no limit (default: ${DEFAULT-VALUE}).")
    double timeLimit;

    @Option(names = "--docs-per-domain", defaultValue = "300", paramLabel = "N",
            description = "JDK source files per domain (default: ${DEFAULT-VALUE}).")
    int docsPerDomain;

    @Option(names = "--vocab", defaultValue = "2048", description = "BPE vocabulary (default: ${DEFAULT-VALUE}).")
    int vocab;

    @Option(names = "--routing", defaultValue = "emo",
            description = "standard | emo | matryoshka | capacity | shared (default: ${DEFAULT-VALUE})")
    String routing;

    @Option(names = "--precision", defaultValue = "fp32", paramLabel = "fp32|bf16",
            description = "training precision, as train's --precision (default: ${DEFAULT-VALUE})")
    String precision;

    @Option(names = "--batch", defaultValue = "8") int batch;
    @Option(names = "--seq", defaultValue = "128") int seq;
    @Option(names = "--seed", defaultValue = "1") long seed;

    @Spec
    CommandSpec spec;

    static final double VAL_FRACTION = 0.05;

    @Override
    public Integer call() {
        checkOptions();
        long t0 = System.nanoTime();
        Path dir = out != null ? out : Path.of(System.getProperty("user.home"), ".cache", "moe4j", "quickstart");
        Path data = dir.resolve("data"), model = dir.resolve("model");
        JdkSources jdk = JdkSources.ofRunningJdk(docsPerDomain);
        String why = reuseProblem(data, jdk.reference(), vocab);
        if (why == null) {
            System.out.println("quickstart: reusing the prepared data in " + data);
        } else {
            System.out.println("quickstart: preparing " + data + " (" + why + "): the JDK's sources, at most "
                    + docsPerDomain + " files per domain, byte-level BPE of " + vocab + " tokens");
            PrepareDataCommand prep = new PrepareDataCommand();
            CommandLine cl = new CommandLine(prep);
            cl.setOut(spec.commandLine().getOut());
            cl.setErr(spec.commandLine().getErr());
            cl.parseArgs("--source", "jdk", "--max-docs-per-domain", Integer.toString(docsPerDomain),
                    "--vocab", Integer.toString(vocab), "--val-fraction", Double.toString(VAL_FRACTION),
                    "--out", data.toString(), "--no-progress");
            prep.call();
        }
        double prepSeconds = (System.nanoTime() - t0) * 1e-9;

        TrainCommand train = new TrainCommand();
        List<String> args = new ArrayList<>(List.of("--config", "quickstart", "--routing", routing,
                "--data", data.toString(), "--steps", Integer.toString(steps), "--batch", Integer.toString(batch),
                "--seq", Integer.toString(seq), "--lr", "3e-3", "--warmup", Integer.toString(Math.max(1, steps / 15)),
                "--log-every", Integer.toString(Math.max(1, steps / 16)), "--seed", Long.toString(seed),
                "--val-batches", "16", "--val-per-domain", "--time-limit", Double.toString(timeLimit),
                "--keep-checkpoints", "6", // router snapshots for the report's early-routing chart
                "--precision", precision,
                "--out", model.toString()));
        new CommandLine(train).parseArgs(args.toArray(String[]::new));
        long t1 = System.nanoTime();
        train.call();
        double trainSeconds = (System.nanoTime() - t1) * 1e-9;

        TrainCommand.Summary s = train.summary;
        ValidationLoss.Result v = s.validation();
        System.out.printf(Locale.ROOT, "%nquickstart: train ce %.3f -> %.3f (first/last %d steps)%s; a uniform guess over "
                        + "%d tokens is %.3f%n", s.firstCe(), s.lastCe(), s.window(),
                v == null ? "" : String.format(Locale.ROOT, ", validation ce %.3f (perplexity %.1f)", v.ce(), v.perplexity()),
                vocab, Math.log(vocab));
        System.out.printf(Locale.ROOT, "quickstart: data %.0f s, training + validation %.0f s, total %.0f s; model in %s%n",
                prepSeconds, trainSeconds, (System.nanoTime() - t0) * 1e-9, model.toAbsolutePath());
        generateSample(model);
        subsetSample(model, data);
        printReport(data, model);
        return 0;
    }

    /**
     * Ends with EMO's point (ALGORITHMS.md section 7): for one domain, the validation perplexity of the full model and
     * of a quarter of its experts, chosen layer by layer from one training document of that domain.
     */
    static void subsetSample(Path model, Path data) {
        WorkerPool pool = WorkerPool.common();
        try (InferenceModel m = InferenceModel.load(model, false)) {
            ShardManifest manifest = ShardManifest.read(data);
            Evaluator.DomainData dom = null;
            for (Evaluator.DomainData d : Evaluator.load(data, manifest, 1, 4096, m.config().maxSeq()))
                if (dom == null && !d.windows().isEmpty() && d.calibrationSplit().equals("train")) dom = d;
            if (dom == null) {
                System.out.println("quickstart: no domain has both a training and a validation document; no subset sample");
                return;
            }
            List<Evaluator.Setting> settings = Evaluator.Setting.parseList("full,keep:1/4");
            List<Evaluator.Row> rows = Evaluator.run(m.weights(), List.of(dom), settings, SubsetMethod.LAYERWISE, 0,
                    GemmBackends.fromEnvironment(pool).gemm(), pool, null);
            Evaluator.Row full = rows.get(0), quarter = rows.get(1);
            System.out.printf(Locale.ROOT, "%nquickstart: domain '%s', %d validation tokens: perplexity %.2f with every expert, "
                            + "%.2f (%+.1f%%) with %d of %d experts per layer chosen from one document (./moe4j eval)%n",
                    dom.domain(), full.labels(), full.perplexity(), quarter.perplexity(),
                    100 * (quarter.perplexity() / full.perplexity() - 1), quarter.kept()[0].length, m.config().experts());
        }
    }

    /** A small routing report of the model ({@code ./moe4j analyze} on 16k tokens); prints where it is. */
    private static void printReport(Path data, Path model) {
        Path page;
        try {
            var val = ShardManifest.read(data).splits().get(Split.VAL.stem());
            Split split = val != null && val.tokens() >= 4096 ? Split.VAL : Split.TRAIN; // a test's val split may be empty
            page = AnalyzeCommand.analyze(model, data, null, model.resolveSibling("report"), split,
                    Analyzer.Options.defaults().withTokens(16_384).withSnapshotTokens(8_192), null, false).page();
        } catch (Moe4jException e) { // the model is trained and saved either way: say why there is no page
            System.out.println("\nquickstart: no routing report: " + e.getMessage());
            return;
        }
        System.out.println("\nquickstart: routing report in " + page.toAbsolutePath() + " (open it in a browser; ./moe4j analyze "
                + "--ckpt " + model.toAbsolutePath() + " --data " + data.toAbsolutePath() + " --out DIR for more tokens)");
    }

    /** The prompt the quickstart continues with the model it trained (greedy, so the same model gives the same text). */
    static final String SAMPLE_PROMPT = "public static void main(String[] args) {";

    /** Ends the quickstart the way a user would start: a short greedy continuation from the saved checkpoint. */
    private void generateSample(Path model) {
        System.out.println("\nquickstart: ./moe4j generate --ckpt " + model.toAbsolutePath() + " --prompt '" + SAMPLE_PROMPT
                + "' --max-new-tokens 48");
        GenerateCommand g = new GenerateCommand();
        new CommandLine(g).parseArgs("--ckpt", model.toString(), "--prompt", SAMPLE_PROMPT, "--max-new-tokens", "48",
                "--ignore-eos");
        g.call();
    }

    /**
     * Refuses bad options before minutes of data preparation: each message names the option, the value and what it
     * must be.
     */
    void checkOptions() {
        int maxSeq = TrainCommand.quickstartConfig().maxSeq();
        if (steps < 1) throw new Moe4jException("--steps " + steps + ": must be >= 1");
        if (!(timeLimit >= 0) || Double.isInfinite(timeLimit))
            throw new Moe4jException("--time-limit " + timeLimit + ": must be finite and >= 0 seconds (0: no limit)");
        if (docsPerDomain < 1) throw new Moe4jException("--docs-per-domain " + docsPerDomain + ": must be >= 1");
        if (vocab < MIN_VOCAB)
            throw new Moe4jException("--vocab " + vocab + ": must be >= " + MIN_VOCAB + " (256 byte tokens and the end-of-text token)");
        if (batch < 1) throw new Moe4jException("--batch " + batch + ": must be >= 1");
        if (seq < 2 || seq > maxSeq)
            throw new Moe4jException("--seq " + seq + ": must be in [2, " + maxSeq + "] (the quickstart model's longest sequence)");
        TrainCommand.withRouting(TrainCommand.quickstartConfig(), routing); // throws naming --routing
    }

    /** The smallest BPE vocabulary: every byte, and the end-of-text token. */
    static final int MIN_VOCAB = 257;

    /** Why the folder cannot be reused (null: it can): no manifest, or one written from other inputs. */
    static String reuseProblem(Path data, String jdkReference, int vocab) {
        if (!Files.isRegularFile(data.resolve(ShardManifest.FILE_NAME))) return "not prepared yet";
        ShardManifest m;
        try {
            m = ShardManifest.read(data);
        } catch (CorpusException e) {
            return "its manifest is unreadable";
        }
        if (m.sources().size() != 1 || !jdkReference.equals(m.sources().get(0).reference()))
            return "prepared from other sources";
        if (m.tokenizer().vocabSize() != vocab || m.valFraction() != VAL_FRACTION) return "prepared with other settings";
        Path tok = data.resolve(PrepareDataCommand.TOKENIZER_JSON);
        if (!Files.isRegularFile(tok) || m.tokenizer().reference() == null
                || !m.tokenizer().reference().contains(BpeTextEncoder.sha256(tok)))
            return "its tokenizer.json does not match the manifest";
        return null;
    }
}
