package org.moe4j.io.safetensors;

import org.moe4j.io.AtomicFile;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Map;
import org.moe4j.simd.Tensor;

/**
 * Writes safetensors files atomically: the bytes go to a temporary file beside the target, are forced to disk,
 * and the temporary file is renamed over the target. A crash leaves either the old file or the new one, never
 * half of one.
 */
public final class SafetensorsWriter {
    private SafetensorsWriter() {
    }

    /** Writes {@code tensors} (in map order) and string {@code metadata} to {@code path}. */
    public static void write(Path path, Map<String, Tensor> tensors, Map<String, String> metadata) {
        byte[] header = header(tensors, metadata);
        try {
            AtomicFile.write(path, tmp -> {
                try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                    ByteBuffer len = ByteBuffer.allocate(SafetensorsDescriptor.HEADER_LENGTH_BYTES).order(ByteOrder.LITTLE_ENDIAN);
                    len.putLong(header.length).flip();
                    writeFully(ch, len);
                    writeFully(ch, ByteBuffer.wrap(header));
                    for (Tensor t : tensors.values()) {
                        MemorySegment seg = t.segment();
                        // chunks of at most 1 GiB keep the ByteBuffer views within int range
                        for (long off = 0; off < seg.byteSize(); off += 1L << 30) {
                            writeFully(ch, seg.asSlice(off, Math.min(1L << 30, seg.byteSize() - off)).asByteBuffer());
                        }
                    }
                }
            });
        } catch (IOException e) {
            throw new SafetensorsException(path + ": cannot write the file: " + e, e);
        }
    }

    /** The JSON header, padded with spaces so that the data starts 8-byte aligned. */
    static byte[] header(Map<String, Tensor> tensors, Map<String, String> metadata) {
        ObjectNode root = SafetensorsFile.JSON.createObjectNode();
        if (metadata != null && !metadata.isEmpty()) {
            ObjectNode m = root.putObject(SafetensorsDescriptor.METADATA_KEY);
            metadata.forEach(m::put);
        }
        long offset = 0;
        for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
            if (e.getKey().equals(SafetensorsDescriptor.METADATA_KEY)) {
                throw new SafetensorsException("tensor name '__metadata__' is reserved by the safetensors format");
            }
            Tensor t = e.getValue();
            ObjectNode o = root.putObject(e.getKey());
            o.put("dtype", SafetensorsDescriptor.name(t.dtype()));
            ArrayNode shape = o.putArray("shape");
            for (int d : t.shape()) {
                shape.add(d);
            }
            ArrayNode off = o.putArray("data_offsets");
            off.add(offset);
            offset += t.byteSize();
            off.add(offset);
        }
        byte[] json = root.toString().getBytes(StandardCharsets.UTF_8);
        int pad = (SafetensorsDescriptor.DATA_ALIGNMENT - json.length % SafetensorsDescriptor.DATA_ALIGNMENT)
                % SafetensorsDescriptor.DATA_ALIGNMENT;
        byte[] out = new byte[json.length + pad];
        System.arraycopy(json, 0, out, 0, json.length);
        for (int i = json.length; i < out.length; i++) {
            out[i] = ' ';
        }
        return out;
    }

    private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }
}
