package org.moe4j.nativ;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.OutputStream;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.jar.JarEntry;
import java.util.jar.JarOutputStream;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The extractor on a small jar made here (two fake "libraries"): first extraction, reuse, repair of a damaged
 * cache, and the failures that must end in a clear NativeLibraryException (which OneDnn turns into a log line
 * and a Java fallback): missing entry, wrong digest, unwritable cache folder, missing system library, a file that
 * is not a library. Plus two threads and two other processes extracting into one folder at once.
 */
class NativeLibrariesTest {
    static final String DIR = "fake/linux-x86_64/";
    static final List<String> NAMES = List.of("liba.so.1", "libb.so.3");

    @TempDir
    Path tmp;
    Path jar;
    byte[] a;
    byte[] b;

    @BeforeEach
    void makeJar() throws IOException {
        Random r = new Random(42);
        a = new byte[300_000];
        b = new byte[70_001];
        r.nextBytes(a);
        r.nextBytes(b);
        jar = tmp.resolve("fake.jar");
        try (OutputStream os = Files.newOutputStream(jar); JarOutputStream jos = new JarOutputStream(os)) {
            jos.putNextEntry(new JarEntry(DIR + NAMES.get(0)));
            jos.write(a);
            jos.closeEntry();
            jos.putNextEntry(new JarEntry(DIR + NAMES.get(1)));
            jos.write(b);
            jos.closeEntry();
        }
    }

    URLClassLoader loader() throws IOException {
        return new URLClassLoader(new URL[] {jar.toUri().toURL()}, null);
    }

