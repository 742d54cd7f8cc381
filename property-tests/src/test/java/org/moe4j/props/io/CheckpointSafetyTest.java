package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.Moe4jException;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.io.checkpoint.Checkpoint;
import org.moe4j.io.checkpoint.CheckpointDescriptor;
import org.moe4j.io.checkpoint.CheckpointFolder;
import org.moe4j.io.safetensors.SafetensorsException;
import org.moe4j.io.safetensors.SafetensorsFile;
import org.moe4j.simd.Tensor;

/**
 * Checkpoint folders under crashes, concurrent writers and careless paths (issue 9): a save killed at any point of
 * its swap leaves a checkpoint the next load finds, and no full-size leftover survives the next load or save; a
 * second writer is told the folder is busy; a user's file or folder is never replaced. And the file-format cases
 * the hostile suite also covers, each as a named example: header lengths a few bytes off, a zero-size tensor inside
 * another, invalid UTF-8, a NUL in an index's file name, HF keys that disagree with the moe4j block.
 */
class CheckpointSafetyTest {
    static final class Crash extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Crash(String point) {
            super("simulated kill at " + point);
        }
    }

    @TempDir
    Path tmp;

    @AfterEach
    void noHook() {
        CheckpointFolder.injectFault(null);
    }

    /** The CheckpointTest tensors with every value offset by {@code v}, so two saves are told apart. */
    static Map<String, Tensor> tensors(Arena arena, float v) {
        Map<String, Tensor> m = CheckpointTest.tensors(arena);
        for (Tensor t : m.values()) for (long i = 0; i < t.numel(); i++) t.set(i, t.get(i) + v);
        return m;
    }

    static float first(Path dir) {
        try (Checkpoint c = Checkpoint.open(dir)) {
            return c.tensor("model.embed_tokens.weight").get(0);
        }
    }

    static List<String> files(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    List<String> besides() throws IOException {
        try (Stream<Path> s = Files.list(tmp)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {CheckpointFolder.STAGED, CheckpointFolder.MOVED_ASIDE, CheckpointFolder.SWAPPED})
    void aSaveKilledAnywhereLeavesACheckpointAndNoLeftovers(String point) throws IOException {
        Path dir = tmp.resolve("ck");
        try (Arena arena = Arena.ofShared()) {
            Checkpoint.write(dir, CheckpointTest.config(), tensors(arena, 0), 700);
            float before = first(dir);
            List<String> sharded = files(dir);
            CheckpointFolder.injectFault(p -> {
                if (p.equals(point)) throw new Crash(p);
            });
            assertThrows(Crash.class, () -> Checkpoint.write(dir, CheckpointTest.config(), tensors(arena, 100), 1L << 30));
            CheckpointFolder.injectFault(null);
            // what the kill left: between the renames there is no folder at all, only the moved-aside old one and
            // the complete new one
            List<String> left = besides();
            if (point.equals(CheckpointFolder.MOVED_ASIDE)) {
                assertFalse(Files.exists(dir), "the kill came between the two renames");
                assertTrue(left.stream().anyMatch(n -> n.startsWith(".ck.old-")), left.toString());
                assertTrue(left.stream().anyMatch(n -> n.startsWith(".ck.new-")), left.toString());
            }
            // the next load finds a whole checkpoint: the new one once it was complete, and nothing else remains
            float after = first(dir);
            assertEquals(point.equals(CheckpointFolder.STAGED) ? before : before + 100, after, 0f, point);
            assertEquals(List.of("ck"), besides());
            assertEquals(point.equals(CheckpointFolder.STAGED) ? sharded
                    : List.of(CheckpointDescriptor.CONFIG, CheckpointDescriptor.SINGLE_WEIGHTS), files(dir));
        }
    }

    @Test
    void aResumeAfterAKillBetweenTheRenamesFindsItsCheckpoint() throws IOException {
        Path dir = tmp.resolve("run");
        try (MoeModel m = new MoeModel(HostileCheckpointProperties.CONFIG).initRandom(3)) {
            ModelCheckpoint.save(dir, m, null, null);
            CheckpointFolder.injectFault(p -> {
                if (p.equals(CheckpointFolder.MOVED_ASIDE)) throw new Crash(p);
            });
            assertThrows(Crash.class, () -> ModelCheckpoint.save(dir, m, null, null));
            CheckpointFolder.injectFault(null);
            assertFalse(Files.exists(dir.resolve(CheckpointDescriptor.CONFIG)));
            try (MoeModel back = ModelCheckpoint.load(dir)) {
                assertArrayEquals(m.paramValues("lm_head.weight"), back.paramValues("lm_head.weight"));
            }
            assertEquals(List.of("run"), besides());
        }
    }

    @Test
    void leftoversOfInterruptedSavesAreRemovedByTheNextLoadAndSave() throws IOException {
        Path dir = tmp.resolve("ck");
        try (Arena arena = Arena.ofShared()) {
            Checkpoint.write(dir, CheckpointTest.config(), tensors(arena, 0), 1L << 30);
            for (String n : new String[] {".ck.tmp-123", ".ck.old-5", ".ck.new-1"}) {
                Files.createDirectories(tmp.resolve(n));
                Files.write(tmp.resolve(n).resolve("model.safetensors"), new byte[1 << 16]);
            }
            Files.writeString(tmp.resolve(".ck.other"), "not ours"); // a name of the user's, kept
            first(dir);
            assertEquals(List.of(".ck.other", "ck"), besides());
            Files.createDirectories(tmp.resolve(".ck.tmp-9"));
            Checkpoint.write(dir, CheckpointTest.config(), tensors(arena, 1), 1L << 30);
            assertEquals(List.of(".ck.other", "ck"), besides());
        }
    }

    @Test
    void aSecondWriterIsToldTheFolderIsBusy() throws Exception {
        Path dir = tmp.resolve("ck");
        try (Arena arena = Arena.ofShared()) {
            Map<String, Tensor> t = tensors(arena, 0);
            Checkpoint.write(dir, CheckpointTest.config(), t, 1L << 30);
            try (CheckpointFolder.Lock held = CheckpointFolder.lock(dir)) {
                assertTrue(held != null);
                SafetensorsException e = assertThrows(SafetensorsException.class,
                        () -> Checkpoint.write(dir, CheckpointTest.config(), t, 1L << 30));
                assertTrue(e.getMessage().contains("another save to this checkpoint folder is in progress"), e.getMessage());
                assertTrue(e.getMessage().contains(".ck.lock"), e.getMessage());
            }
            // writers racing on one folder: each save either completes or is told the folder is busy; never a
            // NoSuchFileException or "Directory not empty", and the folder is whole at the end
            ExecutorService ex = Executors.newFixedThreadPool(4);
            try {
                CountDownLatch go = new CountDownLatch(1);
                List<Future<Integer>> done = new ArrayList<>();
                for (int w = 0; w < 4; w++) {
                    done.add(ex.submit(() -> {
                        go.await();
                        int saved = 0;
                        for (int i = 0; i < 5; i++) {
                            try {
                                Checkpoint.write(dir, CheckpointTest.config(), t, 700);
                                saved++;
                            } catch (SafetensorsException busy) {
                                assertTrue(busy.getMessage().contains("in progress"), busy.getMessage());
                            }
                        }
                        return saved;
                    }));
                }
                go.countDown();
                int saved = 0;
                for (Future<Integer> f : done) saved += f.get();
                assertTrue(saved >= 1, "at least one save went through");
            } finally {
                ex.shutdown();
            }
            assertEquals(0f, first(dir) - t.get("model.embed_tokens.weight").get(0), 0f);
            assertEquals(List.of("ck"), besides());
        }
    }

    @Test
    void aSaveWhileAnotherProcessHoldsTheLockIsRefused() throws Exception {
        Path dir = tmp.resolve("ck");
        Path javaBin = Path.of(System.getProperty("java.home"), "bin", "java");
        Process p = new ProcessBuilder(javaBin.toString(), "-cp", System.getProperty("java.class.path"),
                LockHolder.class.getName(), dir.toString()).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        try (Arena arena = Arena.ofShared()) {
            var out = new java.io.BufferedReader(new java.io.InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
            assertEquals("locked", out.readLine(), "the other process took the lock");
            Map<String, Tensor> t = tensors(arena, 0);
            SafetensorsException e = assertThrows(SafetensorsException.class,
                    () -> Checkpoint.write(dir, CheckpointTest.config(), t, 1L << 30));
            assertTrue(e.getMessage().contains("another save to this checkpoint folder is in progress"), e.getMessage());
            assertFalse(Files.exists(dir), "nothing written");
            p.getOutputStream().close(); // the other process lets go and exits
            assertTrue(p.waitFor(120, java.util.concurrent.TimeUnit.SECONDS), "the other process exits"); // a hang guard
            assertEquals(0, p.exitValue());
            Checkpoint.write(dir, CheckpointTest.config(), t, 1L << 30);
            assertEquals(List.of("ck"), besides());
        } finally {
            p.destroy();
        }
    }

    @Test
    void aUsersFileOrFolderIsNeverReplaced() throws IOException {
        try (Arena arena = Arena.ofShared()) {
            Map<String, Tensor> t = tensors(arena, 0);
            Path file = tmp.resolve("file");
            Files.writeString(file, "mine");
            Path tree = tmp.resolve("tree");
            Files.createDirectories(tree.resolve("sub"));
            Path foreign = tmp.resolve("hf"); // a checkpoint another program wrote: its weights are not marked moe4j
            Files.createDirectories(foreign);
            Files.writeString(foreign.resolve("config.json"), "{}");
            Files.write(foreign.resolve("model.safetensors"), "{}".getBytes(StandardCharsets.US_ASCII));
            Path link = tmp.resolve("link");
            Files.createSymbolicLink(link, tree);
            for (Path p : List.of(file, tree, foreign, link)) {
                SafetensorsException e = assertThrows(SafetensorsException.class,
                        () -> Checkpoint.write(p, CheckpointTest.config(), t, 1L << 30), p.toString());
                assertTrue(e.getMessage().contains("to replace it on purpose, remove it first"), e.getMessage());
            }
            assertEquals("mine", Files.readString(file));
            assertTrue(Files.isDirectory(tree.resolve("sub")));
            assertEquals("{}", Files.readString(foreign.resolve("config.json")));
            // absent, empty, and moe4j's own are written
            Path empty = Files.createDirectories(tmp.resolve("empty"));
            Checkpoint.write(empty, CheckpointTest.config(), t, 1L << 30);
            Checkpoint.write(empty, CheckpointTest.config(), t, 700);
            Checkpoint.write(tmp.resolve("new"), CheckpointTest.config(), t, 1L << 30);
            // a file added to a checkpoint makes it the user's folder again
            Files.writeString(empty.resolve("notes.md"), "my notes");
            SafetensorsException e = assertThrows(SafetensorsException.class,
                    () -> Checkpoint.write(empty, CheckpointTest.config(), t, 1L << 30));
            assertTrue(e.getMessage().contains("holds 'notes.md'"), e.getMessage());
        }
    }

    // ---------------------------------------------------------------- file format

    static Path singleFile(Path dir, Arena arena) {
        Checkpoint.write(dir, CheckpointTest.config(), tensors(arena, 0), 1L << 30);
        return dir.resolve(CheckpointDescriptor.SINGLE_WEIGHTS);
    }

    static void setHeaderLength(byte[] b, long n) {
        ByteBuffer.wrap(b, 0, 8).order(ByteOrder.LITTLE_ENDIAN).putLong(n);
    }

    static long headerLength(byte[] b) {
        return ByteBuffer.wrap(b, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
    }

    @Test
    void aHeaderLengthAFewBytesOffIsRefused() throws IOException {
        try (Arena arena = Arena.ofShared()) {
            Path f = singleFile(tmp.resolve("ck"), arena);
            byte[] good = Files.readAllBytes(f);
            long n = headerLength(good);
            for (int k = -16; k <= 16; k++) {
                if (k == 0) continue;
                for (int tail : new int[] {0, k}) { // as is, or with as many bytes appended (or cut)
                    byte[] b = Arrays.copyOf(good, good.length + tail);
                    setHeaderLength(b, n + k);
                    Files.write(f, b);
                    int kk = k, tt = tail;
                    assertThrows(SafetensorsException.class, () -> SafetensorsFile.open(f).close(),
                            "length " + kk + " off, " + tt + " bytes appended");
                }
            }
        }
    }

    static Path handMade(Path p, String header, int dataBytes) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        byte[] b = new byte[8 + h.length + dataBytes];
        setHeaderLength(b, h.length);
        System.arraycopy(h, 0, b, 8, h.length);
        Files.write(p, b);
        return p;
    }

    static String refusal(Path p) {
        return assertThrows(SafetensorsException.class, () -> SafetensorsFile.open(p).close()).getMessage();
    }

    @Test
    void aZeroSizeTensorCannotHideAnAlias() throws IOException {
        // a [0, 16), z [4, 4) zero-size, c [4, 12) inside a: neighbours by begin are a-z and z-c, and a check of
        // neighbours alone (z is empty, so "overlaps" nothing) let c alias a
        String h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                + "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                + "\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
        String msg = refusal(handMade(tmp.resolve("alias.safetensors"), h, 16));
        assertTrue(msg.contains("overlap tensor 'a' [0, 16)"), msg);
        // without the zero-size one, the alias itself
        String plain = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                + "\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
        msg = refusal(handMade(tmp.resolve("alias2.safetensors"), plain, 16));
        assertTrue(msg.contains("tensor 'c' bytes [4, 12) overlap tensor 'a' [0, 16)"), msg);
        // a zero-size tensor between two others, or at the end, is fine
        String ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                + "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[16,16]}}";
        try (SafetensorsFile f = SafetensorsFile.open(handMade(tmp.resolve("ok.safetensors"), ok, 16))) {
            assertEquals(0, f.tensor("z").numel());
        }
        String gap = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}";
        msg = refusal(handMade(tmp.resolve("gap.safetensors"), gap, 16));
        assertTrue(msg.contains("no tensor holds data bytes [8, 12)"), msg);
    }

    @Test
    void invalidUtf8AndTrailingContentInHeadersAreRefused() throws IOException {
        Path p = handMade(tmp.resolve("utf.safetensors"), "{\"a\u00e9\":{\"dtype\":\"F32\",\"shape\":[1],"
                + "\"data_offsets\":[0,4]}}", 4);
        byte[] b = Files.readAllBytes(p);
        b[8 + 3] = (byte) 0xFF; // the second byte of é
        Files.write(p, b);
        String msg = refusal(p);
        assertTrue(msg.contains("is not valid UTF-8"), msg);
        msg = refusal(handMade(tmp.resolve("trail.safetensors"), "{}  x", 0));
        assertTrue(msg.contains("not space padding"), msg);
        msg = refusal(handMade(tmp.resolve("tab.safetensors"), "{}\t", 0));
        assertTrue(msg.contains("not space padding"), msg);
        msg = refusal(handMade(tmp.resolve("lead.safetensors"), " {}", 0));
        assertTrue(msg.contains("must begin with '{'"), msg);
    }

    @Test
    void aNulInAnIndexFileNameIsNamedAsSuch() throws IOException {
        try (Arena arena = Arena.ofShared()) {
            Path dir = tmp.resolve("ck");
            Checkpoint.write(dir, CheckpointTest.config(), tensors(arena, 0), 700);
            Path index = dir.resolve(CheckpointDescriptor.INDEX);
            ObjectMapper json = new ObjectMapper();
            ObjectNode root = (ObjectNode) json.readTree(index.toFile());
            ObjectNode map = (ObjectNode) root.get("weight_map");
            String name = map.fieldNames().next();
            map.put(name, "model-00001\u0000-of-00002.safetensors");
            Files.write(index, json.writeValueAsBytes(root));
            SafetensorsException e = assertThrows(SafetensorsException.class, () -> Checkpoint.open(dir));
            assertTrue(e.getMessage().contains("contains a NUL character at index 11"), e.getMessage());
            assertTrue(e.getMessage().contains("weight_map." + name), e.getMessage());
        }
    }

    /**
     * Sizes in config.json no checkpoint of these tensors can have (2^31 - 1 tokens or layers, 65,536 experts, a
     * 2^30-wide model): refused by comparing with the files' tensors before anything of that size is allocated.
     */
    @ParameterizedTest
    @ValueSource(strings = {"vocab:vocab_size:2147483647", "experts:num_experts:65536",
            "experts:num_experts:100000", "layers:num_hidden_layers:2147483647", "d:hidden_size:1073741824",
            "expertHidden:intermediate_size:2147483647"})
    void hugeSizesInConfigJsonAreRefusedBeforeAllocating(String change) throws IOException {
        String[] c = change.split(":");
        Path dir = tmp.resolve("ck");
        try (MoeModel m = new MoeModel(HostileCheckpointProperties.CONFIG).initRandom(3)) {
            ModelCheckpoint.save(dir, m, null, null);
        }
        Path cfg = dir.resolve(CheckpointDescriptor.CONFIG);
        ObjectMapper json = new ObjectMapper();
        ObjectNode root = (ObjectNode) json.readTree(cfg.toFile());
        long v = Long.parseLong(c[2]);
        ((ObjectNode) root.get("moe4j")).put(c[0], v);
        root.put(c[1], v);
        Files.write(cfg, json.writeValueAsBytes(root));
        Moe4jException e = assertThrows(Moe4jException.class, () -> ModelCheckpoint.load(dir));
        assertTrue(e.getMessage().contains("does not fit"), e.getMessage());
    }

    @Test
    void hfKeysThatDisagreeWithTheMoe4jBlockAreRefused() throws IOException {
        Path dir = tmp.resolve("ck");
        try (MoeModel m = new MoeModel(HostileCheckpointProperties.CONFIG).initRandom(3)) {
            ModelCheckpoint.save(dir, m, null, null);
        }
        Path cfg = dir.resolve(CheckpointDescriptor.CONFIG);
        ObjectMapper json = new ObjectMapper();
        ObjectNode root = (ObjectNode) json.readTree(cfg.toFile());
        root.put("rope_theta", 500000.0);
        Files.write(cfg, json.writeValueAsBytes(root));
        Moe4jException e = assertThrows(Moe4jException.class, () -> ModelCheckpoint.load(dir));
        assertTrue(e.getMessage().contains("'rope_theta' = 500000.0 disagrees with the moe4j block"), e.getMessage());
    }
}
