package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream/eventstreamapi"
)

// The usage readers: each API's answer, buffered or streamed (told apart
// by the answer's content type), read with encoding/json as the API
// documents it. Prompt is all the input, cache reads and writes included;
// completion all the output, reasoning included: what tokengate charges.

type usage struct {
	Prompt     int `json:"prompt_tokens"`
	Completion int `json:"completion_tokens"`
	Total      int `json:"total_tokens"`
}

func newUsage(prompt, completion int) usage {
	return usage{Prompt: prompt, Completion: completion, Total: prompt + completion}
}

var (
	errNoUsage       = errors.New("the answer reports no usage")
	errNoStreamUsage = errors.New("the stream reports no usage")
)

func isSSE(contentType string) bool { return strings.HasPrefix(contentType, "text/event-stream") }

// openAIUsage reads a chat completion's usage, or a stream's final usage
// chunk.
func openAIUsage(contentType string, data []byte) (usage, error) {
	if isSSE(contentType) {
		return openAIStreamUsage(data)
	}
	return openAIBodyUsage(data)
}

func openAIBodyUsage(data []byte) (usage, error) {
	var body struct {
		Usage *usage `json:"usage"`
	}
	if err := json.Unmarshal(data, &body); err != nil {
		return usage{}, fmt.Errorf("reading usage: %w", err)
	}
	if body.Usage == nil {
		return usage{}, errNoUsage
	}
	return *body.Usage, nil
}

// openAIStreamUsage reads the last event that carries a usage (OpenAI
// sends it in a final chunk with no choices).
func openAIStreamUsage(data []byte) (usage, error) {
	var last *usage
	err := eachSSEData(data, func(payload []byte) error {
		var chunk struct {
			Usage *usage `json:"usage"`
		}
		if err := json.Unmarshal(payload, &chunk); err != nil {
			return err
		}
		if chunk.Usage != nil {
			last = chunk.Usage
		}
		return nil
	})
	if err != nil {
		return usage{}, err
	}
	if last == nil {
		return usage{}, errNoStreamUsage
	}
	return *last, nil
}

// anthropicTokens is Anthropic's usage; a field left out of a
// message_delta keeps message_start's value, hence the pointers.
type anthropicTokens struct {
	Input         *int `json:"input_tokens"`
	CacheRead     *int `json:"cache_read_input_tokens"`
	CacheCreation *int `json:"cache_creation_input_tokens"`
	Output        *int `json:"output_tokens"`
}

// update replaces the fields that next reports: message_delta's counts
// are cumulative, never added.
func (t *anthropicTokens) update(next anthropicTokens) {
	for _, f := range []struct{ to, from **int }{
		{&t.Input, &next.Input}, {&t.CacheRead, &next.CacheRead},
		{&t.CacheCreation, &next.CacheCreation}, {&t.Output, &next.Output},
	} {
		if *f.from != nil {
			*f.to = *f.from
		}
	}
}

func (t anthropicTokens) usage() usage {
	n := func(p *int) int {
		if p == nil {
			return 0
		}
		return *p
	}
	return newUsage(n(t.Input)+n(t.CacheRead)+n(t.CacheCreation), n(t.Output))
}

// apiError is the error member of Anthropic's and Gemini's error shapes.
type apiError struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("the stream ended with an error: %s%s: %s", e.Type, e.Status, e.Message)
}

// anthropicUsage reads a message's usage, or a stream's: message_start's
// usage, replaced field by field by each message_delta's.
func anthropicUsage(contentType string, data []byte) (usage, error) {
	if !isSSE(contentType) {
		var body struct {
			Usage *anthropicTokens `json:"usage"`
		}
		if err := json.Unmarshal(data, &body); err != nil {
			return usage{}, fmt.Errorf("reading usage: %w", err)
		}
		if body.Usage == nil {
			return usage{}, errNoUsage
		}
		return body.Usage.usage(), nil
	}
	var tokens *anthropicTokens
	err := eachSSEData(data, func(payload []byte) error {
		var event struct {
			Type    string `json:"type"`
			Message struct {
				Usage *anthropicTokens `json:"usage"`
			} `json:"message"`
			Usage *anthropicTokens `json:"usage"`
			Error *apiError        `json:"error"`
		}
		if err := json.Unmarshal(payload, &event); err != nil {
			return err
		}
		switch event.Type {
		case "message_start":
			tokens = event.Message.Usage
		case "message_delta":
			if tokens != nil && event.Usage != nil {
				tokens.update(*event.Usage)
			}
		case "error":
			if event.Error != nil {
				return event.Error
			}
		}
		return nil
	})
	if err != nil {
		return usage{}, err
	}
	if tokens == nil {
		return usage{}, errNoStreamUsage
	}
	return tokens.usage(), nil
}

// geminiChunk is a generateContent answer, or one chunk of a stream.
type geminiChunk struct {
	UsageMetadata *struct {
		Prompt     int `json:"promptTokenCount"` // cached content included
		ToolPrompt int `json:"toolUsePromptTokenCount"`
		Candidates int `json:"candidatesTokenCount"`
		Thoughts   int `json:"thoughtsTokenCount"`
	} `json:"usageMetadata"`
	Error *apiError `json:"error"`
}

