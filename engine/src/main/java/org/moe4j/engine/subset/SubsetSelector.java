package org.moe4j.engine.subset;

import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.ForwardRunner;
import org.moe4j.engine.model.ModelWeights;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.WorkerPool;

/**
 * Chooses K experts per layer from calibration documents (ALGORITHMS.md section 5). Layer-by-layer methods run the
 * model with the layers before l already restricted to their chosen experts, as a mask on the router: a mask and a
 * pruned checkpoint compute the same thing, so this is the pruned model's routing without copying weights. The
 * top K - s routed experts by score are kept (ties to the lower index) and the s shared experts always are.
 */
public final class SubsetSelector {
    private SubsetSelector() {
    }

    /**
     * The chosen experts.
     *
     * @param kept   [layer] ascending full-model ids, shared ones included (numerics' subset format)
     * @param scores [layer][routed expert] the score each routed expert had when its layer was chosen; NaN for an
     *               expert that was not a candidate (outside {@code base})
     */
    public record Selection(SubsetMethod method, int keep, int[][] kept, double[][] scores) {
        /** The masks for {@link ForwardRunner#routing}, every layer over {@code experts}. */
        public ExpertSet[] masks(int experts) {
            ExpertSet[] s = new ExpertSet[kept.length];
            for (int l = 0; l < kept.length; l++) s[l] = ExpertSet.of(experts, kept[l]);
            return s;
        }

        /** The masks for {@link ForwardRunner#routing} on a model of config {@code c}: layer l's over its E_l. */
        public ExpertSet[] masks(ModelConfig c) {
            ExpertSet[] s = new ExpertSet[kept.length];
            for (int l = 0; l < kept.length; l++) s[l] = ExpertSet.of(c.experts(l), kept[l]);
            return s;
        }
    }

    /**
     * Checks K against the model (and the experts a base restriction leaves) with a message naming the option. On a
     * model with E_l experts per layer (a pruned checkpoint) K is at most the largest E_l, and a layer with fewer
     * keeps all of its own ({@link #keepAt}).
     */
    public static void checkKeep(ModelConfig c, int keep, ExpertSet[] base, String option) {
        int s = c.sharedExperts();
        if (keep < s + 1 || keep > c.experts())
            throw new Moe4jException(option + " " + keep + ": K is out of range; the model has " + c.experts()
                    + " experts per layer" + (c.layerExperts() == null ? "" : " at most (per layer " + c.layerExperts() + ")")
                    + ", " + s + " of them shared, so K must be in " + (s + 1) + ".." + c.experts()
                    + " (shared experts count in K and are always kept)");
        if (base != null)
            for (int l = 0; l < base.length; l++)
                if (base[l] != null && keepAt(c, keep, l) > base[l].size())
                    throw new Moe4jException(option + " " + keep + ": layer " + l + " has only " + base[l].size()
                            + " experts left to choose from");
    }

    /** The experts layer l keeps for K: K, or all of them when the layer has fewer (a pruned layer). */
    public static int keepAt(ModelConfig c, int keep, int l) {
        return Math.min(keep, c.experts(l));
    }

    /** K from {@code --keep}: an integer count, or a fraction in (0, 1) of E (rounded, at least s + 1). */
    public static int parseKeep(String spec, ModelConfig c, String option) {
        int k;
        try {
            if (spec.contains(".") || spec.contains("/")) {
                double f;
                int slash = spec.indexOf('/');
                f = slash >= 0 ? Double.parseDouble(spec.substring(0, slash)) / Double.parseDouble(spec.substring(slash + 1))
                        : Double.parseDouble(spec);
                if (!(f > 0 && f <= 1))
                    throw new Moe4jException(option + " " + spec + ": a fraction must be in (0, 1]");
                k = Math.max(c.sharedExperts() + 1, (int) Math.round(f * c.experts()));
            } else {
                k = Integer.parseInt(spec);
            }
        } catch (NumberFormatException e) {
            throw new Moe4jException(option + " " + spec + ": expected K (an integer) or a fraction such as 0.25 or 1/4");
        }
        checkKeep(c, k, null, option);
        return k;
    }

    /**
     * Selects K experts per layer.
     *
     * @param docs calibration token sequences, each at most the model's maxSeq long, run as separate sequences
     * @param base a restriction already in place per layer (null, or null entries, = every expert): the selection
     *             is made on the model masked to it, and only its members are candidates
     * @param seed for {@link SubsetMethod#RANDOM}
     */
    public static Selection select(ModelWeights w, List<int[]> docs, int keep, SubsetMethod method, long seed,
                                   ExpertSet[] base, Gemm gemm, WorkerPool pool) {
        return select(w, docs, keep, method, seed, base, gemm, pool, Evaluator.BATCH_TOKENS);
    }

