package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.statistics.Statistics;
import net.jqwik.api.lifecycle.AfterContainer;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.io.TrainingState;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.io.checkpoint.Checkpoint;
import org.moe4j.io.checkpoint.CheckpointDescriptor;
import org.moe4j.simd.Tensor;

/**
 * Checkpoints as a hostile file would be (issue 9): 10,000 mutants of a small moe4j checkpoint — safetensors bytes
 * and headers (lengths, offsets, dtypes, shapes, names, truncations, appended bytes), a sharded folder's index,
 * config.json (HF keys and the moe4j block) and the training state (JSON and moments) — each loaded the way
 * {@code --resume}, {@code convert} and {@code numerics} load it. Every mutant must either be refused with a
 * {@link Moe4jException} or load exactly what the unmutated checkpoint holds: no other exception, no
 * out-of-memory error, and no silent wrong load. The one change the format cannot show is two tensors of equal
 * byte size trading places, so a loaded tensor may hold the values of another of its size.
 *
 * <p>Mutants come from a seed (java.util.Random), one per try, so a failure names its seed and mutation.
 */
class HostileCheckpointProperties {
    static final ObjectMapper JSON = new ObjectMapper();
    /** vocab 16, d 8, 1 layer, 2 heads (1 kv), 3 experts of hidden 4, top-2, qk-norm: 20 tensors, ~1,000 floats. */
    static final ModelConfig CONFIG = new ModelConfig(16, 8, 1, 2, 1, 3, 0, 2, 4, 10000.0, true, 1e-6, 8, 0,
            RoutingConfig.standard(), LossWeights.defaults());
    static final long STEP = 2, POSITION = 64, ROUTING_RNG = 11, ERC_RNG = -13;

    static final Path ROOT;
    static final Path SINGLE, SHARDED;
    static final Map<String, float[]> VALUES = new LinkedHashMap<>();
    static final float[] MOMENT_M, MOMENT_V;
    static final long PARAMS;

