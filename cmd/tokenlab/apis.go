package main

import (
	"encoding/json"
	"net/url"
	"strings"
)

// labAPI is one wire format the lab can drive (--api): where the request
// goes, what it says, where the key goes by default, and how the answer's
// usage is read. The readers are the lab's own (apiusage.go), written from
// the APIs' documentation and not from tokengate's parser, so that the
// table is a second opinion on what tokengate charged.
type labAPI struct {
	name         string // the --api value
	noun         string // one request, for the first line and the chart
	defaultModel string
	keyHeader    string // where the API's clients send their key
	keySource    string // what tokengate keys a policy naming no header by, for this API's requests
	endpoint     func(gateway, model string, stream bool) string
	body         func(model string, stream bool) ([]byte, error)
	headers      map[string]string // sent with every request, beside content-type and the key
	usage        func(contentType string, data []byte) (usage, error)
}

// labAPIs are the APIs in the order the help lists them; the first is
// the default.
var labAPIs = []*labAPI{
	{
		name: "openai", noun: "OpenAI chat completion", defaultModel: "gpt-4o",
		keyHeader: "api-key", keySource: "api-key",
		endpoint: func(gateway, _ string, _ bool) string { return apiBase(gateway) + "/chat/completions" },
		body:     openAIBody,
		usage:    openAIUsage,
	},
	{
		name: "anthropic", noun: "Anthropic Messages call", defaultModel: "claude-sonnet-4-5",
		keyHeader: "x-api-key", keySource: "x-api-key",
		endpoint: func(gateway, _ string, _ bool) string { return apiBase(gateway) + "/messages" },
		body:     anthropicBody,
		headers:  map[string]string{"anthropic-version": "2023-06-01"},
		usage:    anthropicUsage,
	},
	{
		name: "gemini", noun: "Gemini generateContent call", defaultModel: "gemini-2.5-flash",
		keyHeader: "x-goog-api-key", keySource: "x-goog-api-key",
		endpoint: geminiEndpoint,
		body:     geminiBody,
		usage:    geminiUsage,
	},
	{
		name: "bedrock", noun: "Bedrock Converse call", defaultModel: "amazon.nova-pro-v1:0",
		keyHeader: "authorization", keySource: "the SigV4 access key ID",
		endpoint: converseEndpoint,
		body:     converseBody,
		usage:    converseUsage,
	},
}

// lookupAPI finds an --api value; nil when there is no such API.
func lookupAPI(name string) *labAPI {
	for _, a := range labAPIs {
		if a.name == name {
			return a
		}
	}
	return nil
}

