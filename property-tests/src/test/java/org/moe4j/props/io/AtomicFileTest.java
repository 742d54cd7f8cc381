package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.util.List;
import java.util.Set;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.io.AtomicFile;
import org.moe4j.io.tokenizer.BpeTokenizer;

/**
 * {@link AtomicFile}, which every user-facing write goes through: the target holds the old bytes or the new, a failed
 * write leaves it and its folder as they were, and what it writes — a checkpoint folder and its weights, a tokenizer —
 * gets the permissions any new file or folder gets here (the umask's), the same as a {@code config.json} written with
 * plain {@code Files.write}. Before, the temporary files and staging folders came from {@code Files.createTempFile}
 * and {@code createTempDirectory}, so a saved checkpoint was owner-only (folder 0700, weights 0600) while its
 * config.json beside them was 0644.
 */
class AtomicFileTest {
    @TempDir
    Path tmp;

    /** The permissions a plain new file (or folder) gets in {@code dir}: what the user's umask gives. */
    static Set<PosixFilePermission> fresh(Path dir, boolean folder) throws IOException {
        Path p = dir.resolve(folder ? "plain-dir" : "plain-file");
        if (folder) Files.createDirectory(p);
        else Files.createFile(p);
        try {
            return Files.getPosixFilePermissions(p);
        } finally {
            Files.delete(p);
        }
    }

    static List<String> names(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void writesReplaceWholeAndLeaveNothingBehind() throws IOException {
        Path f = tmp.resolve("out.json");
        AtomicFile.write(f, "first".getBytes(StandardCharsets.UTF_8));
        AtomicFile.write(f, "second, longer".getBytes(StandardCharsets.UTF_8));
        assertEquals("second, longer", Files.readString(f));
        assertEquals(List.of("out.json"), names(tmp));
        // a write that fails half-way: the old content stays, and its temporary file is gone
        IOException boom = assertThrows(IOException.class, () -> AtomicFile.write(f, t -> {
            Files.writeString(t, "half");
            throw new IOException("disk full (simulated)");
        }));
        assertEquals("disk full (simulated)", boom.getMessage());
        assertEquals("second, longer", Files.readString(f));
        assertEquals(List.of("out.json"), names(tmp));
        // a missing folder is made
        Path deep = tmp.resolve("a").resolve("b").resolve("c.txt");
        AtomicFile.write(deep, new byte[] {1, 2, 3});
        assertArrayEquals(new byte[] {1, 2, 3}, Files.readAllBytes(deep));
    }

    @Test
    void outputsGetTheUmasksPermissionsNotOwnerOnly() throws IOException {
        assumeTrue(FileSystems.getDefault().supportedFileAttributeViews().contains("posix"),
                "needs a POSIX file system: permissions are what this test compares");
        Set<PosixFilePermission> file = fresh(tmp, false), folder = fresh(tmp, true);
        Path f = tmp.resolve("report.csv");
        AtomicFile.write(f, "a,b\n".getBytes(StandardCharsets.UTF_8));
        assertEquals(file, Files.getPosixFilePermissions(f), "AtomicFile.write");

        Path ck = tmp.resolve("ck");
        try (MoeModel m = new MoeModel(HostileCheckpointProperties.CONFIG).initRandom(3)) {
            ModelCheckpoint.save(ck, m, null, null);
        }
        assertEquals(folder, Files.getPosixFilePermissions(ck), "checkpoint folder");
        try (Stream<Path> s = Files.list(ck)) {
            for (Path p : s.toList()) assertEquals(file, Files.getPosixFilePermissions(p), "checkpoint file " + p.getFileName());
        }

        BpeTokenizer tok = BpeTokenizer.train(List.of("the cat sat on the mat", "a dog sat on a log"), 270,
                List.of(BpeTokenizer.END_OF_TEXT), null);
        Path tj = tmp.resolve("tok").resolve("tokenizer.json");
        tok.save(tj);
        assertEquals(file, Files.getPosixFilePermissions(tj), "tokenizer.json");
    }
}
