package org.moe4j.engine.train;

import org.moe4j.engine.config.ConfigException;

/**
 * Linear warm-up from 0 to {@code peak} over {@code warmup} steps, then cosine decay to {@code peak·minRatio}.
 * The CLI's {@code --lr}, {@code --warmup} and {@code --steps} are {@code peak}, {@code warmup} and {@code total};
 * a {@link ConfigException} here names the field, which the CLI rewords as the option.
 */
public record LrSchedule(double peak, int warmup, int total, double minRatio) {
    public LrSchedule {
        if (!(peak > 0) || Double.isInfinite(peak))
            throw ConfigException.of("LrSchedule.peak", peak, "the peak learning rate must be finite and > 0");
        if (warmup < 0) throw ConfigException.of("LrSchedule.warmup", warmup, "warm-up steps must be >= 0");
        if (total < 1) throw ConfigException.of("LrSchedule.total", total, "the schedule needs at least 1 step");
        if (!(minRatio >= 0 && minRatio <= 1))
            throw ConfigException.of("LrSchedule.minRatio", minRatio, "the final fraction of the peak must be in [0, 1]");
    }

    /** The learning rate of step s (0-based). */
    public double at(long s) {
        if (s < warmup) return peak * (s + 1) / warmup;
        if (total <= warmup) return peak;
        double progress = Math.min(1.0, (double) (s - warmup) / Math.max(1, total - warmup));
        double cos = 0.5 * (1 + StrictMath.cos(Math.PI * progress));
        return peak * (minRatio + (1 - minRatio) * cos);
    }
}
