package org.moe4j.io.corpus;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;

/**
 * The Java sources of a JDK, {@code $JAVA_HOME/lib/src.zip}: one document per {@code .java} file (the zip holds
 * {@code MODULE/package/path/File.java}); the domain is the module's group from {@link #MODULE_GROUPS}. Nothing is
 * downloaded: every JDK build that ships sources has this file.
 */
public final class JdkSources implements DocumentSource {
    /**
     * Module name to domain, first match wins; a pattern ending in {@code *} matches that prefix. Modules that
     * match nothing are {@code other}.
     */
    public static final List<Map.Entry<String, String>> MODULE_GROUPS = List.of(
            Map.entry("java.base", "base"),
            Map.entry("java.desktop", "desktop"),
            Map.entry("java.datatransfer", "desktop"),
            Map.entry("jdk.accessibility", "desktop"),
            Map.entry("jdk.unsupported.desktop", "desktop"),
            Map.entry("java.xml*", "xml"),
            Map.entry("jdk.xml.*", "xml"),
            Map.entry("jdk.compiler", "compiler"),
            Map.entry("java.compiler", "compiler"),
            Map.entry("java.net.http", "net"),
            Map.entry("jdk.httpserver", "net"));
    public static final String OTHER = "other";

    private final Path srcZip;
    private final int maxPerDomain;

    /**
     * @param maxPerDomain at most this many files per domain, chosen as {@link DocumentSources#capPerDomain}
     *                     chooses them (without decompressing the others); {@code <= 0} for all
     */
    public JdkSources(Path srcZip, int maxPerDomain) {
        this.srcZip = srcZip;
        this.maxPerDomain = maxPerDomain;
    }

    /** The sources of the JDK this JVM runs on. */
    public static JdkSources ofRunningJdk(int maxPerDomain) {
        Path zip = Path.of(System.getProperty("java.home"), "lib", "src.zip");
        if (!Files.isRegularFile(zip)) {
            throw new CorpusException(zip + " does not exist: this JDK was installed without its sources. Install a "
                    + "JDK that ships lib/src.zip (Temurin does; on Debian/Ubuntu add openjdk-25-source) or use "
                    + "--source folder:PATH");
        }
        return new JdkSources(zip, maxPerDomain);
    }

    /** The domain of a module, from {@link #MODULE_GROUPS}. */
    public static String domainOf(String module) {
        for (Map.Entry<String, String> g : MODULE_GROUPS) {
            String p = g.getKey();
            if (p.endsWith("*") ? module.startsWith(p.substring(0, p.length() - 1)) : module.equals(p)) {
                return g.getValue();
            }
        }
        return OTHER;
    }

    @Override
    public String name() {
        return "jdk";
    }

    @Override
    public String reference() {
        return "jdk-src:" + System.getProperty("java.vm.vendor", "?") + " " + Runtime.version() + " " + srcZip
                + (maxPerDomain > 0 ? " (at most " + maxPerDomain + " files per domain)" : "");
    }

    /** Counts the chosen files from the zip's central directory (no decompression). */
    @Override
    public long documentCountHint() {
        ZipFile zip = open();
        try (zip) {
            return chosen(zip).size();
        } catch (IOException e) {
            return -1; // closing a zip that was only listed failed: the count is still only a hint, and documents() reports errors
        }
    }

    @Override
    public Stream<Document> documents() {
        ZipFile zip = open();
        try {
            return chosen(zip).stream().map(e -> {
                try (InputStream in = zip.getInputStream(e)) {
                    return new Document(id(e), domainOf(module(e)), new String(in.readAllBytes(), StandardCharsets.UTF_8));
                } catch (IOException ex) {
                    throw new CorpusException(srcZip + ": cannot read '" + e.getName() + "': " + ex, ex);
                }
            }).onClose(() -> {
                try {
                    zip.close();
                } catch (IOException ex) {
                    throw new CorpusException(srcZip + ": cannot close: " + ex, ex);
                }
            });
        } catch (RuntimeException e) {
            try {
                zip.close();
            } catch (IOException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
    }

    private ZipFile open() {
        try {
            return new ZipFile(srcZip.toFile(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new CorpusException(srcZip + ": cannot open the JDK source zip: " + e, e);
        }
    }

    /** The .java entries under the cap, in zip order. */
    private List<ZipEntry> chosen(ZipFile zip) {
        List<ZipEntry> files = zip.stream()
                .filter(e -> !e.isDirectory() && e.getName().endsWith(".java") && e.getName().indexOf('/') > 0)
                .map(e -> (ZipEntry) e)
                .toList();
        List<Document> stubs = files.stream().map(e -> new Document(id(e), domainOf(module(e)), "")).toList();
        boolean[] keep = DocumentSources.selectPerDomain(stubs, maxPerDomain);
        List<ZipEntry> chosen = new ArrayList<>();
        for (int i = 0; i < keep.length; i++) {
            if (keep[i]) {
                chosen.add(files.get(i));
            }
        }
        return chosen;
    }

    private static String module(ZipEntry e) {
        return e.getName().substring(0, e.getName().indexOf('/'));
    }

    private static String id(ZipEntry e) {
        return "jdk:" + e.getName();
    }
}
