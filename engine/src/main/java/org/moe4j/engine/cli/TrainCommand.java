package org.moe4j.engine.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.MemoryEstimate;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.PoolMode;
import org.moe4j.engine.config.Precision;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.io.TrainingState;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.CheckpointImage;
import org.moe4j.engine.train.BatchSource;
import org.moe4j.engine.train.LrSchedule;
import org.moe4j.engine.train.ShardBatchSource;
import org.moe4j.engine.train.SyntheticCorpus;
import org.moe4j.engine.train.Trainer;
import org.moe4j.engine.train.RunRecorder;
import org.moe4j.engine.train.ValidationLoss;
import org.moe4j.io.checkpoint.CheckpointFolder;
import org.moe4j.io.corpus.BpeTextEncoder;
import org.moe4j.io.corpus.ShardManifest;
import org.moe4j.io.corpus.Split;
import org.moe4j.nativ.GemmBackends;
import org.moe4j.simd.Bf16Gemm;
import org.moe4j.simd.WorkerPool;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code ./moe4j train}: trains an MoE LM with any routing method on the built-in synthetic source or shards. */
@Command(name = "train", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Train an MoE language model. The recipe composes: a base config (--config), --routing "
                + "shorthands (emo+matryoshka+capacity+shared), then model size, routing and loss-weight options, each "
                + "overriding what came before. --resume restores the recipe and the training options saved in the "
                + "checkpoint; recipe options given with it must agree with the checkpoint.",
                "Every option and its default:"})
public final class TrainCommand implements Callable<Integer> {
    @Mixin
    TrainRecipe recipe = new TrainRecipe();

    @Spec
    CommandSpec spec;

    @Option(names = "--steps", defaultValue = "200", description = "optimizer steps in all, counted from the start of "
            + "training (default: ${DEFAULT-VALUE}; on --resume: the checkpoint's planned --steps)") int steps;
    @Option(names = "--batch", defaultValue = "8", description = "sequences per micro-batch (default: ${DEFAULT-VALUE}; on --resume: the checkpoint's)") int batch;
    @Option(names = "--seq", defaultValue = "64", description = "tokens per sequence (default: ${DEFAULT-VALUE}; on --resume: the checkpoint's)") int seq;
    @Option(names = "--accum", defaultValue = "1", description = "micro-batches per optimizer step (default: ${DEFAULT-VALUE}; on --resume: the checkpoint's)") int accum;
    @Option(names = "--lr", defaultValue = "3e-3", description = "peak learning rate (default: ${DEFAULT-VALUE}; on --resume: the checkpoint's)") double lr;
    @Option(names = "--warmup", defaultValue = "20", description = "linear warm-up steps, then cosine decay to 0.1 x lr at --steps (default: ${DEFAULT-VALUE}; on --resume: the checkpoint's)") int warmup;
    @Option(names = "--clip", defaultValue = "1.0", description = "global gradient-norm clip, 0 = none (default: ${DEFAULT-VALUE}; on --resume: the checkpoint's)") double clip;
    @Option(names = "--seed", defaultValue = "1", description = "initialisation, data order and routing draws (default: ${DEFAULT-VALUE}; on --resume: the checkpoint's)") long seed;
    @Option(names = "--log-every", defaultValue = "10", description = "log a step line every N steps (default: ${DEFAULT-VALUE})") int logEvery;
    @Option(names = "--doc-mask", description = "attend only within the document (default: off; on --resume: the checkpoint's)") boolean docMask;
    @Option(names = "--gemm", paramLabel = "auto|java|onednn|cuda",
            description = "GEMM backend (default: -Dmoe4j.gemm, else $MOE4J_GEMM, else auto = oneDNN when it loads, else Java)")
    String gemm;
    @Option(names = "--precision", defaultValue = "fp32", paramLabel = "fp32|bf16",
            description = "fp32, or bf16 mixed precision: float32 master weights, gradients and AdamW state; bf16 "
                    + "copies of the weight matrices and bf16 activations into the GEMMs with float32 accumulation "
                    + "(oneDNN's bf16 matmul where the CPU has bf16); norms, softmax, router, losses stay float32 "
                    + "(default: ${DEFAULT-VALUE})")
    String precision;
    @Option(names = "--domains", defaultValue = "4", description = "synthetic source: domains (default: ${DEFAULT-VALUE})") int domains;
    @Option(names = "--out", description = "write the checkpoint (with training state) here at the end: absent, an "
            + "empty folder, or a moe4j checkpoint, which is replaced atomically (default: none, nothing is saved)") Path out;
    @Option(names = "--save-every", defaultValue = "0", description = "also save to --out every N steps, 0 = only at the end (default: ${DEFAULT-VALUE})") int saveEvery;
    @Option(names = "--keep-checkpoints", defaultValue = "0", paramLabel = "N", description = "with --out: keep N routing snapshots (routers only) over the run, for analyze (default: ${DEFAULT-VALUE})") int keepCheckpoints;
    @Option(names = "--snapshot-every", defaultValue = "0", paramLabel = "M", description = "with --out: a routing snapshot every M steps (instead of --keep-checkpoints; default: ${DEFAULT-VALUE} = none)") int snapshotEvery;
    @Option(names = "--resume", paramLabel = "DIR", description = "resume exactly from this checkpoint folder: its recipe, "
            + "data folder and training options (default: none)") Path resume;
    @Option(names = "--init", paramLabel = "DIR", description = "start from this checkpoint's weights with a fresh "
            + "optimizer at step 0 (fine-tuning): a moe4j or Hugging Face MoE folder, a pruned one included; its config "
            + "is the base the recipe options change (routing, pools, losses; not the sizes) (default: none)") Path init;
    @Option(names = "--data", paramLabel = "DIR",
            description = "a prepare-data folder: train on its train split (vocabulary and EOS from its manifest), "
                    + "report the validation loss on its val split (default: the synthetic source)") Path data;
    @Option(names = "--val-batches", defaultValue = "8",
            description = "with --data: batches of fixed validation windows scored at the end (default: ${DEFAULT-VALUE})")
    int valBatches;
    @Option(names = "--time-limit", defaultValue = "0", paramLabel = "SECONDS",
            description = "stop after the step that passes this many seconds of training (0: none); the schedule still "
                    + "assumes --steps (default: ${DEFAULT-VALUE})")
    double timeLimit;
    @Option(names = "--val-per-domain", description = "with --data: also print the validation loss per domain (default: off)")
    boolean valPerDomain;

