package llm

import (
	"encoding/json"
	"net/http"
)

// Refusal is why tokengate answers a request itself.
type Refusal int

// The refusals.
const (
	RateLimited     Refusal = iota // 429: the window is spent
	QuotaExceeded                  // 403: the period's quota is spent
	Unavailable                    // 503: the shared store is away (fail_closed)
	MissingKey                     // 401: no key where the policy reads it
	Unreadable                     // 400: a body the policy needs cannot be read
	Unpriced                       // 400: a cost limit cannot price the request's model
	RequestsLimited                // 429: a window of requests is spent (OpenAI's type "requests")
)

// Status is the refusal's HTTP status.
func (r Refusal) Status() int {
	return [...]int{http.StatusTooManyRequests, http.StatusForbidden, http.StatusServiceUnavailable,
		http.StatusUnauthorized, http.StatusBadRequest, http.StatusBadRequest, http.StatusTooManyRequests}[r]
}

// Each provider's names for the refusals: OpenAI's error type and code,
// Anthropic's error type, Gemini's status, Bedrock's exception.
var refusalNames = [...][7][2]string{
	OpenAI: {{"tokens", "rate_limit_exceeded"}, {"tokens", "quota_exceeded"}, {"server_error", "limiter_unavailable"},
		{"invalid_request_error", "missing_subscription_key"}, {"invalid_request_error", "unreadable_body"},
		{"invalid_request_error", "model_not_priced"}, {"requests", "rate_limit_exceeded"}},
	Anthropic: {{"rate_limit_error"}, {"permission_error"}, {"api_error"}, {"authentication_error"}, {"invalid_request_error"},
		{"invalid_request_error"}, {"rate_limit_error"}},
	Gemini: {{"RESOURCE_EXHAUSTED"}, {"PERMISSION_DENIED"}, {"UNAVAILABLE"}, {"UNAUTHENTICATED"}, {"INVALID_ARGUMENT"},
		{"INVALID_ARGUMENT"}, {"RESOURCE_EXHAUSTED"}},
	Bedrock: {{"ThrottlingException"}, {"AccessDeniedException"}, {"ServiceUnavailableException"},
		{"UnrecognizedClientException"}, {"ValidationException"}, {"ValidationException"}, {"ThrottlingException"}},
}

// ErrorBody is a refusal as the provider's own API sends its errors, so
// that the provider's SDK reads it as one (and retries a rate limit on its
// own): the JSON body, and the header that carries the error's type where
// the provider puts it there (Bedrock's x-amzn-errortype; "" otherwise).
func ErrorBody(p Provider, r Refusal, message string) (body []byte, typeHeader, typeValue string) {
	names := refusalNames[p][r]
	var v any
	switch p {
	case Anthropic:
		v = map[string]any{"type": "error", "error": map[string]string{"type": names[0], "message": message}}
	case Gemini:
		v = map[string]any{"error": map[string]any{"code": r.Status(), "message": message, "status": names[0]}}
	case Bedrock:
		v = map[string]string{"message": message}
		typeHeader, typeValue = "x-amzn-errortype", names[0]
	default:
		var e openAIError
		e.Error.Message, e.Error.Type, e.Error.Code = message, names[0], names[1]
		v = e
	}
	body, _ = json.Marshal(v)
	return body, typeHeader, typeValue
}

// openAIError is OpenAI's error envelope, its fields in OpenAI's order.
type openAIError struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

// RequestIDHeader is where a provider's answers carry their request id,
// which its SDK reports with an error.
func RequestIDHeader(p Provider) string {
	switch p {
	case Anthropic:
		return "request-id"
	case Bedrock:
		return "x-amzn-requestid"
	}
	return "x-request-id"
}
