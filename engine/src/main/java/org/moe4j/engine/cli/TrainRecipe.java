package org.moe4j.engine.cli;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ConfigException;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.MatryoshkaConfig;
import org.moe4j.engine.config.MatryoshkaMode;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.PoolConfig;
import org.moe4j.engine.config.PoolMode;
import org.moe4j.engine.config.RoutingConfig;
import picocli.CommandLine.Option;

/**
 * The model and routing recipe of {@code ./moe4j train}, as options that compose: a base config ({@code --config}),
 * then the {@code --routing} shorthands (any of standard, emo, matryoshka, capacity, shared, joined by {@code +} or
 * {@code ,}), then each explicit option. An option left out keeps the base config's value, or — for a method that a
 * shorthand or an option switches on — the method's published default computed from the final sizes (EMO pools
 * 1/16 .. all of E' with an evaluation pool of E'/4, Matryoshka k' 1 .. min(E', 2k'), capacity 1.25 / 2.0).
 * Held as a picocli mixin so that the train command stays one file of training logic.
 */
public final class TrainRecipe {
    /** Shorthands {@code --routing} takes. */
    static final List<String> SHORTHANDS = List.of("standard", "emo", "matryoshka", "capacity", "shared");

    @Option(names = "--config", defaultValue = "tiny", paramLabel = "NAME|FILE", order = 1,
            description = "base model: tiny (V 256, d 64, 2 layers, E 8, k 2), quickstart (V 2048, d 128, 4 layers, "
                    + "E 8, k 2), small (V 8192, d 256, 4 layers, E 16, k 2), bench (V 8192, d 512, 4 layers, E 32, "
                    + "k 4), or a ModelConfig JSON file (its routing and loss weights are kept unless changed below); "
                    + "with --data the vocabulary and EOS come from the data's tokenizer (default: ${DEFAULT-VALUE})")
    String config;

    @Option(names = "--routing", paramLabel = "M[+M...]", order = 2,
            description = "shorthands that compose, joined by + or ,: standard (top-k, global LB, no pool), emo "
                    + "(EMO document pools), matryoshka (k' sampled per layer per step), capacity (capacity factor "
                    + "1.25 / eval 2.0), shared (one shared expert, k + 1); e.g. emo+matryoshka. Options below override "
                    + "them (default: the base config's routing)")
    String routing;

    // ------------------------------------------------------------------ model size
    @Option(names = "--vocab", paramLabel = "N", order = 10,
            description = "vocabulary (default: the base config's; with --data always the data tokenizer's)")
    Integer vocab;
    @Option(names = "--d", paramLabel = "N", order = 11, description = "model width (default: the base config's)")
    Integer d;
    @Option(names = "--layers", paramLabel = "N", order = 12, description = "layers (default: the base config's)")
    Integer layers;
    @Option(names = "--heads", paramLabel = "N", order = 13,
            description = "attention heads; d / heads must be even (default: the base config's, or d / 64 when --d "
                    + "changes and the base head count does not divide it)")
    Integer heads;
    @Option(names = "--kv-heads", paramLabel = "N", order = 14,
            description = "key/value heads, dividing --heads (default: the base config's when it divides --heads, else --heads)")
    Integer kvHeads;
    @Option(names = "--experts", paramLabel = "E", order = 15,
            description = "experts per layer, shared ones included (default: the base config's)")
    Integer experts;
    @Option(names = "--shared", paramLabel = "S", order = 16,
            description = "shared experts (always on, gate 1), the last S of E (default: the base config's, 1 with "
                    + "--routing shared)")
    Integer shared;
    @Option(names = "--k", paramLabel = "K", order = 17,
            description = "experts per token, shared ones included, so k' = K - S are routed (default: the base "
                    + "config's routed k' plus S)")
    Integer k;
    @Option(names = "--expert-hidden", paramLabel = "H", order = 18,
            description = "hidden size of each SwiGLU expert (default: the base config's)")
    Integer expertHidden;
    @Option(names = "--max-seq", paramLabel = "T", order = 19,
            description = "longest sequence (RoPE and attention buffers) (default: the base config's)")
    Integer maxSeq;

