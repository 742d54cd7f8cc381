package org.moe4j.engine.train;

import java.nio.file.Path;
import org.moe4j.Moe4jException;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.StepStats;

/**
 * What {@code train --out DIR} keeps of a run besides the checkpoint, in the run folder {@code DIR.run} beside it
 * (a checkpoint save replaces DIR as a whole, so nothing else can live inside it): every step in {@link MetricsLog}
 * and, every {@code snapshotEvery} steps and after the last step, the routers as a {@link RoutingSnapshots} file.
 */
public final class RunRecorder implements Trainer.StepListener {
    private final MetricsLog log;
    private final MoeModel model;
    private final Path dir;
    private final long lastStep;
    private final int snapshotEvery;

    private RunRecorder(MetricsLog log, MoeModel model, Path dir, long lastStep, int snapshotEvery) {
        this.log = log;
        this.model = model;
        this.dir = dir;
        this.lastStep = lastStep;
        this.snapshotEvery = snapshotEvery;
    }

    /**
     * Attaches a recorder writing into {@code out} to the trainer; null (and nothing attached) when {@code out} is
     * null. {@code keep} (N snapshots spread over the run) or {@code every} (M steps) set the snapshot interval; both
     * 0: no snapshots. Resuming keeps the log's lines of earlier steps.
     */
    public static RunRecorder attach(Trainer trainer, Path out, MoeModel model, boolean resume, long fromStep, long steps,
                                     int keep, int every) {
        if (out == null) return null;
        if (keep < 0 || every < 0)
            throw new Moe4jException("--keep-checkpoints " + keep + ", --snapshot-every " + every + ": must be >= 0");
        int interval = every > 0 ? every : keep > 0 ? (int) Math.max(1, steps / keep) : 0;
        Path dir = runDir(out);
        RunRecorder r = new RunRecorder(MetricsLog.open(dir, resume, fromStep), model, dir, steps, interval);
        RoutingSnapshots.dropAfter(dir, resume ? fromStep : 0);
        trainer.listener(r);
        System.out.println("run log: " + dir.resolve(MetricsLog.FILE_NAME).toAbsolutePath()
                + (interval > 0 ? ", routing snapshots every " + interval + " steps in " + dir.resolve(RoutingSnapshots.DIR) : ""));
        return r;
    }

    /** The run folder of checkpoint folder {@code out}: {@code out.run}, beside it. */
    public static Path runDir(Path out) {
        Path abs = out.toAbsolutePath().normalize();
        return abs.resolveSibling(abs.getFileName() + ".run");
    }

    @Override
    public void afterStep(Trainer.StepLog l, StepStats stats) {
        log.step(l, stats);
        long done = l.step() + 1; // optimizer steps taken, this one included
        if (snapshotEvery > 0 && (done % snapshotEvery == 0 || done == lastStep))
            RoutingSnapshots.save(dir, done, model);
    }

    /** The validation of the model after {@code step} steps. */
    public void validation(long step, ValidationLoss.Result v) {
        if (v != null) log.validation(step, v.ce(), v.perplexity());
    }
}
