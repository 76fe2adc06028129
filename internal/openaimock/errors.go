package openaimock

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// apiError is OpenAI's error body (the other APIs' follow below). Param
// and Code are always present, null when unknown, as the real API sends
// them.
type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// errorKinds gives the type and code OpenAI uses for a status, so SDKs and
// tokengate's fault handling see what they would see in production.
var errorKinds = map[int]struct{ typ, code string }{
	http.StatusBadRequest:            {"invalid_request_error", ""},
	http.StatusUnauthorized:          {"invalid_request_error", "invalid_api_key"},
	http.StatusForbidden:             {"permission_error", ""},
	http.StatusNotFound:              {"invalid_request_error", ""},
	http.StatusRequestEntityTooLarge: {"invalid_request_error", ""},
	http.StatusTooManyRequests:       {"requests", "rate_limit_exceeded"},
}

func writeError(w http.ResponseWriter, status int, msg string) {
	var e apiError
	e.Error.Message = msg
	k, ok := errorKinds[status]
	switch {
	case ok:
		e.Error.Type = k.typ
		if k.code != "" {
			e.Error.Code = &k.code
		}
	case status >= 500:
		e.Error.Type = "server_error"
	default:
		e.Error.Type = "invalid_request_error"
	}
	writeJSON(w, status, e)
}

// badRequest reports a body the mock cannot use, naming what was wrong.
func badRequest(w http.ResponseWriter, format string, args ...any) {
	writeError(w, http.StatusBadRequest, fmt.Sprintf(format, args...))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the mock's own types are marshalled; failing here is a bug.
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// anthropicErrorBody is Anthropic's error, as an answer's body and as a
// stream's error event.
type anthropicErrorBody struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// newAnthropicError is Anthropic's error of type typ.
func newAnthropicError(typ, msg string) anthropicErrorBody {
	e := anthropicErrorBody{Type: "error"}
	e.Error.Type, e.Error.Message = typ, msg
	return e
}

// anthropicErrorTypes are the error types Anthropic answers a status with;
// other 4xx are invalid_request_error, other 5xx api_error.
var anthropicErrorTypes = map[int]string{
	http.StatusUnauthorized:          "authentication_error",
	http.StatusPaymentRequired:       "billing_error",
	http.StatusForbidden:             "permission_error",
	http.StatusNotFound:              "not_found_error",
	http.StatusRequestEntityTooLarge: "request_too_large",
	http.StatusTooManyRequests:       "rate_limit_error",
	http.StatusGatewayTimeout:        "timeout_error",
	529:                              "overloaded_error",
}

// anthropicError answers status with Anthropic's error (a failFunc).
func anthropicError(w http.ResponseWriter, status int, msg string) {
	typ := errorName(anthropicErrorTypes, status, "invalid_request_error", "api_error")
	writeJSON(w, status, newAnthropicError(typ, msg))
}

// errorName is the name an API gives status: its own, else that of the
// status's class, client for 4xx and server for 5xx.
func errorName(names map[int]string, status int, client, server string) string {
	if n, ok := names[status]; ok {
		return n
	}
	if status >= 500 {
		return server
	}
	return client
}

// geminiStatuses are the google.rpc status names Gemini answers a status
// with; other 4xx are INVALID_ARGUMENT, other 5xx INTERNAL.
var geminiStatuses = map[int]string{
	http.StatusUnauthorized:       "UNAUTHENTICATED",
	http.StatusForbidden:          "PERMISSION_DENIED",
	http.StatusNotFound:           "NOT_FOUND",
	http.StatusConflict:           "ABORTED",
	http.StatusTooManyRequests:    "RESOURCE_EXHAUSTED",
	499:                           "CANCELLED",
	http.StatusNotImplemented:     "UNIMPLEMENTED",
	http.StatusServiceUnavailable: "UNAVAILABLE",
	http.StatusGatewayTimeout:     "DEADLINE_EXCEEDED",
}

// geminiError answers status with Gemini's google.rpc error (a failFunc).
func geminiError(w http.ResponseWriter, status int, msg string) {
	var e struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
		} `json:"error"`
	}
	e.Error.Code, e.Error.Message = status, msg
	e.Error.Status = errorName(geminiStatuses, status, "INVALID_ARGUMENT", "INTERNAL")
	writeJSON(w, status, e)
}

// bedrockErrorTypes are the exceptions Bedrock answers a status with,
// named in the x-amzn-ErrorType header the AWS SDKs read; other 4xx are
// ValidationException, other 5xx InternalServerException.
var bedrockErrorTypes = map[int]string{
	http.StatusUnauthorized:        "UnrecognizedClientException",
	http.StatusForbidden:           "AccessDeniedException",
	http.StatusNotFound:            "ResourceNotFoundException",
	http.StatusRequestTimeout:      "ModelTimeoutException",
	http.StatusFailedDependency:    "ModelErrorException",
	http.StatusTooManyRequests:     "ThrottlingException",
	http.StatusServiceUnavailable:  "ServiceUnavailableException",
	http.StatusInternalServerError: "InternalServerException",
}

// bedrockMessage is the body of Bedrock's errors and of its streams'
// exception frames.
type bedrockMessage struct {
	Message string `json:"message"`
}

// bedrockError answers status as Bedrock does (a failFunc): the
// exception's name in x-amzn-ErrorType, the message in the body.
func bedrockError(w http.ResponseWriter, status int, msg string) {
	typ := errorName(bedrockErrorTypes, status, "ValidationException", "InternalServerException")
	w.Header().Set("X-Amzn-ErrorType", typ)
	writeJSON(w, status, bedrockMessage{Message: msg})
}
