package org.moe4j.io.corpus;

/**
 * The deterministic train/validation split, by document: a document goes to validation when the hash of its id,
 * as a number in [0, 1), is below the validation fraction. It depends on nothing but the id and the fraction, so
 * the same document lands in the same split whatever the order, the other sources or the machine; raising the
 * fraction only moves documents from train to validation.
 */
public enum Split {
    TRAIN("train"), VAL("val");

    /** Any fixed constant, different from the cap's; changing it reshuffles every split. */
    private static final long SALT = 0x7261696E2F76616CL;

    private final String fileStem;

    Split(String fileStem) {
        this.fileStem = fileStem;
    }

    /** {@code train} or {@code val}: the shard is {@code <stem>.shard}, the manifest key is the stem. */
    public String stem() {
        return fileStem;
    }

    /** Where the document's id hashes to in [0, 1): it is in validation when this is below the fraction. */
    static double position(String documentId) {
        return Hashing.unit(Hashing.hash(documentId, SALT));
    }

    /** The split of the document with id {@code documentId}. */
    public static Split of(String documentId, double valFraction) {
        if (!(valFraction >= 0 && valFraction <= 1)) {
            throw new CorpusException("validation fraction " + valFraction + " outside [0, 1]");
        }
        return Hashing.unit(Hashing.hash(documentId, SALT)) < valFraction ? VAL : TRAIN;
    }
}
