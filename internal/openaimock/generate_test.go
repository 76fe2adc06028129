package openaimock

import (
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

func TestGenerate(t *testing.T) {
	tests := []struct {
		model       string
		want, limit int
		wantTokens  int
		wantCapped  bool
	}{
		{"gpt-4o", 64, -1, 64, false},
		{"gpt-4", 64, -1, 64, false},
		{"gpt-4o", 0, -1, 0, false},
		{"gpt-4o", 1, -1, 1, false},
		{"gpt-4o", 64, 64, 64, false},
		{"gpt-4o", 64, 63, 63, true},
		{"gpt-3.5-turbo", 500, 10, 10, true},
		{"unknown-model", 1000, -1, 1000, false},
		{"gpt-4o", 10, 0, 0, true},
	}
	for i, tt := range tests {
		c := generate(tt.model, tt.want, tt.limit)
		if c.tokens != tt.wantTokens || c.capped != tt.wantCapped {
			t.Errorf("step %d: got %d tokens capped %v, want %d capped %v", i, c.tokens, c.capped, tt.wantTokens, tt.wantCapped)
		}
		if n := tokenize.Text(tt.model, c.text()); n != c.tokens {
			t.Errorf("step %d: reported %d tokens, text counts %d", i, c.tokens, n)
		}
		if got := strings.Join(c.chunks(chunksPerEvent), ""); got != c.text() {
			t.Errorf("step %d: chunks join to %q, want %q", i, got, c.text())
		}
	}
	if a, b := generate("gpt-4o", 20, -1).text(), generate("gpt-4o", 20, -1).text(); a != b {
		t.Errorf("not deterministic: %q then %q", a, b)
	}
}

func TestLimitOf(t *testing.T) {
	tests := []struct {
		fields []*int
		want   int
	}{
		{nil, -1},
		{[]*int{nil, nil}, -1},
		{[]*int{intp(10)}, 10},
		{[]*int{intp(10), intp(5)}, 5},
		{[]*int{nil, intp(5)}, 5},
		{[]*int{intp(-3)}, 0},
	}
	for i, tt := range tests {
		if got := limitOf(tt.fields...); got != tt.want {
			t.Errorf("step %d: got %d, want %d", i, got, tt.want)
		}
	}
}
