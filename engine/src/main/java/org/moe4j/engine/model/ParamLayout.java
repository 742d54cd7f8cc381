package org.moe4j.engine.model;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;

/**
 * Where every parameter of a model lives in one flat float32 buffer, under its Hugging Face name (the EMO layout,
 * ALGORITHMS.md section 1). Parameters, gradients and both AdamW moments share this layout, so a step can treat
 * them as one vector (global norm, optimizer) and a checkpoint can name each tensor.
 *
 * <p>Order per layer: pre-attention norm; q, k, v, o projections; q/k norms (when qkNorm); pre-feed-forward norm;
 * router; then per expert gate_proj (W1) directly followed by up_proj (W3), so that [W1; W3] is one [2h, d]
 * matrix and one GEMM computes both, then down_proj (W2). A layer has its own E_l experts ({@link
 * ModelConfig#experts(int)}). With tied embeddings there is no lm_head tensor: {@link #entry} of
 * {@link #lmHead()} is the embedding's entry, so the LM head reads the embedding and adds its gradient to the
 * embedding's, and {@link #entries()} lists the one tensor once.
 *
 * <p>Expert parallel: a rank's layout ({@link #ParamLayout(ModelConfig, int, int)}) is the same list with only the
 * routed experts it owns (first .. first + owned - 1 of every layer, global ids in the names) and every other tensor,
 * in the same order; so the rank's parameters, gradients and moments hold dense + owned experts, and {@link #whole()}
 * is the layout of the checkpoint. Single-process training uses the whole layout.
 */
public final class ParamLayout {
    /** One tensor: name, shape, element offset in the flat buffer, whether AdamW decays it. */
    public record Entry(String name, int[] shape, long offset, long numel, boolean decay) {
        public Entry {
            shape = shape.clone();
        }

        @Override
        public int[] shape() {
            return shape.clone();
        }

        @Override
        public String toString() {
            return name + Arrays.toString(shape);
        }
    }

    private final List<Entry> entries;
    private final Map<String, Entry> byName;
    private final long total;
    private final ModelConfig config;
    /** The routed experts held: first .. first + held - 1 of every layer (the whole layout: 0 .. E_l' - 1). */
    private final int firstExpert, heldExperts;
    private final ParamLayout whole;

    /** The whole model: every expert of every layer (the checkpoint layout). */
    public ParamLayout(ModelConfig c) {
        this(c, 0, -1);
    }

    /**
     * One expert-parallel rank's layout: the routed experts {@code first} .. {@code first + held - 1} of every layer
     * (the model must have the same routed experts in every layer) and every other tensor (attention, norms, routers,
     * shared experts, embeddings, LM head), in the whole layout's order. {@code held = -1}: every expert.
     */
    public ParamLayout(ModelConfig c, int first, int held) {
        this.config = c;
        if (held >= 0) {
            for (int l = 0; l < c.layers(); l++)
                if (first < 0 || held < 1 || first + held > c.routedExperts(l))
                    throw new Moe4jException("layout: routed experts " + first + ".." + (first + held - 1) + " of layer "
                            + l + ", which has " + c.routedExperts(l) + " (0.." + (c.routedExperts(l) - 1) + ")");
            boolean all = first == 0;
            for (int l = 0; l < c.layers(); l++) all &= held == c.routedExperts(l);
            if (all) held = -1;
        }
        this.firstExpert = held < 0 ? 0 : first;
        this.heldExperts = held;
        this.whole = held < 0 ? this : new ParamLayout(c);
        List<Entry> list = new ArrayList<>();
        long[] at = {0};
        int d = c.d(), dh = c.headSize(), qw = c.heads() * dh, kw = c.kvHeads() * dh, h = c.expertHidden();
        add(list, at, embedTokens(), false, c.vocab(), d);
        for (int l = 0; l < c.layers(); l++) {
            add(list, at, preAttentionNorm(l), false, d);
            add(list, at, qProj(l), true, qw, d);
            add(list, at, kProj(l), true, kw, d);
            add(list, at, vProj(l), true, kw, d);
            add(list, at, oProj(l), true, d, qw);
            if (c.qkNorm()) {
                add(list, at, qNorm(l), false, qw);
                add(list, at, kNorm(l), false, kw);
            }
            add(list, at, preFeedForwardNorm(l), false, d);
            add(list, at, router(l), true, c.experts(l), d); // E_l: a pruned layer may keep fewer experts
            for (int j = 0; j < c.experts(l); j++) {
                if (!holds(l, j)) continue;
                add(list, at, gateProj(l, j), true, h, d);
                add(list, at, upProj(l, j), true, h, d);
                add(list, at, downProj(l, j), true, d, h);
            }
        }
        add(list, at, finalNorm(), false, d);
        if (!c.tied()) add(list, at, lmHead(), true, c.vocab(), d);
        this.entries = Collections.unmodifiableList(list);
        Map<String, Entry> m = new LinkedHashMap<>();
        for (Entry e : list) m.put(e.name(), e);
        // tied: the LM head IS the embedding (one tensor, one gradient: the sum of both uses); its name leads there
        if (c.tied()) m.put(lmHead(), m.get(embedTokens()));
        this.byName = Collections.unmodifiableMap(m);
        this.total = at[0];
    }