    // ------------------------------------------------------------------ --distributed (data parallel over MPI)
    @Option(names = "--distributed", paramLabel = "data|expert",
            description = "run as one rank of mpirun -np N: data parallel (each rank trains on its --batch share of a "
                    + "global batch of N x --batch; rank 0 logs and writes --out), or expert parallel (the same, with "
                    + "each layer's routed experts split over the ranks); see docs/DISTRIBUTED.md (default: none, one process)")
    String distributed;
    @Option(names = "--check-every", defaultValue = "50", paramLabel = "STEPS",
            description = "with --distributed: compare the ranks' weights every STEPS steps (0: never; default: ${DEFAULT-VALUE})")
    int checkEvery;
    @Option(names = "--expert-ranks", defaultValue = "0", paramLabel = "W",
            description = "with --distributed expert: split the experts over groups of W consecutive ranks, the groups "
                    + "being data-parallel replicas (W divides the ranks; 0: one group of all ranks, the default)")
    int expertRanks;
    private org.moe4j.engine.train.distributed.DistributedRun dist;
    /** --distributed with --out: checkpoints are written (by rank 0; every rank gathers for them). */
    private boolean distributedSaves;

    @Override
    public Integer call() {
        if (distributed == null) {
            if (expertRanks != 0) throw new Moe4jException("--expert-ranks " + expertRanks + " needs --distributed expert");
            return train();
        }
        return org.moe4j.engine.train.distributed.DistributedRun.run(distributed, checkEvery, expertRanks, run -> {
            dist = run;
            distributedSaves = out != null; // every rank takes part in gathering what rank 0 writes
            if (run.rank() != 0) out = null; // only rank 0 writes checkpoints
            int code = train();
            System.out.println("distributed: rank 0 sent " + run.traffic());
            return code;
        });
    }
    // ------------------------------------------------------------------ end --distributed

