package org.moe4j.engine.subset;

import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.ForwardRunner;
import org.moe4j.engine.model.ModelWeights;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.io.corpus.ShardManifest;
import org.moe4j.io.corpus.Split;
import org.moe4j.io.corpus.TokenShard;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * Per-domain perplexity of the validation split under several routing settings in one run (ALGORITHMS.md section
 * 7): the full model, subsets keeping a share of the experts chosen per domain from calibration documents of that
 * domain that are not scored, a routed k' for every layer, an EMO evaluation pool. Each validation document is cut
 * into windows of at most maxSeq tokens, each run from position 0; every next-token label inside a window counts.
 * CE is summed in float64 from each row's log-sum-exp ({@link PackedCrossEntropy}).
 */
public final class Evaluator {
    private Evaluator() {
    }

    public enum Kind { FULL, KEEP, K, POOL }

    /** One setting: full, keep:FRACTION (K = round(F·E), at least s + 1), k:K' (routed), pool:P. */
    public record Setting(String name, Kind kind, String arg) {
        public static List<Setting> parseList(String spec) {
            List<Setting> out = new ArrayList<>();
            for (String part : spec.split(",")) {
                String p = part.trim();
                if (p.isEmpty()) continue;
                int colon = p.indexOf(':');
                String head = colon < 0 ? p : p.substring(0, colon), arg = colon < 0 ? null : p.substring(colon + 1);
                Kind k = switch (head) {
                    case "full" -> Kind.FULL;
                    case "keep" -> Kind.KEEP;
                    case "k" -> Kind.K;
                    case "pool" -> Kind.POOL;
                    default -> throw new Moe4jException("--settings: '" + p + "' is not a setting (full, keep:1/4, k:2, pool:8)");
                };
                if ((k == Kind.FULL) != (arg == null))
                    throw new Moe4jException("--settings: '" + p + "': " + (k == Kind.FULL ? "full takes no value" : head + " needs a value, e.g. " + head + ":2"));
                out.add(new Setting(p, k, arg));
            }
            if (out.isEmpty()) throw new Moe4jException("--settings " + spec + ": no setting");
            return out;
        }

        /** Checks the value against the model: K in range, k' in 1..E', P in 1..E'. */
        int value(ModelConfig c) {
            if (kind == Kind.FULL) return 0;
            if (kind == Kind.KEEP) return SubsetSelector.parseKeep(arg, c, "--settings " + name + ":");
            int v;
            try {
                v = Integer.parseInt(arg);
            } catch (NumberFormatException e) {
                throw new Moe4jException("--settings " + name + ": '" + arg + "' is not an integer");
            }
            if (v < 1 || v > c.routedExperts())
                throw new Moe4jException("--settings " + name + ": " + v + " is outside 1.." + c.routedExperts() + " (the routed experts)");
            return v;
        }
    }

    /** One result: CE (nats per label) and perplexity of a domain under a setting; kept = the subset, if one. */
    public record Row(String domain, String setting, long labels, double ce, int[][] kept) {
        public double perplexity() {
            return Math.exp(ce);
        }
    }

    /** Called after each window is scored (a progress bar). */
    public interface Progress {
        void step(String domain, String setting);
    }

    /** Windows of one domain to score and the calibration documents chosen for it. */
    public record DomainData(String domain, List<int[]> windows, List<int[]> calibration, String calibrationSplit) {
        public long labels() {
            long n = 0;
            for (int[] w : windows) n += Math.max(0, w.length - 1);
            return n;
        }
    }

