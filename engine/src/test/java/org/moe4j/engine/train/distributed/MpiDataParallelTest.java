package org.moe4j.engine.train.distributed;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.engine.cli.Main;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;

/**
 * {@code ./moe4j train --distributed data|expert} end to end, under {@code mpirun --oversubscribe -np 2} on loopback (skipped,
 * saying why, without Open MPI): 2 ranks with batch B give the losses of every step and the final checkpoint of one
 * process with batch 2B, within float tolerance, after 20 steps of the tiny model, data parallel in standard and EMO
 * routing, expert parallel in EMO routing (the experts split over the ranks, gathered by rank 0 for the checkpoint) and
 * as 2 replicas of 1 expert rank (split communicators);
 * and, in both modes, a rank killed mid-run stops the job with a message naming it while the last checkpoint stays loadable.
 */
class MpiDataParallelTest {
    static final Pattern STEP = Pattern.compile("^step\\s+(\\d+)\\s+loss ([0-9.]+)", Pattern.MULTILINE);

    static List<String> trainArgs(String routing, int batch, Path out, int steps, String... more) {
        List<String> a = new ArrayList<>(List.of("train", "--config", "tiny", "--routing", routing, "--steps",
                Integer.toString(steps), "--batch", Integer.toString(batch), "--seq", "32", "--log-every", "1", "--gemm",
                "java", "--seed", "3", "--warmup", "3", "--out", out.toString()));
        a.addAll(List.of(more));
        return a;
    }

    /**
     * mpirun forwards each rank's writes as they come, so a whole line of rank 1 (its JVM's warnings, its log lines,
     * its "rank 1 of 2" banner) can land in the middle of one of rank 0's lines. Removing those lines, wherever they
     * sit, gives back rank 0's lines whole.
     */
    static final Pattern OTHER_RANK_LINE = Pattern.compile("(WARNING: Using incubator modules: jdk\\.incubator\\.vector"
            + "|moe4j: rank [1-9]\\d* of \\d+ [^\\n]*)\\n");
    static final Pattern LOG_LINE = Pattern.compile("INFO: GEMM backend: [^\\n]*\\n");

    static String rank0(String output) {
        return LOG_LINE.matcher(OTHER_RANK_LINE.matcher(output).replaceAll("")).replaceAll("");
    }

    /** The interleaving seen in a CI run: rank 1's log line inside rank 0's banner. */
    @org.junit.jupiter.api.Test
    void rank0LinesComeBackWhole() {
        String seen = "WARNING: Using incubator modules: jdk.incubator.vector\nmoe4j: rank 1 of 2 (expert parallel), host vm, "
                + "pid 2\nmoe4j: rank 0 of 2 (expert parallel), host vm, pid 1\ndistributed: 2INFO: GEMM backend: java "
                + "(requested)\n ranks x batch 2 = global batch 4 x 32\nINFO: GEMM backend: java (requested)\nstep     0  loss 5.6588\n";
        assertEquals("moe4j: rank 0 of 2 (expert parallel), host vm, pid 1\ndistributed: 2 ranks x batch 2 = global batch "
                + "4 x 32\nstep     0  loss 5.6588\n", rank0(seen));
    }

    static double[] losses(String output, int steps) {
        double[] l = new double[steps];
        int n = 0;
        Matcher m = STEP.matcher(output);
        while (m.find()) l[Integer.parseInt(m.group(1))] = Double.parseDouble(m.group(2));
        m = STEP.matcher(output);
        while (m.find()) n++;
        assertEquals(steps, n, "step lines in:\n" + output);
        return l;
    }

    static float[] weights(Path dir) {
        try (MoeModel m = ModelCheckpoint.load(dir)) {
            return m.params().toArray(ValueLayout.JAVA_FLOAT);
        }
    }

