package org.moe4j.engine.config;

import org.moe4j.Moe4jException;

/** A configuration value breaks a rule; the message names the field, the value and the rule. */
public final class ConfigException extends Moe4jException {
    private static final long serialVersionUID = 1L;

    public ConfigException(String message) {
        super(message);
    }

    /** "Owner.field = value: rule". */
    static ConfigException of(String field, Object value, String rule) {
        return new ConfigException(field + " = " + value + ": " + rule);
    }
}
