package org.moe4j.engine.subset;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.ForwardRunner;
import org.moe4j.engine.model.ModelWeights;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.WorkerPool;

/**
 * {@code select --budget}: sweeps K (E, E/2, E/4, ... down to s + 1) and a routed k' for every layer (1 .. the trained
 * k'), plus, for each K whose k' is 2 or more, two settings with k' one lower in some layers only (the first half of
 * the layers, then the second half: where a smaller k' costs least shows on the front), each K's subset chosen on
 * the selection part of the calibration documents, and measures on the held-out part
 * (the last quarter of the windows, or the second half of a single window) by teacher-forced decoding with the KV
 * cache: calibration perplexity and decode tokens/s. Resident memory is the weights a setting keeps resident,
 * non-expert weights plus K/E of the expert weights at the model's precision, which SubsetMemoryBench measures to
 * within a few percent. The Pareto front (no other point has lower memory, lower perplexity and higher tokens/s
 * at once) is reported; the choice is the lowest perplexity that fits the budget, ties to the faster one.
 */
public final class BudgetSweep {
    private BudgetSweep() {
    }

    /** One setting measured: K experts per layer, k'_l routed picks in layer l. */
    public record Point(int keep, int[] kPerLayer, long memoryBytes, double perplexity, double decodeTokensPerSecond,
                        boolean pareto, SubsetSelector.Selection selection) {
        public Point {
            kPerLayer = kPerLayer.clone();
        }

        @Override
        public int[] kPerLayer() {
            return kPerLayer.clone();
        }

        /** The largest k'_l. */
        public int routedK() {
            return Arrays.stream(kPerLayer).max().orElse(0);
        }

        /** Whether every layer routes the same k'. */
        public boolean uniformK() {
            return Arrays.stream(kPerLayer).allMatch(v -> v == kPerLayer[0]);
        }

        /** k' as a table shows it: one number, or k'_l per layer joined by '/'. */
        public String kLabel() {
            if (uniformK()) return Integer.toString(kPerLayer[0]);
            StringBuilder b = new StringBuilder();
            for (int i = 0; i < kPerLayer.length; i++) b.append(i == 0 ? "" : "/").append(kPerLayer[i]);
            return b.toString();
        }
    }

    /**
     * The k' settings swept for a K that allows up to {@code maxK} routed picks: 1 .. maxK in every layer, then
     * (maxK >= 2, two layers or more) maxK - 1 in the first half of the layers and maxK in the rest, and the reverse.
     */
    static List<int[]> kSettings(int layers, int maxK) {
        List<int[]> out = new ArrayList<>();
        for (int k = 1; k <= maxK; k++) {
            int[] kpl = new int[layers];
            Arrays.fill(kpl, k);
            out.add(kpl);
        }
        if (maxK >= 2 && layers >= 2) {
            int half = layers / 2;
            int[] first = new int[layers], second = new int[layers];
            for (int l = 0; l < layers; l++) {
                first[l] = l < half ? maxK - 1 : maxK;
                second[l] = l < half ? maxK : maxK - 1;
            }
            out.add(first);
            out.add(second);
        }
        return out;
    }

    /** Parses 200MB, 1.5GB, 512MiB, 1000000 (bytes). */
    public static long parseBytes(String s, String option) {
        String t = s.trim().toUpperCase(Locale.ROOT);
        long mult = 1;
        String[][] units = {{"GIB", "1073741824"}, {"MIB", "1048576"}, {"KIB", "1024"}, {"GB", "1000000000"},
                {"MB", "1000000"}, {"KB", "1000"}, {"B", "1"}};
        for (String[] u : units) {
            if (t.endsWith(u[0])) {
                mult = Long.parseLong(u[1]);
                t = t.substring(0, t.length() - u[0].length()).trim();
                break;
            }
        }
        try {
            double v = Double.parseDouble(t);
            if (!(v > 0) || Double.isInfinite(v)) throw new NumberFormatException();
            return (long) (v * mult);
        } catch (NumberFormatException e) {
            throw new Moe4jException(option + " " + s + ": expected a size such as 200MB, 1.5GB or 512MiB");
        }
    }

    /**
     * Bytes of the weights that stay resident with K of E experts per layer, at {@code bytesPerWeight}; on a model with
     * E_l experts per layer, min(K, E_l) of layer l's.
     */
    public static long memory(ModelConfig c, int keep, int bytesPerWeight) {
        long expert = 0, all = 0;
        double kept = 0;
        for (ParamLayout.Entry e : new ParamLayout(c).entries()) {
            all += e.numel();
            if (e.name().contains(".mlp.experts.")) {
                expert += e.numel();
                int l = Integer.parseInt(e.name().split("\\.")[2]);
                kept += (double) Math.min(keep, c.experts(l)) / c.experts(l) * e.numel();
            }
        }
        if (c.layerExperts() == null) kept = (double) keep / c.experts() * expert; // the same sum, as it always was rounded
        return (long) ((all - expert + kept) * bytesPerWeight);
    }

