package org.moe4j.props.subset;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.model.ModelWeights;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.engine.model.StepStats;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.subset.ExpertScores;
import org.moe4j.engine.subset.Pruner;
import org.moe4j.engine.subset.SubsetMethod;
import org.moe4j.engine.subset.SubsetSelector;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * Expert subsets (ALGORITHMS.md sections 2 and 5): a pruned model computes what the full model computes with the
 * same subset as a router mask — logits, every loss, every gradient (mapped back to the full model's names); a
 * selection made on a pruned model equals the one made on the masked full model; each calibration score equals a
 * plain float64 twin; selection is deterministic.
 */
class SubsetProperties {
    static final WorkerPool POOL = new WorkerPool(2);
    static final JavaGemm GEMM = new JavaGemm(POOL);

    /** A random small model config: E 4..9 with 0..2 shared experts, standard or EMO routing. */
    static ModelConfig randomConfig(SplittableRandom r, boolean emo) {
        int experts = 4 + r.nextInt(6), shared = r.nextInt(3), routed = experts - shared;
        int k = shared + 1 + r.nextInt(Math.min(3, routed));
        int[][] shapes = {{8, 1, 1}, {16, 2, 1}, {16, 2, 2}};
        int[] s = shapes[r.nextInt(shapes.length)];
        return new ModelConfig(12 + r.nextInt(30), s[0], 1 + r.nextInt(3), s[1], s[2], experts, shared, k,
                4 + r.nextInt(6), 10000.0, r.nextBoolean(), 1e-6, 24, 1,
                emo ? RoutingConfig.emo(routed) : RoutingConfig.standard(), LossWeights.defaults());
    }

    /** K experts per layer (s + 1 .. E), a different random choice of routed experts in every layer. */
    static int[][] randomUniformSubset(SplittableRandom r, ModelConfig c, int keep) {
        int routed = c.routedExperts();
        int[][] out = new int[c.layers()][];
        for (int l = 0; l < c.layers(); l++) {
            int[] perm = new int[routed];
            for (int i = 0; i < routed; i++) perm[i] = i;
            for (int i = routed - 1; i > 0; i--) {
                int j = r.nextInt(i + 1), t = perm[i];
                perm[i] = perm[j];
                perm[j] = t;
            }
            int[] ids = new int[keep];
            for (int i = 0; i < keep - c.sharedExperts(); i++) ids[i] = perm[i];
            for (int j = 0; j < c.sharedExperts(); j++) ids[keep - c.sharedExperts() + j] = routed + j;
            Arrays.sort(ids);
            out[l] = ids;
        }
        return out;
    }

    static int[] randomTokens(SplittableRandom r, int vocab, int n) {
        int[] t = new int[n];
        for (int i = 0; i < n; i++) t[i] = r.nextInt(8) == 0 ? 1 : 2 + r.nextInt(vocab - 2); // EOS (id 1) opens documents
        return t;
    }

    record Losses(double ce, double lbMean, double zMean, double ercMean, double total) {
    }

    record Run(float[] logits, Losses stats, MoeModel model) {
    }

    /** One forward + backward with evaluation routing: fixed k', the eval pool when EMO, capacity cf, pinned ERC noise. */
    static Run forwardBackward(MoeModel m, int[] tokens, int[] starts, int B, ExpertSet[] masks, double cf, float[][] noise) {
        ModelConfig c = m.config();
        int n = tokens.length;
        try (MoeTransformer tr = new MoeTransformer(m, n, B, c.routedK(), GEMM, POOL)) {
            for (int l = 0; l < c.layers(); l++) {
                // each layer's own k' (a pruned layer's may be smaller; the router clamps a mask's the same way)
                var ctl = tr.control(l).noPools().fixedK(c.routedK(l)).capacityFactor(cf).subset(masks == null ? null : masks[l]);
                if (c.routing().pool().evalPool() > 0) ctl.fixedPools(c.routing().pool().evalPool());
                tr.pinErcNoise(l, noise[l]);
            }
            tr.erc(true);
            tr.setBatch(tokens, starts, B);
            m.zeroGrads();
            tr.forward();
            float[] logits = tr.logits().rows(0, n).toFloatArray();
            StepStats t = tr.stats();
            Losses st = new Losses(t.ce, t.lbMean, t.zMean, t.ercMean, t.total);
            tr.backward();
            return new Run(logits, st, m);
        }
    }

    static void close(String what, double want, double got, double tol) {
        assertTrue(Math.abs(want - got) <= tol * (1 + Math.abs(want)), what + ": want " + want + " got " + got);
    }

    static void closeArrays(String what, float[] want, float[] got, double tol) {
        assertEquals(want.length, got.length, what + " length");
        double scale = 0;
        for (float v : want) scale = Math.max(scale, Math.abs(v));
        for (int i = 0; i < want.length; i++)
            assertTrue(Math.abs(want[i] - got[i]) <= tol * (1 + scale), what + "[" + i + "]: want " + want[i] + " got " + got[i]);
    }

    @Property(tries = 40)
    void prunedModelEqualsMaskedModel(@ForAll long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        ModelConfig c = randomConfig(r, r.nextBoolean());
        int keep = c.sharedExperts() + 1 + r.nextInt(c.routedExperts());
        int[][] kept = randomUniformSubset(r, c, keep);
        try (MoeModel full = new MoeModel(c).initRandom(seed);
             MoeModel pruned = Pruner.prune(full, kept, true)) {
            ModelConfig pc = pruned.config();
            assertEquals(keep, pc.experts());
            assertEquals(c.sharedExperts() + Math.min(c.routedK(), keep - c.sharedExperts()), pc.k());
            assertEquals(null, pc.layerExperts(), "one K for every layer: a uniform config");
            assertEquals(null, pc.layerK());
            assertPrunedEqualsMasked(r, seed, full, pruned, kept);
        }
    }

    /**
     * The same with a different K_l per layer: the pruned config lists E_l per layer, each layer routes
     * s + min(k - s, K_l - s), and logits, losses and gradients still equal the masked full model's.
     */
    @Property(tries = 40)
    void prunedModelWithPerLayerKEqualsMaskedModel(@ForAll long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        ModelConfig c;
        do c = randomConfig(r, r.nextBoolean()); while (c.layers() < 2 || c.routedExperts() < 2);
        int[][] kept = randomPerLayerSubset(r, c);
        int s = c.sharedExperts(), maxKeep = 0;
        for (int[] k : kept) maxKeep = Math.max(maxKeep, k.length);
        try (MoeModel full = new MoeModel(c).initRandom(seed);
             MoeModel pruned = Pruner.prune(full, kept, true)) {
            ModelConfig pc = pruned.config();
            assertEquals(maxKeep, pc.experts());
            assertTrue(pc.layerExperts() != null, "layers keep different K: per-layer expert counts");
            for (int l = 0; l < c.layers(); l++) {
                assertEquals(kept[l].length, pc.experts(l));
                assertEquals(s + Math.min(c.routedK(), kept[l].length - s), pc.k(l), "k of layer " + l);
                assertEquals(kept[l].length * c.d(), pruned.layout().entry(ParamLayout.router(l)).numel());
            }
            assertPrunedEqualsMasked(r, seed, full, pruned, kept);
        }
    }

    /** K_l in s + 1 .. E per layer, at least two layers different; random routed experts in each. */
    static int[][] randomPerLayerSubset(SplittableRandom r, ModelConfig c) {
        int s = c.sharedExperts(), L = c.layers();
        int[][] out = new int[L][];
        int first = s + 1 + r.nextInt(c.routedExperts());
        for (int l = 0; l < L; l++) {
            int keep = s + 1 + r.nextInt(c.routedExperts());
            if (l == L - 1 && keep == first) keep = keep == c.experts() ? keep - 1 : keep + 1;
            if (l == 0) keep = first;
            out[l] = randomUniformSubset(r, c, keep)[l];
        }
        return out;
    }

    /** Logits, losses and every gradient (mapped back to the full model's names) of the pruned vs the masked model. */
    static void assertPrunedEqualsMasked(SplittableRandom r, long seed, MoeModel full, MoeModel pruned, int[][] kept) {
        ModelConfig c = full.config();
        int B = 1 + r.nextInt(2), n = B * (3 + r.nextInt(8));
        int[] tokens = randomTokens(r, c.vocab(), n);
        int[] starts = new int[B + 1];
        for (int i = 1; i <= B; i++) starts[i] = i * (n / B);
        double cf = r.nextBoolean() ? 0 : 1.25;
        float[][] noise = new float[c.layers()][];
        for (int l = 0; l < c.layers(); l++) {
            noise[l] = new float[(kept[l].length - c.sharedExperts()) * c.d()];
            for (int i = 0; i < noise[l].length; i++) noise[l][i] = (float) (2 * r.nextDouble() - 1);
        }
        ExpertSet[] masks = new ExpertSet[c.layers()];
        for (int l = 0; l < c.layers(); l++) masks[l] = ExpertSet.of(c.experts(), kept[l]);
        Run a = forwardBackward(full, tokens, starts, B, masks, cf, noise);
        Run b = forwardBackward(pruned, tokens, starts, B, null, cf, noise);
        int[] ks = Arrays.stream(kept).mapToInt(k -> k.length).toArray();
        String at = "seed " + seed + " E " + c.experts() + " s " + c.sharedExperts() + " K " + Arrays.toString(ks);
        closeArrays("logits " + at, a.logits(), b.logits(), 1e-5);
        close("ce " + at, a.stats().ce(), b.stats().ce(), 1e-5);
        close("lb " + at, a.stats().lbMean(), b.stats().lbMean(), 1e-5);
        close("z " + at, a.stats().zMean(), b.stats().zMean(), 1e-5);
        close("erc " + at, a.stats().ercMean(), b.stats().ercMean(), 1e-5);
        close("total " + at, a.stats().total(), b.stats().total(), 1e-5);
        ParamLayout fl = full.layout();
        for (ParamLayout.Entry e : pruned.layout().entries()) {
            String name = e.name();
            float[] g = pruned.gradValues(name);
            if (name.contains(".mlp.experts.")) {
                int l = Integer.parseInt(name.split("\\.")[2]), j = Integer.parseInt(name.split("\\.")[5]);
                String old = name.replace(".experts." + j + ".", ".experts." + kept[l][j] + ".");
                closeArrays("grad " + name + " " + at, full.gradValues(old), g, 1e-4);
            } else if (name.endsWith(".mlp.gate.weight")) {
                int l = Integer.parseInt(name.split("\\.")[2]), d = c.d();
                float[] fg = full.gradValues(name);
                for (int j = 0; j < kept[l].length; j++)
                    closeArrays("grad router row " + j + " " + at, Arrays.copyOfRange(fg, kept[l][j] * d, (kept[l][j] + 1) * d),
                            Arrays.copyOfRange(g, j * d, (j + 1) * d), 1e-4);
            } else {
                assertTrue(fl.has(name));
                closeArrays("grad " + name + " " + at, full.gradValues(name), g, 1e-4);
            }
        }
        // a dropped expert gets no gradient
        for (int l = 0; l < c.layers(); l++)
            for (int e = 0; e < c.experts(); e++)
                if (Arrays.binarySearch(kept[l], e) < 0)
                    for (float v : full.gradValues(ParamLayout.downProj(l, e))) assertEquals(0f, v);
    }

    /**
     * Inference takes a per-layer pruned model too: the forward-only runner (one set of buffers for every layer, a
     * router per distinct E_l) gives the masked full model's logits on every row.
     */
    @Property(tries = 30)
    void forwardRunnerOnPerLayerPrunedModelEqualsMaskedModel(@ForAll long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        ModelConfig c;
        do c = randomConfig(r, false); while (c.layers() < 2 || c.routedExperts() < 2);
        int[][] kept = randomPerLayerSubset(r, c);
        int[] tokens = randomTokens(r, c.vocab(), 2 + r.nextInt(c.maxSeq() - 2));
        ExpertSet[] masks = new ExpertSet[c.layers()];
        for (int l = 0; l < c.layers(); l++) masks[l] = ExpertSet.of(c.experts(), kept[l]);
        try (MoeModel full = new MoeModel(c, false).initRandom(seed);
             MoeModel pruned = Pruner.prune(full, kept, false);
             ModelWeights fw = ModelWeights.f32(full);
             ModelWeights pw = ModelWeights.f32(pruned)) {
            float[] a = runnerLogits(fw, tokens, masks), b = runnerLogits(pw, tokens, null);
            closeArrays("runner logits seed " + seed, a, b, 1e-5);
        }
    }

    static float[] runnerLogits(ModelWeights w, int[] tokens, ExpertSet[] masks) {
        ModelConfig c = w.layout().config();
        try (org.moe4j.engine.model.ForwardRunner run = new org.moe4j.engine.model.ForwardRunner(w, tokens.length, 1,
                tokens.length, c.routedK(), true, GEMM, POOL)) {
            run.routing(null, masks);
            run.forward(tokens, new int[] {0, tokens.length}, new int[] {0}, new int[] {0}, 1);
            return run.logits().rows(0, tokens.length).toFloatArray();
        }
    }

    /**
     * A per-layer list of the wrong length, an E_l out of [s + 1, E], an E that is not the largest E_l, or a k_l out
     * of [s + 1, min(k, E_l)] is refused by the config with the field named; a valid one round-trips through JSON.
     */
    @Property(tries = 40)
    void badPerLayerConfigIsRefusedByName(@ForAll long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        ModelConfig c = randomConfig(r, r.nextBoolean());
        int L = c.layers(), s = c.sharedExperts(), E = c.experts();
        List<Integer> good = new ArrayList<>();
        for (int l = 0; l < L; l++) good.add(s + 1 + r.nextInt(c.routedExperts()));
        good.set(r.nextInt(L), E);
        ModelConfig ok = c.withLayers(good, null);
        assertEquals(ok, ModelConfig.fromJson(ok.toJson()));
        for (int l = 0; l < L; l++) assertEquals(Math.min(c.k(), good.get(l)), ok.k(l));
        List<Integer> wrongLength = new ArrayList<>(good);
        if (r.nextBoolean() || L == 1) wrongLength.add(E);
        else wrongLength.remove(0);
        List<Integer> outOfRange = new ArrayList<>(good);
        int at = r.nextInt(L);
        outOfRange.set(at, r.nextBoolean() ? s - r.nextInt(2) : E + 1 + r.nextInt(3));
        String[][] cases = {{"layerExperts", "one value per layer"}, {"layerExperts", "layer " + at + " has"}};
        List<List<Integer>> lists = List.of(wrongLength, outOfRange);
        for (int i = 0; i < 2; i++) {
            List<Integer> bad = lists.get(i);
            var e = assertThrows(org.moe4j.engine.config.ConfigException.class, () -> new ModelConfig(c.vocab(), c.d(),
                    L, c.heads(), c.kvHeads(), E, s, c.k(), c.expertHidden(), c.ropeTheta(), c.qkNorm(), c.normEps(),
                    c.maxSeq(), c.eosId(), c.routing(), c.loss(), bad, null));
            assertEquals("ModelConfig." + cases[i][0], e.field(), e.getMessage());
            assertTrue(e.getMessage().contains(cases[i][1]), e.getMessage());
        }
        { // E must be the largest E_l
            var e = assertThrows(org.moe4j.engine.config.ConfigException.class, () -> new ModelConfig(c.vocab(), c.d(),
                    L, c.heads(), c.kvHeads(), E + 1, s, c.k(), c.expertHidden(), c.ropeTheta(), c.qkNorm(), c.normEps(),
                    c.maxSeq(), c.eosId(), c.routing(), c.loss(), good, null));
            assertEquals("ModelConfig.experts", e.field(), e.getMessage());
        }
        List<Integer> badK = new ArrayList<>();
        for (int l = 0; l < L; l++) badK.add(ok.k(l));
        int kl = r.nextInt(L);
        badK.set(kl, r.nextBoolean() ? s : Math.min(c.k(), good.get(kl)) + 1);
        var e = assertThrows(org.moe4j.engine.config.ConfigException.class, () -> c.withLayers(good, badK));
        assertEquals("ModelConfig.layerK", e.field(), e.getMessage());
        assertTrue(e.getMessage().contains("layer " + kl + " routes"), e.getMessage());
    }

    /** Bad per-layer input is refused with a message naming what is wrong. */
    @Property(tries = 10)
    void badPerLayerPruningIsRefusedByName(@ForAll long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        ModelConfig c;
        do c = randomConfig(r, false); while (c.layers() < 2 || c.routedExperts() < 2);
        int s = c.sharedExperts(), L = c.layers();
        int[] keep = new int[L];
        Arrays.fill(keep, c.experts());
        keep[1] = s; // no routed expert left in layer 1
        ModelConfig cc = c;
        Moe4jException e = assertThrows(Moe4jException.class, () -> Pruner.prunedConfig(cc, keep, null));
        assertTrue(e.getMessage().contains("at layer 1"), e.getMessage());
        keep[1] = c.experts() + 1;
        e = assertThrows(Moe4jException.class, () -> Pruner.prunedConfig(cc, keep, null));
        assertTrue(e.getMessage().contains("at layer 1"), e.getMessage());
        e = assertThrows(Moe4jException.class, () -> Pruner.prunedConfig(cc, new int[L + 1], null));
        assertTrue(e.getMessage().contains(L + " layers"), e.getMessage());
        // a pruned model's layer l knows only its own E_l ids
        int[][] kept = randomPerLayerSubset(r, c);
        int small = kept[0].length <= kept[1].length ? 0 : 1;
        try (MoeModel full = new MoeModel(c, false).initRandom(seed); MoeModel pruned = Pruner.prune(full, kept, false)) {
            int[][] again = new int[L][];
            for (int l = 0; l < L; l++) again[l] = java.util.stream.IntStream.range(0, pruned.config().experts(l)).toArray();
            again[small] = java.util.stream.IntStream.range(0, pruned.config().experts()).toArray();
            if (pruned.config().experts(small) < pruned.config().experts()) {
                e = assertThrows(Moe4jException.class, () -> Pruner.prune(pruned, again, false));
                assertTrue(e.getMessage().contains("layer " + small), e.getMessage());
            }
        }
    }

    static List<int[]> randomDocs(SplittableRandom r, ModelConfig c) {
        List<int[]> docs = new ArrayList<>();
        int n = 1 + r.nextInt(3);
        for (int i = 0; i < n; i++) {
            int[] d = randomTokens(r, c.vocab(), 2 + r.nextInt(c.maxSeq() - 2));
            d[0] = c.eosId();
            docs.add(d);
        }
        return docs;
    }

    /**
     * Selecting K1 experts on a model pruned to K0 (new ids mapped back) equals selecting K1 on the full model masked to
     * the same K0 experts — the layer-wise methods run every layer before l pruned, so this is also "layer-wise
     * selection on a model whose earlier layers are pruned equals selection on the masked model". Scores agree
     * within float tolerance; the chosen sets agree unless two scores at the cut are closer than that.
     */
    @Property(tries = 30)
    void selectionOnPrunedModelEqualsSelectionOnMaskedModel(@ForAll long seed, @ForAll @IntRange(min = 0, max = 3) int mi) {
        SubsetMethod method = SubsetMethod.values()[mi];
        SplittableRandom r = new SplittableRandom(seed);
        ModelConfig c = randomConfig(r, false);
        int s = c.sharedExperts();
        // the earlier pruning keeps one K0 in every layer, or (half the time) a different K0_l per layer
        boolean perLayer = r.nextBoolean() && c.layers() >= 2 && c.routedExperts() >= 2;
        int[][] base = perLayer ? randomPerLayerSubset(r, c) : randomUniformSubset(r, c, s + 1 + r.nextInt(c.routedExperts()));
        int minK0 = Arrays.stream(base).mapToInt(b -> b.length).min().orElseThrow();
        int k1 = s + 1 + r.nextInt(minK0 - s);
        List<int[]> docs = randomDocs(r, c);
        ExpertSet[] masks = new ExpertSet[c.layers()];
        for (int l = 0; l < c.layers(); l++) masks[l] = ExpertSet.of(c.experts(), base[l]);
        try (MoeModel full = new MoeModel(c).initRandom(seed);
             MoeModel pruned = Pruner.prune(full, base, false);
             ModelWeights fw = ModelWeights.f32(full);
             ModelWeights pw = ModelWeights.f32(pruned)) {
            var onMasked = SubsetSelector.select(fw, docs, k1, method, 0, masks, GEMM, POOL);
            var onPruned = SubsetSelector.select(pw, docs, k1, method, 0, null, GEMM, POOL);
            for (int l = 0; l < c.layers(); l++) {
                double[] sm = onMasked.scores()[l], sp = onPruned.scores()[l];
                int k0 = base[l].length;
                assertEquals(k0 - s, sp.length, "a pruned layer scores its own routed experts");
                for (int j = 0; j < k0 - s; j++)
                    assertTrue(Math.abs(sm[base[l][j]] - sp[j]) <= 1e-5 * (1 + Math.abs(sp[j])),
                            method + " layer " + l + " expert " + base[l][j] + ": masked " + sm[base[l][j]] + " pruned " + sp[j]);
                for (int e = 0; e < c.routedExperts(); e++)
                    if (!masks[l].contains(e)) assertTrue(Double.isNaN(sm[e]), "a masked-out expert is no candidate");
                int[] bl = base[l], mapped = Arrays.stream(onPruned.kept()[l]).map(j -> bl[j]).toArray();
                if (!Arrays.equals(onMasked.kept()[l], mapped)) {
                    // only a near-tie at the cut may differ
                    double[] sorted = Arrays.stream(sp).limit(k0 - s).sorted().toArray();
                    int cut = sorted.length - (k1 - s);
                    assertTrue(cut > 0 && Math.abs(sorted[cut] - sorted[cut - 1]) <= 1e-5 * (1 + Math.abs(sorted[cut])),
                            method + " layer " + l + ": masked chose " + Arrays.toString(onMasked.kept()[l]) + ", pruned "
                                    + Arrays.toString(mapped));
                    return; // later layers then run on different subsets
                }
            }
        }
    }

    @Property(tries = 15)
    void selectionIsDeterministic(@ForAll long seed, @ForAll @IntRange(min = 0, max = 4) int mi) {
        SubsetMethod method = SubsetMethod.values()[mi];
        SplittableRandom r = new SplittableRandom(seed);
        ModelConfig c = randomConfig(r, r.nextBoolean());
        int keep = c.sharedExperts() + 1 + r.nextInt(c.routedExperts());
        List<int[]> docs = randomDocs(r, c);
        try (MoeModel m = new MoeModel(c).initRandom(seed); ModelWeights w = ModelWeights.f32(m)) {
            var a = SubsetSelector.select(w, docs, keep, method, seed, null, GEMM, POOL);
            var b = SubsetSelector.select(w, docs, keep, method, seed, null, GEMM, POOL);
            for (int l = 0; l < c.layers(); l++) {
                assertArrayEquals(a.kept()[l], b.kept()[l]);
                assertArrayEquals(a.scores()[l], b.scores()[l]);
                assertEquals(keep, a.kept()[l].length);
                for (int e = c.routedExperts(); e < c.experts(); e++)
                    assertTrue(Arrays.binarySearch(a.kept()[l], e) >= 0, "shared expert " + e + " kept");
                // the kept routed experts are the top scores
                double minKept = Double.POSITIVE_INFINITY, maxDropped = Double.NEGATIVE_INFINITY;
                for (int e = 0; e < c.routedExperts(); e++) {
                    if (Arrays.binarySearch(a.kept()[l], e) >= 0) minKept = Math.min(minKept, a.scores()[l][e]);
                    else maxDropped = Math.max(maxDropped, a.scores()[l][e]);
                }
                assertTrue(minKept >= maxDropped, method + " layer " + l + ": kept " + minKept + " < dropped " + maxDropped);
            }
        }
    }

    /**
     * The scores against a plain float64 twin on random routings: per token and slot, no perm/offset walk; the
     * expert output row of a slot found by search.
     */
    @Property(tries = 60)
    void scoresEqualAPlainFloat64Twin(@ForAll long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        int E = 2 + r.nextInt(9), s = r.nextInt(Math.min(3, E - 1)), routed = E - s, kR = 1 + r.nextInt(routed);
        int kTot = kR + s, T = 1 + r.nextInt(12), d = 1 + r.nextInt(9), calls = 1 + r.nextInt(3);
        ExpertScores acc = new ExpertScores(1, E, s, d);
        double[] probSum = new double[routed], reapSum = new double[routed];
        long[] picks = new long[routed], reapN = new long[routed];
        long tokens = 0;
        try (Arena arena = Arena.ofConfined()) {
            for (int call = 0; call < calls; call++) {
                int[] expert = new int[T * kTot];
                float[] gate = new float[T * kTot], prob = new float[T * E];
                for (int t = 0; t < T; t++) {
                    int[] order = r.ints(0, routed).distinct().limit(kR).toArray();
                    for (int j = 0; j < kR; j++) {
                        boolean empty = r.nextInt(6) == 0;
                        expert[t * kTot + j] = empty ? -1 : order[j];
                        gate[t * kTot + j] = empty ? 0 : (float) r.nextDouble();
                    }
                    for (int j = 0; j < s; j++) {
                        expert[t * kTot + kR + j] = routed + j;
                        gate[t * kTot + kR + j] = 1f;
                    }
                    for (int e = 0; e < routed; e++) prob[t * E + e] = (float) r.nextDouble();
                }
                // counting sort of the non-empty slots by expert, token order within an expert
                int[] offsets = new int[E + 1];
                for (int v : expert) if (v >= 0) offsets[v + 1]++;
                for (int e = 0; e < E; e++) offsets[e + 1] += offsets[e];
                int[] perm = new int[T * kTot], fill = offsets.clone();
                for (int slot = 0; slot < T * kTot; slot++) if (expert[slot] >= 0) perm[fill[expert[slot]]++] = slot;
                int keptSlots = offsets[E];
                MemorySegment ys = arena.allocate((long) Math.max(1, keptSlots) * d * 4);
                for (long i = 0; i < (long) keptSlots * d; i++) ys.setAtIndex(Tensor.FLOAT, i, (float) (r.nextDouble() * 4 - 2));
                acc.accumulate(0, T, kTot, kR, expert, gate, prob, offsets, perm, ys);
                // twin
                for (int t = 0; t < T; t++) {
                    for (int e = 0; e < routed; e++) probSum[e] += prob[t * E + e];
                    for (int j = 0; j < kR; j++) {
                        int slot = t * kTot + j, e = expert[slot];
                        if (e < 0) continue;
                        picks[e]++;
                        int row = -1;
                        for (int i = 0; i < keptSlots; i++) if (perm[i] == slot) row = i;
                        double sq = 0;
                        for (int k = 0; k < d; k++) {
                            double v = ys.getAtIndex(Tensor.FLOAT, (long) row * d + k);
                            sq += v * v;
                        }
                        reapSum[e] += (double) gate[slot] * Math.sqrt(sq);
                        reapN[e]++;
                    }
                }
                tokens += T;
            }
        }
        assertEquals(tokens, acc.tokens(0));
        double[] prob = acc.scores(0, SubsetMethod.GLOBAL), layer = acc.scores(0, SubsetMethod.LAYERWISE),
                freq = acc.scores(0, SubsetMethod.FREQUENCY), reap = acc.scores(0, SubsetMethod.REAP);
        for (int e = 0; e < routed; e++) {
            close("prob " + e, probSum[e] / tokens, prob[e], 1e-12);
            assertEquals(prob[e], layer[e]);
            close("frequency " + e, (double) picks[e] / tokens, freq[e], 1e-12);
            close("reap " + e, reapN[e] == 0 ? 0 : reapSum[e] / reapN[e], reap[e], 1e-9);
        }
    }
}
