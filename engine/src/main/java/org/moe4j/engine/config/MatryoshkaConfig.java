package org.moe4j.engine.config;

/** Matryoshka k: per layer per forward pass, k' in [kMin, kMax], uniform or P(k) ∝ k^(1/tau) (paper: 1..6, tau 2). */
public record MatryoshkaConfig(MatryoshkaMode mode, int kMin, int kMax, double tau) {
    public MatryoshkaConfig {
        if (mode == null) throw ConfigException.of("MatryoshkaConfig.mode", null, "must be OFF, UNIFORM or POWER");
        if (kMin < 1) throw ConfigException.of("MatryoshkaConfig.kMin", kMin, "must be >= 1");
        if (kMax < kMin) throw ConfigException.of("MatryoshkaConfig.kMax", kMax, "must be >= kMin = " + kMin);
        if (!(tau > 0) || Double.isInfinite(tau))
            throw ConfigException.of("MatryoshkaConfig.tau", tau, "must be finite and > 0");
    }

    public static MatryoshkaConfig off() {
        return new MatryoshkaConfig(MatryoshkaMode.OFF, 1, 1, 2.0);
    }
}