    public static List<Point> sweep(ModelWeights w, List<int[]> calibration, SubsetMethod method, long seed, Gemm gemm,
                                    WorkerPool pool) {
        ModelConfig c = w.layout().config();
        List<int[]> select = new ArrayList<>(), heldOut = new ArrayList<>();
        if (calibration.size() == 1) {
            int[] d = calibration.get(0);
            if (d.length < 4)
                throw new Moe4jException("--budget: the calibration has " + d.length + " tokens; at least 4 are needed to "
                        + "hold some out");
            select.add(Arrays.copyOf(d, d.length / 2));
            heldOut.add(Arrays.copyOfRange(d, d.length / 2, d.length));
        } else {
            int held = Math.max(1, calibration.size() / 4);
            select.addAll(calibration.subList(0, calibration.size() - held));
            heldOut.addAll(calibration.subList(calibration.size() - held, calibration.size()));
        }
        int longest = 1;
        for (int[] d : heldOut) longest = Math.max(longest, d.length);
        int bytes = w.bf16() ? 2 : 4, s = c.sharedExperts();
        List<Point> points = new ArrayList<>();
        List<Integer> keeps = new ArrayList<>();
        for (int k = c.experts(); k >= s + 1; k /= 2) {
            keeps.add(k);
            if (k == s + 1) break;
            if (k / 2 < s + 1) keeps.add(s + 1);
        }
        try (ForwardRunner run = new ForwardRunner(w, 1, 1, longest, c.routedK(), false, gemm, pool);
             PackedCrossEntropy ces = new PackedCrossEntropy(1)) {
            // one untimed pass first, so that the first setting is not timed while the JIT compiles the decode path
            int[] d0 = heldOut.get(0);
            for (int t = 0; t < d0.length; t++) run.forward(new int[] {d0[t]}, new int[] {0, 1}, new int[] {t}, new int[] {0}, 1);
            for (int keep : keeps.stream().distinct().toList()) {
                SubsetSelector.Selection sel = keep == c.experts() ? null
                        : SubsetSelector.select(w, select, keep, method, seed, null, gemm, pool);
                for (int[] kpl : kSettings(c.layers(), Math.min(c.routedK(), keep - s))) {
                    run.routing(kpl, sel == null ? null : sel.masks(c));
                    double ce = 0;
                    long labels = 0, nanos = 0;
                    int[] one = new int[1], starts = {0, 1}, pos = {0}, slot = {0};
                    for (int[] d : heldOut) {
                        for (int t = 0; t + 1 < d.length; t++) {
                            one[0] = d[t];
                            pos[0] = t;
                            long t0 = System.nanoTime();
                            run.forward(one, starts, pos, slot, 1);
                            nanos += System.nanoTime() - t0;
                            ce += ces.row(run.logits().segment(), c.vocab(), d[t + 1]);
                            labels++;
                        }
                    }
                    if (labels == 0) throw new Moe4jException("--budget: the held-out calibration has no next-token label");
                    points.add(new Point(keep, kpl, memory(c, keep, bytes), Math.exp(ce / labels), labels / (nanos / 1e9),
                            false, sel));
                }
            }
        }
        List<Point> out = new ArrayList<>();
        for (Point p : points) {
            boolean dominated = false;
            for (Point q : points)
                if (q != p && q.memoryBytes() <= p.memoryBytes() && q.perplexity() <= p.perplexity()
                        && q.decodeTokensPerSecond() >= p.decodeTokensPerSecond()
                        && (q.memoryBytes() < p.memoryBytes() || q.perplexity() < p.perplexity()
                        || q.decodeTokensPerSecond() > p.decodeTokensPerSecond())) dominated = true;
            out.add(new Point(p.keep(), p.kPerLayer(), p.memoryBytes(), p.perplexity(), p.decodeTokensPerSecond(), !dominated,
                    p.selection()));
        }
        return out;
    }

    /** The lowest perplexity within the budget (ties to the higher tokens/s); a clear error when nothing fits. */
    public static Point choose(List<Point> points, long budget, String option) {
        Point best = null;
        long smallest = Long.MAX_VALUE;
        for (Point p : points) {
            smallest = Math.min(smallest, p.memoryBytes());
            if (p.memoryBytes() > budget) continue;
            if (best == null || p.perplexity() < best.perplexity()
                    || p.perplexity() == best.perplexity() && p.decodeTokensPerSecond() > best.decodeTokensPerSecond()) best = p;
        }
        if (best == null)
            throw new Moe4jException(option + ": no setting fits " + String.format(Locale.ROOT, "%.1f MB", budget / 1e6)
                    + "; the smallest keeps " + String.format(Locale.ROOT, "%.1f MB", smallest / 1e6) + " of weights resident");
        return best;
    }

