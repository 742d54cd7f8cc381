package org.moe4j.engine.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.MatryoshkaConfig;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.PoolConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.BatchSource;
import org.moe4j.engine.train.LrSchedule;
import org.moe4j.engine.train.SyntheticCorpus;
import org.moe4j.engine.train.Trainer;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code ./moe4j train}: trains an MoE LM with any routing method on the built-in synthetic source or shards. */
@Command(name = "train", mixinStandardHelpOptions = true,
        description = "Train an MoE language model (routing: standard, emo, matryoshka, capacity, shared).")
public final class TrainCommand implements Callable<Integer> {
    @Option(names = "--config", defaultValue = "tiny",
            description = "tiny | small | bench | a ModelConfig JSON file (default: ${DEFAULT-VALUE})")
    String config;

    @Option(names = "--routing", defaultValue = "standard",
            description = "standard | emo | matryoshka | capacity | shared (default: ${DEFAULT-VALUE})")
    String routing;

    @Option(names = "--lb-scope", description = "global | local (default: the config's)")
    String lbScope;

    @Option(names = "--steps", defaultValue = "200") int steps;
    @Option(names = "--batch", defaultValue = "8") int batch;
    @Option(names = "--seq", defaultValue = "64", description = "tokens per sequence (default: ${DEFAULT-VALUE})") int seq;
    @Option(names = "--accum", defaultValue = "1", description = "micro-batches per optimizer step") int accum;
    @Option(names = "--lr", defaultValue = "3e-3") double lr;
    @Option(names = "--warmup", defaultValue = "20") int warmup;
    @Option(names = "--clip", defaultValue = "1.0") double clip;
    @Option(names = "--seed", defaultValue = "1") long seed;
    @Option(names = "--log-every", defaultValue = "10") int logEvery;
    @Option(names = "--doc-mask", description = "attend only within the document") boolean docMask;
    @Option(names = "--domains", defaultValue = "4", description = "synthetic source: domains") int domains;
    @Option(names = "--out", description = "write the checkpoint (with training state) here at the end") Path out;
    @Option(names = "--save-every", defaultValue = "0", description = "also save to --out every N steps") int saveEvery;
    @Option(names = "--resume", description = "resume exactly from this checkpoint folder") Path resume;

    @Override
    public Integer call() {
        ModelConfig c = resume != null ? null : withRouting(baseConfig(config), routing);
        if (c != null && lbScope != null) c = c.withRouting(withScope(c.routing(), lbScope));
        WorkerPool pool = WorkerPool.common();
        MoeModel model = resume != null ? ModelCheckpoint.load(resume) : new MoeModel(c).initRandom(seed);
        c = model.config();
        System.out.printf(Locale.ROOT, "moe4j train: %s routing, d %d, %d layers, %d heads (%d kv), E %d (shared %d), k %d, h %d, vocab %d; "
                        + "%,d parameters; batch %d x %d; %d threads%n", routingName(c), c.d(), c.layers(), c.heads(), c.kvHeads(),
                c.experts(), c.sharedExperts(), c.k(), c.expertHidden(), c.vocab(), model.layout().total(), batch, seq, pool.threads());
        if (seq > c.maxSeq()) throw new Moe4jException("--seq " + seq + " exceeds the model's maxSeq " + c.maxSeq());
        BatchSource src = new SyntheticCorpus(c.vocab(), c.eosId(), domains, 4, seed);
        System.out.println("data: " + src.describe());
        try (MoeTransformer tr = new MoeTransformer(model, batch * seq, batch, new JavaGemm(pool), pool);
             AdamWOptimizer opt = new AdamWOptimizer(model, pool)) {
            tr.useDefaults(true, seed);
            tr.docMask(docMask);
            if (resume != null) {
                var st = ModelCheckpoint.loadState(resume, opt.firstMoment(), opt.secondMoment(), model.layout().total());
                opt.stepCount(st.get("step").asLong());
                src.position(st.get("data_position").asLong());
                tr.routingRng().setState(st.get("routing_rng_state").asLong());
                tr.ercRng().setState(st.get("erc_rng_state").asLong());
                System.out.println("resumed from " + resume + " at step " + opt.stepCount());
            }
            Trainer trainer = new Trainer(tr, opt, src, new Trainer.Options(batch, seq, accum,
                    new LrSchedule(lr, warmup, steps, 0.1), clip, logEvery), System.out);
            double first = Double.NaN, firstAvg = 0, lastAvg = 0;
            int window = Math.max(1, Math.min(10, steps / 5));
            long start = opt.stepCount();
            for (long s = start; s < steps; s++) {
                Trainer.StepLog lg = trainer.step();
                if (Double.isNaN(first)) first = lg.loss();
                if (s - start < window) firstAvg += lg.loss() / window;
                if (s >= steps - window) lastAvg += lg.loss() / window;
                if (out != null && saveEvery > 0 && (s + 1) % saveEvery == 0 && s + 1 < steps) save(out, model, opt, src, tr);
            }
            System.out.printf(Locale.ROOT, "loss: first %d steps %.4f -> last %d steps %.4f%n", window, firstAvg, window, lastAvg);
            if (out != null) {
                save(out, model, opt, src, tr);
                System.out.println("checkpoint: " + out.toAbsolutePath());
            }
        } finally {
            model.close();
        }
        return 0;
    }