    /**
     * The validation windows of every domain (at most {@code maxTokensPerDomain} tokens each) and {@code calibDocs}
     * calibration documents per domain from the train split, or, where train has none of that domain, the first
     * validation documents, which are then not scored.
     */
    public static List<DomainData> load(Path dir, ShardManifest m, int calibDocs, long maxTokensPerDomain, int maxLen) {
        List<DomainData> out = new ArrayList<>();
        boolean hasTrain = m.splits().containsKey(Split.TRAIN.stem());
        try (TokenShard val = m.open(dir, Split.VAL); TokenShard train = hasTrain ? m.open(dir, Split.TRAIN) : null) {
            for (int dom = 0; dom < m.domains().size(); dom++) {
                String name = m.domains().get(dom);
                List<int[]> calib = train == null ? List.of() : Calibration.domainDocuments(train, dom, calibDocs);
                List<int[]> vdocs = Calibration.domainDocuments(val, dom, Integer.MAX_VALUE);
                String from = "train";
                if (calib.isEmpty()) {
                    calib = new ArrayList<>(vdocs.subList(0, Math.min(calibDocs, vdocs.size())));
                    vdocs = vdocs.subList(calib.size(), vdocs.size());
                    from = "val (not scored)";
                }
                List<int[]> windows = new ArrayList<>();
                long tokens = 0;
                for (int[] w : Calibration.windows(vdocs, maxLen)) {
                    if (tokens >= maxTokensPerDomain) break;
                    if (tokens + w.length > maxTokensPerDomain) w = Arrays.copyOf(w, (int) (maxTokensPerDomain - tokens));
                    if (w.length >= 2) windows.add(w);
                    tokens += w.length;
                }
                out.add(new DomainData(name, windows, Calibration.windows(calib, maxLen), from));
            }
        }
        return out;
    }

    /** Scores every domain under every setting. */
    public static List<Row> run(ModelWeights w, List<DomainData> domains, List<Setting> settings, SubsetMethod method,
                                long seed, Gemm gemm, WorkerPool pool, Progress progress) {
        return run(w, domains, settings, method, seed, gemm, pool, progress, BATCH_TOKENS);
    }

    /**
     * Windows scored per forward: up to this many tokens. Each window is its own sequence from position 0, so its
     * logits are those of a forward over it alone up to the float rounding of the GEMMs' blocking; several at once
     * give the expert products more rows and the pool fewer hand-offs (one window at a time left a fifth of the
     * worker time idle in the study's evaluations).
     */
    static final int BATCH_TOKENS = 2048;

    /**
     * Packs sequences from..from+batch-1 (fewer at the end) of seqs one after another into toks, sequence j at
     * toks[starts[j] .. starts[j+1]) (starts[0] stays 0); returns how many were packed.
     */
    static int pack(List<int[]> seqs, int from, int batch, int[] toks, int[] starts) {
        int nb = Math.min(batch, seqs.size() - from), n = 0;
        for (int j = 0; j < nb; j++) {
            int[] t = seqs.get(from + j);
            System.arraycopy(t, 0, toks, n, t.length);
            n += t.length;
            starts[j + 1] = n;
        }
        return nb;
    }