    private Integer train() {
        TrainingState resumeState = resume != null ? readState(resume) : null;
        if (resumeState != null) restoreTrainingOptions(resumeState);
        checkOptions();
        // refused before training, not after an hour of it
        if (out != null) CheckpointFolder.requireReplaceable(out, "--out " + out);
        if (resumeState != null && steps <= resumeState.step())
            throw new Moe4jException("--steps " + steps + " is at or below the step the checkpoint " + resume
                    + " was saved at (" + resumeState.step() + "); --steps counts from the start of training, so pass "
                    + "--steps " + (resumeState.step() + 1) + " or more to train further");
        Path dataDir = data;
        if (dataDir == null && resumeState != null && resumeState.dataFolder() != null) {
            dataDir = resumeState.dataFolder();
            System.out.println("data: " + dataDir + " (from the checkpoint's training state)");
        }
        if (dataDir != null && resumeState != null && resumeState.sequenceLength() > 0
                && resumeState.sequenceLength() != seq)
            System.out.println("note: the checkpoint was trained with --seq " + resumeState.sequenceLength()
                    + "; windows of " + seq + " tokens do not continue its data order exactly");
        ShardManifest manifest = dataDir != null ? ShardManifest.read(dataDir) : null;
        MoeModel initModel = init != null ? initModel(manifest) : null;
        ModelConfig c = resume != null ? null : initModel != null ? initModel.config() : recipe.build();
        if (c != null && manifest != null && initModel == null)
            c = withVocab(c, manifest.tokenizer().vocabSize(), manifest.tokenizer().eosId());
        WorkerPool pool = WorkerPool.common();
        if (c != null && initModel == null) requireMemory(c);
        // --distributed expert: this rank's model holds the dense tensors and its own routed experts only
        java.util.function.Function<ModelConfig, ParamLayout> layoutOf = dist != null ? dist::layout : null;
        MoeModel model = resume != null ? ModelCheckpoint.load(resume, null, layoutOf)
                : initModel != null ? initModel
                : new MoeModel(layoutOf != null ? layoutOf.apply(c) : new ParamLayout(c), true).initRandom(seed);
        c = model.config();
        if (resume != null) {
            try {
                requireSameRecipe(c);
                requireMemory(c);
            } catch (Moe4jException e) {
                model.close();
                throw e;
            }
        }
        System.out.printf(Locale.ROOT, "moe4j train: %s routing, d %d, %d layers, %d heads (%d kv), E %d (shared %d), k %d, h %d, vocab %d; "
                        + "%,d parameters; batch %d x %d; %d threads%n", routingName(c), c.d(), c.layers(), c.heads(), c.kvHeads(),
                c.experts(), c.sharedExperts(), c.k(), c.expertHidden(), c.vocab(), model.layout().whole().total(), batch, seq, pool.threads());
        ShardBatchSource shards = null, val = null;
        try {
            if (seq > c.maxSeq()) throw new Moe4jException("--seq " + seq + " exceeds the model's maxSeq " + c.maxSeq());
            BatchSource src;
            if (dataDir != null) {
                shards = ShardBatchSource.open(dataDir, Split.TRAIN, seq, seed).checkFits(c);
                src = dist != null ? dist.shard(shards) : shards;
                ShardManifest.SplitStats vs = manifest.splits().get(Split.VAL.stem());
                if (vs == null || vs.tokens() < seq) {
                    System.out.println("note: the val split of " + dataDir + " holds " + (vs == null ? 0 : vs.tokens())
                            + " tokens, fewer than one sequence of " + seq + ": no validation loss (raise --val-fraction of prepare-data)");
                } else {
                    val = ShardBatchSource.open(dataDir, Split.VAL, seq, seed).checkFits(c);
                }
            } else {
                SyntheticCorpus syn = new SyntheticCorpus(c.vocab(), c.eosId(), domains, 4, seed);
                src = dist != null ? dist.shard(syn) : syn;
            }
            if (dist != null) { // --distributed: src is this rank's share of each global batch
                System.out.printf(Locale.ROOT, "distributed: %d ranks x batch %d = global batch %d x %d%n", dist.ranks(),
                        batch, dist.ranks() * batch, seq);
            }
            System.out.println("data: " + src.describe());
            Path tokenizer = dataDir != null ? tokenizerOf(dataDir, manifest) : null;
            JsonNode extra = trainingExtra(dataDir);
            GemmBackends.Choice backend = gemm == null ? GemmBackends.fromEnvironment(pool) : GemmBackends.select(gemm, pool);
            Bf16Gemm bf16 = prec == Precision.BF16 ? GemmBackends.bf16(backend.gemm(), pool).gemm() : null;
            if (bf16 != null) System.out.println("precision: bf16 mixed (weight GEMMs on " + bf16.name() + ")");
            bf16Owner = bf16 instanceof AutoCloseable ac ? ac : null;
            try (MoeTransformer tr = new MoeTransformer(model, batch * seq, batch, c.maxRoutedK(), backend.gemm(), bf16,
                         pool);
                 AdamWOptimizer opt = new AdamWOptimizer(model, pool)) {
                tr.useDefaults(true, seed);
                tr.docMask(docMask);
                if (resume != null) {
                    TrainingState st = ModelCheckpoint.loadState(resume, opt.firstMoment(), opt.secondMoment(),
                            model.layout());
                    opt.stepCount(st.step());
                    src.position(st.dataPosition());
                    tr.routingRng().setState(st.routingRngState());
                    tr.ercRng().setState(st.ercRngState());
                    System.out.println("resumed from " + resume + " at step " + opt.stepCount());
                }
                Trainer trainer = new Trainer(tr, opt, src, new Trainer.Options(batch, seq, accum,
                        new LrSchedule(lr, warmup, steps, 0.1), clip, logEvery), System.out);
                if (dist != null) dist.attach(trainer, tr); // --distributed: gradients, routing counts, weight checks
                RunRecorder rec = RunRecorder.attach(trainer, out, model, resume != null, opt.stepCount(), steps, keepCheckpoints, snapshotEvery);
                boolean saving = dist != null ? distributedSaves : out != null;
                Runnable checkpoint = () -> {
                    if (!saving) return;
                    // expert parallel: rank 0 gathers the whole model from its group (a collective every rank makes)
                    try (CheckpointImage img = dist != null ? dist.checkpointImage(model, opt) : CheckpointImage.live(model, opt)) {
                        if (out != null) save(out, img, opt, src, tr, tokenizer, extra);
                    }
                };
                Summary sum = train(trainer, opt, steps, checkpoint, saveEvery, timeLimit,
                        dist == null ? mine -> mine : dist::anyRank);
                if (opt.stepCount() < steps)
                    System.out.printf(Locale.ROOT, "stopped after step %d of %d: --time-limit %.0f s reached%n",
                            opt.stepCount(), steps, timeLimit);
                System.out.printf(Locale.ROOT, "loss: first %d steps %.4f -> last %d steps %.4f (ce %.4f -> %.4f)%n",
                        sum.window(), sum.firstLoss(), sum.window(), sum.lastLoss(), sum.firstCe(), sum.lastCe());
                checkpoint.run();
                if (out != null) {
                    System.out.println("checkpoint: " + out.toAbsolutePath() + (tokenizer != null ? " (with tokenizer.json)" : ""));
                }
                if (val != null) {
                    sum = new Summary(sum.window(), sum.firstLoss(), sum.lastLoss(), sum.firstCe(), sum.lastCe(),
                            printValidation(System.out, tr, val, batch, valBatches, seed, valPerDomain));
                    if (rec != null) rec.validation(opt.stepCount(), sum.validation());
                }
                summary = sum;
            }
        } finally {
            closeQuietly(bf16Owner);
            if (val != null) val.close();
            if (shards != null) shards.close();
            model.close();
        }
        return 0;
    }

