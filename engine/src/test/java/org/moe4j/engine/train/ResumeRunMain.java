package org.moe4j.engine.train;

import java.io.DataOutputStream;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.MatryoshkaConfig;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.PoolConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * One process of {@link CrossProcessResumeTest}: for every routing mode, trains steps {@code [from, to)} of a
 * {@code total}-step schedule, resuming from {@code <ckpt>/<mode>} when {@code from > 0} and saving there after the
 * last step when {@code to < total}; writes {@code <out>/<mode>.bin}: the step losses (double bits), then the
 * parameters and both AdamW moments (float bits) at the end.
 *
 * <p>Args: from to total threads ckpt-dir out-dir.
 */
public final class ResumeRunMain {
    private ResumeRunMain() {
    }

    static final List<String> MODES = List.of("standard", "emo", "matryoshka", "capacity", "shared");
    static final int B = 2, T = 16;

    /** A small model that still exercises every routing feature; ERC (weight 1.0) is on in every mode. */
    static ModelConfig config(String mode) {
        ModelConfig c = new ModelConfig(64, 32, 2, 2, 1, 6, 0, 2, 32, 10000.0, false, 1e-6, 32, 0,
                RoutingConfig.standard(), LossWeights.defaults());
        return switch (mode) {
            case "standard" -> c;
            case "emo" -> c.withRouting(RoutingConfig.emo(c.routedExperts()));
            case "matryoshka" -> c.withRouting(RoutingConfig.matryoshka(1, 4));
            case "capacity" -> c.withRouting(new RoutingConfig(false, false, PoolConfig.none(), MatryoshkaConfig.off(),
                    1.25, 2.0, LbScope.GLOBAL));
            case "shared" -> new ModelConfig(c.vocab(), c.d(), c.layers(), c.heads(), c.kvHeads(), c.experts(), 1, 3,
                    c.expertHidden(), c.ropeTheta(), c.qkNorm(), c.normEps(), c.maxSeq(), c.eosId(),
                    RoutingConfig.standard(), c.loss());
            default -> throw new IllegalArgumentException(mode);
        };
    }

    public static void main(String[] args) throws IOException {
        int from = Integer.parseInt(args[0]);
        int to = Integer.parseInt(args[1]);
        int total = Integer.parseInt(args[2]);
        int threads = Integer.parseInt(args[3]);
        Path ckpt = Path.of(args[4]);
        Path out = Path.of(args[5]);
        try (WorkerPool pool = new WorkerPool(threads)) {
            for (String mode : MODES) {
                run(mode, from, to, total, pool, ckpt.resolve(mode), out.resolve(mode + ".bin"));
            }
        }
    }

    static void run(String mode, int from, int to, int total, WorkerPool pool, Path ckpt, Path out) throws IOException {
        SyntheticCorpus src = new SyntheticCorpus(64, 0, 3, 4, 9);
        try (MoeModel m = from > 0 ? ModelCheckpoint.load(ckpt) : new MoeModel(config(mode)).initRandom(3);
             MoeTransformer tr = new MoeTransformer(m, B * T, B, new JavaGemm(pool), pool);
             AdamWOptimizer opt = new AdamWOptimizer(m, pool);
             DataOutputStream o = new DataOutputStream(Files.newOutputStream(out))) {
            tr.useDefaults(true, 5);
            if (from > 0) { // the resume sequence of TrainCommand
                var st = ModelCheckpoint.loadState(ckpt, opt.firstMoment(), opt.secondMoment(), m.layout().total());
                opt.stepCount(st.step());
                src.position(st.dataPosition());
                tr.routingRng().setState(st.routingRngState());
                tr.ercRng().setState(st.ercRngState());
            }
            Trainer tn = new Trainer(tr, opt, src,
                    new Trainer.Options(B, T, 1, new LrSchedule(1e-2, 2, total, 0.1), 1.0, 1000), null);
            for (int s = from; s < to; s++) {
                o.writeLong(Double.doubleToRawLongBits(tn.step().loss()));
            }
            if (to < total) {
                ModelCheckpoint.save(ckpt, m, new ModelCheckpoint.TrainState(opt.firstMoment(), opt.secondMoment(),
                        opt.stepCount(), src.position(), tr.routingRng().state(), tr.ercRng().state(), null), null);
            }
            long n = m.layout().total();
            for (MemorySegment seg : new MemorySegment[] {m.params(), opt.firstMoment(), opt.secondMoment()}) {
                for (long i = 0; i < n; i++) {
                    o.writeInt(Float.floatToRawIntBits(seg.getAtIndex(Tensor.FLOAT, i)));
                }
            }
        }
    }
}
