package org.moe4j.props.model;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.ToDoubleFunction;
import org.moe4j.reference.model.RefDraws;
import org.moe4j.reference.model.RefModel;
import org.moe4j.reference.model.RefResult;
import org.moe4j.reference.model.RefSpec;

/** Random tiny reference-model problems, one per routing/loss mode, and the finite-difference check they share. */
final class RefModelCases {
    private RefModelCases() {
    }

    static final int EOS = 0;

    /** Each mode switches on one method of ALGORITHMS.md sections 1-3; ALL switches on all of them at once. */
    enum Mode { STANDARD, NORMALIZE_TOPK, POOLS, SOFTMAX_OVER_ALL, MATRYOSHKA, CAPACITY, SUBSET, QK_NORM, DOC_MASK,
        LB_LOCAL, ERC, ALL }

    record Case(Mode mode, RefSpec spec, Map<String, double[]> params, int[][] tokens, RefDraws draws) {
        RefResult run() {
            return RefModel.run(spec, params, tokens, draws, fixedEps());
        }

        /** ε of every layer at the current parameters (ERC's gradient holds ε constant; so must the difference). */
        double[][] fixedEps() {
            if (draws.ercNoise() == null) return null;
            double[][] eps = new double[spec.layers()][];
            for (int l = 0; l < spec.layers(); l++)
                eps[l] = RefModel.ercEpsilons(spec, params, l, RefModel.keptRouted(spec, draws, l));
            return eps;
        }

        @Override
        public String toString() {
            return mode + " " + spec + " tokens " + Arrays.deepToString(tokens) + " pools "
                    + Arrays.deepToString(draws.poolSizes()) + " k' " + Arrays.toString(draws.kPerLayer()) + " subset "
                    + Arrays.deepToString(draws.subset()) + " erc " + (draws.ercNoise() != null);
        }
    }

    static RefSpec spec(int vocab, int d, int layers, int heads, int kvHeads, int experts, int shared, int k, int hidden,
                        boolean qkNorm, boolean normalizeTopK, boolean softmaxOverAll, boolean lbLocal, double cf,
                        boolean docMask, double wLb, double wZ, double wErc, double wOutZ) {
        return new RefSpec(vocab, d, layers, heads, kvHeads, experts, shared, k, hidden, 10000.0, qkNorm, 1e-6, EOS,
                normalizeTopK, softmaxOverAll, lbLocal, cf, docMask, wLb, wZ, wErc, wOutZ);
    }