    /** What a run measured: mean loss and CE of its first and last {@code window} steps, and the validation CE. */
    record Summary(int window, double firstLoss, double lastLoss, double firstCe, double lastCe,
                   ValidationLoss.Result validation) {
    }

    /** Set by {@link #call()} when it returns normally (for the quickstart and tests). */
    Summary summary;

    /**
     * Runs the optimizer steps from the optimizer's step count to {@code steps}, or until {@code timeLimit} seconds
     * (0: no limit) have passed on any rank ({@code anyRank}: whether any rank's argument is true; collective when
     * distributed); calls {@code checkpoint} every {@code saveEvery} steps (0: never) before the last.
     * The figures of the last steps are over the steps actually run.
     */
    static Summary train(Trainer trainer, AdamWOptimizer opt, int steps, Runnable checkpoint, int saveEvery,
                         double timeLimit, java.util.function.UnaryOperator<Boolean> anyRank) {
        long start = opt.stepCount(), t0 = System.nanoTime();
        int window = (int) Math.max(1, Math.min(10, (steps - start) / 5));
        double firstAvg = 0, firstCe = 0;
        double[] lastLoss = new double[window], lastCe = new double[window]; // ring of the last steps
        int ran = 0;
        for (long s = start; s < steps; s++) {
            Trainer.StepLog lg = trainer.step();
            if (ran < window) {
                firstAvg += lg.loss() / window;
                firstCe += lg.ce() / window;
            }
            lastLoss[ran % window] = lg.loss();
            lastCe[ran % window] = lg.ce();
            ran++;
            if (saveEvery > 0 && (s + 1) % saveEvery == 0 && s + 1 < steps) checkpoint.run();
            // --distributed: every rank stops after the same step (the first rank past the limit decides), or the
            // others would wait in the next step's collectives for ever
            if (timeLimit > 0 && anyRank.apply((System.nanoTime() - t0) * 1e-9 >= timeLimit)) break;
        }
        int n = Math.min(ran, window);
        double lastAvg = 0, lastCeAvg = 0;
        for (int i = 0; i < n; i++) {
            lastAvg += lastLoss[i] / n;
            lastCeAvg += lastCe[i] / n;
        }
        if (ran < window && ran > 0) {
            firstAvg *= (double) window / ran;
            firstCe *= (double) window / ran;
        }
        return new Summary(n, firstAvg, lastAvg, firstCe, lastCeAvg, null);
    }

