package org.moe4j.engine.train.distributed;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import org.junit.jupiter.api.Assumptions;
import org.moe4j.nativ.mpi.Mpi;

/** Starts engine mains in N JVMs under {@code mpirun --oversubscribe} on loopback (or in one plain JVM) for tests. */
final class MpiLaunch {
    private MpiLaunch() {
    }

    record Result(int exit, String output) {
    }

    static Path mpirun() {
        String path = System.getenv("PATH");
        if (path == null) return null;
        for (String d : path.split(":")) {
            Path p = Path.of(d.isEmpty() ? "." : d, "mpirun");
            if (Files.isExecutable(p)) return p;
        }
        return null;
    }

    static void assumeAvailable() {
        Assumptions.assumeTrue(mpirun() != null,
                "mpirun not on PATH: Open MPI is not installed (apt-get install openmpi-bin libopenmpi-dev; .ci/run does it)");
        Assumptions.assumeTrue(Mpi.available(), "libmpi not loadable: " + Mpi.reason());
    }

    static List<String> java(String main, List<String> args) {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-XX:+UseSerialGC",
                "-Xmx512m", "-Dmoe4j.threads=1", "-cp", System.getProperty("java.class.path"), main));
        cmd.addAll(args);
        return cmd;
    }

    static List<String> mpi(int ranks, List<String> javaCmd) {
        List<String> cmd = new ArrayList<>(List.of(mpirun().toString(), "--oversubscribe", "-np", Integer.toString(ranks),
                "--mca", "btl", "self,vader,tcp", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo",
                "--mca", "mpi_yield_when_idle", "1")); // a waiting rank yields its core (tests share a small machine)
        if ("root".equals(System.getProperty("user.name"))) cmd.add(1, "--allow-run-as-root");
        cmd.addAll(javaCmd);
        return cmd;
    }

    /** Runs cmd to its end (killed after timeoutSeconds: exit -1), stdout and stderr together. */
    static Result run(List<String> cmd, long timeoutSeconds) throws IOException, InterruptedException {
        return run(cmd, timeoutSeconds, null, null);
    }

    /**
     * As {@link #run(List, long)}; when a line matches {@code trigger} (once), {@code action} gets the output so far
     * (e.g. to kill a rank).
     */
    static Result run(List<String> cmd, long timeoutSeconds, Predicate<String> trigger,
                      java.util.function.Consumer<String> action) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        StringBuilder out = new StringBuilder();
        Thread reader = new Thread(() -> {
            boolean fired = false;
            try (BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
                for (String line; (line = r.readLine()) != null; ) {
                    synchronized (out) {
                        out.append(line).append('\n');
                    }
                    if (!fired && trigger != null && trigger.test(line)) {
                        fired = true;
                        String sofar;
                        synchronized (out) {
                            sofar = out.toString();
                        }
                        action.accept(sofar);
                    }
                }
            } catch (IOException e) {
                synchronized (out) {
                    out.append("[reader: ").append(e).append("]\n");
                }
            }
        });
        reader.start();
        boolean done = p.waitFor(timeoutSeconds, TimeUnit.SECONDS);
        if (!done) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            p.waitFor();
        }
        reader.join(10_000);
        synchronized (out) {
            return new Result(done ? p.exitValue() : -1, out + (done ? "" : "[killed after " + timeoutSeconds + " s]\n"));
        }
    }
}
