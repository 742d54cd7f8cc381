package org.moe4j.engine.subset;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.stream.Stream;
import org.moe4j.Moe4jException;
import org.moe4j.io.checkpoint.CheckpointDescriptor;
import org.moe4j.io.checkpoint.CheckpointFolder;

/** Checks on the folders and files select, prune and eval write, and the source checkpoint's fingerprint. */
public final class OutputFolders {
    private OutputFolders() {
    }

    /**
     * A checkpoint folder may be written at {@code dir} when nothing is there, an empty folder, or a checkpoint moe4j
     * wrote ({@link CheckpointFolder#requireReplaceable}, the rule every save applies): checked before any work.
     */
    public static void checkReplaceable(Path dir, String option) {
        CheckpointFolder.requireReplaceable(dir, option + " " + dir);
    }

    /** A file to write: not a folder, its parent folder must exist or be creatable. */
    public static void checkFile(Path file, String option) {
        if (Files.isDirectory(file)) throw new Moe4jException(option + " " + file + " is a directory; give a file name");
    }

    /**
     * SHA-256 over the checkpoint's config.json and weight files (name, then bytes, in name order): identifies the
     * source a subset was chosen on.
     */
    public static String sourceHash(Path dir) {
        try (Stream<Path> s = Files.list(dir)) {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            for (Path p : s.filter(p -> {
                String n = p.getFileName().toString();
                return n.equals(CheckpointDescriptor.CONFIG) || n.endsWith(".safetensors") && !n.startsWith("training_state")
                        || n.equals(CheckpointDescriptor.INDEX);
            }).sorted().toList()) {
                md.update(p.getFileName().toString().getBytes(java.nio.charset.StandardCharsets.UTF_8));
                try (var in = Files.newInputStream(p)) {
                    byte[] buf = new byte[1 << 16];
                    for (int n; (n = in.read(buf)) > 0; ) md.update(buf, 0, n);
                }
            }
            return HexFormat.of().formatHex(md.digest());
        } catch (IOException e) {
            throw new Moe4jException(dir + ": cannot read the checkpoint to hash it: " + e.getMessage(), e);
        } catch (NoSuchAlgorithmException e) {
            throw new Moe4jException("this JDK has no SHA-256 (every JDK must): " + e.getMessage(), e);
        }
    }

    /** Writes bytes to {@code file} atomically (temporary sibling, rename). */
    public static void writeAtomically(Path file, byte[] bytes, String option) {
        Path abs = file.toAbsolutePath();
        try {
            Files.createDirectories(abs.getParent());
            Path tmp = Files.createTempFile(abs.getParent(), "." + abs.getFileName() + ".", ".tmp");
            try {
                Files.write(tmp, bytes);
                Files.move(tmp, abs, java.nio.file.StandardCopyOption.ATOMIC_MOVE, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            } finally {
                Files.deleteIfExists(tmp);
            }
        } catch (IOException e) {
            throw new Moe4jException(option + " " + file + ": cannot write: " + e.getMessage(), e);
        }
    }
}
