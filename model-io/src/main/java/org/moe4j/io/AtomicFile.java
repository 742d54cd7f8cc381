package org.moe4j.io;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Every file moe4j writes for a user goes through here, so that a reader (or a crash, or a kill) sees the old file or
 * the new one and never a part of it: the content goes to a temporary file beside the target ({@code .NAME.XXXX.tmp}),
 * is forced to disk and renamed over the target, and the folder is forced so the rename lasts.
 *
 * <p>The temporary file (and a staging folder, {@link #createTempDirectory}) is made like any new file, so it gets the
 * permissions the user's umask gives every new file (0644 under the usual 022) — not the owner-only 0600/0700 of
 * {@link Files#createTempFile}, which made checkpoints and tokenizers unreadable for anyone else while their
 * {@code config.json} beside them was readable.
 */
public final class AtomicFile {
    private AtomicFile() {
    }

    /** Writes the temporary file's content. */
    @FunctionalInterface
    public interface Body {
        void write(Path tmp) throws IOException;
    }

    /** {@code target} := what {@code body} writes into a temporary file beside it (see the class comment). */
    public static void write(Path target, Body body) throws IOException {
        Path abs = target.toAbsolutePath();
        Path tmp = createTemp(abs);
        try {
            body.write(tmp);
            force(tmp);
            moveIntoPlace(tmp, abs);
            tmp = null;
        } finally {
            if (tmp != null) deleteQuietly(tmp);
        }
    }

    /** {@code target} := {@code bytes}, atomically. */
    public static void write(Path target, byte[] bytes) throws IOException {
        write(target, tmp -> Files.write(tmp, bytes, StandardOpenOption.TRUNCATE_EXISTING));
    }

    /**
     * A new, empty file {@code .NAME.XXXX.tmp} beside {@code target} (its folder is created if missing), with the
     * permissions of any new file. For writers that keep the file open (a corpus shard); finish with
     * {@link #moveIntoPlace}.
     */
    public static Path createTemp(Path target) throws IOException {
        Path abs = target.toAbsolutePath();
        Files.createDirectories(abs.getParent());
        while (true) {
            Path tmp = abs.resolveSibling("." + abs.getFileName() + "." + suffix() + ".tmp");
            try {
                return Files.createFile(tmp);
            } catch (FileAlreadyExistsException e) {
                // another writer drew the same name: draw again
            }
        }
    }

    /** A new, empty folder {@code .NAME<kind>XXXX} beside {@code target}, with the permissions of any new folder. */
    public static Path createTempDirectory(Path target, String kind) throws IOException {
        Path abs = target.toAbsolutePath();
        Files.createDirectories(abs.getParent());
        while (true) {
            Path dir = abs.resolveSibling("." + abs.getFileName() + kind + suffix());
            try {
                return Files.createDirectory(dir);
            } catch (FileAlreadyExistsException e) {
                // drawn before: draw again
            }
        }
    }

    /**
     * Renames the complete, forced {@code tmp} over {@code target} (atomically where the file system can) and forces
     * the folder so the rename survives a crash.
     */
    public static void moveIntoPlace(Path tmp, Path target) throws IOException {
        Path abs = target.toAbsolutePath();
        try {
            Files.move(tmp, abs, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING);
        }
        forceDirectory(abs.getParent());
    }

    /** Forces a file's content to disk. */
    public static void force(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE)) {
            ch.force(true);
        }
    }

    /** Forces a folder (its entries: renames, new files); best effort where the file system cannot. */
    public static void forceDirectory(Path dir) {
        // Linux lets a directory be opened read-only and forced
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException ignored) {
            // not supported here: the rename is still atomic
        }
    }

    /** Deletes a temporary file, ignoring failure (the error that led here is the one to report). */
    public static void deleteQuietly(Path tmp) {
        try {
            Files.deleteIfExists(tmp);
        } catch (IOException ignored) {
            // the caller's error is the one to report
        }
    }

    private static String suffix() {
        return Long.toUnsignedString(ThreadLocalRandom.current().nextLong(), 36);
    }
}
