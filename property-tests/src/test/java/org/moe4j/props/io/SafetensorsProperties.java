package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterContainer;
import org.moe4j.io.safetensors.SafetensorsException;
import org.moe4j.io.safetensors.SafetensorsFile;
import org.moe4j.io.safetensors.SafetensorsWriter;
import org.moe4j.simd.DType;
import org.moe4j.simd.Tensor;

/**
 * safetensors round trips, and hostile files: whatever the bytes, opening and reading either works within the
 * file's bounds or fails with a SafetensorsException that names the file. Never another exception, a JVM crash,
 * a hang or an out-of-memory (a header length of 2^63 must be rejected before anything is allocated).
 */
class SafetensorsProperties {
    private static final Path DIR;

    static {
        try {
            DIR = Files.createTempDirectory("moe4j-safetensors-props");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @AfterContainer
    static void cleanUp() throws IOException {
        try (var s = Files.walk(DIR)) {
            s.sorted((a, b) -> b.compareTo(a)).forEach(p -> p.toFile().delete());
        }
    }

    /** A random set of tensors of every dtype, zero-size and scalar shapes included. */
    private static Map<String, Tensor> randomTensors(Random rnd, Arena arena) {
        Map<String, Tensor> m = new LinkedHashMap<>();
        int count = rnd.nextInt(6);
        for (int i = 0; i < count; i++) {
            int rank = rnd.nextInt(4);
            int[] shape = new int[rank];
            for (int d = 0; d < rank; d++) {
                shape[d] = rnd.nextInt(7);
            }
            DType dt = DType.values()[rnd.nextInt(3)];
            Tensor t = Tensor.allocate(arena, dt, shape);
            for (long j = 0; j < t.numel(); j++) {
                t.set(j, (float) rnd.nextGaussian());
            }
            m.put("model.layers." + i + ".w" + rnd.nextInt(100), t);
        }
        return m;
    }

    private static Path validFile(Random rnd, Arena arena) {
        Path p = DIR.resolve("valid-" + rnd.nextLong() + ".safetensors");
        SafetensorsWriter.write(p, randomTensors(rnd, arena), Map.of("format", "pt"));
        return p;
    }

    @Property(tries = 60)
    void roundTripKeepsNamesOrderShapesDtypesBytesAndMetadata(@ForAll long seed) throws IOException {
        Random rnd = new Random(seed);
        try (Arena arena = Arena.ofShared()) {
            Map<String, Tensor> tensors = randomTensors(rnd, arena);
            Map<String, String> meta = Map.of("format", "pt", "seed", Long.toString(seed));
            Path p = DIR.resolve("rt-" + seed + ".safetensors");
            SafetensorsWriter.write(p, tensors, meta);
            assertEquals(0, (8 + headerLength(p)) % 8, "data start is 8-byte aligned");
            try (SafetensorsFile f = SafetensorsFile.open(p)) {
                assertEquals(List.copyOf(tensors.keySet()), f.names());
                assertEquals(meta, f.metadata());
                for (var e : tensors.entrySet()) {
                    Tensor back = f.tensor(e.getKey());
                    assertEquals(e.getValue().dtype(), back.dtype());
                    assertArrayEquals(e.getValue().shape(), back.shape());
                    assertArrayEquals(e.getValue().segment().toArray(ValueLayout.JAVA_BYTE),
                            back.segment().toArray(ValueLayout.JAVA_BYTE), e.getKey());
                    // conversion on read: exact for bf16/f16 (every value widens exactly to f32)
                    assertArrayEquals(e.getValue().toFloatArray(), f.tensorF32(e.getKey(), arena).toFloatArray());
                }
            }
            Files.delete(p);
        }
    }

    private static long headerLength(Path p) throws IOException {
        byte[] b = Files.readAllBytes(p);
        return ByteBuffer.wrap(b, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
    }

    /** Opens and reads every tensor; only a SafetensorsException naming the file may come out. */
    private static void openAndReadAll(Path p) {
        try (SafetensorsFile f = SafetensorsFile.open(p)) {
            for (String n : f.names()) {
                Tensor t = f.tensor(n);
                assertTrue(t.byteSize() >= 0);
                t.toFloatArray();
            }
        } catch (SafetensorsException e) {
            assertTrue(e.getMessage().contains(p.toString()), "message names the file: " + e.getMessage());
        }
    }

    @Property(tries = 150)
    void truncatedFilesFailCleanly(@ForAll long seed) throws IOException {
        Random rnd = new Random(seed);
        try (Arena arena = Arena.ofShared()) {
            Path p = validFile(rnd, arena);
            byte[] b = Files.readAllBytes(p);
            Files.write(p, java.util.Arrays.copyOf(b, rnd.nextInt(b.length)));
            openAndReadAll(p);
            Files.delete(p);
        }
    }

    @Property(tries = 300)
    void corruptBytesFailCleanly(@ForAll long seed, @ForAll @IntRange(min = 1, max = 8) int flips) throws IOException {
        Random rnd = new Random(seed);
        try (Arena arena = Arena.ofShared()) {
            Path p = validFile(rnd, arena);
            byte[] b = Files.readAllBytes(p);
            long n = ByteBuffer.wrap(b, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
            for (int i = 0; i < flips; i++) {
                // mostly the header and its length, where corruption matters
                int at = rnd.nextBoolean() ? rnd.nextInt((int) Math.min(b.length, 8 + n)) : rnd.nextInt(b.length);
                b[at] = (byte) rnd.nextInt(256);
            }
            Files.write(p, b);
            openAndReadAll(p);
            Files.delete(p);
        }
    }

    @Property(tries = 100)
    void anyHeaderLengthFailsCleanly(@ForAll long headerLength, @ForAll long seed) throws IOException {
        Random rnd = new Random(seed);
        try (Arena arena = Arena.ofShared()) {
            Path p = validFile(rnd, arena);
            byte[] b = Files.readAllBytes(p);
            ByteBuffer.wrap(b, 0, 8).order(ByteOrder.LITTLE_ENDIAN).putLong(headerLength);
            Files.write(p, b);
            openAndReadAll(p);
            Files.delete(p);
        }
    }

    /** Writes a file with a hand-made header and {@code dataBytes} zero bytes of data. */
    private static Path handMade(String name, String header, int dataBytes) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h);
        Path p = DIR.resolve(name);
        Files.write(p, b.array());
        return p;
    }

    private static String failure(Path p) {
        SafetensorsException e = assertThrows(SafetensorsException.class, () -> SafetensorsFile.open(p).close());
        assertTrue(e.getMessage().startsWith(p.toString()), e.getMessage());
        return e.getMessage();
    }

    @Property(tries = 200)
    void malformedHeadersAreRejectedWithTheReason(@ForAll @IntRange(min = 0, max = 7) int kind,
                                                   @ForAll @IntRange(min = 0, max = 64) int a,
                                                   @ForAll @IntRange(min = 1, max = 64) int b) throws IOException {
        int data = 64;
        String header;
        String expected;
        switch (kind) {
            case 0 -> {
                header = "{\"t\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}";
                expected = "dtype 'Q4'";
            }
            case 1 -> {
                header = "{\"t\":{\"dtype\":\"F32\",\"shape\":[" + b + "],\"data_offsets\":[" + a + "," + (a + 4 * b) + "]}}";
                // valid only when the one tensor tiles the 64 data bytes exactly
                expected = a + 4 * b > data ? "outside the data buffer" : a > 0 ? "no tensor holds data bytes [0, "
                        : 4 * b < data ? "the tensors cover " + 4 * b + " bytes" : null;
            }
            case 2 -> {
                int n = Math.min(b, 16); // within the 64 data bytes, one element short
                header = "{\"t\":{\"dtype\":\"F32\",\"shape\":[" + (n + 1) + "],\"data_offsets\":[0," + (4 * n) + "]}}";
                expected = "hold " + (4 * n) + " bytes";
            }
            case 3 -> {
                int len = 4 * Math.min(b, 8);
                int start = Math.min(a, data - 2 * len);
                header = "{\"x\":{\"dtype\":\"F32\",\"shape\":[" + (len / 4) + "],\"data_offsets\":[0," + len + "]},"
                        + "\"y\":{\"dtype\":\"F32\",\"shape\":[" + (len / 4) + "],\"data_offsets\":[" + start + ","
                        + (start + len) + "]}}";
                expected = start < len ? "overlap" : start > len ? "no tensor holds data bytes [" + len
                        : "the tensors cover " + 2 * len + " bytes";
            }
            case 4 -> {
                header = "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}".substring(0, Math.min(a, 48));
                expected = "";
            }
            case 5 -> {
                header = "{\"t\":{\"dtype\":\"F32\",\"shape\":[-" + b + "],\"data_offsets\":[0,4]}}";
                expected = "shape entry";
            }
            case 6 -> {
                header = "[1,2,3]";
                expected = "must begin with '{'";
            }
            default -> {
                header = "{\"t\":{\"dtype\":\"BF16\",\"shape\":[" + b + ",4294967296],\"data_offsets\":[0,4]}}";
                expected = "shape entry";
            }
        }
        Path p = handMade("hand-" + kind + "-" + a + "-" + b + ".safetensors", header, data);
        if (expected == null) {
            openAndReadAll(p); // valid by construction: it must open
            try (SafetensorsFile f = SafetensorsFile.open(p)) {
                assertTrue(f.names().size() >= 1);
            }
        } else {
            String msg = failure(p);
            assertTrue(msg.contains(expected), "expected '" + expected + "' in: " + msg);
        }
        Files.delete(p);
    }

    @Example
    void hugeHeaderLengthIsRejectedBeforeAllocating() throws IOException {
        Path p = handMade("huge.safetensors", "{}", 0);
        byte[] b = Files.readAllBytes(p);
        ByteBuffer.wrap(b, 0, 8).order(ByteOrder.LITTLE_ENDIAN).putLong(Long.MAX_VALUE);
        Files.write(p, b);
        assertTrue(failure(p).contains("header length " + Long.MAX_VALUE + " is invalid"));
    }

    @Example
    void missingTensorIsNamed() throws IOException {
        Path p = handMade("one.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4);
        try (SafetensorsFile f = SafetensorsFile.open(p)) {
            assertEquals(1, f.tensor("a").numel());
            SafetensorsException e = assertThrows(SafetensorsException.class, () -> f.tensor("b"));
            assertTrue(e.getMessage().contains("no tensor 'b'"), e.getMessage());
        }
    }

    @Example
    void failedWriteLeavesTheOldFileAndNoTemporary() throws IOException {
        Path p = DIR.resolve("atomic.safetensors");
        try (Arena arena = Arena.ofShared()) {
            Map<String, Tensor> ok = Map.of("a", Tensor.allocate(arena, 3).fill(1f));
            SafetensorsWriter.write(p, ok, Map.of());
            byte[] before = Files.readAllBytes(p);
            Map<String, Tensor> bad = new LinkedHashMap<>();
            bad.put("__metadata__", Tensor.allocate(arena, 1));
            assertThrows(SafetensorsException.class, () -> SafetensorsWriter.write(p, bad, Map.of()));
            assertArrayEquals(before, Files.readAllBytes(p));
            try (var s = Files.list(DIR)) {
                assertTrue(s.noneMatch(f -> f.getFileName().toString().endsWith(".tmp")));
            }
        }
    }
}
