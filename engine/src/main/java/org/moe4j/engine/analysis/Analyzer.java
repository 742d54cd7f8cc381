package org.moe4j.engine.analysis;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.function.LongConsumer;
import org.knowm.xchart.CategoryChart;
import org.knowm.xchart.XYChart;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.ModelWeights;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.engine.train.MetricsLog;
import org.moe4j.engine.train.RoutingSnapshots;
import org.moe4j.io.safetensors.SafetensorsFile;
import org.moe4j.io.tokenizer.BpeTokenizer;
import org.moe4j.io.corpus.TokenShard;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * {@code ./moe4j analyze}: routes tokens of a shard through a checkpoint and writes one CSV per analysis and
 * {@code index.html}, a self-contained page (charts inlined as base64 PNG) — ALGORITHMS.md section 6.
 */
public final class Analyzer {
    /**
     * @param tokens         tokens to route (in windows of seq)
     * @param capacityFactor the capacity factor of the drop analysis
     * @param clusterTokens  tokens clustered (PCA + spherical k-means)
     * @param snapshotTokens tokens routed per routing snapshot
     * @param minCount       occurrences for an id to count in the token-id statistics
     */
    public record Options(long tokens, int seq, int batch, double capacityFactor, int clusterTokens, int clusters,
                          long snapshotTokens, long minCount, long seed) {
        public static Options defaults() {
            return new Options(262_144, 128, 16, 1.0, 16_384, 32, 65_536, 128, 1);
        }

        public Options withTokens(long n) {
            return new Options(n, seq, batch, capacityFactor, clusterTokens, clusters, snapshotTokens, minCount, seed);
        }

        public Options withSnapshotTokens(long n) {
            return new Options(tokens, seq, batch, capacityFactor, clusterTokens, clusters, n, minCount, seed);
        }
    }

    /** Where the page went and what it holds. */
    public record Report(Path page, List<Path> csv, int charts, long tokens, double seconds) {
    }

    private final ModelConfig c;
    private final ModelWeights weights;
    private final BpeTokenizer tokenizer;
    private final TokenShard shard;
    private final List<String> domains;
    private final Gemm gemm;
    private final WorkerPool pool;
    private final Options o;

    public Analyzer(ModelConfig c, ModelWeights weights, BpeTokenizer tokenizer, TokenShard shard, List<String> domains,
                    Gemm gemm, WorkerPool pool, Options o) {
        this.c = c;
        this.weights = weights;
        this.tokenizer = tokenizer;
        this.shard = shard;
        this.domains = domains;
        this.gemm = gemm;
        this.pool = pool;
        this.o = o;
    }

    /**
     * Runs every analysis and writes {@code out/index.html} and the CSVs; {@code run} (may be null) holds
     * metrics.jsonl and routing-snapshots/; {@code progress} is told the tokens routed (total: {@link #plannedTokens}).
     */
    public Report run(Path run, Path out, LongConsumer progress) {
        long t0 = System.nanoTime();
        int L = c.layers(), E = c.routedExperts(), D = domains.size();
        try {
            Files.createDirectories(out);
        } catch (IOException e) {
            throw new Moe4jException("--out " + out + ": cannot create the folder: " + e.getMessage(), e);
        }
        int seq = seq();
        RoutingPass pass = new RoutingPass(c, shard, seq, o.tokens(), o.batch());
        RoutingPass.Sinks s = new RoutingPass.Sinks();
        s.byId = new ExpertCounts[L];
        s.byPosition = new ExpertCounts[L];
        s.usage = new DomainExpertUsage[L];
        for (int l = 0; l < L; l++) {
            s.byId[l] = new ExpertCounts(c.vocab(), E);
            s.byPosition[l] = new ExpertCounts(seq, E);
            s.usage[l] = new DomainExpertUsage(Math.max(1, D), E);
        }
        int clusterRows = (int) Math.min(o.clusterTokens(), pass.tokens());
        int clusterWindows = Math.max(1, clusterRows / seq);
        clusterRows = clusterWindows * seq;
        s.features = new float[clusterRows * L * E];
        s.featureDomain = new int[clusterRows];
        s.featureDocument = new int[clusterRows];
        s.featureToken = new int[clusterRows];
        s.clusterEvery = Math.max(1, pass.windows() / clusterWindows);
        pass.run(weights, gemm, pool, pass.windows(), 0, s, progress);

        Page page = new Page(c, pass.tokens(), shard.path().toString());
        List<Path> csv = new ArrayList<>();
        specialisation(s, seq, out, page, csv);
        earlyRouting(run, pass, out, page, csv, progress);
        drops(pass, seq, out, page, csv, progress);
        clusters(s, out, page, csv);
        usage(s, out, page, csv);
        training(run, out, page, csv);
        Path html = out.resolve("index.html");
        writeAtomically(html, page.html());
        return new Report(html, csv, page.charts, pass.tokens(), (System.nanoTime() - t0) * 1e-9);
    }

