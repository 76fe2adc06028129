package openaimock

import (
	"encoding/json"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

func TestContentText(t *testing.T) {
	tests := []struct {
		raw     string
		want    string
		wantErr bool
	}{
		{``, "", false},
		{`null`, "", false},
		{`"hello"`, "hello", false},
		{`[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"u"}},{"type":"text","text":"b"}]`, "ab", false},
		{`[{"type":"input_text","text":"in"},{"type":"output_text","text":"out"}]`, "inout", false},
		{`[]`, "", false},
		{`5`, "", true},
		{`{"type":"text"}`, "", true},
	}
	for i, tt := range tests {
		got, err := contentText(json.RawMessage(tt.raw))
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("step %d: %s: got %q, %v; want %q, error %v", i, tt.raw, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSplitInputs(t *testing.T) {
	const m = "gpt-4o"
	tests := []struct {
		raw        string
		wantInputs int
		wantTokens int
		wantErr    bool
	}{
		{``, 0, 0, false},
		{`null`, 0, 0, false},
		{`"hello world"`, 1, tokenize.Text(m, "hello world"), false},
		{`["hello","world"]`, 2, tokenize.Text(m, "hello") + tokenize.Text(m, "world"), false},
		{`[]`, 0, 0, false},
		{`[1,2,3]`, 1, 3, false},
		{`[[1,2],[3]]`, 2, 3, false},
		{`[1,"a"]`, 0, 0, true},
		{`["a",1]`, 0, 0, true},
		{`[null]`, 0, 0, true},
		{`[1.5]`, 0, 0, true},
		{`{"a":1}`, 0, 0, true},
		{`true`, 0, 0, true},
	}
	for i, tt := range tests {
		ins, err := splitInputs(m, json.RawMessage(tt.raw))
		if (err != nil) != tt.wantErr {
			t.Errorf("step %d: %s: error %v, want error %v", i, tt.raw, err, tt.wantErr)
			continue
		}
		if len(ins) != tt.wantInputs || sumTokens(ins) != tt.wantTokens {
			t.Errorf("step %d: %s: got %d inputs, %d tokens; want %d, %d", i, tt.raw, len(ins), sumTokens(ins), tt.wantInputs, tt.wantTokens)
		}
	}
}
