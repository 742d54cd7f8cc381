package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.Moe4jException;
import org.moe4j.io.hf.CanonicalNames;
import org.moe4j.io.hf.HfArchitecture;

/** Name tables read both ways: every name round-trips, and near-miss names are either exact or refused by name. */
class HfNameProperties {
    @Property(tries = 500)
    void everyNameRoundTrips(@ForAll HfArchitecture arch, @ForAll @IntRange(min = 0, max = 20) int row,
            @ForAll @IntRange(min = 0, max = 1000) int layer, @ForAll @IntRange(min = 0, max = 1000) int expert) {
        int r = row % arch.hfPatterns().size();
        String hf = CanonicalNames.of(arch.hfPatterns().get(r), layer, expert);
        String canonical = CanonicalNames.of(arch.canonicalPatterns().get(r), layer, expert);
        assertEquals(canonical, arch.toCanonical(hf));
        assertEquals(hf, arch.fromCanonical(canonical));
    }

    @Provide
    Arbitrary<String> edit() {
        return Arbitraries.strings().withChars("0123.x_w").ofMinLength(0).ofMaxLength(3);
    }

    @Property(tries = 1000)
    void nearMissNamesAreExactOrRefused(@ForAll HfArchitecture arch, @ForAll @IntRange(min = 0, max = 20) int row,
            @ForAll @IntRange(min = 0, max = 99) int layer, @ForAll @IntRange(min = 0, max = 60) int cut,
            @ForAll @IntRange(min = 0, max = 3) int drop, @ForAll("edit") String insert) {
        String name = CanonicalNames.of(arch.hfPatterns().get(row % arch.hfPatterns().size()), layer, layer + 1);
        int at = Math.min(cut, name.length());
        String mutated = name.substring(0, at) + insert + name.substring(Math.min(name.length(), at + drop));
        try {
            String canonical = arch.toCanonical(mutated);
            assertEquals(mutated, arch.fromCanonical(canonical), "a mapped name maps back to itself");
        } catch (Moe4jException e) {
            assertTrue(e.getMessage().contains("'" + mutated + "'"), e.getMessage());
        }
    }
}