    /** As {@link #select(ModelWeights, List, int, SubsetMethod, long, ExpertSet[], Gemm, WorkerPool)}, up to batchTokens per forward. */
    static Selection select(ModelWeights w, List<int[]> docs, int keep, SubsetMethod method, long seed,
                            ExpertSet[] base, Gemm gemm, WorkerPool pool, int batchTokens) {
        ModelConfig c = w.layout().config();
        int L = c.layers(), s = c.sharedExperts();
        checkKeep(c, keep, base, "--keep");
        int[][] kept = new int[L][];
        double[][] scores = new double[L][];
        if (method == SubsetMethod.RANDOM) {
            SplittableRandom r = new SplittableRandom(seed);
            for (int l = 0; l < L; l++) {
                double[] sc = new double[c.routedExperts(l)];
                for (int e = 0; e < sc.length; e++) sc[e] = r.nextDouble();
                scores[l] = candidatesOnly(sc, base == null ? null : base[l]);
                kept[l] = top(scores[l], keepAt(c, keep, l) - s, c.experts(l), s);
            }
            return new Selection(method, keep, kept, scores);
        }
        if (docs.isEmpty()) throw new Moe4jException("calibration: no documents to score the experts on");
        int longest = 0;
        for (int[] d : docs) {
            if (d.length == 0) throw new Moe4jException("calibration: an empty document");
            if (d.length > c.maxSeq())
                throw new Moe4jException("calibration: a document of " + d.length + " tokens is longer than maxSeq = " + c.maxSeq());
            longest = Math.max(longest, d.length);
        }
        ExpertSet[] masks = new ExpertSet[L];
        if (base != null) System.arraycopy(base, 0, masks, 0, L);
        int[] experts = new int[L];
        for (int l = 0; l < L; l++) experts[l] = c.experts(l);
        ExpertScores acc = new ExpertScores(experts, s, c.d());
        // several documents per forward (each its own sequence from position 0), as eval scores its windows
        int batch = Math.max(1, Math.min(batchTokens / longest, docs.size()));
        try (ForwardRunner run = new ForwardRunner(w, batch * longest, batch, longest, c.routedK(), false, gemm, pool)) {
            run.observer(acc);
            if (method.layerByLayer()) {
                for (int l = 0; l < L; l++) {
                    acc.reset();
                    acc.recordOnly(l);
                    run.routing(null, masks);
                    pass(run, docs, batch, longest, l + 1); // layer l's scores depend on layers 0..l only
                    scores[l] = candidatesOnly(acc.scores(l, method), masks[l]);
                    kept[l] = top(scores[l], keepAt(c, keep, l) - s, c.experts(l), s);
                    masks[l] = ExpertSet.of(c.experts(l), kept[l]);
                }
            } else {
                acc.recordOnly(-1);
                run.routing(null, masks);
                pass(run, docs, batch, longest, L);
                for (int l = 0; l < L; l++) {
                    scores[l] = candidatesOnly(acc.scores(l, method), masks[l]);
                    kept[l] = top(scores[l], keepAt(c, keep, l) - s, c.experts(l), s);
                }
            }
        }
        return new Selection(method, keep, kept, scores);
    }

    /**
     * Runs the documents through the first {@code layers} layers, up to {@code batch} per forward in their order (the
     * observer then sees every token in document order, as one document per forward would show them).
     */
    private static void pass(ForwardRunner run, List<int[]> docs, int batch, int longest, int layers) {
        int[] toks = new int[batch * longest], starts = new int[batch + 1], first = new int[batch], slot = new int[batch];
        for (int j = 0; j < batch; j++) slot[j] = j;
        for (int i = 0; i < docs.size(); i += batch) {
            int nb = Evaluator.pack(docs, i, batch, toks, starts);
            run.forward(toks, starts, first, slot, nb, layers);
        }
    }

    private static double[] candidatesOnly(double[] sc, ExpertSet allowed) {
        if (allowed != null) for (int e = 0; e < sc.length; e++) if (!allowed.contains(e)) sc[e] = Double.NaN;
        return sc;
    }

    /** The top {@code n} routed experts by score (NaN = not a candidate), ties to the lower index, plus the shared ones. */
    static int[] top(double[] scores, int n, int experts, int shared) {
        Integer[] order = new Integer[scores.length];
        int m = 0;
        for (int e = 0; e < scores.length; e++) if (!Double.isNaN(scores[e])) order[m++] = e;
        Integer[] cand = Arrays.copyOf(order, m);
        Arrays.sort(cand, (a, b) -> {
            int cmp = Double.compare(scores[b], scores[a]);
            return cmp != 0 ? cmp : Integer.compare(a, b);
        });
        if (n > m) throw new Moe4jException("selection: " + n + " routed experts asked, " + m + " candidates");
        int[] out = new int[n + shared];
        for (int i = 0; i < n; i++) out[i] = cand[i];
        for (int j = 0; j < shared; j++) out[n + j] = experts - shared + j;
        Arrays.sort(out);
        return out;
    }
}
