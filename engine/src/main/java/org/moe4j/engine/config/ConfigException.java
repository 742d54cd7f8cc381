package org.moe4j.engine.config;

import org.moe4j.Moe4jException;

/**
 * A configuration value breaks a rule; the message names the field, the value and the rule. When built from those
 * three ({@link #of}), they stay readable one by one, so a caller that knows where the value came from (the CLI's
 * {@code --steps}, a key of a config file) can say it in the user's words instead of the field's.
 */
public final class ConfigException extends Moe4jException {
    private static final long serialVersionUID = 1L;

    private final String field;
    private final String value;
    private final String rule;

    public ConfigException(String message) {
        super(message);
        this.field = null;
        this.value = null;
        this.rule = null;
    }

    private ConfigException(String field, Object value, String rule) {
        super(field + " = " + value + ": " + rule);
        this.field = field;
        this.value = String.valueOf(value);
        this.rule = rule;
    }

    /** "Owner.field = value: rule". */
    public static ConfigException of(String field, Object value, String rule) {
        return new ConfigException(field, value, rule);
    }

    /** The field as {@code Owner.field} ({@code LrSchedule.total}, {@code ModelConfig.routing.pool.poolMin}); null if unknown. */
    public String field() {
        return field;
    }

    /** The offending value as text; null when {@link #field()} is. */
    public String value() {
        return value;
    }

    /** What the value must be ("must be >= 1"); null when {@link #field()} is. */
    public String rule() {
        return rule;
    }
}
