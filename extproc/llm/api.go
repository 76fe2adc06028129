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

// The APIs of SPEC §6. Unknown paths pass through uncounted.
const (
	Unknown API = iota
	ChatCompletions
	Completions
	Embeddings
	Responses
)

var apiNames = [...]string{"unknown", "chat_completions", "completions", "embeddings", "responses"}

func (a API) String() string { return apiNames[a] }

// Route is what a request path tells before the body is read.
type Route struct {
	API API
	// Deployment is the Azure deployment name, which stands for the model
	// when the body names none.
	Deployment string
}

// Detect finds the API of a request path. The query string is ignored, and
// so is a trailing slash.
func Detect(path string) Route {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	path = strings.TrimSuffix(path, "/")
	var r Route
	if rest, ok := strings.CutPrefix(path, "/openai/deployments/"); ok {
		d, op, ok := strings.Cut(rest, "/")
		if !ok || d == "" {
			return Route{}
		}
		r.Deployment = d
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
	}
	if r.API == Unknown {
		return Route{}
	}
	return r
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
