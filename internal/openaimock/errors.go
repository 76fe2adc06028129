package openaimock

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// apiError is OpenAI's error body. Param and Code are always present, null
// when unknown, as the real API sends them.
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
