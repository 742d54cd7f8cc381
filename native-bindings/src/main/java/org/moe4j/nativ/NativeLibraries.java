package org.moe4j.nativ;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.net.JarURLConnection;
import java.net.URL;
import java.net.URLConnection;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;

/**
 * Finds, extracts, verifies and loads native libraries shipped inside jars (oneDNN's {@code libdnnl.so.3} and the
 * {@code libgomp.so.1} it was built against, from {@code org.bytedeco:dnnl:<version>:linux-x86_64}).
 *
 * <p>Cache layout: {@code <root>/dnnl-<version>/} holds the two libraries, {@code moe4j-native.sha256} (one line
 * {@code <sha256> <size> <name>} per file, the digest computed from the jar entry while extracting) and
 * {@code .lock}. The root is {@code -Dmoe4j.native.cache}, else {@code $MOE4J_NATIVE_CACHE}, else
 * {@code ~/.cache/moe4j/native}. On reuse every file's size and SHA-256 are checked against the record; a file
 * that does not match is extracted again. Two processes starting at once are safe: extraction holds an exclusive
 * file lock on {@code .lock}, writes each file to a temporary name in the same folder and renames it into place
 * atomically (a process that already mapped the old file keeps its inode). For the version this build depends
 * on the digests are also pinned here, so a damaged or substituted jar is refused.
 *
 * <p>{@code -Dmoe4j.dnnl.path=/usr/lib/x86_64-linux-gnu/libdnnl.so.3} loads a system oneDNN instead (its OpenMP
 * runtime is then whatever the system linker resolves). Before either is loaded, the OpenMP wait policy is set
 * (see {@link #configureOpenMp()}).
 *
 * <p>Everything here throws {@link NativeLibraryException}; {@link OneDnn} turns that into one log line and a
 * Java fallback.
 */
public final class NativeLibraries {
    public static final String DNNL_PATH_PROPERTY = "moe4j.dnnl.path";
    public static final String CACHE_PROPERTY = "moe4j.native.cache";
    public static final String CACHE_ENV = "MOE4J_NATIVE_CACHE";
    /** OpenMP wait policy applied before libgomp loads: passive (default), active, or "default" (leave it). */
    public static final String OMP_WAIT_POLICY_PROPERTY = "moe4j.omp.waitPolicy";

    /** The org.bytedeco:dnnl version this build depends on (keep in step with the parent pom). */
    public static final String DNNL_PINNED_VERSION = "3.13-1.5.14";
    static final String DNNL_RESOURCE_DIR = "org/bytedeco/dnnl/linux-x86_64/";
    static final String DNNL_POM_PROPERTIES = "META-INF/maven/org.bytedeco/dnnl/pom.properties";
    /** Load order: libgomp first, so libdnnl's NEEDED entry binds to this copy. */
    static final List<String> DNNL_FILES = List.of("libgomp.so.1", "libdnnl.so.3");
    /** SHA-256 of the entries of org.bytedeco:dnnl:3.13-1.5.14:linux-x86_64. */
    static final Map<String, String> DNNL_PINNED_SHA256 = Map.of(
            "libgomp.so.1", "d46f9225c1883039e8a6853e6d96ca1af11d034ce186a090952e4a7c8a7c2fdc",
            "libdnnl.so.3", "3610657c35381b06694034b677cf73f28086495aba51ecf0cfb5b6511652a443");

    static final String RECORD = "moe4j-native.sha256";
    static final String LOCK = ".lock";

    private static final System.Logger LOG = System.getLogger("org.moe4j.nativ");
    /** FileChannel locks are per process: threads of this JVM queue here first. */
    private static final Object JVM_LOCK = new Object();

    private NativeLibraries() {
    }

    /** Libraries loaded for the life of the JVM: one lookup over all of them, the files, and where they came from. */
    public record Loaded(SymbolLookup lookup, List<Path> files, String origin) {
    }

    /**
     * Where oneDNN comes from: a system library path (or null), the cache root, and the class loader whose class
     * path holds the jar.
     */
    public record DnnlSource(String systemPath, Path cacheRoot, ClassLoader loader) {
        /** From {@code -Dmoe4j.dnnl.path}, {@code -Dmoe4j.native.cache} / {@code $MOE4J_NATIVE_CACHE}. */
        public static DnnlSource fromEnvironment() {
            String sys = System.getProperty(DNNL_PATH_PROPERTY);
            String root = System.getProperty(CACHE_PROPERTY);
            if (root == null || root.isBlank()) {
                root = System.getenv(CACHE_ENV);
            }
            Path cacheRoot = root == null || root.isBlank()
                    ? Path.of(System.getProperty("user.home"), ".cache", "moe4j", "native")
                    : Path.of(root);
            ClassLoader cl = NativeLibraries.class.getClassLoader();
            return new DnnlSource(sys == null || sys.isBlank() ? null : sys, cacheRoot, cl);
        }
    }

