package org.moe4j.engine.train.distributed;

import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.util.Locale;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.engine.train.AdamWOptimizer;
import org.moe4j.engine.train.CheckpointImage;
import org.moe4j.engine.train.BatchSource;
import org.moe4j.engine.train.Trainer;
import org.moe4j.nativ.mpi.Communicator;
import org.moe4j.nativ.mpi.Mpi;

/**
 * One rank of {@code mpirun -np N ./moe4j train --distributed data|expert ...}: joins MPI's world, announces itself (rank,
 * host, pid) on stderr, silences stdout on ranks other than 0 (rank 0 logs and writes the checkpoint), wires data
 * parallel (and, for expert, expert parallel) into the trainer, and turns any failure into an MPI abort whose message names the rank and the cause,
 * so the other ranks never hang in a collective. The launcher ends the job when a rank dies; checkpoints are written
 * atomically by rank 0, so the last one stays intact.
 */
public final class DistributedRun implements AutoCloseable {
    /** What {@code --distributed} accepts. */
    public enum Mode { DATA, EXPERT }

    /** The training body, given this run. */
    @FunctionalInterface
    public interface Body {
        int run(DistributedRun run);
    }

    private final Communicator comm;
    private final Mode mode;
    private final int checkEvery, expertRanks;
    private DataParallel dp;
    private ExpertParallel ep;
    private final double[] vote = new double[1];

    private DistributedRun(Communicator comm, Mode mode, int checkEvery, int expertRanks) {
        this.comm = comm;
        this.mode = mode;
        this.checkEvery = checkEvery;
        this.expertRanks = expertRanks;
    }

    public static Mode mode(String s) {
        return switch (s.toLowerCase(Locale.ROOT)) {
            case "data" -> Mode.DATA;
            case "expert" -> Mode.EXPERT;
            default -> throw new Moe4jException("--distributed " + s + ": expected data or expert");
        };
    }

    /** Runs {@code body} as one rank over MPI's world; returns its exit code (a failure aborts the whole job). */
    public static int run(String mode, int checkEvery, Body body) {
        return run(mode, checkEvery, 0, body);
    }

    /**
     * As {@link #run(String, int, Body)}; {@code expertRanks} (expert mode; 0: all ranks): the ranks each expert group
     * spans, the groups being data-parallel replicas.
     */
    public static int run(String mode, int checkEvery, int expertRanks, Body body) {
        Mode m = mode(mode);
        if (expertRanks < 0) throw new Moe4jException("--expert-ranks " + expertRanks + ": must be >= 0 (0: all ranks)");
        if (expertRanks > 0 && m != Mode.EXPERT)
            throw new Moe4jException("--expert-ranks " + expertRanks + " needs --distributed expert");
        if (checkEvery < 0) throw new Moe4jException("--check-every " + checkEvery + ": must be >= 0 (0: never)");
        if (!Mpi.launched())
            System.err.println("moe4j: --distributed without mpirun/srun: running as a single rank "
                    + "(start it with: mpirun -np N ./moe4j train --distributed data ...)");
        Communicator comm = Mpi.world();
        DistributedRun run = new DistributedRun(comm, m, checkEvery, expertRanks);
        // one write per line: mpirun interleaves the ranks' output, a line printed in pieces can be split
        System.err.println(String.format(Locale.ROOT, "moe4j: rank %d of %d (%s parallel), host %s, pid %d", comm.rank(),
                comm.size(), m.name().toLowerCase(Locale.ROOT), host(), ProcessHandle.current().pid()));
        System.err.flush();
        PrintStream out = System.out;
        if (comm.rank() != 0) System.setOut(new PrintStream(OutputStream.nullOutputStream()));
        int code;
        try {
            code = body.run(run);
            comm.barrier(); // rank 0 may still be writing the final checkpoint
        } catch (Throwable t) {
            out.flush();
            String msg = t.getMessage() == null ? t.toString() : t.getMessage();
            comm.abort(msg, 1);
            throw t; // in-process communicators throw from abort; MPI's does not return
        } finally {
            System.setOut(out);
        }
        run.close();
        comm.close();
        return code;
    }

    public int rank() {
        return comm.rank();
    }

    public int ranks() {
        return comm.size();
    }

