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
     * A file a command may write: nothing there, or an earlier output of that command ({@code ours} recognises it by
     * its content) — never a user's file. Checked before any work; the write itself is {@link #writeAtomically}.
     */
    public static void requireOwnFile(Path file, String option, String command, java.util.function.Predicate<Path> ours) {
        checkFile(file, option);
        if (Files.exists(file) && !ours.test(file))
            throw new Moe4jException(option + " " + file + " exists and is not an earlier output of " + command
                    + "; remove it first or give another file name");
    }

    /** Whether the file is a JSON object holding every one of {@code keys} (and, if exact, nothing else). */
    public static boolean jsonObjectWith(Path file, boolean exact, String... keys) {
        try {
            var root = new com.fasterxml.jackson.databind.ObjectMapper().readTree(file.toFile());
            if (root == null || !root.isObject() || exact && root.size() != keys.length) return false;
            for (String k : keys) if (!root.has(k)) return false;
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /** Whether the file's first line is exactly {@code line} (a CSV header). */
    public static boolean firstLineIs(Path file, String line) {
        try (var r = Files.newBufferedReader(file, java.nio.charset.StandardCharsets.UTF_8)) {
            return line.equals(r.readLine());
        } catch (IOException e) {
            return false;
        }
    }

    /** Whether the file's first 4 KiB hold {@code marker}. */
    public static boolean startContains(Path file, String marker) {
        try (var in = Files.newInputStream(file)) {
            return new String(in.readNBytes(4096), java.nio.charset.StandardCharsets.UTF_8).contains(marker);
        } catch (IOException e) {
            return false;
        }
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
        try {
            org.moe4j.io.AtomicFile.write(file, bytes);
        } catch (IOException e) {
            throw new Moe4jException(option + " " + file + ": cannot write: " + e.getMessage(), e);
        }
    }
}
