package org.moe4j.io.corpus;

import java.util.Objects;

/**
 * One document of a corpus.
 *
 * @param id     unique within the corpus and stable across runs (the train/validation split hashes it), e.g.
 *               {@code brown:ca01} or {@code jdk:java.base/java/lang/String.java}
 * @param domain the group the document belongs to (a Brown genre, a JDK module group, ham or spam, ...)
 * @param text   the document's text
 */
public record Document(String id, String domain, String text) {
    public Document {
        Objects.requireNonNull(id, "id");
        Objects.requireNonNull(domain, "domain");
        Objects.requireNonNull(text, "text");
        if (domain.isEmpty()) {
            throw new CorpusException("document '" + id + "' has an empty domain name");
        }
    }
}
