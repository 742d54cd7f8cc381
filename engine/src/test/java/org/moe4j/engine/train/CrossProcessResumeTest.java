package org.moe4j.engine.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Exact resume across JVMs, in every routing mode (ERC on): process 1 trains N steps and saves, process 2 loads and
 * trains N more, process 3 trains 2N straight; the losses of all 2N steps, the final parameters and both AdamW
 * moments must be bit-identical. Unlike {@link org.moe4j.engine.model.ExactResumeTest} (both halves in one warm JVM), the halves here
 * start cold: kernels whose bits depend on JIT state (interpreted vs compiled) fail this test.
 */
class CrossProcessResumeTest {
    static final int N = 3;
    /**
     * Threads of processes 1, 2 and 3, all different: the kernels give the same bits on any thread count
     * (ColdWarmBitsTest), and RowOps sums RMSNorm weight gradients and the cross-entropy over fixed row blocks.
     */
    static final int[] THREADS = {1, 3, 2};

    @Test
    void resumeInANewProcessContinuesTheStraightRunBitForBit(@TempDir Path dir) throws Exception {
        Path ckpt = Files.createDirectories(dir.resolve("ckpt"));
        Path straight = Files.createDirectories(dir.resolve("straight"));
        Path first = Files.createDirectories(dir.resolve("first"));
        Path second = Files.createDirectories(dir.resolve("second"));
        Process p3 = start(0, 2 * N, THREADS[2], dir.resolve("unused"), straight);
        Process p1 = start(0, N, THREADS[0], ckpt, first);
        finish(p1, "process 1 (steps 0.." + N + ", save)");
        Process p2 = start(N, 2 * N, THREADS[1], ckpt, second);
        finish(p2, "process 2 (load, steps " + N + ".." + 2 * N + ")");
        finish(p3, "process 3 (steps 0.." + 2 * N + " straight)");
        List<String> differ = new ArrayList<>();
        for (String mode : ResumeRunMain.MODES) {
            ByteBuffer s = ByteBuffer.wrap(Files.readAllBytes(straight.resolve(mode + ".bin")));
            ByteBuffer a = ByteBuffer.wrap(Files.readAllBytes(first.resolve(mode + ".bin")));
            ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(second.resolve(mode + ".bin")));
            for (int step = 0; step < 2 * N; step++) {
                long want = s.getLong();
                long got = step < N ? a.getLong() : b.getLong();
                if (want != got) {
                    differ.add(mode + ": loss of step " + step + " " + Double.longBitsToDouble(got) + ", straight "
                            + Double.longBitsToDouble(want));
                }
            }
            int words = s.remaining() / 4;
            assertEquals(words, b.remaining() / 4, mode + ": state size");
            int n = words / 3;
            String[] what = {"parameters", "AdamW m", "AdamW v"};
            for (int part = 0; part < 3; part++) {
                int bad = 0;
                float worst = 0;
                for (int i = 0; i < n; i++) {
                    int x = s.getInt(), y = b.getInt();
                    if (x != y) {
                        bad++;
                        worst = Math.max(worst, Math.abs(Float.intBitsToFloat(x) - Float.intBitsToFloat(y)));
                    }
                }
                if (bad > 0) {
                    differ.add(mode + ": " + bad + " of " + n + " " + what[part] + " differ (up to " + worst + ")");
                }
            }
        }
        assertEquals(List.of(), differ, "resumed run vs straight run");
    }

    private static Process start(int from, int to, int threads, Path ckpt, Path out) throws IOException {
        List<String> cmd = List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xss4m",
                "-cp", System.getProperty("java.class.path"), ResumeRunMain.class.getName(),
                String.valueOf(from), String.valueOf(to), String.valueOf(2 * N), String.valueOf(threads),
                ckpt.toString(), out.toString());
        return new ProcessBuilder(cmd).redirectErrorStream(true).start();
    }

    private static void finish(Process p, String what) throws IOException, InterruptedException {
        String text = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(120, TimeUnit.SECONDS) || p.exitValue() != 0) {
            p.destroyForcibly();
            fail(what + " failed:\n" + text);
        }
    }
}
