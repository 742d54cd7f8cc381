package org.moe4j.io.checkpoint;

import org.moe4j.io.AtomicFile;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.function.Consumer;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.moe4j.io.safetensors.SafetensorsException;
import org.moe4j.io.safetensors.SafetensorsFile;

/**
 * How a checkpoint folder {@code NAME} is replaced without a moment where a crash loses it, and who may replace it.
 * Everything lives beside the folder, in its parent:
 *
 * <pre>
 * .NAME.lock      held (fcntl lock) by the one process writing NAME; removed when it is done
 * .NAME.tmp-*     a save being written; incomplete by definition, deleted by the next writer or reader
 * .NAME.new-*     a save written and forced to disk, about to become NAME (complete)
 * .NAME.old-*     the previous NAME, moved aside for a moment, deleted once the new one is in place
 * </pre>
 *
 * A save is: write and force {@code .tmp-X}; rename it to {@code .new-X}; rename NAME to {@code .old-Y}; rename
 * {@code .new-X} to NAME; delete {@code .old-Y}. A kill at any point leaves either NAME, or no NAME with a complete
 * {@code .new-X} (and {@code .old-Y}): the next load or save ({@link #recover}) renames the newest {@code .new-*} (else
 * the newest {@code .old-*}) to NAME and deletes every other leftover, so no full-size copy stays behind.
 *
 * <p>Only an absent path, an empty folder or a folder moe4j wrote (checkpoint files only, weights marked
 * {@code "writer": "moe4j"}) is replaced; anything else is refused with a message saying how to replace it on
 * purpose ({@link #requireReplaceable}).
 */
public final class CheckpointFolder {
    private CheckpointFolder() {
    }

    /** File names a checkpoint folder may hold (besides the numbered shards). */
    public static final List<String> KNOWN_FILES = List.of(CheckpointDescriptor.CONFIG,
            CheckpointDescriptor.SINGLE_WEIGHTS, CheckpointDescriptor.INDEX, CheckpointDescriptor.TOKENIZER,
            "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
            CheckpointDescriptor.TRAINING_STATE, CheckpointDescriptor.TRAINING_STATE_JSON);
    private static final Pattern SHARD = Pattern.compile("model-\\d{5}-of-\\d{5}\\.safetensors");
    private static final String TMP = ".tmp-", NEW = ".new-", OLD = ".old-", LOCK = ".lock";

    /** Points of a save where {@link #injectFault} hooks are called, in order. */
    public static final String STAGED = "staged", MOVED_ASIDE = "moved-aside", SWAPPED = "swapped";
    private static volatile Consumer<String> faults;

    /**
     * For crash tests: {@code hook} is called with {@link #STAGED}, {@link #MOVED_ASIDE} (the old folder renamed
     * away, the new one not yet in place) and {@link #SWAPPED}; an exception it throws stops the save there without
     * any clean-up, as a kill would. Null removes the hook.
     */
    public static void injectFault(Consumer<String> hook) {
        faults = hook;
    }

    private static void fault(String point) {
        Consumer<String> f = faults;
        if (f != null) f.accept(point);
    }

    /** The exclusive right to write one checkpoint folder; closing it removes the lock file. */
    public static final class Lock implements AutoCloseable {
        private final Path file;
        private final FileChannel channel;
        private final FileLock lock;

        private Lock(Path file, FileChannel channel, FileLock lock) {
            this.file = file;
            this.channel = channel;
            this.lock = lock;
        }

        @Override
        public void close() {
            try {
                // delete while still holding the lock: a process waiting on this file then sees it is stale
                Files.deleteIfExists(file);
                lock.release();
            } catch (IOException ignored) {
                // the lock goes with the channel; a lock file left behind is empty and reused by the next writer
            } finally {
                try {
                    channel.close();
                } catch (IOException ignored) {
                    // nothing was written to it
                }
            }
        }
    }

    private static Path abs(Path dir) {
        Path abs = dir.toAbsolutePath().normalize();
        if (abs.getParent() == null || abs.getFileName() == null) {
            throw new SafetensorsException(dir + ": a checkpoint folder needs a parent folder (not a root)");
        }
        return abs;
    }

    private static Path sibling(Path abs, String suffix) {
        return abs.getParent().resolve("." + abs.getFileName() + suffix);
    }