    public static String table(List<Point> points, Point chosen) {
        StringBuilder b = new StringBuilder("|   K | k' (per layer) | resident weights | decode tokens/s | calibration perplexity | Pareto |\n");
        b.append("|----:|---------------:|-----------------:|----------------:|-----------------------:|:------:|\n");
        for (Point p : points)
            b.append(String.format(Locale.ROOT, "| %3d | %14s | %13.2f MB | %15.1f | %22.3f | %s |%s%n", p.keep(), p.kLabel(),
                    p.memoryBytes() / 1e6, p.decodeTokensPerSecond(), p.perplexity(), p.pareto() ? "  *   " : "      ",
                    p == chosen ? " <- chosen" : ""));
        return b.toString();
    }

    /** The sweep CSV's header, and a comment the sweep SVG carries: how select recognises its own earlier outputs. */
    public static final String CSV_HEADER = "keep,routed_k,k_per_layer,resident_bytes,decode_tokens_per_s,calibration_perplexity,pareto";
    public static final String SVG_MARKER = "<!-- moe4j select: budget sweep -->";

    public static String csv(List<Point> points) {
        StringBuilder b = new StringBuilder(CSV_HEADER).append('\n');
        for (Point p : points)
            b.append(String.format(Locale.ROOT, "%d,%d,%s,%d,%.3f,%.6f,%s%n", p.keep(), p.routedK(), p.kLabel(), p.memoryBytes(),
                    p.decodeTokensPerSecond(), p.perplexity(), p.pareto()));
        return b.toString();
    }

    /** An SVG scatter of perplexity against resident memory; the Pareto front joined, the budget a vertical line. */
    public static String svg(List<Point> points, long budget, Point chosen) {
        int W = 640, H = 420, m = 60;
        double x0 = Double.MAX_VALUE, x1 = 0, y0 = Double.MAX_VALUE, y1 = 0;
        for (Point p : points) {
            x0 = Math.min(x0, p.memoryBytes());
            x1 = Math.max(x1, Math.max(p.memoryBytes(), budget));
            y0 = Math.min(y0, p.perplexity());
            y1 = Math.max(y1, p.perplexity());
        }
        x0 = Math.min(x0, budget) * 0.95;
        x1 *= 1.05;
        double pad = Math.max(1e-9, (y1 - y0) * 0.1);
        y0 -= pad;
        y1 += pad;
        final double fx0 = x0, fx1 = x1, fy0 = y0, fy1 = y1;
        java.util.function.DoubleUnaryOperator X = v -> m + (v - fx0) / (fx1 - fx0) * (W - 2 * m);
        java.util.function.DoubleUnaryOperator Y = v -> H - m - (v - fy0) / (fy1 - fy0) * (H - 2 * m);
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                + "font-family=\"sans-serif\" font-size=\"12\">%n%s%n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>%n", W, H,
                SVG_MARKER));
        b.append(String.format(Locale.ROOT, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>%n", m, H - m, W - m, H - m));
        b.append(String.format(Locale.ROOT, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>%n", m, m, m, H - m));
        b.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">resident weights (MB): %.1f .. %.1f</text>%n",
                W / 2, H - 20, x0 / 1e6, x1 / 1e6));
        b.append(String.format(Locale.ROOT, "<text x=\"15\" y=\"%d\" transform=\"rotate(-90 15 %d)\" text-anchor=\"middle\">"
                + "calibration perplexity: %.3f .. %.3f</text>%n", H / 2, H / 2, y0, y1));
        double bx = X.applyAsDouble(budget);
        b.append(String.format(Locale.ROOT, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"red\" stroke-dasharray=\"4\"/>"
                + "<text x=\"%.1f\" y=\"%d\" fill=\"red\">budget</text>%n", bx, m, bx, H - m, bx + 4, m + 12));
        List<Point> front = new ArrayList<>(points.stream().filter(Point::pareto).toList());
        front.sort((a, c) -> Long.compare(a.memoryBytes(), c.memoryBytes()));
        StringBuilder path = new StringBuilder();
        for (Point p : front)
            path.append(String.format(Locale.ROOT, "%.1f,%.1f ", X.applyAsDouble(p.memoryBytes()), Y.applyAsDouble(p.perplexity())));
        b.append("<polyline fill=\"none\" stroke=\"steelblue\" points=\"").append(path.toString().trim()).append("\"/>\n");
        for (Point p : points) {
            double px = X.applyAsDouble(p.memoryBytes()), py = Y.applyAsDouble(p.perplexity());
            b.append(String.format(Locale.ROOT, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%d\" fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\">"
                            + "K=%d k'=%s, %.0f tok/s</text>%n", px, py, p == chosen ? 6 : 4,
                    p == chosen ? "red" : p.pareto() ? "steelblue" : "gray", px + 6, py - 4, p.keep(), p.kLabel(),
                    p.decodeTokensPerSecond()));
        }
        return b.append("</svg>\n").toString();
    }
}
