package openaimock

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// paths has one path of every family, each with a body that succeeds.
var paths = []struct{ path, body string }{
	{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`},
	{"/openai/deployments/gpt-4o/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`},
	{"/openai/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`},
	{"/models/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`},
	{"/v1/completions", `{"prompt":"hi"}`},
	{"/openai/deployments/gpt-4o/completions", `{"prompt":"hi"}`},
	{"/v1/embeddings", `{"input":"hi"}`},
	{"/openai/deployments/emb/embeddings", `{"input":"hi"}`},
	{"/openai/v1/embeddings", `{"input":"hi"}`},
	{"/v1/responses", `{"input":"hi"}`},
	{"/openai/v1/responses", `{"input":"hi"}`},
	{"/openai/responses", `{"input":"hi"}`},
}

func TestForcedStatus(t *testing.T) {
	tests := []struct {
		name       string
		flag       int
		header     string
		wantStatus int
		wantType   string // empty: a normal answer is expected
	}{
		{"flag 429", 429, "", 429, "requests"},
		{"flag 500", 500, "", 500, "server_error"},
		{"header 503", 0, "503", 503, "server_error"},
		{"header 401", 0, "401", 401, "invalid_request_error"},
		{"header overrides flag", 429, "0", 200, ""},
		{"forced 2xx answers normally", 0, "201", 201, ""},
		{"bad header", 0, "abc", 400, "invalid_request_error"},
		{"1xx refused", 0, "102", 400, "invalid_request_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.status = tt.flag
			h := newServer(cfg).routes()
			for _, p := range paths {
				rec := post(t, h, p.path, p.body, "x-mock-status", tt.header)
				var body map[string]json.RawMessage
				decodeJSON(t, rec, tt.wantStatus, &body)
				if tt.wantType == "" {
					if _, ok := body["usage"]; !ok {
						t.Errorf("%s: normal answer without usage: %s", p.path, rec.Body)
					}
					continue
				}
				var e apiError
				mustUnmarshal(t, rec.Body.String(), &e)
				if e.Error.Type != tt.wantType || e.Error.Message == "" {
					t.Errorf("%s: error %+v, want type %q", p.path, e.Error, tt.wantType)
				}
				if _, ok := body["usage"]; ok {
					t.Errorf("%s: error answer has usage", p.path)
				}
			}
		})
	}
}

func TestForcedStatusBeatsStreaming(t *testing.T) {
	h := newServer(testConfig()).routes()
	rec := post(t, h, "/v1/chat/completions", `{"stream":true,"messages":[]}`, "x-mock-status", "429")
	var e apiError
	decodeJSON(t, rec, 429, &e)
	if e.Error.Code == nil || *e.Error.Code != "rate_limit_exceeded" {
		t.Errorf("429 code: got %v, want rate_limit_exceeded", e.Error.Code)
	}
}

func TestMalformedJSON(t *testing.T) {
	h := newServer(testConfig()).routes()
	for _, p := range paths {
		for _, body := range []string{``, `{`, `not json`, `{"model":5}`} {
			var e apiError
			decodeJSON(t, post(t, h, p.path, body), 400, &e)
			if e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
				t.Errorf("%s %q: error %+v", p.path, body, e.Error)
			}
		}
	}
}

func TestBadFields(t *testing.T) {
	h := newServer(testConfig()).routes()
	tests := []struct{ path, body string }{
		{"/v1/chat/completions", `{}`},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":5}]}`},
		{"/v1/completions", `{"prompt":{"a":1}}`},
		{"/v1/completions", `{"prompt":["a",1]}`},
		{"/v1/responses", `{"input":5}`},
		{"/v1/responses", `{"input":[{"role":"user","content":true}]}`},
	}
	for i, tt := range tests {
		var e apiError
		decodeJSON(t, post(t, h, tt.path, tt.body), 400, &e)
		if e.Error.Type != "invalid_request_error" {
			t.Errorf("step %d: error type %q", i, e.Error.Type)
		}
	}
}

func TestCallsCounter(t *testing.T) {
	h := newServer(testConfig()).routes()
	want := map[string]int{}
	for _, p := range paths {
		post(t, h, p.path+"?api-version=1", p.body)
		want[p.path]++
	}
	// Refused and forced calls reached the mock, so they count too.
	post(t, h, "/v1/chat/completions", `{`)
	post(t, h, "/v1/chat/completions", `{}`, "x-mock-status", "500")
	want["/v1/chat/completions"] += 2
	// Neither health checks, nor unknown paths, nor wrong methods are inference.
	for _, r := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "/healthz", nil),
		httptest.NewRequest(http.MethodPost, "/v1/images/generations", strings.NewReader(`{}`)),
		httptest.NewRequest(http.MethodGet, "/v1/chat/completions", nil),
	} {
		h.ServeHTTP(httptest.NewRecorder(), r)
	}

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/mock/calls", nil))
	var got callsReport
	decodeJSON(t, rec, 200, &got)
	if got.Calls != len(paths)+2 {
		t.Errorf("calls: got %d, want %d", got.Calls, len(paths)+2)
	}
	if len(got.ByPath) != len(want) {
		t.Errorf("by_path: got %v, want %v", got.ByPath, want)
	}
	for p, n := range want {
		if got.ByPath[p] != n {
			t.Errorf("by_path[%s]: got %d, want %d", p, got.ByPath[p], n)
		}
	}
}

func TestHealthzAndUnknown(t *testing.T) {
	h := newServer(testConfig()).routes()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != 200 {
		t.Errorf("healthz: got %d, want 200", rec.Code)
	}
	var e apiError
	decodeJSON(t, post(t, h, "/v1/nope", `{}`), 404, &e)
	if !strings.Contains(e.Error.Message, "/v1/nope") {
		t.Errorf("404 message %q does not name the path", e.Error.Message)
	}
}

func TestLatency(t *testing.T) {
	const d = 30 * time.Millisecond
	tests := []struct {
		name   string
		flag   time.Duration
		header string
	}{
		{"flag", d, ""},
		{"header duration", 0, "30ms"},
		{"header milliseconds", 0, "30"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.latency = tt.flag
			h := newServer(cfg).routes()
			start := time.Now()
			rec := post(t, h, "/v1/embeddings", `{"input":"hi"}`, "x-mock-latency", tt.header)
			if el := time.Since(start); el < d || rec.Code != 200 {
				t.Errorf("answered %d after %v, want 200 after at least %v", rec.Code, el, d)
			}
		})
	}
}

func TestBadOverrideHeaders(t *testing.T) {
	h := newServer(testConfig()).routes()
	for _, hdr := range [][2]string{
		{"x-mock-latency", "soon"}, {"x-mock-latency", "-1s"},
		{"x-mock-completion-tokens", "-1"}, {"x-mock-completion-tokens", "many"},
	} {
		var e apiError
		decodeJSON(t, post(t, h, "/v1/embeddings", `{"input":"hi"}`, hdr[0], hdr[1]), 400, &e)
		if !strings.Contains(e.Error.Message, hdr[0]) {
			t.Errorf("%s=%s: message %q does not name the header", hdr[0], hdr[1], e.Error.Message)
		}
	}
}