    static List<Path> leftovers(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(p -> p.getFileName().toString().endsWith(".tmp")).toList();
        }
    }

    @Test
    void extractsVerifiesAndReuses() throws IOException {
        Path dir = tmp.resolve("cache/dnnl-x");
        try (URLClassLoader cl = loader()) {
            List<Path> got = NativeLibraries.extract(cl, DIR, NAMES, dir, Map.of());
            assertEquals(List.of(dir.resolve(NAMES.get(0)), dir.resolve(NAMES.get(1))), got);
            assertArrayEquals(a, Files.readAllBytes(got.get(0)));
            assertArrayEquals(b, Files.readAllBytes(got.get(1)));
            Map<String, NativeLibraries.Entry> rec = NativeLibraries.readRecord(dir);
            assertEquals(NativeLibraries.sha256(got.get(0)), rec.get(NAMES.get(0)).sha256());
            assertEquals(a.length, rec.get(NAMES.get(0)).size());
            // reuse: nothing is written again
            FileTime old = FileTime.fromMillis(1_000_000L);
            Files.setLastModifiedTime(got.get(0), old);
            NativeLibraries.extract(cl, DIR, NAMES, dir, Map.of());
            assertEquals(old, Files.getLastModifiedTime(got.get(0)));
            assertTrue(leftovers(dir).isEmpty());
        }
    }

    @Test
    void damagedCacheIsExtractedAgain() throws IOException {
        Path dir = tmp.resolve("cache");
        try (URLClassLoader cl = loader()) {
            Path f = NativeLibraries.extract(cl, DIR, NAMES, dir, Map.of()).get(0);
            byte[] bad = a.clone();
            bad[12345] ^= 1; // same size, different digest
            Files.write(f, bad);
            NativeLibraries.extract(cl, DIR, NAMES, dir, Map.of());
            assertArrayEquals(a, Files.readAllBytes(f));
            Files.write(f, new byte[10]); // wrong size
            NativeLibraries.extract(cl, DIR, NAMES, dir, Map.of());
            assertArrayEquals(a, Files.readAllBytes(f));
        }
    }

    @Test
    void missingEntryFailsClearly() throws IOException {
        Path dir = tmp.resolve("cache");
        try (URLClassLoader cl = loader()) {
            NativeLibraryException e = assertThrows(NativeLibraryException.class,
                    () -> NativeLibraries.extract(cl, DIR, List.of("libmissing.so"), dir, Map.of()));
            assertTrue(e.getMessage().contains("jar entry " + DIR + "libmissing.so not found"), e.getMessage());
        }
        // and the real source with a class path that lacks the dnnl jar
        try (URLClassLoader empty = new URLClassLoader(new URL[0], null)) {
            NativeLibraryException e = assertThrows(NativeLibraryException.class, () -> NativeLibraries.loadDnnl(
                    new NativeLibraries.DnnlSource(null, tmp.resolve("cache2"), empty)));
            assertTrue(e.getMessage().contains("org/bytedeco/dnnl/linux-x86_64/libgomp.so.1"), e.getMessage());
        }
    }

    @Test
    void wrongDigestIsRefusedAndLeavesNothing() throws IOException {
        Path dir = tmp.resolve("cache");
        try (URLClassLoader cl = loader()) {
            String wrong = "0".repeat(64);
            NativeLibraryException e = assertThrows(NativeLibraryException.class,
                    () -> NativeLibraries.extract(cl, DIR, NAMES, dir, Map.of(NAMES.get(0), wrong)));
            assertTrue(e.getMessage().contains("SHA-256") && e.getMessage().contains("expected " + wrong),
                    e.getMessage());
            assertFalse(Files.exists(dir.resolve(NAMES.get(0))));
            assertTrue(leftovers(dir).isEmpty());
        }
    }

    @Test
    void unwritableCacheFolderFailsClearly() throws IOException {
        Path file = Files.writeString(tmp.resolve("not-a-folder"), "x");
        Path dir = file.resolve("dnnl-x"); // a folder under a regular file cannot be created, even by root
        try (URLClassLoader cl = loader()) {
            NativeLibraryException e = assertThrows(NativeLibraryException.class,
                    () -> NativeLibraries.extract(cl, DIR, NAMES, dir, Map.of()));
            assertTrue(e.getMessage().contains("native cache folder " + dir + " is not writable"), e.getMessage());
            assertTrue(e.getMessage().contains(NativeLibraries.CACHE_PROPERTY), e.getMessage());
        }
    }

    @Test
    void missingSystemLibraryAndNonLibraryFailClearly() throws IOException {
        NativeLibraryException e = assertThrows(NativeLibraryException.class, () -> NativeLibraries.loadDnnl(
                new NativeLibraries.DnnlSource(tmp.resolve("nope/libdnnl.so.3").toString(), tmp, null)));
        assertTrue(e.getMessage().contains(NativeLibraries.DNNL_PATH_PROPERTY), e.getMessage());
        Path text = Files.writeString(tmp.resolve("libfake.so"), "not an ELF file");
        NativeLibraryException e2 = assertThrows(NativeLibraryException.class,
                () -> NativeLibraries.load(List.of(text), "test"));
        assertTrue(e2.getMessage().contains(text.toString()), e2.getMessage());
    }

    @Test
    void concurrentThreadsAndProcessesShareOneFolder() throws Exception {
        Path dir = tmp.resolve("shared-cache");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<Process> procs = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            List<String> cmd = new ArrayList<>(List.of(java, "-cp", System.getProperty("java.class.path"),
                    ExtractMain.class.getName(), jar.toString(), dir.toString(), DIR));
            cmd.addAll(NAMES);
            procs.add(new ProcessBuilder(cmd).redirectErrorStream(true).start());
        }
        ExecutorService ex = Executors.newFixedThreadPool(2);
        try (URLClassLoader cl = loader()) {
            List<Future<List<Path>>> fs = new ArrayList<>();
            for (int i = 0; i < 2; i++) {
                Callable<List<Path>> c = () -> NativeLibraries.extract(cl, DIR, NAMES, dir, Map.of());
                fs.add(ex.submit(c));
            }
            for (Future<List<Path>> f : fs) {
                assertEquals(2, f.get().size());
            }
        } finally {
            ex.shutdown();
        }
        for (Process p : procs) {
            String out = new String(p.getInputStream().readAllBytes());
            assertEquals(0, p.waitFor(), out);
            assertTrue(out.contains("OK"), out);
        }
        assertArrayEquals(a, Files.readAllBytes(dir.resolve(NAMES.get(0))));
        assertArrayEquals(b, Files.readAllBytes(dir.resolve(NAMES.get(1))));
        assertTrue(leftovers(dir).isEmpty());
    }
}