    /**
     * Prints the validation CE of the model on fixed windows of {@code val}: with every expert (no document pool)
     * and, for an EMO model, with its evaluation pool; per domain when {@code perDomain}. Leaves the transformer with
     * training controls; call after the last save (it draws from fresh evaluation streams).
     */
    static ValidationLoss.Result printValidation(PrintStream out, MoeTransformer tr, ShardBatchSource val, int batch,
                                                 int batches, long seed, boolean perDomain) {
        ModelConfig c = tr.config();
        tr.useDefaults(false, seed);
        for (int l = 0; l < c.layers(); l++) tr.control(l).noPools();
        ValidationLoss.Result full = ValidationLoss.run(tr, val, batch, batches);
        out.printf(Locale.ROOT, "validation: ce %.4f (perplexity %.2f) over %,d tokens of the val split, every expert%n",
                full.ce(), full.perplexity(), full.labels());
        ValidationLoss.Result pooled = null;
        if (c.routing().pool().mode() == PoolMode.EMO && c.routing().pool().evalPool() > 0) {
            tr.useDefaults(false, seed);
            pooled = ValidationLoss.run(tr, val, batch, batches);
            out.printf(Locale.ROOT, "validation: ce %.4f (perplexity %.2f) with EMO's evaluation pool of %d experts per document%n",
                    pooled.ce(), pooled.perplexity(), c.routing().pool().evalPool());
        }
        if (perDomain) {
            out.printf(Locale.ROOT, "%-14s %10s %10s%s%n", "domain", "val tokens", "ce", pooled != null ? "  ce (pool " + c.routing().pool().evalPool() + ")" : "");
            for (int d = 0; d < full.domains().size(); d++) {
                if (full.domainLabels()[d] == 0) continue;
                out.printf(Locale.ROOT, "%-14s %,10d %10.4f%s%n", full.domains().get(d), full.domainLabels()[d], full.domainCe()[d],
                        pooled != null ? String.format(Locale.ROOT, " %14.4f", pooled.domainCe()[d]) : "");
            }
        }
        tr.useDefaults(true, seed);
        return full;
    }

    static void save(Path out, CheckpointImage img, AdamWOptimizer opt, BatchSource src, MoeTransformer tr,
                     Path tokenizer, JsonNode extra) {
        ModelCheckpoint.save(out, img.model(), new ModelCheckpoint.TrainState(img.firstMoment(), img.secondMoment(),
                opt.stepCount(), src.position(), tr.routingRng().state(), tr.ercRng().state(), extra), tokenizer);
    }

    /** The config with the vocabulary and EOS id of a shard folder's tokenizer (embedding and LM head follow). */
    static ModelConfig withVocab(ModelConfig c, int vocab, int eosId) {
        return new ModelConfig(vocab, c.d(), c.layers(), c.heads(), c.kvHeads(), c.experts(), c.sharedExperts(), c.k(),
                c.expertHidden(), c.ropeTheta(), c.qkNorm(), c.normEps(), c.maxSeq(), eosId, c.routing(), c.loss(),
                c.layerExperts(), c.layerK(), c.tieEmbeddings());
    }

    /**
     * The folder's tokenizer.json when the manifest says the shards were written with it (its checksum is in the
     * manifest's tokenizer reference); null otherwise (byte-level shards, or a tokenizer.json from another run,
     * which is then not copied into the checkpoint, with a note).
     */
    static Path tokenizerOf(Path dataDir, ShardManifest m) {
        Path t = dataDir.resolve(PrepareDataCommand.TOKENIZER_JSON);
        if (!Files.isRegularFile(t)) return null;
        String ref = m.tokenizer().reference();
        if (ref != null && ref.contains(BpeTextEncoder.sha256(t))) return t;
        System.out.println("note: " + t + " is not the tokenizer " + dataDir.resolve(ShardManifest.FILE_NAME)
                + " names (" + ref + "); the checkpoint gets no tokenizer.json");
        return null;
    }

    /** What a resume needs to find the data again: the folder and the sequence length. */
    static JsonNode dataExtra(Path dataDir, int seq) {
        ObjectNode o = JsonNodeFactory.instance.objectNode();
        o.put(TrainingState.EXTRA_DATA, dataDir.toAbsolutePath().toString());
        o.put(TrainingState.EXTRA_SEQ, seq);
        return o;
    }