    /** As {@link #run(ModelWeights, List, List, SubsetMethod, long, Gemm, WorkerPool, Progress)}, batchTokens per forward. */
    static List<Row> run(ModelWeights w, List<DomainData> domains, List<Setting> settings, SubsetMethod method,
                         long seed, Gemm gemm, WorkerPool pool, Progress progress, int batchTokens) {
        ModelConfig c = w.layout().config();
        int maxK = c.routedK(), longest = 1;
        Map<Setting, Integer> values = new LinkedHashMap<>();
        for (Setting s : settings) {
            int v = s.value(c);
            values.put(s, v);
            if (s.kind() == Kind.K) maxK = Math.max(maxK, v);
        }
        for (DomainData d : domains) for (int[] win : d.windows()) longest = Math.max(longest, win.length);
        for (DomainData d : domains) for (int[] win : d.calibration()) longest = Math.max(longest, win.length);
        int most = 1;
        for (DomainData d : domains) most = Math.max(most, d.windows().size());
        int batch = Math.max(1, Math.min(batchTokens / longest, most));
        int[] toks = new int[batch * longest], starts = new int[batch + 1], first = new int[batch], slot = new int[batch];
        for (int j = 0; j < batch; j++) slot[j] = j;
        List<Row> rows = new ArrayList<>();
        try (ForwardRunner run = new ForwardRunner(w, batch * longest, batch, longest, maxK, true, gemm, pool);
             PackedCrossEntropy ces = new PackedCrossEntropy(batch * longest)) {
            for (DomainData d : domains) {
                if (d.windows().isEmpty()) continue;
                for (Setting s : settings) {
                    int v = values.get(s);
                    int[][] kept = null;
                    int[] kpl = null;
                    ExpertSet[] masks = null;
                    run.generationPools(0);
                    // generation pools leave a fixed pool size in the controls; each setting starts from none
                    for (int l = 0; l < c.layers(); l++) run.control(l).noPools();
                    switch (s.kind()) {
                        case FULL -> {
                        }
                        case KEEP -> {
                            if (d.calibration().isEmpty())
                                throw new Moe4jException("eval: domain '" + d.domain() + "' has no calibration document for " + s.name());
                            var sel = SubsetSelector.select(w, d.calibration(), v, method, seed, null, gemm, pool);
                            kept = sel.kept();
                            masks = sel.masks(c);
                        }
                        case K -> {
                            kpl = new int[c.layers()];
                            Arrays.fill(kpl, v);
                        }
                        case POOL -> run.generationPools(v);
                    }
                    run.routing(kpl, masks);
                    double ce = 0;
                    long labels = 0;
                    List<int[]> wins = d.windows();
                    for (int i = 0; i < wins.size(); i += batch) {
                        int nb = pack(wins, i, batch, toks, starts);
                        run.forward(toks, starts, first, slot, nb);
                        ce += ces.sum(run.logits().segment(), c.vocab(), wins, i, starts, nb, pool);
                        for (int j = 0; j < nb; j++) {
                            labels += wins.get(i + j).length - 1;
                            if (progress != null) progress.step(d.domain(), s.name());
                        }
                    }
                    run.generationPools(0);
                    rows.add(new Row(d.domain(), s.name(), labels, ce / labels, kept));
                }
            }
        }
        return rows;
    }

    /**
     * Σ_t (logsumexp(logits[t]) - logits[t][tokens[t+1]]) over t < n - 1, in float64; logits [n, V] from element
     * {@code from} of the segment. The plain twin of {@link PackedCrossEntropy} (which scores the runs).
     */
    static double crossEntropySum(MemorySegment logits, long from, int[] tokens, int V) {
        double sum = 0;
        for (int t = 0; t + 1 < tokens.length; t++) {
            long row = from + (long) t * V;
            double max = Double.NEGATIVE_INFINITY;
            for (int v = 0; v < V; v++) max = Math.max(max, logits.getAtIndex(Tensor.FLOAT, row + v));
            double z = 0;
            for (int v = 0; v < V; v++) z += Math.exp(logits.getAtIndex(Tensor.FLOAT, row + v) - max);
            sum += max + Math.log(z) - logits.getAtIndex(Tensor.FLOAT, row + tokens[t + 1]);
        }
        return sum;
    }

    /** The console table: one row per domain, perplexity per setting. */
    public static String table(List<Row> rows, List<Setting> settings) {
        Map<String, Map<String, Row>> byDomain = new LinkedHashMap<>();
        for (Row r : rows) byDomain.computeIfAbsent(r.domain(), k -> new LinkedHashMap<>()).put(r.setting(), r);
        int w0 = "domain".length();
        for (String d : byDomain.keySet()) w0 = Math.max(w0, d.length());
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "%-" + w0 + "s %10s", "domain", "labels"));
        for (Setting s : settings) b.append(String.format(Locale.ROOT, " %12s", s.name()));
        b.append("   (perplexity)\n");
        for (var e : byDomain.entrySet()) {
            long labels = e.getValue().values().iterator().next().labels();
            b.append(String.format(Locale.ROOT, "%-" + w0 + "s %10d", e.getKey(), labels));
            for (Setting s : settings) {
                Row r = e.getValue().get(s.name());
                b.append(String.format(Locale.ROOT, " %12.3f", r == null ? Double.NaN : r.perplexity()));
            }
            b.append('\n');
        }
        return b.toString();
    }
}
