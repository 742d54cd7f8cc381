package org.moe4j.props.inference;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.inference.GenerationRequest;
import org.moe4j.engine.inference.GenerationSession;
import org.moe4j.engine.inference.Generator;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.inference.Sampling;
import org.moe4j.engine.model.ForwardRunner;
import org.moe4j.engine.model.ModelWeights;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.nativ.OneDnn;
import org.moe4j.nativ.OneDnnGemm;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * The forward-only runner with its KV cache against the training transformer (the same blocks, proven against the
 * float64 reference): a full forward over a sequence, and a prefill of its first tokens followed by one-token decode
 * steps, give the training forward's logits — in every inference routing mode (standard, elastic k, subset mask, EMO
 * evaluation pool frozen from the prompt), F32 within 1e-5 relative, BF16 weights within bf16 tolerance. Greedy
 * generation is deterministic and does not depend on what else is in the batch.
 */
class InferenceProperties {
    static final WorkerPool POOL = new WorkerPool(2);
    static final JavaGemm GEMM = new JavaGemm(POOL);
    static final Gemm ONEDNN = OneDnn.available() ? new OneDnnGemm(2) : null;

    enum Mode { STANDARD, ELASTIC_K, SUBSET, EMO_POOL }

    record Case(ModelConfig c, long seed, int[] tokens, int prompt, int[] kPerLayer, ExpertSet[] subset, Mode mode) {
        @Override
        public String toString() {
            return mode + " E=" + c.experts() + " s=" + c.sharedExperts() + " k=" + c.k() + " d=" + c.d() + " L="
                    + c.layers() + " qk=" + c.qkNorm() + " kPerLayer=" + Arrays.toString(kPerLayer) + " subset="
                    + Arrays.toString(subset) + " tokens=" + Arrays.toString(tokens) + " prompt=" + prompt;
        }
    }

    static Case randomCase(long seed, Mode mode) {
        return randomCase(seed, mode, false);
    }

    /**
     * longPrompt: 4 experts, 3 routed per token and a prompt of 24-39 tokens, so that in every layer some expert gets
     * more rows than a decode step gives it (>= 72 routed slots over at most 4 experts) and the prefill runs the
     * experts concurrently on one-thread lanes.
     */
    static Case randomCase(long seed, Mode mode, boolean longPrompt) {
        SplittableRandom r = new SplittableRandom(seed);
        int[][] shapes = {{8, 1, 1}, {16, 2, 1}, {16, 2, 2}, {16, 4, 2}};
        int[] s = shapes[r.nextInt(shapes.length)];
        int experts = longPrompt ? 4 : 4 + r.nextInt(5), shared = r.nextInt(2), routed = experts - shared;
        int k = longPrompt ? shared + 3 : shared + 1 + r.nextInt(Math.min(3, routed));
        int layers = 1 + r.nextInt(2), vocab = 12 + r.nextInt(30), eos = 1;
        RoutingConfig routing = mode == Mode.EMO_POOL ? RoutingConfig.emo(routed) : RoutingConfig.standard();
        ModelConfig c = new ModelConfig(vocab, s[0], layers, s[1], s[2], experts, shared, k, 4 + r.nextInt(6), 10000.0,
                r.nextBoolean(), 1e-6, 40, eos, routing, LossWeights.defaults());
        int T = longPrompt ? 30 + r.nextInt(11) : 3 + r.nextInt(20); // maxSeq is 40
        int[] tokens = new int[T];
        for (int t = 0; t < T; t++) tokens[t] = 2 + r.nextInt(vocab - 2); // no EOS: one document
        int prompt = longPrompt ? 24 + r.nextInt(T - 24) : 1 + r.nextInt(T - 1);
        int[] kpl = null;
        ExpertSet[] subset = null;
        if (mode == Mode.ELASTIC_K) {
            kpl = new int[layers];
            for (int l = 0; l < layers; l++) kpl[l] = longPrompt ? 3 + r.nextInt(routed - 2) : 1 + r.nextInt(routed);
        } else if (mode == Mode.SUBSET) {
            subset = new ExpertSet[layers];
            for (int l = 0; l < layers; l++) {
                ExpertSet set = new ExpertSet(experts);
                for (int e = 0; e < routed; e++) if (r.nextBoolean()) set.add(e);
                if (set.size() == 0) set.add(r.nextInt(routed));
                for (int e = routed; e < experts; e++) set.add(e);
                subset[l] = set;
            }
        }
        return new Case(c, seed, tokens, prompt, kpl, subset, mode);
    }