    /** A random case: d 4..8, heads 1..2, E 3..6, shared 0..1, hidden 2..5, vocab 5..12, 1..3 sequences of 1..6. */
    static Case random(Mode mode, long seed, double wLb, double wZ, double wErc, double wOutZ) {
        Random r = new Random(seed);
        boolean all = mode == Mode.ALL;
        int heads = 1 + r.nextInt(2);
        int dh = heads == 1 ? 4 + 2 * r.nextInt(3) : 2 + 2 * r.nextInt(2);
        int kvHeads = heads == 2 && r.nextBoolean() ? 1 : heads;
        int experts = 3 + r.nextInt(4), shared = r.nextInt(2), routed = experts - shared;
        int k = shared + 1 + r.nextInt(Math.min(3, routed));
        int hidden = 2 + r.nextInt(4), vocab = 5 + r.nextInt(8), layers = 1 + r.nextInt(2);
        boolean pools = mode == Mode.POOLS || mode == Mode.SOFTMAX_OVER_ALL || all && r.nextBoolean();
        boolean overAll = mode == Mode.SOFTMAX_OVER_ALL || all && pools && r.nextBoolean();
        double cf = mode == Mode.CAPACITY || all ? new double[] {0.5, 1.0, 1.25}[r.nextInt(3)] : 0;
        int maxLen = cf > 0 ? 10 : 6; // capacity is at least 4: longer sequences make drops happen
        RefSpec spec = spec(vocab, heads * dh, layers, heads, kvHeads, experts, shared, k, hidden,
                mode == Mode.QK_NORM || all, mode == Mode.NORMALIZE_TOPK || mode == Mode.MATRYOSHKA || all && r.nextBoolean(),
                overAll, mode == Mode.LB_LOCAL || all, cf, mode == Mode.DOC_MASK || all, wLb, wZ, wErc, wOutZ);

        int[][] tokens = new int[1 + r.nextInt(3)][];
        for (int b = 0; b < tokens.length; b++) {
            tokens[b] = new int[1 + r.nextInt(maxLen)];
            for (int t = 0; t < tokens[b].length; t++) tokens[b][t] = r.nextInt(4) == 0 ? EOS : r.nextInt(vocab);
        }

        int[][] subset = null;
        if (mode == Mode.SUBSET || all) {
            subset = new int[layers][];
            for (int l = 0; l < layers; l++) {
                List<Integer> keep = new ArrayList<>();
                for (int e = 0; e < routed; e++) if (r.nextInt(3) > 0) keep.add(e);
                if (keep.isEmpty()) keep.add(r.nextInt(routed));
                for (int e = routed; e < experts; e++) keep.add(e);
                subset[l] = keep.stream().mapToInt(Integer::intValue).toArray();
            }
        }
        int[] kPerLayer = null;
        if (mode == Mode.MATRYOSHKA || all) {
            kPerLayer = new int[layers];
            for (int l = 0; l < layers; l++) kPerLayer[l] = 1 + r.nextInt(routed);
        }
        int[][][] poolSizes = null;
        if (pools) {
            poolSizes = new int[layers][tokens.length][];
            for (int l = 0; l < layers; l++)
                for (int b = 0; b < tokens.length; b++) {
                    int docs = RefModel.documentIds(tokens[b], EOS)[tokens[b].length - 1] + 1;
                    poolSizes[l][b] = new int[docs];
                    for (int dc = 0; dc < docs; dc++) poolSizes[l][b][dc] = 1 + r.nextInt(routed);
                }
        }
        double[][][] noise = null;
        if (mode == Mode.ERC || all) {
            noise = new double[layers][routed][spec.d()];
            for (double[][] layer : noise) for (double[] row : layer) for (int c = 0; c < row.length; c++) row[c] = 2 * r.nextDouble() - 1;
        }
        RefDraws draws = new RefDraws(poolSizes, kPerLayer, noise, subset);
        return new Case(mode, spec, RefModel.randomParams(spec, r.nextLong()), tokens, draws);
    }

    /** Outcome of comparing an analytic gradient with central differences on sampled entries. */
    record Check(int compared, int skipped, String firstFailure) {
    }

    /**
     * For `perTensor` random entries of every tensor: fd = (f(w+h) - f(w-h)) / 2h against analytic[entry], within
     * rtol·max(|fd|, |an|) + atol. An entry whose nudge changes a discrete choice (the decisions differ) is skipped.
     */
    static Check finiteDifferences(Case c, Map<String, double[]> analytic, ToDoubleFunction<RefResult> f, int perTensor,
                                   long seed, double h, double rtol, double atol) {
        Random r = new Random(seed);
        double[][] eps = c.fixedEps(); // ε at the unperturbed parameters, for every nudge
        String decisions = c.run().decisions();
        int compared = 0, skipped = 0;
        for (Map.Entry<String, double[]> e : c.params().entrySet()) {
            double[] w = e.getValue();
            for (int n = 0; n < perTensor; n++) {
                int i = r.nextInt(w.length);
                double keep = w[i];
                w[i] = keep + h;
                RefResult plus = RefModel.run(c.spec(), c.params(), c.tokens(), c.draws(), eps);
                w[i] = keep - h;
                RefResult minus = RefModel.run(c.spec(), c.params(), c.tokens(), c.draws(), eps);
                w[i] = keep;
                if (!plus.decisions().equals(decisions) || !minus.decisions().equals(decisions)) {
                    skipped++;
                    continue;
                }
                double fd = (f.applyAsDouble(plus) - f.applyAsDouble(minus)) / (2 * h);
                double an = analytic.get(e.getKey())[i];
                compared++;
                if (!(Math.abs(fd - an) <= rtol * Math.max(Math.abs(fd), Math.abs(an)) + atol))
                    return new Check(compared, skipped, e.getKey() + "[" + i + "]: analytic " + an
                            + ", finite difference " + fd + " (" + c + ")");
            }
        }
        return new Check(compared, skipped, null);
    }
}
