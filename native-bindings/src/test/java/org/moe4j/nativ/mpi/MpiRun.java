package org.moe4j.nativ.mpi;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;

/**
 * Starts {@code mpirun --oversubscribe -np N java ... Main args} from a test, on loopback, with this JVM's classpath
 * and module flags, adding {@code --allow-run-as-root} when the tests run as root.
 */
public final class MpiRun {
    private MpiRun() {
    }

    /** What one mpirun printed (stdout and stderr interleaved) and its exit code. */
    public record Result(int exit, String output) {
    }

    /** The mpirun executable on PATH, or null. */
    public static Path mpirun() {
        String path = System.getenv("PATH");
        if (path == null) return null;
        for (String d : path.split(":")) {
            Path p = Path.of(d.isEmpty() ? "." : d, "mpirun");
            if (Files.isExecutable(p)) return p;
        }
        return null;
    }

    /** Skips the calling test (with the reason) unless mpirun and libmpi are both there. */
    public static void assumeAvailable() {
        Assumptions.assumeTrue(mpirun() != null,
                "mpirun not on PATH: Open MPI is not installed (apt-get install openmpi-bin libopenmpi-dev; .ci/run does it)");
        Assumptions.assumeTrue(Mpi.available(), "libmpi not loadable: " + Mpi.reason());
    }

    /** The base command: mpirun on loopback, N ranks, allowed as root, output tagged by rank. */
    public static List<String> command(int ranks) {
        List<String> cmd = new ArrayList<>(List.of(mpirun().toString(), "--oversubscribe", "-np", Integer.toString(ranks),
                "--mca", "btl", "self,vader,tcp", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo",
                "--mca", "mpi_yield_when_idle", "1")); // a waiting rank yields its core (tests share a small machine)
        if ("root".equals(System.getProperty("user.name"))) cmd.add(1, "--allow-run-as-root");
        return cmd;
    }

    /** Runs {@code main} in N JVMs under mpirun; kills the job after {@code timeoutSeconds} (then exit is -1). */
    public static Result java(int ranks, long timeoutSeconds, List<String> jvmArgs, String main, String... args)
            throws IOException, InterruptedException {
        List<String> cmd = command(ranks);
        cmd.addAll(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-XX:+UseSerialGC",
                "-Xmx512m"));
        cmd.addAll(jvmArgs);
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), main));
        cmd.addAll(List.of(args));
        return run(cmd, timeoutSeconds);
    }

    public static Result run(List<String> cmd, long timeoutSeconds) throws IOException, InterruptedException {
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
        Path log = Files.createTempFile("moe4j-mpirun", ".log");
        pb.redirectOutput(log.toFile());
        Process p = pb.start();
        boolean done = p.waitFor(timeoutSeconds, TimeUnit.SECONDS);
        if (!done) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            p.waitFor();
        }
        String out = Files.readString(log);
        Files.deleteIfExists(log);
        return new Result(done ? p.exitValue() : -1, out + (done ? "" : "\n[killed after " + timeoutSeconds + " s]"));
    }
}