    /** The window: --seq, at most the model's longest sequence and the shard's length (a small val split). */
    private int seq() {
        return (int) Math.max(2, Math.min(Math.min(o.seq(), c.maxSeq()), shard.tokenCount()));
    }

    /** Tokens the analysis routes in all (main pass, drop pass, snapshot passes), for a progress bar. */
    public long plannedTokens(Path run) {
        int seq = seq();
        RoutingPass pass = new RoutingPass(c, shard, seq, o.tokens(), o.batch());
        long n = pass.tokens() + dropWindows(pass) * (long) seq;
        if (run != null) n += RoutingSnapshots.list(run).size() * (long) snapshotWindows(pass) * seq;
        return n;
    }

    private int dropWindows(RoutingPass pass) {
        return o.capacityFactor() > 0 ? pass.windows() : 0;
    }

    private int snapshotWindows(RoutingPass pass) {
        return (int) Math.max(1, Math.min(pass.windows(), o.snapshotTokens() / pass.seq()));
    }

    private String tokenText(int id) {
        if (tokenizer == null) return "";
        try {
            return tokenizer.decode(new int[] {id});
        } catch (RuntimeException e) {
            return "";
        }
    }

    private void specialisation(RoutingPass.Sinks s, int seq, Path out, Page page, List<Path> csv) {
        int L = c.layers(), E = c.routedExperts();
        StringBuilder ids = new StringBuilder("layer,token_id,token,occurrences,spread,max_share,top1");
        for (int e = 0; e < E; e++) ids.append(",share_e").append(e);
        ids.append('\n');
        StringBuilder pos = new StringBuilder("layer,position,occurrences,spread,max_share,top1\n");
        StringBuilder sum = new StringBuilder("layer,consistency,mean_spread_token_ids,mean_spread_positions,ids_counted\n");
        StringBuilder top = new StringBuilder("layer,expert,rank,token_id,token,assignments\n");
        double[] cons = new double[L], spId = new double[L], spPos = new double[L];
        StringBuilder topHtml = new StringBuilder("<table><tr><th>layer</th><th>expert</th><th>top tokens (assignments)</th></tr>");
        for (int l = 0; l < L; l++) {
            ExpertCounts t = s.byId[l], p = s.byPosition[l];
            int counted = 0;
            for (int v = 0; v < t.keys; v++) {
                if (!t.eligible(v, o.minCount())) continue;
                counted++;
                ids.append(l).append(',').append(v).append(',').append(Csv.quote(tokenText(v))).append(',').append(t.occurrences[v])
                        .append(',').append(Csv.num(t.spread(v))).append(',').append(Csv.num(t.maxShare(v))).append(',').append(t.top1(v));
                for (int e = 0; e < E; e++) ids.append(',').append(Csv.num(t.share(v, e)));
                ids.append('\n');
            }
            for (int q = 0; q < seq; q++)
                pos.append(l).append(',').append(q).append(',').append(p.occurrences[q]).append(',').append(Csv.num(p.spread(q)))
                        .append(',').append(Csv.num(p.maxShare(q))).append(',').append(p.top1(q)).append('\n');
            cons[l] = t.consistency(o.minCount());
            spId[l] = t.meanSpread(o.minCount());
            spPos[l] = p.meanSpread(1);
            sum.append(l).append(',').append(Csv.num(cons[l])).append(',').append(Csv.num(spId[l])).append(',')
                    .append(Csv.num(spPos[l])).append(',').append(counted).append('\n');
            for (int e = 0; e < E; e++) {
                int[] best = t.topKeys(e, 10);
                topHtml.append("<tr><td>").append(l).append("</td><td>").append(e).append("</td><td>");
                for (int r = 0; r < best.length; r++) {
                    String txt = tokenText(best[r]);
                    top.append(l).append(',').append(e).append(',').append(r + 1).append(',').append(best[r]).append(',')
                            .append(Csv.quote(txt)).append(',').append(t.counts[best[r] * E + e]).append('\n');
                    topHtml.append(r == 0 ? "" : " · ").append("<code>").append(Page.escape(txt.isEmpty() ? "#" + best[r] : show(txt)))
                            .append("</code> (").append(t.counts[best[r] * E + e]).append(')');
                }
                topHtml.append("</td></tr>");
            }
        }
        topHtml.append("</table>");
        csv.add(Csv.write(out.resolve("token_specialisation.csv"), ids));
        csv.add(Csv.write(out.resolve("position_specialisation.csv"), pos));
        csv.add(Csv.write(out.resolve("specialisation_summary.csv"), sum));
        csv.add(Csv.write(out.resolve("top_tokens.csv"), top));
        CategoryChart ch = Charts.bars("Spread of r over experts: token ids vs positions", "layer", "count-weighted mean std");
        List<String> layers = new ArrayList<>();
        for (int l = 0; l < L; l++) layers.add("layer " + l);
        ch.addSeries("token ids (n >= " + o.minCount() + ")", layers, finite(spId));
        ch.addSeries("positions", layers, finite(spPos));
        CategoryChart cc = Charts.bars("Token-id consistency: count-weighted mean of max_e r_v[e]", "layer", "consistency");
        cc.addSeries("consistency", layers, finite(cons));
        page.section("Token-id specialisation",
                "Per token id seen at least " + o.minCount() + " times, the share r_v[e] of its assignments per expert. "
                        + "A larger spread for ids than for positions means routing follows the token id (OpenMoE).",
                List.of(ch, cc), "token_specialisation.csv, position_specialisation.csv, specialisation_summary.csv, top_tokens.csv");
        page.html("<h3>Top tokens per expert</h3>" + topHtml);
    }

