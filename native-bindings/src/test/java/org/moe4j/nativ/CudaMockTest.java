package org.moe4j.nativ;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * CudaGemm without a GPU: builds the CPU stand-in for libcudart/libcublas (src/test/c/fakecuda.c, reference
 * column-major BLAS semantics) with the system C compiler and runs {@link CudaMockMain} against it in a fresh JVM.
 * This checks what can be checked without a device — the FFM signatures against the C prototypes, the row-major
 * to column-major operand swap, the packing copies and that C's row padding is left alone — not the real cuBLAS
 * (CudaGemmProperties in property-tests does that on a GPU host). Skipped when there is no C compiler.
 */
class CudaMockTest {
    @TempDir
    Path tmp;

    static String compiler() {
        for (String cc : List.of("cc", "gcc", "clang")) {
            try {
                Process p = new ProcessBuilder(cc, "--version").redirectErrorStream(true).start();
                p.getInputStream().readAllBytes();
                if (p.waitFor() == 0) {
                    return cc;
                }
            } catch (IOException | InterruptedException e) {
                // try the next one
            }
        }
        return null;
    }

    static void build(String cc, Path src, Path out, String soname) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cc, "-shared", "-fPIC", "-O1", "-o", out.toString(), "-Wl,-soname," + soname,
                src.toString()).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes());
        assertEquals(0, p.waitFor(), "building " + out + ": " + log);
    }

    @Test
    void cudaGemmAgainstStandIn() throws Exception {
        String cc = compiler();
        Assumptions.assumeTrue(cc != null, "no C compiler (cc, gcc, clang) to build the CUDA stand-in");
        Path src = Path.of("src/test/c/fakecuda.c").toAbsolutePath();
        assertTrue(Files.isRegularFile(src), src.toString());
        build(cc, src, tmp.resolve("libcudart.so.13"), "libmoe4jfakecudart.so");
        build(cc, src, tmp.resolve("libcublas.so.13"), "libmoe4jfakecublas.so");
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                "-D" + Cuda.LIBDIR_PROPERTY + "=" + tmp,
                "-cp", System.getProperty("java.class.path"), CudaMockMain.class.getName()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertEquals(0, p.waitFor(), out);
        assertTrue(out.contains("CUDA-MOCK OK") && out.contains(tmp.resolve("libcudart.so.13").toString()), out);
    }
}
