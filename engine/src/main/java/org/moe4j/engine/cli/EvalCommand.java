package org.moe4j.engine.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import me.tongfei.progressbar.ConsoleProgressBarConsumer;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
import org.moe4j.Moe4jException;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.subset.Calibration;
import org.moe4j.engine.subset.Evaluator;
import org.moe4j.engine.subset.OutputFolders;
import org.moe4j.engine.subset.SubsetMethod;
import org.moe4j.io.corpus.ShardManifest;
import org.moe4j.nativ.GemmBackends;
import org.moe4j.simd.WorkerPool;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code ./moe4j eval}: per-domain perplexity of the validation split under several routing settings. */
@Command(name = "eval", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Per-domain perplexity (and CE) on the validation split of a prepare-data folder for each setting "
                + "in one run: the full model, expert subsets chosen per domain from calibration documents of that "
                + "domain that are not scored, a routed k' per layer, an EMO evaluation pool.",
                "Prints a table and writes OUT.csv and OUT.json."})
public final class EvalCommand implements Callable<Integer> {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Option(names = "--ckpt", required = true, paramLabel = "DIR", description = "checkpoint folder")
    Path ckpt;

    @Option(names = "--data", required = true, paramLabel = "DIR", description = "a prepare-data folder (its val split is scored)")
    Path data;

    @Option(names = "--settings", defaultValue = "full,keep:1/2,keep:1/4,keep:1/8", paramLabel = "S,S,...",
            description = "full, keep:FRACTION (a subset of that share of the experts), k:K' (routed k' in every layer), "
                    + "pool:P (EMO evaluation pool) (default: ${DEFAULT-VALUE})")
    String settings;

    @Option(names = "--method", defaultValue = "layerwise", paramLabel = "layerwise|global|frequency|reap|random",
            description = "how keep: subsets are chosen (default: ${DEFAULT-VALUE})")
    String method;

    @Option(names = "--calib-docs", defaultValue = "1", paramLabel = "N",
            description = "calibration documents per domain, from its train split (default: ${DEFAULT-VALUE})")
    int calibDocs;

    @Option(names = "--max-tokens-per-domain", defaultValue = "20000", paramLabel = "N",
            description = "validation tokens scored per domain at most (default: ${DEFAULT-VALUE})")
    long maxTokens;

    @Option(names = "--seed", defaultValue = "0", paramLabel = "S", description = "seed of --method random")
    long seed;

    @Option(names = "--out", required = true, paramLabel = "OUT", description = "writes OUT.csv and OUT.json (OUT may end in .csv or .json)")
    Path out;

    @Option(names = "--no-progress", description = "no progress bar")
    boolean noProgress;

    /** The results CSV's header, and the keys every results JSON has: how an earlier output of eval is recognised. */
    static final String CSV_HEADER = "domain,setting,labels,ce,perplexity";
    static final String[] JSON_KEYS = {"checkpoint", "data", "method", "calib_docs", "max_tokens_per_domain", "results"};

    @Override
    public Integer call() {
        SubsetMethod m = SubsetMethod.parse(method, "--method");
        if (calibDocs < 1) throw new Moe4jException("--calib-docs " + calibDocs + ": must be >= 1");
        if (maxTokens < 2) throw new Moe4jException("--max-tokens-per-domain " + maxTokens + ": must be >= 2");
        String stem = out.toString().replaceFirst("\\.(csv|json)$", "");
        Path csv = Path.of(stem + ".csv"), json = Path.of(stem + ".json");
        OutputFolders.requireOwnFile(csv, "--out", "eval", f -> OutputFolders.firstLineIs(f, CSV_HEADER));
        OutputFolders.requireOwnFile(json, "--out", "eval", f -> OutputFolders.jsonObjectWith(f, false, JSON_KEYS));
        List<Evaluator.Setting> list = Evaluator.Setting.parseList(settings);
        ShardManifest manifest = Calibration.manifest(data, "--data");
        WorkerPool pool = WorkerPool.common();
        List<Evaluator.Row> rows;
        try (InferenceModel model = InferenceModel.load(ckpt, false)) {
            if (manifest.tokenizer().vocabSize() > model.config().vocab())
                throw new Moe4jException("--data " + data + ": its vocabulary has " + manifest.tokenizer().vocabSize()
                        + " tokens, the model " + model.config().vocab() + " (prepared with another tokenizer?)");
            List<Evaluator.DomainData> domains = Evaluator.load(data, manifest, calibDocs, maxTokens, model.config().maxSeq());
            long windows = 0;
            for (Evaluator.DomainData d : domains) windows += d.windows().size();
            System.err.println("moe4j eval: " + model + ", " + domains.size() + " domains, settings " + settings
                    + ", subsets by " + m.cliName() + " from " + calibDocs + " document" + (calibDocs == 1 ? "" : "s"));
            GemmBackends.Choice backend = GemmBackends.fromEnvironment(pool);
            try (ProgressBar bar = noProgress ? null : new ProgressBarBuilder().setTaskName("eval")
                    .setInitialMax(windows * list.size()).setUnit(" windows", 1).setStyle(ProgressBarStyle.ASCII)
                    .setUpdateIntervalMillis(500).setConsumer(new ConsoleProgressBarConsumer(System.err)).build()) {
                rows = Evaluator.run(model.weights(), domains, list, m, seed, backend.gemm(), pool, bar == null ? null
                        : (dom, set) -> {
                            bar.step();
                            bar.setExtraMessage(" " + dom + " " + set);
                        });
            }
        }
        System.out.print(Evaluator.table(rows, list));
        StringBuilder b = new StringBuilder(CSV_HEADER).append('\n');
        ObjectNode root = JSON.createObjectNode();
        root.put("checkpoint", ckpt.toAbsolutePath().normalize().toString());
        root.put("data", data.toAbsolutePath().normalize().toString());
        root.put("method", m.cliName());
        root.put("calib_docs", calibDocs);
        root.put("max_tokens_per_domain", maxTokens);
        ArrayNode res = root.putArray("results");
        for (Evaluator.Row r : rows) {
            b.append(String.format(Locale.ROOT, "%s,%s,%d,%.6f,%.6f%n", csvField(r.domain()), r.setting(), r.labels(), r.ce(), r.perplexity()));
            ObjectNode o = res.addObject();
            o.put("domain", r.domain());
            o.put("setting", r.setting());
            o.put("labels", r.labels());
            o.put("ce", r.ce());
            o.put("perplexity", r.perplexity());
            if (r.kept() != null) {
                ArrayNode ls = o.putArray("layers");
                for (int[] k : r.kept()) {
                    ArrayNode a = ls.addArray();
                    for (int e : k) a.add(e);
                }
            }
        }
        OutputFolders.writeAtomically(csv, b.toString().getBytes(StandardCharsets.UTF_8), "--out");
        try {
            OutputFolders.writeAtomically(json, JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(root), "--out");
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new Moe4jException("--out " + json + ": cannot serialise the results JSON: " + e.getMessage(), e);
        }
        System.out.println("wrote " + csv + " and " + json);
        return 0;
    }

    private static String csvField(String s) {
        return s.contains(",") || s.contains("\"") ? "\"" + s.replace("\"", "\"\"") + "\"" : s;
    }
}
