package org.moe4j.nativ;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * End to end, in fresh JVMs (OneDnn loads once per process): when oneDNN cannot be had, the process does not
 * crash, each backend choice logs exactly one record, a WARNING on one line naming the cause, OneDnn.reason()
 * says it too, and GEMM falls back to Java. And a "system" oneDNN given by -Dmoe4j.dnnl.path (here: the copy extracted from the jar) loads.
 */
class OneDnnFallbackTest {
    @TempDir
    Path tmp;

    static String run(String... props) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"));
        cmd.addAll(List.of(props));
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), FallbackMain.class.getName()));
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
        pb.environment().remove("OMP_WAIT_POLICY");
        pb.environment().remove("GOMP_SPINCOUNT");
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes());
        assertEquals(0, p.waitFor(), out);
        return out;
    }

    /**
     * FallbackMain chooses twice (auto, onednn): with oneDNN unloadable that is two records, both WARNING, both one
     * line that names the backend taken and the cause; nothing else of this module logs.
     */
    static void assertOneWarningLinePerChoice(String out, String cause) {
        List<String> records = out.lines().filter(l -> l.startsWith("record=")).toList();
        assertEquals(2, records.size(), out);
        for (String r : records) {
            assertTrue(r.startsWith("record=WARNING|GEMM backend: java ("), r);
            assertTrue(r.contains("oneDNN unavailable") && r.contains(cause), r);
            assertFalse(r.contains("\\n"), r);
        }
    }

    @Test
    void missingSystemLibraryFallsBackToJava() throws Exception {
        String out = run("-D" + NativeLibraries.DNNL_PATH_PROPERTY + "=" + tmp.resolve("libdnnl.so.3"));
        assertTrue(out.contains("available=false") && out.contains("auto=java") && out.contains("onednn=java"), out);
        assertTrue(out.contains("reason=" + NativeLibraries.DNNL_PATH_PROPERTY + "="), out);
        assertOneWarningLinePerChoice(out, NativeLibraries.DNNL_PATH_PROPERTY + "=");
    }

    @Test
    void unwritableCacheFallsBackToJava() throws Exception {
        Path file = Files.writeString(tmp.resolve("file"), "x");
        String out = run("-D" + NativeLibraries.CACHE_PROPERTY + "=" + file.resolve("cache"));
        assertTrue(out.contains("available=false") && out.contains("auto=java"), out);
        assertTrue(out.contains("is not writable"), out);
        assertOneWarningLinePerChoice(out, "is not writable");
    }

    /** Also: the OpenMP wait policy moe4j sets before libgomp loads (passive unless asked otherwise). */
    @Test
    void systemPathLoads() throws Exception {
        assertTrue(OneDnn.available(), OneDnn.reason());
        NativeLibraries.Loaded jar = NativeLibraries.loadDnnl(NativeLibraries.DnnlSource.fromEnvironment());
        Path lib = jar.files().get(jar.files().size() - 1);
        assertTrue(lib.getFileName().toString().equals("libdnnl.so.3"), lib.toString());
        String out = run("-D" + NativeLibraries.DNNL_PATH_PROPERTY + "=" + lib);
        assertTrue(out.contains("available=true") && out.contains("(system " + lib + ", ") && out.contains("auto=onednn"),
                out);
        assertTrue(out.contains("OMP_WAIT_POLICY=passive (set by moe4j"), out);
        assertTrue(out.lines().filter(l -> l.startsWith("record=")).allMatch(l -> l.startsWith("record=INFO|GEMM backend: onednn")),
                out);
        String active = run("-D" + NativeLibraries.OMP_WAIT_POLICY_PROPERTY + "=active");
        assertTrue(active.contains("available=true") && active.contains("OMP_WAIT_POLICY=active (set by moe4j"), active);
    }
}