    @ParameterizedTest
    @CsvSource({"data, standard, 0", "data, emo, 0", "expert, emo, 0", "expert, standard, 1"})
    void twoRanksEqualOneRankOnTheGlobalBatch(String mode, String routing, int expertRanks, @TempDir Path tmp)
            throws Exception {
        MpiLaunch.assumeAvailable();
        int steps = 20;
        MpiLaunch.Result one = MpiLaunch.run(MpiLaunch.java(Main.class.getName(), trainArgs(routing, 4, tmp.resolve("one"), steps)), 300);
        assertEquals(0, one.exit(), one.output());
        MpiLaunch.Result two = MpiLaunch.run(MpiLaunch.mpi(2, MpiLaunch.java(Main.class.getName(),
                trainArgs(routing, 2, tmp.resolve("two"), steps, "--distributed", mode, "--check-every", "5",
                "--expert-ranks", Integer.toString(expertRanks)))), 300);
        assertEquals(0, two.exit(), two.output());
        String out = rank0(two.output());
        assertTrue(out.contains("distributed: 2 ranks x batch 2 = global batch 4 x 32"), two.output());
        if (mode.equals("expert") && expertRanks == 0) // the CLI's tiny model: 8 routed experts, rank 0 owns half
            assertTrue(out.contains("expert parallel, rank 0 of 2 owns routed experts 0..3 of 8"), two.output());
        if (expertRanks == 1) // 2 replicas of one expert rank each: MPI_Comm_split, expert gradients over the replicas
            assertTrue(out.contains("distributed: 2 ranks = 2 data-parallel replicas x 1 expert-parallel ranks"),
                    two.output());
        double[] a = losses(one.output(), steps), b = losses(out, steps); // rank 1 prints no step lines
        for (int s = 0; s < steps; s++) assertEquals(a[s], b[s], 2e-4 * Math.max(1, a[s]), mode + ", " + routing + ": loss of step " + s);
        float[] wa = weights(tmp.resolve("one")), wb = weights(tmp.resolve("two"));
        double max = 0;
        for (int i = 0; i < wa.length; i++) max = Math.max(max, Math.abs(wa[i] - wb[i]));
        assertTrue(max < 2e-4, mode + ", " + routing + ": max weight difference " + max);
        assertEquals(steps, new ObjectMapper().readTree(tmp.resolve("two").resolve(ModelCheckpoint.STATE_JSON).toFile())
                .get("step").asInt());
    }

    /** --time-limit stops every rank after the same step (a rank stopping alone would leave the other waiting). */
    @org.junit.jupiter.api.Test
    void aTimeLimitStopsEveryRankAfterTheSameStep(@TempDir Path tmp) throws Exception {
        MpiLaunch.assumeAvailable();
        MpiLaunch.Result r = MpiLaunch.run(MpiLaunch.mpi(2, MpiLaunch.java(Main.class.getName(),
                trainArgs("standard", 2, tmp.resolve("ck"), 100000, "--distributed", "expert", "--time-limit", "8"))), 200);
        assertEquals(0, r.exit(), r.output());
        Matcher m = Pattern.compile("stopped after step (\\d+) of 100000: --time-limit 8 s reached").matcher(r.output());
        assertTrue(m.find(), r.output());
        assertEquals(Integer.parseInt(m.group(1)), new ObjectMapper().readTree(tmp.resolve("ck").resolve(
                ModelCheckpoint.STATE_JSON).toFile()).get("step").asInt(), "the checkpoint is the last step's");
    }

    @ParameterizedTest
    @ValueSource(strings = {"data", "expert"})
    void aKilledRankStopsTheJobAndTheLastCheckpointLoads(String mode, @TempDir Path tmp) throws Exception {
        MpiLaunch.assumeAvailable();
        Path out = tmp.resolve("ck");
        Pattern pid = Pattern.compile("moe4j: rank 1 of 2 .* pid (\\d+)");
        // a long run, saving every 5 steps; rank 1 is killed (SIGKILL) once rank 0 has logged step 12
        MpiLaunch.Result r = MpiLaunch.run(MpiLaunch.mpi(2, MpiLaunch.java(Main.class.getName(),
                trainArgs("standard", 2, out, 100000, "--distributed", mode, "--save-every", "5"))), 300,
                line -> line.startsWith("step    12"), sofar -> {
                    Matcher m = pid.matcher(sofar);
                    if (m.find()) ProcessHandle.of(Long.parseLong(m.group(1))).ifPresent(ProcessHandle::destroyForcibly);
                });
        assertNotEquals(0, r.exit(), r.output());
        assertTrue(r.exit() > 0, "mpirun should end by itself, not by the test's timeout:\n" + r.output());
        assertTrue(r.output().matches("(?s).*process rank 1 with PID \\d+ on node .* exited on signal 9.*"), r.output());
        var state = new ObjectMapper().readTree(out.resolve(ModelCheckpoint.STATE_JSON).toFile());
        int step = state.get("step").asInt();
        assertTrue(step >= 10 && step % 5 == 0, "checkpoint step " + step);
        weights(out); // loads: intact
        try (var s = Files.list(tmp)) {
            // ck.run is the run's metrics log beside the checkpoint, not a leftover of a save
            assertEquals(List.of("ck"), s.map(p -> p.getFileName().toString()).filter(n -> !n.equals("ck.run")).toList(),
                    "no temporary folder left");
        }
    }
}