    // ------------------------------------------------------------------ routing methods
    @Option(names = "--pools", negatable = true, order = 20,
            description = "EMO document pools on (--no-pools: off) (default: on with --routing emo or any --pool-* "
                    + "option, else the base config's)")
    Boolean pools;
    @Option(names = "--pool-min", paramLabel = "P", order = 21,
            description = "smallest training pool (default: max(1, E'/16))")
    Integer poolMin;
    @Option(names = "--pool-max", paramLabel = "P", order = 22, description = "largest training pool (default: E')")
    Integer poolMax;
    @Option(names = "--eval-pool", paramLabel = "P", order = 23,
            description = "EMO evaluation pool, 0 = none (default: max(1, E'/4))")
    Integer evalPool;
    @Option(names = "--matryoshka", paramLabel = "KMIN..KMAX|off", order = 24,
            description = "Matryoshka k': each layer draws its routed k' in this range per step, gates renormalised "
                    + "(default: off, or 1..min(E', 2k') with --routing matryoshka)")
    String matryoshka;
    @Option(names = "--matryoshka-dist", paramLabel = "uniform|power", order = 25,
            description = "how k' is drawn: uniform, or power with P(k) ~ k^(1/tau) (default: uniform)")
    String matryoshkaDist;
    @Option(names = "--matryoshka-tau", paramLabel = "TAU", order = 26, description = "tau of power (default: 2.0)")
    Double matryoshkaTau;
    @Option(names = "--capacity", paramLabel = "CF", order = 27,
            description = "training capacity factor, 0 = none; overflow dropped in position order (default: 0, 1.25 "
                    + "with --routing capacity)")
    Double capacity;
    @Option(names = "--eval-capacity", paramLabel = "CF", order = 28,
            description = "evaluation capacity factor, 0 = none (default: 2.0 when training has a capacity, else 0)")
    Double evalCapacity;
    @Option(names = "--normalize-topk", arity = "1", paramLabel = "true|false", order = 29,
            description = "divide the picked gates by their sum (default: true with Matryoshka, else the base config's)")
    Boolean normalizeTopK;
    @Option(names = "--lb-scope", paramLabel = "global|local", order = 30,
            description = "load balance over the whole micro-batch (global, EMO) or per sequence (local) (default: the "
                    + "base config's, global with a --routing shorthand)")
    String lbScope;

    // ------------------------------------------------------------------ loss weights
    @Option(names = "--lb", paramLabel = "W", order = 40,
            description = "load-balance weight, total over layers (default: the base config's; named configs 0.1)")
    Double lb;
    @Option(names = "--z", paramLabel = "W", order = 41,
            description = "router z-loss weight, total over layers (default: the base config's; named configs 0.001)")
    Double z;
    @Option(names = "--erc", paramLabel = "W", order = 42,
            description = "ERC (expert-router coupling) weight, 0 = off (default: the base config's; named configs 1.0)")
    Double erc;
    @Option(names = "--erc-alpha", paramLabel = "A", order = 43,
            description = "ERC margin alpha, 0 = the paper's rule: 1 up to 64 routed experts, 0.5 above (default: the "
                    + "base config's; named configs 0)")
    Double ercAlpha;
    @Option(names = "--out-z", paramLabel = "W", order = 44,
            description = "output z-loss weight (1e-5 in OLMoE), 0 = off (default: the base config's; named configs 0)")
    Double outZ;

    /** The options that change the model or its losses, as given on the command line (for refusing them on resume). */
    List<String> given() {
        List<String> g = new ArrayList<>();
        Object[][] all = {{"--routing", routing}, {"--vocab", vocab}, {"--d", d}, {"--layers", layers},
                {"--heads", heads}, {"--kv-heads", kvHeads}, {"--experts", experts}, {"--shared", shared}, {"--k", k},
                {"--expert-hidden", expertHidden}, {"--max-seq", maxSeq}, {"--pools", pools}, {"--pool-min", poolMin},
                {"--pool-max", poolMax}, {"--eval-pool", evalPool}, {"--matryoshka", matryoshka},
                {"--matryoshka-dist", matryoshkaDist}, {"--matryoshka-tau", matryoshkaTau}, {"--capacity", capacity},
                {"--eval-capacity", evalCapacity}, {"--normalize-topk", normalizeTopK}, {"--lb-scope", lbScope},
                {"--lb", lb}, {"--z", z}, {"--erc", erc}, {"--erc-alpha", ercAlpha}, {"--out-z", outZ}};
        for (Object[] o : all) if (o[1] != null) g.add(o[0] + " " + o[1]);
        return g;
    }

    /** The options given that change a tensor's shape (vocabulary, widths, layers, experts), as "--name value". */
    List<String> givenSizes() {
        List<String> g = new ArrayList<>();
        Object[][] sizes = {{"--vocab", vocab}, {"--d", d}, {"--layers", layers}, {"--heads", heads},
                {"--kv-heads", kvHeads}, {"--experts", experts}, {"--shared", shared}, {"--expert-hidden", expertHidden}};
        for (Object[] o : sizes) if (o[1] != null) g.add(o[0] + " " + o[1]);
        return g;
    }

    /** The base config of {@code --config}. */
    ModelConfig base() {
        return TrainCommand.baseConfig(config);
    }

    /** The base config with the shorthands and options applied. */
    ModelConfig build() {
        return apply(base());
    }