    /** The training transformer's logits [T, V] on the whole sequence, routed as the case says. */
    static float[] trainingLogits(MoeModel m, Case cs, ExpertSet[] pools) {
        ModelConfig c = cs.c();
        int T = cs.tokens().length;
        int maxK = cs.kPerLayer() == null ? c.routedK() : Math.max(c.routedK(), Arrays.stream(cs.kPerLayer()).max().getAsInt());
        try (MoeTransformer net = new MoeTransformer(m, T, 1, maxK, GEMM, POOL)) {
            for (int l = 0; l < c.layers(); l++) {
                var ctl = net.control(l).noPools().fixedK(cs.kPerLayer() == null ? c.routedK() : cs.kPerLayer()[l])
                        .capacityFactor(0).subset(cs.subset() == null ? null : cs.subset()[l]);
                if (pools != null) ctl.givenPoolSets(new ExpertSet[] {pools[l]});
            }
            net.erc(false);
            net.setBatch(cs.tokens(), new int[] {0, T}, 1);
            net.forward();
            return net.logits().rows(0, T).toFloatArray();
        }
    }

    static ForwardRunner runner(ModelWeights w, Case cs, int rows, boolean allRows) {
        return runner(w, cs, rows, allRows, GEMM);
    }

    static ForwardRunner runner(ModelWeights w, Case cs, int rows, boolean allRows, Gemm gemm) {
        return runner(w, cs, rows, allRows, false, gemm);
    }

    static ForwardRunner runner(ModelWeights w, Case cs, int rows, boolean allRows, boolean bf16Kv, Gemm gemm) {
        ModelConfig c = cs.c();
        int maxK = cs.kPerLayer() == null ? c.routedK() : Math.max(c.routedK(), Arrays.stream(cs.kPerLayer()).max().getAsInt());
        ForwardRunner f = new ForwardRunner(w, rows, 2, c.maxSeq(), maxK, allRows, bf16Kv, gemm, POOL);
        f.routing(cs.kPerLayer(), cs.subset());
        if (cs.mode() == Mode.EMO_POOL) f.generationPools(c.routing().pool().evalPool());
        return f;
    }

    static void assertClose(float[] want, float[] got, int off, int n, double rel, String what) {
        double scale = 0;
        for (int i = 0; i < n; i++) scale = Math.max(scale, Math.abs(want[off + i]));
        for (int i = 0; i < n; i++) {
            double diff = Math.abs(want[off + i] - got[i]);
            assertTrue(diff <= rel * (1 + scale), what + ": logit " + i + " want " + want[off + i] + " got " + got[i]
                    + " (diff " + diff + ", scale " + scale + ")");
        }
    }

    /**
     * Prefill of the prompt then one-token decode steps (teacher-forced) give the training forward's logits at every
     * position; the full forward of the runner does too. Returns how many expert products ran concurrently (prefill
     * on lanes) in the runners it made.
     */
    static long checkDecodeEqualsFullForward(Case cs, boolean bf16) {
        return checkDecodeEqualsFullForward(cs, bf16, GEMM, bf16 ? 0.08 : 1e-5);
    }

    static long checkDecodeEqualsFullForward(Case cs, boolean bf16, Gemm gemm, double tol) {
        return checkDecodeEqualsFullForward(cs, bf16, false, gemm, tol);
    }

