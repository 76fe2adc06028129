package openaimock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// maxBody matches tokengate's default gRPC receive limit: the mock should
// accept anything the gateway would let through.
const maxBody = 64 << 20

// defaultModel is used when neither the body nor an Azure path names one.
const defaultModel = "gpt-4o"

// server holds the defaults from the flags and what tests inspect
// afterwards. The clock is a field so tests could pin "created".
type server struct {
	cfg    config
	calls  callCounter
	traces traces
	ids    atomic.Uint64
	now    func() time.Time
}

func newServer(cfg config) *server {
	return &server{cfg: cfg, calls: callCounter{byPath: map[string]int{}}, now: time.Now}
}

// apiHandler answers one decoded inference call through the wire.
type apiHandler func(w *wire, c call)

// failFunc writes an error answer in one API's shape: OpenAI's
// (writeError), Anthropic's, Gemini's or Bedrock's (errors.go).
type failFunc func(w http.ResponseWriter, status int, msg string)

// endpoint is one API as the server routes it: the handler of its calls
// and the shape of its errors, which the common steps answer in too.
type endpoint struct {
	h    apiHandler
	fail failFunc
}

// openAI is an endpoint of OpenAI's APIs, with OpenAI's errors.
func openAI(h apiHandler) endpoint { return endpoint{h: h, fail: writeError} }

// decoded makes the apiHandler of an API whose handler takes its request
// already read: every API first answers a body that is not JSON with a
// 400 in its own error shape.
func decoded[R any](h func(w *wire, c call, req R)) apiHandler {
	return func(w *wire, c call) {
		var req R
		if err := json.Unmarshal(c.body, &req); err != nil {
			c.badRequest(w, "We could not parse the JSON body of your request: %v", err)
			return
		}
		h(w, c, req)
	}
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	apis := []struct {
		e     endpoint
		paths []string
	}{
		{openAI(decoded(s.chat)), []string{
			"/v1/chat/completions",
			"/openai/deployments/{model}/chat/completions",
			"/openai/v1/chat/completions",
			"/models/chat/completions",
		}},
		{openAI(decoded(s.completions)), []string{"/v1/completions", "/openai/deployments/{model}/completions"}},
		{openAI(decoded(s.embeddings)), []string{"/v1/embeddings", "/openai/deployments/{model}/embeddings", "/openai/v1/embeddings"}},
		{openAI(decoded(s.responses)), []string{"/v1/responses", "/openai/v1/responses", "/openai/responses"}},
	}
	for _, a := range apis {
		for _, p := range a.paths {
			mux.Handle("POST "+p, s.inference(a.e))
		}
	}
	s.modelRoutes(mux)
	mux.HandleFunc("GET /mock/calls", s.callsHandler)
	mux.HandleFunc("GET /mock/traces/{id}", s.traceHandler)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	// Anthropic's Messages API is served under any prefix (Azure AI
	// Foundry's /anthropic/v1/messages), which no pattern can spell.
	messages := s.inference(endpoint{h: decoded(s.messages), fail: anthropicError})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/v1/messages") {
			messages.ServeHTTP(w, r)
			return
		}
		notFound(w, r)
	})
	return mux
}

// notFound answers an unknown URL with OpenAI's JSON error, not a plain
// 404, as OpenAI does.
func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path))
}

// call is one inference request after the common steps: its body, the
// model and operation its path names, the 2xx status to answer with, the
// completion length it should get, how to stream it, and the trace of what
// it was sent.
type call struct {
	ctx  context.Context
	body []byte
	// pathModel is the Azure deployment, or the model a Gemini, Vertex AI
	// or Bedrock path names; op is the operation such a path names
	// (generateContent, streamRawPredict, converse-stream, …), empty on
	// the paths that name none.
	pathModel        string
	op               string
	query            url.Values
	status           int
	completionTokens int
	encoding         string
	ignoreUsage      bool
	// noUsage leaves usage out of a buffered answer (x-mock-no-usage).
	noUsage bool
	pace    pacing
	providerKnobs
	// start is when the request arrived, for the latencies Bedrock
	// reports.
	start time.Time
	fail  failFunc
	tr    *trace
}

// model picks the body's model, else the path's (the Azure deployment,
// SPEC section 6), else the default.
func (c call) model(fromBody string) string {
	switch {
	case fromBody != "":
		return fromBody
	case c.pathModel != "":
		return c.pathModel
	}
	return defaultModel
}

// badRequest answers 400 in the API's error shape.
func (c call) badRequest(w http.ResponseWriter, format string, args ...any) {
	c.fail(w, http.StatusBadRequest, fmt.Sprintf(format, args...))
}

// inference does what every API shares: count the call, apply the x-mock-*
// overrides, wait the latency, and answer a forced status before the body is
// parsed, since a failing upstream fails whatever was asked. Past the
// overrides every answer, errors included, goes out through the wire, so it
// is compressed when asked and measured.
func (s *server) inference(e endpoint) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := s.now()
		s.calls.add(r.URL.Path)
		o, err := s.overrides(r.Header)
		if err != nil {
			e.fail(rw, http.StatusBadRequest, err.Error())
			return
		}
		tr := &trace{}
		w := newWire(rw, o.encoding, tr)
		// Deferred so that a stream cut by panic(http.ErrAbortHandler) is
		// traced too; its compressed body is left truncated on purpose.
		defer func() {
			if !w.cut {
				w.close()
			}
			tr.finish(w.digest())
		}()
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				e.fail(w, http.StatusRequestEntityTooLarge, "request body too large")
			}
			return // otherwise the client went away mid-body
		}
		if o.latency > 0 {
			t := time.NewTimer(o.latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if o.status != 0 && (o.status < 200 || o.status > 299) {
			e.fail(w, o.status, fmt.Sprintf("openai-mock: forced status %d", o.status))
			return
		}
		status := http.StatusOK
		if o.status != 0 {
			status = o.status // a forced 2xx still gets a normal body
		}
		e.h(w, call{
			ctx: r.Context(), body: body, pathModel: r.PathValue("model"), op: r.PathValue("op"),
			query: r.URL.Query(), status: status,
			completionTokens: o.completionTokens, encoding: o.encoding, ignoreUsage: o.ignoreIncludeUsage,
			noUsage: o.noUsage, pace: o.pace, providerKnobs: o.providerKnobs, start: start, fail: e.fail, tr: tr,
		})
	})
}

// nextID makes ids unique within a run and stable across runs, which keeps
// test output readable.
func (s *server) nextID(prefix string) string {
	return fmt.Sprintf("%s%08d", prefix, s.ids.Add(1))
}