    /** {@code base} with the shorthands and options applied; a rule a value breaks is reported with its option. */
    ModelConfig apply(ModelConfig base) {
        Set<String> parts = shorthands(routing);
        boolean fresh = !parts.isEmpty(); // a shorthand starts the routing from standard, not from the base's
        boolean sharedShort = parts.contains("shared");
        int e = pick(experts, base.experts());
        int s = shared != null ? shared : sharedShort ? Math.max(1, base.sharedExperts()) : base.sharedExperts();
        int kk = k != null ? k : Math.min(e, base.routedK() + s);
        int dd = pick(d, base.d());
        int hh = heads != null ? heads : dd % base.heads() == 0 && (dd / base.heads()) % 2 == 0 ? base.heads()
                : Math.max(1, dd / 64);
        int kv = kvHeads != null ? kvHeads : hh % base.kvHeads() == 0 ? base.kvHeads() : hh;
        if (k == null && kk <= s) kk = Math.min(e, s + 1);
        int routedE = e - s, routedK = kk - s;

        RoutingConfig br = base.routing();
        // EMO pools
        boolean poolsOn = pools != null ? pools
                : parts.contains("emo") || poolMin != null || poolMax != null || evalPool != null
                || (!fresh && br.pool().mode() == PoolMode.EMO);
        if (Boolean.FALSE.equals(pools) && (poolMin != null || poolMax != null || evalPool != null))
            throw new Moe4jException("--no-pools with --pool-min/--pool-max/--eval-pool: pool sizes need pools on");
        PoolConfig pool = PoolConfig.none();
        if (poolsOn) {
            boolean inherit = !fresh && br.pool().mode() == PoolMode.EMO && pools == null && routedE == base.routedExperts();
            PoolConfig def = inherit ? br.pool() : PoolConfig.emo(routedE);
            int pmin = pick(poolMin, def.poolMin()), pmax = pick(poolMax, def.poolMax()), pe = pick(evalPool, def.evalPool());
            range("--pool-min", pmin, 1, routedE);
            range("--pool-max", pmax, pmin, routedE);
            range("--eval-pool", pe, 0, routedE);
            pool = new PoolConfig(PoolMode.EMO, pmin, pmax, pe);
        }
        // Matryoshka k'
        MatryoshkaConfig mat = !fresh ? br.matryoshka() : MatryoshkaConfig.off();
        boolean matBefore = !fresh && mat.mode() != MatryoshkaMode.OFF;
        boolean matOn = parts.contains("matryoshka") || matBefore;
        int kMin = mat.kMin(), kMax = mat.kMax();
        if (parts.contains("matryoshka") || (matOn && !fresh && routedE != base.routedExperts())) {
            kMin = 1;
            kMax = Math.min(routedE, 2 * routedK);
        }
        if (matryoshka != null) {
            if (matryoshka.equals("off")) {
                matOn = false;
            } else {
                int[] r = rangeOf(matryoshka);
                matOn = true;
                kMin = r[0];
                kMax = r[1];
            }
        }
        if (!matOn && (matryoshkaDist != null || matryoshkaTau != null))
            throw new Moe4jException("--matryoshka-dist/--matryoshka-tau need Matryoshka on (--matryoshka KMIN..KMAX "
                    + "or --routing matryoshka)");
        if (matOn) {
            range("--matryoshka (kMin)", kMin, 1, routedE);
            range("--matryoshka (kMax)", kMax, kMin, routedE);
            MatryoshkaMode mode = matryoshkaDist == null ? (mat.mode() == MatryoshkaMode.OFF ? MatryoshkaMode.UNIFORM : mat.mode())
                    : switch (matryoshkaDist) {
                case "uniform" -> MatryoshkaMode.UNIFORM;
                case "power" -> MatryoshkaMode.POWER;
                default -> throw new Moe4jException("--matryoshka-dist " + matryoshkaDist + ": expected uniform or power");
            };
            mat = new MatryoshkaConfig(mode, kMin, kMax, matryoshkaTau != null ? matryoshkaTau : mat.tau());
        } else {
            mat = MatryoshkaConfig.off();
        }
        // capacity
        double cf = capacity != null ? capacity : parts.contains("capacity") ? 1.25 : fresh ? 0 : br.capacityFactor();
        double ecf = evalCapacity != null ? evalCapacity
                : parts.contains("capacity") || (capacity != null && capacity > 0) ? 2.0
                : fresh || capacity != null ? 0 : br.evalCapacityFactor();
        // Matryoshka renormalises its gates; a recipe that keeps the base's Matryoshka keeps the base's choice
        boolean norm = normalizeTopK != null ? normalizeTopK
                : fresh ? matOn : matOn && !matBefore || br.normalizeTopK();
        LbScope scope = lbScope == null ? (fresh ? LbScope.GLOBAL : br.lbScope()) : switch (lbScope) {
            case "global" -> LbScope.GLOBAL;
            case "local" -> LbScope.LOCAL;
            default -> throw new Moe4jException("--lb-scope " + lbScope + ": expected global or local");
        };
        LossWeights bl = base.loss();
        try {
            RoutingConfig r = new RoutingConfig(norm, !fresh && br.softmaxOverAll(), pool, mat, cf, ecf, scope);
            LossWeights w = new LossWeights(pick(lb, bl.lb()), pick(z, bl.routerZ()), pick(erc, bl.erc()),
                    pick(outZ, bl.outputZ()), pick(ercAlpha, bl.ercAlpha()));
            // a base with per-layer expert counts (a pruned checkpoint's config) keeps them while its sizes do
            int ll = pick(layers, base.layers());
            boolean sameExperts = ll == base.layers() && e == base.experts() && s == base.sharedExperts() && kk == base.k();
            if (!sameExperts && (base.layerExperts() != null || base.layerK() != null))
                throw new Moe4jException("train recipe: the base config has a different number of experts or k per "
                        + "layer (layerExperts/layerK); --layers, --experts, --shared and --k cannot resize it");
            return new ModelConfig(pick(vocab, base.vocab()), dd, ll, hh, kv, e, s, kk,
                    pick(expertHidden, base.expertHidden()), base.ropeTheta(), base.qkNorm(), base.normEps(),
                    pick(maxSeq, base.maxSeq()), base.eosId() < pick(vocab, base.vocab()) ? base.eosId() : 0, r, w,
                    sameExperts ? base.layerExperts() : null, sameExperts ? base.layerK() : null, base.tieEmbeddings());
        } catch (ConfigException ex) {
            throw new Moe4jException("train recipe: " + optionOf(ex) + ": " + ex.getMessage());
        }
    }

