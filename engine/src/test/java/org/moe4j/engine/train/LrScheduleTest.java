package org.moe4j.engine.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;
import org.moe4j.engine.config.ConfigException;

/** The schedule's values and its errors, which keep field, value and rule apart for the CLI to reword. */
class LrScheduleTest {
    @Test
    void warmUpThenCosineToTheFloor() {
        LrSchedule s = new LrSchedule(1.0, 4, 14, 0.1);
        assertEquals(0.25, s.at(0), 1e-15);
        assertEquals(1.0, s.at(3), 1e-15);
        assertEquals(1.0, s.at(4), 1e-15);
        assertEquals(0.1 + 0.9 * 0.5, s.at(9), 1e-12);
        assertEquals(0.1, s.at(14), 1e-15);
        assertEquals(0.1, s.at(100), 1e-15);
    }

    @Test
    void badValuesNameFieldValueAndRule() {
        ConfigException e = assertThrows(ConfigException.class, () -> new LrSchedule(1e-3, 0, -1, 0.1));
        assertEquals("LrSchedule.total = -1: the schedule needs at least 1 step", e.getMessage());
        assertEquals("LrSchedule.total", e.field());
        assertEquals("-1", e.value());
        assertEquals("the schedule needs at least 1 step", e.rule());
        e = assertThrows(ConfigException.class, () -> new LrSchedule(Double.NaN, 0, 1, 0.1));
        assertEquals("LrSchedule.peak = NaN: the peak learning rate must be finite and > 0", e.getMessage());
        e = assertThrows(ConfigException.class, () -> new LrSchedule(1, 0, 1, 1.5));
        assertEquals("LrSchedule.minRatio", e.field());
    }
}
