package org.moe4j.props.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Assume;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.MatryoshkaConfig;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.PoolConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.StepStats;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.routing.RoutingControl;
import org.moe4j.reference.model.RefDraws;
import org.moe4j.reference.model.RefModel;
import org.moe4j.reference.model.RefResult;
import org.moe4j.reference.model.RefSpec;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * The engine (float32, Vector API kernels, sparse dispatch) against the float64 reference model (itself checked by
 * finite differences): same loss, same loss parts, same gradient for every parameter, on random small models in
 * every routing mode — standard, renormalised top-k, EMO document pools, Matryoshka k per layer, capacity drops,
 * shared experts, subsets — with load balance (global and local), router z-loss, output z-loss and ERC on.
 * Random choices are pinned (pool sizes, k', ERC noise) and given to both. A case whose float32 routing differs
 * from the float64 one (a near-tie) is discarded, not compared.
 */
class EngineVsReferenceProperties {
    static final WorkerPool POOL = new WorkerPool(2);

    /** One random case: spec, draws, tokens, parameters seed. */
    record Case(RefSpec spec, RefDraws draws, int[][] tokens, long seed, String mode) {
        @Override
        public String toString() {
            return mode + " " + spec + " tokens " + java.util.Arrays.deepToString(tokens);
        }
    }

    @Provide
    Arbitrary<Case> cases() {
        Arbitrary<Integer> mode = Arbitraries.integers().between(0, 7);
        Arbitrary<Integer> shape = Arbitraries.integers().between(0, 3);
        Arbitrary<Integer> experts = Arbitraries.integers().between(3, 6);
        Arbitrary<Long> seed = Arbitraries.longs();
        Arbitrary<Boolean> flag = Arbitraries.of(true, false);
        return Combinators.combine(mode, shape, experts, seed, flag, flag).as(EngineVsReferenceProperties::build);
    }

    static Case build(int mode, int shape, int experts, long seed, boolean qkNorm, boolean ragged) {
        java.util.SplittableRandom r = new java.util.SplittableRandom(seed);
        int[][] shapes = {{4, 1, 1}, {8, 2, 1}, {8, 2, 2}, {8, 1, 1}}; // d, heads, kvHeads
        int d = shapes[shape][0], heads = shapes[shape][1], kv = shapes[shape][2];
        int layers = 1 + r.nextInt(2), vocab = 6 + r.nextInt(7), hidden = 2 + r.nextInt(4), eos = 1;
        int shared = mode == 5 ? 1 : 0;
        int k = shared + 1 + r.nextInt(experts - shared - (experts - shared > 1 ? 1 : 0));
        int[][] tokens = EngineCases.randomTokens(r, vocab, eos, ragged);
        return build(mode, r, d, heads, kv, layers, vocab, hidden, experts, shared, k, tokens, seed, qkNorm);
    }

    /**
     * At a realistic size (d 64, 4 heads over 2 KV heads, E 16 with one shared, k 4, h 32, 2 layers, 80-96 tokens per
     * sequence): the sizes where blocking, vector tails and multi-threaded splits all take their general paths.
     */
    static Case buildRealistic(int mode, long seed) {
        java.util.SplittableRandom r = new java.util.SplittableRandom(seed);
        int vocab = 48, eos = 1, B = 1 + r.nextInt(2);
        int[][] tokens = new int[B][];
        for (int b = 0; b < B; b++) {
            tokens[b] = new int[80 + r.nextInt(17)];
            for (int t = 0; t < tokens[b].length; t++) tokens[b][t] = r.nextInt(24) == 0 ? eos : r.nextInt(vocab);
        }
        return build(mode, r, 64, 4, 2, 2, vocab, 32, 16, mode == 5 ? 1 : 0, 4, tokens, seed, r.nextBoolean());
    }

    static Case build(int mode, java.util.SplittableRandom r, int d, int heads, int kv, int layers, int vocab, int hidden,
                      int experts, int shared, int k, int[][] tokens, long seed, boolean qkNorm) {
        int eos = 1;
        boolean normTopK = mode == 1 || mode == 3, overAll = mode == 6, lbLocal = r.nextBoolean(), docMask = r.nextBoolean();
        double cf = mode == 4 ? 0.5 + r.nextDouble() : 0;
        int routed = experts - shared;
        int B = tokens.length;
        int[][][] pools = null;
        if (mode == 2 || mode == 6) {
            pools = new int[layers][B][];
            for (int l = 0; l < layers; l++)
                for (int b = 0; b < B; b++) {
                    int docs = RefModel.documentIds(tokens[b], eos)[tokens[b].length - 1] + 1;
                    pools[l][b] = new int[docs];
                    for (int i = 0; i < docs; i++) pools[l][b][i] = 1 + r.nextInt(routed);
                }
        }
        int[] kPer = null;
        if (mode == 3) {
            kPer = new int[layers];
            for (int l = 0; l < layers; l++) kPer[l] = 1 + r.nextInt(routed);
        }
        int[][] subset = null;
        if (mode == 7) {
            subset = new int[layers][];
            for (int l = 0; l < layers; l++) {
                List<Integer> keep = new ArrayList<>();
                for (int e = 0; e < experts; e++) if (e >= routed || r.nextBoolean() || keep.isEmpty() && e == routed - 1) keep.add(e);
                subset[l] = keep.stream().mapToInt(Integer::intValue).toArray();
            }
        }
        double[][][] noise = new double[layers][][];
        for (int l = 0; l < layers; l++) {
            int kept = subset == null ? routed : (int) java.util.Arrays.stream(subset[l]).filter(e -> e < routed).count();
            noise[l] = new double[kept][d];
            for (int i = 0; i < kept; i++) for (int c = 0; c < d; c++) noise[l][i][c] = 2 * r.nextDouble() - 1;
        }
        double ercAlpha = new double[] {0, 0.5, 1.5}[r.nextInt(3)]; // 0: the paper's rule; drawn last, after the rest
        RefSpec spec = new RefSpec(vocab, d, layers, heads, kv, experts, shared, k, hidden, 10000.0, qkNorm, 1e-6, eos,
                normTopK, overAll, lbLocal, cf, docMask, 0.1, 0.01, 0.5, 1e-3, ercAlpha);
        String[] names = {"standard", "normalised top-k", "EMO pools", "Matryoshka k", "capacity", "shared expert",
                "EMO pools, softmax over all", "subset"};
        return new Case(spec, new RefDraws(pools, kPer, noise, subset), tokens, seed, names[mode]);
    }

    @Property(tries = 60)
    void engineMatchesTheReference(@ForAll("cases") Case cs) {
        check(cs);
    }

    /** The same comparison at a realistic size, every routing mode in turn (issue: d >= 64, T >= 80, E >= 16). */
    @Property(tries = 8)
    void engineMatchesTheReferenceAtRealisticSize(@ForAll @net.jqwik.api.constraints.IntRange(min = 0, max = 7) int mode,
                                                   @ForAll long seed) {
        check(buildRealistic(mode, seed));
    }

    static void check(Case cs) {
        RefSpec s = cs.spec();
        Map<String, double[]> params = RefModel.randomParams(s, cs.seed());
        RefResult ref = RefModel.run(s, params, cs.tokens(), cs.draws());
        Assume.that(Double.isFinite(ref.total()));

        ModelConfig c = new ModelConfig(s.vocab(), s.d(), s.layers(), s.heads(), s.kvHeads(), s.experts(), s.shared(),
                s.k(), s.hidden(), s.ropeTheta(), s.qkNorm(), s.normEps(),
                Math.max(8, java.util.Arrays.stream(cs.tokens()).mapToInt(t -> t.length).max().orElse(1)), s.eosId(),
                new RoutingConfig(s.normalizeTopK(), s.softmaxOverAll(), PoolConfig.none(), MatryoshkaConfig.off(),
                        0, 0, s.lbLocal() ? LbScope.LOCAL : LbScope.GLOBAL),
                new LossWeights(s.wLb(), s.wZ(), s.wErc(), s.wOutZ(), s.ercAlpha()));
        int B = cs.tokens().length;
        int[] starts = EngineCases.starts(cs.tokens()), flat = EngineCases.flatten(cs.tokens());
        int n = flat.length;

        try (MoeModel m = new MoeModel(c); MoeTransformer tr = new MoeTransformer(m, n, B, s.experts() - s.shared(), new JavaGemm(POOL), POOL)) {
            for (Map.Entry<String, double[]> e : params.entrySet()) {
                float[] f = new float[e.getValue().length];
                for (int i = 0; i < f.length; i++) f[i] = (float) e.getValue()[i];
                m.setParam(e.getKey(), f);
            }
            RefDraws dr = cs.draws();
            for (int l = 0; l < s.layers(); l++) {
                RoutingControl ctl = tr.control(l);
                ctl.fixedK(dr.kPerLayer() == null ? s.k() - s.shared() : dr.kPerLayer()[l]).capacityFactor(s.capacityFactor());
                if (dr.subset() != null) ctl.subset(ExpertSet.of(s.experts(), dr.subset()[l]));
                if (dr.poolSizes() == null) ctl.noPools();
                else ctl.givenPools(java.util.Arrays.stream(dr.poolSizes()[l]).flatMapToInt(java.util.Arrays::stream).toArray());
                double[][] u = dr.ercNoise()[l];
                float[] fu = new float[u.length * s.d()];
                for (int i = 0; i < u.length; i++) for (int j = 0; j < s.d(); j++) fu[i * s.d() + j] = (float) u[i][j];
                tr.pinErcNoise(l, fu);
            }
            tr.erc(true);
            tr.docMask(s.docMask());
            tr.setBatch(flat, starts, B);
            m.zeroGrads();
            tr.forward();
            EngineCases.assumeSameRouting(tr, ref, cs.tokens(), true);
            tr.backward();
            StepStats st = tr.stats();
            close("ce", ref.ce(), st.ce, 1e-4);
            close("outZ", ref.outZ(), st.outZ, 1e-4);
            close("lb", ref.lb(), st.lbMean, 1e-4);
            close("z", ref.z(), st.zMean, 1e-4);
            close("erc", ref.erc(), st.ercMean, 1e-4);
            close("total", ref.total(), st.total, 1e-4);
            for (int l = 0; l < s.layers(); l++) assertEquals(ref.kRouted()[l], st.kRouted[l], "k' of layer " + l);
            for (Map.Entry<String, double[]> e : ref.grads().entrySet()) {
                double[] want = e.getValue();
                float[] got = m.gradValues(e.getKey());
                double scale = 0;
                for (double v : want) scale = Math.max(scale, Math.abs(v));
                for (int i = 0; i < want.length; i++) {
                    double tol = 1e-4 + 2e-3 * scale;
                    if (Math.abs(want[i] - got[i]) > tol)
                        throw new AssertionError("d total / d " + e.getKey() + "[" + i + "]: engine " + got[i]
                                + ", reference " + want[i] + " (tolerance " + tol + ")");
                }
            }
        }
    }

    static void close(String what, double want, double got, double rel) {
        if (Double.isNaN(want)) {
            assertTrue(Double.isNaN(got), what + ": reference is off (NaN), engine " + got);
            return;
        }
        assertTrue(Math.abs(want - got) <= rel * Math.max(1, Math.abs(want)), what + ": engine " + got + ", reference " + want);
    }

}