    /**
     * --init: the checkpoint's weights in a model of its config with the recipe options applied (routing, pools,
     * losses; options that would resize a tensor are refused), to train with a fresh optimizer. With --data, the
     * checkpoint's vocabulary must be the data's tokenizer's.
     */
    private MoeModel initModel(ShardManifest manifest) {
        if (resume != null)
            throw new Moe4jException("--init " + init + " and --resume " + resume + ": pass one (--resume continues a "
                    + "run with its optimizer state, --init starts a new one from the weights)");
        if (!"tiny".equals(recipe.config))
            throw new Moe4jException("--init " + init + " takes the model from the checkpoint; leave out --config "
                    + recipe.config);
        List<String> sizes = recipe.givenSizes();
        if (!sizes.isEmpty())
            throw new Moe4jException("--init " + init + ": " + sizes.get(0) + " would resize the checkpoint's "
                    + "tensors; --init keeps its sizes (recipe options that change routing and losses apply)");
        MoeModel m = ModelCheckpoint.load(init, null, dist != null ? dist::layout : null);
        try {
            if (manifest != null && manifest.tokenizer().vocabSize() != m.config().vocab())
                throw new Moe4jException("--init " + init + ": the checkpoint's vocabulary has " + m.config().vocab()
                        + " tokens, the data's tokenizer " + manifest.tokenizer().vocabSize() + "; fine-tune on data "
                        + "prepared with the checkpoint's tokenizer.json");
            if (recipe.given().isEmpty()) return m;
            ModelConfig c = recipe.apply(m.config());
            MoeModel own = m;
            m = null;
            own.close();
            return ModelCheckpoint.load(init, c, dist != null ? dist::layout : null);
        } catch (RuntimeException e) {
            if (m != null) m.close();
            throw e;
        }
    }

    /** The checkpoint's training state; refused when it has none (a resume needs the moments and the step). */
    static TrainingState readState(Path dir) {
        TrainingState st = TrainingState.readIfPresent(dir);
        if (st == null)
            throw new Moe4jException("--resume " + dir + ": no " + ModelCheckpoint.STATE_JSON
                    + " (the checkpoint has no training state to resume from; --init " + dir + " trains from its "
                    + "weights with a fresh optimizer)");
        return st;
    }

    /** The bf16 GEMM of a --precision bf16 run (its native primitives), closed when the run ends. */
    private AutoCloseable bf16Owner;
    private Precision prec = Precision.FP32;

    private static void closeQuietly(AutoCloseable c) {
        if (c == null) return;
        try {
            c.close();
        } catch (Exception e) {
            throw new Moe4jException("closing the bf16 GEMM: " + e.getMessage(), e);
        }
    }

    /** Option values every run needs; checked before anything is read or allocated. */
    private void checkOptions() {
        prec = Precision.parse(precision, "--precision");
        positive("--steps", steps);
        positive("--batch", batch);
        positive("--accum", accum);
        positive("--log-every", logEvery);
        if (seq < 2) throw new Moe4jException("--seq " + seq + " must be >= 2 (a token and the next one to predict)");
        if (saveEvery < 0) throw new Moe4jException("--save-every " + saveEvery + " must be >= 0 (0: only at the end)");
        if (valBatches < 0) throw new Moe4jException("--val-batches " + valBatches + " must be >= 0");
        if (!(timeLimit >= 0) || Double.isInfinite(timeLimit))
            throw new Moe4jException("--time-limit " + timeLimit + " must be a finite number of seconds >= 0");
        if (!(lr >= 0) || Double.isInfinite(lr)) throw new Moe4jException("--lr " + lr + " must be finite and >= 0");
        if (warmup < 0) throw new Moe4jException("--warmup " + warmup + " must be >= 0");
        if (!(clip >= 0) || Double.isInfinite(clip)) throw new Moe4jException("--clip " + clip + " must be finite and >= 0");
        if (domains < 1) throw new Moe4jException("--domains " + domains + " must be >= 1");
        if ((long) batch * seq > Integer.MAX_VALUE)
            throw new Moe4jException("--batch " + batch + " x --seq " + seq + " = " + (long) batch * seq
                    + " tokens per micro-batch; at most " + Integer.MAX_VALUE + " fit one batch");
    }

    private static void positive(String option, int v) {
        if (v < 1) throw new Moe4jException(option + " " + v + " must be >= 1");
    }

