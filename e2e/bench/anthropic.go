package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// newAnthropicWorkload is the buffered mode's traffic in Anthropic's
// Messages format: the same conversation as a Messages request (system
// apart, max_tokens required) and a Message answer with usage, cache
// counts included.
func newAnthropicWorkload() *workload {
	w := newRequests("/v1/messages", messagesRequest, "anthropic-version", "2023-06-01", "user-agent", "Anthropic/Go 2.15.0")
	body := messagesResponse()
	w.respHead = respHeadersMsg("application/json", "content-length", strconv.Itoa(len(body)))
	w.respBody = []*extprocv3.ProcessingRequest{bodyMsg(body, true)}
	return w
}

// messagesRequest is a Messages request as the Anthropic SDK sends it.
func messagesRequest(prompt string) []byte {
	b, err := json.Marshal(map[string]any{
		"model":      "claude-sonnet-4-5",
		"max_tokens": 600,
		"system":     systemPrompt,
		"messages": []chatMessage{
			{Role: "user", Content: prompt},
			{Role: "assistant", Content: earlierAnswer},
			{Role: "user", Content: followUp},
		},
		"temperature": 0.2,
		"metadata":    map[string]string{"user_id": "bench-user"},
	})
	if err != nil {
		panic(err) // fixed input: cannot fail
	}
	return b
}

// messagesResponse is a Message with usage, as the Messages API answers.
func messagesResponse() []byte {
	return fmt.Appendf(nil, `{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",`+
		`"content":[{"type":"text","text":%q}],"stop_reason":"end_turn","stop_sequence":null,`+
		`"usage":{"input_tokens":180,"cache_creation_input_tokens":0,"cache_read_input_tokens":32,`+
		`"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":118,"service_tier":"standard"}}`,
		strings.Join(answerWords, " "))
}
