package org.moe4j.engine.cli;

import java.util.ArrayList;
import java.util.List;
import org.moe4j.Moe4jException;

/**
 * The EMO-versus-standard study (docs/RESULTS.md) as data: the corpus, one architecture and token budget shared by
 * every arm, the arms (routing recipe and seed), and the evaluations run on each. {@link StudyCommand} turns it into
 * prepare-data, train, eval and analyze command lines; {@code ./moe4j study plan} prints them.
 *
 * @param size         the plan's name ({@code default} or {@code tiny})
 * @param prepare      prepare-data options without {@code --out}
 * @param model        train options of the shared architecture and loss weights
 * @param training     train options of the shared budget and schedule (steps, batch, seq, lr, ...)
 * @param arms         the arms, in the order they are run and reported
 * @param evals        the eval runs of every arm
 * @param kEval        the routed k' values of the k sweep (1 .. k_max)
 * @param evalTokens   validation tokens scored per domain
 * @param analyze      analyze options without {@code --ckpt/--data/--out}
 */
record StudyPlan(String size, List<String> prepare, List<String> model, List<String> training, List<Arm> arms,
                 List<Eval> evals, int kEval, long evalTokens, List<String> analyze) {

    /**
     * One arm: a routing recipe and a seed.
     *
     * @param name    folder name and table label
     * @param label   what the arm is, for tables
     * @param seed    train --seed (initialisation, data order, routing draws)
     * @param recipe  train options that make this arm differ from the others
     * @param pool    the EMO evaluation pool scored as pool:P (0: the arm has no pools)
     */
    record Arm(String name, String label, long seed, List<String> recipe, int pool) {
    }

    /**
     * One eval run of an arm, written to {@code eval/NAME.json}.
     *
     * @param name      file stem
     * @param method    subset method (layerwise, reap)
     * @param calibDocs calibration documents per domain
     * @param settings  eval --settings ({@code K} is replaced by the k sweep, {@code POOL} by the arm's pool)
     */
    record Eval(String name, String method, int calibDocs, String settings) {
    }

    static final String K_SWEEP = "K", POOL = "POOL";

    /** The arm called {@code name}. */
    Arm arm(String name) {
        for (Arm a : arms) if (a.name().equals(name)) return a;
        List<String> names = new ArrayList<>();
        for (Arm a : arms) names.add(a.name());
        throw new Moe4jException("study: no arm '" + name + "' in the " + size + " plan (arms: " + String.join(", ", names) + ")");
    }

    /**
     * The five arms of issue 13 over one architecture: standard MoE with local and with global load balance, EMO
     * (pools, global LB), EMO + Matryoshka k', EMO + ERC; arms 1 and 3 with a second seed. ERC is off (weight 0)
     * except in its arm; every other loss weight is shared.
     */
    static List<Arm> arms(int routedExperts) {
        int evalPool = Math.max(1, routedExperts / 4);
        return List.of(
                new Arm("std-local-s1", "1. standard, local LB", 1, List.of("--routing", "standard", "--lb-scope", "local"), 0),
                new Arm("std-local-s2", "1. standard, local LB (seed 2)", 2, List.of("--routing", "standard", "--lb-scope", "local"), 0),
                new Arm("std-global-s1", "2. standard, global LB", 1, List.of("--routing", "standard", "--lb-scope", "global"), 0),
                new Arm("emo-s1", "3. EMO (pools, global LB)", 1, List.of("--routing", "emo"), evalPool),
                new Arm("emo-s2", "3. EMO (pools, global LB) (seed 2)", 2, List.of("--routing", "emo"), evalPool),
                new Arm("emo-mat-s1", "4. EMO + Matryoshka k'", 1, List.of("--routing", "emo+matryoshka"), evalPool),
                new Arm("emo-erc-s1", "5. EMO + ERC", 1, List.of("--routing", "emo", "--erc", "1.0"), evalPool));
    }

    /** Subsets by layerwise and REAP, each from one calibration document and from {@code many}; then the k sweep. */
    static List<Eval> evals(int many) {
        return List.of(
                new Eval("layerwise-1doc", "layerwise", 1, "full,keep:1/2,keep:1/4,keep:1/8"),
                new Eval("layerwise-" + many + "doc", "layerwise", many, "keep:1/2,keep:1/4,keep:1/8"),
                new Eval("reap-1doc", "reap", 1, "keep:1/2,keep:1/4,keep:1/8"),
                new Eval("reap-" + many + "doc", "reap", many, "keep:1/2,keep:1/4,keep:1/8"),
                new Eval("k-sweep", "layerwise", 1, K_SWEEP + "," + POOL));
    }

    /**
     * The study's size: d 256, 4 layers, 4 heads, 32 experts of hidden 256 (one shared), k 4 (3 routed + 1 shared),
     * vocabulary 8192, sequences of 256, batch 8 (2,048 tokens a step), 2,000 steps = 4.1M tokens per arm; the corpus
     * is Brown (15 genres), SpamAssassin (ham, spam), the State of the Union addresses and the JDK's sources, at most
     * 400 documents per domain, with at least 8 validation documents per domain (a quarter of a small one).
     */
    static StudyPlan defaults() {
        return new StudyPlan("default",
                List.of("--source", "brown", "--source", "spam", "--source", "sotu", "--source", "jdk",
                        "--max-docs-per-domain", "400", "--min-val-docs", "8", "--vocab", "8192"),
                List.of("--config", "small", "--d", "256", "--layers", "4", "--heads", "4", "--kv-heads", "4",
                        "--experts", "32", "--shared", "1", "--k", "4", "--expert-hidden", "256", "--max-seq", "256",
                        "--lb", "0.1", "--z", "0.001", "--erc", "0"),
                List.of("--steps", "2000", "--batch", "8", "--seq", "256", "--lr", "3e-3", "--warmup", "100",
                        "--save-every", "200", "--keep-checkpoints", "10", "--log-every", "20", "--val-batches", "16"),
                arms(31), evals(8), 6, 8192,
                List.of("--tokens", "262144", "--seq", "256", "--split", "val"));
    }

    /**
     * The same pipeline at a size that runs in seconds (the CI test): d 32, 2 layers, 8 experts (one shared), k 3,
     * 12 steps of 4 x 32 tokens, on the given prepare-data sources (a folder of small documents in the test).
     */
    static StudyPlan tiny(List<String> sources) {
        List<String> prep = new ArrayList<>();
        for (String s : sources) {
            prep.add("--source");
            prep.add(s);
        }
        prep.addAll(List.of("--min-val-docs", "2", "--vocab", "300"));
        return new StudyPlan("tiny", prep,
                List.of("--config", "tiny", "--d", "32", "--layers", "2", "--heads", "2", "--kv-heads", "1",
                        "--experts", "8", "--shared", "1", "--k", "3", "--expert-hidden", "32", "--max-seq", "32",
                        "--lb", "0.1", "--z", "0.001", "--erc", "0"),
                List.of("--steps", "12", "--batch", "4", "--seq", "32", "--lr", "3e-3", "--warmup", "2",
                        "--save-every", "4", "--keep-checkpoints", "3", "--log-every", "4", "--val-batches", "2"),
                arms(7), evals(2), 4, 128,
                List.of("--tokens", "1024", "--seq", "32", "--split", "val", "--cluster-tokens", "256", "--clusters", "4",
                        "--snapshot-tokens", "256", "--min-count", "4"));
    }

    /** The number of training steps of the plan (its --steps). */
    int steps() {
        return Integer.parseInt(training.get(training.indexOf("--steps") + 1));
    }

    /** Tokens per optimizer step (--batch x --seq). */
    long tokensPerStep() {
        return Long.parseLong(training.get(training.indexOf("--batch") + 1)) * Long.parseLong(training.get(training.indexOf("--seq") + 1));
    }

    /** This plan with another --steps (the same for every arm). */
    StudyPlan withSteps(int steps) {
        List<String> t = new ArrayList<>(training);
        t.set(t.indexOf("--steps") + 1, Integer.toString(steps));
        return new StudyPlan(size, prepare, model, t, arms, evals, kEval, evalTokens, analyze);
    }
}
