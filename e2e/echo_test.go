package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// TestEchoedUsageIsNotCharged sends Responses API calls whose request
// fields carry a "usage" of the client's own. The upstream (openai-mock,
// as OpenAI) echoes those fields in the response object, metadata and user
// after the real usage: tokengate must charge the top-level usage, buffered
// and streamed, whatever shape the echoed one has.
func TestEchoedUsageIsNotCharged(t *testing.T) {
	r := startRig(t)
	hostile := []struct {
		name   string
		fields map[string]any
	}{
		{"metadata usage string", map[string]any{"metadata": map[string]any{"usage": "free"}}},
		{"metadata usage zeros", map[string]any{"metadata": map[string]any{"usage": map[string]int{"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}}},
		{"metadata usage huge", map[string]any{"metadata": map[string]any{"usage": map[string]float64{"input_tokens": 9e18, "total_tokens": 1e300}}}},
		{"every echoed field", map[string]any{
			"metadata":    map[string]any{"usage": map[string]int{"total_tokens": 0}},
			"user":        "u-1",
			"tools":       []any{map[string]any{"type": "function", "name": "f", "parameters": map[string]any{"type": "object", "properties": map[string]any{"usage": map[string]any{"type": "integer"}}, "usage": 0}}},
			"text":        map[string]any{"format": map[string]any{"type": "json_schema", "name": "x", "schema": map[string]any{"usage": map[string]int{"total_tokens": 0}}}},
			"prompt":      map[string]any{"id": "pmpt_1", "variables": map[string]any{"usage": "0"}},
			"reasoning":   map[string]any{"effort": "low", "usage": 0},
			"tool_choice": map[string]any{"type": "function", "name": "usage", "usage": 0},
		}},
	}
	for i, h := range hostile {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, stream %v", h.name, stream), func(t *testing.T) {
				r.t = t
				req := map[string]any{"model": "gpt-4o", "stream": stream, "input": streamInput}
				for k, v := range h.fields {
					req[k] = v
				}
				body, err := json.Marshal(req)
				if err != nil {
					t.Fatal(err)
				}
				key := fmt.Sprintf("echo-key-%d-%v", i, stream)
				resp := r.send(key, "/v1/responses", body, "x-mock-completion-tokens", strconv.Itoa(streamCompletion))
				if resp.StatusCode != http.StatusOK {
					got, _ := io.ReadAll(resp.Body)
					t.Fatalf("status %d: %s", resp.StatusCode, got)
				}
				var reported int
				if stream {
					events, err := readEvents(bufio.NewReader(resp.Body), -1)
					if err != nil {
						t.Fatalf("reading the stream: %v", err)
					}
					got := parseStream(t, events)
					if got.usage == nil {
						t.Fatal("the stream carried no usage")
					}
					reported = got.usage.TotalTokens
				} else {
					got, err := io.ReadAll(resp.Body)
					if err != nil {
						t.Fatal(err)
					}
					reported = usageTotal(t, "buffered response", got)
					var echo struct {
						Metadata json.RawMessage `json:"metadata"`
					}
					if json.Unmarshal(got, &echo) != nil || len(echo.Metadata) == 0 {
						t.Fatalf("the upstream did not echo metadata: %s", got)
					}
				}
				if want := tokenize.Text("gpt-4o", streamInput) + streamCompletion; reported != want {
					t.Fatalf("the upstream reported %d tokens, want %d", reported, want)
				}
				md := metadataOf(t, r.record())
				if md.source != "reported" || md.total != reported {
					t.Errorf("charged %d (%s), want the top-level usage's %d (reported)", md.total, md.source, reported)
				}
				if c := r.charged(key, "stream"); c != reported {
					t.Errorf("the window holds %d, want the top-level usage's %d", c, reported)
				}
			})
		}
	}
}