    /** bf16Kv: the decoding runner keeps its KV cache in BF16. */
    static long checkDecodeEqualsFullForward(Case cs, boolean bf16, boolean bf16Kv, Gemm gemm, double tol) {
        ModelConfig c = cs.c();
        int T = cs.tokens().length, V = c.vocab();
        try (MoeModel m = new MoeModel(c).initRandom(cs.seed());
             ModelWeights w = bf16 ? ModelWeights.bf16(m.layout(), m.params()) : ModelWeights.f32(m);
             ForwardRunner inc = runner(w, cs, T, false, bf16Kv, gemm)) {
            int[] tok = cs.tokens();
            // prefill the prompt in slot 1
            inc.forward(Arrays.copyOf(tok, cs.prompt()), new int[] {0, cs.prompt()}, new int[] {0}, new int[] {1}, 1);
            long concurrent = inc.concurrentExpertCalls();
            ExpertSet[] pools = null;
            if (cs.mode() == Mode.EMO_POOL) {
                pools = new ExpertSet[c.layers()];
                for (int l = 0; l < c.layers(); l++) pools[l] = new ExpertSet(c.experts()).copyFrom(inc.pools().pool(1, l));
            }
            float[] want = trainingLogits(m, cs, pools);
            assertClose(want, inc.logits().rows(0, 1).toFloatArray(), (cs.prompt() - 1) * V, V, tol, "prefill " + cs);
            for (int t = cs.prompt(); t < T; t++) {
                inc.forward(new int[] {tok[t]}, new int[] {0, 1}, new int[] {t}, new int[] {1}, 1);
                assertClose(want, inc.logits().rows(0, 1).toFloatArray(), t * V, V, tol, "decode at " + t + " " + cs);
            }
            // decode steps stream every expert in one pass: never concurrent
            assertEquals(concurrent, inc.concurrentExpertCalls(), "decode steps ran experts on lanes");
            if (cs.mode() != Mode.EMO_POOL) {
                try (ForwardRunner full = runner(w, cs, T, true, gemm)) {
                    full.forward(tok, new int[] {0, T}, new int[] {0}, new int[] {0}, 1);
                    float[] all = full.logits().rows(0, T).toFloatArray();
                    for (int t = 0; t < T; t++)
                        assertClose(want, Arrays.copyOfRange(all, t * V, (t + 1) * V), t * V, V, tol, "full forward row " + t);
                    concurrent += full.concurrentExpertCalls();
                }
            }
            return concurrent;
        }
    }

    /**
     * Prompts long enough that the prefill runs each layer's experts concurrently (one expert per thread on a
     * one-thread GEMM): the prefill, the decode after it and the full forward still equal the training forward.
     */
    @Property(tries = 24)
    void longPromptsOnConcurrentExpertsEqualTheFullForward(@ForAll long seed, @ForAll @IntRange(min = 0, max = 3) int mode,
                                                           @ForAll boolean bf16) {
        Case cs = randomCase(seed, Mode.values()[bf16 ? mode % 3 : mode], true);
        assertConcurrent(cs, checkDecodeEqualsFullForward(cs, bf16));
    }

    /**
     * The same on oneDNN, what generate and serve run: each lane is dnnl_sgemm on one OpenMP thread (F32 weights),
     * or oneDNN's bf16 matmul on one thread over bf16-rounded activations (BF16 weights on a CPU with native bf16;
     * elsewhere the Java streaming kernel and dequantised F32). F32 within 1e-4 (oneDNN's blocking rounds
     * differently from the reference's order), BF16 within the bf16 tolerance.
     */
    @Property(tries = 12)
    void longPromptsOnOneDnnLanesEqualTheFullForward(@ForAll long seed, @ForAll @IntRange(min = 0, max = 3) int mode,
                                                     @ForAll boolean bf16) {
        assertTrue(OneDnn.available(), OneDnn.reason());
        Case cs = randomCase(seed, Mode.values()[bf16 ? mode % 3 : mode], true);
        assertConcurrent(cs, checkDecodeEqualsFullForward(cs, bf16, ONEDNN, bf16 ? 0.08 : 1e-4));
    }

