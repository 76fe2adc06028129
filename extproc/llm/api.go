// Package llm understands the wire formats of the LLM APIs tokengate
// counts, as far as counting tokens needs: which API a path is, what a
// request asks for, what a response or stream reports in usage, and how a
// refusal must look to the API's own SDK. Every body is read by one JSON
// reader (scan.go): the top-level object's own members, keys matched
// case-sensitively after unescaping, the last of repeated keys winning, as
// the upstreams' parsers read them.
package llm

import (
	"net/url"
	"path"
	"strings"
)

// API is one of the inference APIs tokengate counts.
type API int

// The APIs of SPEC §6 and issue 15. Unknown paths pass through uncounted.
const (
	Unknown API = iota
	ChatCompletions
	Completions
	Embeddings
	Responses
	// Messages is Anthropic's Messages API, wherever it is served: its own
	// /v1/messages, Vertex AI's rawPredict and Bedrock's InvokeModel of an
	// Anthropic model all carry the same bodies.
	Messages
	// GenerateContent is Gemini's generateContent and
	// streamGenerateContent, on the Gemini API and on Vertex AI.
	GenerateContent
	// Converse is Bedrock's Converse and ConverseStream.
	Converse
)

var apiNames = [...]string{"unknown", "chat_completions", "completions", "embeddings", "responses",
	"anthropic_messages", "gemini_generate_content", "bedrock_converse"}

func (a API) String() string { return apiNames[a] }

// Provider is whose wire format an API speaks, which decides the shape of
// its errors and the headers its SDK reads.
type Provider int

// The providers.
const (
	OpenAI Provider = iota
	Anthropic
	Gemini
	Bedrock
)

// Provider returns whose wire format the API speaks.
func (a API) Provider() Provider {
	switch a {
	case Messages:
		return Anthropic
	case GenerateContent:
		return Gemini
	case Converse:
		return Bedrock
	}
	return OpenAI
}

// Route is what a request path tells before the body is read.
type Route struct {
	API API
	// Model is the model the path names: an Azure deployment, a Gemini,
	// Vertex or Bedrock model. The upstream serves it whatever the body
	// says, so it is the request's model, a body's ignored.
	Model string
	// Stream is set when the path itself asks for a stream
	// (streamGenerateContent, converse-stream, streamRawPredict,
	// invoke-with-response-stream); a body can ask for one too.
	Stream bool
	// Bedrock is set for Bedrock's InvokeModel paths, whose streams are
	// eventstream frames around the API's own events.
	Bedrock bool
}

// Detect finds the API of a request path. The query string is ignored, and
// so is a trailing slash.
func Detect(path string) Route {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	path = strings.TrimSuffix(path, "/")
	if r, ok := detectModelPath(path); ok {
		return r
	}
	var r Route
	if rest, ok := strings.CutPrefix(path, "/openai/deployments/"); ok {
		d, op, ok := strings.Cut(rest, "/")
		if !ok || d == "" {
			return Route{}
		}
		r.Model = d
		path = "/" + op
	}
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		r.API = ChatCompletions
	case strings.HasSuffix(path, "/completions"):
		r.API = Completions
	case strings.HasSuffix(path, "/embeddings"):
		r.API = Embeddings
	case path == "/v1/responses", path == "/openai/v1/responses", path == "/openai/responses", path == "/responses":
		r.API = Responses
	case r.Model == "" && strings.HasSuffix(path, "/v1/messages"):
		// Anthropic's, and Anthropic-compatible hosts' under a prefix
		// (Azure AI Foundry's /anthropic/v1/messages).
		r.API = Messages
	}
	if r.API == Unknown {
		return Route{}
	}
	return r
}

// tunedPaths are the segments before a model deployed or tuned by its
// owner, in Gemini's and Vertex AI's generateContent paths.
var tunedPaths = [...]string{"/tunedModels/", "/endpoints/"}