    /**
     * Takes the lock of {@code dir}, or fails at once, naming the lock file, when another process (or another thread
     * of this one) is saving to the same folder.
     */
    public static Lock lock(Path dir) {
        Path abs = abs(dir);
        Path file = sibling(abs, LOCK);
        try {
            Files.createDirectories(abs.getParent());
            for (int attempt = 0; ; attempt++) {
                FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE);
                Object opened = fileKey(file);
                FileLock l;
                try {
                    l = ch.tryLock();
                } catch (OverlappingFileLockException e) {
                    l = null;
                }
                if (l == null) {
                    ch.close();
                    throw new SafetensorsException(abs + ": another save to this checkpoint folder is in progress "
                            + "(lock " + file + " is held); wait for it to finish, or write to another folder");
                }
                // the holder before us deletes the file before releasing it: a lock on a file no longer at this
                // path is stale, and another process may already lock the new one
                Object now = fileKey(file);
                if ((now != null && now.equals(opened)) || attempt >= 8) {
                    return new Lock(file, ch, l);
                }
                l.release();
                ch.close();
            }
        } catch (IOException e) {
            throw new SafetensorsException(abs + ": cannot lock the checkpoint folder (" + file + "): " + e, e);
        }
    }

    private static Object fileKey(Path file) throws IOException {
        try {
            return Files.readAttributes(file, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS).fileKey();
        } catch (NoSuchFileException e) {
            return null;
        }
    }

    /**
     * Makes {@code dir} whole after an interrupted save and removes the leftovers of saves: when the folder is
     * missing, the newest complete save ({@code .new-*}, else the newest {@code .old-*}) becomes it. Does nothing
     * when there are no leftovers; when another process holds the lock, leaves them to it (but fails when the folder
     * itself is missing, since that process is between its two renames). Called by every load and save.
     */
    public static void recover(Path dir) {
        Path abs = abs(dir);
        if (leftovers(abs).isEmpty()) return;
        Lock lock;
        try {
            lock = lock(abs);
        } catch (SafetensorsException busy) {
            // a writer busy with it cleans up after itself; a read-only parent keeps its leftovers
            if (Files.exists(abs)) return;
            throw new SafetensorsException(abs + ": not found, and the saves beside it cannot be put in its place now ("
                    + busy.getMessage() + ")", busy);
        }
        try (lock) {
            recoverLocked(lock, abs);
        }
    }

    /** {@link #recover} with the lock already held (the parameter says so). */
    static void recoverLocked(Lock held, Path abs) {
        if (held.lock == null || !held.lock.isValid()) {
            throw new SafetensorsException(abs + ": recovery needs the folder's lock");
        }
        List<Path> left = leftovers(abs);
        try {
            if (!Files.exists(abs, LinkOption.NOFOLLOW_LINKS)) {
                Path keep = newest(abs, left, NEW);
                if (keep == null) keep = newest(abs, left, OLD);
                if (keep != null) {
                    Files.move(keep, abs, StandardCopyOption.ATOMIC_MOVE);
                    left.remove(keep);
                    fsyncDir(abs.getParent());
                }
            }
            for (Path p : left) deleteTree(p);
        } catch (IOException e) {
            throw new SafetensorsException(abs + ": cannot recover the checkpoint folder from " + left + ": " + e, e);
        }
    }

    private static List<Path> leftovers(Path abs) {
        String prefix = "." + abs.getFileName();
        List<Path> out = new ArrayList<>();
        try (DirectoryStream<Path> s = Files.newDirectoryStream(abs.getParent(), prefix + ".*")) {
            for (Path p : s) {
                String rest = p.getFileName().toString().substring(prefix.length());
                if (rest.startsWith(TMP) || rest.startsWith(NEW) || rest.startsWith(OLD)) out.add(p);
            }
        } catch (NoSuchFileException e) {
            return out;
        } catch (IOException e) {
            return out; // an unreadable parent: a load then fails on the folder itself, with its own message
        }
        return out;
    }

    /** The leftover of {@code kind} with the largest time stamp (names end in the wall time of the save). */
    private static Path newest(Path abs, List<Path> left, String kind) {
        String prefix = "." + abs.getFileName() + kind;
        Path best = null;
        long bestTime = Long.MIN_VALUE;
        for (Path p : left) {
            String n = p.getFileName().toString();
            if (!n.startsWith(prefix)) continue;
            long t;
            try {
                t = Long.parseLong(n.substring(prefix.length()));
            } catch (NumberFormatException e) {
                continue;
            }
            if (best == null || t > bestTime) {
                best = p;
                bestTime = t;
            }
        }
        return best;
    }

    /**
     * Fails unless {@code dir} is absent, an empty folder, or a checkpoint folder moe4j wrote; {@code what} names it
     * for the user (e.g. "--out build/ckpt"). Called by a command before it starts, and by every save.
     */
    public static void requireReplaceable(Path dir, String what) {
        Path abs = abs(dir);
        String how = "; to replace it on purpose, remove it first (rm -r " + abs + "), or write somewhere else";
        if (!Files.exists(abs, LinkOption.NOFOLLOW_LINKS)) return;
        if (Files.isSymbolicLink(abs)) {
            throw new SafetensorsException(what + ": " + abs + " is a symbolic link, not a checkpoint folder moe4j "
                    + "wrote; moe4j replaces only an empty folder or its own checkpoint" + how);
        }
        if (!Files.isDirectory(abs, LinkOption.NOFOLLOW_LINKS)) {
            throw new SafetensorsException(what + ": " + abs + " is an existing file, not a checkpoint folder; moe4j "
                    + "replaces only an empty folder or its own checkpoint" + how);
        }
        List<String> names = new ArrayList<>();
        try (Stream<Path> s = Files.list(abs)) {
            for (Path p : (Iterable<Path>) s::iterator) {
                String n = p.getFileName().toString();
                if (!Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS) || !isCheckpointFile(n)) {
                    throw new SafetensorsException(what + ": " + abs + " holds '" + n + "', which is not a file of a "
                            + "moe4j checkpoint; moe4j replaces only an empty folder or its own checkpoint" + how);
                }
                names.add(n);
            }
        } catch (IOException e) {
            throw new SafetensorsException(what + ": " + abs + ": cannot list the folder: " + e, e);
        }
        if (names.isEmpty()) return;
        String weights = names.contains(CheckpointDescriptor.SINGLE_WEIGHTS) ? CheckpointDescriptor.SINGLE_WEIGHTS
                : names.stream().filter(n -> SHARD.matcher(n).matches()).sorted().findFirst().orElse(null);
        String writer = null;
        if (weights != null && names.contains(CheckpointDescriptor.CONFIG)) {
            try (SafetensorsFile f = SafetensorsFile.open(abs.resolve(weights))) {
                writer = f.metadata().get("writer");
            } catch (SafetensorsException e) {
                writer = null;
            }
        }
        if (!"moe4j".equals(writer)) {
            throw new SafetensorsException(what + ": " + abs + " is not a checkpoint moe4j wrote (no config.json, or "
                    + "its weights do not say \"writer\": \"moe4j\", or cannot be read)" + how);
        }
    }

    private static boolean isCheckpointFile(String name) {
        return KNOWN_FILES.contains(name) || SHARD.matcher(name).matches();
    }

    /** A new, empty staging folder for a save of {@code abs}, beside it. */
    static Path stage(Path abs) throws IOException {
        // not Files.createTempDirectory: its folders are owner-only (0700), and the staging folder becomes the checkpoint
        return AtomicFile.createTempDirectory(abs, TMP);
    }

    /**
     * Puts the complete, forced {@code staged} folder in the place of {@code abs} (see the class comment); the lock
     * must be held.
     */
    static void swapIn(Path staged, Path abs) throws IOException {
        Path parent = abs.getParent();
        Path ready = unique(abs, NEW);
        Files.move(staged, ready, StandardCopyOption.ATOMIC_MOVE);
        fsyncDir(parent);
        fault(STAGED);
        Path old = null;
        if (Files.exists(abs, LinkOption.NOFOLLOW_LINKS)) {
            old = unique(abs, OLD);
            Files.move(abs, old, StandardCopyOption.ATOMIC_MOVE);
        }
        fault(MOVED_ASIDE);
        try {
            Files.move(ready, abs, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            if (old != null) {
                try {
                    Files.move(old, abs, StandardCopyOption.ATOMIC_MOVE);
                } catch (IOException again) {
                    e.addSuppressed(again); // recover() puts .new-* in place on the next load
                }
            }
            throw e;
        }
        fsyncDir(parent);
        fault(SWAPPED);
        if (old != null) deleteTree(old);
    }

    /** {@code .NAME<kind><milliseconds since 1970>}, a name no other leftover has; wall time orders saves across processes. */
    private static Path unique(Path abs, String kind) {
        long t = System.currentTimeMillis();
        Path p;
        while (Files.exists(p = sibling(abs, kind + t), LinkOption.NOFOLLOW_LINKS)) t++;
        return p;
    }

    static void fsyncDir(Path dir) {
        // Linux lets a directory be opened read-only and forced; elsewhere this is best effort
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException ignored) {
            // not supported on this file system: the renames are still atomic
        }
    }

    static void deleteTree(Path root) throws IOException {
        if (!Files.exists(root, LinkOption.NOFOLLOW_LINKS)) return;
        try (Stream<Path> s = Files.walk(root)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