    /**
     * What "the same text whatever else is in the batch" rests on: a sequence's logits, to the bit, do not depend on
     * the other sequences decoded with it. A long prompt (experts on lanes, products above the streaming kernel's
     * 16 rows) is prefilled, as the Generator does, in a forward of its own, in a runner alone and in a runner where
     * two other prompts were prefilled before and after it; then it is decoded alone, and in decode steps with the two
     * others (a step of 3 rows; and of {@code extra} more sequences, so that products have more than 16 rows). Every
     * row of logits equal. On the Java GEMM and on oneDNN (the default backend), F32 and BF16 weights, every routing
     * mode. (Packed into one prefill forward, the prompt's logits differed in the last bits on every backend — the
     * reason the Generator prefills prompt by prompt.)
     */
    @Property(tries = 24)
    void aSequencesLogitsDoNotDependOnTheBatch(@ForAll long seed, @ForAll @IntRange(min = 0, max = 3) int mode,
                                               @ForAll boolean bf16, @ForAll boolean oneDnn,
                                               @ForAll @IntRange(min = 0, max = 20) int extra) {
        assertTrue(!oneDnn || OneDnn.available(), OneDnn.reason());
        Case cs = randomCase(seed, Mode.values()[bf16 ? mode % 3 : mode], true);
        Gemm gemm = oneDnn ? ONEDNN : GEMM;
        ModelConfig c = cs.c();
        int V = c.vocab(), P = cs.prompt(), T = cs.tokens().length, S = 3 + extra;
        SplittableRandom r = new SplittableRandom(seed ^ 0x77);
        int[][] others = new int[S][];
        for (int i = 0; i < S; i++) {
            others[i] = new int[1 + r.nextInt(20)];
            for (int t = 0; t < others[i].length; t++) others[i][t] = 2 + r.nextInt(V - 2);
        }
        int[] a = Arrays.copyOf(cs.tokens(), P);
        int maxK = cs.kPerLayer() == null ? c.routedK() : Math.max(c.routedK(), Arrays.stream(cs.kPerLayer()).max().getAsInt());
        try (MoeModel m = new MoeModel(c).initRandom(cs.seed());
             ModelWeights w = bf16 ? ModelWeights.bf16(m.layout(), m.params()) : ModelWeights.f32(m);
             ForwardRunner alone = runner(w, cs, P, false, gemm);
             ForwardRunner shared = new ForwardRunner(w, Math.max(P, S), S, c.maxSeq(), maxK, false, false, gemm, POOL)) {
            shared.routing(cs.kPerLayer(), cs.subset());
            if (cs.mode() == Mode.EMO_POOL) shared.generationPools(c.routing().pool().evalPool());
            alone.forward(a, new int[] {0, P}, new int[] {0}, new int[] {0}, 1);
            float[] want = alone.logits().rows(0, 1).toFloatArray();
            // the others in slots 1.., A in slot 0, prefilled one forward each: others[1] before A, the rest after
            shared.forward(others[1], new int[] {0, others[1].length}, new int[] {0}, new int[] {1}, 1);
            shared.forward(a, new int[] {0, P}, new int[] {0}, new int[] {0}, 1);
            assertArrayEquals(want, shared.logits().rows(0, 1).toFloatArray(), "prefill after another prompt: " + cs);
            for (int i = 2; i < S; i++)
                shared.forward(others[i], new int[] {0, others[i].length}, new int[] {0}, new int[] {i}, 1);
            int[] step = new int[S], pos = new int[S], starts = new int[S + 1], slots = new int[S];
            for (int t = P; t < T; t++) {
                alone.forward(new int[] {cs.tokens()[t]}, new int[] {0, 1}, new int[] {t}, new int[] {0}, 1);
                // A as row 1 of the step: the rows of the other sequences before and after it
                for (int i = 0; i < S; i++) {
                    int sl = i == 1 ? 0 : i == 0 ? 1 : i;
                    slots[i] = sl;
                    step[i] = sl == 0 ? cs.tokens()[t] : others[sl][t % others[sl].length];
                    pos[i] = sl == 0 ? t : others[sl].length + t - P;
                    starts[i + 1] = i + 1;
                }
                shared.forward(step, starts, pos, slots, S);
                assertArrayEquals(alone.logits().rows(0, 1).toFloatArray(), shared.logits().rows(1, 1).toFloatArray(),
                        "decode at " + t + " beside " + (S - 1) + " others: " + cs);
            }
        }
    }

    static void assertConcurrent(Case cs, long concurrent) {
        // with every routed expert open (>= 3 of them get rows in every layer) both products of every layer run on
        // lanes; a subset or an EMO pool of one expert leaves a single product, which runs on its own
        if (cs.mode() == Mode.STANDARD || cs.mode() == Mode.ELASTIC_K)
            assertTrue(concurrent >= cs.c().layers() * 2L,
                    "the prefill should run every layer's two expert products on lanes, ran " + concurrent + ": " + cs);
    }