    private static void add(List<Entry> list, long[] at, String name, boolean decay, int... shape) {
        long n = 1;
        for (int s : shape) n *= s;
        list.add(new Entry(name, shape, at[0], n, decay));
        at[0] += n;
    }

    public static String embedTokens() {
        return "model.embed_tokens.weight";
    }

    public static String preAttentionNorm(int l) {
        return "model.layers." + l + ".pre_attention_layernorm.weight";
    }

    public static String qProj(int l) {
        return "model.layers." + l + ".self_attn.q_proj.weight";
    }

    public static String kProj(int l) {
        return "model.layers." + l + ".self_attn.k_proj.weight";
    }

    public static String vProj(int l) {
        return "model.layers." + l + ".self_attn.v_proj.weight";
    }

    public static String oProj(int l) {
        return "model.layers." + l + ".self_attn.o_proj.weight";
    }

    public static String qNorm(int l) {
        return "model.layers." + l + ".self_attn.q_norm.weight";
    }

    public static String kNorm(int l) {
        return "model.layers." + l + ".self_attn.k_norm.weight";
    }

    public static String preFeedForwardNorm(int l) {
        return "model.layers." + l + ".pre_feedforward_layernorm.weight";
    }

    public static String router(int l) {
        return "model.layers." + l + ".mlp.gate.weight";
    }

    public static String gateProj(int l, int j) {
        return "model.layers." + l + ".mlp.experts." + j + ".gate_proj.weight";
    }

    public static String upProj(int l, int j) {
        return "model.layers." + l + ".mlp.experts." + j + ".up_proj.weight";
    }

    public static String downProj(int l, int j) {
        return "model.layers." + l + ".mlp.experts." + j + ".down_proj.weight";
    }

    public static String finalNorm() {
        return "model.norm.weight";
    }

    public static String lmHead() {
        return "lm_head.weight";
    }

    public ModelConfig config() {
        return config;
    }

    /** Whether this layout holds expert j of layer l (shared experts, j >= E_l', always). */
    public boolean holds(int l, int j) {
        return heldExperts < 0 || j >= config.routedExperts(l) || (j >= firstExpert && j < firstExpert + heldExperts);
    }

    /** Whether this is the whole model's layout (every expert); false for an expert-parallel rank's. */
    public boolean isWhole() {
        return heldExperts < 0;
    }

    /** The first routed expert held (0 for the whole layout). */
    public int firstExpert() {
        return firstExpert;
    }

    /** The routed experts held per layer (the whole layout: the config's E'). */
    public int heldExperts() {
        return heldExperts < 0 ? config.routedExperts() : heldExperts;
    }

    /** The whole model's layout (this one when {@link #isWhole()}): the checkpoint's offsets. */
    public ParamLayout whole() {
        return whole;
    }

    /** Every tensor in buffer order. */
    public List<Entry> entries() {
        return entries;
    }

    /** Floats in the flat buffer. */
    public long total() {
        return total;
    }

    public boolean has(String name) {
        return byName.containsKey(name);
    }

    /** The entry called {@code name}; the error lists what a model of this config has. */
    public Entry entry(String name) {
        Entry e = byName.get(name);
        if (e == null && whole != this && whole.has(name))
            throw new Moe4jException("parameter '" + name + "' is not held here: this expert-parallel rank holds routed "
                    + "experts " + firstExpert + ".." + (firstExpert + heldExperts - 1) + " of each layer");
        if (e == null)
            throw new Moe4jException("parameter '" + name + "' does not exist in this model (" + entries.size()
                    + " tensors, e.g. " + entries.get(0).name() + ", " + entries.get(entries.size() - 1).name() + ")");
        return e;
    }

    public long offset(String name) {
        return entry(name).offset();
    }
}