func (c geminiChunk) usage() usage {
	m := c.UsageMetadata
	return newUsage(m.Prompt+m.ToolPrompt, m.Candidates+m.Thoughts)
}

// geminiUsage reads an answer's usageMetadata, or the last one a stream
// carried: every chunk has the counts so far, the last the whole. A
// stream asked for without alt=sse is one JSON array of chunks.
func geminiUsage(contentType string, data []byte) (usage, error) {
	var last *geminiChunk
	keep := func(c geminiChunk) error {
		if c.Error != nil {
			return c.Error
		}
		if c.UsageMetadata != nil {
			last = &c
		}
		return nil
	}
	var err error
	switch {
	case isSSE(contentType):
		err = eachSSEData(data, func(payload []byte) error {
			var c geminiChunk
			if err := json.Unmarshal(payload, &c); err != nil {
				return err
			}
			return keep(c)
		})
	case bytes.HasPrefix(bytes.TrimSpace(data), []byte("[")):
		var chunks []geminiChunk
		if err = json.Unmarshal(data, &chunks); err != nil {
			return usage{}, fmt.Errorf("reading the stream: %w", err)
		}
		for _, c := range chunks {
			if err = keep(c); err != nil {
				break
			}
		}
	default:
		var c geminiChunk
		if err := json.Unmarshal(data, &c); err != nil {
			return usage{}, fmt.Errorf("reading usage: %w", err)
		}
		if c.UsageMetadata == nil {
			return usage{}, errNoUsage
		}
		return c.usage(), nil
	}
	if err != nil {
		return usage{}, err
	}
	if last == nil {
		return usage{}, errNoStreamUsage
	}
	return last.usage(), nil
}

// converseTokens is Bedrock's TokenUsage: inputTokens leaves the cache
// reads and writes out.
type converseTokens struct {
	Input      int `json:"inputTokens"`
	CacheRead  int `json:"cacheReadInputTokens"`
	CacheWrite int `json:"cacheWriteInputTokens"`
	Output     int `json:"outputTokens"`
}

func (t converseTokens) usage() usage { return newUsage(t.Input+t.CacheRead+t.CacheWrite, t.Output) }

// converseUsage reads a Converse answer's usage, or a ConverseStream's
// metadata event, decoding its eventstream frames.
func converseUsage(contentType string, data []byte) (usage, error) {
	var body struct {
		Usage *converseTokens `json:"usage"`
	}
	if !strings.HasPrefix(contentType, "application/vnd.amazon.eventstream") {
		if err := json.Unmarshal(data, &body); err != nil {
			return usage{}, fmt.Errorf("reading usage: %w", err)
		}
		if body.Usage == nil {
			return usage{}, errNoUsage
		}
		return body.Usage.usage(), nil
	}
	dec := eventstream.NewDecoder()
	r := bytes.NewReader(data)
	var payload []byte
	// The stream ends between frames. The decoder says io.EOF for a frame
	// cut short too, so a clean end is told by what is left to read.
	for r.Len() > 0 {
		msg, err := dec.Decode(r, payload[:0])
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return usage{}, fmt.Errorf("reading the stream: %w", err)
		}
		payload = msg.Payload
		switch header(msg, eventstreamapi.MessageTypeHeader) {
		case eventstreamapi.ExceptionMessageType:
			var e struct {
				Message string `json:"message"`
			}
			_ = json.Unmarshal(msg.Payload, &e)
			return usage{}, fmt.Errorf("the stream ended with an error: %s: %s", header(msg, eventstreamapi.ExceptionTypeHeader), e.Message)
		case eventstreamapi.ErrorMessageType:
			return usage{}, fmt.Errorf("the stream ended with an error: %s: %s",
				header(msg, eventstreamapi.ErrorCodeHeader), header(msg, eventstreamapi.ErrorMessageHeader))
		}
		if header(msg, eventstreamapi.EventTypeHeader) != "metadata" {
			continue
		}
		if err := json.Unmarshal(msg.Payload, &body); err != nil {
			return usage{}, fmt.Errorf("reading the stream: %w", err)
		}
	}
	if body.Usage == nil {
		return usage{}, errNoStreamUsage
	}
	return body.Usage.usage(), nil
}

func header(msg eventstream.Message, name string) string {
	if v := msg.Headers.Get(name); v != nil {
		return v.String()
	}
	return ""
}

// eachSSEData calls fn with the data of each server-sent event (its data
// lines joined), skipping OpenAI's [DONE]. An event cut short at the end
// is still handed on, so that a cut shows as an error, not as no usage.
func eachSSEData(data []byte, fn func(payload []byte) error) error {
	var event []byte
	has := false // data lines seen since the last dispatch
	dispatch := func() error {
		payload, had := event, has
		event, has = nil, false
		if !had || string(payload) == "[DONE]" {
			return nil
		}
		if err := fn(payload); err != nil {
			var apiErr *apiError
			if errors.As(err, &apiErr) {
				return err
			}
			return fmt.Errorf("reading the stream: %w", err)
		}
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), maxBody)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			if err := dispatch(); err != nil {
				return err
			}
			continue
		}
		value, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue // event:, id:, retry:, comments
		}
		value = bytes.TrimPrefix(value, []byte(" "))
		if has {
			event = append(event, '\n')
		}
		event, has = append(event, value...), true
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading the stream: %w", err)
	}
	return dispatch()
}