    static void save(Path out, MoeModel model, AdamWOptimizer opt, BatchSource src, MoeTransformer tr) {
        ModelCheckpoint.save(out, model, new ModelCheckpoint.TrainState(opt.firstMoment(), opt.secondMoment(),
                opt.stepCount(), src.position(), tr.routingRng().state(), tr.ercRng().state(), null), null);
    }

    static String routingName(ModelConfig c) {
        RoutingConfig r = c.routing();
        StringBuilder b = new StringBuilder();
        b.append(r.pool().mode().name().toLowerCase(Locale.ROOT).equals("emo") ? "EMO pool" : "top-k");
        if (r.matryoshka().mode() != org.moe4j.engine.config.MatryoshkaMode.OFF)
            b.append(" + Matryoshka k ").append(r.matryoshka().kMin()).append("..").append(r.matryoshka().kMax());
        if (r.capacityFactor() > 0) b.append(" + capacity ").append(r.capacityFactor());
        if (c.sharedExperts() > 0) b.append(" + ").append(c.sharedExperts()).append(" shared");
        b.append(", LB ").append(r.lbScope().name().toLowerCase(Locale.ROOT));
        return b.toString();
    }

    static ModelConfig baseConfig(String name) {
        return switch (name) {
            case "tiny" -> {
                ModelConfig t = ModelConfig.tiny();
                // a tiny model that still has something to learn: 256 tokens, d 64, 8 experts, top-2
                yield new ModelConfig(256, 64, 2, 4, 2, 8, 0, 2, 64, 10000.0, false, 1e-6, 128, 0,
                        RoutingConfig.standard(), t.loss());
            }
            case "small" -> ModelConfig.small();
            case "bench" -> ModelConfig.bench();
            default -> {
                Path p = Path.of(name);
                if (!Files.isRegularFile(p))
                    throw new Moe4jException("--config " + name + ": not tiny, small, bench or a readable JSON file");
                try {
                    yield ModelConfig.fromJson(Files.readString(p));
                } catch (java.io.IOException e) {
                    throw new Moe4jException(p + ": " + e.getMessage());
                }
            }
        };
    }

    static ModelConfig withRouting(ModelConfig c, String routing) {
        int routed = c.routedExperts(), kp = c.routedK();
        return switch (routing) {
            case "standard" -> c.withRouting(RoutingConfig.standard());
            case "emo" -> c.withRouting(RoutingConfig.emo(routed));
            case "matryoshka" -> c.withRouting(RoutingConfig.matryoshka(1, Math.min(routed, 2 * kp)));
            case "capacity" -> c.withRouting(new RoutingConfig(false, false, PoolConfig.none(), MatryoshkaConfig.off(),
                    1.25, 2.0, LbScope.GLOBAL));
            case "shared" -> new ModelConfig(c.vocab(), c.d(), c.layers(), c.heads(), c.kvHeads(), c.experts(), 1,
                    Math.min(c.experts(), c.k() + 1), c.expertHidden(), c.ropeTheta(), c.qkNorm(), c.normEps(), c.maxSeq(),
                    c.eosId(), RoutingConfig.standard(), c.loss());
            default -> throw new Moe4jException("--routing " + routing + ": expected standard, emo, matryoshka, capacity or shared");
        };
    }

    static RoutingConfig withScope(RoutingConfig r, String scope) {
        LbScope s = switch (scope) {
            case "global" -> LbScope.GLOBAL;
            case "local" -> LbScope.LOCAL;
            default -> throw new Moe4jException("--lb-scope " + scope + ": expected global or local");
        };
        return new RoutingConfig(r.normalizeTopK(), r.softmaxOverAll(), r.pool(), r.matryoshka(), r.capacityFactor(),
                r.evalCapacityFactor(), s);
    }
}
