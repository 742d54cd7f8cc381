package org.moe4j.engine.config;

/** EMO document pools: none (standard top-k) or one pool of experts per (document, layer). */
public enum PoolMode { NONE, EMO }