// apiNames reads "openai, anthropic, gemini or bedrock".
func apiNames() string {
	names := make([]string, len(labAPIs))
	for i, a := range labAPIs {
		names[i] = a.name
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// apiBase is the base of the OpenAI and Anthropic paths on the gateway,
// ".../v1". Gateways route /v1/... to the upstream; a URL already ending
// in /v1 (as OPENAI_BASE_URL does) is taken as it is.
func apiBase(gateway string) string {
	base := strings.TrimRight(gateway, "/")
	if strings.HasSuffix(base, "/v1") {
		return base
	}
	return base + "/v1"
}

// geminiEndpoint is BASE/v1beta/models/MODEL:generateContent, or
// :streamGenerateContent?alt=sse for a stream (SSE rather than Gemini's
// default JSON array, as the SDKs ask for it). A URL ending in /v1beta or
// /v1 keeps its version.
func geminiEndpoint(gateway, model string, stream bool) string {
	base := strings.TrimRight(gateway, "/")
	if !strings.HasSuffix(base, "/v1beta") && !strings.HasSuffix(base, "/v1") {
		base += "/v1beta"
	}
	op := ":generateContent"
	if stream {
		op = ":streamGenerateContent?alt=sse"
	}
	return base + "/models/" + url.PathEscape(model) + op
}

// converseEndpoint is BASE/model/MODEL/converse or converse-stream, the
// model ID escaped as the AWS SDK does (amazon.nova-pro-v1%3A0).
func converseEndpoint(gateway, model string, stream bool) string {
	op := "/converse"
	if stream {
		op = "/converse-stream"
	}
	id := strings.ReplaceAll(url.PathEscape(model), ":", "%3A")
	return strings.TrimRight(gateway, "/") + "/model/" + id + op
}

// sigV4Credential is the scope of the lab's Bedrock authorization: a
// SigV4 header in shape only. tokengate keys on its access key ID and the
// mock checks no signature; a real Bedrock behind the gateway needs the
// gateway to sign the request itself.
const sigV4Credential = "/20261130/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=0"

// keyValue is what the key header carries: in authorization, the key as
// the API's clients put it there (Bedrock's SigV4 access key ID, the
// others' Bearer token), which is how tokengate reads that header;
// anywhere else the key as it is.
func keyValue(api *labAPI, header, key string) string {
	switch {
	case !strings.EqualFold(header, "authorization"):
		return key
	case api.name == "bedrock":
		return "AWS4-HMAC-SHA256 Credential=" + key + sigV4Credential
	default:
		return "Bearer " + key
	}
}

// The request bodies: the lab's system and user prompt, in each API's
// shape.

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// openAIBody is a chat completion. A streamed request asks for usage
// itself, as a careful client does, rather than relying on the gateway to
// add it.
func openAIBody(model string, stream bool) ([]byte, error) {
	req := struct {
		Model         string         `json:"model"`
		Messages      []chatMessage  `json:"messages"`
		Stream        bool           `json:"stream,omitempty"`
		StreamOptions *streamOptions `json:"stream_options,omitempty"`
	}{
		Model:    model,
		Messages: []chatMessage{{Role: "system", Content: systemPrompt}, {Role: "user", Content: userPrompt}},
	}
	if stream {
		req.Stream = true
		req.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	return json.Marshal(req)
}

// anthropicMaxTokens is the Messages API's required max_tokens: far above
// what the lab's answers use, so it only matters to a strict-mode policy.
const anthropicMaxTokens = 1024

// anthropicBody is a Messages request: the system prompt beside the
// messages, max_tokens required.
func anthropicBody(model string, stream bool) ([]byte, error) {
	return json.Marshal(struct {
		Model     string        `json:"model"`
		MaxTokens int           `json:"max_tokens"`
		System    string        `json:"system"`
		Messages  []chatMessage `json:"messages"`
		Stream    bool          `json:"stream,omitempty"`
	}{
		Model:     model,
		MaxTokens: anthropicMaxTokens,
		System:    systemPrompt,
		Messages:  []chatMessage{{Role: "user", Content: userPrompt}},
		Stream:    stream,
	})
}

type textPart struct {
	Text string `json:"text"`
}

type geminiContent struct {
	Role  string     `json:"role,omitempty"`
	Parts []textPart `json:"parts"`
}

// geminiBody is a generateContent request; the model and whether it
// streams are the path's.
func geminiBody(string, bool) ([]byte, error) {
	return json.Marshal(struct {
		SystemInstruction geminiContent   `json:"systemInstruction"`
		Contents          []geminiContent `json:"contents"`
	}{
		SystemInstruction: geminiContent{Parts: []textPart{{Text: systemPrompt}}},
		Contents:          []geminiContent{{Role: "user", Parts: []textPart{{Text: userPrompt}}}},
	})
}

type converseMessage struct {
	Role    string     `json:"role"`
	Content []textPart `json:"content"`
}

// converseBody is a Converse request; the model and whether it streams
// are the path's.
func converseBody(string, bool) ([]byte, error) {
	return json.Marshal(struct {
		System   []textPart        `json:"system"`
		Messages []converseMessage `json:"messages"`
	}{
		System:   []textPart{{Text: systemPrompt}},
		Messages: []converseMessage{{Role: "user", Content: []textPart{{Text: userPrompt}}}},
	})
}