    private static String show(String s) {
        return s.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "␣");
    }

    private void earlyRouting(Path run, RoutingPass pass, Path out, Page page, List<Path> csv, LongConsumer progress) {
        List<RoutingSnapshots.Snapshot> snaps = run == null ? List.of() : RoutingSnapshots.list(run);
        if (snaps.size() < 2) {
            page.section("Early routing learning", run == null
                    ? "Needs --run DIR: a run folder with routing-snapshots/ (train --out DIR --keep-checkpoints N writes DIR.run)."
                    : run + ": " + snaps.size() + " routing snapshot(s); two or more are needed.", List.of(), null);
            return;
        }
        int L = c.layers(), E = c.routedExperts(), n = snapshotWindows(pass);
        ExpertCounts[][] tables = new ExpertCounts[snaps.size()][];
        ParamLayout layout = weights.layout();
        try (Arena arena = Arena.ofShared()) { // the worker pool's threads read these weights
            MemorySegment flat = arena.allocate(layout.total() * Float.BYTES, Tensor.ALIGNMENT);
            copyF32(flat);
            for (int i = 0; i < snaps.size(); i++) {
                try (SafetensorsFile f = SafetensorsFile.open(snaps.get(i).file())) {
                    for (int l = 0; l < L; l++) {
                        ParamLayout.Entry e = layout.entry(ParamLayout.router(l));
                        if (!f.contains(e.name()))
                            throw new Moe4jException(snaps.get(i).file() + ": no tensor '" + e.name() + "'");
                        try (Arena a = Arena.ofConfined()) {
                            Tensor t = f.tensorF32(e.name(), a);
                            if (t.segment().byteSize() != e.numel() * Float.BYTES)
                                throw new Moe4jException(snaps.get(i).file() + ": tensor '" + e.name() + "' has "
                                        + t.segment().byteSize() / 4 + " values, the checkpoint's router has " + e.numel());
                            MemorySegment.copy(t.segment(), 0, flat, e.offset() * Float.BYTES, e.numel() * Float.BYTES);
                        }
                    }
                }
                RoutingPass.Sinks s = new RoutingPass.Sinks();
                s.byId = new ExpertCounts[L];
                for (int l = 0; l < L; l++) s.byId[l] = new ExpertCounts(c.vocab(), E);
                try (ModelWeights w = ModelWeights.f32(layout, flat)) {
                    pass.run(w, gemm, pool, n, 0, s, progress);
                }
                tables[i] = s.byId;
            }
        }
        int last = snaps.size() - 1;
        StringBuilder sb = new StringBuilder("step,layer,top1_agreement,jsd_bits,chance_top1_agreement,chance_jsd_bits,ids\n");
        XYChart agree = Charts.lines("Top-1 agreement with the last snapshot (step " + snaps.get(last).step() + ")", "step", "agreement (n_v weighted)");
        XYChart jsd = Charts.lines("Jensen–Shannon divergence from the last snapshot", "step", "mean JSD (bits)");
        double[] x = new double[snaps.size()];
        for (int i = 0; i < x.length; i++) x[i] = snaps.get(i).step();
        for (int l = 0; l < L; l++) {
            double[] a = new double[x.length], j = new double[x.length], ca = new double[x.length], cj = new double[x.length];
            for (int i = 0; i < x.length; i++) {
                EarlyRouting.Result r = EarlyRouting.compare(tables[i][l], tables[last][l], o.minCount());
                EarlyRouting.Result ch = EarlyRouting.chance(tables[i][l], tables[last][l], o.minCount(), o.seed() + l);
                a[i] = r.agreement();
                j[i] = r.jsd();
                ca[i] = ch.agreement();
                cj[i] = ch.jsd();
                sb.append(snaps.get(i).step()).append(',').append(l).append(',').append(Csv.num(a[i])).append(',').append(Csv.num(j[i]))
                        .append(',').append(Csv.num(ca[i])).append(',').append(Csv.num(cj[i])).append(',').append(r.ids()).append('\n');
            }
            Charts.line(agree, "layer " + l, x, a, false);
            Charts.line(agree, "layer " + l + " chance", x, ca, true);
            Charts.line(jsd, "layer " + l, x, j, false);
            Charts.line(jsd, "layer " + l + " chance", x, cj, true);
        }
        csv.add(Csv.write(out.resolve("early_routing.csv"), sb));
        page.section("Early routing learning",
                "Each routing snapshot's routers, applied in the final checkpoint's model to the same " + (long) n * pass.seq()
                        + " tokens; its token-id table compared with the last snapshot's. Dashed: the same with the earlier "
                        + "table's rows shuffled among ids (chance).", List.of(agree, jsd), "early_routing.csv");
    }

    /** Copies the loaded weights as a flat F32 buffer in layout order (BF16 matrices are widened). */
    private void copyF32(MemorySegment flat) {
        ParamLayout layout = weights.layout();
        if (!weights.bf16()) {
            MemorySegment.copy(weights.matrices(), 0, flat, 0, layout.total() * Float.BYTES);
            return;
        }
        throw new Moe4jException("analyze: early routing needs F32 weights (load the checkpoint with F32 matrices)");
    }

    private void drops(RoutingPass pass, int seq, Path out, Page page, List<Path> csv, LongConsumer progress) {
        int L = c.layers();
        if (o.capacityFactor() <= 0) {
            page.section("Drops towards the end", "Off (--capacity-factor 0).", List.of(), null);
            return;
        }
        RoutingPass.Sinks s = new RoutingPass.Sinks();
        s.drops = new DropsByPosition[L];
        for (int l = 0; l < L; l++) s.drops[l] = new DropsByPosition(seq);
        pass.run(weights, gemm, pool, dropWindows(pass), o.capacityFactor(), s, progress);
        StringBuilder sb = new StringBuilder("layer,position,assigned,dropped,share\n");
        XYChart ch = Charts.lines(String.format(Locale.ROOT, "Share of assignments dropped per position (capacity factor %.2f)",
                o.capacityFactor()), "position in the sequence", "dropped share");
        double[] x = new double[seq];
        for (int p = 0; p < seq; p++) x[p] = p;
        for (int l = 0; l < L; l++) {
            double[] y = new double[seq];
            for (int p = 0; p < seq; p++) {
                y[p] = s.drops[l].share(p);
                sb.append(l).append(',').append(p).append(',').append(s.drops[l].assigned[p]).append(',')
                        .append(s.drops[l].dropped[p]).append(',').append(Csv.num(y[p])).append('\n');
            }
            Charts.line(ch, "layer " + l, x, y, false);
        }
        csv.add(Csv.write(out.resolve("drops_by_position.csv"), sb));
        page.section("Drops towards the end", "Each window is one routing group; first choices claim capacity before "
                + "second choices, each in token order, so later positions are dropped more (OpenMoE).", List.of(ch), "drops_by_position.csv");
    }

    private void clusters(RoutingPass.Sinks s, Path out, Page page, List<Path> csv) {
        int n = s.featureRows, Df = c.layers() * c.routedExperts(), D = Math.max(1, domains.size());
        Pca pca = Pca.fit(s.features, n, Df);
        int m = pca.componentsFor(0.95);
        float[] y = pca.project(s.features, n, m);
        float[] xy = pca.project(s.features, n, Math.min(2, Df));
        SphericalKMeans.normalizeRows(y, n, m);
        SphericalKMeans.Result km = SphericalKMeans.fit(y, n, m, o.clusters(), o.seed(), 100);
        double[] purity = ClusterScores.domainPurity(km.assignment(), s.featureDomain, n, km.k(), D);
        double coherence = ClusterScores.documentCoherence(km.assignment(), s.featureDocument, n, km.k(), s.featureDocuments, 8);
        long[] nd = new long[D];
        for (int i = 0; i < n; i++) nd[s.featureDomain[i]]++;
        StringBuilder sb = new StringBuilder("domain,tokens,purity,chance\n");
        List<String> names = new ArrayList<>();
        List<Double> pur = new ArrayList<>(), chance = new ArrayList<>();
        for (int d = 0; d < D; d++) {
            if (nd[d] == 0) continue;
            String name = d < domains.size() ? domains.get(d) : "domain " + d;
            double ch = (double) nd[d] / n;
            sb.append(Csv.quote(name)).append(',').append(nd[d]).append(',').append(Csv.num(purity[d])).append(',').append(Csv.num(ch)).append('\n');
            names.add(name);
            pur.add(purity[d]);
            chance.add(ch);
        }
        csv.add(Csv.write(out.resolve("cluster_purity.csv"), sb));
        StringBuilder tok = new StringBuilder("row,token_id,domain,document,cluster,pc1,pc2\n");
        for (int i = 0; i < n; i++)
            tok.append(i).append(',').append(s.featureToken[i]).append(',').append(s.featureDomain[i]).append(',')
                    .append(s.featureDocument[i]).append(',').append(km.assignment()[i]).append(',').append(Csv.num(xy[i * Math.min(2, Df)]))
                    .append(',').append(Df > 1 ? Csv.num(xy[i * 2 + 1]) : "0").append('\n');
        csv.add(Csv.write(out.resolve("token_clusters.csv"), tok));
        String summary = String.format(Locale.ROOT, "clusters,%d%npca_components,%d%nfeatures,%d%ntokens,%d%ndocument_coherence,%s%nkmeans_iterations,%d%n",
                km.k(), m, Df, n, Csv.num(coherence), km.iterations());
        csv.add(Csv.write(out.resolve("cluster_summary.csv"), new StringBuilder("name,value\n" + summary)));
        CategoryChart pc = Charts.bars("Domain purity of the token clusters", "domain", "mean same-domain share of a token's cluster");
        pc.addSeries("purity", names, pur);
        pc.addSeries("chance (domain share)", names, chance);
        XYChart sc = Charts.scatter("Tokens by routing (first two principal components)", "PC 1", "PC 2");
        int stride = Math.max(1, n / 4000);
        for (int d = 0; d < D; d++) {
            List<Double> px = new ArrayList<>(), py = new ArrayList<>();
            for (int i = 0; i < n; i += stride)
                if (s.featureDomain[i] == d) {
                    px.add((double) xy[i * Math.min(2, Df)]);
                    py.add(Df > 1 ? (double) xy[i * 2 + 1] : 0.0);
                }
            if (!px.isEmpty()) sc.addSeries(d < domains.size() ? domains.get(d) : "domain " + d, px, py);
        }
        page.section("Token clusters", String.format(Locale.ROOT,
                "%d tokens described by their routed softmax in all %d layers (%d values), centred, PCA to 95%% variance "
                        + "(%d components), L2-normalised, spherical k-means with %d clusters. Document coherence (share of a "
                        + "document's tokens in its most common cluster, documents with 8+ tokens): %.3f.",
                n, c.layers(), Df, m, km.k(), coherence), List.of(pc, sc), "cluster_purity.csv, cluster_summary.csv, token_clusters.csv");
    }

    private void usage(RoutingPass.Sinks s, Path out, Page page, List<Path> csv) {
        int L = c.layers(), E = c.routedExperts(), D = Math.max(1, domains.size());
        StringBuilder sb = new StringBuilder("layer,domain,expert,mean_prob,pick_rate\n");
        List<String> cols = new ArrayList<>(), rows = new ArrayList<>();
        for (int e = 0; e < E; e++) cols.add(Integer.toString(e));
        List<Integer> present = new ArrayList<>();
        for (int d = 0; d < D; d++) {
            if (s.usage[0].tokens[d] == 0) continue;
            present.add(d);
            rows.add(d < domains.size() ? domains.get(d) : "domain " + d);
        }
        List<Object> charts = new ArrayList<>();
        for (int l = 0; l < L; l++) {
            double[][] p = new double[present.size()][E], f = new double[present.size()][E];
            for (int i = 0; i < present.size(); i++) {
                int d = present.get(i);
                for (int e = 0; e < E; e++) {
                    p[i][e] = s.usage[l].meanProb(d, e);
                    f[i][e] = s.usage[l].pickRate(d, e);
                    sb.append(l).append(',').append(Csv.quote(rows.get(i))).append(',').append(e).append(',')
                            .append(Csv.num(p[i][e])).append(',').append(Csv.num(f[i][e])).append('\n');
                }
            }
            if (present.isEmpty()) continue;
            charts.add(Charts.heatmap("layer " + l + ": mean router probability", cols, rows, p));
            charts.add(Charts.heatmap("layer " + l + ": top-k frequency", cols, rows, f));
        }
        csv.add(Csv.write(out.resolve("domain_expert.csv"), sb));
        page.section("Domain × expert usage", "Per domain and layer: each expert's mean routed probability, and the share "
                + "of the domain's tokens that picked it among their k' routed experts.", charts, "domain_expert.csv");
    }

    private void training(Path run, Path out, Page page, List<Path> csv) {
        Path f = run == null ? null : run.resolve(MetricsLog.FILE_NAME);
        if (f == null || !Files.exists(f)) {
            page.section("Training curves", run == null ? "Needs --run DIR (a folder with " + MetricsLog.FILE_NAME + ")."
                    : f + " is missing (trained before metrics logs existed?).", List.of(), null);
            return;
        }
        List<JsonNode> rows = MetricsLog.read(f);
        List<JsonNode> steps = new ArrayList<>(), vals = new ArrayList<>();
        for (JsonNode r : rows) (r.has("val_ce") ? vals : steps).add(r);
        if (steps.isEmpty()) {
            page.section("Training curves", f + " holds no step.", List.of(), null);
            return;
        }
        double[] x = new double[steps.size()];
        for (int i = 0; i < x.length; i++) x[i] = steps.get(i).path("step").asDouble();
        XYChart loss = Charts.lines("Loss and its parts", "step", "value");
        for (String k : new String[] {"loss", "ce", "lb", "z", "erc"}) Charts.line(loss, k, x, column(steps, k, -1), false);
        if (!vals.isEmpty()) {
            double[] vx = new double[vals.size()];
            for (int i = 0; i < vx.length; i++) vx[i] = vals.get(i).path("step").asDouble();
            Charts.line(loss, "val ce", vx, column(vals, "val_ce", -1), true);
        }
        int L = c.layers();
        XYChart eps = Charts.lines("ERC ε per layer", "step", "ε");
        XYChart load = Charts.lines("Expert load balance per layer (share of assignments)", "step", "min / max share");
        for (int l = 0; l < L; l++) {
            Charts.line(eps, "layer " + l, x, column(steps, "erc_eps", l), false);
            Charts.line(load, "layer " + l + " max", x, column(steps, "load_max", l), false);
            Charts.line(load, "layer " + l + " min", x, column(steps, "load_min", l), true);
        }
        List<Object> charts = new ArrayList<>(List.of(loss, load));
        boolean anyEps = false;
        for (int l = 0; l < L; l++) for (double v : column(steps, "erc_eps", l)) anyEps |= Double.isFinite(v);
        if (anyEps) charts.add(eps); // ERC off: no ε to draw
        StringBuilder sb = new StringBuilder("step,loss,ce,lb,z,erc,lr,grad_norm,tokens_per_s");
        for (int l = 0; l < L; l++) sb.append(",erc_eps_").append(l).append(",load_min_").append(l).append(",load_max_").append(l);
        sb.append('\n');
        for (JsonNode r : steps) {
            sb.append(r.path("step").asLong());
            for (String k : new String[] {"loss", "ce", "lb", "z", "erc", "lr", "grad_norm", "tokens_per_s"})
                sb.append(',').append(Csv.num(value(r.path(k))));
            for (int l = 0; l < L; l++)
                sb.append(',').append(Csv.num(value(r.path("erc_eps").path(l)))).append(',').append(Csv.num(value(r.path("load_min").path(l))))
                        .append(',').append(Csv.num(value(r.path("load_max").path(l))));
            sb.append('\n');
        }
        csv.add(Csv.write(out.resolve("training_curves.csv"), sb));
        page.section("Training curves", "From " + f + " (" + steps.size() + " steps, " + vals.size() + " validations).",
                charts, "training_curves.csv");
    }

    private static double value(JsonNode n) {
        return n.isNumber() ? n.asDouble() : Double.NaN;
    }

    private static double[] column(List<JsonNode> rows, String key, int index) {
        double[] y = new double[rows.size()];
        for (int i = 0; i < y.length; i++) y[i] = value(index < 0 ? rows.get(i).path(key) : rows.get(i).path(key).path(index));
        return y;
    }

    private static List<Double> finite(double[] v) {
        List<Double> out = new ArrayList<>();
        for (double x : v) out.add(Double.isFinite(x) ? x : 0.0);
        return out;
    }

    static void writeAtomically(Path file, String text) {
        try {
            org.moe4j.io.AtomicFile.write(file, text.getBytes(StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new Moe4jException(file + ": cannot write: " + e.getMessage(), e);
        }
    }

    /** CSV cells. */
    static final class Csv {
        private Csv() {
        }

        static String num(double v) {
            return Double.isFinite(v) ? String.format(Locale.ROOT, "%.6g", v) : "";
        }

        static String quote(String s) {
            return "\"" + s.replace("\"", "\"\"") + "\"";
        }

        static Path write(Path file, CharSequence text) {
            writeAtomically(file, text.toString());
            return file;
        }
    }

    /** The report page: sections of text and inline charts. */
    static final class Page {
        private final StringWriter body = new StringWriter();
        private final PrintWriter w = new PrintWriter(body);
        int charts;

        Page(ModelConfig c, long tokens, String source) {
            w.printf(Locale.ROOT, "<p>%d layers, %d routed experts (k %d), vocabulary %d; %,d tokens of %s.</p>%n",
                    c.layers(), c.routedExperts(), c.routedK(), c.vocab(), tokens, escape(source));
        }

        void section(String title, String text, List<?> chartList, String files) {
            w.printf("<section><h2>%s</h2><p>%s</p>%n", escape(title), escape(text));
            for (Object o : chartList) {
                org.knowm.xchart.internal.chartpart.Chart<?, ?> ch = (org.knowm.xchart.internal.chartpart.Chart<?, ?>) o;
                w.printf(Locale.ROOT, "<img class=\"chart\" alt=\"%s\" width=\"%d\" height=\"%d\" src=\"data:image/png;base64,%s\">%n",
                        escape(ch.getTitle()), ch.getWidth(), ch.getHeight(), Charts.png(ch));
                charts++;
            }
            if (files != null) w.printf("<p class=\"files\">CSV: %s</p>%n", escape(files));
            w.println("</section>");
        }

        void html(String raw) {
            w.println(raw);
        }

        String html() {
            w.flush();
            return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>moe4j routing report</title>\n"
                    + "<style>body{font-family:sans-serif;max-width:1500px;margin:1em auto;padding:0 1em;color:#222}"
                    + "img.chart{margin:4px;border:1px solid #ddd;vertical-align:top}table{border-collapse:collapse;font-size:13px}"
                    + "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}code{background:#f4f4f4}.files{color:#666;font-size:13px}"
                    + "</style></head><body><h1>What the router learned</h1>\n" + body
                    // marks each chart with the size it was decoded at, so a headless browser's DOM shows it was drawn
                    + "<script>window.addEventListener('load',()=>{for(const i of document.images)"
                    + "i.dataset.drawn=i.naturalWidth+'x'+i.naturalHeight;document.body.dataset.loaded='yes';});</script>\n"
                    + "</body></html>\n";
        }

        static String escape(String s) {
            return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\"", "&quot;");
        }
    }
}
