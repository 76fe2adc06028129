package llm

import (
	"bytes"
	"encoding/json"
	"testing"
)

// Events as OpenAI sends them: the scan must read these itself.
var chunkSeeds = []string{
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" Lisbon \"is\" \u00e9t\u00e9\n"},"finish_reason":null}]}`,
	`{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":212,"completion_tokens":498,"total_tokens":710,"prompt_tokens_details":{"cached_tokens":0}}}`,
	`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"time","arguments":"{\"city\":"}}]}}]}`,
	`{"choices":[{"index":0,"delta":{"reasoning_content":"think"}},{"index":1,"text":"two"}]}`,
	`{"choices":[{"text":"Hello","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct"}`,
	`{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello","sequence_number":4}`,
	`{"type":"response.completed","response":{"id":"resp_1","status":"completed","usage":{"input_tokens":9,"output_tokens":2,"total_tokens":11,"output_tokens_details":{"reasoning_tokens":0}}}}`,
	`{"type":"response.created","response":{"usage":null}}`,
}

func TestChunkScanReadsOpenAIEvents(t *testing.T) {
	for _, data := range chunkSeeds {
		var f chunkFields
		if !f.scan([]byte(data)) {
			t.Errorf("scan left an ordinary event to encoding/json: %s", data)
		}
		checkChunkAgrees(t, []byte(data))
	}
}

// The scan gives up, and encoding/json decides, where they could differ.
func TestChunkScanLeavesDoubtToJSON(t *testing.T) {
	for _, data := range []string{
		`{"Choices":[{"delta":{"content":"folded key"}}]}`,
		`{"choices":[{"delta":{"CONTENT":"folded key"}}]}`,
		`{"choices":[{"delta":{"content":"a"}}],"choices":[{"delta":{"content":"b"}}]}`,
		`{"choices":[{"delta":{"content":1}}]}`,
		`{"choices":{"delta":{"content":"not an array"}}}`,
		`{"usage":[1]}`,
		`{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2}}`,
		`{"type":"response.output_text.delta","delta":{"text":"object"}}`,
		`[1,2]`,
		`null`,
	} {
		var f chunkFields
		if f.scan([]byte(data)) {
			t.Errorf("scan read an event only encoding/json can judge: %s", data)
		}
		checkChunkAgrees(t, []byte(data))
	}
	// An escaped key is unescaped by the scan as by every JSON parser.
	escaped := []byte(`{"choices":[{"delta":{"cont\u0065nt":"escaped key"}}]}`)
	var f chunkFields
	if !f.scan(escaped) || len(f.texts) < 2 || string(f.text(f.texts[1])) != "escaped key" {
		t.Errorf("escaped key: scan did not read %s", escaped)
	}
	checkChunkAgrees(t, escaped)
}

// checkChunkAgrees fails when the scan accepts data and reads something
// else than json.Unmarshal into a streamChunk does.
func checkChunkAgrees(t *testing.T, data []byte) {
	t.Helper()
	var fast chunkFields
	if !json.Valid(data) || !fast.scan(data) {
		return // decoded: agrees by construction
	}
	var ch streamChunk
	if err := json.Unmarshal(data, &ch); err != nil {
		t.Fatalf("scan read an event encoding/json rejects (%v): %s", err, data)
	}
	var slow chunkFields
	slow.decoded(&ch)
	if got, want := fast.summary(), slow.summary(); got != want {
		t.Fatalf("%s:\n scan   %s\n decode %s", data, got, want)
	}
}

// summary is what the counter uses of an event.
func (f *chunkFields) summary() string {
	var b bytes.Buffer
	b.WriteString("type=" + string(f.text(f.typ)) + " delta=" + string(f.text(f.delta)))
	if f.hasUsage {
		u, _ := json.Marshal(f.usage.normalize())
		b.WriteString(" usage=" + string(u))
	}
	if f.hasResp {
		u, _ := json.Marshal(f.respUsage.normalize())
		b.WriteString(" response.usage=" + string(u))
	}
	for _, s := range f.texts {
		if s.to > s.from {
			b.WriteString(" text=")
			b.Write(f.text(s))
		}
	}
	return b.String()
}

func FuzzChunkScanAgreesWithJSON(f *testing.F) {
	for _, s := range chunkSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkChunkAgrees(t, data)
	})
}

// BenchmarkChunk reads one streamed chat chunk, as the counter does for
// every event, next to decoding it with encoding/json.
func BenchmarkChunk(b *testing.B) {
	data := []byte(`{"id":"chatcmpl-B7xQ2kV9mN4pL1sR8tU3wY6zA0cD","object":"chat.completion.chunk","created":1741083667,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":{"content":" watch"},"logprobs":null,"finish_reason":null}],"usage":null}`)
	b.Run("scan", func(b *testing.B) {
		var f chunkFields
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if !f.read(data) || len(f.texts) == 0 {
				b.Fatal("not read")
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			var ch streamChunk
			if err := json.Unmarshal(data, &ch); err != nil {
				b.Fatal(err)
			}
		}
	})
}
