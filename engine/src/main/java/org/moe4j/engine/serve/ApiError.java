package org.moe4j.engine.serve;

import org.moe4j.Moe4jException;

/**
 * A request the server refuses, answered as an OpenAI-style error body
 * {@code {"error": {"message", "type", "param", "code"}}} with HTTP {@code status}.
 */
public final class ApiError extends Moe4jException {
    private static final long serialVersionUID = 1L;

    private final int status;
    private final String type, param, code;

    public ApiError(int status, String message, String type, String param, String code) {
        super(message);
        this.status = status;
        this.type = type;
        this.param = param;
        this.code = code;
    }

    /** 400 invalid_request_error about one field of the body. */
    public static ApiError invalid(String param, String message) {
        return new ApiError(400, message, "invalid_request_error", param, "invalid_value");
    }

    public int status() {
        return status;
    }

    public String type() {
        return type;
    }

    public String param() {
        return param;
    }

    public String code() {
        return code;
    }
}