    /** Loads oneDNN (and, from the jar, its libgomp) as the source says; never returns null. */
    public static Loaded loadDnnl(DnnlSource source) {
        String omp = configureOpenMp();
        Loaded l = loadDnnlLibraries(source);
        return new Loaded(l.lookup(), l.files(), l.origin() + ", " + omp);
    }

    /**
     * libgomp reads its settings from the environment once, when it is loaded, so this runs before the dlopen.
     * Unless the environment already sets OMP_WAIT_POLICY (or GOMP_SPINCOUNT), moe4j asks for a passive wait:
     * OpenMP workers that spin after each GEMM take the CPU from moe4j's own worker threads, and on a shared,
     * oversubscribed machine a spinning barrier made small expert GEMMs 6-8x slower (measured with BackendGemmBench,
     * up64, 2 threads, load average ~7 on 2 cores). -Dmoe4j.omp.waitPolicy=active restores spinning (a few
     * microseconds less per call on a quiet, dedicated machine); =default leaves libgomp's default.
     */
    @SuppressWarnings("restricted")
    static String configureOpenMp() {
        String env = System.getenv("OMP_WAIT_POLICY");
        if (env != null) {
            return "OMP_WAIT_POLICY=" + env + " from the environment";
        }
        if (System.getenv("GOMP_SPINCOUNT") != null) {
            return "GOMP_SPINCOUNT=" + System.getenv("GOMP_SPINCOUNT") + " from the environment";
        }
        String policy = System.getProperty(OMP_WAIT_POLICY_PROPERTY, "passive").trim().toLowerCase(Locale.ROOT);
        if (policy.equals("default")) {
            return "OpenMP wait policy left at libgomp's default";
        }
        if (!policy.equals("passive") && !policy.equals("active")) {
            throw new NativeLibraryException("-D" + OMP_WAIT_POLICY_PROPERTY + "=" + policy + ": expected passive, "
                    + "active or default");
        }
        Linker linker = Linker.nativeLinker();
        MemorySegment setenv = linker.defaultLookup().find("setenv").orElse(null);
        if (setenv == null) {
            return "OpenMP wait policy left at libgomp's default (no setenv in libc)";
        }
        // int setenv(const char *name, const char *value, int overwrite); overwrite 0: a value set meanwhile wins
        MethodHandle h = linker.downcallHandle(setenv, FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS,
                ValueLayout.ADDRESS, ValueLayout.JAVA_INT));
        try (Arena a = Arena.ofConfined()) {
            int rc = (int) h.invokeExact(a.allocateFrom("OMP_WAIT_POLICY"), a.allocateFrom(policy.toUpperCase(
                    Locale.ROOT)), 0);
            return rc == 0 ? "OMP_WAIT_POLICY=" + policy + " (set by moe4j before loading libgomp)"
                    : "OpenMP wait policy left at libgomp's default (setenv failed)";
        } catch (Throwable t) {
            throw OneDnn.rethrow(t);
        }
    }

    private static Loaded loadDnnlLibraries(DnnlSource source) {
        if (source.systemPath() != null) {
            Path lib = Path.of(source.systemPath());
            if (!Files.isRegularFile(lib)) {
                throw new NativeLibraryException(DNNL_PATH_PROPERTY + "=" + lib + ": no such file (expected a "
                        + "libdnnl.so.3 of oneDNN 3.x)");
            }
            return load(List.of(lib), "system " + lib);
        }
        String version = jarVersion(source.loader());
        Map<String, String> pinned = DNNL_PINNED_VERSION.equals(version) ? DNNL_PINNED_SHA256 : Map.of();
        if (pinned.isEmpty()) {
            LOG.log(System.Logger.Level.INFO, "org.bytedeco:dnnl " + version + " on the class path is not the "
                    + DNNL_PINNED_VERSION + " this build pins; its libraries are checked against the digests "
                    + "recorded at extraction only");
        }
        Path dir = source.cacheRoot().resolve("dnnl-" + version);
        List<Path> files = extract(source.loader(), DNNL_RESOURCE_DIR, DNNL_FILES, dir, pinned);
        return load(files, "org.bytedeco:dnnl:" + version + " extracted to " + dir);
    }

    /** The dnnl jar's Maven version from its pom.properties, or the pinned one if that file is absent. */
    static String jarVersion(ClassLoader loader) {
        URL url = loader.getResource(DNNL_POM_PROPERTIES);
        if (url == null) {
            return DNNL_PINNED_VERSION;
        }
        Properties p = new Properties();
        try (InputStream in = url.openStream()) {
            p.load(in);
        } catch (IOException e) {
            throw new NativeLibraryException(url + ": cannot read (" + e.getMessage() + ")", e);
        }
        String v = p.getProperty("version");
        if (v == null || !v.matches("[A-Za-z0-9._-]+")) {
            throw new NativeLibraryException(url + ": no usable 'version' (got " + v + ")");
        }
        return v;
    }

    /** dlopens the files in order for the life of the JVM; one lookup searches them all, later files first. */
    @SuppressWarnings("restricted")
    static Loaded load(List<Path> files, String origin) {
        SymbolLookup all = null;
        for (Path f : files) {
            SymbolLookup one;
            try {
                one = SymbolLookup.libraryLookup(f, Arena.global());
            } catch (IllegalArgumentException | IllegalCallerException e) {
                throw new NativeLibraryException(f + ": cannot be loaded (" + e.getMessage() + ")", e);
            }
            all = all == null ? one : one.or(all);
        }
        return new Loaded(all, List.copyOf(files), origin);
    }

    /**
     * Makes sure {@code dir} holds verified copies of the jar entries {@code resourceDir + name} and returns their
     * paths, in the order given. {@code pinnedSha256} (name to lowercase hex; may be empty) is what the entries
     * must hash to.
     */
    public static List<Path> extract(ClassLoader loader, String resourceDir, List<String> names, Path dir,
                                     Map<String, String> pinnedSha256) {
        synchronized (JVM_LOCK) {
            try {
                Files.createDirectories(dir);
            } catch (IOException | UnsupportedOperationException e) {
                throw unwritable(dir, e);
            }
            FileChannel lockChannel;
            try {
                lockChannel = FileChannel.open(dir.resolve(LOCK), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
            } catch (IOException e) {
                // a read-only cache is fine as long as it already holds verified copies
                List<String> bad = verify(dir, names, pinnedSha256, readRecord(dir));
                if (bad.isEmpty()) {
                    return paths(dir, names);
                }
                throw unwritable(dir, e);
            }
            try (lockChannel; FileLock held = lockChannel.lock()) {
                assert held.isValid();
                Map<String, Entry> record = readRecord(dir);
                List<String> bad = verify(dir, names, pinnedSha256, record);
                for (String name : bad) {
                    try {
                        record.put(name, extractOne(loader, resourceDir + name, dir, name, pinnedSha256.get(name)));
                    } catch (IOException e) {
                        throw new NativeLibraryException("extracting " + resourceDir + name + " into " + dir
                                + " failed (" + e + "); set -D" + CACHE_PROPERTY + " or $" + CACHE_ENV
                                + " to a writable folder with space", e);
                    }
                }
                if (!bad.isEmpty()) {
                    writeRecord(dir, record);
                }
                return paths(dir, names);
            } catch (IOException e) {
                throw unwritable(dir, e);
            }
        }
    }

    record Entry(String sha256, long size) {
    }

    private static List<Path> paths(Path dir, List<String> names) {
        List<Path> out = new ArrayList<>(names.size());
        for (String n : names) {
            out.add(dir.resolve(n));
        }
        return out;
    }

    private static NativeLibraryException unwritable(Path dir, Exception e) {
        return new NativeLibraryException("native cache folder " + dir + " is not writable (" + e + "); set -D"
                + CACHE_PROPERTY + " or $" + CACHE_ENV + " to a writable folder", e);
    }

    /** Names whose cached copy is missing or does not match the record (and the pin); logs why for each. */
    static List<String> verify(Path dir, List<String> names, Map<String, String> pinned, Map<String, Entry> record) {
        List<String> bad = new ArrayList<>();
        for (String name : names) {
            Path f = dir.resolve(name);
            Entry e = record.get(name);
            String why = null;
            if (!Files.isRegularFile(f)) {
                bad.add(name); // first extraction: nothing to report
                continue;
            }
            if (e == null) {
                why = "no digest recorded";
            } else if (pinned.containsKey(name) && !pinned.get(name).equals(e.sha256())) {
                why = "recorded digest " + e.sha256() + " is not the pinned " + pinned.get(name);
            } else {
                try {
                    long size = Files.size(f);
                    if (size != e.size()) {
                        why = "size " + size + ", recorded " + e.size();
                    } else {
                        String sha = sha256(f);
                        if (!sha.equals(e.sha256())) {
                            why = "SHA-256 " + sha + ", recorded " + e.sha256();
                        }
                    }
                } catch (IOException ex) {
                    why = "unreadable (" + ex.getMessage() + ")";
                }
            }
            if (why != null) {
                LOG.log(System.Logger.Level.WARNING, "cached " + f + " does not verify (" + why + "); extracting it "
                        + "again");
                bad.add(name);
            }
        }
        return bad;
    }

    /** Copies one jar entry to {@code dir/name} through a temporary file, checking its size and digest. */
    private static Entry extractOne(ClassLoader loader, String resource, Path dir, String name, String pinnedSha)
            throws IOException {
        URL url = loader.getResource(resource);
        if (url == null) {
            throw new NativeLibraryException("jar entry " + resource + " not found on the class path (add "
                    + "org.bytedeco:dnnl:" + DNNL_PINNED_VERSION + ":linux-x86_64, or point -D" + DNNL_PATH_PROPERTY
                    + " at a libdnnl.so.3)");
        }
        URLConnection conn = url.openConnection();
        conn.setUseCaches(false); // a cached JarFile would stay open (and stale) after a test replaces the jar
        long expectedSize = conn instanceof JarURLConnection jc ? jc.getJarEntry().getSize() : conn.getContentLengthLong();
        Path tmp = Files.createTempFile(dir, name + ".", ".tmp");
        boolean moved = false;
        try {
            MessageDigest md = newSha256();
            long size = 0;
            try (InputStream in = conn.getInputStream();
                 FileChannel out = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                byte[] buf = new byte[1 << 20];
                for (int r; (r = in.read(buf)) > 0; ) {
                    md.update(buf, 0, r);
                    ByteBuffer bb = ByteBuffer.wrap(buf, 0, r);
                    while (bb.hasRemaining()) {
                        out.write(bb);
                    }
                    size += r;
                }
                out.force(true);
            }
            if (expectedSize >= 0 && size != expectedSize) {
                throw new NativeLibraryException(url + ": read " + size + " bytes, the jar says " + expectedSize
                        + " (truncated or damaged jar)");
            }
            String sha = HexFormat.of().formatHex(md.digest());
            if (pinnedSha != null && !pinnedSha.equals(sha)) {
                throw new NativeLibraryException(url + ": SHA-256 " + sha + ", expected " + pinnedSha + " for "
                        + "org.bytedeco:dnnl:" + DNNL_PINNED_VERSION + " (a damaged or different jar)");
            }
            Files.move(tmp, dir.resolve(name), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            moved = true;
            LOG.log(System.Logger.Level.INFO, "extracted " + resource + " to " + dir.resolve(name) + " (" + size
                    + " bytes, SHA-256 " + sha + ")");
            return new Entry(sha, size);
        } finally {
            if (!moved) {
                Files.deleteIfExists(tmp);
            }
        }
    }

    static Map<String, Entry> readRecord(Path dir) {
        Map<String, Entry> out = new HashMap<>();
        List<String> lines;
        try {
            lines = Files.readAllLines(dir.resolve(RECORD), StandardCharsets.UTF_8);
        } catch (NoSuchFileException | AccessDeniedException e) {
            return out;
        } catch (IOException e) {
            LOG.log(System.Logger.Level.WARNING, dir.resolve(RECORD) + ": unreadable (" + e.getMessage() + ")");
            return out;
        }
        for (String line : lines) {
            String[] f = line.trim().split(" ", 3);
            if (f.length == 3 && f[0].matches("[0-9a-f]{64}") && f[1].matches("[0-9]{1,19}")) {
                out.put(f[2], new Entry(f[0], Long.parseLong(f[1])));
            }
        }
        return out;
    }

    private static void writeRecord(Path dir, Map<String, Entry> record) throws IOException {
        StringBuilder sb = new StringBuilder();
        record.entrySet().stream().sorted(Map.Entry.comparingByKey()).forEach(e ->
                sb.append(e.getValue().sha256()).append(' ').append(e.getValue().size()).append(' ')
                        .append(e.getKey()).append('\n'));
        Path tmp = Files.createTempFile(dir, RECORD + ".", ".tmp");
        try {
            Files.writeString(tmp, sb, StandardCharsets.UTF_8);
            Files.move(tmp, dir.resolve(RECORD), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    static String sha256(Path f) throws IOException {
        MessageDigest md = newSha256();
        try (InputStream in = Files.newInputStream(f)) {
            byte[] buf = new byte[1 << 20];
            for (int r; (r = in.read(buf)) > 0; ) {
                md.update(buf, 0, r);
            }
        }
        return HexFormat.of().formatHex(md.digest());
    }

    private static MessageDigest newSha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new NativeLibraryException("SHA-256 is missing from this JDK's security providers; it is needed to "
                    + "verify extracted native libraries", e);
        }
    }
}