    @Property(tries = 40)
    void kvCachedDecodeEqualsFullForward(@ForAll long seed, @ForAll @IntRange(min = 0, max = 3) int mode) {
        checkDecodeEqualsFullForward(randomCase(seed, Mode.values()[mode]), false);
    }

    @Property(tries = 20)
    void bf16WeightsStayWithinBf16ToleranceOfF32(@ForAll long seed, @ForAll @IntRange(min = 0, max = 2) int mode) {
        checkDecodeEqualsFullForward(randomCase(seed, Mode.values()[mode]), true);
    }

    /**
     * A BF16 KV cache (keys and values rounded to bf16 as they are appended; the prompt's own attention is F32), with
     * F32 or BF16 weights: the prefill and every teacher-forced decode step within the bf16 tolerance of the training
     * forward, in every routing mode.
     */
    @Property(tries = 20)
    void bf16KvCacheStaysWithinBf16ToleranceOfF32(@ForAll long seed, @ForAll @IntRange(min = 0, max = 3) int mode,
                                                   @ForAll boolean bf16Weights) {
        Case cs = randomCase(seed, Mode.values()[bf16Weights ? mode % 3 : mode]);
        checkDecodeEqualsFullForward(cs, bf16Weights, true, GEMM, 0.08);
    }

    @Property(tries = 15)
    void elasticKAtTheTrainedKIsThePlainForward(@ForAll long seed) {
        Case cs = randomCase(seed, Mode.STANDARD);
        ModelConfig c = cs.c();
        int T = cs.tokens().length;
        int[] trained = new int[c.layers()];
        Arrays.fill(trained, c.routedK());
        try (MoeModel m = new MoeModel(c).initRandom(seed);
             ModelWeights w = ModelWeights.f32(m);
             ForwardRunner plain = runner(w, cs, T, true);
             ForwardRunner elastic = runner(w, new Case(c, seed, cs.tokens(), cs.prompt(), trained, null, Mode.ELASTIC_K), T, true)) {
            plain.forward(cs.tokens(), new int[] {0, T}, new int[] {0}, new int[] {0}, 1);
            elastic.forward(cs.tokens(), new int[] {0, T}, new int[] {0}, new int[] {0}, 1);
            assertArrayEquals(plain.logits().rows(0, T).toFloatArray(), elastic.logits().rows(0, T).toFloatArray());
        }
    }

    /** Greedy and seeded sampling: the same tokens alone, twice, and in a batch with other prompts. */
    @Property(tries = 12)
    void generationIsDeterministicAndIndependentOfTheBatch(@ForAll long seed, @ForAll boolean greedy) {
        Case cs = randomCase(seed, Mode.STANDARD);
        ModelConfig c = cs.c();
        SplittableRandom r = new SplittableRandom(seed ^ 0x5A5A);
        List<GenerationRequest> reqs = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            int[] p = new int[1 + r.nextInt(8)];
            for (int t = 0; t < p.length; t++) p[t] = r.nextInt(c.vocab());
            Sampling s = greedy ? Sampling.ofGreedy() : Sampling.of(0.7 + r.nextDouble(), r.nextInt(5), 0.5 + r.nextDouble() / 2, r.nextLong());
            reqs.add(new GenerationRequest(p, 1 + r.nextInt(12), s, r.nextBoolean(), List.of()));
        }
        try (MoeModel m = new MoeModel(c).initRandom(seed);
             InferenceModel im = InferenceModel.of(m, null, false)) {
            List<int[]> alone = new ArrayList<>();
            for (GenerationRequest q : reqs) {
                try (Generator g = im.generator(Generator.Options.defaults(GEMM, POOL).withSlots(1).withPositions(c.maxSeq()))) {
                    alone.add(g.generate(List.of(q), null).get(0).tokens());
                }
            }
            for (int slots : new int[] {4, 2}) {
                try (Generator g = im.generator(Generator.Options.defaults(GEMM, POOL).withSlots(slots).withPositions(c.maxSeq()))) {
                    List<GenerationSession> together = g.generate(reqs, null);
                    for (int i = 0; i < reqs.size(); i++)
                        assertArrayEquals(alone.get(i), together.get(i).tokens(), "request " + i + " with " + slots + " slots");
                }
            }
        }
    }
}