    /** Refuses a run whose model, optimizer and activations for --batch x --seq would not fit in memory. */
    private void requireMemory(ModelConfig c) {
        // an expert-parallel rank holds the dense tensors and its own experts; rank 0 also gathers the whole model and
        // both moments (12 bytes a parameter) for a moment at every save
        ParamLayout rankLayout = dist != null ? dist.layout(c) : null;
        double whole = MemoryEstimate.parameters(c), held = rankLayout != null ? rankLayout.total() : whole;
        double bytes = MemoryEstimate.trainingBytes(c, (double) batch * seq, held);
        if (held < whole && out != null) bytes += 12 * whole;
        // with ERC on, a rank also keeps the other ranks' experts' W1 (h x d floats each, every layer)
        if (held < whole && c.loss().erc() > 0)
            bytes += 4.0 * c.layers() * (c.routedExperts() - rankLayout.heldExperts()) * c.expertHidden() * c.d();
        MemoryEstimate.require(String.format(Locale.ROOT, "training with --batch %d x --seq %d (%,d tokens per "
                        + "micro-batch) on a model of %.3g parameters (vocab %d, d %d, %d layers, %d experts)%s", batch, seq,
                (long) batch * seq, whole, c.vocab(), c.d(), c.layers(), c.experts(), held < whole
                        ? String.format(Locale.ROOT, ", %.3g of them on this rank%s", held,
                        out != null ? " plus the whole model and its moments while rank 0 saves" : "") : ""), bytes);
        // the router's per-token buffers are Java arrays of tokens x experts: 2^31 elements at most
        double routerElements = (double) batch * seq * Math.max(c.experts(), c.maxRoutedK() + c.sharedExperts());
        if (routerElements > Integer.MAX_VALUE - 8)
            throw new Moe4jException(String.format(Locale.ROOT, "--batch %d x --seq %d x %d experts = %.3g router "
                    + "scores per micro-batch, more than one Java array holds (2^31); lower --batch or --seq", batch,
                    seq, c.experts(), routerElements));
        MemoryEstimate.requireHeap(String.format(Locale.ROOT, "routing --batch %d x --seq %d over %d experts in %d "
                + "layers", batch, seq, c.experts(), c.layers()), MemoryEstimate.heapBytes(c, (double) batch * seq));
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
        org.moe4j.engine.config.LossWeights w = c.loss();
        b.append(String.format(Locale.ROOT, " (lb %s, z %s", num(w.lb()), num(w.routerZ())));
        if (w.erc() > 0) b.append(", ERC ").append(num(w.erc())).append(" alpha ").append(num(w.ercAlpha(c.routedExperts())));
        else b.append(", no ERC");
        if (w.outputZ() > 0) b.append(", out-z ").append(num(w.outputZ()));
        return b.append(')').toString();
    }

    private static String num(double v) {
        return v == Math.rint(v) && Math.abs(v) < 1e9 ? Long.toString((long) v) : Double.toString(v);
    }

    static ModelConfig baseConfig(String name) {
        return switch (name) {
            case "tiny" -> {
                ModelConfig t = ModelConfig.tiny();
                // a tiny model that still has something to learn: 256 tokens, d 64, 8 experts, top-2
                yield new ModelConfig(256, 64, 2, 4, 2, 8, 0, 2, 64, 10000.0, false, 1e-6, 128, 0,
                        RoutingConfig.standard(), t.loss());
            }
            case "quickstart" -> quickstartConfig();
            case "small" -> ModelConfig.small();
            case "bench" -> ModelConfig.bench();
            default -> {
                Path p = Path.of(name);
                if (!Files.isRegularFile(p))
                    throw new Moe4jException("--config " + name + ": not tiny, quickstart, small, bench or a readable JSON file");
                try {
                    yield ModelConfig.fromJson(Files.readString(p), p.toString());
                } catch (java.io.IOException e) {
                    throw new Moe4jException(p + ": " + e.getMessage());
                }
            }
        };
    }

    /**
     * The quickstart's model: d 128, 4 layers, 4 heads (2 kv), 8 experts of hidden 256, top-2, sequences up to 128;
     * vocabulary 2048 and EOS 0 until a shard folder's tokenizer replaces them.
     */
    static ModelConfig quickstartConfig() {
        ModelConfig t = ModelConfig.tiny();
        return new ModelConfig(2048, 128, 4, 4, 2, 8, 0, 2, 256, 10000.0, false, 1e-6, 128, 0,
                RoutingConfig.standard(), t.loss());
    }

    /** {@code c} with one {@code --routing} shorthand (or several joined by +) applied, as train applies it. */
    static ModelConfig withRouting(ModelConfig c, String routing) {
        TrainRecipe r = new TrainRecipe();
        r.routing = routing;
        return r.apply(c);
    }

    /** Key of the training options in the training state's extra object. */
    static final String EXTRA_TRAIN = "train";

    /** What a resume needs to repeat the run: the data folder and sequence length, and the training options. */
    private JsonNode trainingExtra(Path dataDir) {
        ObjectNode o = dataDir != null ? (ObjectNode) dataExtra(dataDir, seq) : JsonNodeFactory.instance.objectNode();
        ObjectNode t = o.putObject(EXTRA_TRAIN);
        t.put("steps", steps);
        t.put("batch", batch);
        t.put("seq", seq);
        t.put("accum", accum);
        t.put("lr", lr);
        t.put("warmup", warmup);
        t.put("clip", clip);
        t.put("seed", seed);
        t.put("doc_mask", docMask);
        if (dataDir == null) t.put("domains", domains);
        return o;
    }

