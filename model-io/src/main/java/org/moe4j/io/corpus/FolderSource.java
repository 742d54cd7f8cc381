package org.moe4j.io.corpus;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;

/**
 * Any folder: one document per regular file, read as UTF-8 (malformed bytes become U+FFFD), in path order. The
 * domain is the first folder below the root ({@code ROOT/law/a/b.txt} is in {@code law}); files directly in the
 * root take the root folder's name. Hidden files and folders (a name starting with '.') and binary files (a NUL
 * byte in the first 8 KiB) are skipped.
 */
public final class FolderSource implements DocumentSource {
    private static final int BINARY_PROBE = 8192;

    private final Path root;

    public FolderSource(Path root) {
        this.root = root;
    }

    @Override
    public String name() {
        return "folder:" + root;
    }

    @Override
    public String reference() {
        return "folder:" + root.toAbsolutePath().normalize();
    }

    @Override
    public Stream<Document> documents() {
        if (!Files.isDirectory(root)) {
            throw new CorpusException(root + ": not a folder (--source folder:PATH needs a directory of text files)");
        }
        List<Path> files;
        try (Stream<Path> walk = Files.walk(root)) {
            files = walk.filter(Files::isRegularFile)
                    .filter(p -> !hidden(root.relativize(p)))
                    .sorted()
                    .toList();
        } catch (IOException e) {
            throw new CorpusException(root + ": cannot list the folder: " + e, e);
        }
        String rootName = root.toAbsolutePath().normalize().getFileName() == null ? "root"
                : root.toAbsolutePath().normalize().getFileName().toString();
        return files.stream().map(p -> {
            Path rel = root.relativize(p);
            byte[] bytes;
            try {
                bytes = Files.readAllBytes(p);
            } catch (IOException e) {
                throw new CorpusException(p + ": cannot read: " + e, e);
            }
            if (binary(bytes)) {
                return null;
            }
            String domain = rel.getNameCount() > 1 ? rel.getName(0).toString() : rootName;
            return new Document("folder:" + rel.toString().replace('\\', '/'), domain, decode(bytes));
        }).filter(d -> d != null);
    }

    private static boolean hidden(Path rel) {
        for (Path part : rel) {
            if (part.toString().startsWith(".")) {
                return true;
            }
        }
        return false;
    }

    private static boolean binary(byte[] b) {
        for (int i = 0, n = Math.min(b.length, BINARY_PROBE); i < n; i++) {
            if (b[i] == 0) {
                return true;
            }
        }
        return false;
    }

    private static String decode(byte[] b) {
        try {
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPLACE)
                    .onUnmappableCharacter(CodingErrorAction.REPLACE).decode(ByteBuffer.wrap(b)).toString();
        } catch (CharacterCodingException e) {
            throw new CorpusException("UTF-8 decoding with replacement failed, which the JDK rules out: " + e, e);
        }
    }
}