    /** The shorthands of {@code --routing}, in order, each once; empty for null. */
    static Set<String> shorthands(String routing) {
        Set<String> parts = new LinkedHashSet<>();
        if (routing == null) return parts;
        for (String p : routing.split("[+,]", -1)) {
            String t = p.trim().toLowerCase(Locale.ROOT);
            if (!SHORTHANDS.contains(t)) {
                if (routing.equals(p)) // one method: the message the single-method CLI always gave
                    throw new Moe4jException("--routing " + routing + ": expected standard, emo, matryoshka, capacity or shared");
                throw new Moe4jException("--routing " + routing + ": '" + t + "' is not one of " + String.join(", ", SHORTHANDS)
                        + " (join several with +, e.g. emo+matryoshka)");
            }
            parts.add(t);
        }
        return parts;
    }

    /** "1..4" (or "1-4", or "4" for 4..4) as {min, max}. */
    static int[] rangeOf(String spec) {
        String[] p = spec.contains("..") ? spec.split("\\.\\.", -1) : spec.split("-", -1);
        try {
            int a = Integer.parseInt(p[0].trim()), b = p.length > 1 ? Integer.parseInt(p[1].trim()) : a;
            if (p.length > 2) throw new NumberFormatException();
            return new int[]{a, b};
        } catch (NumberFormatException ex) {
            throw new Moe4jException("--matryoshka " + spec + ": expected KMIN..KMAX (e.g. 1..4), K, or off");
        }
    }

    private static void range(String option, int v, int lo, int hi) {
        if (v < lo || v > hi)
            throw new Moe4jException(option + " " + v + ": must be in [" + lo + ", " + hi + "] (routed experts E' = E - S bound it)");
    }

    private static int pick(Integer v, int dflt) {
        return v != null ? v : dflt;
    }

    private static double pick(Double v, double dflt) {
        return v != null ? v : dflt;
    }

    /** The train option behind a config rule (ModelConfig.k -> --k). */
    static String optionOf(ConfigException ex) {
        String f = ex.field() == null ? "" : ex.field();
        return switch (f.substring(f.lastIndexOf('.') + 1)) {
            case "vocab" -> "--vocab";
            case "d" -> ex.rule() != null && ex.rule().contains("heads") ? "--d and --heads" : "--d";
            case "layers" -> "--layers";
            case "heads" -> "--heads";
            case "kvHeads" -> "--kv-heads";
            case "experts" -> "--experts";
            case "sharedExperts" -> "--shared";
            case "k" -> "--k";
            case "expertHidden" -> "--expert-hidden";
            case "maxSeq" -> "--max-seq";
            case "kMax", "kMin" -> "--matryoshka";
            case "poolMin" -> "--pool-min";
            case "poolMax" -> "--pool-max";
            case "evalPool" -> "--eval-pool";
            case "capacityFactor" -> "--capacity";
            case "evalCapacityFactor" -> "--eval-capacity";
            case "lb" -> "--lb";
            case "routerZ" -> "--z";
            case "erc" -> "--erc";
            case "ercAlpha" -> "--erc-alpha";
            case "outputZ" -> "--out-z";
            default -> "the options";
        };
    }
}
