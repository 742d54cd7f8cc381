package org.moe4j.io.hf;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.moe4j.Moe4jException;

/**
 * One architecture's tensor names as a table of (Hugging Face pattern, canonical pattern) rows, read both ways.
 * Patterns hold the placeholders {@code {l}} (layer) and {@code {j}} (expert), which match a decimal index without
 * leading zeros, so every mapped name maps back to itself. Checked when built: both sides of a row hold the same
 * placeholders, and no pattern appears twice on either side.
 */
final class NameTable {
    private static final Pattern PLACEHOLDER = Pattern.compile("\\{([lj])\\}");
    private static final String INDEX = "(0|[1-9][0-9]*)";

    /** One side of a row: the pattern, its regex, and the placeholders in the order the regex captures them. */
    private record Side(String pattern, Pattern regex, List<String> placeholders) {
        static Side of(String pattern) {
            StringBuilder re = new StringBuilder();
            List<String> names = new ArrayList<>();
            Matcher m = PLACEHOLDER.matcher(pattern);
            int at = 0;
            while (m.find()) {
                re.append(Pattern.quote(pattern.substring(at, m.start()))).append(INDEX);
                names.add(m.group(1));
                at = m.end();
            }
            re.append(Pattern.quote(pattern.substring(at)));
            return new Side(pattern, Pattern.compile(re.toString()), names);
        }

        /** This side's pattern with the placeholders taken from a match of the other side. */
        String fill(Side from, Matcher match) {
            String out = pattern;
            for (int g = 0; g < from.placeholders.size(); g++) {
                out = out.replace("{" + from.placeholders.get(g) + "}", match.group(g + 1));
            }
            return out;
        }
    }

    private record Row(Side hf, Side canonical) {
    }

    private final String architecture;
    private final List<Row> rows = new ArrayList<>();

    /** {@code hfToCanonical}: HF pattern, canonical pattern, HF pattern, canonical pattern, ... */
    NameTable(String architecture, String... hfToCanonical) {
        this.architecture = architecture;
        if (hfToCanonical.length % 2 != 0) {
            throw new Moe4jException(architecture + ": name table has " + hfToCanonical.length
                    + " patterns; it needs (Hugging Face, canonical) pairs");
        }
        Set<String> hfSeen = new HashSet<>();
        Set<String> canonicalSeen = new HashSet<>();
        for (int i = 0; i < hfToCanonical.length; i += 2) {
            Side hf = Side.of(hfToCanonical[i]);
            Side canonical = Side.of(hfToCanonical[i + 1]);
            if (!new HashSet<>(hf.placeholders).equals(new HashSet<>(canonical.placeholders))
                    || hf.placeholders.size() != new HashSet<>(hf.placeholders).size()) {
                throw new Moe4jException(architecture + ": row '" + hf.pattern + "' -> '"
                        + canonical.pattern + "' does not use the same placeholders once each on both sides");
            }
            if (!hfSeen.add(hf.pattern) || !canonicalSeen.add(canonical.pattern)) {
                throw new Moe4jException(architecture + ": row '" + hf.pattern + "' -> '"
                        + canonical.pattern + "' repeats a pattern");
            }
            rows.add(new Row(hf, canonical));
        }
    }

    /** The canonical name, or null when no row matches. */
    String toCanonical(String hfName) {
        for (Row r : rows) {
            Matcher m = r.hf.regex.matcher(hfName);
            if (m.matches()) {
                return r.canonical.fill(r.hf, m);
            }
        }
        return null;
    }

    /** The Hugging Face name, or null when no row matches. */
    String fromCanonical(String canonicalName) {
        for (Row r : rows) {
            Matcher m = r.canonical.regex.matcher(canonicalName);
            if (m.matches()) {
                return r.hf.fill(r.canonical, m);
            }
        }
        return null;
    }

    /** The canonical patterns this architecture has, in table order. */
    List<String> canonicalPatterns() {
        return rows.stream().map(r -> r.canonical.pattern).toList();
    }

    /** The Hugging Face patterns, in table order. */
    List<String> hfPatterns() {
        return rows.stream().map(r -> r.hf.pattern).toList();
    }

    String architecture() {
        return architecture;
    }
}
