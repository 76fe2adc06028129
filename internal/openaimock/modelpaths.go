package openaimock

import (
	"fmt"
	"net/http"
	"strings"
)

// The paths that name their model and an operation on it: Gemini's
// models/{M}:{op}, Vertex AI's publishers/{P}/models/{M}:{op}, Bedrock's
// /model/{M}/{op}. A model ID is read unescaped, so Bedrock's
// anthropic.claude-…-v1%3A0 (as the AWS SDK sends it) and …-v1:0 (as
// Envoy AI Gateway does) are the same model, and an ARN may hold slashes.

// amznRequestID is the header every Bedrock answer carries its request id
// in; the mock's traces of Bedrock answers go by it.
const amznRequestID = "X-Amzn-Requestid"

func (s *server) modelRoutes(mux *http.ServeMux) {
	messages := endpoint{h: decoded(s.messages), fail: anthropicError}
	gemini := endpoint{h: decoded(s.generateContent), fail: geminiError}
	invoke := endpoint{h: decoded(s.messages), fail: bedrockError}
	converse := endpoint{h: decoded(s.converse), fail: bedrockError}

	geminiOps := s.modelOps(splitAt(':'), geminiError, map[string]endpoint{
		"generateContent": gemini, "streamGenerateContent": gemini,
	})
	anthropicOps := s.modelOps(splitAt(':'), anthropicError, map[string]endpoint{
		"rawPredict": messages, "streamRawPredict": messages,
	})
	bedrockOps := s.modelOps(splitAt('/'), bedrockError, map[string]endpoint{
		"invoke": invoke, "invoke-with-response-stream": invoke,
		"converse": converse, "converse-stream": converse,
	})
	bedrockOps.stamp = func(h http.Header) { h.Set(amznRequestID, s.nextID("bedrock-mock")) }

	// The patterns name no method: other methods get the same 404 as any
	// unknown URL, not the mux's plain 405.
	mux.Handle("/v1beta/models/{target}", postOnly(geminiOps))
	mux.Handle("/v1/models/{target}", postOnly(geminiOps))
	vertex := func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("publisher") {
		case "google":
			geminiOps.ServeHTTP(w, r)
		case "anthropic":
			anthropicOps.ServeHTTP(w, r)
		default:
			geminiError(w, http.StatusNotFound, fmt.Sprintf("openai-mock: no publisher %q", r.PathValue("publisher")))
		}
	}
	for _, v := range []string{"v1", "v1beta1"} {
		mux.Handle("/"+v+"/projects/{project}/locations/{location}/publishers/{publisher}/models/{target}", postOnly(http.HandlerFunc(vertex)))
	}
	mux.Handle("/model/{target...}", postOnly(bedrockOps))
}

// postOnly serves POST with h, and answers other methods as unknown URLs.
func postOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			notFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// modelOps routes a path naming a model and an operation to the
// operation's endpoint, which finds the two in the path values "model"
// and "op". An operation the API does not have is answered 404 in the
// API's error shape, and is not a call; a path naming no operation is no
// URL of the API, and gets the mock's usual 404.
type modelOps struct {
	split func(target string) (model, op string)
	fail  failFunc
	ops   map[string]http.Handler
	// stamp, when set, adds what every answer of the API carries
	// (Bedrock's request id) to the headers.
	stamp func(http.Header)
}

func (s *server) modelOps(split func(string) (string, string), fail failFunc, eps map[string]endpoint) modelOps {
	m := modelOps{split: split, fail: fail, ops: make(map[string]http.Handler, len(eps))}
	for op, e := range eps {
		m.ops[op] = s.inference(e)
	}
	return m
}

func (m modelOps) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	model, op := m.split(r.PathValue("target"))
	if op == "" {
		notFound(w, r)
		return
	}
	if m.stamp != nil {
		m.stamp(w.Header())
	}
	h, ok := m.ops[op]
	if model == "" || !ok {
		m.fail(w, http.StatusNotFound, fmt.Sprintf("openai-mock: no operation %q on model %q", op, model))
		return
	}
	r.SetPathValue("model", model)
	r.SetPathValue("op", op)
	h.ServeHTTP(w, r)
}

// splitAt splits "{model}{sep}{op}" at the last sep: ':' on Gemini's and
// Vertex AI's paths, '/' on Bedrock's, whose model may be an ARN with
// slashes of its own once unescaped.
func splitAt(sep byte) func(target string) (model, op string) {
	return func(target string) (string, string) {
		i := strings.LastIndexByte(target, sep)
		if i < 0 {
			return target, ""
		}
		return target[:i], target[i+1:]
	}
}
