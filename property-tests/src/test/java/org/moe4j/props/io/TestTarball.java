package org.moe4j.props.io;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.zip.GZIPOutputStream;

/** Writes small .tgz files the way npm pack does (ustar, pax headers for long names), for the corpus tests. */
final class TestTarball {
    private TestTarball() {
    }

    static void write(Path file, Map<String, String> entries) throws IOException {
        try (OutputStream out = new GZIPOutputStream(Files.newOutputStream(file))) {
            for (Map.Entry<String, String> e : entries.entrySet()) {
                byte[] content = e.getValue().getBytes(StandardCharsets.UTF_8);
                String name = e.getKey();
                if (name.length() > 100) {
                    String record = " path=" + name + "\n";
                    // the length prefix counts itself
                    int len = record.length() + 2;
                    len = record.length() + String.valueOf(len).length();
                    byte[] pax = (len + record).getBytes(StandardCharsets.UTF_8);
                    entry(out, "PaxHeader/x", (byte) 'x', pax);
                    name = name.substring(name.length() - 90);
                }
                entry(out, name, (byte) '0', content);
            }
            out.write(new byte[1024]);
        }
    }

    private static void entry(OutputStream out, String name, byte type, byte[] content) throws IOException {
        byte[] h = new byte[512];
        put(h, 0, name);
        put(h, 100, "0000644");
        put(h, 108, "0000000");
        put(h, 116, "0000000");
        put(h, 124, String.format("%011o", content.length));
        put(h, 136, String.format("%011o", 0));
        h[156] = type;
        put(h, 257, "ustar");
        put(h, 263, "00");
        for (int i = 148; i < 156; i++) {
            h[i] = ' ';
        }
        int sum = 0;
        for (byte b : h) {
            sum += b & 0xFF;
        }
        put(h, 148, String.format("%06o", sum));
        h[154] = 0;
        out.write(h);
        out.write(content);
        out.write(new byte[(512 - content.length % 512) % 512]);
    }

    private static void put(byte[] h, int off, String s) {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        System.arraycopy(b, 0, h, off, b.length);
    }
}
