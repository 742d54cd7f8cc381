package org.moe4j.simd;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * Every kernel gives the same bits whether it runs in the interpreter, in C1-compiled code or in C2-compiled code
 * (where the Vector API becomes intrinsics), and whatever the thread count: the condition for a training run
 * resumed in a fresh JVM to continue a straight run exactly. The interpreter and C1 runs are separate JVMs
 * ({@code -Xint}, {@code -XX:TieredStopAtLevel=1}); the C2 run is this JVM after enough rounds for C2 to compile
 * the kernels. Before the fix, {@code lanewise(EXP)} made Softmax and SwiGLU differ in ~1% of outputs here.
 */
class ColdWarmBitsTest {
    /** Repeats after which C2 has compiled every kernel (checked once with -XX:+PrintCompilation). */
    static final int WARM_LIGHT = 3000;
    static final int WARM_HEAVY = 150;

    @Test
    void interpretedC1AndC2GiveTheSameBitsOnAnyThreadCount() throws Exception {
        // the other JVMs run while this one warms up
        Process interpreted = fork("-Xint", 1);
        Process c1 = fork("-XX:TieredStopAtLevel=1", 2);
        try {
            compare(interpreted, c1);
        } finally {
            interpreted.destroyForcibly();
            c1.destroyForcibly();
        }
    }

    private static void compare(Process interpreted, Process c1) throws IOException, InterruptedException {
        Map<String, Long> warm3;
        Map<String, Long> warm1;
        try (WorkerPool pool3 = new WorkerPool(3); WorkerPool pool1 = new WorkerPool(1)) {
            Map<String, Long> first = KernelBits.run(pool3);
            KernelBits.run(pool3, WARM_LIGHT, WARM_HEAVY);
            KernelBits.run(pool1, WARM_LIGHT / 10, WARM_HEAVY / 10);
            warm3 = KernelBits.run(pool3);
            warm1 = KernelBits.run(pool1);
            assertSame("first call vs after warm-up (3 threads)", first, warm3);
        }
        assertSame("3 threads vs 1 thread, warm", warm3, warm1);
        assertSame("-Xint (1 thread) vs this JVM warm", warm3, hashes(interpreted, "-Xint"));
        assertSame("C1 only (2 threads) vs this JVM warm", warm3, hashes(c1, "C1 only"));
    }

    private static void assertSame(String what, Map<String, Long> want, Map<String, Long> got) {
        List<String> differ = new ArrayList<>();
        for (String k : want.keySet()) {
            if (!want.get(k).equals(got.get(k))) {
                differ.add(k);
            }
        }
        assertEquals(want.keySet(), got.keySet(), what + ": kernels run");
        assertEquals(List.of(), differ, what + ": kernels whose output bits differ (" + Simd.BITS + "-bit vectors)");
    }

    private static Process fork(String mode, int threads) throws IOException {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", mode,
                "-D" + Simd.BITS_PROPERTY + "=" + Simd.BITS,
                "-cp", System.getProperty("java.class.path"), KernelBits.class.getName(), String.valueOf(threads)));
        return new ProcessBuilder(cmd).redirectErrorStream(true).start();
    }

    private static Map<String, Long> hashes(Process p, String mode) throws IOException, InterruptedException {
        String text = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(120, TimeUnit.SECONDS) || p.exitValue() != 0) {
            p.destroyForcibly();
            throw new AssertionError("KernelBits " + mode + " failed:\n" + text);
        }
        Map<String, Long> out = new LinkedHashMap<>();
        for (String line : text.split("\n")) {
            String[] f = line.trim().split(" ");
            if (f.length == 2 && !line.startsWith("WARNING")) {
                out.put(f[0], Long.parseUnsignedLong(f[1], 16));
            }
        }
        return out;
    }
}