// detectModelPath reads the paths that name their model, with the
// operation after it: Gemini's models/M:op and tunedModels/M:op, Vertex
// AI's publishers/P/models/M:op and endpoints/E:op (a model deployed to
// an endpoint), Bedrock's /model/M/op. A Bedrock model ID may be an ARN,
// with slashes of its own once unescaped, so the operation is the last
// segment.
func detectModelPath(path string) (Route, bool) {
	// Every path of these names its operation after a colon: one without
	// (a chat path, the common case) is not looked through for them.
	if strings.IndexByte(path, ':') >= 0 {
		for _, seg := range tunedPaths {
			i := strings.LastIndex(path, seg)
			if i < 0 || strings.HasPrefix(path, "/openai/") {
				continue
			}
			model, op, ok := strings.Cut(path[i+len(seg):], ":")
			if ok && model != "" && !strings.Contains(model, "/") && (op == "generateContent" || op == "streamGenerateContent") {
				return Route{API: GenerateContent, Model: model, Stream: op == "streamGenerateContent"}, true
			}
		}
	}
	if i := strings.LastIndex(path, "/models/"); i >= 0 && !strings.HasPrefix(path, "/openai/") {
		model, op, ok := strings.Cut(path[i+len("/models/"):], ":")
		if !ok || model == "" || strings.Contains(model, "/") {
			return Route{}, false
		}
		anthropic := strings.HasSuffix(path[:i], "/publishers/anthropic")
		switch {
		case !anthropic && (op == "generateContent" || op == "streamGenerateContent"):
			return Route{API: GenerateContent, Model: model, Stream: op == "streamGenerateContent"}, true
		case anthropic && (op == "rawPredict" || op == "streamRawPredict"):
			return Route{API: Messages, Model: model, Stream: op == "streamRawPredict"}, true
		}
		return Route{}, false
	}
	rest, ok := strings.CutPrefix(path, "/model/")
	if !ok {
		return Route{}, false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return Route{}, false
	}
	model, op := rest[:i], rest[i+1:]
	switch op {
	case "converse", "converse-stream":
		return Route{API: Converse, Model: model, Stream: op == "converse-stream", Bedrock: true}, true
	case "invoke", "invoke-with-response-stream":
		// InvokeModel carries the model's own format: counted for
		// Anthropic's models, whose bodies are the Messages API's.
		if !strings.Contains(model, "anthropic.") {
			return Route{}, false
		}
		return Route{API: Messages, Model: model, Stream: op == "invoke-with-response-stream", Bedrock: true}, true
	}
	return Route{}, false
}

// NormalizePath is the request path as the upstream routes it: the query
// dropped, percent-escapes decoded once (Go's net/http and Starlette route
// /v1/chat%2Fcompletions as chat completions), slashes merged and dot
// segments resolved. Policies match, and APIs are detected, on it, so no
// spelling of a path the upstream serves passes uncounted. A path with a
// malformed escape is left as it is: the upstream refuses it.
func NormalizePath(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if u, err := url.PathUnescape(p); err == nil {
		p = u
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	// path.Clean returns a clean path as it is, without a copy: the
	// common request pays for the scan only.
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		if p[:len(p)-1] == clean {
			return p // clean but for its trailing slash, which is kept
		}
		clean += "/"
	}
	return clean
}

// QueryKey names the request's key query parameter as a key source.
const QueryKey = "?key"

// KeySources are where a provider's callers send their key, for a policy
// that names no header of its own: Anthropic's x-api-key or a Bearer
// token (its SDK sends the key as one), Gemini's x-goog-api-key or key
// parameter, the SigV4 authorization of Bedrock's callers (its access key
// ID). nil for OpenAI: the policy's default list.
func KeySources(p Provider) []string {
	switch p {
	case Anthropic:
		return []string{"x-api-key", "authorization"}
	case Gemini:
		return []string{"x-goog-api-key", QueryKey}
	case Bedrock:
		return []string{"authorization"}
	}
	return nil
}
