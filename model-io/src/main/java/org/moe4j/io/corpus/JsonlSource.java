package org.moe4j.io.corpus;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Spliterator;
import java.util.Spliterators;
import java.util.function.Consumer;
import java.util.stream.Stream;
import java.util.stream.StreamSupport;

/**
 * JSON Lines: one JSON object per line with a string {@code text}, an optional string {@code domain} (default: the
 * file name without its extension) and an optional string {@code id} (default: {@code FILE:LINE}). Blank lines are
 * skipped. A line that breaks a rule fails with the file and the line number.
 */
public final class JsonlSource implements DocumentSource {
    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path file;

    public JsonlSource(Path file) {
        this.file = file;
    }

    @Override
    public String name() {
        return "jsonl:" + file;
    }

    @Override
    public String reference() {
        return "jsonl:" + file.toAbsolutePath().normalize();
    }

    @Override
    public Stream<Document> documents() {
        BufferedReader reader;
        try {
            reader = Files.newBufferedReader(file, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new CorpusException(file + ": cannot read: " + e, e);
        }
        String fileName = file.getFileName().toString();
        String defaultDomain = fileName.contains(".") ? fileName.substring(0, fileName.indexOf('.')) : fileName;
        Spliterator<Document> split = new Spliterators.AbstractSpliterator<>(Long.MAX_VALUE,
                Spliterator.ORDERED | Spliterator.NONNULL) {
            private long lineNumber;

            @Override
            public boolean tryAdvance(Consumer<? super Document> action) {
                try {
                    for (String line; (line = reader.readLine()) != null; ) {
                        lineNumber++;
                        if (!line.isBlank()) {
                            action.accept(parse(line, lineNumber, fileName, defaultDomain));
                            return true;
                        }
                    }
                    return false;
                } catch (IOException e) {
                    throw new CorpusException(file + ":" + (lineNumber + 1) + ": cannot read: " + e, e);
                }
            }
        };
        return StreamSupport.stream(split, false).onClose(() -> {
            try {
                reader.close();
            } catch (IOException e) {
                throw new CorpusException(file + ": cannot close: " + e, e);
            }
        });
    }

    private Document parse(String line, long lineNumber, String fileName, String defaultDomain) {
        String where = file + ":" + lineNumber;
        JsonNode node;
        try {
            node = JSON.readTree(line);
        } catch (JsonProcessingException e) {
            throw new CorpusException(where + ": not valid JSON: " + e.getOriginalMessage(), e);
        }
        if (node == null || !node.isObject()) {
            throw new CorpusException(where + ": expected a JSON object with a string field 'text', found "
                    + (node == null ? "nothing" : node.getNodeType()));
        }
        JsonNode text = node.get("text");
        if (text == null || !text.isTextual()) {
            throw new CorpusException(where + ": expected a string field 'text'"
                    + (text == null ? ", found none" : ", found " + text.getNodeType()));
        }
        String domain = optionalString(node, "domain", where, defaultDomain);
        if (domain.isEmpty()) {
            throw new CorpusException(where + ": field 'domain' is empty");
        }
        String id = optionalString(node, "id", where, "jsonl:" + fileName + ":" + lineNumber);
        return new Document(id, domain, text.textValue());
    }

    private static String optionalString(JsonNode node, String field, String where, String otherwise) {
        JsonNode v = node.get(field);
        if (v == null || v.isNull()) {
            return otherwise;
        }
        if (!v.isTextual()) {
            throw new CorpusException(where + ": field '" + field + "' must be a string, found " + v.getNodeType());
        }
        return v.textValue();
    }
}
