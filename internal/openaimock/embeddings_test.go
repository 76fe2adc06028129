package openaimock

import (
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

type wireEmbeddings struct {
	Object string `json:"object"`
	Model  string `json:"model"`
	Data   []struct {
		Object    string          `json:"object"`
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Usage map[string]int `json:"usage"`
}

func TestEmbeddings(t *testing.T) {
	const m3 = "text-embedding-3-small"
	tests := []struct {
		name, path, body string
		wantModel        string
		wantVectors      int
		wantPrompt       int
		base64           bool
	}{
		{"one string", "/v1/embeddings", `{"model":"` + m3 + `","input":"hello world"}`, m3, 1, tokenize.Text(m3, "hello world"), false},
		{"strings", "/openai/v1/embeddings", `{"model":"` + m3 + `","input":["hello","big world"]}`, m3, 2, tokenize.Text(m3, "hello") + tokenize.Text(m3, "big world"), false},
		{"token arrays", "/v1/embeddings", `{"input":[[1,2,3],[4]]}`, "gpt-4o", 2, 4, false},
		{"azure deployment, base64", "/openai/deployments/emb-large/embeddings", `{"input":"hello world","encoding_format":"base64"}`, "emb-large", 1, tokenize.Text("emb-large", "hello world"), true},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got wireEmbeddings
			decodeJSON(t, post(t, h, tt.path, tt.body), 200, &got)
			if got.Object != "list" || got.Model != tt.wantModel || len(got.Data) != tt.wantVectors {
				t.Fatalf("got %s model %q with %d vectors, want list %q with %d", got.Object, got.Model, len(got.Data), tt.wantModel, tt.wantVectors)
			}
			want := map[string]int{"prompt_tokens": tt.wantPrompt, "total_tokens": tt.wantPrompt}
			if len(got.Usage) != 2 || got.Usage["prompt_tokens"] != want["prompt_tokens"] || got.Usage["total_tokens"] != want["total_tokens"] {
				t.Errorf("usage: got %v, want %v", got.Usage, want)
			}
			for i, d := range got.Data {
				if d.Index != i || d.Object != "embedding" {
					t.Errorf("vector %d: index %d object %q", i, d.Index, d.Object)
				}
				if n := dims(t, d.Embedding, tt.base64); n != embeddingDims {
					t.Errorf("vector %d has %d dimensions, want %d", i, n, embeddingDims)
				}
			}
		})
	}
}

func dims(t *testing.T, raw json.RawMessage, b64 bool) int {
	t.Helper()
	if b64 {
		var s string
		mustUnmarshal(t, string(raw), &s)
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("base64 embedding: %v", err)
		}
		return len(b) / 4
	}
	var v []float32
	mustUnmarshal(t, string(raw), &v)
	return len(v)
}

func TestEmbeddingsNeedInput(t *testing.T) {
	h := newServer(testConfig()).routes()
	for _, body := range []string{`{}`, `{"input":null}`, `{"input":[]}`, `{"input":{"a":1}}`, `{"input":[1.5]}`} {
		var got apiError
		decodeJSON(t, post(t, h, "/v1/embeddings", body), 400, &got)
		if got.Error.Type != "invalid_request_error" {
			t.Errorf("%s: error type %q", body, got.Error.Type)
		}
	}
}

func TestVectorForIsStable(t *testing.T) {
	a, b, c := vectorFor("x"), vectorFor("x"), vectorFor("y")
	if len(a) != embeddingDims || a[0] != b[0] || a[3] != b[3] {
		t.Fatalf("equal inputs embed differently: %v %v", a, b)
	}
	if a[0] == c[0] && a[1] == c[1] && a[2] == c[2] {
		t.Errorf("different inputs embed equally: %v %v", a, c)
	}
}
