package org.moe4j.engine.train.distributed;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.moe4j.Moe4jException;

/** An owner's receive buffer: kept while it fits, grown to the rows needed plus a quarter, never past the cap. */
class RowBufferTest {
    @Test
    void growsToWhatIsNeededPlusAQuarterUpToTheCap() {
        try (RowBuffer b = new RowBuffer(3, 10, 100)) {
            assertEquals(10, b.rows());
            assertEquals(10 * 3 * 4, b.bytes());
            var first = b.fit(10);
            assertSame(first, b.fit(7), "a count that fits keeps the buffer");
            b.fit(40);
            assertEquals(50, b.rows(), "40 rows + a quarter");
            assertTrue(b.segment().byteSize() >= 40 * 3 * 4);
            b.fit(90);
            assertEquals(100, b.rows(), "capped at the most rows that can arrive");
            Moe4jException e = assertThrows(Moe4jException.class, () -> b.fit(101));
            assertTrue(e.getMessage().contains("101 rows, at most 100"), e.getMessage());
        }
        try (RowBuffer empty = new RowBuffer(2, 0, 5)) {
            assertEquals(0, empty.rows());
            assertEquals(5 * 2 * 4, empty.fit(5).byteSize(), "grown from none: 5 rows (+ a quarter, rounded down, capped at 5)");
            assertEquals(5, empty.rows());
        }
    }
}
