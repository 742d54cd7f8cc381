package org.moe4j.io.corpus;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.zip.GZIPInputStream;

/**
 * Reads the regular files of a gzipped tar archive (an npm package) in archive order. Understands ustar names with
 * a prefix, pax extended headers ({@code path=}) and GNU long names, which is what npm writes; skips everything that
 * is not a regular file. Entries larger than 2 GiB are rejected: these archives hold text documents.
 */
final class TarReader implements AutoCloseable {
    private static final int BLOCK = 512;

    /** One file of the archive. */
    record Entry(String name, byte[] content) {
    }

    private final Path archive;
    private final InputStream in;
    private final byte[] header = new byte[BLOCK];
    private final byte[] padding = new byte[BLOCK];

    TarReader(Path archive, InputStream gzipped) throws IOException {
        this.archive = archive;
        this.in = new GZIPInputStream(gzipped, 1 << 16);
    }

    /** The next regular file, or null at the end of the archive. */
    Entry next() throws IOException {
        String longName = null;
        while (true) {
            if (!readBlock(header, true)) {
                return null;
            }
            if (isZero(header)) {
                return null;
            }
            long size = octal(header, 124, 12);
            byte type = header[156];
            String name = longName != null ? longName : ustarName(header);
            longName = null;
            if (size < 0 || size > Integer.MAX_VALUE - 8) {
                throw new CorpusException(archive + ": tar entry '" + name + "' has size " + size
                        + " (corrupt archive, or an entry over 2 GiB)");
            }
            byte[] content = readContent((int) size, name);
            switch (type) {
                case 'x' -> longName = paxPath(content);
                case 'L' -> longName = cString(content, 0, content.length);
                case '0', '7', 0 -> {
                    return new Entry(name, content);
                }
                default -> {
                    // directories, links, global pax headers: nothing to read
                }
            }
        }
    }

    private byte[] readContent(int size, String name) throws IOException {
        byte[] content = new byte[size];
        if (in.readNBytes(content, 0, size) != size) {
            throw new CorpusException(archive + ": tar entry '" + name + "' is truncated (expected " + size + " bytes)");
        }
        int pad = (BLOCK - size % BLOCK) % BLOCK;
        if (in.readNBytes(padding, 0, pad) != pad) {
            throw new CorpusException(archive + ": tar entry '" + name + "' is truncated (missing block padding)");
        }
        return content;
    }

    private boolean readBlock(byte[] block, boolean endAllowed) throws IOException {
        int n = in.readNBytes(block, 0, BLOCK);
        if (n == 0 && endAllowed) {
            return false;
        }
        if (n != BLOCK) {
            throw new CorpusException(archive + ": truncated tar header (" + n + " of " + BLOCK + " bytes)");
        }
        return true;
    }

    private static boolean isZero(byte[] b) {
        for (byte x : b) {
            if (x != 0) {
                return false;
            }
        }
        return true;
    }

    private String ustarName(byte[] h) {
        String name = cString(h, 0, 100);
        boolean ustar = h[257] == 'u' && h[258] == 's' && h[259] == 't' && h[260] == 'a' && h[261] == 'r';
        String prefix = ustar ? cString(h, 345, 155) : "";
        return prefix.isEmpty() ? name : prefix + "/" + name;
    }

    private long octal(byte[] h, int off, int len) {
        long v = 0;
        int i = off, end = off + len;
        while (i < end && (h[i] == ' ' || h[i] == 0)) {
            i++;
        }
        for (; i < end && h[i] >= '0' && h[i] <= '7'; i++) {
            v = (v << 3) + (h[i] - '0');
            if (v > Integer.MAX_VALUE) {
                return -1;
            }
        }
        if (i < end && h[i] != ' ' && h[i] != 0) {
            throw new CorpusException(archive + ": tar header of '" + ustarName(h) + "' has a non-octal size field");
        }
        return v;
    }

    /** The {@code path} record of a pax header: lines of "LEN key=value\n". */
    private static String paxPath(byte[] content) {
        String s = new String(content, StandardCharsets.UTF_8);
        String path = null;
        for (String line : s.split("\n")) {
            int sp = line.indexOf(' ');
            if (sp > 0 && line.startsWith("path=", sp + 1)) {
                path = line.substring(sp + 1 + "path=".length());
            }
        }
        return path;
    }

    private static String cString(byte[] b, int off, int len) {
        int end = off;
        while (end < off + len && b[end] != 0) {
            end++;
        }
        return new String(b, off, end - off, StandardCharsets.UTF_8);
    }

    @Override
    public void close() throws IOException {
        in.close();
    }
}
