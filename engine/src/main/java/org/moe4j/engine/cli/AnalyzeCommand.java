package org.moe4j.engine.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import me.tongfei.progressbar.ConsoleProgressBarConsumer;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
import org.moe4j.Moe4jException;
import org.moe4j.engine.analysis.Analyzer;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.train.RunRecorder;
import org.moe4j.io.corpus.ShardManifest;
import org.moe4j.io.corpus.Split;
import org.moe4j.io.corpus.TokenShard;
import org.moe4j.nativ.GemmBackends;
import org.moe4j.simd.WorkerPool;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code ./moe4j analyze}: what the router learned, as CSVs and one self-contained HTML page. */
@Command(name = "analyze", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Routes tokens of a prepared corpus through a checkpoint and writes index.html (charts inline) "
                + "and one CSV per analysis: token-id specialisation, early routing learning (--run), drops by position, "
                + "token clusters, domain x expert usage, training curves (--run)."})
public final class AnalyzeCommand implements Callable<Integer> {
    @Option(names = "--ckpt", required = true, paramLabel = "DIR", description = "checkpoint folder (config.json + safetensors)")
    Path ckpt;

    @Option(names = "--data", required = true, paramLabel = "DIR", description = "prepare-data output (manifest.json + shards)")
    Path data;

    @Option(names = "--run", paramLabel = "DIR",
            description = "run folder with metrics.jsonl and routing-snapshots/ (default: the checkpoint's DIR.run, when there)")
    Path run;

    @Option(names = "--out", required = true, paramLabel = "DIR", description = "where index.html and the CSVs go")
    Path out;

    @Option(names = "--split", defaultValue = "val", paramLabel = "train|val", description = "shard to read (default: ${DEFAULT-VALUE})")
    String split;

    @Option(names = "--tokens", defaultValue = "262144", paramLabel = "N", description = "tokens to route (default: ${DEFAULT-VALUE})")
    long tokens;

    @Option(names = "--seq", defaultValue = "128", paramLabel = "T", description = "window length, at most the model's (default: ${DEFAULT-VALUE})")
    int seq;

    @Option(names = "--capacity-factor", defaultValue = "1.0", paramLabel = "CF",
            description = "capacity factor of the drop analysis (0 = skip it; default: ${DEFAULT-VALUE})")
    double capacityFactor;

    @Option(names = "--cluster-tokens", defaultValue = "16384", paramLabel = "N", description = "tokens clustered (default: ${DEFAULT-VALUE})")
    int clusterTokens;

    @Option(names = "--clusters", defaultValue = "32", paramLabel = "K", description = "spherical k-means clusters (default: ${DEFAULT-VALUE})")
    int clusters;

    @Option(names = "--snapshot-tokens", defaultValue = "65536", paramLabel = "N",
            description = "tokens routed per routing snapshot (default: ${DEFAULT-VALUE})")
    long snapshotTokens;

    @Option(names = "--min-count", defaultValue = "128", paramLabel = "N",
            description = "occurrences for a token id to count in the id statistics (default: ${DEFAULT-VALUE})")
    long minCount;

    @Option(names = "--seed", defaultValue = "1", paramLabel = "S", description = "k-means and chance-line seed (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--gemm", paramLabel = "auto|java|onednn", description = "GEMM backend (default: as train)")
    String gemm;

    @Override
    public Integer call() {
        if (tokens < 1 || clusterTokens < 1 || clusters < 1 || minCount < 1 || snapshotTokens < 1)
            throw new Moe4jException("--tokens, --cluster-tokens, --clusters, --snapshot-tokens and --min-count must be >= 1");
        if (!(capacityFactor >= 0) || Double.isInfinite(capacityFactor))
            throw new Moe4jException("--capacity-factor " + capacityFactor + ": expected a finite value >= 0");
        Split sp = switch (split) {
            case "train" -> Split.TRAIN;
            case "val" -> Split.VAL;
            default -> throw new Moe4jException("--split " + split + ": expected train or val");
        };
        Analyzer.Report r = analyze(ckpt, data, run, out, sp, new Analyzer.Options(tokens, seq, 16, capacityFactor, clusterTokens,
                clusters, snapshotTokens, minCount, seed), gemm, true);
        System.out.printf(Locale.ROOT, "report: %s (%d charts, %d CSV files; %,d tokens in %.1f s)%n",
                r.page().toAbsolutePath(), r.charts(), r.csv().size(), r.tokens(), r.seconds());
        return 0;
    }

    /** Runs the analysis (also the quickstart's); {@code run} null: the checkpoint's run folder when there is one. */
    static Analyzer.Report analyze(Path ckpt, Path data, Path run, Path out, Split split, Analyzer.Options o, String gemmName, boolean bar) {
        if (run == null && Files.isDirectory(RunRecorder.runDir(ckpt))) run = RunRecorder.runDir(ckpt);
        if (run != null && !Files.isDirectory(run)) throw new Moe4jException("--run " + run + ": no such folder");
        WorkerPool pool = WorkerPool.common();
        ShardManifest m = ShardManifest.read(data);
        try (InferenceModel model = InferenceModel.load(ckpt, false);
             TokenShard shard = m.open(data, split)) {
            GemmBackends.Choice backend = gemmName == null ? GemmBackends.fromEnvironment(pool) : GemmBackends.select(gemmName, pool);
            Analyzer a = new Analyzer(model.config(), model.weights(), model.tokenizer(), shard, m.domains(), backend.gemm(), pool, o);
            if (!bar) return a.run(run, out, null);
            try (ProgressBar pb = new ProgressBarBuilder().setTaskName("routing").setInitialMax(a.plannedTokens(run))
                    .setUnit(" tok", 1).setStyle(ProgressBarStyle.ASCII).setUpdateIntervalMillis(500)
                    .setConsumer(new ConsoleProgressBarConsumer(System.err)).showSpeed().build()) {
                return a.run(run, out, pb::stepBy);
            }
        }
    }
}
