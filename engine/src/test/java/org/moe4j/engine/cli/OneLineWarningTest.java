package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The README's promise, checked on the log a user sees: when oneDNN cannot be loaded, {@code ./moe4j train} says so
 * in exactly one line, a WARNING that names the backend it took and why, and trains on Java. A fresh JVM, because
 * oneDNN loads once per process and the log format is fixed when the first record is written.
 */
class OneLineWarningTest {
    @TempDir
    Path tmp;

    @Test
    void unloadableOneDnnIsOneWarningLine() throws Exception {
        Path missing = tmp.resolve("libdnnl.so.3");
        Process p = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                "-Dmoe4j.dnnl.path=" + missing, "-cp", System.getProperty("java.class.path"), Main.class.getName(),
                "train", "--gemm", "onednn", "--steps", "1", "--batch", "1", "--seq", "8").start();
        p.getOutputStream().close();
        String out = new String(p.getInputStream().readAllBytes());
        String err = new String(p.getErrorStream().readAllBytes());
        assertEquals(0, p.waitFor(), out + err);
        List<String> native_ = err.lines().filter(l -> l.contains("oneDNN") || l.contains("org.moe4j")).toList();
        assertEquals(1, native_.size(), err);
        String line = native_.get(0);
        assertTrue(line.startsWith("WARNING: GEMM backend: java (requested; oneDNN unavailable, so the Java kernel: "),
                line);
        assertTrue(line.contains(missing + ": no such file"), line);
        assertTrue(out.contains("step     0"), out);
    }
}
