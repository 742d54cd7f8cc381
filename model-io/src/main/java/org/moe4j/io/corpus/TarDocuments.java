package org.moe4j.io.corpus;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Spliterator;
import java.util.Spliterators;
import java.util.function.Consumer;
import java.util.function.Function;
import java.util.stream.Stream;
import java.util.stream.StreamSupport;

/** The documents of a {@code .tgz}, in archive order: one per entry that {@code parse} does not map to null. */
final class TarDocuments {
    private TarDocuments() {
    }

    static Stream<Document> stream(Path tarball, Function<TarReader.Entry, Document> parse) {
        TarReader reader;
        try {
            reader = new TarReader(tarball, Files.newInputStream(tarball));
        } catch (IOException e) {
            throw new CorpusException(tarball + ": cannot read the archive: " + e, e);
        }
        Spliterator<Document> split = new Spliterators.AbstractSpliterator<>(Long.MAX_VALUE,
                Spliterator.ORDERED | Spliterator.NONNULL) {
            @Override
            public boolean tryAdvance(Consumer<? super Document> action) {
                try {
                    for (TarReader.Entry e; (e = reader.next()) != null; ) {
                        Document d = parse.apply(e);
                        if (d != null) {
                            action.accept(d);
                            return true;
                        }
                    }
                    return false;
                } catch (IOException e) {
                    throw new CorpusException(tarball + ": cannot read the archive: " + e, e);
                }
            }
        };
        return StreamSupport.stream(split, false).onClose(() -> {
            try {
                reader.close();
            } catch (IOException e) {
                throw new CorpusException(tarball + ": cannot close the archive: " + e, e);
            }
        });
    }
}
