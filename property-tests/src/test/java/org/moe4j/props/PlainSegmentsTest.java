package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * Every segment the kernels see is a plain native one: no main source wraps a Java array as a MemorySegment
 * ({@code MemorySegment.ofArray}), and files are mapped only through {@code MappedFiles}, which hands the mapping
 * out as a plain native segment. The JDK's segment-access
 * methods that every vector loop inlines share one type profile across all callers; one heap segment among the
 * native ones makes those profiles polymorphic, and every vector loop compiled after that runs slower — the BF16
 * weight-streaming kernel read 8.1 instead of 12.2 GB/s from DRAM, and a plain streaming read dropped from 27 to 11
 * GB/s, in the same process (WeightGemm's {@code pairedXSeg} comment has the measurement); a mapped-segment class
 * did the same (MappedFiles' comment). Arrays stay arrays ({@code fromArray}), segments stay native.
 */
class PlainSegmentsTest {
    @Test
    void mainSourcesMakeOnlyPlainNativeSegments() throws IOException {
        Path root = Path.of("").toAbsolutePath();
        while (root != null && !Files.isDirectory(root.resolve("simd").resolve("src").resolve("main"))) root = root.getParent();
        assertTrue(root != null, "the repository root (with simd/src/main) was not found above " + Path.of("").toAbsolutePath());
        List<String> found = new ArrayList<>();
        int files = 0;
        for (String module : List.of("simd", "engine", "native-bindings", "model-io")) {
            Path src = root.resolve(module).resolve("src").resolve("main").resolve("java");
            assertTrue(Files.isDirectory(src), src + " is missing");
            try (Stream<Path> s = Files.walk(src)) {
                for (Path f : s.filter(p -> p.toString().endsWith(".java")).toList()) {
                    files++;
                    List<String> lines = Files.readAllLines(f, StandardCharsets.UTF_8);
                    for (int i = 0; i < lines.size(); i++) {
                        String line = lines.get(i).strip();
                        if (line.startsWith("*") || line.startsWith("//")) continue; // comments may name it
                        if (line.contains("MemorySegment.ofArray(")) found.add(root.relativize(f) + ":" + (i + 1) + ": " + line);
                        if (line.contains("MapMode.") && !f.getFileName().toString().equals("MappedFiles.java"))
                            found.add(root.relativize(f) + ":" + (i + 1) + ": a file mapped outside MappedFiles: " + line);
                    }
                }
            }
        }
        assertTrue(files > 100, "only " + files + " source files read: the scan is not looking at the sources");
        assertTrue(found.isEmpty(), "segments other than plain native ones in main sources (keep arrays as arrays; map files with MappedFiles):\n"
                + String.join("\n", found));
    }
}
