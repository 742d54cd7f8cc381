package org.moe4j.engine.config;

/** How each layer's routed k' is chosen per forward pass: fixed, uniform on [kMin, kMax], or P(k) ∝ k^(1/τ). */
public enum MatryoshkaMode { OFF, UNIFORM, POWER }
