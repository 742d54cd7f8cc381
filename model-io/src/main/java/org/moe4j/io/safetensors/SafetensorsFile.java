package org.moe4j.io.safetensors;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.moe4j.io.MappedFiles;
import org.moe4j.simd.Convert;
import org.moe4j.simd.DType;
import org.moe4j.simd.Tensor;

/**
 * A memory-mapped safetensors file. Tensors are views over the mapping: nothing is copied, and a tensor that is
 * never read is never paged in. Every header field is validated on open (see {@link SafetensorsDescriptor}); a
 * file that breaks a rule fails with a {@link SafetensorsException} naming the file, the tensor and the rule.
 * Closing the file unmaps it; views taken from it are invalid afterwards.
 */
public final class SafetensorsFile implements AutoCloseable {
    /** One header entry: where a tensor's bytes are, relative to the data start. */
    public record Entry(String name, DType dtype, int[] shape, long begin, long end) {
        public long numel() {
            return Tensor.numel(shape);
        }
    }

    static final ObjectMapper JSON = JsonMapper.builder()
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION)
            .build();

    static {
        JSON.getFactory().setStreamReadConstraints(StreamReadConstraints.builder()
                .maxStringLength((int) SafetensorsDescriptor.MAX_HEADER_BYTES).maxNestingDepth(64).build());
    }

    private final Path path;
    private final Arena arena;
    private final MemorySegment data;
    private final Map<String, Entry> entries;
    private final Map<String, String> metadata;

    private SafetensorsFile(Path path, Arena arena, MemorySegment data, Map<String, Entry> entries,
                            Map<String, String> metadata) {
        this.path = path;
        this.arena = arena;
        this.data = data;
        this.entries = entries;
        this.metadata = metadata;
    }

    /** Maps and validates {@code path}. */
    public static SafetensorsFile open(Path path) {
        if (ByteOrder.nativeOrder() != ByteOrder.LITTLE_ENDIAN) {
            throw new SafetensorsException(path + ": safetensors data is little-endian and views are zero-copy; "
                    + "this big-endian platform is not supported");
        }
        Arena arena = Arena.ofShared();
        try {
            MemorySegment file;
            try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
                file = MappedFiles.mapReadOnly(ch, arena); // a plain native segment: see MappedFiles
            } catch (IOException e) {
                throw new SafetensorsException(path + ": cannot read the file: " + e.getMessage(), e);
            }
            long size = file.byteSize();
            if (size < SafetensorsDescriptor.HEADER_OFFSET) {
                throw new SafetensorsException(path + ": file of " + size + " bytes is too short for a safetensors "
                        + "header (expected at least " + SafetensorsDescriptor.HEADER_OFFSET + " bytes)");
            }
            long n = file.get(ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN),
                    SafetensorsDescriptor.HEADER_LENGTH_OFFSET);
            if (n < 2 || n > SafetensorsDescriptor.MAX_HEADER_BYTES || n > size - SafetensorsDescriptor.HEADER_OFFSET) {
                throw new SafetensorsException(path + ": header length " + Long.toUnsignedString(n)
                        + " is invalid (expected 2.." + Math.min(SafetensorsDescriptor.MAX_HEADER_BYTES,
                        size - SafetensorsDescriptor.HEADER_OFFSET) + " for a file of " + size + " bytes)");
            }
            byte[] header = file.asSlice(SafetensorsDescriptor.HEADER_OFFSET, n).toArray(ValueLayout.JAVA_BYTE);
            long dataStart = SafetensorsDescriptor.dataStart(n);
            MemorySegment data = file.asSlice(dataStart);
            Map<String, String> metadata = new LinkedHashMap<>();
            Map<String, Entry> entries = parseHeader(path, header, data.byteSize(), metadata);
            // moe4j always pads its headers to align the data: a file that says moe4j wrote it but whose data starts
            // elsewhere has a header length that is off, and the bytes it now counts to the header or the data
            // happen to look valid (spaces, or whole tensors' worth)
            if ("moe4j".equals(metadata.get("writer")) && dataStart % SafetensorsDescriptor.DATA_ALIGNMENT != 0) {
                throw new SafetensorsException(path + ": written by moe4j, whose data starts " +
                        SafetensorsDescriptor.DATA_ALIGNMENT + "-byte aligned, but the header length " + n
                        + " puts it at byte " + dataStart + " (the header length field is wrong)");
            }
            return new SafetensorsFile(path, arena, data, entries, Collections.unmodifiableMap(metadata));
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static Map<String, Entry> parseHeader(Path path, byte[] header, long dataBytes, Map<String, String> metadata) {
        String text;
        try {
            // a replacing decoder would turn bad bytes into U+FFFD and let two different files read the same
            text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(header)).toString();
        } catch (CharacterCodingException e) {
            throw new SafetensorsException(path + ": the JSON header of " + header.length
                    + " bytes is not valid UTF-8 (" + e.getMessage() + ")", e);
        }
        if (text.isEmpty() || text.charAt(0) != '{') {
            throw new SafetensorsException(path + ": the JSON header must begin with '{' (found "
                    + (text.isEmpty() ? "nothing" : "'" + text.charAt(0) + "'") + "); the header length field may be wrong");
        }
        JsonNode root;
        try (JsonParser p = JSON.createParser(text)) {
            root = JSON.readTree(p);
            // the header must end where its length says: anything after the JSON but the spaces writers pad with
            // means the length field is off (and every tensor shifted)
            long end = p.currentLocation().getCharOffset();
            for (long i = end; i < text.length(); i++) {
                if (text.charAt((int) i) != ' ') {
                    throw new SafetensorsException(path + ": the JSON header ends at character " + end + " of its "
                            + text.length() + ", followed by " + (text.length() - end) + " characters that are not "
                            + "space padding (the header length field is wrong, or bytes were inserted)");
                }
            }
        } catch (JsonProcessingException e) {
            throw new SafetensorsException(path + ": the JSON header is malformed: " + e.getOriginalMessage(), e);
        } catch (IOException e) {
            throw new SafetensorsException(path + ": cannot parse the JSON header: " + e, e);
        }
        if (root == null || !root.isObject()) {
            throw new SafetensorsException(path + ": the JSON header must be an object of tensors, found "
                    + (root == null ? "nothing" : root.getNodeType()));
        }
        Map<String, Entry> entries = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> f : root.properties()) {
            String name = f.getKey();
            JsonNode v = f.getValue();
            if (name.equals(SafetensorsDescriptor.METADATA_KEY)) {
                if (!v.isObject()) {
                    throw new SafetensorsException(path + ": '__metadata__' must be an object of strings");
                }
                for (Map.Entry<String, JsonNode> kv : v.properties()) {
                    if (!kv.getValue().isTextual()) {
                        throw new SafetensorsException(path + ": '__metadata__." + kv.getKey() + "' must be a string");
                    }
                    metadata.put(kv.getKey(), kv.getValue().textValue());
                }
                continue;
            }
            entries.put(name, parseEntry(path, name, v, dataBytes));
        }
        checkTiling(path, entries.values(), dataBytes);
        return Collections.unmodifiableMap(entries);
    }

    /**
     * The tensors must tile the data buffer exactly, as the reference implementation requires: sorted by offset,
     * each begins where the bytes before it end, the first at 0 and the last ending at the buffer's end. A gap or
     * a short or long buffer means a wrong header length or offsets (every tensor would be read shifted); an
     * overlap is an alias. The end so far is a running maximum, so a zero-size tensor cannot hide an alias.
     */
    private static void checkTiling(Path path, java.util.Collection<Entry> entries, long dataBytes) {
        List<Entry> byBegin = new ArrayList<>(entries);
        byBegin.sort(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end));
        long covered = 0;
        Entry last = null;
        for (Entry cur : byBegin) {
            if (cur.begin() < covered) {
                throw new SafetensorsException(path + ": tensor '" + cur.name() + "' bytes [" + cur.begin() + ", "
                        + cur.end() + ") overlap tensor '" + last.name() + "' [" + last.begin() + ", " + last.end() + ")");
            }
            if (cur.begin() > covered) {
                throw new SafetensorsException(path + ": no tensor holds data bytes [" + covered + ", " + cur.begin()
                        + ") before tensor '" + cur.name() + "' (the data_offsets must cover the data buffer without "
                        + "gaps)");
            }
            if (cur.end() > covered || last == null) {
                covered = cur.end();
                last = cur;
            }
        }
        if (covered != dataBytes) {
            throw new SafetensorsException(path + ": the tensors cover " + covered + " bytes of the data buffer, which "
                    + "holds " + dataBytes + " (the header length field is wrong, or the file was truncated or "
                    + "extended)");
        }
    }

    private static Entry parseEntry(Path path, String name, JsonNode v, long dataBytes) {
        String where = path + ": tensor '" + name + "'";
        if (!v.isObject()) {
            throw new SafetensorsException(where + " must be an object with dtype, shape and data_offsets");
        }
        JsonNode dt = v.get("dtype");
        if (dt == null || !dt.isTextual()) {
            throw new SafetensorsException(where + " has no string 'dtype'");
        }
        DType dtype = SafetensorsDescriptor.dtype(dt.textValue());
        if (dtype == null) {
            throw new SafetensorsException(where + " has dtype '" + dt.textValue()
                    + "', which moe4j does not read (expected F32, BF16 or F16)");
        }
        JsonNode sh = v.get("shape");
        if (sh == null || !sh.isArray() || sh.size() > 8) {
            throw new SafetensorsException(where + " needs 'shape': an array of at most 8 non-negative integers");
        }
        int[] shape = new int[sh.size()];
        for (int i = 0; i < shape.length; i++) {
            JsonNode d = sh.get(i);
            if (!d.canConvertToInt() || !d.isIntegralNumber() || d.intValue() < 0) {
                throw new SafetensorsException(where + " has shape entry " + d + " at index " + i
                        + " (expected a non-negative integer below 2^31)");
            }
            shape[i] = d.intValue();
        }
        JsonNode off = v.get("data_offsets");
        if (off == null || !off.isArray() || off.size() != 2 || !off.get(0).canConvertToLong()
                || !off.get(1).canConvertToLong() || !off.get(0).isIntegralNumber() || !off.get(1).isIntegralNumber()) {
            throw new SafetensorsException(where + " needs 'data_offsets': [begin, end] as two integers");
        }
        long begin = off.get(0).longValue(), end = off.get(1).longValue();
        if (begin < 0 || end < begin || end > dataBytes) {
            throw new SafetensorsException(where + " has data_offsets [" + begin + ", " + end
                    + "] outside the data buffer of " + dataBytes + " bytes");
        }
        long numel;
        try {
            numel = Tensor.numel(shape);
        } catch (ArithmeticException e) {
            throw new SafetensorsException(where + " has shape " + Arrays.toString(shape) + " whose size overflows");
        }
        if (numel > Long.MAX_VALUE / dtype.byteSize() || numel * dtype.byteSize() != end - begin) {
            throw new SafetensorsException(where + " is " + dt.textValue() + Arrays.toString(shape) + " = "
                    + numel + " elements, but data_offsets [" + begin + ", " + end + "] hold " + (end - begin) + " bytes");
        }
        return new Entry(name, dtype, shape, begin, end);
    }

    public Path path() {
        return path;
    }

    /** Tensor names in header order. */
    public List<String> names() {
        return List.copyOf(entries.keySet());
    }

    public boolean contains(String name) {
        return entries.containsKey(name);
    }

    /** The header entry of {@code name}. */
    public Entry entry(String name) {
        Entry e = entries.get(name);
        if (e == null) {
            throw new SafetensorsException(path + ": no tensor '" + name + "' (the file has " + entries.size() + " tensors)");
        }
        return e;
    }

    /** The mapped data buffer (after the header); entries' begin/end are offsets into it. */
    public MemorySegment data() {
        return data;
    }

    public Map<String, String> metadata() {
        return metadata;
    }

    /** A zero-copy view of tensor {@code name} in its stored dtype. */
    public Tensor tensor(String name) {
        Entry e = entry(name);
        return Tensor.of(data.asSlice(e.begin(), e.end() - e.begin()), e.dtype(), e.shape());
    }

    /**
     * Tensor {@code name} as float32: the view itself when it is stored as F32, otherwise a converted copy
     * allocated from {@code arena}.
     */
    public Tensor tensorF32(String name, Arena arena) {
        Tensor t = tensor(name);
        if (t.dtype() == DType.F32) {
            return t;
        }
        Tensor out = Tensor.allocate(arena, t.shape());
        if (t.dtype() == DType.BF16) {
            Convert.bf16ToF32(t.segment(), 0, out.segment(), 0, t.numel());
        } else {
            Convert.f16ToF32(t.segment(), 0, out.segment(), 0, t.numel());
        }
        return out;
    }

    @Override
    public void close() {
        arena.close();
    }
}