    public Mode mode() {
        return mode;
    }

    /** This rank's share of every global batch of {@code src}. */
    public BatchSource shard(BatchSource src) {
        return RankShards.of(src, comm.rank(), comm.size());
    }

    /**
     * Makes {@code trainer} (over {@code tr}) this rank's part of a data-parallel run, or of an expert-parallel one
     * (routed experts split over the ranks, everything else data parallel); call after useDefaults.
     */
    public Trainer attach(Trainer trainer, MoeTransformer tr) {
        dp = new DataParallel(comm, DataParallel.DEFAULT_BUCKET_FLOATS, checkEvery, tr.config().experts() + 1).attach(tr);
        // data parallel: the gradient all-reduce runs beside the backward (expert parallel's backward makes its own
        // collective calls, so there it stays after the backward)
        if (mode == Mode.DATA) dp.overlap(true);
        if (mode == Mode.EXPERT) {
            ep = new ExpertParallel(comm, tr, expertRanks);
            dp.experts(ep);
            trainer.optimizer().partition(ep.partition());
            if (ep.expertRanks() < comm.size())
                System.out.printf(Locale.ROOT, "distributed: %d ranks = %d data-parallel replicas x %d expert-parallel ranks%n",
                        comm.size(), comm.size() / ep.expertRanks(), ep.expertRanks());
            ParamLayout lay = tr.model().layout();
            System.out.printf(Locale.ROOT, "distributed: expert parallel, rank 0 of %d owns routed experts %d..%d of %d per layer "
                            + "and holds %,d of the model's %,d parameters (%s with gradients and AdamW moments)%n",
                    ep.expertRanks(), ep.firstExpert(), ep.firstExpert() + ep.owned() - 1, tr.config().routedExperts(),
                    lay.total(), lay.whole().total(), org.moe4j.engine.config.MemoryEstimate.human(16.0 * lay.total()));
        }
        return trainer.replicas(dp);
    }

    /**
     * The layout of this rank's model: the whole model (data parallel), or the dense tensors and the routed experts
     * this rank owns (expert parallel, {@link ExpertParallel#rankLayout}). Build the model on it before
     * {@link #attach}; no communication.
     */
    public ParamLayout layout(ModelConfig c) {
        return mode == Mode.EXPERT ? ExpertParallel.rankLayout(c, comm.rank(), comm.size(), expertRanks) : new ParamLayout(c);
    }

    /**
     * Call on every rank before rank 0 writes a checkpoint: what rank 0 writes (null on the other ranks), in the
     * single-process format. Data parallel: rank 0's own model and moments; expert parallel: a transient whole model
     * that rank 0 gathers from the ranks of its group (collective; close it after the save to free it).
     */
    public CheckpointImage checkpointImage(MoeModel model, AdamWOptimizer opt) {
        if (ep != null) return ep.gather(opt);
        return comm.rank() == 0 ? CheckpointImage.live(model, opt) : null;
    }

    /** Whether {@code mine} is true on any rank (collective: a stop every rank must agree on, e.g. a time limit). */
    public Boolean anyRank(Boolean mine) {
        if (comm.size() == 1) return mine;
        if (dp == null) throw new Moe4jException("DistributedRun.anyRank: attach the trainer first");
        vote[0] = mine ? 1 : 0;
        dp.sum(vote, 1);
        return vote[0] > 0;
    }

    /** Bytes this rank has handed to collectives so far, and the number of calls (for logs and benches). */
    public String traffic() {
        if (dp == null) return "no traffic";
        long bytes = dp.bytesReduced() + (ep == null ? 0 : ep.bytesSent() + ep.bytesReduced());
        long calls = dp.collectives() + (ep == null ? 0 : ep.collectives());
        return String.format(Locale.ROOT, "%,d bytes in %,d collectives", bytes, calls)
                + (ep == null ? "" : String.format(Locale.ROOT, " (all-to-all of expert rows %,d bytes)", ep.bytesSent()));
    }

    private static String host() {
        try {
            return InetAddress.getLocalHost().getHostName();
        } catch (java.io.IOException e) {
            return "?";
        }
    }

    @Override
    public void close() {
        if (dp != null) dp.close();
        if (ep != null) ep.close();
        dp = null;
        ep = null;
    }
}
