package openaimock

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/fnv"
	"math"
)

// embeddingDims keeps vectors small: tests care about usage, not meaning.
const embeddingDims = 8

type embeddingsRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
}

type embeddingsResponse struct {
	Object string           `json:"object"`
	Data   []embedding      `json:"data"`
	Model  string           `json:"model"`
	Usage  *embeddingsUsage `json:"usage,omitempty"` // nil only for x-mock-no-usage
}

// embedding holds a float array, or a base64 string when the request asked
// for encoding_format "base64" (the OpenAI SDKs' default).
type embedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

type embeddingsUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

func (s *server) embeddings(w *wire, c call, req embeddingsRequest) {
	model := c.model(req.Model)
	ins, err := splitInputs(model, req.Input)
	if err != nil {
		badRequest(w, "Invalid 'input': %v.", err)
		return
	}
	if len(ins) == 0 {
		badRequest(w, "Missing required parameter: 'input'.")
		return
	}
	resp := embeddingsResponse{Object: "list", Model: model, Data: make([]embedding, len(ins))}
	for i, in := range ins {
		v := vectorFor(in.text)
		resp.Data[i] = embedding{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			resp.Data[i].Embedding = base64Floats(v)
		}
	}
	if !c.noUsage {
		n := sumTokens(ins)
		resp.Usage = &embeddingsUsage{PromptTokens: n, TotalTokens: n}
	}
	writeJSON(w, c.status, resp)
}

// vectorFor derives a unit vector from the text, so equal inputs embed
// equally and different ones (almost surely) do not.
func vectorFor(text string) []float32 {
	v := make([]float32, embeddingDims)
	var norm float64
	for i := range v {
		h := fnv.New64a()
		h.Write([]byte{byte(i)})
		h.Write([]byte(text))
		x := float64(h.Sum64()%2001)/1000 - 1 // in [-1, 1]
		v[i] = float32(x)
		norm += x * x
	}
	if norm == 0 {
		return v
	}
	for i := range v {
		v[i] = float32(float64(v[i]) / math.Sqrt(norm))
	}
	return v
}

// base64Floats is the wire form of encoding_format "base64": little-endian
// float32s.
func base64Floats(v []float32) string {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, v)
	return base64.StdEncoding.EncodeToString(b.Bytes())
}
