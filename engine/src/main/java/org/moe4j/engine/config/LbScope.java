package org.moe4j.engine.config;

/** Load-balance scope: the whole micro-batch (EMO's point) or per sequence, averaged. */
public enum LbScope { GLOBAL, LOCAL }