    /**
     * On --resume, every training option the command line leaves out takes the value the checkpoint was trained with
     * (its training state's {@code extra.train}), so re-running a run's command with --resume continues the same run;
     * a given value that differs is used, with a note (the run then no longer repeats the uninterrupted one).
     */
    private void restoreTrainingOptions(TrainingState st) {
        JsonNode t = st.extra() == null ? null : st.extra().get(EXTRA_TRAIN);
        if (t == null || !t.isObject()) {
            if (!given("--seq") && st.sequenceLength() > 0) seq = st.sequenceLength();
            return;
        }
        String[][] keys = {{"--steps", "steps"}, {"--batch", "batch"}, {"--seq", "seq"}, {"--accum", "accum"},
                {"--lr", "lr"}, {"--warmup", "warmup"}, {"--clip", "clip"}, {"--seed", "seed"},
                {"--doc-mask", "doc_mask"}, {"--domains", "domains"}};
        List<String> changed = new ArrayList<>();
        for (String[] k : keys) {
            JsonNode v = t.get(k[1]);
            if (v == null || v.isNull()) continue;
            String saved = v.asText(), now = switch (k[1]) {
                case "steps" -> Integer.toString(steps);
                case "batch" -> Integer.toString(batch);
                case "seq" -> Integer.toString(seq);
                case "accum" -> Integer.toString(accum);
                case "lr" -> Double.toString(lr);
                case "warmup" -> Integer.toString(warmup);
                case "clip" -> Double.toString(clip);
                case "seed" -> Long.toString(seed);
                case "doc_mask" -> Boolean.toString(docMask);
                default -> Integer.toString(domains);
            };
            if (given(k[0])) {
                // --steps may grow a run; every other difference changes what the rest of the run computes
                if (!k[1].equals("steps") && !sameValue(v, now)) changed.add(k[0] + " " + now + " (checkpoint: " + saved + ")");
                continue;
            }
            switch (k[1]) {
                case "steps" -> steps = v.intValue();
                case "batch" -> batch = v.intValue();
                case "seq" -> seq = v.intValue();
                case "accum" -> accum = v.intValue();
                case "lr" -> lr = v.doubleValue();
                case "warmup" -> warmup = v.intValue();
                case "clip" -> clip = v.doubleValue();
                case "seed" -> seed = v.longValue();
                case "doc_mask" -> docMask = v.booleanValue();
                default -> domains = v.intValue();
            }
        }
        if (!changed.isEmpty())
            System.out.println("note: --resume " + resume + " with other training options than the checkpoint's: "
                    + String.join(", ", changed) + "; the run does not repeat the uninterrupted one");
    }

    private static boolean sameValue(JsonNode saved, String now) {
        if (saved.isNumber()) {
            try {
                return saved.doubleValue() == Double.parseDouble(now);
            } catch (NumberFormatException e) {
                return false;
            }
        }
        return saved.asText().equals(now);
    }

    /** Whether the command line named {@code option} (false when the command was not parsed by picocli). */
    private boolean given(String option) {
        return spec != null && spec.commandLine() != null && spec.commandLine().getParseResult() != null
                && spec.commandLine().getParseResult().hasMatchedOption(option);
    }

    /**
     * A resumed run keeps the checkpoint's model, routing and loss weights: recipe options given with --resume must
     * describe the same recipe (so a study's command can be re-run as it is), or the resume is refused, naming each
     * difference.
     */
    private void requireSameRecipe(ModelConfig saved) {
        if (recipe.given().isEmpty()) return;
        ModelConfig want = recipe.apply(saved);
        if (want.equals(saved)) return;
        List<String> diffs = new ArrayList<>();
        diff("", JSON.valueToTree(saved), JSON.valueToTree(want), diffs);
        throw new Moe4jException("--resume " + resume + ": the options " + String.join(" ", recipe.given())
                + " describe another recipe than the checkpoint's (" + String.join("; ", diffs) + "); a resume keeps the "
                + "checkpoint's model, routing and loss weights: leave those options out, or train a new run with --out");
    }

    private static final com.fasterxml.jackson.databind.ObjectMapper JSON = new com.fasterxml.jackson.databind.ObjectMapper();

    private static void diff(String path, JsonNode a, JsonNode b, List<String> out) {
        if (a.isObject() && b.isObject()) {
            for (var it = a.fieldNames(); it.hasNext(); ) {
                String k = it.next();
                diff(path.isEmpty() ? k : path + "." + k, a.get(k), b.path(k), out);
            }
        } else if (!a.equals(b)) {
            out.add(path + " " + a + " in the checkpoint, " + b + " from the options");
        }
    }
}
