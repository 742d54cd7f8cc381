package org.moe4j.engine.routing;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.moe4j.Moe4jException;

class ExpertSetTest {
    @Test
    void membersAcrossWordBoundaries() {
        ExpertSet s = ExpertSet.of(130, 0, 63, 64, 129);
        assertEquals(4, s.size());
        assertEquals("{0,63,64,129}/130", s.toString());
        assertEquals(63, s.nextMember(1));
        assertEquals(64, s.nextMember(64));
        assertEquals(129, s.nextMember(65));
        assertEquals(-1, s.nextMember(130));
        assertEquals(2, s.sizeInRange(1, 100));
        s.remove(63);
        assertFalse(s.contains(63));
        assertTrue(ExpertSet.of(130, 64).isSubsetOf(s));
        assertEquals(130, ExpertSet.all(130).size());
        assertEquals(ExpertSet.of(130, 0, 64), new ExpertSet(130).copyFrom(s).retainAll(ExpertSet.of(130, 0, 64, 1)));
        assertEquals(ExpertSet.of(130, 0, 1, 64, 129), s.addAll(ExpertSet.of(130, 1)));
        assertTrue(s.clear().isEmpty());
    }

    @Test
    void outOfRangeIsAnError() {
        Moe4jException e = assertThrows(Moe4jException.class, () -> new ExpertSet(8).add(8));
        assertEquals("ExpertSet: expert 8 is outside [0, 8)", e.getMessage());
        assertThrows(Moe4jException.class, () -> new ExpertSet(8).retainAll(new ExpertSet(9)));
    }
}