    static {
        try {
            // thousands of small writes: memory-backed when the machine has it (Linux), else the temp folder
            Path shm = Path.of("/dev/shm");
            ROOT = Files.isDirectory(shm) && Files.isWritable(shm) ? Files.createTempDirectory(shm, "moe4j-hostile")
                    : Files.createTempDirectory("moe4j-hostile");
            // also when only the static parts are used (CheckpointSafetyTest takes CONFIG) and no container ends here
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                try {
                    removeFolders();
                } catch (IOException ignored) {
                    // a temp folder left behind; nothing else to do at exit
                }
            }));
            SINGLE = ROOT.resolve("single");
            SHARDED = ROOT.resolve("sharded");
            try (MoeModel m = new MoeModel(CONFIG).initRandom(7); Arena arena = Arena.ofConfined()) {
                PARAMS = m.layout().total();
                Map<String, Tensor> tensors = new LinkedHashMap<>();
                for (ParamLayout.Entry e : m.layout().entries()) {
                    VALUES.put(e.name(), m.paramValues(e.name()));
                    tensors.put(e.name(), m.param(e.name()));
                }
                MemorySegment mm = arena.allocate(PARAMS * 4), vv = arena.allocate(PARAMS * 4);
                Random r = new Random(3);
                for (long i = 0; i < PARAMS; i++) {
                    mm.setAtIndex(Tensor.FLOAT, i, (float) r.nextGaussian());
                    vv.setAtIndex(Tensor.FLOAT, i, (float) r.nextDouble());
                }
                MOMENT_M = mm.toArray(Tensor.FLOAT);
                MOMENT_V = vv.toArray(Tensor.FLOAT);
                ModelCheckpoint.save(SINGLE, m, new ModelCheckpoint.TrainState(mm, vv, STEP, POSITION, ROUTING_RNG,
                        ERC_RNG, null), null);
                Checkpoint.write(SHARDED, ModelCheckpoint.hfConfig(CONFIG), tensors, 600);
            }
        } catch (IOException e) {
            throw new AssertionError(e);
        }
    }

    @AfterContainer
    static void removeFolders() throws IOException {
        if (!Files.exists(ROOT)) return;
        try (Stream<Path> s = Files.walk(ROOT)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
        }
    }

    // ---------------------------------------------------------------- the checks

    /** The unmutated folders load exactly: the oracle below would notice a loader that loses values. */
    @Example
    void theUnmutatedCheckpointsLoadExactly() {
        assertTrue(Files.exists(SHARDED.resolve(CheckpointDescriptor.INDEX)), "the sharded folder has an index");
        for (Path dir : List.of(SINGLE, SHARDED)) {
            assertEquals("loaded", loadModel(dir, "unmutated " + dir.getFileName()));
        }
        assertEquals("loaded", loadState(SINGLE, "unmutated"));
    }

    @Property(tries = 2500)
    void safetensorsBytes(@ForAll long seed) throws IOException {
        Random r = new Random(seed);
        try (Work w = Work.of("bytes", SINGLE)) {
            byte[] b = w.original(CheckpointDescriptor.SINGLE_WEIGHTS);
            String what = "seed " + seed + ": ";
            byte[] m;
            if (r.nextInt(3) == 0) {
                m = lengthShift(b, r);
                what += "header length shifted";
            } else {
                m = byteMutation(b, (int) headerEnd(b), r);
                what += "header bytes";
            }
            w.write(CheckpointDescriptor.SINGLE_WEIGHTS, m);
            Statistics.collect(loadModel(w.dir, what));
        }
    }

    @Property(tries = 2500)
    void safetensorsHeaders(@ForAll long seed) throws IOException {
        Random r = new Random(seed);
        try (Work w = Work.of("headers", SINGLE)) {
            byte[] b = w.original(CheckpointDescriptor.SINGLE_WEIGHTS);
            StringBuilder what = new StringBuilder("seed " + seed + ": ");
            w.write(CheckpointDescriptor.SINGLE_WEIGHTS, headerMutation(b, r, what));
            Statistics.collect(loadModel(w.dir, what.toString()));
        }
    }

    @Property(tries = 1500)
    void shardedFolders(@ForAll long seed) throws IOException {
        Random r = new Random(seed);
        try (Work w = Work.of("sharded", SHARDED)) {
            List<String> files = w.files();
            StringBuilder what = new StringBuilder("seed " + seed + ": ");
            int op = r.nextInt(4);
            if (op <= 1) {
                byte[] b = w.original(CheckpointDescriptor.INDEX);
                byte[] m = op == 0 ? byteMutation(b, b.length, r) : indexMutation(b, files, r, what);
                what.append(op == 0 ? "index bytes" : "");
                w.write(CheckpointDescriptor.INDEX, m);
            } else {
                List<String> shards = files.stream().filter(f -> f.startsWith("model-")).toList();
                String shard = shards.get(r.nextInt(shards.size()));
                byte[] b = w.original(shard);
                what.append(shard).append(": ");
                w.write(shard, op == 2 ? headerMutation(b, r, what) : lengthShift(b, r));
            }
            Statistics.collect(loadModel(w.dir, what.toString()));
        }
    }

    @Property(tries = 2000)
    void configs(@ForAll long seed) throws IOException {
        Random r = new Random(seed);
        try (Work w = Work.of("configs", r.nextInt(4) == 0 ? SHARDED : SINGLE)) {
            byte[] b = w.original(CheckpointDescriptor.CONFIG);
            StringBuilder what = new StringBuilder("seed " + seed + ": config.json ");
            byte[] m = r.nextInt(5) == 0 ? byteMutation(b, b.length, r) : jsonMutation(b, r, what);
            w.write(CheckpointDescriptor.CONFIG, m);
            Statistics.collect(loadModel(w.dir, what.toString()));
        }
    }

    @Property(tries = 1500)
    void trainingStates(@ForAll long seed) throws IOException {
        Random r = new Random(seed);
        try (Work w = Work.of("state", SINGLE)) {
            StringBuilder what = new StringBuilder("seed " + seed + ": ");
            if (r.nextBoolean()) {
                byte[] b = w.original(CheckpointDescriptor.TRAINING_STATE_JSON);
                what.append("training_state.json ");
                w.write(CheckpointDescriptor.TRAINING_STATE_JSON,
                        r.nextInt(5) == 0 ? byteMutation(b, b.length, r) : jsonMutation(b, r, what));
            } else {
                byte[] b = w.original(CheckpointDescriptor.TRAINING_STATE);
                what.append("training_state.safetensors ");
                int op = r.nextInt(3);
                w.write(CheckpointDescriptor.TRAINING_STATE, op == 0 ? headerMutation(b, r, what)
                        : op == 1 ? lengthShift(b, r) : byteMutation(b, (int) headerEnd(b), r));
            }
            Statistics.collect(loadState(w.dir, what.toString()));
        }
    }

    // ---------------------------------------------------------------- loading and the oracle

    /**
     * Loads {@code dir} as --resume/convert do; returns "refused" or "loaded", and fails on any other outcome: an
     * exception that is not a Moe4jException, an Error (out of memory included), or values that differ from the
     * unmutated checkpoint's beyond a swap of equal-size tensors.
     */
    static String loadModel(Path dir, String what) {
        ModelCheckpoint.Imported im;
        try {
            im = ModelCheckpoint.importCheckpoint(dir);
        } catch (Moe4jException e) {
            return "refused";
        } catch (Throwable t) {
            throw new AssertionError(what + ": " + t, t);
        }
        try (MoeModel m = im.model()) {
            for (ParamLayout.Entry e : m.layout().entries()) {
                float[] got = m.paramValues(e.name());
                if (Arrays.equals(got, VALUES.get(e.name()))) continue;
                boolean swapped = VALUES.values().stream().anyMatch(v -> Arrays.equals(v, got));
                if (!swapped) fail(what + ": loaded without an error, but tensor '" + e.name() + "' differs");
            }
        }
        return "loaded";
    }

    /** Loads the training state as --resume does; as {@link #loadModel} for the moments and every JSON field. */
    static String loadState(Path dir, String what) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment m = arena.allocate(PARAMS * 4), v = arena.allocate(PARAMS * 4);
            TrainingState st;
            try {
                st = ModelCheckpoint.loadState(dir, m, v, PARAMS);
            } catch (Moe4jException e) {
                return "refused";
            } catch (Throwable t) {
                throw new AssertionError(what + ": " + t, t);
            }
            // what was loaded is what the file says, read by a strict reader
            JsonNode raw;
            try {
                raw = JSON.readTree(dir.resolve(CheckpointDescriptor.TRAINING_STATE_JSON).toFile());
            } catch (IOException e) {
                throw new AssertionError(what + ": loaded a training state that Jackson cannot read: " + e);
            }
            long[] fields = {st.step(), st.dataPosition(), st.routingRngState(), st.ercRngState(), st.parameterCount()};
            String[] names = {TrainingState.STEP, TrainingState.DATA_POSITION, TrainingState.ROUTING_RNG_STATE,
                    TrainingState.ERC_RNG_STATE, TrainingState.PARAMETER_COUNT};
            for (int i = 0; i < names.length; i++) {
                JsonNode n = raw.get(names[i]);
                assertTrue(n != null && n.isIntegralNumber() && n.canConvertToLong() && n.longValue() == fields[i],
                        what + ": loaded " + names[i] + " = " + fields[i] + " from " + n);
            }
            float[] gm = m.toArray(Tensor.FLOAT), gv = v.toArray(Tensor.FLOAT);
            boolean same = Arrays.equals(gm, MOMENT_M) && Arrays.equals(gv, MOMENT_V);
            boolean swapped = Arrays.equals(gm, MOMENT_V) && Arrays.equals(gv, MOMENT_M);
            assertTrue(same || swapped, what + ": moments loaded without an error, but differ");
            assertEquals(PARAMS, st.parameterCount(), what);
            return "loaded";
        }
    }

    // ---------------------------------------------------------------- mutations

    static final byte[] INTERESTING_BYTES = "0123456789\"{}[],: .-eE\\".getBytes(StandardCharsets.US_ASCII);

    static long headerEnd(byte[] b) {
        long n = ByteBuffer.wrap(b, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        return Math.min(b.length, 8 + n);
    }

    /** One raw change in b[0, end): a byte set, a bit flipped, a byte inserted or deleted; or a truncation or tail. */
    static byte[] byteMutation(byte[] b, int end, Random r) {
        int at = r.nextInt(Math.max(1, end));
        byte[] m;
        switch (r.nextInt(7)) {
            case 0 -> {
                m = b.clone();
                m[at] = INTERESTING_BYTES[r.nextInt(INTERESTING_BYTES.length)];
            }
            case 1 -> {
                m = b.clone();
                m[at] ^= (byte) (1 << r.nextInt(8));
            }
            case 2 -> {
                // invalid UTF-8: a lone continuation byte, a truncated sequence, NUL, 0xFF
                m = b.clone();
                m[at] = new byte[] {(byte) 0x80, (byte) 0xC3, (byte) 0xFF, 0, (byte) 0xE2}[r.nextInt(5)];
            }
            case 3 -> {
                m = new byte[b.length + 1];
                System.arraycopy(b, 0, m, 0, at);
                m[at] = INTERESTING_BYTES[r.nextInt(INTERESTING_BYTES.length)];
                System.arraycopy(b, at, m, at + 1, b.length - at);
            }
            case 4 -> {
                m = new byte[b.length - 1];
                System.arraycopy(b, 0, m, 0, at);
                System.arraycopy(b, at + 1, m, at, b.length - at - 1);
            }
            case 5 -> m = Arrays.copyOf(b, r.nextInt(b.length));
            default -> {
                m = Arrays.copyOf(b, b.length + 1 + r.nextInt(16));
                for (int i = b.length; i < m.length; i++) m[i] = (byte) r.nextInt(256);
            }
        }
        return m;
    }

    /** The header length field off by a few bytes (or wild), with as many bytes appended or cut, or none. */
    static byte[] lengthShift(byte[] b, Random r) {
        long n = ByteBuffer.wrap(b, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        int k = 1 + r.nextInt(16);
        long shifted = switch (r.nextInt(5)) {
            case 0 -> n - k;
            case 1, 2 -> n + k;
            case 3 -> new long[] {0, 1, -1, Long.MAX_VALUE, Long.MIN_VALUE, 1L << 32, b.length}[r.nextInt(7)];
            default -> n + (r.nextBoolean() ? 8 : -8);
        };
        int tail = switch (r.nextInt(3)) {
            case 0 -> 0;
            case 1 -> (int) Math.max(-b.length + 8, Math.min(64, shifted - n));
            default -> r.nextInt(17) - 8;
        };
        byte[] m = Arrays.copyOf(b, Math.max(8, b.length + tail));
        for (int i = b.length; i < m.length; i++) m[i] = (byte) r.nextInt(256);
        ByteBuffer.wrap(m, 0, 8).order(ByteOrder.LITTLE_ENDIAN).putLong(shifted);
        return m;
    }

    static final Object[] INTERESTING_VALUES = {0, -1, 1, 2, 3, 4, 7, 8, 16, 64, 255, 65536, 100000, 2147483647,
            -2147483648, 2147483648L, 1L << 40, Long.MAX_VALUE, 0.5, 1e300, -0.0, "8", "abc", "", "\u0000", null, true,
            "MISSING", "ARRAY", "OBJECT"};

    static JsonNode interesting(Random r) {
        Object v = INTERESTING_VALUES[r.nextInt(INTERESTING_VALUES.length)];
        JsonNodeFactory f = JsonNodeFactory.instance;
        if (v == null) return f.nullNode();
        if (v instanceof Integer i) return f.numberNode(i);
        if (v instanceof Long l) return f.numberNode(l);
        if (v instanceof Double d) return f.numberNode(d);
        if (v instanceof Boolean bo) return f.booleanNode(bo);
        return switch ((String) v) {
            case "MISSING" -> null;
            case "ARRAY" -> f.arrayNode().add(1).add(2);
            case "OBJECT" -> f.objectNode().put("x", 1);
            default -> f.textNode((String) v);
        };
    }

    /** One change to a parsed safetensors header, written back with a correct length and padding. */
    static byte[] headerMutation(byte[] b, Random r, StringBuilder what) throws IOException {
        long n = ByteBuffer.wrap(b, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        ObjectNode root = (ObjectNode) JSON.readTree(new String(b, 8, (int) n, StandardCharsets.UTF_8));
        byte[] data = Arrays.copyOfRange(b, (int) (8 + n), b.length);
        List<String> names = new ArrayList<>();
        root.fieldNames().forEachRemaining(k -> {
            if (!k.equals("__metadata__")) names.add(k);
        });
        String name = names.get(r.nextInt(names.size()));
        ObjectNode t = (ObjectNode) root.get(name);
        JsonNodeFactory f = JsonNodeFactory.instance;
        switch (r.nextInt(10)) {
            case 0 -> {
                String dt = new String[] {"F32", "BF16", "F16", "I8", "F64", "f32", ""}[r.nextInt(7)];
                t.put("dtype", dt);
                what.append("dtype of ").append(name).append(" -> ").append(dt);
            }
            case 1 -> {
                ArrayNode shape = f.arrayNode();
                int dims = r.nextInt(4);
                for (int i = 0; i < dims; i++) {
                    JsonNode v = interesting(r);
                    shape.add(v == null ? f.numberNode(r.nextInt(20)) : v);
                }
                t.set("shape", shape);
                what.append("shape of ").append(name).append(" -> ").append(shape);
            }
            case 2 -> {
                ArrayNode shape = (ArrayNode) t.get("shape");
                ArrayNode rev = f.arrayNode();
                for (int i = shape.size() - 1; i >= 0; i--) rev.add(shape.get(i));
                t.set("shape", rev);
                what.append("shape of ").append(name).append(" reversed");
            }
            case 3 -> {
                ArrayNode off = (ArrayNode) t.get("data_offsets");
                long k = r.nextInt(9) - 4;
                off.set(0, f.numberNode(off.get(0).longValue() + k));
                off.set(1, f.numberNode(off.get(1).longValue() + (r.nextBoolean() ? k : 0)));
                what.append("offsets of ").append(name).append(" -> ").append(off);
            }
            case 4 -> {
                String other = names.get(r.nextInt(names.size()));
                JsonNode a = t.get("data_offsets"), c = root.get(other).get("data_offsets");
                t.set("data_offsets", c.deepCopy());
                ((ObjectNode) root.get(other)).set("data_offsets", a.deepCopy());
                what.append("offsets of ").append(name).append(" and ").append(other).append(" swapped");
            }
            case 5 -> {
                String field = new String[] {"dtype", "shape", "data_offsets"}[r.nextInt(3)];
                JsonNode v = interesting(r);
                if (v == null) t.remove(field);
                else t.set(field, v);
                what.append(field).append(" of ").append(name).append(" -> ").append(v);
            }
            case 6 -> {
                root.remove(name);
                what.append("tensor ").append(name).append(" removed");
            }
            case 7 -> {
                // a zero-size tensor anywhere (inside another one's bytes included), under a new or existing name
                long at = r.nextInt(data.length + 1);
                String z = r.nextBoolean() ? "model.extra.weight" : names.get(r.nextInt(names.size()));
                ObjectNode zt = root.putObject(z);
                zt.put("dtype", "F32");
                zt.putArray("shape").add(0).add(r.nextInt(4));
                zt.putArray("data_offsets").add(at).add(at);
                what.append("zero-size ").append(z).append(" at ").append(at);
            }
            case 8 -> {
                // an alias: a tensor viewing part of another's bytes
                ArrayNode off = (ArrayNode) t.get("data_offsets");
                long begin = off.get(0).longValue(), end = off.get(1).longValue();
                long len = Math.max(4, ((end - begin) / 2) & ~3L);
                ObjectNode at = root.putObject("model.alias.weight");
                at.put("dtype", "F32");
                at.putArray("shape").add(len / 4);
                at.putArray("data_offsets").add(begin).add(begin + len);
                what.append("alias of ").append(name);
            }
            default -> {
                String to = r.nextBoolean() ? names.get(r.nextInt(names.size())) : name.replace("0", "1");
                JsonNode moved = root.remove(name);
                root.set(to, moved);
                what.append("tensor ").append(name).append(" renamed ").append(to);
            }
        }
        byte[] json = root.toString().getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) & ~7;
        byte[] m = new byte[8 + padded + data.length];
        ByteBuffer.wrap(m, 0, 8).order(ByteOrder.LITTLE_ENDIAN).putLong(padded);
        System.arraycopy(json, 0, m, 8, json.length);
        Arrays.fill(m, 8 + json.length, 8 + padded, (byte) ' ');
        System.arraycopy(data, 0, m, 8 + padded, data.length);
        return m;
    }

    /** One change to a value (or key) anywhere in a JSON object, at any depth. */
    static byte[] jsonMutation(byte[] b, Random r, StringBuilder what) throws IOException {
        JsonNode root = JSON.readTree(b);
        List<Object[]> slots = new ArrayList<>(); // {parent ObjectNode, key}
        collect(root, slots);
        Object[] slot = slots.get(r.nextInt(slots.size()));
        ObjectNode parent = (ObjectNode) slot[0];
        String key = (String) slot[1];
        int op = r.nextInt(10);
        if (op == 0) {
            parent.remove(key);
            what.append(key).append(" removed");
        } else if (op == 1) {
            parent.set("unknown_" + key, parent.get(key));
            what.append("unknown key beside ").append(key);
        } else if (op == 2 && parent.get(key).isNumber()) {
            JsonNode v = parent.get(key);
            JsonNode nv = v.isIntegralNumber() ? JsonNodeFactory.instance.numberNode(v.longValue() + (r.nextBoolean() ? 1 : -1))
                    : JsonNodeFactory.instance.numberNode(v.doubleValue() * 2);
            parent.set(key, nv);
            what.append(key).append(" -> ").append(nv);
        } else {
            JsonNode v = interesting(r);
            if (v == null) parent.remove(key);
            else parent.set(key, v);
            what.append(key).append(" -> ").append(v);
        }
        return JSON.writeValueAsBytes(root);
    }

    private static void collect(JsonNode node, List<Object[]> slots) {
        if (!node.isObject()) return;
        node.properties().forEach(e -> {
            slots.add(new Object[] {node, e.getKey()});
            collect(e.getValue(), slots);
        });
    }

    /** An index change: a weight_map entry pointed elsewhere (paths, NUL, other files), removed or added. */
    static byte[] indexMutation(byte[] b, List<String> files, Random r, StringBuilder what) throws IOException {
        ObjectNode root = (ObjectNode) JSON.readTree(b);
        ObjectNode map = (ObjectNode) root.get("weight_map");
        List<String> names = new ArrayList<>();
        map.fieldNames().forEachRemaining(names::add);
        String name = names.get(r.nextInt(names.size()));
        String shard = map.get(name).textValue();
        String[] targets = {files.get(r.nextInt(files.size())), "../" + shard, "/etc/" + shard, shard + "\u0000x",
                "x\u0000.safetensors", "", ".hidden.safetensors", "model.safetensors", "config.json", "missing.safetensors",
                shard.replace("00001", "00009"), "sub/" + shard, shard + "\n", "..", "."};
        switch (r.nextInt(5)) {
            case 0, 1 -> {
                String to = targets[r.nextInt(targets.length)];
                map.put(name, to);
                what.append("index: ").append(name).append(" -> ").append(JSON.writeValueAsString(to));
            }
            case 2 -> {
                map.remove(name);
                what.append("index: ").append(name).append(" removed");
            }
            case 3 -> {
                map.put("model.layers.9.mlp.gate.weight", shard);
                what.append("index: an entry for a tensor the shard does not hold");
            }
            default -> {
                JsonNode v = interesting(r);
                if (v == null) map.remove(name);
                else map.set(name, v);
                what.append("index: ").append(name).append(" -> ").append(v);
            }
        }
        return JSON.writeValueAsBytes(root);
    }

    /**
     * A private copy of a base folder, one per property and base, kept across tries. Each try overwrites one file;
     * the file an earlier try changed is put back first, unless this try overwrites it anyway (which saves most
     * of the writes).
     */
    static final class Work implements AutoCloseable {
        private static final Map<Path, Work> OPEN = new java.util.concurrent.ConcurrentHashMap<>();
        private static final Map<Path, byte[]> ORIGINALS = new java.util.concurrent.ConcurrentHashMap<>();
        final Path dir;
        private final Path base;
        private final java.util.Set<String> dirty = new java.util.HashSet<>();

        private Work(Path base, Path dir) {
            this.base = base;
            this.dir = dir;
        }

        /** The work folder of property {@code name} on {@code base}. */
        static Work of(String name, Path base) throws IOException {
            Path dir = ROOT.resolve("work-" + name + "-" + base.getFileName()).resolve("ck");
            Work w = OPEN.get(dir);
            if (w == null) {
                Files.createDirectories(dir);
                try (Stream<Path> s = Files.list(base)) {
                    for (Path p : s.toList()) Files.copy(p, dir.resolve(p.getFileName()));
                }
                w = new Work(base, dir);
                OPEN.put(dir, w);
            }
            return w;
        }

        List<String> files() throws IOException {
            try (Stream<Path> s = Files.list(base)) {
                return s.map(p -> p.getFileName().toString()).sorted().toList();
            }
        }

        byte[] original(String file) throws IOException {
            Path p = base.resolve(file);
            byte[] b = ORIGINALS.get(p);
            if (b == null) {
                b = Files.readAllBytes(p);
                ORIGINALS.put(p, b);
            }
            return b.clone();
        }

        /** Makes {@code file} hold {@code bytes} and every other file its original bytes. */
        void write(String file, byte[] bytes) throws IOException {
            for (String f : dirty) if (!f.equals(file)) Files.write(dir.resolve(f), original(f));
            dirty.clear();
            Files.write(dir.resolve(file), bytes);
            dirty.add(file);
        }

        /** Checks that the load left nothing beside the folder (no lock, no temporary, no moved-aside copy). */
        @Override
        public void close() throws IOException {
            try (Stream<Path> s = Files.list(dir.getParent())) {
                assertArrayEquals(new String[] {"ck"}, s.map(p -> p.getFileName().toString()).toArray(),
                        "a load leaves nothing beside the folder");
            }
        }
    }
}
